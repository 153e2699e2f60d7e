"""Issue 10, the planner: on 20 realistic configs, the plan `estimate --fit` chooses fits according to the exact
fake-tensor trace, and no plan the planner itself rates cheaper (lower predicted slowdown) fits by the closed form.

    python bench/estimate_fit_check.py               # all 20 rows (~5-10 minutes on 2 CPU cores, < 2 GB RAM)
    python bench/estimate_fit_check.py --only gemma  # the rows whose label contains one of these (repeatable)
    python bench/estimate_fit_check.py --no-trace    # the planner and the closed form only (seconds)

Each config is a real model at real widths, its setup as written does NOT fit the budget (16/24/40/80 GiB) and
some plan does.  The full models take 1-5 minutes each to trace, so every row is traced at reduced depth (2-4
layers, printed per row) and the budget is scaled with it: the reduced model's budget is the full budget times
(closed-form peak of the full model's chosen plan, reduced) / (the same plan, full), i.e. the plan the full model
chose keeps the same relative headroom (``x0.321``); where that would let the setup as written fit, or nothing
fit, the budget sits at the same place between the smallest plan and the setup as written (``at 0.11 of
smallest..written``).  The planner then runs again on the reduced model with that
budget, and the plan it chooses there is the one traced and checked:

* ``fits``: the chosen plan's traced peak (max_memory_allocated + cuBLAS workspaces, through the same
  allocator-rounding and CUDA-context terms as the closed form's nvidia-smi figure) is <= the reduced budget;
* ``cheaper fits``: a front plan with a lower predicted slowdown whose exact closed-form peak is <= the budget
  (full model and reduced model both; it must be "no").

Plans the trace cannot run (host offload, ZeRO) are "not traceable" and counted apart; for those rows the planner
runs once more restricted to what the trace can run (no offload), and that plan is traced too (the ``traceable
alternative`` lines).  The trace runs a fused loss (Liger's fused linear cross-entropy) and bitsandbytes' 8-bit
AdamW as their sources allocate (trace.py ``_fused_linear_cross_entropy``, ``_bnb_adamw_8bit``).  Where the
reduced model's choice differs from the full model's, the full model's plan is traced at reduced depth as well,
against the same reduced budget (the ``full model's plan`` lines).

Needs torch, transformers and peft (the [verify] extra); no GPU, no network.  Exit 0 when the table is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ckpt_doctor.estimate.arch import ModelArch
from ckpt_doctor.estimate.fit import FitOptions, FitPlan, plan_fit
from ckpt_doctor.estimate.memory import BLAS_WORKSPACE_BYTES, BLAS_WORKSPACES, TrainingSetup, card_bytes, estimate
from ckpt_doctor.estimate.registry import resolve
from estimate_traces import _reduced  # noqa: E402  (bench/estimate_traces.py: a bundled config cut to N layers)

GiB = 1 << 30
QV = ("q_proj", "v_proj")
TRACEABLE = FitOptions(offload_available=False)

# (label, bundled model, layers traced, setup keywords, budget GiB for the full model)
CONFIGS: list[tuple[str, str, int, dict, int]] = [
    ("llama3.2-1b full", "meta-llama/Llama-3.2-1B", 2, dict(batch_size=8, seq_len=2048, gradient_accumulation=2), 40),
    ("llama3.2-3b full", "meta-llama/Llama-3.2-3B", 2, dict(batch_size=4, seq_len=2048, gradient_accumulation=4), 24),
    ("llama3.1-8b lora", "meta-llama/Llama-3.1-8B", 2, dict(batch_size=4, seq_len=4096, lora_r=16, lora_targets=QV), 40),
    ("llama3.1-8b full", "meta-llama/Llama-3.1-8B", 2, dict(batch_size=2, seq_len=2048, gradient_accumulation=8), 80),
    ("qwen2.5-0.5b full fp32+ac", "Qwen/Qwen2.5-0.5B", 2,
     dict(batch_size=16, seq_len=1024, dtype="fp32", mixed_precision="bf16"), 24),
    ("qwen2.5-1.5b full", "Qwen/Qwen2.5-1.5B", 2, dict(batch_size=8, seq_len=4096, gradient_accumulation=2), 24),
    ("qwen2.5-7b lora", "Qwen/Qwen2.5-7B", 2, dict(batch_size=4, seq_len=2048, lora_r=16), 40),
    ("qwen2.5-14b lora", "Qwen/Qwen2.5-14B", 2, dict(batch_size=2, seq_len=4096, lora_r=16, lora_targets=QV), 80),
    ("qwen3-0.6b full fp32+ac", "Qwen/Qwen3-0.6B", 2, dict(batch_size=8, seq_len=2048, dtype="fp32", mixed_precision="bf16"), 16),
    ("qwen3-1.7b full", "Qwen/Qwen3-1.7B", 2, dict(batch_size=8, seq_len=2048), 24),
    ("qwen3-4b full fp32+ac", "Qwen/Qwen3-4B", 2,
     dict(batch_size=4, seq_len=1024, dtype="fp32", mixed_precision="bf16", gradient_accumulation=4), 80),
    ("qwen3-8b lora", "Qwen/Qwen3-8B", 2, dict(batch_size=8, seq_len=1024, lora_r=16, lora_targets=QV), 24),
    ("qwen3-14b lora 8k", "Qwen/Qwen3-14B", 2, dict(batch_size=1, seq_len=8192, lora_r=16, lora_targets=QV), 80),
    ("gemma2-2b full eager", "google/gemma-2-2b", 2, dict(batch_size=8, seq_len=4096, attn="eager"), 40),
    ("gemma2-9b lora eager", "google/gemma-2-9b", 2,
     dict(batch_size=4, seq_len=2048, attn="eager", lora_r=16, lora_targets=QV), 80),
    ("gemma3-1b full fp32+ac", "google/gemma-3-1b-pt", 4,
     dict(batch_size=16, seq_len=2048, dtype="fp32", mixed_precision="bf16"), 40),
    ("phi3-mini full", "microsoft/Phi-3-mini-4k-instruct", 2, dict(batch_size=4, seq_len=4096), 80),
    ("phi4 lora", "microsoft/phi-4", 2,
     dict(batch_size=4, seq_len=2048, lora_r=16, lora_targets=("qkv_proj", "o_proj")), 40),
    ("mistral-7b lora", "mistralai/Mistral-7B-v0.3", 2, dict(batch_size=8, seq_len=2048, lora_r=16, lora_targets=QV), 24),
    ("qwen3-30b-a3b lora (MoE)", "Qwen/Qwen3-30B-A3B", 4,
     dict(batch_size=4, seq_len=4096, lora_r=16, lora_targets=QV), 80),
]


def _smi(plan: FitPlan) -> int:
    """The exact closed-form nvidia-smi peak of a plan."""
    return estimate(plan.setup).peak_bytes_nvidia_smi


def traceable(plan: FitPlan) -> bool:
    s = plan.setup
    return not (s.checkpointing == "offload" or s.zero or s.gpus != 1 or s.load_in_8bit
                or (s.load_in_4bit and s.mixed_precision != "no"))


def cheaper_that_fit(fit, budget: int) -> list[str]:
    """Front plans the planner rates cheaper than its choice that fit by the exact closed form (must be none)."""
    return [p.name for p in fit.front if p.slowdown_pct < fit.chosen.slowdown_pct and _smi(p) <= budget]


def traced_smi(plan: FitPlan) -> int:
    from ckpt_doctor.estimate.trace import trace_step

    peak = trace_step(plan.setup).peak_bytes + BLAS_WORKSPACES * BLAS_WORKSPACE_BYTES
    return card_bytes(peak, estimate(plan.setup))  # with the allocator cache the closed form's replay gives the plan


def scaled_budget(ffit, small: TrainingSetup, budget: int) -> tuple[int, str]:
    """The reduced model's budget: the full budget x (the full model's chosen plan, reduced / full), so that plan
    keeps its relative headroom.  Where that lets the setup as written fit, or nothing fit (2 rows of 20), the
    budget sits instead at the same place between the smallest plan's peak and the setup as written as the full
    budget does in the full model."""
    chosen = ffit.chosen
    like = replace(chosen.setup, arch=small.arch)
    ratio = estimate(like).peak_bytes_nvidia_smi / chosen.peak_bytes_nvidia_smi
    whole = plan_fit(small, None)
    lo = min(p.peak_bytes_nvidia_smi for p in whole.front)
    if budget * ratio < whole.current.peak_bytes_nvidia_smi and plan_fit(small, int(budget * ratio)).chosen:
        return int(budget * ratio), f"x{ratio:.3f}"
    lo_full = min(p.peak_bytes_nvidia_smi for p in ffit.front)
    f = (budget - lo_full) / (ffit.current.peak_bytes_nvidia_smi - lo_full)
    return int(lo + f * (whole.current.peak_bytes_nvidia_smi - lo)), f"at {f:.2f} of smallest..written"


def gib(b: float) -> str:
    return f"{b / GiB:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[], metavar="TEXT", help="rows whose label contains TEXT")
    ap.add_argument("--no-trace", action="store_true", help="the planner and the closed form only")
    args = ap.parse_args()
    if not args.no_trace:
        warnings.filterwarnings("ignore")
        import transformers

        transformers.logging.set_verbosity_error()

    rows = [c for c in CONFIGS if not args.only or any(t.lower() in c[0].lower() for t in args.only)]
    counts = {"fits": 0, "over": 0, "not traceable": 0, "alt fits": 0, "alt over": 0, "cheaper fits": 0,
              "same plan": 0, "error": 0,
              "full plan fits": 0, "full plan over": 0}
    lines = []
    t_all = time.perf_counter()
    for i, (label, model, layers, kw, budget_gib) in enumerate(rows, 1):
        budget = budget_gib * GiB
        full = TrainingSetup(resolve(model), **kw)
        ffit = plan_fit(full, budget)
        assert ffit.current.peak_bytes_nvidia_smi > budget and ffit.chosen is not None, (label, "budget")
        full_cheaper = cheaper_that_fit(ffit, budget)

        arch = ModelArch.from_hf_config(_reduced(model, layers), f"{model.split('/')[-1]}-{layers}L")
        small = replace(full, arch=arch)
        # the budget scaled with the depth: the full model's chosen plan keeps its relative headroom
        rbudget, ratio = scaled_budget(ffit, small, budget)
        rfit = plan_fit(small, rbudget)
        written_fits = rfit.current.peak_bytes_nvidia_smi <= rbudget
        chosen = rfit.chosen
        red_cheaper = cheaper_that_fit(rfit, rbudget) if chosen else ["(nothing fits)"]
        cheaper = full_cheaper + red_cheaper
        counts["cheaper fits"] += bool(cheaper)
        same = chosen is not None and chosen.name == ffit.chosen.name
        counts["same plan"] += same

        def check(plan: FitPlan) -> tuple[str, str]:
            if args.no_trace:
                return "-", "-"
            if not traceable(plan):
                return "-", "not traceable"
            t0 = time.perf_counter()
            try:
                smi = traced_smi(plan)
            except Exception as exc:  # noqa: BLE001 - a row that cannot be traced is reported, not fatal
                counts["error"] += 1
                return "-", f"trace failed: {str(exc)[:120]}"
            return gib(smi), ("yes" if smi <= rbudget else "NO") + f" ({time.perf_counter() - t0:.0f}s)"

        traced, verdict = check(chosen) if chosen else ("-", "nothing fits")
        if verdict.startswith("yes"):
            counts["fits"] += 1
        elif verdict.startswith("NO"):
            counts["over"] += 1
        elif verdict == "not traceable":
            counts["not traceable"] += 1
        alt = ""
        if verdict == "not traceable":
            afit = plan_fit(small, rbudget, TRACEABLE)
            if afit.chosen is None:
                alt = "    traceable alternative: none fits"
            else:
                at, av = check(afit.chosen)
                counts["alt fits" if av.startswith("yes") else "alt over"] += av.startswith(("yes", "NO"))
                alt = (f"    traceable alternative: {afit.chosen.name} ({afit.chosen.slowdown_pct:+.1f} %), closed form "
                       f"{gib(afit.chosen.peak_bytes_nvidia_smi)}, traced {at} GiB, fits {av}, cheaper fits: "
                       f"{', '.join(cheaper_that_fit(afit, rbudget)) or 'no'}")
        # the full model's own choice, at reduced depth, against the same budget (when the reduced model chose another)
        if not same:
            fp = ffit.chosen
            like = FitPlan(fp.changes, replace(fp.setup, arch=arch), 0, 0, fp.slowdown_pct, None, True)
            lt, lv = check(like)
            if lv.startswith(("yes", "NO")):
                counts["full plan fits" if lv.startswith("yes") else "full plan over"] += 1
            alt = (f"    full model's plan at {layers} layers: closed form {gib(_smi(like))}, traced {lt}, fits {lv}"
                   + ("\n" + alt if alt else ""))
        line = (f"{i:2d} {label:<26} {budget_gib:>3} GiB | full: written {gib(ffit.current.peak_bytes_nvidia_smi):>7} -> "
                f"{ffit.chosen.name} ({ffit.chosen.slowdown_pct:+.1f} %) {gib(ffit.chosen.peak_bytes_nvidia_smi)}\n"
                f"   {layers} layers, budget {gib(rbudget)} ({ratio}), written {gib(rfit.current.peak_bytes_nvidia_smi)}"
                f"{' FITS' if written_fits else ''} | chosen: {chosen.name if chosen else '-'}"
                f"{'' if same else ' (differs from full)'} ({chosen.slowdown_pct if chosen else 0:+.1f} %) | closed form "
                f"{gib(chosen.peak_bytes_nvidia_smi) if chosen else '-'} | traced {traced} | fits {verdict} | "
                f"cheaper fits: {', '.join(cheaper) or 'no'}")
        print(line + ("\n" + alt if alt else ""), flush=True)
        lines.append(line)
    n = len(rows)
    print(f"\n{n} configs in {time.perf_counter() - t_all:.0f}s: chosen plan fits by the trace {counts['fits']}, over the budget "
          f"by the trace {counts['over']}, not traceable {counts['not traceable']} (their traceable alternative fits "
          f"{counts['alt fits']}, over {counts['alt over']}), trace failed {counts['error']}; a cheaper plan fits by the "
          f"closed form in {counts['cheaper fits']}; reduced model chose the full model's plan in {counts['same plan']}; where it "
          f"chose another, the full model's plan at reduced depth fits by the trace {counts['full plan fits']}, over "
          f"{counts['full plan over']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
