"""Regenerate tests/data/traces.json: exact fake-tensor traces of training steps (the ground truth the
closed-form estimator is tested against), and print how far the closed form is from each.

    python bench/estimate_traces.py              # all rows (~3 minutes on 2 CPU cores, < 1 GB RAM)
    python bench/estimate_traces.py --no-large   # skip the 7B/8B shapes (~1 minute)
    python bench/estimate_traces.py --check      # compare the stored file with the closed form, no tracing
    python bench/estimate_traces.py --only Mixtral --only gemma   # re-trace only the rows whose id contains one
                                                 # of these (case-insensitive), keep every other stored row

Needs torch, transformers and peft (the [verify] extra); no GPU, no network (models are built from their
configs with random init, as fake tensors).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ckpt_doctor.estimate.arch import ModelArch, default_attn
from ckpt_doctor.estimate.memory import TrainingSetup, estimate
from ckpt_doctor.estimate.registry import resolve

OUT = ROOT / "tests" / "data" / "traces.json"

# tiny models: a few million parameters, 4 layers, hidden 256 (large enough that 512-byte rounding is noise)
MODELS: dict[str, dict] = {
    "tiny-llama": dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, vocab_size=8192, max_position_embeddings=2048,
                       tie_word_embeddings=False),
    "tiny-gpt2": dict(model_type="gpt2", n_embd=256, n_layer=4, n_head=8, vocab_size=8192, n_positions=1024,
                      bos_token_id=0, eos_token_id=0),
    "tiny-qwen2": dict(model_type="qwen2", hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=2, vocab_size=8192, max_position_embeddings=2048,
                       tie_word_embeddings=True),
    "tiny-bert": dict(model_type="bert", hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                      intermediate_size=1024, vocab_size=8192, max_position_embeddings=512),
}


def _reduced(model: str, layers: int) -> dict:
    """A bundled model's config.json with only ``layers`` decoder layers: real widths (the per-layer and per-token
    terms are what the closed form has to get right), a trace in well under a minute on two CPU cores."""
    arch = resolve(model)
    if arch is None:
        raise SystemExit(f"{model} is not in the bundled registry")
    cfg = {k: v for k, v in arch.hf_config.items() if k not in ("architectures", "torch_dtype", "transformers_version")}
    if cfg.get("model_type") == "t5":  # encoder-decoder: ``layers`` in each stack
        cfg["num_layers"] = cfg["num_decoder_layers"] = layers
    else:
        cfg["n_layer" if "n_layer" in cfg else "num_hidden_layers"] = layers
    if isinstance(cfg.get("layer_types"), list):
        cfg["layer_types"] = cfg["layer_types"][:layers]
    if arch.vision is not None and arch.vision.is_qwen:  # the vision tower cut too: 4 blocks, windowed and full
        v = dict(cfg["vision_config"], depth=VISION_BLOCKS)
        if "fullatt_block_indexes" in v:
            v["fullatt_block_indexes"] = [1, 3]
        cfg["vision_config"] = v
    return cfg


VISION_BLOCKS = 4  # Qwen2.5-VL cut to blocks 0-3: windows in 0 and 2, full attention in 1 and 3 (as in 7, 15, 23, 31)


# real shapes cut to a few layers (issue 10: the families people train)
REDUCED: dict[str, tuple[str, int]] = {
    "Mixtral-8x7B-2L": ("mistralai/Mixtral-8x7B-v0.1", 2),
    "Qwen3-30B-A3B-4L": ("Qwen/Qwen3-30B-A3B", 4),
    "Llama-3.2-1B-2L": ("meta-llama/Llama-3.2-1B", 2),
    "Llama-3.2-3B-2L": ("meta-llama/Llama-3.2-3B", 2),
    "gemma-2-2b-2L": ("google/gemma-2-2b", 2),
    "Phi-3-mini-2L": ("microsoft/Phi-3-mini-4k-instruct", 2),
    "pythia-1b-2L": ("EleutherAI/pythia-1b", 2),
    "Qwen2-VL-7B-Instruct-2L": ("Qwen/Qwen2-VL-7B-Instruct", 2),
}
for _name, (_model, _layers) in REDUCED.items():
    MODELS[_name] = _reduced(_model, _layers)

QV = ("q_proj", "v_proj")
VL_LORA = ("q_proj", "v_proj", "qkv", "gate_proj", "up_proj", "down_proj")  # LM attention + the vision blocks' linears
ALL_LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# (model, batch, seq, overrides)
MATRIX: list[tuple[str, int, int, dict]] = [
    # tiny-llama: GQA, RMSNorm, SwiGLU, untied head
    ("tiny-llama", 1, 512, {}),
    ("tiny-llama", 4, 128, {}),
    ("tiny-llama", 4, 512, {"checkpointing": "full"}),
    ("tiny-llama", 4, 512, {"checkpointing": "every_2"}),
    ("tiny-llama", 1, 128, {"dtype": "fp32"}),
    ("tiny-llama", 4, 512, {"dtype": "fp32", "optimizer": "adamw-fused"}),
    ("tiny-llama", 4, 128, {"mixed_precision": "bf16"}),
    ("tiny-llama", 1, 512, {"mixed_precision": "bf16", "checkpointing": "full"}),
    ("tiny-llama", 1, 512, {"attn": "eager"}),
    ("tiny-llama", 4, 128, {"attn": "eager", "checkpointing": "every_2"}),
    ("tiny-llama", 4, 512, {"lora_r": 8, "lora_targets": QV}),
    ("tiny-llama", 4, 512, {"lora_r": 16, "lora_targets": ALL_LLAMA, "checkpointing": "full"}),
    ("tiny-llama", 1, 128, {"lora_r": 8, "lora_targets": QV, "mixed_precision": "bf16", "attn": "eager"}),
    ("tiny-llama", 1, 128, {"optimizer": "adamw-fused", "checkpointing": "every_2"}),
    ("tiny-llama", 4, 128, {"optimizer": "sgd", "gradient_accumulation": 2}),
    ("tiny-llama", 1, 512, {"optimizer": "adafactor"}),
    ("tiny-llama", 4, 128, {"dtype": "fp32", "optimizer": "adamw-loop", "zero_grad_set_to_none": False}),
    # tiny-gpt2: LayerNorm, fused qkv (Conv1D), gelu_new in Python, dropout 0.1, tied head
    ("tiny-gpt2", 4, 128, {}),
    ("tiny-gpt2", 1, 512, {"dtype": "fp32", "attn": "eager"}),
    ("tiny-gpt2", 4, 128, {"mixed_precision": "bf16", "attn": "eager", "checkpointing": "full"}),
    ("tiny-gpt2", 1, 512, {"mixed_precision": "bf16", "checkpointing": "every_2"}),
    ("tiny-gpt2", 4, 512, {"dtype": "fp32", "lora_r": 8, "lora_targets": ("c_attn",)}),
    ("tiny-gpt2", 4, 512, {"optimizer": "adamw-fused", "checkpointing": "full"}),
    ("tiny-gpt2", 1, 128, {"dtype": "fp32", "gradient_accumulation": 2}),
    # tiny-qwen2: GQA 4:1, q/k/v bias, tied head
    ("tiny-qwen2", 4, 512, {}),
    ("tiny-qwen2", 1, 512, {"attn": "eager", "checkpointing": "full"}),
    ("tiny-qwen2", 4, 128, {"lora_r": 8, "lora_targets": ("q_proj", "v_proj", "gate_proj"), "mixed_precision": "bf16"}),
    ("tiny-qwen2", 4, 128, {"dtype": "fp32", "optimizer": "adamw-fused", "checkpointing": "every_2"}),
    ("tiny-qwen2", 1, 128, {"optimizer": "sgd"}),
    ("tiny-qwen2", 4, 512, {"lora_r": 16, "lora_targets": QV, "attn": "eager", "checkpointing": "every_2"}),
    # tiny-bert: sequence classification, post-LN, GELU, dropout 0.1
    ("tiny-bert", 4, 128, {"dtype": "fp32", "attn": "eager"}),
    ("tiny-bert", 1, 512, {"dtype": "fp32", "attn": "eager", "optimizer": "adamw-loop",
                           "zero_grad_set_to_none": False, "gradient_accumulation": 4}),
    ("tiny-bert", 4, 512, {"dtype": "fp32", "mixed_precision": "fp16", "attn": "eager", "checkpointing": "full"}),
    ("tiny-bert", 4, 128, {"dtype": "fp32", "optimizer": "adafactor"}),
    ("tiny-bert", 1, 512, {}),
    ("tiny-bert", 4, 128, {"dtype": "fp32", "lora_r": 8, "lora_targets": ("query", "value")}),
    ("tiny-bert", 4, 512, {"dtype": "fp32", "mixed_precision": "bf16", "checkpointing": "every_2"}),
    ("tiny-bert", 1, 128, {"dtype": "fp32", "attn": "eager", "optimizer": "adamw-fused", "checkpointing": "full"}),
]

# real shapes (bundled registry), traced in ~30 s each under FakeTensorMode
LARGE: list[tuple[str, int, int, dict]] = [
    ("meta-llama/Llama-2-7b-hf", 1, 2048, {}),  # the optimizer step sets the peak: 62.8 GiB
    ("meta-llama/Llama-2-7b-hf", 1, 2048, {"lora_r": 16, "lora_targets": QV, "checkpointing": "full"}),
    ("meta-llama/Meta-Llama-3-8B", 1, 2048, {"checkpointing": "full"}),
]

# issue 10: each row of the issue's table, at real widths and reduced depth
ISSUE10: list[tuple[str, int, int, dict]] = [
    ("Mixtral-8x7B-2L", 1, 2048, {"checkpointing": "full"}),
    ("Mixtral-8x7B-2L", 1, 2048, {}),
    ("Qwen3-30B-A3B-4L", 2, 2048, {}),
    ("Mixtral-8x7B-2L", 1, 2048, {"lora_r": 16, "lora_targets": QV}),
    ("Llama-3.2-1B-2L", 1, 512, {"optimizer": "adamw-fused"}),
    ("Llama-3.2-3B-2L", 1, 1024, {"dtype": "fp32", "mixed_precision": "bf16", "optimizer": "adamw-fused",
                                  "checkpointing": "full"}),
    ("gemma-2-2b-2L", 1, 2048, {"attn": "eager"}),
    ("Phi-3-mini-2L", 1, 4096, {}),
    ("pythia-1b-2L", 1, 2048, {}),
    # issue 10, VLMs: rows where the vision tower weighs (4 images = 4096 patches, LoRA on its linears as well), its
    # eager attention per window, a frozen tower, Qwen2-VL's LayerNorm / quick_gelu blocks under autocast
    ("Qwen2.5-VL-7B-Instruct-2L", 1, 1100, {"images": 4, "lora_r": 16, "lora_targets": VL_LORA}),
    ("Qwen2.5-VL-7B-Instruct-2L", 1, 1100, {"attn": "eager", "images": 2, "image_size": 640, "lora_r": 16,
                                            "lora_targets": VL_LORA}),
    ("Qwen2.5-VL-7B-Instruct-2L", 1, 2048, {"freeze_vision_tower": True, "checkpointing": "full"}),
    ("Qwen2-VL-7B-Instruct-2L", 2, 1024, {"dtype": "fp32", "mixed_precision": "bf16", "images": 2,
                                          "checkpointing": "every_2"}),
    # issue 10, the whole job: Liger's fused linear cross-entropy and bitsandbytes' 8-bit AdamW (the trace runs what
    # their sources allocate: trace.py _fused_linear_cross_entropy, _bnb_adamw_8bit)
    ("Llama-3.2-1B-2L", 2, 2048, {"loss": "fused", "dtype": "fp32", "mixed_precision": "bf16",
                                  "gradient_accumulation": 2, "checkpointing": "full"}),
    ("gemma-2-2b-2L", 1, 2048, {"attn": "eager", "loss": "fused"}),
    ("Llama-3.2-1B-2L", 1, 2048, {"optimizer": "adamw-8bit"}),
    ("Llama-3.2-3B-2L", 1, 1024, {"dtype": "fp32", "mixed_precision": "bf16", "optimizer": "paged-adamw-8bit",
                                  "checkpointing": "full", "loss": "fused"}),
    # issue 10, QLoRA: 4-bit bases as bitsandbytes and peft hold them (trace_bnb.py), with and without peft's fp32 upcast
    ("Llama-3.1-8B-2L", 1, 2048, {"load_in_4bit": True, "lora_r": 16, "lora_targets": QV}),
    ("Qwen3-8B-2L", 1, 2048, {"load_in_4bit": True, "lora_r": 16, "lora_targets": ALL_LLAMA, "checkpointing": "full"}),
    ("gemma-2-2b-2L", 1, 2048, {"attn": "eager", "load_in_4bit": True, "lora_r": 16, "lora_targets": QV,
                                "kbit_upcast": False, "checkpointing": "full"}),
    # 8-bit (LLM.int8) bases (trace_bnb.py MatMul8bitLt): the input kept on the autograd context, checkpointed or not
    ("Llama-3.1-8B-2L", 1, 2048, {"load_in_8bit": True, "lora_r": 16, "lora_targets": QV}),
    ("Qwen3-8B-2L", 1, 2048, {"load_in_8bit": True, "lora_r": 16, "lora_targets": ALL_LLAMA, "checkpointing": "full"}),
    ("gemma-2-2b-2L", 1, 2048, {"attn": "eager", "load_in_8bit": True, "dtype": "fp16", "lora_r": 16, "lora_targets": QV,
                                "kbit_upcast": False, "checkpointing": "full"}),
    # the usual QLoRA run: bf16 autocast over the fp32 rest (`bf16=True`), 4-bit and 8-bit
    ("Llama-3.1-8B-2L", 1, 2048, {"dtype": "fp32", "mixed_precision": "bf16", "load_in_4bit": True, "lora_r": 16,
                                  "lora_targets": ALL_LLAMA, "checkpointing": "full"}),
    ("Qwen3-8B-2L", 1, 2048, {"dtype": "fp32", "mixed_precision": "bf16", "load_in_8bit": True, "lora_r": 16,
                              "lora_targets": QV}),
]


# issue 10, the family grid: real widths, 2-4 layers; each family's rows spread over the crossed settings (precision
# bf16 / fp32 + bf16 autocast, AdamW foreach / fused, checkpointing none / full / every_2, LoRA / full fine-tuning),
# not every combination: together the five rows of a family take every value of every setting.
# family: (bundled model, layers, LoRA targets)
GRID_FAMILIES: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "Llama 3.x": ("meta-llama/Llama-3.1-8B", 2, QV),
    "Qwen2.5": ("Qwen/Qwen2.5-7B", 2, QV),
    "Qwen3": ("Qwen/Qwen3-8B", 2, QV),
    "Qwen3-MoE": ("Qwen/Qwen3-30B-A3B", 4, QV),
    "Gemma 2": ("google/gemma-2-2b", 4, QV),
    "Gemma 3": ("google/gemma-3-1b-pt", 4, QV),
    "Phi-3": ("microsoft/Phi-3-mini-4k-instruct", 4, ("qkv_proj", "o_proj")),
    "Phi-4": ("microsoft/phi-4", 2, ("qkv_proj", "o_proj")),
    "Mistral": ("mistralai/Mistral-7B-v0.3", 2, QV),
    "Mixtral": ("mistralai/Mixtral-8x7B-v0.1", 2, QV),
    "GPT-NeoX": ("EleutherAI/pythia-1.4b", 4, ("query_key_value",)),
    "GPT-2": ("openai-community/gpt2-medium", 4, ("c_attn",)),
    "BERT": ("google-bert/bert-base-uncased", 4, ("query", "value")),
    # open-instruct's LoRA targets (allenai/open-instruct open_instruct/finetune.py: q, o, v, k, gate, up, down)
    "OLMo 2": ("allenai/OLMo-2-1124-7B", 2, ALL_LLAMA),
    # huggingface/gpt-oss-recipes configs/sft_lora.yaml: all-linear, which is the attention projections (the router
    # and the experts are not nn.Linear); one sliding and one full attention layer
    "gpt-oss": ("openai/gpt-oss-20b", 2, ("q_proj", "k_proj", "v_proj", "o_proj")),
    # encoder-decoder: 4 encoder + 4 decoder blocks; flan-t5-base is the Flan-T5 / T5 v1.1 the registry bundles
    # (gated-gelu, untied in its config so no output scaling); LoRA's "q", "v" adapt self- and cross-attention
    "T5": ("google/flan-t5-base", 4, ("q", "v")),
    # one 448 x 448 image per sample (256 visual tokens of the sequence); vision tower cut to 4 blocks
    "Qwen2.5-VL": ("Qwen/Qwen2.5-VL-7B-Instruct", 2, QV),
}
# (batch, seq, overrides) per row; the LoRA targets are the family's
GRID_ROWS: list[tuple[int, int, dict]] = [
    (1, 2048, {}),                                                                   # bf16, foreach, none, full FT
    (2, 1024, {"dtype": "fp32", "mixed_precision": "bf16", "optimizer": "adamw-fused", "checkpointing": "full"}),
    (1, 2048, {"optimizer": "adamw-fused", "checkpointing": "every_2", "lora_r": 16}),
    (2, 1024, {"dtype": "fp32", "mixed_precision": "bf16", "checkpointing": "every_2", "lora_r": 16}),
    (1, 4096, {"checkpointing": "full", "lora_r": 16}),                              # long sequence: sliding windows
]
# fp32 expert weights cannot run: transformers 5.25 integrations/moe.py `_grouped_mm` calls torch's grouped_mm for every
# dtype on CUDA (SM80+) and on CPU with torch > 2.10, and torch 2.13's grouped_mm takes bf16 only
# (torch/_meta_registrations.py `_meta_grouped_mm_common`: "Expected inputs of BF16 type"); these families' autocast
# rows run in bf16
MOE_BF16_ONLY = ("Qwen3-MoE", "Mixtral", "gpt-oss")
GRID: list[tuple[str, str, int, int, dict]] = []  # (family, model key, batch, seq, overrides)
for _fam, (_model, _layers, _targets) in GRID_FAMILIES.items():
    _key = f"{_model.split('/')[-1]}-{_layers}L"
    if _key not in MODELS:
        MODELS[_key] = _reduced(_model, _layers)
    for _b, _s, _over in GRID_ROWS:
        _over = dict(_over)
        _arch = ModelArch.from_hf_config(dict(MODELS[_key]), _key)
        if default_attn(_arch) == "eager":
            _over["attn"] = "eager"  # transformers refuses sdpa for Gemma 2 and gpt-oss
        if _arch.position_embedding != "relative":  # T5's relative buckets have no table to outgrow
            _s = min(_s, _arch.max_position_embeddings)  # GPT-2, BERT, Pythia
        if _arch.is_encoder_decoder and _b > 1:  # a target a quarter of the source (summarisation) on the batch-2 rows
            _over["target_len"] = _s // 4
        if _over.get("lora_r"):
            _over["lora_targets"] = _targets
        if _fam in MOE_BF16_ONLY and _over.get("dtype") == "fp32":
            del _over["dtype"], _over["mixed_precision"]
        GRID.append((_fam, _key, _b, _s, _over))


def arch_of(model: str) -> ModelArch:
    if model in MODELS:
        return ModelArch.from_hf_config(dict(MODELS[model]), model)
    arch = resolve(model)
    if arch is None:
        raise SystemExit(f"{model} is not in the bundled registry")
    return arch


def setup_of(row: dict) -> TrainingSetup:
    kw = dict(row["setup"])
    if kw.get("lora_targets") is not None:
        kw["lora_targets"] = tuple(kw["lora_targets"])
    return TrainingSetup(arch=arch_of(row["model"]), **kw)


def _setup_dict(s: TrainingSetup) -> dict:
    out = {}
    for f in fields(s):
        if f.name == "arch":
            continue
        v = getattr(s, f.name)
        if v != f.default:
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def row_id(model: str, s: TrainingSetup) -> str:
    d = _setup_dict(s)
    parts = [model.split("/")[-1]] + [f"{k}={'+'.join(v) if isinstance(v, list) else v}" for k, v in d.items()]
    return " ".join(parts)


def compare(rows: list[dict]) -> tuple[float, float]:
    errs = []
    for r in rows:
        e = estimate(setup_of(r), cublas_workspaces=False)  # the trace sees tensors only
        err = 100.0 * (e.peak_bytes - r["peak_bytes"]) / r["peak_bytes"]
        errs.append(abs(err))
        ph = " ".join(f"{k[:3]} {100.0 * (e.phases[k] - v) / v:+.2f}" for k, v in r["phases"].items() if v)
        print(f"  {err:+6.2f}%  {r['peak_bytes'] / 2**20:9.1f} MiB  peak at {r['peak_phase']:<9} [{ph}]  {r['id']}")
    mx, mean = max(errs), sum(errs) / len(errs)
    print(f"closed form vs trace over {len(rows)} rows: max |error| {mx:.2f} %, mean {mean:.2f} %")
    return mx, mean


def by_family(rows: list[dict]) -> dict[str, tuple[int, float, float]]:
    """The family grid's rows (those with a ``family``): count, max and mean |error| per family, as a Markdown table."""
    fams: dict[str, list[float]] = {}
    for r in rows:
        if not r.get("family"):
            continue
        e = estimate(setup_of(r), cublas_workspaces=False)
        fams.setdefault(r["family"], []).append(abs(100.0 * (e.peak_bytes - r["peak_bytes"]) / r["peak_bytes"]))
    out = {f: (len(v), max(v), sum(v) / len(v)) for f, v in fams.items()}
    print("| family | rows | max error | mean error |\n| --- | --- | --- | --- |")
    for f, (n, mx, mean) in out.items():
        print(f"| {f} | {n} | {mx:.2f} % | {mean:.2f} % |")
    allv = [x for v in fams.values() for x in v]
    if allv:
        print(f"| all | {len(allv)} | {max(allv):.2f} % | {sum(allv) / len(allv):.2f} % |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-large", action="store_true", help="skip the 7B/8B shapes")
    ap.add_argument("--check", action="store_true", help="only compare the stored traces with the closed form")
    ap.add_argument("--grid", action="store_true",
                    help="re-trace only the family grid (GRID); keep the other stored rows")
    ap.add_argument("--by-family", action="store_true", help="with --check: the grid's max and mean error per family")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="re-trace only the rows whose id contains TEXT (repeatable); keep the other stored rows")
    args = ap.parse_args()
    if args.check:
        data = json.loads(OUT.read_text())
        if args.by_family:
            by_family(data["rows"])
        else:
            compare(data["rows"])
        return

    warnings.filterwarnings("ignore")
    import peft
    import torch
    import transformers

    try:
        transformers.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass
    from ckpt_doctor.estimate.trace import trace_step

    todo = [(None, *t) for t in list(MATRIX) + ([] if args.no_large and not args.only else list(LARGE)) + list(ISSUE10)]
    todo += list(GRID)
    partial = bool(args.only or args.grid)
    stored = {r["id"]: r for r in json.loads(OUT.read_text())["rows"]} if partial and OUT.exists() else {}
    wanted = [t.lower() for t in args.only]
    rows = []
    t_all = time.perf_counter()
    seen = set()
    for i, (family, model, b, s, over) in enumerate(todo, 1):
        setup = TrainingSetup(arch=arch_of(model), batch_size=b, seq_len=s, **over)
        rid = row_id(model, setup)
        if rid in seen:  # a grid row that an earlier list already has
            continue
        seen.add(rid)
        if (wanted and not any(t in rid.lower() for t in wanted)) or (args.grid and family is None):
            if rid in stored:
                rows.append({**stored[rid], **({"family": family} if family else {})})
            continue
        t0 = time.perf_counter()
        res = trace_step(setup)
        dt = time.perf_counter() - t0
        est = estimate(setup, cublas_workspaces=False)
        err = 100.0 * (est.peak_bytes - res.peak_bytes) / res.peak_bytes
        print(f"[{i:2d}/{len(todo)}] {dt:6.1f}s  trace {res.peak_bytes / 2**20:10.1f} MiB ({res.peak_phase:<9})  "
              f"closed form {err:+6.2f}%  {rid}", flush=True)
        rows.append({
            "id": rid,
            **({"family": family} if family else {}),
            "model": model,
            "setup": _setup_dict(setup),
            "peak_bytes": res.peak_bytes,
            "peak_phase": res.peak_phase,
            "phases": res.phases,
            "breakdown": res.breakdown,
            "params_total": res.params_total,
            "params_trainable": res.params_trainable,
            "trace_seconds": round(dt, 2),
            "transformers": transformers.__version__,
        })
    if partial:  # the stored rows keep the versions they were traced with (row["transformers"] when newer)
        versions = json.loads(OUT.read_text())["versions"]
    else:
        versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                    "python": platform.python_version()}
    data = {
        "about": "Peak bytes of one steady-state training step (2nd iteration): live storage bytes under "
                 "FakeTensorMode on CPU, CUDA's 512-byte "
                 "rounding and CUDA semantics applied (ckpt_doctor/estimate/trace.py). Regenerate with "
                 "python bench/estimate_traces.py.",
        "versions": versions,
        "models": MODELS,
        "rows": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT} ({len(rows)} rows) in {time.perf_counter() - t_all:.0f}s")
    compare(rows)


if __name__ == "__main__":
    main()
