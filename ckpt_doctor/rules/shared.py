"""Helpers several rules share: building fixes, DeepSpeed and PEFT context."""

from __future__ import annotations

from ckpt_doctor.analysis.facts import Call
from ckpt_doctor.findings import Applicability, FixSpec, Span
from ckpt_doctor.rules import Context
from ckpt_doctor.analysis.values import Missing


def set_keyword(call: Call, name: str, value: str, applicability: Applicability, message: str, replace: bool = False) -> FixSpec:
    return FixSpec(
        "set_keyword",
        call.span,
        (("name", name), ("value", value), ("replace", replace)),
        applicability,
        message,
    )


def insert_after(statement: Span, code: str, applicability: Applicability, message: str) -> FixSpec:
    return FixSpec("insert_after", statement, (("code", code),), applicability, message)


def insert_before(statement: Span, code: str, applicability: Applicability, message: str) -> FixSpec:
    return FixSpec("insert_before", statement, (("code", code),), applicability, message)


def uses_peft(ctx: Context) -> bool:
    return bool(ctx.training.peft_calls) or any(
        c.qualname in ("trl.SFTTrainer", "trl.DPOTrainer", "trl.GRPOTrainer", "trl.KTOTrainer", "trl.RewardTrainer")
        and not isinstance(c.kwarg("peft_config"), Missing)
        for c in ctx.facts.calls
    )


def zero3_with_peft(ctx: Context) -> bool:
    stage = ctx.training.zero_stage
    return bool(stage and stage[0] == 3 and uses_peft(ctx))
