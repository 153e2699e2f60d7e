"""CKPT3xx: checkpointing under DDP, FSDP and DeepSpeed."""

from __future__ import annotations

from typing import Iterator

from ckpt_doctor.analysis.facts import Call
from ckpt_doctor.findings import Applicability, Position, Severity, Span
from ckpt_doctor.rules import Context, Report, rule
from ckpt_doctor.rules.huggingface import _site_label
from ckpt_doctor.rules.shared import set_keyword, uses_peft
from ckpt_doctor.analysis.training import TRL_NON_REENTRANT_SINCE, HFSite
from ckpt_doctor.analysis.values import Const, DictVal, Missing, truth

DDP = "torch.nn.parallel.DistributedDataParallel"
APPLY_AC = "torch.distributed.algorithms._checkpoint.checkpoint_wrapper.apply_activation_checkpointing"
CHECKPOINT_WRAPPER = "torch.distributed.algorithms._checkpoint.checkpoint_wrapper.checkpoint_wrapper"


def _checkpointing_spots(ctx: Context, reentrant: bool | None) -> list[tuple[Span, str, Call | None, HFSite | None]]:
    """Every place checkpointing is on, with its mode filter applied."""
    spots: list[tuple[Span, str, Call | None, HFSite | None]] = []
    training = ctx.training
    for call in training.torch_checkpoint_sites:
        mode = training.torch_mode(call)
        if reentrant is None or mode.reentrant is reentrant:
            spots.append((call.span, f"`{call.name}` ({mode.reason})", call, None))
    for site in training.hf_sites:
        if site.enabled and (reentrant is None or site.mode.reentrant is reentrant):
            spots.append((site.span, f"{_site_label(site)} ({site.mode.reason})", None, site))
    return spots


def _find_unused(ctx: Context) -> Call | None:
    for call in ctx.facts.calls:
        if call.qualname in (DDP, "accelerate.DistributedDataParallelKwargs", "accelerate.utils.DistributedDataParallelKwargs") or call.name in ("DDPStrategy",):
            if truth(call.kwarg("find_unused_parameters")) is True:
                return call
        if call.qualname in ("transformers.TrainingArguments", "transformers.Seq2SeqTrainingArguments") or (call.qualname or "").startswith("trl."):
            if truth(call.kwarg("ddp_find_unused_parameters")) is True:
                return call
        strategy = call.kwarg("strategy")
        if isinstance(strategy, Const) and strategy.value == "ddp_find_unused_parameters_true":
            return call
    return None


@rule(
    "CKPT301",
    "reentrant-checkpointing-ddp-find-unused",
    Severity.ERROR,
    fix=Applicability.DISPLAY_ONLY,
    summary="reentrant checkpointing with DDP `find_unused_parameters=True`",
)
def reentrant_ddp_find_unused(ctx: Context) -> Iterator[Report]:
    ddp = _find_unused(ctx)
    if ddp is None:
        return
    for span, label, call, site in _checkpointing_spots(ctx, reentrant=True):
        fix = set_keyword(call, "use_reentrant", "False", Applicability.DISPLAY_ONLY, "Use `use_reentrant=False`", replace=True) if call else None
        yield Report(
            span,
            f"reentrant checkpointing {label} with `find_unused_parameters=True` (line {ddp.line}): DDP fails in the "
            "backward with \"RuntimeError: Expected to mark a variable ready only once\"; use `use_reentrant=False`, or "
            "turn `find_unused_parameters` off",
            fix=fix,
        )


def _external_checkpointing(ctx: Context) -> tuple[int, str] | None:
    """Checkpointing applied by FSDP / accelerate / Lightning / torch's wrapper, not by the model."""
    for call in ctx.facts.calls:
        if call.qualname in (APPLY_AC, CHECKPOINT_WRAPPER) or call.name == "apply_activation_checkpointing":
            return call.line, f"`{call.name}` at line {call.line}"
        if call.name == "FullyShardedDataParallelPlugin" and truth(call.kwarg("activation_checkpointing")) is True:
            return call.line, f"`FullyShardedDataParallelPlugin(activation_checkpointing=True)` at line {call.line}"
        if call.name in ("FSDPStrategy", "FSDP2Strategy", "ModelParallelStrategy"):
            for name in ("activation_checkpointing_policy", "activation_checkpointing"):
                value = call.kwarg(name)
                if not isinstance(value, Missing) and not (isinstance(value, Const) and not value.value):
                    return call.line, f"`{call.name}({name}=...)` at line {call.line}"
        fsdp_config = call.kwarg("fsdp_config")
        if isinstance(fsdp_config, DictVal):
            for key in ("activation_checkpointing", "fsdp_activation_checkpointing"):
                if truth(fsdp_config.get(key)) is True:
                    return call.line, f"`fsdp_config[\"{key}\"]` at line {call.line}"
    return None


