#!/usr/bin/env bash
# Calibrate `ckpt-doctor estimate` on a real GPU: run `ckpt-doctor verify --model ...` (the synthetic step:
# model built from its config, random weights, no download; one warm-up step and one measured step) over a
# small matrix, and write measured vs estimated peaks to bench/results/gpu_verify_<gpu>.json.
#
#   bash bench/gpu_verify.sh                     # on a bare GPU machine, from the repository root (~10 min)
#
# Matrix (override with environment variables):
#   MODELS   "openai-community/gpt2 meta-llama/Llama-3.2-1B"   (bundled ids or config.json paths)
#   BATCHES  "1 4"                 per-device micro-batch sizes
#   CKPTS    "none full"           checkpointing plans
#   OPTIMIZERS "adamw"             verify --optimizer values (adamw = foreach, adamw-fused, adamw-loop, ...)
#   LORAS    "0"                   LoRA ranks (0: full fine-tuning)
#   ALLOCS   "default"             the caching allocator: default | expandable (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)
#   EXTENDED=1                     issue 10's calibration matrix instead: Llama-3.2-1B (tied embeddings) b4, none / full,
#                                  foreach / fused AdamW, full / LoRA r16, both allocators (16 runs), then gpt-oss-20b
#                                  (MoE) LoRA r16 b1 full with both allocators (2 runs); ~8 min on an H200
#   SEQ      1024                  tokens per sample (capped by the model's max_position_embeddings)
#   DTYPE    bf16                  weights dtype
#   DEVICE   cuda                  cuda | cpu (cpu: the test suite's smoke run of this script)
#   TIMEOUT  240                   seconds per run
#   RESULT   bench/results/gpu_verify_<gpu>.json
#   SKIP_INSTALL=1                 do not pip install
#   PYTHON   python3
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
MODELS=${MODELS:-"openai-community/gpt2 meta-llama/Llama-3.2-1B"}
BATCHES=${BATCHES:-"1 4"}
CKPTS=${CKPTS:-"none full"}
OPTIMIZERS=${OPTIMIZERS:-"adamw"}
LORAS=${LORAS:-"0"}
ALLOCS=${ALLOCS:-"default"}
if [ "${EXTENDED:-0}" = "1" ]; then
  MODELS="meta-llama/Llama-3.2-1B" BATCHES="4" CKPTS="none full" OPTIMIZERS="adamw adamw-fused" LORAS="0 16"
  ALLOCS="default expandable"
fi
SEQ=${SEQ:-1024}
DTYPE=${DTYPE:-bf16}
DEVICE=${DEVICE:-cuda}
TIMEOUT=${TIMEOUT:-240}

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  if "$PYTHON" -c "import torch, transformers, pynvml" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-deps -e . || "$PYTHON" -m pip install --quiet -e '.[verify]'
  else
    "$PYTHON" -m pip install --quiet -e '.[verify]'
  fi
fi

if [ "$DEVICE" = "cuda" ]; then
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  GPU=${GPU:-unknown-gpu}
else
  GPU=cpu
fi
SLUG=$(printf '%s' "$GPU" | tr -c 'A-Za-z0-9._-' '_' | sed 's/_*$//')
RESULT=${RESULT:-bench/results/gpu_verify_${SLUG}.json}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

i=0
run() {  # model batch checkpointing optimizer lora allocator
  i=$((i + 1))
  echo "[$i] $1 batch $2 seq $SEQ checkpointing $3 optimizer $4 lora $5 allocator $6 ($DEVICE)" >&2
  local lora=() conf=""
  [ "$5" != "0" ] && lora=(--lora-r "$5")
  [ "$6" = "expandable" ] && conf="expandable_segments:True"
  set +e
  env ${conf:+PYTORCH_CUDA_ALLOC_CONF=$conf} "$PYTHON" -m ckpt_doctor verify --model "$1" --batch-size "$2" \
    --seq-len "$SEQ" --dtype "$DTYPE" --checkpointing "$3" --optimizer "$4" ${lora[@]+"${lora[@]}"} --device "$DEVICE" \
    --timeout "$TIMEOUT" --output-format json > "$TMP/run_$i.json"
  local rc=$?
  set -e
  printf '%s\n' "$1" "$2" "$3" "$rc" "$4" "$5" "$6" > "$TMP/run_$i.meta"
}
for model in $MODELS; do
  for bs in $BATCHES; do
    for ck in $CKPTS; do
      for opt in $OPTIMIZERS; do
        for lora in $LORAS; do
          for alloc in $ALLOCS; do
            run "$model" "$bs" "$ck" "$opt" "$lora" "$alloc"
          done
        done
      done
    done
  done
