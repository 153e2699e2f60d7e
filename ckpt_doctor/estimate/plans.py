"""Checkpointing plans: none, every layer, every N-th layer, offloaded; each with its peak memory (closed
form), whether it fits a budget, and its extra compute.  The recommended plan is the one that fits with the
least recompute.  No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .memory import MemoryEstimate, TrainingSetup, _every, estimate

__all__ = ["PlanList", "PlanResult", "extra_compute_pct", "plan_names", "plans", "recommended", "step_flops"]

@dataclass
class PlanResult:
    name: str
    peak_bytes: int
    peak_bytes_nvidia_smi: int
    fits: bool
    extra_compute_pct: float
    estimate: MemoryEstimate | None = None
    recommended: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "peak_bytes": self.peak_bytes,
            "peak_bytes_nvidia_smi": self.peak_bytes_nvidia_smi,
            "fits": self.fits,
            "extra_compute_pct": self.extra_compute_pct,
            "recommended": self.recommended,
            "breakdown": dict(self.estimate.breakdown) if self.estimate else {},
        }


def step_flops(setup: TrainingSetup) -> tuple[float, float]:
    """(training-step FLOPs, FLOPs of one layer's forward) per micro-batch, matmuls only."""
    a = setup.arch
    N = setup.batch_size * setup.seq_len
    d = a.head_dim or a.hidden_size // a.num_attention_heads
    try:
        st = a.stacks()[0]
        layer_params = sum(s.numel for s in st.linears)
        if a.is_moe and a.num_experts:
            dense = sum(s.numel for s in st.linears if s.count == 1)
            experts = layer_params - dense
            layer_params = dense + experts * a.num_experts_per_tok // a.num_experts
    except Exception:  # noqa: BLE001
        h, inter = a.hidden_size, a.intermediate_size
        layer_params = 4 * h * h + (3 if a.gated_mlp else 2) * h * inter
    attn = 4 * setup.seq_len * a.num_attention_heads * d  # QK^T and AV, per token
    layer_fwd = 2 * layer_params * N + attn * N
    head_fwd = 2 * a.hidden_size * a.vocab_size * N
    fwd = a.num_layers * layer_fwd + head_fwd
    # backward: input grads (1x forward) + weight grads (1x forward, only for trainable weights)
    full = not setup.lora_r and not (setup.load_in_4bit or setup.load_in_8bit)
    bwd = 2 * fwd if full else fwd
    return fwd + bwd, layer_fwd


def extra_compute_pct(setup: TrainingSetup, plan: str) -> float:
    n = _every(plan)
    if not n:
        return 0.0
    total, layer = step_flops(setup)
    ck = -(-setup.arch.num_layers // n)
    return round(100.0 * ck * layer / total, 1)


def plan_names(setup: TrainingSetup) -> list[str]:
    L = setup.arch.num_layers
    names = ["none", "full"]
    for n in (2, 3, 4):
        if n < L:
            names.append(f"every_{n}")
    names.append("offload")
    return names


class PlanList(list):
    """``list[PlanResult]`` with ``recommended``: the name of the recommended plan, or None."""

    recommended: str | None = None

    @property
    def plans(self) -> list[PlanResult]:
        return list(self)

    def get(self, name: str) -> PlanResult | None:
        return next((p for p in self if p.name == name), None)


def plans(setup: TrainingSetup, budget_bytes: int | None,
          known: dict[str, MemoryEstimate] | None = None) -> PlanList:
    """Every checkpointing plan of ``setup``: none, full, every_2/3/4, offload; each with its peak
    (``max_memory_allocated`` and nvidia-smi), whether it fits ``budget_bytes`` (compared with the
    nvidia-smi figure: the whole card must hold it) and its extra compute.  ``known`` maps plan names to
    estimates already computed (reused, not recomputed).  The recommended plan (fits, least
    recompute) has ``recommended=True``."""
    out = PlanList()
    names = plan_names(setup)
    if setup.checkpointing not in names:
        names.insert(2, setup.checkpointing)
    for name in names:
        est = (known or {}).get(name) or estimate(replace(setup, checkpointing=name))
        fits = budget_bytes is None or est.peak_bytes_nvidia_smi <= budget_bytes
        pct = extra_compute_pct(setup, name)
        out.append(PlanResult(name, est.peak_bytes, est.peak_bytes_nvidia_smi, fits, pct, est))
    rec = recommended(out)
    if rec is not None:
        rec.recommended = True
        out.recommended = rec.name
    return out


def recommended(results: list[PlanResult]) -> PlanResult | None:
    """The plan that fits with the least recompute (ties: the one with less memory); offload only
    when nothing else fits (it also costs host transfers)."""
    fitting = [p for p in results if p.fits]
    if not fitting:
        return None
    return min(fitting, key=lambda p: (p.name == "offload", p.extra_compute_pct, p.peak_bytes))
