"""How fast `ckpt-doctor estimate --fit` answers (goal: under 1 s; closed form only, no torch import).

    python bench/estimate_fit_speed.py

Prints, per model and setup: the in-process time of the planner alone (`fit.plan_fit`, the checkpointing plans'
estimates included) and of the whole command with `--fit` (estimate + plans + planner + rendering), best of 3,
with the number of plans on the front and the one marked.  Never run by the tests (timings are noisy there).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_S = 1.0
CASES = [  # model, flags
    ("openai-community/gpt2", ["--batch-size", "16", "--seq-len", "1024"]),
    ("meta-llama/Llama-3.2-1B", ["--batch-size", "8", "--gradient-accumulation", "2"]),
    ("meta-llama/Llama-2-7b-hf", ["--batch-size", "4", "--gradient-accumulation", "4"]),
    ("Qwen/Qwen2.5-7B", ["--batch-size", "4", "--lora-r", "16"]),
    ("mistralai/Mixtral-8x7B-v0.1", ["--batch-size", "2", "--gpus", "8", "--gradient-accumulation", "4"]),
    ("meta-llama/Llama-3.1-70B", ["--batch-size", "2", "--gpus", "8", "--gradient-accumulation", "8"]),
]


def best_of(fn, n: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    from click.testing import CliRunner

    from ckpt_doctor.estimate.command import estimate as command, setup_from_settings
    from ckpt_doctor.estimate.fit import plan_fit

    heavy = [m for m in ("torch", "transformers", "peft") if m in sys.modules]
    print(f"heavy modules imported: {heavy or 'none'}")
    print(f"{'model':<30}{'planner':>10}{'command':>10}{'front':>7}  cheapest that fits (80 GiB)")
    worst = 0.0
    runner = CliRunner()
    for name, flags in CASES:
        settings = {"model": name}
        it = iter(flags)
        for flag, value in zip(it, it):
            settings[flag[2:].replace("-", "_")] = int(value)
        setup, _ = setup_from_settings(settings, seq_len_given="seq_len" in settings, from_script=False)
        planner, fit = best_of(lambda: plan_fit(setup, 80 << 30))
        args = ["--model", name, *flags, "--gpu-memory", "80GiB", "--fit"]
        cmd, result = best_of(lambda: runner.invoke(command, args))
        assert result.exit_code == 0, result.output
        worst = max(worst, cmd)
        chosen = fit.chosen.name if fit.chosen else "none fits"
        print(f"{name:<30}{planner * 1000:>8.0f}ms{cmd * 1000:>8.0f}ms{len(fit.front):>7}  {chosen}")
    print(f"slowest `estimate --fit` (in process): {worst:.3f} s (goal < {GOAL_S} s): {'OK' if worst < GOAL_S else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
