"""Helpers several rules share: building fixes, DeepSpeed and PEFT context."""

from __future__ import annotations

import re

from ckpt_doctor.analysis.facts import Call
from ckpt_doctor.findings import Applicability, FixSpec, InsertStatement, SetKeywords, Span
from ckpt_doctor.analysis.conditions import ALWAYS, Condition, on_path
from ckpt_doctor.analysis.library import DEEPSPEED_Z3_FROZEN_RECOMPUTE_SINCE, TRL_PEFT_TRAINERS
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


def launched_ddp_processes(ctx: Context) -> int | None:
    """The processes of a launch that runs the script under DDP when the Trainer or accelerate wraps the model: several
    of them, stated, and neither FSDP nor DeepSpeed (transformers `Trainer._wrap_model`, accelerate
    `Accelerator.prepare_model`); None otherwise."""
    settings = ctx.analysis.settings
    gpus = int(settings.gpus.value or 1)
    if gpus > 1 and settings.gpus.stated and not settings.zero.value and not ctx.training.deepspeed_configs:
        return gpus
    return None


def peft_calls(ctx: Context) -> list[Call]:
    """The calls that make the trained model a PEFT model: `get_peft_model`, or a TRL trainer given `peft_config`."""
    return ctx.training.peft_calls + [
        c for c in ctx.facts.calls if c.qualname in TRL_PEFT_TRAINERS and not isinstance(c.kwarg("peft_config"), Missing)
    ]


def peft_on_path(ctx: Context, condition: Condition = ALWAYS) -> Condition | None:
    """The path on which a PEFT model meets `condition`, None when no run has both."""
    found = peft_call_on_path(ctx, condition)
    return found[1] if found else None


def peft_call_on_path(ctx: Context, condition: Condition) -> tuple[Call, Condition] | None:
    """The first call that makes the model a PEFT model in a run on `condition`, and that run's path. A path that
    tests a LoRA switch off (`if not self.lora_enabled:`) never meets PEFT wrapping made under a LoRA switch on
    (`if lora_cfgs.use_lora:` in the loader): a project names its one LoRA option in several places."""
    off = _lora_switches(condition, False)
    return on_path(condition, peft_calls(ctx), lambda call: not (off and _lora_switches(call.condition, True)))


# the last name of the tested attribute: `use_lora`, `lora_enabled`, `use_peft`, `qlora` (not `merge_lora`, `lora_r`)
_LORA_SWITCH = re.compile(r"^(use_|enable_|is_)?(q?lora|peft)(_enabled?|_training)?$", re.IGNORECASE)


def _lora_switches(condition: Condition, holds: bool) -> list[str]:
    """The truth tests of a LoRA / PEFT switch (`args.use_lora`, `self.lora_enabled`) that `condition` needs to be
    `holds`."""
    return [l.key for l in condition.literals if l.equals is None and l.holds is holds
            and _LORA_SWITCH.match(l.key.rsplit(": ", 1)[-1].rsplit(" ", 1)[-1].rsplit(".", 1)[-1])]


def zero3_recompute_fixed(ctx: Context) -> bool | None:
    """True when every DeepSpeed release the project allows keeps frozen parameters gathered through a checkpoint
    recompute (so ZeRO-3 + PEFT + non-reentrant trains), False when none does, None when not known [A4]."""
    return ctx.versions.at_least("deepspeed", DEEPSPEED_Z3_FROZEN_RECOMPUTE_SINCE)


def zero3_recompute_note(ctx: Context) -> str:
    """What the CKPT304 findings say of the DeepSpeed release they rest on."""
    return (f"or require deepspeed >= {DEEPSPEED_Z3_FROZEN_RECOMPUTE_SINCE}, which keeps the frozen parameters gathered "
            f"through the recompute (deepspeedai/DeepSpeed#8148); this rests on {ctx.versions.get('deepspeed').describe('deepspeed')}")


def zero3_with_peft(ctx: Context, condition: Condition = ALWAYS) -> bool:
    """ZeRO-3 + PEFT on the path of `condition`, on a DeepSpeed release where non-reentrant checkpointing fails there
    (reentrant is then the workaround, CKPT304)."""
    stage = ctx.training.zero_stage
    return bool(stage and stage[0] == 3 and zero3_recompute_fixed(ctx) is not True and peft_on_path(ctx, condition) is not None)
