"""The cheapest plan that fits (`ckpt-doctor estimate --fit`).  No torch.

From a ``TrainingSetup`` it enumerates what the user can change *without changing the experiment* (same model,
same method, same global batch, same number of GPUs):

* the checkpointing plan: none, every_N, full, offload (every_N and offload only where the stack has them);
* micro-batch x gradient accumulation with the same product (the global batch per optimizer step);
* a fused or chunked cross-entropy (Liger's fused linear cross-entropy, TRL's ``chunked_nll``) for causal LMs;
* a fused AdamW (same maths, no foreach temporaries) or an 8-bit AdamW, from an AdamW only;
* a higher ZeRO / FSDP stage over the GPUs the setup already has (more than one).

Selective checkpointing (attention only, or MLP only) is not searched: the memory model has no program for it.
LoRA, QLoRA, a shorter sequence or more GPUs change the experiment and are never proposed here.

Each candidate gets a peak (nvidia-smi view) and a predicted slowdown; the Pareto front on (peak, slowdown) is
kept and the front's cheapest plan that fits the budget is marked.

Memory.  Every candidate would cost one closed-form walk (30-150 ms on a 7-70B model), too many for the 1 s the
answer may take, so candidates are *composed* from a few estimates (those of the checkpointing plans at the setup's
micro-batch, and, on the model cut to ``SHALLOW_LAYERS`` layers, one per alternative optimizer, one per ZeRO stage and
one with the fused loss, with the cut setup itself for their ratios), per phase and per term:

* weights, master weights, gradients, optimizer state (and the optimizer step's temporaries) scale with the
  optimizer's and the ZeRO stage's ratio to the setup's, measured on the exact estimates;
* activations, logits and the backward's temporaries scale linearly with the micro-batch's tokens;
* gradient accumulation > 1 holds the gradients during the forward (added or removed as the accumulation
  crosses 1);
* a fused loss (``TrainingSetup.loss = "fused"``: Liger's fused linear cross-entropy, which the closed form and the
  trace both run) replaces the logits term by that of one estimate of the setup with it, scaled like the
  activations.

The marked plan and every cheaper front plan whose composed peak is within ``VERIFY_MARGIN`` of the budget are
then estimated exactly (``exact=True``): the mark always rests on the closed form itself.

Slowdown (the assumptions, stated once here and in docs/estimate.md):

* checkpointing: the recomputed forward FLOPs over the step's FLOPs (``plans.extra_compute_pct``), relative to
  the plan the setup already runs;
* offload: the same recompute, plus copying every checkpointed layer input to the host and back over PCIe at
  ``PCIE_BYTES_PER_S`` without overlap (``torch.autograd.graph.save_on_cpu`` copies synchronously), against the
  step's matmul FLOPs at ``ACHIEVED_FLOPS``;
* micro-batch: a micro-batch of T tokens runs at efficiency ``T / (T + MICRO_BATCH_HALF_TOKENS)`` (kernel
  launches, under-filled matmuls, per-micro-batch Python); the total FLOPs stay the same;
* fused AdamW: 0 % (the same update in one kernel; usually a little faster); 8-bit AdamW: ``OPTIM_8BIT_PCT``;
* fused loss: ``FUSED_LOSS_PCT`` (Liger's fused linear cross-entropy recomputes nothing; chunking costs a little);
* ZeRO-1 / ZeRO-2: 0 % over DDP (the same reduce volume); ZeRO-3 / FSDP FULL_SHARD: all-gathering the weights in
  the forward and again in the backward of every micro-batch at ``GATHER_BYTES_PER_S``, half of it hidden behind
  compute (``GATHER_OVERLAP``).

The factors multiply.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from .memory import DTYPE_BYTES, MemoryEstimate, TrainingSetup, card_bytes, estimate
from .plans import extra_compute_pct, plan_names, step_flops

__all__ = ["Change", "FitOptions", "FitPlan", "FitResult", "dominant_term", "plan_fit"]

# ---- the assumptions of the slowdown model (see the module docstring) ----------------------------------------
ACHIEVED_FLOPS = 200e12         # matmul FLOP/s a training step achieves (about 40 % of an H100's dense bf16)
PCIE_BYTES_PER_S = 12e9         # host <-> device copies of pageable memory (PCIe 4.0 x16 reaches ~25 GB/s pinned)
MICRO_BATCH_HALF_TOKENS = 256   # tokens per micro-batch at which the step runs at half its full-batch efficiency
OPTIM_8BIT_PCT = 1.0            # bitsandbytes' 8-bit AdamW step against a fused 32-bit one
FUSED_LOSS_PCT = 2.0            # a fused / chunked cross-entropy against the plain one
GATHER_BYTES_PER_S = 100e9      # ZeRO-3 all-gather bus bandwidth per GPU (NVLink class; PCIe cards are slower)
GATHER_OVERLAP = 0.5            # the share of ZeRO-3's gathers hidden behind compute (prefetching)

OPTIM_8BIT_MIN_SHARE = 0.05     # no 8-bit optimizer when the optimizer state is under 5 % of the peak
VERIFY_MARGIN = 1.15            # cheaper front plans composed within 15 % of the budget are estimated exactly
MAX_MICRO_BATCHES = 8           # micro-batch sizes tried (the divisors of the global batch nearest the setup's)

STATIC = ("weights", "master_weights", "gradients", "optimizer_state")
TERMS = ("weights", "gradients", "optimizer state", "activations", "logits")


@dataclass(frozen=True)
class Change:
    """One thing a plan changes: ``kind`` is checkpointing | micro_batch | optimizer | loss | zero."""

    kind: str
    before: Any
    after: Any

    def describe(self) -> str:
        """Short: ``ckpt every_2``, ``batch 2 x 8``, ``adamw-8bit``, ``fused loss``, ``ZeRO-3``."""
        if self.kind == "checkpointing":
            return f"ckpt {self.after}"
        if self.kind == "micro_batch":
            return f"batch {self.after[0]} x {self.after[1]}"
        if self.kind == "optimizer":
            return str(self.after)
        if self.kind == "loss":
            return "fused loss"
        if self.kind == "zero":
            return f"ZeRO-{self.after}"
        return f"{self.kind} {self.after}"

    def words(self) -> str:
        """Long: what the change is, for a message."""
        if self.kind == "checkpointing":
            return {"full": "checkpointing on every layer", "offload": "checkpointing with CPU offload",
                    "none": "no checkpointing"}.get(self.after, f"checkpointing every {str(self.after)[6:]} layers")
        if self.kind == "micro_batch":
            (b, g), (b2, g2) = self.before, self.after
            return f"micro-batch {b2} with gradient accumulation {g2} (instead of {b} x {g}: the same global batch)"
        if self.kind == "optimizer":
            return {"adamw-fused": "fused AdamW (`torch.optim.AdamW(fused=True)`, optim=\"adamw_torch_fused\")",
                    "adamw-8bit": "8-bit AdamW (bitsandbytes, optim=\"adamw_bnb_8bit\")"}.get(self.after, str(self.after))
        if self.kind == "loss":
            return "Liger's fused linear cross-entropy (`use_liger_kernel=True`), which never holds the whole logits"
        if self.kind == "zero":
            return f"ZeRO-{self.after}" + (" / FSDP FULL_SHARD" if self.after == 3 else "") + " over the same GPUs"
        return f"{self.kind} {self.after}"

    def to_dict(self) -> dict[str, Any]:
        before, after = self.before, self.after
        if self.kind == "micro_batch":
            before = {"batch_size": before[0], "gradient_accumulation": before[1]}
            after = {"batch_size": after[0], "gradient_accumulation": after[1]}
        return {"kind": self.kind, "from": before, "to": after}


@dataclass
class FitPlan:
    changes: tuple[Change, ...]
    setup: TrainingSetup        # the setup with the changes
    peak_bytes: int             # max_memory_allocated
    peak_bytes_nvidia_smi: int  # compared with the budget
    slowdown_pct: float         # predicted, against the setup as written
    fits: bool | None
    exact: bool                 # the peak is the closed form's own estimate of this plan (not composed)
    chosen: bool = False

    @property
    def name(self) -> str:
        return ", ".join(c.describe() for c in self.changes) or "as written"

    def words(self) -> str:
        return "; ".join(c.words() for c in self.changes) or "the setup as written"

    def change(self, kind: str) -> Change | None:
        return next((c for c in self.changes if c.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "changes": [c.to_dict() for c in self.changes],
            "peak_bytes": self.peak_bytes,
            "peak_bytes_nvidia_smi": self.peak_bytes_nvidia_smi,
            "slowdown_pct": self.slowdown_pct,
            "fits": self.fits,
            "exact": self.exact,
            "chosen": self.chosen,
        }


@dataclass
class FitResult:
    current: FitPlan            # the setup as written (no changes), exact
    front: list[FitPlan]        # the Pareto front on (peak, slowdown), cheapest first
    chosen: FitPlan | None      # the front's cheapest plan that fits (None: none fits, or no budget)
    dominant: str               # the term that dominates the setup's peak (TERMS)
    shares: dict[str, float]    # each term's share of the setup's peak (max_memory_allocated)
    budget_bytes: int | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget_bytes,
            "dominant_term": self.dominant,
            "term_shares": {k: round(v, 4) for k, v in self.shares.items()},
            "current": self.current.to_dict(),
            "front": [p.to_dict() for p in self.front],
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class FitOptions:
    """What the stack offers and what the script does beyond ``TrainingSetup``."""

    partial_plans: bool = True    # every_N and offload exist (transformers >= 5.16 through the Trainer)
    fused_loss: bool = False      # the script already uses a fused / chunked loss the setup does not model (upper bound)
    fused_loss_available: bool = True
    zero_available: bool = True   # the number of GPUs is stated (ZeRO over GPUs nobody states is not proposed)
    offload_available: bool = True
    eight_bit_available: bool = True  # bitsandbytes' 8-bit AdamW may be proposed
    exact_front: bool = False     # estimate every front plan exactly (slower; the tests use it)


# ---- terms --------------------------------------------------------------------------------------------------
def term_shares(est: MemoryEstimate) -> dict[str, float]:
    """Each of TERMS' share of the peak (the optimizer step's temporaries count as optimizer state, the forward's
    and backward's as activations; cuBLAS workspaces are left out)."""
    b = est.breakdown
    temps = b.get("temporaries", 0)
    opt_phase = est.peak_phase == "optimizer"
    parts = {
        "weights": b.get("weights", 0) + b.get("master_weights", 0),
        "gradients": b.get("gradients", 0),
        "optimizer state": b.get("optimizer_state", 0) + (temps if opt_phase else 0),
        "activations": b.get("activations", 0) + (0 if opt_phase else temps),
        "logits": b.get("logits_and_loss", 0),
    }
    total = max(est.peak_bytes, 1)
    return {k: v / total for k, v in parts.items()}


