"""CKPT3xx: checkpointing under DDP, FSDP and DeepSpeed."""

from __future__ import annotations

from typing import Iterator

from ckpt_doctor.analysis.facts import Call
from ckpt_doctor.findings import Applicability, Position, Related, Severity, Span
from ckpt_doctor.analysis.conditions import Condition, on_path, together
from ckpt_doctor.rules import Context, Report, rule
from ckpt_doctor.rules.huggingface import _enabled_again_later, _site_label
from ckpt_doctor.rules.shared import launched_ddp_processes, peft_on_path, set_keyword, zero3_recompute_fixed, zero3_recompute_note
from ckpt_doctor.analysis.library import ACTIVATION_CHECKPOINTING_SINCE, APPLY_AC, CHECKPOINT_WRAPPER, DDP, TRL_NON_REENTRANT_SINCE, is_training_config
from ckpt_doctor.analysis.training import HFSite, on_paths
from ckpt_doctor.analysis.values import Const, DictVal, Missing, Value, truth



def _checkpointing_spots(ctx: Context, reentrant: bool | None) -> list[tuple[Span, str, Call | None, HFSite | None, Condition]]:
    """Every place checkpointing is on, with its mode filter applied, and the path on which it is on."""
    spots: list[tuple[Span, str, Call | None, HFSite | None, Condition]] = []
    training = ctx.training
    for call in training.torch_checkpoint_sites:
        mode = training.torch_mode(call)
        if reentrant is None or mode.reentrant is reentrant:
            spots.append((call.span, f"`{call.name}` ({mode.reason})", call, None, call.condition))
    for site in training.hf_sites:
        if site.enabled and (reentrant is None or site.mode.reentrant is reentrant) and not _enabled_again_later(ctx, site):
            spots.append((site.span, f"{_site_label(site)} ({site.mode.reason})", None, site, site.condition))
    return spots


def _find_unused(ctx: Context, condition: Condition) -> tuple[Call, Condition, str] | None:
    """A DDP set-up with `find_unused_parameters=True` on the path `condition`, the path with it and how it is set: a
    constant, an option (`find_unused_parameters=args.find_unused`) on the path where it is passed, or the Trainer's
    own choice for a PEFT model."""
    for call in ctx.facts.calls:
        value = _find_unused_value(call)
        if value is None:
            continue
        for path, state in on_paths(value, None):
            joined = together(condition, call.condition, path)
            if state is True and joined is not None:
                return call, joined, f"`find_unused_parameters=True` (line {call.line})"
    return _trainer_find_unused(ctx, condition)


def _trainer_find_unused(ctx: Context, condition: Condition) -> tuple[Call, Condition, str] | None:
    """The Trainer's DDP of a PEFT model when `ddp_find_unused_parameters` is left unset: a `PeftModel` is not a
    `PreTrainedModel`, so the Trainer passes `find_unused_parameters=True` (transformers 4.34.1 - 5.25 [H7]). DDP is a
    launch of several processes that is neither FSDP nor DeepSpeed."""
    processes = launched_ddp_processes(ctx)
    if processes is None:
        return None
    for call in ctx.facts.calls:
        if not is_training_config(call.qualname):
            continue
        value = call.kwarg("ddp_find_unused_parameters")
        if not (isinstance(value, Missing) or (isinstance(value, Const) and value.value is None)) or call.star_kwargs:
            continue
        joined = together(condition, call.condition)
        path = peft_on_path(ctx, joined) if joined is not None else None
        if path is not None:
            return call, path, (f"the `find_unused_parameters=True` the Trainer gives DDP ({processes} processes) for a "
                                f"PEFT model when `ddp_find_unused_parameters` is not set (line {call.line})")
    return None


def _find_unused_value(call: Call) -> Value | None:
    if call.qualname in (DDP, "accelerate.DistributedDataParallelKwargs", "accelerate.utils.DistributedDataParallelKwargs") or call.name in ("DDPStrategy",):
        return call.kwarg("find_unused_parameters")
    if call.qualname in ("transformers.TrainingArguments", "transformers.Seq2SeqTrainingArguments") or (call.qualname or "").startswith("trl."):
        return call.kwarg("ddp_find_unused_parameters")
    strategy = call.kwarg("strategy")
    if isinstance(strategy, Const) and strategy.value == "ddp_find_unused_parameters_true":
        return strategy
    return None


@rule(
    "CKPT301",
    "reentrant-checkpointing-ddp-find-unused",
    Severity.ERROR,
    fix=Applicability.DISPLAY_ONLY,
    summary="reentrant checkpointing with DDP `find_unused_parameters=True`",
)
def reentrant_ddp_find_unused(ctx: Context) -> Iterator[Report]:
    for span, label, call, site, condition in _checkpointing_spots(ctx, reentrant=True):
        found = _find_unused(ctx, condition)
        if found is None:
            continue
        ddp, condition, how = found
        fix = set_keyword(call, "use_reentrant", "False", Applicability.DISPLAY_ONLY, "Use `use_reentrant=False`", replace=True) if call else None
        yield Report(
            span,
            f"reentrant checkpointing {label} with {how}: DDP fails in the backward with \"RuntimeError: Expected to "
            "mark a variable ready only once\"; use `use_reentrant=False`, or turn `find_unused_parameters` off",
            fix=fix,
            condition=condition,
            related=_related(ddp, "`find_unused_parameters=True` here"),
        )


