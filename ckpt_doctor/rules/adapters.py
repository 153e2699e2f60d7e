"""CKPT6xx: what a PEFT adapter trains.

Not checkpointing, but the same "the run goes on and trains less than the script says" family: a LoRA whose
targets name the MoE experts while the library versions the project runs on never put an adapter on them.
"""

from __future__ import annotations

from typing import Iterator

from ckpt_doctor.analysis.library import (MOE_EXPERT_NAMES_V4, PEFT_MOE_TARGETS_CONVERTED_SINCE, PEFT_TARGET_PARAMETERS_SINCE,
                                          TRANSFORMERS_FUSED_EXPERTS_SINCE)
from ckpt_doctor.findings import Severity
from ckpt_doctor.rules import Context, Report, rule
from ckpt_doctor.rules.shared import peft_calls


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


@rule(
    "CKPT601",
    "lora-misses-moe-experts",
    Severity.WARNING,
    summary="LoRA targets that name the MoE experts, on a peft that never reaches transformers 5's fused experts",
)
def lora_misses_moe_experts(ctx: Context) -> Iterator[Report]:
    settings = ctx.analysis.settings
    config, targets = settings.lora_config, settings.lora_targets
    if config is None or targets is None or settings.lora_target_parameters or not peft_calls(ctx):
        return  # no LoRA applied, targets not known, or the parameters are targeted explicitly
    if ctx.versions.at_least("transformers", TRANSFORMERS_FUSED_EXPERTS_SINCE) is False:
        return  # transformers 4: the experts are `nn.Linear` modules the names reach
    if ctx.versions.at_least("peft", PEFT_MOE_TARGETS_CONVERTED_SINCE) is not False:
        return  # peft >= 0.19 maps the expert names to the fused parameters itself (or may: not judged)
    model_type = _moe_model_type(ctx)
    if model_type is None:
        return
    expert_names = MOE_EXPERT_NAMES_V4[model_type]
    names = [n.strip() for n in str(targets.value).split(",")]
    all_linear = names == ["all-linear"]
    named = [n for n in names if n.rsplit(".", 1)[-1] in expert_names]
    if not (all_linear or named):
        return  # the targets do not ask for the experts (attention only, say)
    asked = '`"all-linear"`' if all_linear else ", ".join(f"`{n}`" for n in named)
    way_out = (f"add `target_parameters=[\"mlp.experts.gate_up_proj\", \"mlp.experts.down_proj\"]` (peft >= {PEFT_TARGET_PARAMETERS_SINCE}) "
               f"or require peft >= {PEFT_MOE_TARGETS_CONVERTED_SINCE}, which maps {', '.join(expert_names)} to them"
               if ctx.versions.at_least("peft", PEFT_TARGET_PARAMETERS_SINCE) is not False else
               f"require peft >= {PEFT_MOE_TARGETS_CONVERTED_SINCE}, which maps {', '.join(expert_names)} to them "
               f"(peft < {PEFT_TARGET_PARAMETERS_SINCE} has no way to adapt a parameter)")
    span = config.keyword_spans.get("target_modules", config.span)
    yield Report(
        span,
        f"LoRA targets {asked} on {settings.model.value} ({model_type}, a mixture of experts): transformers >= "
        f"{TRANSFORMERS_FUSED_EXPERTS_SINCE} keeps its experts as fused 3-D parameters (`mlp.experts.gate_up_proj`, "
        f"`mlp.experts.down_proj`), not `nn.Linear` modules, and peft < {PEFT_MOE_TARGETS_CONVERTED_SINCE} only adapts "
        "modules: no adapter reaches an expert and nothing says so, the experts never train (huggingface/peft#3009); "
        f"{way_out}. This rests on {ctx.versions.get('transformers').describe('transformers')} and "
        f"{ctx.versions.get('peft').describe('peft')}",
        condition=config.condition,
    )