def dominant_term(est: MemoryEstimate) -> str:
    shares = term_shares(est)
    return max(shares, key=lambda k: shares[k])


# ---- the search ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Choice:
    plan: str
    micro: tuple[int, int]
    optimizer: str
    zero: int
    fused: bool


def plan_fit(setup: TrainingSetup, budget_bytes: int | None, options: FitOptions = FitOptions(),
             known: dict[str, MemoryEstimate] | None = None) -> FitResult:
    """The Pareto front of the changes that keep the experiment, and the cheapest plan on it that fits.
    ``known`` maps checkpointing plans of ``setup`` (at its micro-batch, optimizer and stage) to estimates
    already made (reused)."""
    setup = setup.validate()
    cache: dict[TrainingSetup, MemoryEstimate] = {}
    for plan, est in (known or {}).items():
        cache[replace(setup, checkpointing=plan)] = est

    def exact(s: TrainingSetup) -> MemoryEstimate:
        if s not in cache:
            cache[s] = estimate(s)
        return cache[s]

    def scaled(s: TrainingSetup) -> MemoryEstimate:
        """The closed form's own peak of ``s``, its allocator cache scaled from the setup's replay: the optimizer's and
        the ZeRO stage's ratios the composed candidates take (each candidate that may fit is then replayed itself)."""
        return cache[s] if s in cache else estimate(s, like=base)

    base = exact(setup)
    shares = term_shares(base)
    notes: list[str] = []
    here = _Choice(setup.checkpointing, (setup.batch_size, setup.gradient_accumulation), setup.optimizer, setup.zero,
                   options.fused_loss or setup.loss == "fused")

    # what each dimension may take (the setup's own value first)
    plans = [setup.checkpointing] + [p for p in _plans(setup, options) if p != setup.checkpointing]
    micros = [here.micro] + _micro_batches(setup)
    optimizers = [setup.optimizer] + _optimizers(setup, shares, notes, options.eight_bit_available)
    # ZeRO-1 costs what ZeRO-2 costs in this model and holds more: never on the front
    zeros = [setup.zero] + ([z for z in (2, 3) if z > setup.zero] if setup.gpus > 1 and options.zero_available else [])
    if setup.gpus > 1 and not options.zero_available:
        notes.append("ZeRO / FSDP stages not searched: the number of GPUs is not stated")
    fused = [here.fused]
    if not here.fused and options.fused_loss_available and setup.effective_task == "causal-lm":
        fused.append(True)
    notes.append("selective checkpointing (attention or MLP only) is not searched: the memory model has no program for it")

    # the other plans' allocator caches are scaled from the setup's replay too (every plan that may fit is replayed)
    per_plan = {p: scaled(replace(setup, checkpointing=p)) for p in plans}
    # the other changes' ratios and terms, from estimates of a shallower model (a walk of a 70B model: ~60 ms)
    shallow = _shallow(setup)
    ref = scaled(shallow)
    per_opt = {o: scaled(replace(shallow, optimizer=o)) if o != setup.optimizer else ref for o in optimizers}
    per_zero = {z: scaled(replace(shallow, zero=z)) if z != setup.zero else ref for z in zeros}
    per_loss = {here.fused: ref}
    if len(fused) > 1:
        per_loss[True] = scaled(replace(shallow, loss="fused"))

    candidates: list[FitPlan] = []
    for plan, micro, opt, zero, fl in itertools.product(plans, micros, optimizers, zeros, fused):
        choice = _Choice(plan, micro, opt, zero, fl)
        changes = _changes(here, choice)
        new = replace(setup, checkpointing=plan, batch_size=micro[0], gradient_accumulation=micro[1], optimizer=opt,
                      zero=zero, loss="fused" if fl != here.fused else setup.loss)
        if not changes:
            peak, smi = base.peak_bytes, base.peak_bytes_nvidia_smi
            is_exact = True
        else:
            peak, smi = _compose(setup, base, ref, per_plan[plan], per_opt[opt], per_zero[zero], per_loss[fl], micro)
            is_exact = False
        fits = None if budget_bytes is None else smi <= budget_bytes
        candidates.append(FitPlan(changes, new, peak, smi, _slowdown(setup, here, choice), fits, is_exact))

    current = candidates[0]
    front = _pareto(candidates)
    chosen = _choose(front, budget_bytes, exact, options.exact_front)
    front = _pareto(front)  # exact peaks may reorder it
    if chosen is not None and chosen not in front:  # an exact peak pushed it off: it still fits and is the cheapest
        front = sorted(front + [chosen], key=_rank)
    if chosen is not None:
        chosen.chosen = True
    # what a user looking for room wants: the plans that fit or hold less than the setup (not faster ones that need more)
    front = [p for p in front if p.fits or p.peak_bytes_nvidia_smi <= current.peak_bytes_nvidia_smi]
    dom = max(shares, key=lambda k: shares[k])
    return FitResult(current, front, chosen, dom, shares, budget_bytes, notes)


