"""CKPT4xx: will the training step fit in GPU memory, with or without checkpointing?

The settings come from the facts (`ckpt_doctor.analysis.settings`), the numbers from the closed-form
estimator (`ckpt_doctor.estimate.memory`). Every finding names the settings it used and where each
came from, including the defaults that stood in for what the script does not say.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

from ckpt_doctor.findings import Applicability, FixSpec, Position, SetKeywords, Severity, Span
from ckpt_doctor.analysis.library import ACTIVATION_CHECKPOINTING_SINCE, TRANSFORMERS_TRAINER_EMPTY_IS_NONE_SINCE
from ckpt_doctor.rules import Context, Report, rule
from ckpt_doctor.rules.shared import insert_after
from ckpt_doctor.analysis.settings import ScriptSettings, complete_for
from ckpt_doctor.analysis.whole_job import config_colocations, script_colocations

GIB = 2**30
COMFORT = 0.80  # CKPT403: "fits comfortably" = the plan without checkpointing uses at most 80 % of the budget
UNBOUNDED_GPUS = 4096  # a sharding spread this wide leaves only what no GPU count divides


@dataclass
class Budget:
    bytes: int
    source: str  # "--gpu-memory", "gpu-memory in pyproject.toml", "NVML", "default"

    @property
    def explicit(self) -> bool:
        return self.source != "default"

    def describe(self) -> str:
        if not self.explicit:
            return f"{self.bytes / GIB:.0f} GiB (the default: say yours with --gpu-memory or [tool.ckpt-doctor] gpu-memory)"
        return f"{self.bytes / GIB:.0f} GiB ({self.source})"


def resolve_budget(ctx: Context) -> Budget:
    from ckpt_doctor.estimate.gpus import DEFAULT_BUDGET_BYTES, configured_budget

    found = configured_budget(ctx.config.gpu_memory)
    return Budget(*found) if found else Budget(DEFAULT_BUDGET_BYTES, "default")


@dataclass
class Assessment:
    settings: ScriptSettings
    budget: Budget
    params: int
    base: object  # estimate.memory.TrainingSetup with checkpointing="none"
    current: str  # the plan as written: none | full | every_N
    partial_plans: bool  # every_n_layers / offload available in the target transformers
    computed: dict[str, object] = field(default_factory=dict)
    upper_bound: str | None = None  # why the estimate is only an upper bound (a fused loss): no out-of-memory verdict
    memo: dict[str, object] = field(default_factory=dict)

    def plan(self, name: str):
        """The estimate for one plan, computed on first use (most files need only one or two)."""
        if name not in self.computed:
            from ckpt_doctor.estimate import memory

            estimate = memory.estimate(replace(self.base, checkpointing=name))
            fits = estimate.peak_bytes_nvidia_smi <= self.budget.bytes
            self.computed[name] = memory.PlanResult(
                name, estimate.peak_bytes, estimate.peak_bytes_nvidia_smi, fits, memory.extra_compute_pct(self.base, name), estimate
            )
        return self.computed[name]

    def plans(self) -> list:
        names = ["none", "full"]
        if self.partial_plans:
            names += [f"every_{n}" for n in (2, 3, 4) if n < self.base.arch.num_layers] + ["offload"]
        return [self.plan(n) for n in names]

    @property
    def recommended(self) -> str | None:
        from ckpt_doctor.estimate import memory

        best = memory.recommended(self.plans())
        return best.name if best else None

    def peak(self, plan: str) -> int:
        return self.plan(plan).peak_bytes

    def fits_on_some_gpu_count(self, plan: str) -> bool:
        """Whether the plan would fit with its sharding spread over as many GPUs as it takes: only what sharding
        cannot divide is left (activations, logits, a layer's gathered weights)."""
        from ckpt_doctor.estimate import memory

        spread = memory.estimate(replace(self.base, checkpointing=plan, gpus=UNBOUNDED_GPUS))
        return spread.peak_bytes_nvidia_smi <= self.budget.bytes

    def fit(self):
        """The cheapest plan that keeps the experiment and fits (estimate.fit), for the step as written; the
        checkpointing plans' estimates made so far are reused."""
        if "fit" not in self.memo:
            from ckpt_doctor.estimate.fit import FitOptions, plan_fit

            setup = replace(self.base, checkpointing=self.current)
            known = {name: p.estimate for name, p in self.computed.items() if p.estimate is not None}
            options = FitOptions(partial_plans=self.partial_plans, offload_available=self.partial_plans,
                                 fused_loss=self.settings.unmodelled_fused_loss,
                                 zero_available=self.settings.gpus.stated)
            self.memo["fit"] = plan_fit(setup, self.budget.bytes, options, known=known)
        return self.memo["fit"]


class _Unknown(Exception):
    """Why the memory could not be estimated (becomes CKPT404), and where to say so."""

    def __init__(self, message: str, span: Span) -> None:
        super().__init__(message)
        self.span = span


def _assess(ctx: Context) -> Assessment | _Unknown | None:
    if "memory" not in ctx.memo:
        try:
            ctx.memo["memory"] = _assess_uncached(ctx)
        except _Unknown as reason:
            ctx.memo["memory"] = reason
    return ctx.memo["memory"]


def _assess_uncached(ctx: Context) -> Assessment | None:
    settings = ctx.analysis.settings
    if not settings.is_training or (settings.model_load is None and settings.model is None):
        return None  # not a training script, or no model we could see being loaded
    from ckpt_doctor.estimate import memory
    from ckpt_doctor.estimate.registry import resolve_with_source

    where = settings.model_load.span if settings.model_load else Span(Position(1, 1), Position(1, 1))
    if settings.model is None:
        raise _Unknown(
            f"the model id at line {where.start.line} is not a constant (it comes from the command line or a "
            "variable): give it a default, or map it in `[tool.ckpt-doctor] model-configs` to a local config.json. "
            f"Settings read: {settings.describe()}",
            where,
        )
    name = str(settings.model.value)
    mapped = ctx.config.model_configs.get(name)
    arch, found_as = resolve_with_source(str(_relative_to_root(ctx, mapped)) if mapped else name)
    if arch is None:
        raise _Unknown(
            f"model {name!r} (line {settings.model.line}) is neither bundled nor in the local Hugging Face cache: "
            f'add `model-configs = {{ "{name}" = "path/to/config.json" }}` under [tool.ckpt-doctor], or run '
            f"`ckpt-doctor estimate --model path/to/config.json`. Settings read: {settings.describe()}",
            where,
        )
    if settings.sharding_unknown:
        raise _Unknown(f"how the step is spread over GPUs is not known: {settings.sharding_unknown}. Settings read: "
                       f"{settings.describe()}", where)
    if settings.trained_unknown:
        raise _Unknown(f"what the step trains is not known: {settings.trained_unknown}. Settings read: {settings.describe()}", where)
    loader = settings.model_load.qualname if settings.model_load is not None else None
    if loader and loader.startswith("unsloth."):
        raise _Unknown(f"the model is loaded by Unsloth (`{loader}`, line {settings.model_load.line}), which patches in kernels, "
                       "a chunked loss and offloaded checkpointing of its own that the estimate does not model. Settings read: "
                       f"{settings.describe()}", where)
    upper_bound = None
    if settings.fused_loss is not None:
        loss = settings.fused_loss
        said = f"{loss.file}:{loss.line}" if loss.file else f"line {loss.line}"
        upper_bound = (f"Liger's kernels (`{loss.note}`, {said}) compute the loss as the estimate does, and swap in RMSNorm, "
                       "SwiGLU and RoPE kernels that keep less for backward than the transformers layers it counts"
                       if settings.liger_loss else
                       f"a fused or chunked cross-entropy (`{loss.note}`, {said}) never holds the whole logits the estimate counts")
    if settings.optimizer.value not in memory.OPTIMIZERS:
        raise _Unknown(f"the optimizer {settings.optimizer.value!r} (line {settings.optimizer.line}) is not one the estimate models "
                       f"({', '.join(memory.OPTIMIZERS)}). Settings read: {settings.describe()}", where)
    if found_as.startswith("architecture of"):  # another id's numbers (a re-upload, a folder named like a model): say so
        settings = replace(settings, model=replace(settings.model, note=found_as.split(":")[0]))
    settings = complete_for(replace(settings), arch)  # the analysis' settings stay as the script states them
    from ckpt_doctor.estimate.arch import attention_refusal

    refusal = attention_refusal(arch, str(settings.attn.value))
    if refusal:  # transformers will not build this model: no estimate of a step that cannot run
        raise _Unknown(f"{refusal}. Settings read: {settings.describe()}", where)
    budget = resolve_budget(ctx)
    flags = {k: v for k, v in settings.as_flags().items() if k != "model"}
    base = memory.TrainingSetup(arch=arch, **{**flags, "checkpointing": "none"})
    # every_n_layers and offload exist in transformers >= 5.16 (Trainer kwargs) [H5]; before, all or nothing
    partial_plans = ctx.versions.at_least("transformers", TRANSFORMERS_TRAINER_EMPTY_IS_NONE_SINCE) is True
    from ckpt_doctor.estimate.params import count_params

    return Assessment(settings, budget, count_params(arch).total, base, str(settings.checkpointing.value), partial_plans,
                      upper_bound=upper_bound)


def _relative_to_root(ctx: Context, path: str):
    from pathlib import Path

    candidate = Path(path)
    return candidate if candidate.is_absolute() else ctx.config.root / candidate


def _anchor(assessment: Assessment) -> Span:
    s = assessment.settings
    call = s.config_call or s.model_load
    if call is not None:
        return call.span
    line = s.model.line if s.model and s.model.line else 1
    return Span(Position(line, 1), Position(line, 1))


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _card(plan) -> str:
    """What the card must hold (nvidia-smi's view, compared with the budget) and PyTorch's peak."""
    return f"{_gib(plan.peak_bytes_nvidia_smi)} ({_gib(plan.peak_bytes)} allocated by PyTorch)"


def _verdict_possible(assessment: Assessment) -> bool:
    """Whether "does not fit without checkpointing" can be said: not on an upper bound (a fused loss), not on a batch or
    sequence length the project does not state (the activations the verdict rests on would be a guess), and not on a
    spread over GPUs that rests on the assumed number of them, unless no number of GPUs would make it fit."""
    if assessment.upper_bound or _sizes_assumed(assessment):
        return False
    return not _gpus_assumed(assessment) or not assessment.fits_on_some_gpu_count("none")


def _sizes_assumed(assessment: Assessment) -> bool:
    """The micro-batch or the sequence length is the estimate's assumption, not a value the project states."""
    return any(s.note.startswith("assumed") for s in (assessment.settings.batch_size, assessment.settings.seq_len))


def _fits_at_longest_sequence(assessment: Assessment) -> bool:
    """The batch is stated and the assumed sequence is the longest the model takes (`max_position_embeddings`): what
    fits at it fits at any sequence the run can feed."""
    s = assessment.settings
    longest = assessment.base.arch.max_position_embeddings
    return not s.batch_size.note.startswith("assumed") and bool(longest) and s.seq_len.value >= longest


def _gpus_assumed(assessment: Assessment) -> bool:
    """Sharded over GPUs whose number the project does not state (the estimate per GPU rests on an assumed count)."""
    return bool(assessment.settings.zero.value) and not assessment.settings.gpus.stated


@rule(
    "CKPT401",
    "oom-without-checkpointing",
    Severity.ERROR,
    fix=Applicability.UNSAFE,
    summary="the step does not fit in GPU memory without checkpointing, but would with it",
)
def oom_without_checkpointing(ctx: Context) -> Iterator[Report]:
    assessment = _assess(ctx)
    if not isinstance(assessment, Assessment) or assessment.current != "none" or assessment.plan("none").fits:
        return
    if not _verdict_possible(assessment):
        return
    threshold = ctx.config.checkpointing_threshold
    if not assessment.budget.explicit and assessment.params < threshold:
        return  # without a stated budget, only models above the size threshold are judged
    gpus_assumed = _gpus_assumed(assessment)  # and no count fits without checkpointing (the verdict above)
    plan = assessment.recommended or ("full" if gpus_assumed else None)
    if plan is None:
        return  # CKPT402
    needs = f"without checkpointing the step needs an estimated {_card(assessment.plan('none'))}, over the GPU budget of {assessment.budget.describe()}"
    if gpus_assumed:
        needs += ", on any number of GPUs: sharding does not divide the activations"
    cheapest, fix = _cheapest(ctx, assessment)
    yield Report(
        _anchor(assessment),
        f"{needs}; with {_plan_words(plan)} it needs {_card(assessment.plan(plan))}"
        f"{f' over the {assessment.settings.gpus.value} GPUs assumed' if gpus_assumed else ''} "
        f"(+{assessment.plan(plan).extra_compute_pct:.0f} % compute){cheapest}. Settings: {assessment.settings.describe()}",
        fix=fix or _enable_fix(ctx, assessment, plan),
    )


def _cheapest(ctx: Context, assessment: Assessment) -> tuple[str, FixSpec | None]:
    """What the message adds about the cheapest plan that keeps the experiment (`estimate --fit`), and its fix
    when the script can take it as one edit; ("", None) when that plan is checkpointing alone (the rule's own)."""
    fit = assessment.fit()
    dominant = f"; {_dominant(fit)}"
    chosen = fit.chosen
    if chosen is None or not chosen.changes:
        return dominant, None
    if [c.kind for c in chosen.changes] == ["checkpointing"] and chosen.changes[0].after == assessment.recommended:
        return dominant, None
    fix = _plan_fix(ctx, assessment, chosen)
    said = f"{dominant}; {_cheapest_plan(chosen)}"
    if fix is None:
        said += " (not offered as a fix: the script does not set all of it in one resolved call)"
    return said, fix


def _dominant(fit) -> str:
    """The term that dominates the step's peak (`estimate.fit.FitResult`)."""
    return f"the peak is mostly {fit.dominant} ({100 * fit.shares[fit.dominant]:.0f} %)"


def _cheapest_plan(chosen) -> str:
    """The cheapest plan that keeps the experiment and fits (`estimate.fit`), as the messages name it."""
    return (f"the cheapest plan that fits (`ckpt-doctor estimate --fit`): {chosen.words()}, "
            f"{_gib(chosen.peak_bytes_nvidia_smi)} on the card, about {chosen.slowdown_pct:+.0f} % time (predicted)")


TRANSFORMERS_OPTIM = {"adamw-fused": "adamw_torch_fused", "adamw-8bit": "adamw_bnb_8bit"}


def _plan_fix(ctx: Context, assessment: Assessment, chosen) -> FixSpec | None:
    """The plan as one edit of the `TrainingArguments` / TRL config call: its keywords set or replaced, where every
    value it replaces is a constant written in that call (or the call's default); None otherwise."""
    from ckpt_doctor.analysis.values import Const

    settings = assessment.settings
    config = settings.config_call
    if config is None or config.via or config.star_kwargs:
        return None

    def resolved(name: str) -> bool:
        if name not in config.kwargs:
            return True
        value = config.kwarg(name)
        return name not in config.kwarg_names and isinstance(value, Const) and not value.alternatives

    keywords: list[tuple[str, str]] = []
    for change in chosen.changes:
        if change.kind == "checkpointing":
            edit = _enable_fix(ctx, assessment, change.after) if change.after != "offload" else None
            if edit is None or not isinstance(edit.edit, SetKeywords) or assessment.current != "none":
                return None
            keywords += list(edit.edit.keywords)
        elif change.kind == "micro_batch":
            if not (resolved("per_device_train_batch_size") and resolved("gradient_accumulation_steps")):
                return None
            (batch, steps) = change.after
            keywords += [("per_device_train_batch_size", str(batch)), ("gradient_accumulation_steps", str(steps))]
        elif change.kind == "optimizer":
            from_config = settings.optimizer.line == config.line or (not settings.optimizer.stated and "optim" in settings.optimizer.note)
            if not from_config or not resolved("optim") or change.after not in TRANSFORMERS_OPTIM:
                return None
            keywords.append(("optim", f'"{TRANSFORMERS_OPTIM[change.after]}"'))
        elif change.kind == "loss":
            if ctx.versions.at_least("transformers", TRANSFORMERS_LIGER_SINCE) is not True or not resolved("use_liger_kernel"):
                return None
            keywords.append(("use_liger_kernel", "True"))
        else:
            return None  # ZeRO / FSDP: a DeepSpeed or FSDP config, not a keyword
    needs = " (needs bitsandbytes)" if any(c.after == "adamw-8bit" for c in chosen.changes) else ""
    needs += " (needs liger-kernel)" if any(c.kind == "loss" for c in chosen.changes) else ""
    return FixSpec(SetKeywords(tuple(keywords)), config.span, Applicability.UNSAFE,
                   f"Use the cheapest plan that fits: {chosen.name}{needs}")


def _plan_words(plan: str) -> str:
    if plan == "full":
        return "checkpointing on every layer"
    if plan.startswith("every_"):
        return f"checkpointing every {plan.split('_', 1)[1]} layers"
    if plan == "offload":
        return "checkpointing with CPU offload"
    return "no checkpointing"


def _enable_fix(ctx: Context, assessment: Assessment, plan: str) -> FixSpec | None:
    versions = ctx.versions
    new_names = versions.at_least("transformers", ACTIVATION_CHECKPOINTING_SINCE) is True  # the old names work everywhere else
    every = int(plan.split("_", 1)[1]) if plan.startswith("every_") else 1
    config = assessment.settings.config_call
    if config is not None and config.via:
        return None  # the training arguments are built in another module
    if config is not None:
        flag = "activation_checkpointing" if new_names else "gradient_checkpointing"
        kwargs = '{"use_reentrant": False}'
        if every > 1:
            if not versions.at_least("transformers", TRANSFORMERS_TRAINER_EMPTY_IS_NONE_SINCE):
                return None
            kwargs = f'{{"use_reentrant": False, "every_n_layers": {every}}}'
        return FixSpec(SetKeywords(((flag, "True"), (f"{flag}_kwargs", kwargs))), config.span, Applicability.UNSAFE,
                       f"Turn on {_plan_words(plan)} with `{flag}=True`")
    load = assessment.settings.model_load
    if load is None or not load.assigned_to or plan == "offload":
        return None
    if new_names:
        extra = f", every_n_layers={every}" if every > 1 else ""
        code = f'{load.assigned_to}.activation_checkpointing_enable(activation_checkpointing_kwargs={{"use_reentrant": False}}{extra})'
    elif every > 1:
        return None
    else:
        code = f'{load.assigned_to}.gradient_checkpointing_enable(gradient_checkpointing_kwargs={{"use_reentrant": False}})'
    return insert_after(load.statement, code, Applicability.UNSAFE, f"Turn on {_plan_words(plan)}")


@rule(
    "CKPT402",
    "oom-even-with-checkpointing",
    Severity.ERROR,
    summary="the step does not fit in GPU memory even with full checkpointing",
)
def oom_even_with_checkpointing(ctx: Context) -> Iterator[Report]:
    assessment = _assess(ctx)
    if not isinstance(assessment, Assessment) or _gpus_assumed(assessment) or assessment.upper_bound:
        return  # "does not fit at all" needs a GPU count it rests on, and more than an upper bound
    if not assessment.budget.explicit:
        # no budget stated: said only when the step fits no card made, so a check never passes a step nothing can run;
        # nothing is estimated for a step whose weights and states alone are under that card
        from ckpt_doctor.estimate.gpus import largest_gpu

        name, largest = largest_gpu()
        if _states_floor(assessment) <= largest or \
                any(p.peak_bytes_nvidia_smi <= largest for p in [assessment.plan("none"), *assessment.plans()]):
            return
        assessment = replace(assessment, budget=Budget(largest, f"the largest GPU made, {name}; no budget was stated"),
                             computed={}, memo={})
    if assessment.plan("none").fits or any(p.fits for p in assessment.plans()):
        return
    if _sizes_assumed(assessment) and _size_free_peak(assessment) <= assessment.budget.bytes:
        return  # over the budget only through activations of a batch or sequence the project does not state
    best = min(assessment.plans(), key=lambda p: p.peak_bytes)
    fit = assessment.fit()
    dominant = _dominant(fit)
    if fit.chosen is not None and fit.chosen.changes:
        keeps = f"; keeping the experiment, {_cheapest_plan(fit.chosen)}"
    else:
        keeps = "; no plan that keeps the experiment (checkpointing, micro-batch and accumulation, fused loss, optimizer, ZeRO stage) fits"
    yield Report(
        _anchor(assessment),
        f"{'whatever the checkpointing' if best.name == 'none' else f'even with {_plan_words(best.name)}'} the step needs an estimated {_card(best)}, over the GPU budget of "
        f"{assessment.budget.describe()}; {dominant}{keeps}; what else would fit: {_what_would_fit(assessment)}. "
        f"Settings: {assessment.settings.describe()}",
    )


def _states_floor(assessment: Assessment) -> int:
    """What the step holds at least, whatever its plan and activations: the weights in their dtype, and for each
    trained parameter a 16-bit gradient and AdamW's two states at 4 bytes, divided over the GPUs a ZeRO-3 / FSDP run
    shards them on. A step under the largest card by this floor is not judged against it (no estimate is made)."""
    from ckpt_doctor.estimate.memory import DTYPE_BYTES
    from ckpt_doctor.estimate.params import lora_params

    setup = assessment.base
    trained = lora_params(setup.arch, setup.lora_r, setup.lora_targets) if setup.lora_r else assessment.params
    weights = assessment.params * (0.5 if setup.load_in_4bit else 1 if setup.load_in_8bit else DTYPE_BYTES[setup.dtype])
    states = trained * (2 + 8) if setup.optimizer in ("adamw", "adamw-fused", "adamw-loop") else trained * 2
    shards = setup.gpus if setup.zero == 3 else 1
    return int((weights + states) / shards)


def _size_free_peak(assessment: Assessment) -> int:
    """The peak PyTorch allocates whatever the batch and sequence: the step at one token, fully checkpointed (weights,
    gradients, optimizer state and the optimizer step's temporaries). Allocated, not reserved: a verdict on sizes the
    project does not state rests only on what the trace measures to the byte, not on the allocator's overhead."""
    from ckpt_doctor.estimate import memory

    return memory.estimate(replace(assessment.base, batch_size=1, seq_len=1, checkpointing="full")).peak_bytes


def _what_would_fit(assessment: Assessment) -> str:
    """Try the usual remedies one at a time, with full checkpointing, and list those that fit."""
    from ckpt_doctor.estimate import memory

    budget = assessment.budget.bytes
    base = replace(assessment.base, checkpointing="full")
    options = []
    if base.lora_r is None:
        options.append(("LoRA (r=16)", replace(base, lora_r=16)))
        options.append(("QLoRA (4-bit base, r=16)", replace(base, lora_r=16, load_in_4bit=True, dtype="bf16")))
    from ckpt_doctor.estimate.fit import OPTIM_8BIT_MIN_SHARE

    if base.optimizer in ("adamw", "adamw-fused") and assessment.fit().shares["optimizer state"] >= OPTIM_8BIT_MIN_SHARE:
        options.append(("an 8-bit optimizer (optim=\"adamw_bnb_8bit\")", replace(base, optimizer="adamw-8bit")))
    if base.batch_size > 1:  # the same global batch
        steps = base.batch_size * base.gradient_accumulation
        options.append((f"batch 1 with gradient_accumulation_steps={steps}", replace(base, batch_size=1, gradient_accumulation=steps)))
    for gpus in (2, 4, 8):
        options.append((f"ZeRO-3 / FSDP over {gpus} GPUs", replace(base, gpus=gpus, zero=3)))
    fitting = []
    for label, setup in options:
        card = memory.estimate(setup).peak_bytes_nvidia_smi
        if card <= budget:
            fitting.append(f"{label} ({_gib(card)})")
            if len(fitting) == 3:
                break
    return ", ".join(fitting) if fitting else "none of LoRA, QLoRA, an 8-bit optimizer, a smaller batch or ZeRO-3 over 8 GPUs alone"


@rule(
    "CKPT403",
    "checkpointing-not-needed",
    Severity.INFO,
    fix=Applicability.DISPLAY_ONLY,
    summary="checkpointing on although the step fits comfortably without it",
)
def checkpointing_not_needed(ctx: Context) -> Iterator[Report]:
    assessment = _assess(ctx)
    if not isinstance(assessment, Assessment) or assessment.current == "none" or not assessment.budget.explicit:
        return
    if _gpus_assumed(assessment) or (_sizes_assumed(assessment) and not _fits_at_longest_sequence(assessment)):
        return  # "fits without" would rest on the assumed number of GPUs, or on an assumed batch or sequence
    none = assessment.plan("none")
    if none.peak_bytes_nvidia_smi > COMFORT * assessment.budget.bytes:
        current_cost = assessment.plan(assessment.current).extra_compute_pct
        lighter = [p for p in assessment.plans() if p.name != "none" and p.fits and p.extra_compute_pct < current_cost]
        if not lighter or assessment.current != "full":
            return
        best = min(lighter, key=lambda p: p.extra_compute_pct)
        message = (
            f"full checkpointing, but {_plan_words(best.name)} also fits ({_gib(best.peak_bytes_nvidia_smi)} of "
            f"{assessment.budget.describe()}) and recomputes less (+{best.extra_compute_pct:.0f} % instead of "
            f"+{assessment.plan('full').extra_compute_pct:.0f} % compute)"
        )
    else:
        current = assessment.plan(assessment.current)
        message = (
            f"checkpointing is on, but the step fits without it: estimated {_gib(none.peak_bytes_nvidia_smi)} of "
            f"{assessment.budget.describe()}, so checkpointing only costs ~{current.extra_compute_pct:.0f} % more compute"
        )
    line = assessment.settings.checkpointing.line or 1
    yield Report(Span(Position(line, 1), Position(line, 1)), f"{message}. Settings: {assessment.settings.describe()}")


@rule(
    "CKPT404",
    "memory-not-estimated",
    Severity.INFO,
    summary="the training step's memory could not be estimated",
)
def memory_not_estimated(ctx: Context) -> Iterator[Report]:
    assessment = _assess(ctx)
    if isinstance(assessment, _Unknown):
        yield Report(assessment.span, f"cannot estimate GPU memory: {assessment}")


# -- vLLM colocated with training (TRL GRPO / RLOO) ---------------------------------------------------
@rule(
    "CKPT405",
    "vllm-colocate-leaves-no-room",
    Severity.ERROR,
    summary="vLLM colocated with training takes the memory the training step needs",
)
def vllm_colocate_leaves_no_room(ctx: Context) -> Iterator[Report]:
    colocations = script_colocations(ctx.training) if ctx.kind == "script" else config_colocations(ctx.analysis.run, ctx.versions)
    if not colocations:
        return
    assessment = _assess(ctx)
    if not isinstance(assessment, Assessment):
        return
    if not assessment.budget.explicit and assessment.params < ctx.config.checkpointing_threshold:
        return  # without a stated budget, only models above the size threshold are judged (as CKPT401)
    step = assessment.plan(assessment.current)
    if not step.fits:
        return  # the step alone does not fit: CKPT401 / CKPT402
    budget = assessment.budget.bytes
    for colocation in colocations:
        held = int(colocation.utilization * budget)
        if step.peak_bytes_nvidia_smi + held <= budget:
            continue
        room = (budget - step.peak_bytes_nvidia_smi) / budget
        advice = (f"lower `vllm_gpu_memory_utilization` to at most {max(room, 0.0):.2f} if vLLM's weights and KV cache fit in it, "
                  if room >= 0.1 else "")
        yield Report(
            colocation.span,
            f"vLLM runs in the training processes ({colocation.mode}) and holds `vllm_gpu_memory_utilization` = "
            f"{colocation.utilization:g} ({colocation.said}) of each GPU, {_gib(held)} of {assessment.budget.describe()}, for the "
            f"whole run; the training step needs an estimated {_card(step)} beside it, {_gib(step.peak_bytes_nvidia_smi + held - budget)} "
            f"more than the card has (the estimate counts no reference model); {advice}turn on `vllm_enable_sleep_mode=True`, "
            f"which frees vLLM's memory during the step, or run vLLM as a server on other GPUs (`vllm_mode=\"server\"`). "
            f"Settings: {assessment.settings.describe()}",
            condition=colocation.condition,
        )


def _always():
    from ckpt_doctor.analysis.conditions import ALWAYS

    return ALWAYS


# -- the logits of a large vocabulary, materialised whole (CKPT406) ----------------------------------------
LOGITS_SHARE = 0.25  # report when the vocabulary-sized tensors are at least this share of the step's estimated peak
LOGITS_MIN_BYTES = 2 * GIB  # ... and at least this much: below it a fused loss saves too little to matter
LOGITS_COUNTERFACTUAL_VOCAB = 8  # the same step with a vocabulary this small: what the logits leave behind
PARAMETER_TERMS = ("weights", "master_weights", "gradients", "optimizer_state")
# imports that bring a loss that never holds the full logits (or a patch that installs one)
FUSED_LOSS_MODULES = ("liger_kernel", "cut_cross_entropy", "unsloth")
# configs of the scripts the estimate's loss describes; the other TRL trainers compute log-probabilities their own way
PLAIN_LOSS_CONFIGS = ("transformers.TrainingArguments", "transformers.Seq2SeqTrainingArguments", "trl.SFTConfig")
TRANSFORMERS_LIGER_SINCE = "4.46"  # TrainingArguments.use_liger_kernel there (trl 0.16.0 reads it, needs >= 4.46.0) [H9]
TRL_CHUNKED_NLL_SINCE = "1.4"  # SFTConfig(loss_type="chunked_nll") exists [R6]
TRL_CHUNKED_NLL_DEFAULT_SINCE = "1.7"  # ... and is the default when use_liger_kernel is off [R6]


@dataclass
class LogitsCost:
    bytes: int  # what the vocabulary-sized tensors add to the step's peak
    peak: int  # the step's estimated peak (PyTorch's view)
    peak_nvidia_smi: int  # and on the card
    logits: int  # one fp32 copy of the logits: tokens x vocabulary x 4 bytes
    tokens: int
    vocab: int

    @property
    def share(self) -> float:
        return self.bytes / self.peak if self.peak else 0.0


def logits_cost(assessment: Assessment) -> LogitsCost:
    """The part of the step's peak that the vocabulary-sized tensors of the loss make: the estimate of the step as
    written, less the estimate of the same step over a vocabulary of 8, each without its parameter terms (weights,
    master copies, gradients, optimizer state: a fused loss keeps the embedding and the head as they are)."""
    from ckpt_doctor.estimate import memory

    def rest(estimate) -> int:
        return estimate.peak_bytes - sum(estimate.breakdown[k] for k in PARAMETER_TERMS)

    step = assessment.plan(assessment.current).estimate
    if step.setup.loss != "plain":  # Liger on by default: the cost on the runs where it is off
        step = memory.estimate(replace(step.setup, loss="plain"))
    small = replace(step.setup, arch=replace(step.setup.arch, vocab_size=LOGITS_COUNTERFACTUAL_VOCAB))
    tokens = step.setup.batch_size * step.setup.seq_len
    vocab = step.setup.arch.vocab_size
    return LogitsCost(max(0, rest(step) - rest(memory.estimate(small))), step.peak_bytes, step.peak_bytes_nvidia_smi,
                      tokens * vocab * 4, tokens, vocab)


@dataclass
class PlainLoss:
    """Where the step's loss is the model's own cross-entropy over the whole logits, and what would replace it."""

    span: Span
    advice: str
    fix: FixSpec | None = None
    condition: object = None  # analysis.conditions.Condition


def _script_plain_losses(ctx: Context, assessment: Assessment) -> list[PlainLoss]:
    from ckpt_doctor.analysis.conditions import ALWAYS, together
    from ckpt_doctor.analysis.library import TRL_NON_TRAINING_CONFIGS
    from ckpt_doctor.analysis.training import on_paths
    from ckpt_doctor.analysis.values import Const, Missing

    facts = ctx.facts
    if any(name.split(".", 1)[0] in FUSED_LOSS_MODULES for name in facts.imports):
        return []  # Liger's patches, Apple's cut cross-entropy, unsloth: the loss does not hold the logits
    if any(("logits_to_keep" in c.kwargs or "num_logits_to_keep" in c.kwargs) for c in facts.calls):
        return []  # the script keeps only some positions' logits
    for call in facts.calls:
        name = call.qualname or ""
        if name.startswith("trl.") and name.endswith(("Trainer", "Config")) and name not in TRL_NON_TRAINING_CONFIGS \
                and name not in ("trl.SFTTrainer", "trl.SFTConfig"):
            return []  # DPO, GRPO, KTO, ...: log-probabilities of their own, not the estimate's loss
    sft = any(c.qualname in ("trl.SFTTrainer", "trl.SFTConfig") for c in facts.calls)
    configs = [(c.kwarg, c.span, c.condition, c.qualname, c.kwarg_names, c) for c in facts.calls if c.qualname in PLAIN_LOSS_CONFIGS]
    for namespace, line in ctx.training.cli_configs():
        if namespace.config_class not in PLAIN_LOSS_CONFIGS:
            return []
        configs.append((namespace.get, Span(Position(line, 1), Position(line, 1)), ALWAYS, namespace.config_class, {}, None))
    if not configs:
        if not ctx.training.backward_calls or sft:  # (a loop of the project's own modules may compute another loss)
            return []
        return [PlainLoss(_anchor(assessment), "compute the loss with Liger's fused linear cross-entropy "
                          "(`from liger_kernel.transformers import AutoLigerKernelForCausalLM`, or "
                          "`apply_liger_kernel_to_<model>()` before loading), which never holds the whole logits", None, ALWAYS)]
    found = []
    for get, span, condition, config, names, call in configs:
        path = condition
        liger = get("use_liger_kernel")
        if not isinstance(liger, Missing):
            offs = [p for p, state in on_paths(liger, names.get("use_liger_kernel")) if state is not True]
            path = next((j for p in offs if (j := together(condition, p)) is not None), None)
            if path is None:
                continue  # Liger everywhere this config runs
        trl_sft = sft or config == "trl.SFTConfig"
        if trl_sft:
            loss_type = get("loss_type")
            if isinstance(loss_type, Missing):
                if ctx.versions.at_least("trl", TRL_CHUNKED_NLL_DEFAULT_SINCE) is not False:
                    continue  # chunked_nll, the default from trl 1.7 (or a release that may have it: not judged)
            elif not (isinstance(loss_type, Const) and loss_type.value == "nll"):
                continue  # chunked_nll, dft, or not known
        where = f"`{config.rsplit('.', 1)[-1]}`"
        chunked = trl_sft and ctx.versions.at_least("trl", TRL_CHUNKED_NLL_SINCE) is True
        has_flag = ctx.versions.at_least("transformers", TRANSFORMERS_LIGER_SINCE) is not False
        if chunked:
            advice = (f"`loss_type=\"chunked_nll\"` in {where} (trl >= 1.4: the head and the loss run in chunks of tokens), "
                      f"or `use_liger_kernel=True` (needs `pip install liger-kernel`)")
        elif has_flag:
            advice = (f"`use_liger_kernel=True` in {where}: the Trainer patches the model with Liger's fused linear "
                      f"cross-entropy (needs `pip install liger-kernel` and a model Liger supports)")
        else:
            advice = ("Liger's fused linear cross-entropy, patched in before the model is loaded "
                      "(`from liger_kernel.transformers import apply_liger_kernel_to_<model>`; the project's transformers, "
                      f"before {TRANSFORMERS_LIGER_SINCE}, may lack `use_liger_kernel`)")
        fix = None
        if call is not None and not call.via and not trl_sft and has_flag:
            fix = FixSpec(SetKeywords((("use_liger_kernel", "True"),)), call.span, Applicability.UNSAFE,
                          "Use Liger's fused linear cross-entropy (`use_liger_kernel=True`)")
        found.append(PlainLoss(span, advice, fix, path))
    return found


def _config_plain_losses(ctx: Context, assessment: Assessment) -> list[PlainLoss]:
    run = ctx.analysis.run
    document = run.document
    framework = run.framework.id

    def on(key: str) -> bool:
        return document.get(key) is not None and document.value(key) not in (None, False, "false", "False")

    def at(key: str | None) -> Span:
        entry = document.get(key) if key else None
        if entry is None:
            return _anchor(assessment)
        return Span(Position(entry.line, entry.column), Position(entry.line, entry.column + len(entry.key.rsplit(".", 1)[-1])))

    if framework == "axolotl":
        if any(on(k) for k in ("cut_cross_entropy", "liger_fused_linear_cross_entropy", "liger_cross_entropy",
                               "chunked_cross_entropy")) or document.get("rl") is not None:
            return []  # a loss that chunks or fuses (CKPT501 says when its plugin is missing), or an RL trainer's own
        return [PlainLoss(at("base_model"), "`chunked_cross_entropy: true` (axolotl's chunked loss), or "
                          "`plugins: [axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin]` with `cut_cross_entropy: true`")]
    if framework == "llamafactory":
        stage = document.value("stage") or "sft"
        if on("enable_liger_kernel") or on("use_liger_kernel") or stage not in ("pt", "sft"):
            return []  # Liger's fused loss (pt / sft only), or a stage that keeps the logits
        return [PlainLoss(at("model_name_or_path"), "`enable_liger_kernel: true` (LLaMA-Factory >= 0.9.0 applies Liger's "
                          "fused linear cross-entropy for `pt` / `sft`; needs `pip install liger-kernel`)")]
    if framework == "swift":
        if on("use_liger_kernel") or document.get("rlhf_type") is not None or document.get("loss_type") is not None \
                or run.command not in (None, "sft", "pt"):
            return []
        return [PlainLoss(at("model"), "`use_liger_kernel: true` (needs `pip install liger-kernel`)")]
    if framework == "trl":
        if run.command != "sft" or on("use_liger_kernel"):
            return []
        loss_type = document.value("loss_type")
        if loss_type is None and ctx.versions.at_least("trl", TRL_CHUNKED_NLL_DEFAULT_SINCE) is not False:
            return []
        if loss_type not in (None, "nll"):
            return []
        chunked = ctx.versions.at_least("trl", TRL_CHUNKED_NLL_SINCE) is True
        return [PlainLoss(at("loss_type" if loss_type else "model_name_or_path"),
                          ("`loss_type: chunked_nll` (trl >= 1.4), or " if chunked else "") + "`use_liger_kernel: true` (needs `pip install liger-kernel`)")]
    return []  # torchtune ships chunked losses in its recipes' configs; a program the project lacks is not known


@rule(
    "CKPT406",
    "large-vocabulary-logits",
    Severity.INFO,
    fix=Applicability.UNSAFE,
    summary="the logits of a large vocabulary take a large share of the step's memory, with no fused or chunked loss",
)
def large_vocabulary_logits(ctx: Context) -> Iterator[Report]:
    assessment = _assess(ctx)
    if not isinstance(assessment, Assessment) or not assessment.budget.explicit:
        return  # "does not fit comfortably" needs a budget the user stated (as CKPT403)
    if assessment.base.effective_task != "causal-lm":
        return
    stated = ctx.analysis.settings.seq_len
    if ctx.kind == "script" and (stated is None or not stated.stated):
        return  # the logits grow with the tokens of a step: an assumed sequence length would make the verdict a guess
    cost = logits_cost(assessment)
    if cost.peak_nvidia_smi <= COMFORT * assessment.budget.bytes:
        return  # a step that fits comfortably (CKPT403's measure) has nothing to gain
    if cost.share < LOGITS_SHARE or cost.bytes < LOGITS_MIN_BYTES:
        return
    losses = _script_plain_losses(ctx, assessment) if ctx.kind == "script" else _config_plain_losses(ctx, assessment)
    for loss in losses:
        yield Report(
            loss.span,
            f"the logits ({cost.tokens} tokens x a vocabulary of {cost.vocab}: {_gib(cost.logits)} in fp32, as the loss "
            f"upcasts them) and their gradient add an estimated {_gib(cost.bytes)} to the step's peak of {_gib(cost.peak)} "
            f"({cost.share:.0%}; {_gib(cost.peak_nvidia_smi)} on the card); a loss that never holds the whole logits "
            f"would save most of it: {loss.advice}. Settings: {assessment.settings.describe()}",
            fix=loss.fix,
            condition=loss.condition if loss.condition is not None else _always(),
        )
