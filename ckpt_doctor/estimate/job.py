"""The job beyond its training step: the phases a script sets up next to it (analysis.whole_job reads them).

- **evaluation that keeps every batch's logits** (the Trainer with `compute_metrics` and no
  `preprocess_logits_for_metrics` / `eval_accumulation_steps`, CKPT209): transformers 5.25.0
  `Trainer.evaluation_loop` adds each batch's logits to `EvalLoopContainer`, whose `nested_concat` is a `torch.cat`
  of the logits so far with the new batch's, so the old buffer and the new one coexist while it runs. During
  evaluation the weights and the optimizer state stay; the gradients are gone (`model.zero_grad()` after the step
  sets them to None). How many batches the evaluation set has is not in the script: the phase says how many fit.
- **vLLM colocated** in the training processes (TRL GRPO / RLOO, CKPT405): it holds `vllm_gpu_memory_utilization`
  of the GPU's memory (vLLM `CacheConfig.gpu_memory_utilization`: the fraction of the GPU memory the engine may use)
  for the whole run, next to the training step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .memory import MemoryEstimate
from .render import fmt_gib

if TYPE_CHECKING:
    from ckpt_doctor.analysis.settings import Setting

RESIDENT_TERMS = ("weights", "master_weights", "optimizer_state", "cublas_workspaces")


@dataclass(frozen=True)
class JobPhase:
    name: str  # "evaluation", "vLLM colocated"
    bytes: int  # what the card holds in it (nvidia-smi's view), on top of which the step's peak is judged
    what: str  # how it is made up, one sentence
    fits: bool | None  # within the budget; None when it depends on what the script does not say (the evaluation's size)

    def to_dict(self) -> dict:
        return {"name": self.name, "bytes": self.bytes, "what": self.what, "fits": self.fits}


def logits_bytes_per_batch(est: MemoryEstimate, eval_batch: int) -> int:
    """One evaluation batch's logits as the model returns them: batch x sequence x vocabulary, in the compute dtype
    (bf16 / fp16 weights, or the autocast dtype over fp32 ones; fp32 otherwise)."""
    s = est.setup
    low = s.dtype in ("bf16", "fp16") or s.mixed_precision in ("bf16", "fp16")
    return eval_batch * s.seq_len * s.arch.vocab_size * (2 if low else 4)


def evaluation_phase(est: MemoryEstimate, eval_batch: int, said: str, budget: int) -> JobPhase:
    """The evaluation that keeps every batch's logits: what one batch adds, and how many batches the card holds."""
    resident = sum(est.breakdown.get(k, 0) for k in RESIDENT_TERMS) + est.cuda_context_bytes
    per_batch = logits_bytes_per_batch(est, eval_batch)
    # at batch k: k batches kept, and the concatenation of the next makes a (k + 1)-batch buffer beside them
    room = budget - resident - per_batch
    batches = max(room // (2 * per_batch), 0) if per_batch else 0
    s = est.setup
    what = (f"the Trainer keeps every evaluation batch's logits on the GPU ({said}): each batch adds {fmt_gib(per_batch)} GiB "
            f"({eval_batch} x {s.seq_len} tokens x {s.arch.vocab_size} vocabulary), next to {fmt_gib(resident)} GiB of "
            f"weights and optimizer state; the concatenation holds two copies, so the card fills after about {batches} "
            f"evaluation batches ({batches * eval_batch} samples)")
    return JobPhase("evaluation", resident + per_batch, what, None if batches else False)


def vllm_phase(est: MemoryEstimate, utilization: float, said: str, budget: int) -> JobPhase:
    """vLLM in the training processes: its share of the card for the whole run, beside the step's peak."""
    held = int(utilization * budget)
    total = est.peak_bytes_nvidia_smi + held
    what = (f"vLLM runs in the training processes and holds {utilization:g} of the GPU ({said}): {fmt_gib(held)} GiB for "
            f"the whole run; with the step's {fmt_gib(est.peak_bytes_nvidia_smi)} GiB the card needs {fmt_gib(total)} GiB "
            f"(no reference model or rollout buffers counted)")
    return JobPhase("vLLM colocated", total, what, total <= budget)


def job_phases(est: MemoryEstimate, budget: int, eval_batch: "Setting | None", vllm: "Setting | None") -> list[JobPhase]:
    """The phases the script's settings set up (analysis.settings: `eval_logits_batch`, `vllm_colocated`; each says in
    its note where the script gives it)."""
    phases = []
    if eval_batch is not None:
        phases.append(evaluation_phase(est, eval_batch.value, eval_batch.note, budget))
    if vllm is not None:
        phases.append(vllm_phase(est, vllm.value, vllm.note, budget))
    return phases


def render_job(phases: list[JobPhase]) -> list[str]:
    out = ["", "  the job beyond the step:"]
    for phase in phases:
        verdict = "" if phase.fits is None else ("  (fits)" if phase.fits else "  (does NOT fit)")
        out.append(f"  {phase.name}: {phase.what}{verdict}")
    return out
