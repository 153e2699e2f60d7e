"""DeepSpeed configurations a script builds or names, read as plain dicts."""

from __future__ import annotations

from dataclasses import dataclass

from ckpt_doctor.analysis.config_files import ProjectFiles
from ckpt_doctor.analysis.facts import Call, ScriptFacts
from ckpt_doctor.analysis.values import Const, DictVal, TupleVal, Value


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

    def offload(self, kind: str) -> tuple[bool, bool | None] | None:
        """`zero_optimization.offload_optimizer` / `offload_param` (`kind`): (on the CPU, pin_memory as stated or
        None); None when the block is absent, unreadable or offloads nowhere (`device: none`, or `nvme`)."""
        zero = self.data.get("zero_optimization")
        block = zero.get(kind) if isinstance(zero, dict) else None
        if not isinstance(block, dict) or block.get("device") != "cpu":
            return None
        pin = block.get("pin_memory")
        return True, pin if isinstance(pin, bool) else None


def read_deepspeed_configs(facts: ScriptFacts, files: ProjectFiles) -> list[DeepSpeedConfig]:
    """DeepSpeed configs the script builds (dict literals, DeepSpeedPlugin) or names (a .json next to it)."""
    found: list[DeepSpeedConfig] = []
    seen_lines: set[int] = set()
    for call in facts.calls:
        for name in ("deepspeed", "config", "config_params", "hf_ds_config", "config_file"):
            value = call.kwargs.get(name)
            if value is None:
                continue
            if name != "deepspeed" and not _is_deepspeed_call(call):
                continue
            config = _config_from_value(files, value, call.line)
            if config is not None and config.line not in seen_lines:
                seen_lines.add(config.line)
                found.append(config)
        if call.qualname in ("accelerate.DeepSpeedPlugin", "accelerate.utils.DeepSpeedPlugin"):
            stage = call.kwarg("zero_stage")
            if isinstance(stage, Const):
                found.append(DeepSpeedConfig({"zero_optimization": {"stage": stage.value}}, call.line, f"the DeepSpeedPlugin at line {call.line}"))
    launch = facts.launch  # `--deepspeed ds_z3.json` on the launcher's line (TrainingArguments, or the launcher's own)
    for options in ((launch.options, launch.runner_options) if launch else ()):
        name = next((options[k] for k in ("deepspeed", "deepspeed_config", "deepspeed_config_file") if isinstance(options.get(k), str)), None)
        data = files.settings(name) if name else None
        if isinstance(data, dict):
            found.append(DeepSpeedConfig(data, launch.line, f"{name} (passed at {launch.where})"))
    # dict literals that look like DeepSpeed configs, bound to a name and never passed where we saw it
    for value in _dict_literals(facts):
        if ("zero_optimization" in value.items or "activation_checkpointing" in value.items) and value.line not in seen_lines:
            seen_lines.add(value.line)
            found.append(DeepSpeedConfig(to_python(value), value.line, f"the DeepSpeed config at line {value.line}"))
    return found


def _is_deepspeed_call(call: Call) -> bool:
    return bool(call.qualname and call.qualname.startswith("deepspeed.")) or call.name == "HfDeepSpeedConfig"


def _config_from_value(files: ProjectFiles, value: Value, line: int) -> DeepSpeedConfig | None:
    if isinstance(value, DictVal):
        return DeepSpeedConfig(to_python(value), value.line or line, f"the DeepSpeed config at line {value.line or line}")
    if isinstance(value, Const) and isinstance(value.value, str) and value.value.endswith(".json"):
        data = files.settings(value.value)
        if data is not None:
            named = value.origin.line if value.origin else line
            return DeepSpeedConfig(data, named, f"{value.value} (named at line {named})")
    return None


def _dict_literals(facts: ScriptFacts) -> list[DictVal]:
    out = []
    for call in facts.calls:
        for value in list(call.kwargs.values()) + list(call.args):
            if isinstance(value, DictVal):
                out.append(value)
    for assign in facts.attr_assigns:
        if isinstance(assign.value, DictVal):
            out.append(assign.value)
    return out