def _plans(setup: TrainingSetup, options: FitOptions) -> list[str]:
    names = plan_names(setup)
    if not options.partial_plans:
        names = [n for n in names if n in ("none", "full")]
    if not options.offload_available:
        names = [n for n in names if n != "offload"]
    return names


def _micro_batches(setup: TrainingSetup) -> list[tuple[int, int]]:
    """Other (micro-batch, accumulation) pairs with the same product, nearest the setup's micro-batch first."""
    total = setup.batch_size * setup.gradient_accumulation
    divisors = [d for d in range(1, total + 1) if total % d == 0 and d != setup.batch_size]
    divisors.sort(key=lambda d: abs(d - setup.batch_size) / min(d, setup.batch_size))
    return [(d, total // d) for d in sorted(divisors[:MAX_MICRO_BATCHES])]


def _optimizers(setup: TrainingSetup, shares: dict[str, float], notes: list[str], eight_bit: bool = True) -> list[str]:
    """Fused AdamW from a foreach / loop AdamW; 8-bit AdamW from any 32-bit AdamW, unless the optimizer state is a
    rounding error of the peak (a LoRA or frozen-trunk run)."""
    if setup.optimizer not in ("adamw", "adamw-loop", "adamw-fused"):
        return []
    out = ["adamw-fused"] if setup.optimizer != "adamw-fused" else []
    if not eight_bit:
        pass
    elif shares["optimizer state"] >= OPTIM_8BIT_MIN_SHARE:
        out.append("adamw-8bit")
    else:
        notes.append(f"no 8-bit optimizer: the optimizer state is {100 * shares['optimizer state']:.1f} % of the peak")
    return out


def _changes(here: _Choice, c: _Choice) -> tuple[Change, ...]:
    out = []
    if c.plan != here.plan:
        out.append(Change("checkpointing", here.plan, c.plan))
    if c.micro != here.micro:
        out.append(Change("micro_batch", here.micro, c.micro))
    if c.optimizer != here.optimizer:
        out.append(Change("optimizer", here.optimizer, c.optimizer))
    if c.fused != here.fused:
        out.append(Change("loss", "plain", "fused"))
    if c.zero != here.zero:
        out.append(Change("zero", here.zero, c.zero))
    return tuple(out)


# ---- memory: composed from exact estimates -------------------------------------------------------------------
SHALLOW_LAYERS = 16  # the depth of the estimates that give a composition its ratios (4 put Mixtral's ZeRO plans 15 % over)


def _shallow(setup: TrainingSetup) -> TrainingSetup:
    """``setup`` on a model of ``SHALLOW_LAYERS`` layers (the same model when it is no deeper, has a vision tower or two
    stacks): the ratios another optimizer or ZeRO stage changes the terms by hardly depend on the depth, nor do the loss'
    own term and a stage's per-layer temporaries (at 4 layers the stages' fixed-size gradient buckets weighed too much)."""
    a = setup.arch
    if a.num_layers <= SHALLOW_LAYERS or getattr(a, "vision", None) is not None or getattr(a, "is_encoder_decoder", False):
        return setup
    return replace(setup, arch=replace(a, num_layers=SHALLOW_LAYERS))


def _scale(value: int, new: int, old: int) -> float:
    """``value`` under the ratio new/old of the same term elsewhere; a term absent in ``old``: ``new`` as it is."""
    if old == 0:
        return value + new
    return value * new / old


def _compose(setup: TrainingSetup, base: MemoryEstimate, ref: MemoryEstimate, plan: MemoryEstimate, opt: MemoryEstimate,
             zero: MemoryEstimate, loss: MemoryEstimate, micro: tuple[int, int]) -> tuple[int, int]:
    """``plan``: the checkpointing plan's estimate; ``zero``: the setup at another ZeRO stage, and ``base`` the setup
    itself; ``opt``, ``loss``: the setup with another optimizer or the fused loss, and ``ref`` the setup itself, at a
    reduced depth (``_shallow``).  Their ratios, the loss' own term and the stage's per-layer temporaries carry over."""
    ratio = micro[0] / setup.batch_size
    grads_now = setup.gradient_accumulation > 1
    grads_then = micro[1] > 1
    peak = 0
    for phase, bd in plan.phase_breakdown.items():
        r0 = ref.phase_breakdown[phase]
        o, z = opt.phase_breakdown[phase], zero.phase_breakdown[phase]
        total = 0.0
        static = list(STATIC) + (["temporaries"] if phase == "optimizer" else [])
        for k in static:
            v = bd.get(k, 0)
            v = _scale(v, o.get(k, 0), r0.get(k, 0)) if opt is not ref else v
            v = _scale(v, z.get(k, 0), r0.get(k, 0)) if zero is not ref else v
            total += v
        if phase == "forward" and grads_then != grads_now:  # accumulation > 1 holds the gradients in the forward
            g = base.phase_breakdown["optimizer"].get("gradients", 0)
            g = _scale(g, opt.phase_breakdown["optimizer"].get("gradients", 0), ref.phase_breakdown["optimizer"].get("gradients", 0)) \
                if opt is not ref else g
            g = _scale(g, zero.phase_breakdown["optimizer"].get("gradients", 0), ref.phase_breakdown["optimizer"].get("gradients", 0)) \
                if zero is not ref else g
            total += g if grads_then else -min(g, bd.get("gradients", 0))
        if loss is ref:
            logits = bd.get("logits_and_loss", 0) * ratio
        else:  # the fused loss' own term, with the temporaries it adds (the head's weight cast per chunk)
            lb = loss.phase_breakdown[phase]
            logits = (lb.get("logits_and_loss", 0) + max(0, lb.get("temporaries", 0) - r0.get("temporaries", 0))) * ratio
        dynamic = bd.get("activations", 0) + (0 if phase == "optimizer" else bd.get("temporaries", 0))
        total += dynamic * ratio + logits + bd.get("cublas_workspaces", 0)
        if zero is not ref and phase != "optimizer":  # the stage's gathered units and gradient buckets: per layer
            total += max(0, z.get("temporaries", 0) - r0.get("temporaries", 0))
        peak = max(peak, int(total))
    return peak, card_bytes(peak, plan, outside_from=plan if opt is ref else opt)


# ---- slowdown ---------------------------------------------------------------------------------------------------
def _efficiency(tokens: int) -> float:
    return tokens / (tokens + MICRO_BATCH_HALF_TOKENS)


def _plan_cost(setup: TrainingSetup, plan: str) -> float:
    """Extra time of a checkpointing plan as a fraction of the step without one."""
    cost = extra_compute_pct(setup, plan) / 100
    if plan == "offload":
        total, _ = step_flops(replace(setup, checkpointing="none"))
        a = setup.arch
        act = 4 if setup.mixed_precision != "no" else DTYPE_BYTES[setup.dtype]
        copied = 2 * a.num_layers * setup.batch_size * setup.seq_len * a.hidden_size * act  # to the host and back
        cost += (copied / PCIE_BYTES_PER_S) / (total / ACHIEVED_FLOPS)
    return cost


def _zero_cost(setup: TrainingSetup, zero: int) -> float:
    if zero < 3 or setup.gpus < 2:
        return 0.0
    total, _ = step_flops(setup)
    params = estimate_params(setup)
    w = 4 if setup.mixed_precision != "no" and not (setup.load_in_4bit or setup.load_in_8bit) else DTYPE_BYTES[setup.dtype]
    gathered = 2 * params * w * (setup.gpus - 1) / setup.gpus  # forward and backward, per micro-batch
    return (1 - GATHER_OVERLAP) * (gathered / GATHER_BYTES_PER_S) / (total / ACHIEVED_FLOPS)


def estimate_params(setup: TrainingSetup) -> int:
    from .params import count_params

    return count_params(setup.arch).total


def _slowdown(setup: TrainingSetup, here: _Choice, c: _Choice) -> float:
    factor = (1 + _plan_cost(setup, c.plan)) / (1 + _plan_cost(setup, here.plan))
    tokens = setup.seq_len
    factor *= _efficiency(here.micro[0] * tokens) / _efficiency(c.micro[0] * tokens)
    if c.optimizer != here.optimizer:
        factor *= 1 + (OPTIM_8BIT_PCT / 100 if c.optimizer == "adamw-8bit" else 0.0)
    if c.fused != here.fused:
        factor *= 1 + FUSED_LOSS_PCT / 100
    if c.zero != here.zero:
        micro_setup = replace(setup, batch_size=c.micro[0])
        factor *= (1 + _zero_cost(micro_setup, c.zero)) / (1 + _zero_cost(micro_setup, here.zero))
    return round(100 * (factor - 1), 1)


# ---- the front and the mark ---------------------------------------------------------------------------------------
def _rank(p: FitPlan) -> tuple:
    return (p.slowdown_pct, len(p.changes), p.peak_bytes_nvidia_smi)


def _pareto(candidates: list[FitPlan]) -> list[FitPlan]:
    """The plans no other plan beats on both peak and slowdown, cheapest first (ties: fewer changes)."""
    front: list[FitPlan] = []
    best = None
    for p in sorted(candidates, key=_rank):
        if best is None or p.peak_bytes_nvidia_smi < best:
            front.append(p)
            best = p.peak_bytes_nvidia_smi
    return front


def _make_exact(p: FitPlan, exact) -> None:
    if p.exact:
        return
    est = exact(p.setup)
    p.peak_bytes, p.peak_bytes_nvidia_smi = est.peak_bytes, est.peak_bytes_nvidia_smi
    p.exact = True


def _choose(front: list[FitPlan], budget: int | None, exact, every: bool) -> FitPlan | None:
    """The cheapest front plan that fits by its exact estimate (its own replay of the allocator); cheaper plans near
    the budget are estimated exactly on the way (a composed peak may be a little off)."""
    if every:
        for p in front:
            _make_exact(p, exact)
    if budget is None:
        return None
    for p in front:
        if p.peak_bytes_nvidia_smi > VERIFY_MARGIN * budget and not p.exact:
            continue  # composed well over the budget: left as it is
        _make_exact(p, exact)
        p.fits = p.peak_bytes_nvidia_smi <= budget
        if p.fits:
            return p
    return None
