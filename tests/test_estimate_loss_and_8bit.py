"""Issue 10: Liger's fused linear cross-entropy (``TrainingSetup.loss = "fused"``) and bitsandbytes' 8-bit AdamW, in
the closed form and in the trace.  Neither library is needed: the trace runs what their sources allocate
(trace.py ``_fused_linear_cross_entropy``, ``_bnb_adamw_8bit``), and the real CPU step read from the allocator's own
events (``allocator_step``) checks the trace; the closed form must agree with both."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest

from ckpt_doctor.estimate.arch import ModelArch
from ckpt_doctor.estimate.memory import TrainingSetup, estimate
from ckpt_doctor.estimate.registry import resolve

HAS_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "peft"))
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch, transformers and peft (the [verify] extra)")

_T = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=2048, max_position_embeddings=512)
TINY = {
    "llama, tied": dict(model_type="llama", intermediate_size=344, num_key_value_heads=2, tie_word_embeddings=True, **_T),
    "qwen2": dict(model_type="qwen2", intermediate_size=352, num_key_value_heads=2, tie_word_embeddings=False, **_T),
    "gemma2 (soft-capped logits)": dict(model_type="gemma2", intermediate_size=256, num_key_value_heads=2, head_dim=32,
                                        sliding_window=32, **_T),
}
RUNS = {
    "bf16": dict(),
    "fp32 + autocast, accumulation 2": dict(dtype="fp32", mixed_precision="bf16", gradient_accumulation=2),
    "LoRA, checkpointing": dict(lora_r=8, lora_targets=("q_proj", "v_proj"), checkpointing="full"),
}


def _tiny(family: str) -> ModelArch:
    return ModelArch.from_hf_config(dict(TINY[family]), family)


def _reduced(model: str, layers: int = 2) -> ModelArch:
    cfg = dict(resolve(model).hf_config)
    cfg["num_hidden_layers"] = layers
    return ModelArch.from_hf_config(cfg, f"{model} ({layers} layers)")


def _agree(setup: TrainingSetup, tolerance: float, allocator: bool = True) -> None:
    """The closed form's peak within ``tolerance`` of the trace's, and (``allocator``) the trace within 0.5 % of a real
    CPU step read from the allocator's events in every phase.  (At these tiny widths a phase that is not the peak may be
    further off: the backward of a 2048 x 128 tied head, up to 6 %; at real widths every phase is within 0.25 %, the
    test below.)"""
    from ckpt_doctor.estimate.trace import allocator_step, trace_step

    fake = trace_step(setup)
    if allocator:
        real = allocator_step(setup)
        for phase in ("forward", "backward", "optimizer"):  # a few 512-byte scalars apart
            assert abs(real.phases[phase] - fake.phases[phase]) <= 0.005 * fake.phases[phase], (phase, real.phases, fake.phases)
    est = estimate(setup, cublas_workspaces=False)
    assert abs(est.peak_bytes - fake.peak_bytes) <= tolerance * fake.peak_bytes, (est.phases, fake.phases)


KNOWN_OFF = {
    ("gemma2 (soft-capped logits)", "fp32 + autocast, accumulation 2"):
        "the real CPU step holds 2.5 MB (3.8 %) more than the trace in forward, with the fused loss only (the plain loss "
        "agrees to 4 KB); not explained",
    ("gemma2 (soft-capped logits)", "LoRA, checkpointing"):
        "the closed form is 5.3 % under the trace, with the plain loss alike (34.1 vs 36.0 MB): tiny Gemma 2 eager LoRA "
        "with checkpointing, not the loss",
}


@needs_torch
@pytest.mark.parametrize("family, run", [
    pytest.param(f, r, marks=pytest.mark.xfail(strict=True, reason=KNOWN_OFF[f, r])) if (f, r) in KNOWN_OFF else (f, r)
    for f in TINY for r in RUNS
])
def test_fused_loss_trace_matches_the_allocator_and_the_closed_form(family, run):
    import warnings

    warnings.filterwarnings("ignore")
    attn = "eager" if family.startswith("gemma2") else "sdpa"
    # 512 tokens: at 64, CPU matmuls of a few rows allocate packing buffers through the allocator (100 KB more than a
    # CUDA step).  Not in bf16 full fine-tuning: Liger's `grad_weight += mm(...).float()` adds fp32 to bf16 in place, and
    # a CPU TensorIterator makes temporaries for the promotion (aten TensorIterator compute_types: only
    # `if (common_device == kCPU)`; a CUDA kernel casts as it goes), 1.5 MiB here that a CUDA step never holds
    setup = TrainingSetup(_tiny(family), batch_size=2, seq_len=512, loss="fused", attn=attn, **RUNS[run])
    _agree(setup, 0.03, allocator=run != "bf16")


@needs_torch
@pytest.mark.parametrize("optimizer", ["adamw-8bit", "paged-adamw-8bit"])
@pytest.mark.parametrize("run", ["bf16", "fp32 + autocast, accumulation 2"])
def test_8bit_adamw_trace_matches_the_allocator_and_the_closed_form(optimizer, run):
    import warnings

    warnings.filterwarnings("ignore")
    # hidden 128: the attention projections (16384 elements) get 8-bit state, the norms (128) fp32 state, and none is
    # large enough (1e5) to be paged
    _agree(TrainingSetup(_tiny("qwen2"), batch_size=2, seq_len=64, optimizer=optimizer, **RUNS[run]), 0.01)


@needs_torch
@pytest.mark.parametrize("model, over", [
    ("meta-llama/Llama-3.2-1B", dict(dtype="fp32", mixed_precision="bf16", gradient_accumulation=4, checkpointing="full")),
    ("Qwen/Qwen2.5-7B", dict(lora_r=16, checkpointing="full")),
    ("google/gemma-2-2b", dict(attn="eager")),
])
def test_fused_loss_at_real_width_within_1_percent_of_the_trace(model, over):
    """Real vocabularies and hidden sizes (so real chunk counts: 32 chunks of 64 tokens for Llama-3.2-1B at 2 x 1024),
    two layers.  Measured at stop 26: every phase within 0.2 %."""
    import warnings

    from ckpt_doctor.estimate.trace import trace_step

    warnings.filterwarnings("ignore")
    setup = TrainingSetup(_reduced(model), batch_size=2, seq_len=1024, loss="fused", **over)
    traced = trace_step(setup)
    est = estimate(setup, cublas_workspaces=False)
    for phase in ("forward", "backward", "optimizer"):
        assert abs(est.phases[phase] - traced.phases[phase]) <= 0.01 * traced.phases[phase], (phase, est.phases, traced.phases)


def test_a_fused_loss_never_holds_the_whole_logits():
    """Llama-3.2-1B, 8 x 2048 tokens over 128,256 entries: the plain loss holds the bf16 logits, their fp32 copy, the
    log-softmax and its gradient (~20 GiB); Liger holds one chunk of 64 tokens at a time."""
    setup = TrainingSetup(resolve("meta-llama/Llama-3.2-1B"), batch_size=8, seq_len=2048, checkpointing="full")
    plain, fused = estimate(setup), estimate(replace(setup, loss="fused"))
    logits = [bd.get("logits_and_loss", 0) for bd in plain.phase_breakdown.values()]
    assert max(logits) > 18 * 2**30  # in forward: bf16 logits 3.9 GiB, their fp32 copy and the log-softmax 7.8 each
    assert fused.peak_bytes < plain.peak_bytes - 15 * 2**30  # 31.7 -> 11.6 GiB
    logits = [bd.get("logits_and_loss", 0) for bd in fused.phase_breakdown.values()]
    # grad_input [N, h] bf16 (64 MiB), the head's bf16 gradient [V, h] (0.49 GiB), two chunks of logits (0.1 GiB)
    assert max(logits) < 0.7 * 2**30


def test_a_paged_8bit_adamw_keeps_only_small_state_and_absmax_in_torchs_allocator():
    """bitsandbytes pages a state buffer of >= 1e5 elements (cudaMallocManaged, outside torch's allocator); the
    per-block absmax and small tensors' states stay in it."""
    setup = TrainingSetup(resolve("meta-llama/Llama-3.2-1B"), batch_size=1, seq_len=512)
    eight, paged = estimate(replace(setup, optimizer="adamw-8bit")), estimate(replace(setup, optimizer="paged-adamw-8bit"))
    params = eight.params_trainable
    assert abs(eight.breakdown["optimizer_state"] - params * (2 + 8 / 256)) < 0.01 * params * 2
    assert 0 < paged.breakdown["optimizer_state"] < 0.02 * eight.breakdown["optimizer_state"]


def test_a_fused_loss_is_for_causal_language_models():
    with pytest.raises(ValueError, match="causal language models"):
        TrainingSetup(resolve("bert-base-uncased"), loss="fused").validate()
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainingSetup(resolve("gpt2"), loss="chunked").validate()
