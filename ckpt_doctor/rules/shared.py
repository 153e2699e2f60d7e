"""Helpers several rules share: building fixes, DeepSpeed and PEFT context."""

from __future__ import annotations

from ckpt_doctor.analysis.facts import Call
from ckpt_doctor.findings import Applicability, FixSpec, InsertStatement, SetKeywords, Span
from ckpt_doctor.analysis.conditions import ALWAYS, Condition, on_path
from ckpt_doctor.analysis.library import TRL_PEFT_TRAINERS
from ckpt_doctor.rules import Context
from ckpt_doctor.analysis.values import Missing


def set_keyword(call: Call, name: str, value: str, applicability: Applicability, message: str, replace: bool = False) -> FixSpec | None:
    """Pass `name=value` to `call`; none when the callee is another library's on some path (a torch keyword on
    DeepSpeed's `checkpoint`, imported in the `try` of which torch's is the `except ImportError:`)."""
    if call.other_qualnames or call.via:
        return None
    return FixSpec(SetKeywords(((name, value),), replace), call.span, applicability, message)


def insert_after(statement: Span, code: str, applicability: Applicability, message: str) -> FixSpec:
    return FixSpec(InsertStatement(code), statement, applicability, message)


def insert_before(statement: Span, code: str, applicability: Applicability, message: str) -> FixSpec:
    return FixSpec(InsertStatement(code, before=True), statement, applicability, message)


def peft_calls(ctx: Context) -> list[Call]:
    """The calls that make the trained model a PEFT model: `get_peft_model`, or a TRL trainer given `peft_config`."""
    return ctx.training.peft_calls + [
        c for c in ctx.facts.calls if c.qualname in TRL_PEFT_TRAINERS and not isinstance(c.kwarg("peft_config"), Missing)
    ]


def peft_on_path(ctx: Context, condition: Condition = ALWAYS) -> Condition | None:
    """The path on which a PEFT model meets `condition`, None when no run has both."""
    found = on_path(condition, peft_calls(ctx))
    return found[1] if found else None


def zero3_with_peft(ctx: Context, condition: Condition = ALWAYS) -> bool:
    stage = ctx.training.zero_stage
    return bool(stage and stage[0] == 3 and peft_on_path(ctx, condition) is not None)
