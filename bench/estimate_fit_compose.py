"""How far `estimate --fit`'s composed peaks are from the exact estimate of the same plan.

    python bench/estimate_fit_compose.py

The planner composes each candidate (a checkpointing plan x micro-batch x optimizer x ZeRO stage x fused loss) from
separate estimates and estimates exactly, with its own replay of the caching allocator, only the candidates that may fit.
A composed peak under its exact one makes the search verify (and drop) one candidate after another near the budget;
one over it may skip a plan that fits. Prints, per multi-GPU setup, the error of every composed front plan's
max_memory_allocated (with a fused loss where the plan has one), then the totals. Closed form only (no torch).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETUPS = [  # (model, estimate flags): multi-GPU setups where the ZeRO stages are searched
    ("meta-llama/Llama-3.1-70B", {"batch_size": 2, "gpus": 8, "gradient_accumulation": 8}),
    ("mistralai/Mixtral-8x7B-v0.1", {"batch_size": 2, "gpus": 8, "gradient_accumulation": 4}),
    ("meta-llama/Llama-2-7b-hf", {"batch_size": 4, "gpus": 4, "gradient_accumulation": 2}),
    ("meta-llama/Meta-Llama-3-8B", {"batch_size": 2, "gpus": 8, "gradient_accumulation": 8, "seq_len": 4096}),
]


def main() -> None:
    from ckpt_doctor.estimate.command import setup_from_settings
    from ckpt_doctor.estimate.fit import plan_fit
    from ckpt_doctor.estimate.memory import estimate

    errors: list[float] = []
    print(f"{'model':<30}{'plans':>6}{'max |err|':>11}{'mean |err|':>12}{'under > 5 %':>13}")
    for model, flags in SETUPS:
        setup, _ = setup_from_settings({"model": model, **flags}, seq_len_given="seq_len" in flags, from_script=False)
        mine = []
        for plan in plan_fit(setup, None).front:
            if plan.exact:
                continue
            exact = estimate(plan.setup).peak_bytes
            mine.append((plan.peak_bytes - exact) / exact)
        errors += mine
        print(f"{model:<30}{len(mine):>6}{100 * max(map(abs, mine)):>10.1f}%{100 * statistics.mean(map(abs, mine)):>11.1f}%"
              f"{sum(e < -0.05 for e in mine):>13}")
    print(f"{'all':<30}{len(errors):>6}{100 * max(map(abs, errors)):>10.1f}%{100 * statistics.mean(map(abs, errors)):>11.1f}%"
          f"{sum(e < -0.05 for e in errors):>13}")


if __name__ == "__main__":
    main()
