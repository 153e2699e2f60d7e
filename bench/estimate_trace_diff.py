"""Where the closed form and the trace differ: per phase, the trace's live tensors at the phase peak grouped by
the op that made them (shape, dtype), next to the closed form's breakdown.  A diagnostic for one setup at a time.

    python bench/estimate_trace_diff.py mistralai/Mixtral-8x7B-v0.1 --layers 2 --seq-len 2048 --checkpointing full
    python bench/estimate_trace_diff.py google/gemma-2-2b --layers 2 --attn eager --top 25

``--layers N`` keeps the real widths and cuts the depth (the trace of a full-depth 7B model takes minutes on two
cores; the per-layer terms are what differ).  Needs torch + transformers (+ peft for --lora-r).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ckpt_doctor.estimate.arch import ModelArch  # noqa: E402
from ckpt_doctor.estimate.memory import TrainingSetup, estimate  # noqa: E402
from ckpt_doctor.estimate.registry import resolve  # noqa: E402

MiB = 1 << 20


def reduced_arch(model: str, layers: int | None, **over) -> ModelArch:
    arch = resolve(model)
    if arch is None:
        raise SystemExit(f"{model}: unknown")
    cfg = dict(arch.hf_config)
    text = cfg.get("text_config")
    if layers:
        if text:
            cfg["text_config"] = {**text, "num_hidden_layers": layers}
        if cfg.get("model_type") == "t5":  # encoder-decoder: ``layers`` in each stack
            cfg["num_layers"] = cfg["num_decoder_layers"] = layers
        else:
            cfg["n_layer" if "n_layer" in cfg else "num_hidden_layers"] = layers
        if "layer_types" in cfg:
            cfg["layer_types"] = cfg["layer_types"][:layers]
    cfg.update(over)
    return ModelArch.from_hf_config(cfg, model)


def run_trace(setup: TrainingSetup, top: int) -> None:
    from ckpt_doctor.estimate import trace as T

    def describe(origin: str, tensor) -> str:
        return f"{origin} {tuple(tensor.shape)} {str(tensor.dtype).replace('torch.', '')}"

    tracker = T.live_bytes_tracker(describe)
    T.trace_step(setup, tracker=tracker)
    for ph in T.PHASES:
        print(f"\n== trace {ph}: {tracker.phase_peaks.get(ph, 0) / MiB:.1f} MiB")
        groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for n, lab in tracker.peak_live.get(ph, []):
            g = groups[lab]
            g[0] += n
            g[1] += 1
        for lab, (n, k) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]:
            print(f"  {n / MiB:10.2f} MiB  x{k:<4d} {lab}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--checkpointing", default="none")
    ap.add_argument("--lora-r", type=int, default=None)
    ap.add_argument("--lora-targets", default=None)
    ap.add_argument("--target-len", type=int, default=None, help="encoder-decoder: the decoder's length")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--no-trace", action="store_true")
    args = ap.parse_args()
    arch = reduced_arch(args.model, args.layers)
    setup = TrainingSetup(arch, batch_size=args.batch_size, seq_len=args.seq_len, dtype=args.dtype,
                          mixed_precision=args.mixed_precision, attn=args.attn, optimizer=args.optimizer,
                          checkpointing=args.checkpointing, lora_r=args.lora_r,
                          lora_targets=tuple(args.lora_targets.split(",")) if args.lora_targets else None,
                          target_len=args.target_len)
    est = estimate(setup, cublas_workspaces=False)
    print("closed form:", {k: round(v / MiB, 1) for k, v in est.phases.items()})
    for ph, bd in est.phase_breakdown.items():
        print(f"  {ph:<9}", {k: round(v / MiB, 1) for k, v in bd.items() if v})
    if not args.no_trace:
        warnings.filterwarnings("ignore")
        run_trace(setup, args.top)


if __name__ == "__main__":
    main()