def _related(call: Call, message: str) -> list[Related]:
    """The call as a second location of a finding, when it is in the file checked (not in a helper it imports)."""
    return [] if call.via else [Related(call.span, message)]


def _external_checkpointing(ctx: Context, condition: Condition) -> tuple[str, Condition, Call] | None:
    """Checkpointing applied by FSDP / accelerate / Lightning / torch's wrapper, not by the model, on the path
    `condition`: what it is, the path with it, and the call."""
    found = on_path(condition, ctx.facts.calls, _external)
    return (_external(found[0]), found[1], found[0]) if found else None


def external_checkpointing_calls(ctx: Context) -> list[Call]:
    """Every call that checkpoints layers from outside the model (FSDP / accelerate / Lightning / torch's wrapper)."""
    return [c for c in ctx.facts.calls if _external(c) is not None]


def _external(call: Call) -> str | None:
    where = f"line {call.line}" + (f" (in {call.via})" if call.via else "")
    if call.qualname in (APPLY_AC, CHECKPOINT_WRAPPER) or call.name == "apply_activation_checkpointing":
        return f"`{call.name}` at {where}"
    if call.name == "FullyShardedDataParallelPlugin" and truth(call.kwarg("activation_checkpointing")) is True:
        return f"`FullyShardedDataParallelPlugin(activation_checkpointing=True)` at {where}"
    if call.name in ("FSDPStrategy", "FSDP2Strategy", "ModelParallelStrategy"):
        for name in ("activation_checkpointing_policy", "activation_checkpointing"):
            value = call.kwarg(name)
            if not isinstance(value, Missing) and not (isinstance(value, Const) and not value.value):
                return f"`{call.name}({name}=...)` at {where}"
    fsdp_config = call.kwarg("fsdp_config")
    if isinstance(fsdp_config, DictVal):
        for key in ("activation_checkpointing", "fsdp_activation_checkpointing"):
            if truth(fsdp_config.get(key)) is True:
                return f"`fsdp_config[\"{key}\"]` at {where}"
    return None


@rule(
    "CKPT302",
    "double-checkpointing",
    Severity.ERROR,
    fix=Applicability.DISPLAY_ONLY,
    summary="the same model checkpointed twice (FSDP/accelerate/Lightning and Hugging Face)",
)
def double_checkpointing(ctx: Context) -> Iterator[Report]:
    for site in ctx.training.hf_sites:
        external = _external_checkpointing(ctx, site.condition) if site.enabled is True else None
        if external is None:
            continue
        what, condition, call = external
        consequence = "every layer is recomputed twice in the backward"
        if site.kind == "training config" and "fsdp_config" in what:
            consequence = "the Trainer refuses to start: \"ValueError: ... can't both be set to True\""
        yield Report(
            site.span,
            f"{_site_label(site)} and {what} both checkpoint the model: {consequence}; keep FSDP's "
            "checkpointing and drop the Hugging Face one",
            condition=condition,
            related=_related(call, f"{what.split(' at ')[0]} checkpoints the model too"),
        )


@rule(
    "CKPT303",
    "trainer-fsdp-checkpointing-flag",
    Severity.INFO,
    fix=Applicability.DISPLAY_ONLY,
    summary="`TrainingArguments(fsdp=..., gradient_checkpointing=True)`",
)
def trainer_fsdp_flag(ctx: Context) -> Iterator[Report]:
    for site in ctx.training.hf_sites:
        if site.kind not in ("training config", "command line") or site.enabled is not True:
            continue
        if _external_checkpointing(ctx, site.condition) is not None:
            continue  # CKPT302 reports the stronger problem
        fsdp = site.argument("fsdp")
        if isinstance(fsdp, Missing) or (isinstance(fsdp, Const) and not fsdp.value) or (site.call is None and not isinstance(fsdp, Const)):
            continue  # parsed from a command line no launcher shows: FSDP depends on it
        if site.call is None and _named_fsdp_config_checkpoints(ctx, site.argument("fsdp_config")) is not False:
            continue  # the launcher's `--fsdp_config` turns FSDP's own on (double checkpointing), or is not readable
        if ctx.versions.at_least("transformers", ACTIVATION_CHECKPOINTING_SINCE):
            warning = ("When using FSDP, prefer `fsdp_config['activation_checkpointing']` (FSDP's own activation "
                       "checkpointing) over the `activation_checkpointing` training argument; the latter introduces a "
                       "redundant AllGather in the backward pass.")
        else:
            warning = ("When using FSDP full shard, instead of using `gradient_checkpointing` in TrainingArguments, please "
                       "use `activation_checkpointing` in `fsdp_config`. The former introduces a redundant AllGather "
                       "operation in backward pass.")
        yield Report(
            site.span,
            f"{_site_label(site)} together with {_fsdp_label(fsdp)}: transformers warns \"{warning}\" ; move it to "
            "`fsdp_config={\"activation_checkpointing\": True}`",
            condition=site.condition,
        )


