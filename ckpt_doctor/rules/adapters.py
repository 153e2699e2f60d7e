"""CKPT6xx: what a PEFT adapter trains.

Not checkpointing, but the same "the run goes on and trains less than the script says" family: a LoRA whose
targets name the MoE experts while the library versions the project runs on never put an adapter on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ckpt_doctor.analysis.library import (MOE_EXPERT_NAMES_V4, PEFT_MOE_TARGETS_CONVERTED_SINCE, PEFT_TARGET_PARAMETERS_SINCE,
                                          TRANSFORMERS_FUSED_EXPERTS_SINCE)
from ckpt_doctor.findings import Severity
from ckpt_doctor.rules import Context, Report, rule
from ckpt_doctor.rules.shared import peft_calls

EXPERT_PARAMETERS = '["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]'


def _moe_model_type(ctx: Context) -> str | None:
    """The model_type of the loaded model, when the registry resolves its id to a MoE model this rule knows."""
    model = ctx.analysis.settings.model
    if model is None or not isinstance(model.value, str):
        return None
    from ckpt_doctor.estimate.registry import resolve

    arch = resolve(model.value)  # None for an id it cannot describe offline: not judged
    if arch is None or not arch.is_moe:
        return None
    return arch.model_type if arch.model_type in MOE_EXPERT_NAMES_V4 else None


@dataclass(frozen=True)
class MissedExperts:
    """Why no LoRA adapter reaches the experts: the targets that ask for them, and how they get lost."""

    model_type: str
    asked: str  # '`"all-linear"`', or the expert names as written
    expanded_by: str | None  # the framework function that turned "all-linear" into module names (None: peft got it)


def missed_experts(ctx: Context, names: list[str], expanded_by: str | None = None) -> MissedExperts | None:
    """The experts of the loaded MoE model that `names` (LoRA `target_modules`) ask for and never get on the versions
    the project runs. `expanded_by`: the framework's function that replaces "all-linear" by the names of the
    `nn.Linear` modules it finds, which never include transformers 5's fused experts, whatever peft does next."""
    if ctx.versions.at_least("transformers", TRANSFORMERS_FUSED_EXPERTS_SINCE) is False:
        return None  # transformers 4: the experts are `nn.Linear` modules the names reach
    model_type = _moe_model_type(ctx)
    if model_type is None:
        return None
    expert_names = MOE_EXPERT_NAMES_V4[model_type]
    named = [n for n in names if n not in ("all-linear", "all") and n.rsplit(".", 1)[-1] in expert_names]
    converts = ctx.versions.at_least("peft", PEFT_MOE_TARGETS_CONVERTED_SINCE) is not False  # or may: not judged
    if named:
        # peft >= 0.19 maps the transformers-4 names of the listed experts to the fused parameters itself
        return None if converts else MissedExperts(model_type, ", ".join(f"`{n}`" for n in named), None)
    if "all-linear" in names or (expanded_by and "all" in names):
        if expanded_by is not None:
            return MissedExperts(model_type, '`"all-linear"`', expanded_by)  # module names only: on every peft
        return None if converts else MissedExperts(model_type, '`"all-linear"`', None)
    return None  # the targets do not ask for the experts (attention only, say)


def missed_message(ctx: Context, model: str, missed: MissedExperts, parameters_key: str | None = "target_parameters",
                   written: str = "target_modules", framework: str = "") -> str:
    """The finding's text: what is lost, why, on which versions, and the way out (`parameters_key`: the key that
    gives peft `target_parameters` where the targets are written, None where there is none)."""
    fused = (f"transformers >= {TRANSFORMERS_FUSED_EXPERTS_SINCE} keeps the experts of {model} ({missed.model_type}, a mixture "
             f"of experts) as fused 3-D parameters (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`), not `nn.Linear` modules")
    expert_names = ", ".join(MOE_EXPERT_NAMES_V4[missed.model_type])
    if missed.expanded_by is not None:
        why = (f"LoRA targets {missed.asked}, which {missed.expanded_by} turns into the names of the `nn.Linear` modules it "
               f"finds; {fused}, so the list names no expert and, on every peft release, no adapter reaches one and nothing "
               "says so: the experts never train (huggingface/peft#3009, NVIDIA-NeMo/Automodel#1151)")
        way_out = (f"add `{parameters_key}: {EXPERT_PARAMETERS}` (peft >= {PEFT_TARGET_PARAMETERS_SINCE}), or name the experts "
                   f"({expert_names}) in `{written}` with peft >= {PEFT_MOE_TARGETS_CONVERTED_SINCE}, which maps them to those "
                   "parameters" if parameters_key else
                   f"{framework} has no key for peft's `target_parameters`: name the experts ({expert_names}) in `{written}` "
                   f"with peft >= {PEFT_MOE_TARGETS_CONVERTED_SINCE}, which maps them to the fused parameters"
                   + (" (LLaMA-Factory up to 0.9.5 requires peft <= 0.18.1 [L11])" if framework == "LLaMA-Factory" else "")
                   + ", or train them another way (full or freeze fine-tuning)")
        rests = ctx.versions.get("transformers").describe("transformers")
    else:
        why = (f"LoRA targets {missed.asked}: {fused}, and peft < {PEFT_MOE_TARGETS_CONVERTED_SINCE} only adapts modules: no "
               "adapter reaches an expert and nothing says so, the experts never train (huggingface/peft#3009)")
        has_parameters = ctx.versions.at_least("peft", PEFT_TARGET_PARAMETERS_SINCE) is not False
        way_out = (f"add `{parameters_key}{'=' if parameters_key == 'target_parameters' else ': '}{EXPERT_PARAMETERS}` "
                   f"(peft >= {PEFT_TARGET_PARAMETERS_SINCE}) or require peft >= {PEFT_MOE_TARGETS_CONVERTED_SINCE}, which "
                   f"maps {expert_names} to them" if has_parameters and parameters_key else
                   f"require peft >= {PEFT_MOE_TARGETS_CONVERTED_SINCE}, which maps {expert_names} to them"
                   + ("" if has_parameters else f" (peft < {PEFT_TARGET_PARAMETERS_SINCE} has no way to adapt a parameter)"))
        rests = f"{ctx.versions.get('transformers').describe('transformers')} and {ctx.versions.get('peft').describe('peft')}"
    return f"{why}; {way_out}. This rests on {rests}"


@rule(
    "CKPT601",
    "lora-misses-moe-experts",
    Severity.WARNING,
    summary="LoRA targets that never reach the fused MoE experts of transformers 5",
)
def lora_misses_moe_experts(ctx: Context) -> Iterator[Report]:
    settings = ctx.analysis.settings
    config, targets = settings.lora_config, settings.lora_targets
    if config is None or targets is None or settings.lora_target_parameters or not peft_calls(ctx):
        return  # no LoRA applied, targets not known, or the parameters are targeted explicitly
    names = [n.strip() for n in str(targets.value).split(",")]
    missed = missed_experts(ctx, names)
    if missed is None:
        return
    span = config.keyword_spans.get("target_modules", config.span)
    yield Report(span, missed_message(ctx, settings.model.value, missed), condition=config.condition)
