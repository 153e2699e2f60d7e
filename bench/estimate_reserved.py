"""How close the caching allocator's replay comes to the reserved memory measured on a GPU (no GPU needed).

    python bench/estimate_reserved.py [bench/results/gpu_verify_NVIDIA_H200.json ...]

Each row of a ``bench/gpu_verify.sh`` result is the synthetic step of ``ckpt-doctor verify --model``, which builds its
model from the config in fp32 on the GPU and then casts it to the step's dtype (``ckpt_doctor.verify.synthetic``,
``estimate.trace.build_model``), one run of the ``_workspaces`` file also emptied the cache after that; then one warm-up
step and one measured step.  This script replays exactly that run through ``estimate.allocator.CachingAllocator``
(``replayed``), and prints it next to the estimate users get (``estimate``: the weights loaded in their dtype, as
``from_pretrained(dtype=...)`` loads them) and next to the single 8 % allocator overhead the estimate assumed before the
replay (``flat 8 %``).  Errors are of ``torch.cuda.max_memory_reserved``.

Then, for a few setups, the least card the replay runs in when the allocator may not reserve more than it (on a
failed ``cudaMalloc`` the allocator frees every cached segment no tensor is in and tries again: ``release_cached_blocks``),
found by bisection, next to the peak of the segments in use that the estimate takes for it (``peak_bytes_nvidia_smi``
less the CUDA context).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ckpt_doctor.estimate import memory  # noqa: E402
from ckpt_doctor.estimate.allocator import SMALL_SIZE, CachingAllocator, segment_size  # noqa: E402
from ckpt_doctor.estimate.registry import resolve  # noqa: E402

RESULTS = [ROOT / "bench" / "results" / "gpu_verify_NVIDIA_H200.json",
           ROOT / "bench" / "results" / "gpu_verify_NVIDIA_H200_workspaces.json"]


class SyntheticBuild(CachingAllocator):
    """The synthetic step's history: every weight made in fp32 (``from_config`` under ``torch.device``), then
    ``model.to(dtype)`` (``Module._apply``: each new tensor made before the old one is freed), then, in the
    ``_workspaces`` run, ``torch.cuda.empty_cache()``."""

    def __init__(self, weights: int, factor: int, empty_cache: bool, expandable_segments: bool = False) -> None:
        super().__init__(expandable_segments=expandable_segments)
        self.left = weights
        self.factor = factor
        self.empty_cache_after = empty_cache
        self.made: list[tuple[object, int]] = []

    def malloc(self, nbytes: int):
        if self.left <= 0:
            return super().malloc(nbytes)
        self.left -= 1
        block = super().malloc(nbytes * self.factor)
        self.made.append((block, nbytes))
        if self.left == 0:
            if self.factor != 1:
                for old, n in self.made:
                    super().malloc(n)
                    self.free(old)
            if self.empty_cache_after:
                self.empty_cache()
        return block


class Capped(CachingAllocator):
    """The allocator of a card with ``capacity`` bytes: a new segment that would not fit frees the cached segments
    first; ``oom`` when even then it does not fit."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.oom = False

    def _segment(self, pool, size: int):
        if self.reserved + segment_size(size) > self.capacity:
            for p in (self.small, self.large):
                for b in [b for b in p.blocks.values() if b.prev is None and b.next is None]:
                    p.remove(b)
                    self.reserved -= b.size
            self.oom = self.oom or self.reserved + segment_size(size) > self.capacity
        return super()._segment(pool, size)


def least_capacity(setup: memory.TrainingSetup, step: int = 16 * 2**20) -> tuple[int, int, int]:
    """(the least capacity the replay runs in, to ``step`` bytes; the peak of segments in use; the peak reserved)."""
    walk = memory._walk(setup)
    free = CachingAllocator()
    memory._replay(walk, free)
    lo, hi = free.peak_allocated, free.peak_reserved
    while hi - lo > step:
        mid = (lo + hi) // 2
        capped = Capped(mid)
        memory._replay(walk, capped)
        lo, hi = (mid, hi) if capped.oom else (lo, mid)
    return hi, free.peak_in_use, free.peak_reserved