def _named_fsdp_config_checkpoints(ctx: Context, named: Value) -> bool | None:
    """Whether the `fsdp_config` JSON a launcher names sets `activation_checkpointing`; False without one, None
    when it cannot be read."""
    if isinstance(named, Missing):
        return False
    if not (isinstance(named, Const) and isinstance(named.value, str)):
        return None
    data = ctx.training.files.settings(named.value)  # read through the project's files: the cache follows it
    return bool(data.get("activation_checkpointing")) if isinstance(data, dict) else None


def _fsdp_label(fsdp: Value) -> str:
    origin = fsdp.origin if isinstance(fsdp, Const) else None
    return origin.describe() if origin is not None and origin.file is not None and origin.option else "`fsdp=`"


@rule(
    "CKPT304",
    "zero3-peft-non-reentrant",
    Severity.ERROR,
    fix=Applicability.DISPLAY_ONLY,
    summary="DeepSpeed ZeRO-3 + PEFT + non-reentrant checkpointing",
)
def zero3_peft_non_reentrant(ctx: Context) -> Iterator[Report]:
    stage = ctx.training.zero_stage
    if not stage or stage[0] != 3 or zero3_recompute_fixed(ctx):
        return  # DeepSpeed >= 0.19.3 keeps the frozen parameters gathered through the recompute [A4]
    for span, label, call, site, condition in _checkpointing_spots(ctx, reentrant=False):
        condition = peft_on_path(ctx, condition)
        if condition is None:
            continue
        if site is not None and site.config_class and site.config_class.startswith("trl.") and ctx.versions.at_least("trl", TRL_NON_REENTRANT_SINCE):
            continue  # TRL forces use_reentrant=True for PEFT under ZeRO-3 itself [R2]
        fix = set_keyword(call, "use_reentrant", "True", Applicability.DISPLAY_ONLY, "Use `use_reentrant=True`", replace=True) if call else None
        yield Report(
            span,
            f"non-reentrant checkpointing {label} with PEFT under DeepSpeed ZeRO-3 ({stage[1].where}): the recomputation "
            "sees ZeRO-3's partitioned (empty) parameters and fails with \"torch.utils.checkpoint.CheckpointError: "
            "torch.utils.checkpoint: Recomputed values for the following tensors have different metadata ... shape "
            f"[0]\"; use `use_reentrant=True` here, {zero3_recompute_note(ctx)}",
            fix=fix,
            condition=condition,
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
    if ctx.facts.deepspeed_checkpoint_module:
        return  # the model the project builds calls DeepSpeed's checkpoint itself
    for config in ctx.training.deepspeed_configs:
        block = config.data.get("activation_checkpointing")
        if isinstance(block, dict) and block:
            yield Report(
                Span(Position(config.line, 1), Position(config.line, 1)),
                f"the `activation_checkpointing` block of {config.where} only configures "
                "`deepspeed.checkpointing.checkpoint`, which this script never calls, and no other checkpointing is on: "
                "it saves no memory; enable checkpointing in the model (e.g. `gradient_checkpointing=True`)",
            )


@rule(
    "CKPT306",
    "fsdp-unit-inside-selective-checkpointing",
    Severity.WARNING,
    summary="an FSDP2 unit inside a selective-checkpointing region",
)
def fsdp_unit_inside_sac(ctx: Context) -> Iterator[Report]:
    from ckpt_doctor.analysis.selective import first_argument, fsdp_units_in_sac_regions

    for found in fsdp_units_in_sac_regions(ctx.facts):
        unit, target = first_argument(found.shard), first_argument(found.region)
        holds = "is itself" if unit == target else f"holds `{unit}`,"
        yield Report(
            found.region.span,
            f"selective checkpointing (`context_fn=`) over `{target}`, which {holds} an FSDP unit sharded at line "
            f"{found.shard.line}: FSDP's all-gathers then run inside the region, in the forward and again in the "
            "recompute, and SAC's caching mode treats their internals (`_foreach_copy_`, `split_with_sizes_copy`) as model "
            "ops; depending on the policy the backward fails with \"... encountered during backward but not found in "
            "storage\" or reuses stale buffers (silently wrong gradients); wrap the blocks before `fully_shard` "
            "(torchtitan's order: checkpointing, compile, then FSDP)",
            condition=found.condition,
        )
