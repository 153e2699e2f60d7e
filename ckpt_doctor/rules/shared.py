"""Helpers several rules share: building fixes, and reading DeepSpeed configurations."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ckpt_doctor.facts import Call
from ckpt_doctor.findings import Applicability, FixSpec, Span
from ckpt_doctor.rules import Context
from ckpt_doctor.values import Const, DictVal, Instance, Missing, TupleVal, Value


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


def to_python(value: Value) -> object:
    """A constant, dict or list value as plain Python; anything unknown becomes `...`."""
    if isinstance(value, Const):
        return value.value
    if isinstance(value, DictVal):
        return {k: to_python(v) for k, v in value.items.items()}
    if isinstance(value, TupleVal):
        return [to_python(v) for v in value.items]
    return ...


@dataclass
class DeepSpeedConfig:
    data: dict
    line: int
    where: str  # "the dict at line 12" / "ds_config.json (named at line 30)"

    @property
    def zero_stage(self) -> int | None:
        stage = (self.data.get("zero_optimization") or {}).get("stage") if isinstance(self.data.get("zero_optimization"), dict) else None
        return stage if isinstance(stage, int) else None


def deepspeed_configs(ctx: Context) -> list[DeepSpeedConfig]:
    cached = getattr(ctx, "_deepspeed_configs", None)
    if cached is not None:
        return cached
    found: list[DeepSpeedConfig] = []
    seen_lines: set[int] = set()
    for call in ctx.facts.calls:
        for name in ("deepspeed", "config", "config_params", "hf_ds_config", "config_file"):
            value = call.kwargs.get(name)
            if value is None:
                continue
            if name != "deepspeed" and not _is_deepspeed_call(call):
                continue
            config = _config_from_value(ctx, value, call.line)
            if config is not None and config.line not in seen_lines:
                seen_lines.add(config.line)
                found.append(config)
        if call.qualname in ("accelerate.DeepSpeedPlugin", "accelerate.utils.DeepSpeedPlugin"):
            stage = call.kwarg("zero_stage")
            if isinstance(stage, Const):
                found.append(DeepSpeedConfig({"zero_optimization": {"stage": stage.value}}, call.line, f"the DeepSpeedPlugin at line {call.line}"))
    # dict literals that look like DeepSpeed configs, bound to a name and never passed where we saw it
    for value in _dict_literals(ctx):
        if ("zero_optimization" in value.items or "activation_checkpointing" in value.items) and value.line not in seen_lines:
            seen_lines.add(value.line)
            found.append(DeepSpeedConfig(to_python(value), value.line, f"the DeepSpeed config at line {value.line}"))
    ctx._deepspeed_configs = found  # type: ignore[attr-defined]
    return found


def _is_deepspeed_call(call: Call) -> bool:
    return bool(call.qualname and call.qualname.startswith("deepspeed.")) or call.name == "HfDeepSpeedConfig"


def _config_from_value(ctx: Context, value: Value, line: int) -> DeepSpeedConfig | None:
    if isinstance(value, DictVal):
        return DeepSpeedConfig(to_python(value), value.line or line, f"the DeepSpeed config at line {value.line or line}")
    if isinstance(value, Const) and isinstance(value.value, str) and value.value.endswith(".json"):
        path = Path(ctx.path).parent / value.value
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(data, dict):
            return DeepSpeedConfig(data, value.origin.line if value.origin else line, f"{value.value} (named at line {line})")
    return None


def _dict_literals(ctx: Context) -> list[DictVal]:
    out = []
    for call in ctx.facts.calls:
        for value in list(call.kwargs.values()) + list(call.args):
            if isinstance(value, DictVal):
                out.append(value)
    for assign in ctx.facts.attr_assigns:
        if isinstance(assign.value, DictVal):
            out.append(assign.value)
    return out


def zero_stage(ctx: Context) -> tuple[int, DeepSpeedConfig] | None:
    for config in deepspeed_configs(ctx):
        if config.zero_stage is not None:
            return config.zero_stage, config
    return None


def uses_peft(ctx: Context) -> bool:
    return bool(ctx.training.peft_calls) or any(
        c.qualname in ("trl.SFTTrainer", "trl.DPOTrainer", "trl.GRPOTrainer", "trl.KTOTrainer", "trl.RewardTrainer")
        and not isinstance(c.kwarg("peft_config"), Missing)
        for c in ctx.facts.calls
    )


def zero3_with_peft(ctx: Context) -> bool:
    stage = zero_stage(ctx)
    return bool(stage and stage[0] == 3 and uses_peft(ctx))


def is_instance_of(value: Value, *qualnames: str) -> bool:
    return isinstance(value, Instance) and value.qualname in qualnames