@rule(
    "CKPT302",
    "double-checkpointing",
    Severity.ERROR,
    fix=Applicability.DISPLAY_ONLY,
    summary="the same model checkpointed twice (FSDP/accelerate/Lightning and Hugging Face)",
)
def double_checkpointing(ctx: Context) -> Iterator[Report]:
    external = _external_checkpointing(ctx)
    if external is None:
        return
    for site in ctx.training.hf_sites:
        if site.enabled is True:
            consequence = "every layer is recomputed twice in the backward"
            if site.kind == "training config" and "fsdp_config" in external[1]:
                consequence = "the Trainer refuses to start: \"ValueError: ... can't both be set to True\""
            yield Report(
                site.span,
                f"{_site_label(site)} and {external[1]} both checkpoint the model: {consequence}; keep FSDP's "
                "checkpointing and drop the Hugging Face one",
            )


@rule(
    "CKPT303",
    "trainer-fsdp-checkpointing-flag",
    Severity.INFO,
    fix=Applicability.DISPLAY_ONLY,
    summary="`TrainingArguments(fsdp=..., gradient_checkpointing=True)`",
)
def trainer_fsdp_flag(ctx: Context) -> Iterator[Report]:
    if _external_checkpointing(ctx) is not None:
        return  # CKPT302 reports the stronger problem
    for site in ctx.training.hf_sites:
        if site.kind != "training config" or site.enabled is not True or site.call is None:
            continue
        fsdp = site.call.kwarg("fsdp")
        if isinstance(fsdp, Missing) or (isinstance(fsdp, Const) and not fsdp.value):
            continue
        if ctx.versions.at_least("transformers", "5.23"):
            warning = ("When using FSDP, prefer `fsdp_config['activation_checkpointing']` (FSDP's own activation "
                       "checkpointing) over the `activation_checkpointing` training argument; the latter introduces a "
                       "redundant AllGather in the backward pass.")
        else:
            warning = ("When using FSDP full shard, instead of using `gradient_checkpointing` in TrainingArguments, please "
                       "use `activation_checkpointing` in `fsdp_config`. The former introduces a redundant AllGather "
                       "operation in backward pass.")
        yield Report(
            site.span,
            f"{_site_label(site)} together with `fsdp=`: transformers warns \"{warning}\" ; move it to "
            "`fsdp_config={\"activation_checkpointing\": True}`",
        )


@rule(
    "CKPT304",
    "zero3-peft-non-reentrant",
    Severity.ERROR,
    fix=Applicability.DISPLAY_ONLY,
    summary="DeepSpeed ZeRO-3 + PEFT + non-reentrant checkpointing",
)
def zero3_peft_non_reentrant(ctx: Context) -> Iterator[Report]:
    stage = ctx.training.zero_stage
    if not stage or stage[0] != 3 or not uses_peft(ctx):
        return
    for span, label, call, site in _checkpointing_spots(ctx, reentrant=False):
        if site is not None and site.config_class and site.config_class.startswith("trl.") and ctx.versions.at_least("trl", TRL_NON_REENTRANT_SINCE):
            continue  # TRL forces use_reentrant=True for PEFT under ZeRO-3 itself [R2]
        fix = set_keyword(call, "use_reentrant", "True", Applicability.DISPLAY_ONLY, "Use `use_reentrant=True`", replace=True) if call else None
        yield Report(
            span,
            f"non-reentrant checkpointing {label} with PEFT under DeepSpeed ZeRO-3 ({stage[1].where}): the recomputation "
            "sees ZeRO-3's partitioned (empty) parameters and fails with \"torch.utils.checkpoint.CheckpointError: "
            "torch.utils.checkpoint: Recomputed values for the following tensors have different metadata ... shape "
            "[0]\"; use `use_reentrant=True` here",
            fix=fix,
        )


@rule(
    "CKPT305",
    "deepspeed-activation-checkpointing-unused",
    Severity.WARNING,
    summary="DeepSpeed `activation_checkpointing` block with no checkpointing in the model",
)
def deepspeed_block_unused(ctx: Context) -> Iterator[Report]:
    if ctx.training.checkpointing_maybe_on or ctx.facts.calls_to("deepspeed.checkpointing.checkpoint", "deepspeed.checkpointing.configure"):
        return
    if any(c.name == "checkpoint" and (c.receiver or "").endswith("checkpointing") for c in ctx.facts.calls):
        return
    for config in ctx.training.deepspeed_configs:
        block = config.data.get("activation_checkpointing")
        if isinstance(block, dict) and block:
            yield Report(
                Span(Position(config.line, 1), Position(config.line, 1)),
                f"the `activation_checkpointing` block of {config.where} only configures "
                "`deepspeed.checkpointing.checkpoint`, which this script never calls, and no other checkpointing is on: "
                "it saves no memory; enable checkpointing in the model (e.g. `gradient_checkpointing=True`)",
            )

