"""Re-estimate every measured row of a ``bench/gpu_verify.sh`` result with the current closed form (no GPU).

    python bench/gpu_verify_compare.py bench/results/gpu_verify_NVIDIA_H200.json

Each row is the synthetic step ``ckpt-doctor verify --model M --batch-size B --seq-len S --dtype D
--checkpointing C`` (AdamW, no LoRA), so its estimate is rebuilt from those settings.  Prints the error of
``max_memory_allocated``, ``max_memory_reserved`` and NVML's used memory, per row and summed up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ckpt_doctor.estimate.memory import TrainingSetup, estimate  # noqa: E402
from ckpt_doctor.estimate.registry import resolve  # noqa: E402


def _pct(estimated: int, measured: int | None) -> float | None:
    return None if not measured else 100.0 * (estimated - measured) / measured


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", type=Path)
    args = ap.parse_args(argv)
    doc = json.loads(args.result.read_text(encoding="utf-8"))
    errors: dict[str, list[float]] = {"allocated": [], "reserved": [], "nvidia-smi": []}
    print(f"{doc['gpu']}, {doc.get('versions', {})}")
    print(f"  {'model':<26} {'batch':>5} {'ckpt':<5} {'allocated':>10} {'reserved':>9} {'nvidia-smi':>11}")
    for row in doc["rows"]:
        measured = row.get("measured_peak_allocated_bytes")
        if not measured:
            print(f"  {row['model']:<26} {row['batch_size']:>5} {row['checkpointing']:<5} not measured: {row.get('error')}")
            continue
        setup = TrainingSetup(resolve(row["model"]), batch_size=row["batch_size"],
                              seq_len=row.get("seq_len") or doc["seq_len_requested"], dtype=doc["dtype"],
                              checkpointing=row["checkpointing"], optimizer=row.get("optimizer", "adamw"),
                              lora_r=row.get("lora_r"), expandable_segments=row.get("allocator") == "expandable")
        est = estimate(setup)
        pcts = {
            "allocated": _pct(est.peak_bytes, measured),
            "reserved": _pct(est.peak_bytes_reserved, row.get("measured_peak_reserved_bytes")),
            # NVML on an H200 with room to spare: every reserved byte (the estimate's figure is the least card it needs)
            "nvidia-smi": _pct(est.peak_bytes_reserved + est.cuda_context_bytes, row.get("measured_nvml_used_bytes")),
        }
        for k, v in pcts.items():
            if v is not None:
                errors[k].append(abs(v))
        cells = " ".join(f"{'' if v is None else f'{v:+.2f} %':>{w}}" for v, w in zip(pcts.values(), (10, 9, 11)))
        print(f"  {row['model']:<26} {row['batch_size']:>5} {row['checkpointing']:<5} {cells}")
    for k, v in errors.items():
        if v:
            print(f"{k}: {len(v)} rows, max |error| {max(v):.2f} %, mean {sum(v) / len(v):.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