done
if [ "${EXTENDED:-0}" = "1" ]; then
  for alloc in default expandable; do
    run "openai/gpt-oss-20b" 1 full adamw 16 "$alloc"
  done
fi

"$PYTHON" - "$TMP" "$RESULT" "$GPU" "$DEVICE" "$SEQ" "$DTYPE" <<'EOF'
import glob, json, os, platform, sys, time

tmp, out, gpu, device, seq, dtype = sys.argv[1:7]
rows = []
for meta in sorted(glob.glob(os.path.join(tmp, "run_*.meta")), key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0])):
    model, bs, ck, rc, opt, lora, alloc = open(meta).read().split("\n")[:7]
    row = {"model": model, "batch_size": int(bs), "checkpointing": ck, "exit_code": int(rc), "optimizer": opt,
           "lora_r": int(lora) or None, "allocator": alloc}
    try:
        r = json.load(open(meta[:-5] + ".json"))
    except (OSError, ValueError) as exc:
        row["error"] = f"no JSON: {exc}"
        rows.append(row)
        continue
    est = r.get("estimate") or {}
    steps = r.get("steps") or []
    last = steps[-1] if steps else {}
    row.update({
        "seq_len": ((r.get("target") or {}).get("setup") or {}).get("seq_len"),
        "steps_run": r.get("steps_run"),
        "step_seconds": r.get("step_seconds"),
        "memory_source": r.get("memory_source"),
        "measured_peak_allocated_bytes": last.get("peak_allocated_bytes"),
        "measured_peak_reserved_bytes": last.get("peak_reserved_bytes"),
        "measured_nvml_used_bytes": r.get("nvml_used_bytes"),
        "estimated_peak_bytes": est.get("peak_bytes"),
        "estimated_peak_reserved_bytes": est.get("peak_bytes_reserved"),
        "estimated_peak_nvidia_smi_bytes": est.get("peak_bytes_nvidia_smi"),
        "estimated_peak_phase": est.get("peak_phase"),
        "estimate_error_pct": r.get("estimate_error_pct"),
        "estimate_error_pct_reserved": r.get("estimate_error_pct_reserved"),
        "estimate_error_pct_nvidia_smi": (round((est["peak_bytes_nvidia_smi"] - r["nvml_used_bytes"])
                                                / r["nvml_used_bytes"] * 100, 1)
                                          if est.get("peak_bytes_nvidia_smi") and r.get("nvml_used_bytes") else None),
        "checkpoint_calls": r.get("checkpoint_calls"),
        "error": (r.get("error") or {}).get("message"),
    })
    rows.append(row)
errs = [abs(x["estimate_error_pct"]) for x in rows if x.get("estimate_error_pct") is not None]
doc = {
    "gpu": gpu, "device": device, "dtype": dtype, "seq_len_requested": int(seq),
    "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
    "versions": {},
    "summary": {"runs": len(rows), "measured": len(errs),
                "max_abs_error_pct": max(errs) if errs else None,
                "mean_abs_error_pct": round(sum(errs) / len(errs), 2) if errs else None},
    "rows": rows,
}
for mod in ("torch", "transformers"):
    try:
        doc["versions"][mod] = __import__(mod).__version__
    except Exception:  # noqa: BLE001
        doc["versions"][mod] = None
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"wrote {out}: {len(rows)} runs, max |error| {doc['summary']['max_abs_error_pct']} %", file=sys.stderr)
for x in rows:
    print(f"  {x['model']:<28} b{x['batch_size']} {x['checkpointing']:<5} measured "
          f"{x.get('measured_peak_allocated_bytes')} est {x.get('estimated_peak_bytes')} "
          f"err {x.get('estimate_error_pct')} % {x.get('error') or ''}", file=sys.stderr)
EOF
