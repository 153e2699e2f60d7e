"""Text table, terminal bar chart and JSON dict of an estimate.  No torch.

The JSON schema is documented in ``docs/estimate.md`` (``SCHEMA_VERSION`` below).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .memory import BREAKDOWN_KEYS, MemoryEstimate, PlanResult, TrainingSetup

__all__ = ["SCHEMA_VERSION", "bar_chart", "fmt_gib", "render_fit", "render_host", "render_text", "to_json_dict"]

SCHEMA_VERSION = 1
GiB = 1 << 30

_LABELS = {
    "weights": "weights",
    "master_weights": "master weights (fp32)",
    "gradients": "gradients",
    "optimizer_state": "optimizer state",
    "activations": "activations",
    "logits_and_loss": "logits and loss",
    "temporaries": "temporaries",
    "cublas_workspaces": "cuBLAS workspaces",
    "allocator": "allocator cache",
    "cuda_context": "CUDA context",
}
_CHARS = {
    "weights": "W", "master_weights": "M", "gradients": "G", "optimizer_state": "O", "activations": "A",
    "logits_and_loss": "L", "temporaries": "T", "cublas_workspaces": "b", "allocator": "a", "cuda_context": "c",
}


def fmt_gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def _setup_dict(setup: TrainingSetup) -> dict[str, Any]:
    out = {}
    for f in fields(setup):
        if f.name == "arch":
            continue
        v = getattr(setup, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def to_json_dict(est: MemoryEstimate, plan_results: list[PlanResult], budget_bytes: int | None,
                 budget_source: str = "", model_source: str = "", trace: dict | None = None) -> dict[str, Any]:
    """Everything as plain JSON (bytes as integers).  See docs/estimate.md for the schema."""
    s = est.setup
    rec = next((p.name for p in plan_results if p.recommended), None)
    d: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": s.arch.name, "model_type": s.arch.model_type, "source": model_source},
        "setup": _setup_dict(s),
        "params": {"total": est.params_total, "trainable": est.params_trainable},
        "peak_bytes": est.peak_bytes,
        "peak_bytes_reserved": est.peak_bytes_reserved,
        "peak_bytes_nvidia_smi": est.peak_bytes_nvidia_smi,
        "peak_phase": est.peak_phase,
        "phases": dict(est.phases),
        "breakdown": {k: est.breakdown.get(k, 0) for k in BREAKDOWN_KEYS},
        "allocator_bytes": est.allocator_bytes,
        "cuda_context_bytes": est.cuda_context_bytes,
        "budget": {"bytes": budget_bytes, "source": budget_source},
        "fits": None if budget_bytes is None else est.peak_bytes_nvidia_smi <= budget_bytes,
        "plans": [p.to_dict() for p in plan_results],
        "recommended": rec,
        "notes": list(est.notes),
        "method": "closed-form",
    }
    if trace is not None:
        d["trace"] = trace
    return d


def bar_chart(est: MemoryEstimate, budget_bytes: int | None, width: int = 50) -> list[str]:
    """One stacked bar of the nvidia-smi total, one character per term, against the budget."""
    parts = [(k, est.breakdown.get(k, 0)) for k in BREAKDOWN_KEYS]
    parts += [("allocator", est.allocator_bytes), ("cuda_context", est.cuda_context_bytes)]
    total = est.peak_bytes_nvidia_smi
    scale_to = max(total, budget_bytes or 0) or 1
    bar = ""
    acc = 0.0
    for k, v in parts:
        if v <= 0:
            continue
        acc += v
        n = int(round(acc / scale_to * width)) - len(bar)
        bar += _CHARS[k] * max(n, 0)
    if budget_bytes:
        pos = int(round(budget_bytes / scale_to * width))
        bar = bar.ljust(width)
        bar = bar[:pos] + "|" + bar[pos:] if pos < len(bar) else bar.ljust(pos) + "|"
    legend = "  ".join(f"{_CHARS[k]}={_LABELS[k]}" for k, v in parts if v > 0)
    lines = [f"  [{bar.rstrip()}]"]
    if budget_bytes:
        lines.append(f"   '|' = budget {fmt_gib(budget_bytes)} GiB; bar = {fmt_gib(total)} GiB as nvidia-smi sees it")
    lines.append(f"   {legend}")
    return lines


def render_text(est: MemoryEstimate, plan_results: list[PlanResult], budget_bytes: int | None,
                budget_source: str = "", model_source: str = "", trace: dict | None = None) -> str:
    s = est.setup
    a = s.arch
    out: list[str] = []
    prec = f"{s.dtype} weights" if s.mixed_precision == "no" else f"fp32 weights + {s.mixed_precision} autocast"
    if s.master_weights == "fp32":
        prec = f"{s.dtype} weights + fp32 master copy (DeepSpeed {s.dtype})"
    extras = []
    if s.lora_r:
        extras.append(f"LoRA r={s.lora_r}" + (f" on {','.join(s.lora_targets)}" if s.lora_targets else ""))
    upcast = "" if s.kbit_upcast else f" (no fp32 upcast: the rest stays {s.dtype})"
    if s.load_in_4bit:
        extras.append("4-bit NF4 base" + upcast)
    if s.load_in_8bit:
        extras.append("8-bit base" + upcast)
    if s.gpus > 1:
        extras.append(f"{s.gpus} GPUs" + (f", ZeRO-{s.zero}" if s.zero else ", DDP"))
    if s.gradient_accumulation > 1:
        extras.append(f"gradient accumulation {s.gradient_accumulation}")
    if s.loss == "fused":
        extras.append("Liger's fused linear cross-entropy")
    vision = getattr(a, "vision", None)
    if vision is not None and vision.is_qwen:
        side = vision.image_grid(s.image_size)[0] * vision.patch_size
        extras.append(f"{s.images} image(s) of {side} x {side} px per sample "
                      f"({s.images * vision.image_grid(s.image_size)[2]} of the {s.seq_len} tokens)"
                      + (", vision tower frozen" if s.freeze_vision_tower else ""))
    out.append(f"{a.name} ({est.params_total / 1e9:.3g}B parameters, {est.params_trainable / 1e9:.3g}B trainable)"
               + (f"  [{model_source}]" if model_source else ""))
    out.append(f"  batch {s.batch_size} x seq {s.seq_len}, {prec}, {s.attn} attention, {s.optimizer}, "
               f"checkpointing {s.checkpointing}" + ("; " + "; ".join(extras) if extras else ""))
    out.append("")
    out.append(f"  {'term':<24}{'GiB':>9}")
    for k in BREAKDOWN_KEYS:
        out.append(f"  {_LABELS[k]:<24}{fmt_gib(est.breakdown.get(k, 0)):>9}")
    out.append(f"  {'-' * 33}")
    out.append(f"  {'max_memory_allocated':<24}{fmt_gib(est.peak_bytes):>9}   peak at: {est.peak_phase}")
    out.append(f"  {'+ ' + _LABELS['allocator']:<24}{fmt_gib(est.allocator_bytes):>9}   "
               f"what it cannot give back; with room to spare it keeps {fmt_gib(est.peak_bytes_reserved - est.peak_bytes)}"
               + (" (expandable segments)" if s.expandable_segments else ""))
    out.append(f"  {'+ ' + _LABELS['cuda_context']:<24}{fmt_gib(est.cuda_context_bytes):>9}")
    out.append(f"  {'nvidia-smi':<24}{fmt_gib(est.peak_bytes_nvidia_smi):>9}")
    out.append("  phases: " + ", ".join(f"{k} {fmt_gib(v)}" for k, v in est.phases.items()) + " GiB")
    if trace is not None:
        tensors, ws = trace.get("peak_bytes") or 0, est.breakdown.get("cublas_workspaces", 0)
        out.append(f"  trace (exact, live tensors): tensors {fmt_gib(tensors)} + cuBLAS workspaces {fmt_gib(ws)} = "
                   f"max_memory_allocated {fmt_gib(tensors + ws)} GiB, peak at {trace.get('peak_phase')}")
    out.append("")
    rec = next((p for p in plan_results if p.recommended), None)
    if budget_bytes is not None:
        src = f" ({budget_source})" if budget_source else ""
        need = est.peak_bytes_nvidia_smi
        if need <= budget_bytes:
            out.append(f"  verdict: fits: {fmt_gib(need)} of {fmt_gib(budget_bytes)} GiB{src}, "
                       f"{100 * need / budget_bytes:.0f} %")
        else:
            out.append(f"  verdict: does NOT fit: needs {fmt_gib(need)} GiB, budget {fmt_gib(budget_bytes)} GiB{src}")
            if rec is not None:
                out.append(f"  lightest plan that fits: {rec.name} (+{rec.extra_compute_pct:.0f} % compute)")
            else:
                out.append("  no checkpointing plan fits; what would: LoRA / QLoRA, an 8-bit optimizer, a smaller "
                           "batch with gradient accumulation, or ZeRO-3/FSDP over more GPUs")
        out.append("")
    out.append(f"  {'plan':<10}{'allocated':>11}{'nvidia-smi':>12}{'extra compute':>15}{'fits':>6}")
    for p in plan_results:
        mark = "  <- recommended" if p.recommended else ""
        fits = "-" if budget_bytes is None else ("yes" if p.fits else "no")
        out.append(f"  {p.name:<10}{fmt_gib(p.peak_bytes):>11}{fmt_gib(p.peak_bytes_nvidia_smi):>12}"
                   f"{p.extra_compute_pct:>13.0f} %{fits:>6}{mark}")
    out.append("  (GiB; extra compute = recomputed forward FLOPs / step FLOPs)")
    out.append("")
    out.extend(bar_chart(est, budget_bytes))
    for n in est.notes:
        out.append(f"  note: {n}")
    return "\n".join(out)


def render_fit(fit) -> list[str]:
    """The lines of `estimate --fit`: the dominating term, the Pareto front, the mark.  `fit`: fit.FitResult."""
    shares = fit.shares
    out = [f"  the peak is dominated by {fit.dominant} ({100 * shares[fit.dominant]:.0f} % of it; "
           + ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items() if k != fit.dominant and v >= 0.005) + ")"]
    out.append("  plans that keep the experiment (same model, method, global batch and GPUs), best on both memory and")
    out.append("  predicted slowdown:")
    width = max([len(p.name) for p in fit.front] + [len("as written"), 20]) + 2
    out.append(f"  {'plan':<{width}}{'nvidia-smi':>11}{'slowdown':>10}{'fits':>6}")
    for p in fit.front:
        fits = "-" if p.fits is None else ("yes" if p.fits else "no")
        mark = "  <- cheapest that fits" if p.chosen else ""
        approx = "" if p.exact else "~"
        out.append(f"  {p.name:<{width}}{approx + fmt_gib(p.peak_bytes_nvidia_smi):>11}{p.slowdown_pct:>8.1f} %{fits:>6}{mark}")
    out.append("  (GiB; ~ composed from the exact estimates, within a few %; slowdown: predicted, see docs/estimate.md)")
    if fit.budget_bytes is not None:
        if fit.chosen is not None:
            out.append(f"  cheapest plan that fits {fmt_gib(fit.budget_bytes)} GiB: {fit.chosen.words()} "
                       f"({fmt_gib(fit.chosen.peak_bytes_nvidia_smi)} GiB, {fit.chosen.slowdown_pct:+.0f} % time)")
        else:
            out.append(f"  no plan that keeps the experiment fits {fmt_gib(fit.budget_bytes)} GiB; what would change it: "
                       "more GPUs, a shorter sequence, LoRA / QLoRA")
    for n in fit.notes:
        out.append(f"  note: {n}")
    return out


def render_host(host: dict) -> str:
    """The host memory of the offloading plans (ckpt_doctor.estimate.host), per node: pinned and pageable."""
    out = ["", "  host memory per node (offloading plans):"]
    labels = {"offload": "checkpointing plan `offload`", "deepspeed": "DeepSpeed offload"}
    for name, h in host.items():
        out.append(f"  {labels.get(name, name)}: {fmt_gib(h.pinned_bytes)} GiB pinned + {fmt_gib(h.pageable_bytes)} GiB "
                   f"pageable ({h.processes_per_node} GPU process{'es' if h.processes_per_node > 1 else ''})")
        for t in h.terms:
            out.append(f"    {t.name}: {fmt_gib(t.bytes_per_process * h.processes_per_node)} GiB, {'pinned' if t.pinned else 'pageable'}")
        for n in h.notes:
            out.append(f"    note: {n}")
    return "\n".join(out)