CAPACITY_SETUPS = [("meta-llama/Llama-3.2-1B", 4, 2048, "full"), ("meta-llama/Llama-3.2-1B", 4, 1024, "full"),
                   ("Qwen/Qwen2.5-0.5B", 1, 1024, "full"), ("Qwen/Qwen2.5-0.5B", 4, 1024, "full"),
                   ("openai-community/gpt2", 4, 1024, "full"), ("meta-llama/Llama-3.2-1B", 4, 2048, "none"),
                   ("meta-llama/Llama-2-7b-hf", 2, 2048, "full")]


def replayed(setup: memory.TrainingSetup, empty_cache: bool) -> int:
    """``max_memory_reserved`` of the synthetic run of ``setup``, as the estimate derives it from the replay."""
    walk = memory._walk(setup)
    weights = sum(1 for x in walk.log[:walk.cuts[0]] if x > SMALL_SIZE)
    allocator = SyntheticBuild(weights, 1 if setup.dtype == "fp32" else 2, empty_cache, setup.expandable_segments)
    memory._replay(walk, allocator)
    peak = memory.estimate(setup).peak_bytes
    return memory._segments(max(peak, allocator.peak_reserved + peak - allocator.peak_allocated))


def rows(paths: list[Path]) -> list[dict]:
    """One dict per measured row: the setting, the measured reserved bytes and the three predictions' errors (%)."""
    out = []
    for path in paths:
        doc = json.loads(path.read_text(encoding="utf-8"))
        empty_cache = "empty_cache()" in doc.get("how", "")
        for row in doc["rows"]:
            measured = row.get("measured_peak_reserved_bytes")
            if not measured:
                continue
            setup = memory.TrainingSetup(resolve(row["model"]), batch_size=row["batch_size"],
                                         seq_len=row.get("seq_len") or doc["seq_len_requested"], dtype=doc["dtype"],
                                         checkpointing=row["checkpointing"], optimizer=row.get("optimizer", "adamw"),
                                         lora_r=row.get("lora_r"), expandable_segments=row.get("allocator") == "expandable")
            est = memory.estimate(setup)
            flat = memory._segments(est.peak_bytes * 1.08)  # the flat allocator overhead the estimate had before
            pct = lambda b: 100.0 * (b - measured) / measured  # noqa: E731
            out.append({"file": path.name, "model": row["model"], "batch_size": row["batch_size"],
                        "checkpointing": row["checkpointing"], "empty_cache": empty_cache,
                        "measured_ratio": measured / row["measured_peak_allocated_bytes"],
                        "replayed_pct": pct(replayed(setup, empty_cache)), "estimate_pct": pct(est.peak_bytes_reserved),
                        "flat_pct": pct(flat)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="*", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    table = rows(args.results)
    print(f"{'model':<26} {'batch':>5} {'ckpt':<5} {'empty':<5} {'measured r/a':>12} {'replayed':>9} {'estimate':>9} {'flat 8 %':>9}")
    for r in table:
        print(f"{r['model']:<26} {r['batch_size']:>5} {r['checkpointing']:<5} {'yes' if r['empty_cache'] else 'no':<5} "
              f"{r['measured_ratio']:>12.3f} {r['replayed_pct']:>+8.1f}% {r['estimate_pct']:>+8.1f}% {r['flat_pct']:>+8.1f}%")
    for key in ("replayed_pct", "estimate_pct", "flat_pct"):
        errors = [abs(r[key]) for r in table]
        print(f"{key[:-4]:>9}: {len(errors)} rows, max |error| {max(errors):.1f} %, mean {sum(errors) / len(errors):.1f} %")
    print(f"\n{'setup (bf16, AdamW)':<40} {'least card':>10} {'in use':>8} {'reserved':>9}  GiB")
    for model, batch, seq, plan in CAPACITY_SETUPS:
        least, in_use, reserved = least_capacity(memory.TrainingSetup(resolve(model), batch_size=batch, seq_len=seq,
                                                                      checkpointing=plan))
        print(f"{f'{model} b{batch} s{seq} {plan}':<40} {least / 2**30:>10.2f} {in_use / 2**30:>8.2f} {reserved / 2**30:>9.2f}"
              f"  ({100 * (in_use - least) / least:+.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
