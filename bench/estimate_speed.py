"""How fast the closed-form estimate answers (goal: under 0.3 s for `ckpt-doctor estimate`, no torch import).

    python bench/estimate_speed.py

Prints, per model: the in-process time of one estimate and of the whole command (estimate + all plans +
rendering), and the wall time of `python -m ckpt_doctor estimate --model ...` in a fresh process (Python
start-up included).  Imports nothing heavy: it checks that torch/transformers stay out of sys.modules.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ["openai-community/gpt2", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-3.1-70B",
          "mistralai/Mixtral-8x7B-v0.1", "google-bert/bert-large-uncased"]
GOAL_S = 0.3


def best_of(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    t0 = time.perf_counter()
    from click.testing import CliRunner

    from ckpt_doctor.estimate.command import estimate as command
    from ckpt_doctor.estimate.memory import TrainingSetup, estimate
    from ckpt_doctor.estimate.registry import resolve

    print(f"import ckpt_doctor.estimate.command: {time.perf_counter() - t0:.3f} s")
    heavy = [m for m in ("torch", "transformers", "peft") if m in sys.modules]
    print(f"heavy modules imported: {heavy or 'none'}")
    print(f"{'model':<34}{'estimate':>10}{'command':>10}{'fresh process':>15}")
    worst = 0.0
    for name in MODELS:
        arch = resolve(name)
        one = best_of(lambda: estimate(TrainingSetup(arch, batch_size=4, seq_len=2048, lora_r=16)))
        runner = CliRunner()
        cmd = best_of(lambda: runner.invoke(command, ["--model", name, "--batch-size", "4", "--lora-r", "16"]))
        walls = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ckpt_doctor", "estimate", "--model", name, "--batch-size", "4",
                            "--lora-r", "16"], cwd=ROOT, check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
        wall = statistics.median(walls)
        worst = max(worst, wall)
        print(f"{name:<34}{one * 1000:>8.1f}ms{cmd * 1000:>8.1f}ms{wall:>13.3f} s")
    verdict = "OK" if worst < GOAL_S else "TOO SLOW"
    print(f"slowest fresh `ckpt-doctor estimate`: {worst:.3f} s (goal < {GOAL_S} s): {verdict}")


if __name__ == "__main__":
    main()
