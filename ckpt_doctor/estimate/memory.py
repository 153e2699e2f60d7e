"""Closed-form peak-memory model of one training step (no torch, no transformers; a few milliseconds).

How it works (the equations are written out in ``docs/estimate.md``):

* Every tensor the step creates is described by its size: ``tokens x width x bytes`` for activations,
  ``numel x bytes`` for weights, gradients and optimizer state.  Each size is rounded up to CUDA's
  512-byte allocation block, as ``torch.cuda.max_memory_allocated`` counts it.
* A *layer program* per architecture family (Llama-style, GPT-2-style, BERT-style) lists the operations of
  one transformer block as the Hugging Face implementation runs them, with what autograd saves for
  backward.  Whether a tensor is saved depends on what requires a gradient (frozen LoRA base weights save
  far less than full fine-tuning) and on the precision (CUDA autocast: matmuls in bf16/fp16, LayerNorm
  and softmax in fp32, cached weight casts).
* The step is then walked once: forward (saved tensors accumulate, transients come and go), loss,
  backward in reverse order (activations are released, gradients appear), ``optimizer.step()``.  The live
  total is tracked, and the **peak of each phase** (forward, backward, optimizer) is its maximum; the step's
  peak is the largest phase, never a sum of everything.
* The walk is of a steady-state step: the optimizer state exists from the start (it was created by step 1),
  gradients are freed by ``zero_grad(set_to_none=True)``, and with gradient accumulation the second
  micro-batch runs forward with the first one's gradients held.

The result matches ``trace.trace_step`` (live storage bytes under FakeTensorMode on the real transformers model)
within a few percent; see ``tests/test_estimate_memory.py`` and ``tests/data/traces.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .allocator import SMALL_SIZE, Block, CachingAllocator
from .arch import ModelArch

__all__ = [
    "BREAKDOWN_KEYS",
    "CUDA_BLOCK",
    "BLAS_WORKSPACES",
    "BLAS_WORKSPACE_BYTES",
    "CUDA_CONTEXT_BYTES",
    "ENCODER_TYPES",
    "OPTIMIZERS",
    "MemoryEstimate",
    "TrainingSetup",
    "estimate",
    "plans",
]

GiB = 1 << 30
MiB = 1 << 20

# --- constants (sources in docs/estimate.md) ---------------------------------------------------------
CUDA_BLOCK = 512
"""c10/cuda/CUDACachingAllocator.cpp ``kMinBlockSize``: every allocation is rounded up to 512 bytes and
``max_memory_allocated`` counts the rounded size."""

CUDA_CONTEXT_BYTES = 758 * MiB
"""CUDA context + kernels resident before any tensor: what ``nvidia-smi`` shows beyond
``torch.cuda.memory_reserved``.  758 MiB in every one of the 18 runs of
``bench/results/gpu_verify_NVIDIA_H200.json`` (torch 2.11 + CUDA 13.0, which load kernels lazily).  Older
stacks load every kernel up front: transformers' ``model_memory_anatomy.md`` measured 1343 MiB (V100, CUDA 11)."""

BLAS_WORKSPACE_BYTES = 32 * MiB
"""One cuBLAS workspace, allocated through the caching allocator, so counted by ``max_memory_allocated``.
``aten/src/ATen/cuda/CublasHandlePool.cpp``: 32 MiB by default on compute capability 9.x, 10.x and 12.x (Hopper,
Blackwell), ``4096 KiB * 2 + 16 KiB * 8`` before; cuBLASLt shares it ("unified" workspace, the default).  The
larger size is used for every GPU: at most 48 MiB too much on older cards."""

BLAS_WORKSPACES = 2
"""Workspaces are per (handle, stream), handles per thread: the forward runs on the caller's thread, the
backward on autograd's device thread.  ``bench/cublas_workspace_probe.py`` measured 2 x 32 MiB on an H200."""

ALLOCATOR_SEGMENT = 2 * MiB
"""Large segments are ``cudaMalloc``-ed in 2 MiB multiples (``kRoundLarge``)."""

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZERS = ("adamw", "adamw-fused", "adamw-8bit", "paged-adamw-8bit", "adafactor", "sgd", "adamw-loop")
ATTN = ("eager", "sdpa", "flash")
BREAKDOWN_KEYS = (
    "weights",
    "master_weights",
    "gradients",
    "optimizer_state",
    "activations",
    "logits_and_loss",
    "temporaries",
    "cublas_workspaces",
)
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2",
                           "albert", "camembert", "modernbert"})

BNB_BLOCK = 256          # bitsandbytes 8-bit optimizer state block (one fp32 absmax per block)
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps 32-bit state for smaller tensors
BNB_PAGED_MIN_SIZE = 100_000  # a paged optimizer's state buffers from this size on are paged (managed) memory
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit + 8-bit absmax per 64 + fp32 per 256 blocks
INT8_BYTES_PER_PARAM = 1.0


_SUB_GROUP_ELEMENTS = 1_000_000_000  # DeepSpeed's default ZeRO-3 sub_group_size (deepspeed 0.19.5 runtime/zero/config.py)
_REDUCE_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's default reduce_bucket_size (deepspeed 0.19.5 runtime/zero/config.py)


def _round(nbytes: float) -> int:
    n = int(nbytes)
    if n != nbytes:
        n = math.ceil(nbytes)
    return 0 if n <= 0 else -(-n // CUDA_BLOCK) * CUDA_BLOCK


# =====================================================================================================
# the setup


FROZEN = ("none", "trunk")
LOSSES = ("plain", "fused")
HEADS = ("lm_head", "classifier", "score")  # the output layers a heads-only fine-tune trains

@dataclass(frozen=True)
class TrainingSetup:
    arch: ModelArch
    batch_size: int = 1
    seq_len: int = 2048
    dtype: str = "bf16"            # weights: fp32|bf16|fp16
    mixed_precision: str = "no"    # no|bf16|fp16 (autocast over fp32 master weights)
    attn: str = "sdpa"             # eager|sdpa|flash
    optimizer: str = "adamw"       # adamw|adamw-fused|adamw-8bit|paged-adamw-8bit|adafactor|sgd
    lora_r: int | None = None
    lora_targets: tuple[str, ...] | None = None
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    gpus: int = 1
    zero: int = 0                  # 0..3; FSDP FULL_SHARD = 3
    gradient_accumulation: int = 1
    checkpointing: str = "none"    # none | full | every_N (e.g. "every_2") | offload
    task: str = "auto"             # auto | causal-lm | seq-cls (auto: encoders -> seq-cls, else causal-lm)
    zero_grad_set_to_none: bool = True  # False: gradients stay allocated between steps (torch < 2.0 default)
    frozen: str = "none"           # none | trunk: every parameter but the output head frozen (a heads-only fine-tune)
    # 4/8-bit only: peft's prepare_model_for_kbit_training casts every fp16/bf16 parameter that is not a
    # Params4bit / int8 weight to fp32 (peft v0.4.0 .. 0.21.2 src/peft/utils/other.py), so embeddings, norms and
    # head are fp32 and so is the residual stream; False: they stay in `dtype` (fms-acceleration, axolotl, TRL >= 0.26,
    # LLaMA-Factory, a script that never calls it)
    kbit_upcast: bool = True
    # "fp32": DeepSpeed's bf16 / fp16 mode.  The engine casts the parameters to `dtype` (deepspeed 0.19.5
    # runtime/engine.py _configure_distributed_model); the ZeRO optimizer keeps an fp32 copy of the trainable ones
    # (runtime/zero/stage_1_and_2.py single_partition_of_fp32_groups, zero/stage3.py fp32_partitioned_groups_flat),
    # partitioned over the GPUs by ZeRO-1/2/3 and whole at stage 0 (FP16_Optimizer), with fp32 optimizer state; the
    # gradients stay 16-bit until the step copies this rank's partition to fp32.  No autocast, so no cast cache.
    master_weights: str = "none"   # none | fp32
    # encoder-decoder models (T5): the target (label, decoder input) length; None: the same as seq_len, the source
    # (encoder input) length
    target_len: int | None = None
    # multimodal (Qwen2-VL / Qwen2.5-VL): images per sample and their side in pixels (square; the processor rounds it to
    # a multiple of 28), whose visual tokens are part of seq_len; a frozen vision tower (`model.visual.requires_grad_(
    # False)`, `freeze_vision_tower` in training scripts).  Other models ignore them.
    images: int = 1
    image_size: int = 448
    freeze_vision_tower: bool = False
    # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: one growing segment per pool instead of a segment per request
    # (see allocator.py); it changes what is reserved, not what is allocated
    expandable_segments: bool = False
    # "fused": Liger's fused linear cross-entropy computes the loss and the head's gradients in chunks of tokens and never
    # holds the whole logits (`use_liger_kernel=True`, `AutoLigerKernelForCausalLM`, `apply_liger_kernel_to_*`); causal
    # LMs only.  Liger's other kernels (RMSNorm, SwiGLU, RoPE) are not modelled: with them the step holds a little less
    loss: str = "plain"            # plain | fused
    # checkpointing runs torch's reentrant variant (transformers 4's default; `use_reentrant=True`): its first forward
    # runs under no_grad, so what a node keeps outside saved tensors (an 8-bit linear's input on its ctx) is not kept;
    # the rest of the memory is the same as non-reentrant checkpointing's
    reentrant: bool = False

    @property
    def quant_bits(self) -> int:
        """4 or 8 for a bitsandbytes-quantised base (`load_in_4bit` / `load_in_8bit`), 0 otherwise."""
        return 4 if self.load_in_4bit else (8 if self.load_in_8bit else 0)

    @property
    def decoder_len(self) -> int:
        """Tokens per sequence the decoder of an encoder-decoder model runs: ``target_len``, else ``seq_len``."""
        return self.target_len or self.seq_len

    def validate(self) -> TrainingSetup:
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, not {self.dtype!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no|bf16|fp16, not {self.mixed_precision!r}")
        if self.attn not in ATTN:
            raise ValueError(f"attn must be one of {ATTN}, not {self.attn!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.batch_size < 1 or self.seq_len < 1 or self.gpus < 1 or self.gradient_accumulation < 1:
            raise ValueError("batch_size, seq_len, gpus and gradient_accumulation must be >= 1")
        if self.target_len is not None and self.target_len < 1:
            raise ValueError("target_len must be >= 1")
        if self.zero not in (0, 1, 2, 3):
            raise ValueError("zero must be 0, 1, 2 or 3")
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit exclude each other")
        if self.lora_r is not None and self.lora_r < 1:
            raise ValueError("lora_r must be >= 1")
        if self.master_weights not in ("none", "fp32"):
            raise ValueError(f"master_weights must be none|fp32, not {self.master_weights!r}")
        if self.master_weights == "fp32" and (self.dtype == "fp32" or self.mixed_precision != "no"):
            raise ValueError("master_weights='fp32' (DeepSpeed's 16-bit mode) needs 16-bit weights and no autocast")
        if self.frozen not in FROZEN:
            raise ValueError(f"frozen must be one of {FROZEN}, not {self.frozen!r}")
        _every(self.checkpointing)  # raises on a bad plan name
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        if self.loss == "fused" and self.effective_task != "causal-lm":
            raise ValueError(f"a fused linear cross-entropy is for causal language models, not {self.effective_task}")
        if self.images < 0 or self.image_size < 1:
            raise ValueError("images must be >= 0 and image_size >= 1")
        vision = getattr(self.arch, "vision", None)
        if vision is not None and vision.is_qwen and self.images:
            tokens = self.images * vision.image_grid(self.image_size)[2]
            if tokens > self.seq_len:
                raise ValueError(f"{self.images} image(s) of {self.image_size} px are {tokens} visual tokens, more than "
                                 f"the sequence length {self.seq_len}")
        from .arch import attention_refusal

        refusal = attention_refusal(self.arch, self.attn) if hasattr(self.arch, "model_type") else None
        if refusal:  # what transformers refuses to build, the estimate refuses too
            raise ValueError(refusal)
        return self

    @property
    def effective_task(self) -> str:
        if self.task != "auto":
            return self.task
        if self.arch.model_type in ENCODER_TYPES or getattr(self.arch, "family", "") == "bert":
            return "seq-cls"
        return "causal-lm"


def _every(plan: str | None) -> int:
    """0 for no checkpointing, N for every N-th layer (full = 1, offload = 1)."""
    if plan in (None, "none", "no", ""):
        return 0
    if plan in ("full", "offload"):
        return 1
    if isinstance(plan, str) and plan.startswith("every_"):
        try:
            n = int(plan.split("_", 1)[1])
        except ValueError:
            n = 0
        if n >= 1:
            return n
    raise ValueError(f"checkpointing must be none|full|every_N|offload, not {plan!r}")


@dataclass
class MemoryEstimate:
    peak_bytes: int                      # torch.cuda.max_memory_allocated
    peak_bytes_reserved: int             # torch.cuda.max_memory_reserved, on a card with room to spare
    # the card memory the step needs: what nvidia-smi shows on a card that just holds it (the reserved segments the
    # allocator cannot give back, + CUDA context + paged optimizer state); on a larger card it shows up to
    # peak_bytes_reserved + CUDA context
    peak_bytes_nvidia_smi: int
    peak_phase: str
    phases: dict[str, int]
    breakdown: dict[str, int]            # term -> bytes at the peak phase (sums to peak_bytes)
    phase_breakdown: dict[str, dict[str, int]]
    params_total: int
    params_trainable: int
    setup: TrainingSetup
    notes: list[str] = field(default_factory=list)
    cuda_context_bytes: int = CUDA_CONTEXT_BYTES
    allocator_bytes: int = 0             # reserved beyond peak_bytes that the allocator cannot give back

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_bytes": self.peak_bytes,
            "peak_bytes_reserved": self.peak_bytes_reserved,
            "peak_bytes_nvidia_smi": self.peak_bytes_nvidia_smi,
            "peak_phase": self.peak_phase,
            "phases": dict(self.phases),
            "breakdown": dict(self.breakdown),
            "cuda_context_bytes": self.cuda_context_bytes,
            "allocator_bytes": self.allocator_bytes,
            "params": {"total": self.params_total, "trainable": self.params_trainable},
            "notes": list(self.notes),
        }


# =====================================================================================================
# the allocation model


class _T:
    """A tensor: ``numel`` elements of ``b`` bytes; ``own`` bytes of device memory (0 for a view or a
    tensor that lives elsewhere)."""

    __slots__ = ("b", "base", "block", "cat", "dead", "dims", "grad", "held", "leaf", "numel", "own", "pinned", "refs", "rg",
                 "saves")

    def __init__(self, numel: int, b: float, rg: bool, cat: str, own: int | None = None, leaf: bool = False,
                 base: _T | None = None) -> None:
        self.dims: tuple[int, ...] = (numel,)
        self.numel = numel
        self.b = b
        if own is None:  # `_round`, inlined (the walk makes hundreds of thousands of tensors: `estimate --fit` < 1 s)
            own = numel * b
            own = -(-math.ceil(own) // CUDA_BLOCK) * CUDA_BLOCK if own > 0 else 0
        self.own = own
        self.rg = rg
        self.leaf = leaf
        self.refs = 1
        self.saves = 0
        self.grad: _T | None = None
        self.cat = cat
        self.base = base
        self.dead = False
        self.pinned = False  # a gradient autograd cannot sum into in place (a view: see _Sim._give_grad)
        self.held = False  # a leaf a checkpointed function makes: its AccumulateGrad node holds it (_Sim._ckpt_backward)
        self.block: int | None = None  # its allocation's number in _Sim.log


class _Node:
    __slots__ = ("bw_temp", "ins", "made", "outs", "passthrough", "saves", "view_grads")

    def __init__(self, ins, outs, saves, bw_temp, passthrough, view_grads=(), made=None) -> None:
        self.ins = ins
        self.outs = outs
        self.saves = saves
        self.bw_temp = bw_temp
        self.passthrough = passthrough
        self.view_grads = {id(t) for t in view_grads if t is not None}
        self.made: dict[int, _T] = made or {}  # input -> the gradient the forward already made and saved (a fused loss)


class _Ckpt:
    __slots__ = ("fn", "held", "keep", "offload", "out", "x")

    def __init__(self, fn, x, out, offload, keep=(), held=()) -> None:
        self.fn = fn
        self.x = x
        self.out = out
        self.offload = offload
        self.keep = keep
        self.held = held  # what the first forward's nodes hold outside saved tensors, until the block's backward


_OUT = object()  # "save my own output"


class _Sim:
    def __init__(self, reentrant: bool = False) -> None:
        self.reentrant = reentrant  # a checkpointed forward records no graph at all (see checkpoint())
        self.cur = 0
        self.cats: dict[str, int] = {}
        self.phase = "setup"
        self.peaks: dict[str, int] = {}
        self.snaps: dict[str, dict[str, int]] = {}
        self.rec: list | None = []
        self.uses: dict[int, int] = {}  # see backward()
        self.buffered: dict[int, _T | None] = {}
        self.cache: dict[int, _T] | None = None  # autocast weight-cast cache (forward only)
        self.held: list[_T] | None = None  # inside a checkpointed forward: what its nodes hold outside saved tensors
        # every allocation (its bytes) and free (~ the allocation's number), in order, for the caching allocator's replay
        self.log: list[int] = []
        self.allocations = 0

    # -- accounting -------------------------------------------------------------------------------
    def _add(self, t: _T) -> None:
        if t.own:
            t.block = self.allocations
            self.allocations += 1
            self.log.append(t.own)
            self.cur += t.own
            self.cats[t.cat] = self.cats.get(t.cat, 0) + t.own
            if self.cur > self.peaks.get(self.phase, -1):
                self.peaks[self.phase] = self.cur
                self.snaps[self.phase] = dict(self.cats)

    def _sub(self, t: _T) -> None:
        if t.own and not t.dead:
            if t.block is not None:
                self.log.append(~t.block)
                t.block = None
            self.cur -= t.own
            self.cats[t.cat] -= t.own
        t.dead = True

    def recat(self, t: _T, cat: str) -> None:
        if not t.dead and t.own:
            self.cats[t.cat] -= t.own
            self.cats[cat] = self.cats.get(cat, 0) + t.own
        t.cat = cat

    def note(self) -> None:
        if self.cur > self.peaks.get(self.phase, -1):
            self.peaks[self.phase] = self.cur
            self.snaps[self.phase] = dict(self.cats)

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.note()

    # -- tensors ----------------------------------------------------------------------------------
    def new(self, numel: int, b: float, rg: bool = False, cat: str = "activations", own: int | None = None) -> _T:
        t = _T(numel, b, rg, cat, own)
        self._add(t)
        return t

    def param(self, numel: int, b: float, trainable: bool, cat: str, own: int | None = None,
              dims: tuple[int, ...] | None = None) -> _T:
        t = _T(numel, b, trainable, cat, own, leaf=True)
        t.dims = dims or (numel,)
        self._add(t)
        return t

    def view(self, base: _T, numel: int) -> _T:
        base.refs += 1
        return _T(numel, base.b, base.rg, base.cat, own=0, base=base)

    def ref(self, t: _T) -> _T:
        t.refs += 1
        return t

    def _maybe_free(self, t: _T) -> None:
        if t.refs <= 0 and t.saves <= 0 and not t.leaf and not t.dead:
            self._sub(t)
            if t.base is not None:
                self.drop(t.base)

    def drop(self, *ts: _T | None) -> None:
        for t in ts:
            if t is None:
                continue
            t.refs -= 1
            self._maybe_free(t)

    def unsave(self, t: _T) -> None:
        t.saves -= 1
        self._maybe_free(t)

    # -- ops --------------------------------------------------------------------------------------
    def op(self, ins: Iterable[_T | None], numel: int, b: float, saves: Iterable[Any] = (), bw_temp: int = 0,
           cat: str = "activations", passthrough: bool = False, extra_outs: Iterable[_T] = (),
           view_grads: Iterable[_T | None] = (), held: Iterable[_T] = ()) -> _T:
        """``held``: tensors the node keeps as attributes of its ``ctx`` rather than with ``save_for_backward`` (what a
        checkpoint's saved-tensor hooks do not see: they stay alive inside a checkpointed forward too)."""
        ins = [i for i in ins if i is not None]
        rg = any(i.rg for i in ins)
        out = self.new(numel, b, rg, cat)
        if rg and self.rec is None and self.held is not None:
            for t in held:
                t.saves += 1
                self.held.append(t)
        if rg and self.rec is not None:
            sv = [out if s is _OUT else s for s in [*saves, *held] if s is not None]
            for s in sv:
                s.saves += 1
            self.rec.append(_Node(ins, [out, *extra_outs], sv, bw_temp, passthrough, view_grads))
        return out

    def cast(self, x: _T, b: float, cat: str | None = None) -> _T:
        """``x.to(dtype)``: the same tensor when the dtype already matches, else a copy."""
        if x.b == b:
            return self.ref(x)
        return self.op([x], x.numel, b, cat=cat or x.cat)

    def checkpoint(self, fn: Callable[[_T], Any], x: _T, offload: bool = False, keep: Iterable[_T] = ()) -> Any:
        """Non-reentrant checkpoint of ``fn(x)``: nothing inside is saved; ``x`` and the other tensors ``fn`` reads
        (``keep``: the recompute closure holds them) stay alive until its backward recomputes it.  ``fn`` may return
        one tensor or a tuple of them (T5's block returns its hidden states and the position biases it made)."""
        rec, self.rec = self.rec, None
        held, self.held = self.held, (None if self.reentrant else [])  # reentrant: no autograd context to hold them
        out = fn(x)
        self.rec, held, self.held = rec, self.held, held
        outs = out if isinstance(out, tuple) else (out,)
        if any(o is not None and o.rg for o in outs) and rec is not None:
            if not offload:
                x.saves += 1
            keep = tuple(keep)
            for k in keep:
                k.saves += 1
            rec.append(_Ckpt(fn, x, out, offload, keep, tuple(held or ())))
        else:
            for t in held or ():
                self.unsave(t)
        return out

    # -- backward ---------------------------------------------------------------------------------
    def _give_grad(self, t: _T, g: _T, fresh: bool) -> None:
        """Accumulate gradient ``g`` (a fresh allocation, or a shared reference) into ``t``'s buffer.

        autograd's InputBuffer sums in place only into a tensor it holds the last reference to, storage included
        (torch 2.13 torch/csrc/autograd/input_buffer.cpp ``accumulate`` / ``can_accumulate_inplace``).  A linear
        weight's gradient is ``t()`` of the mm output (``TBackward0``), a view: a tied embedding's two gradients
        (lm_head first, then the embedding's) are then summed out of place, and the three [V, h] tensors coexist.
        Checked on a real CPU step without any dispatch mode: out of place in pure fp32/bf16, in place under
        autocast, where the gradient reaching the weight is ``ToCopyBackward0``'s fresh fp32 tensor."""
        if t.grad is None:
            t.grad = g
            return
        key = id(t)
        if key in self.buffered:  # collected in the InputBuffer until the last use; then summed into .grad
            self.uses[key] -= 1
            held = self.buffered[key]
            if held is not None:
                if held.refs == 1 and not held.pinned:
                    self.drop(g)
                else:
                    summed = self.new(t.numel, t.b, cat=held.cat)
                    self.drop(held, g)
                    held = summed
                g = held
            if self.uses[key] > 0:
                self.buffered[key] = g
                return
            del self.buffered[key]
        old = t.grad
        if old.refs == 1 and not old.pinned:
            self.drop(g)  # added in place into our buffer; the incoming one is released
            return
        new = self.new(t.numel, t.b, cat=old.cat)  # our buffer is shared: out-of-place sum
        self.drop(old, g)
        t.grad = new

    def backward(self, nodes: list) -> None:
        # a leaf that already holds a gradient (the previous micro-step's) and takes part in several ops of `nodes`
        # (a tied embedding: the head and the lookup): its AccumulateGrad node runs once every use has given its
        # gradient, which its InputBuffer holds (and sums) until then (torch 2.13 torch/csrc/autograd/engine.cpp)
        uses: dict[int, int] = {}
        for nd in nodes:
            if isinstance(nd, _Node):
                for i in nd.ins:
                    if i.leaf and i.rg and i.grad is not None:
                        uses[id(i)] = uses.get(id(i), 0) + 1
        outer = self.uses, self.buffered  # a checkpointed block's backward runs inside this one
        self.uses, self.buffered = uses, {k: None for k, n in uses.items() if n > 1}
        self._backward(nodes)
        self.uses, self.buffered = outer

    def _backward(self, nodes: list) -> None:
        for nd in reversed(nodes):
            if isinstance(nd, _Ckpt):
                self._ckpt_backward(nd)
                continue
            if not any(o.grad is not None for o in nd.outs):
                for s in nd.saves:
                    self.unsave(s)
                continue
            gout = nd.outs[0].grad
            temp = self.new(1, nd.bw_temp, cat="temporaries") if nd.bw_temp else None
            for i in nd.ins:
                if not i.rg:
                    continue
                # a gradient counts where its tensor does: the logits' and the loss' gradients are the loss' memory
                cat = "gradients" if i.leaf else ("logits_and_loss" if i.cat == "logits_and_loss" else "temporaries")
                made = nd.made.get(id(i))
                if made is not None:
                    self.recat(made, cat)
                    made.refs += 1
                    self._give_grad(i, made, fresh=False)
                elif nd.passthrough and gout is not None and i.b == nd.outs[0].b and i.numel == nd.outs[0].numel:
                    gout.refs += 1
                    self._give_grad(i, gout, fresh=False)
                else:
                    g = self.new(i.numel, i.b, cat=cat)
                    g.pinned = id(i) in nd.view_grads
                    self._give_grad(i, g, fresh=True)
            self.drop(temp)
            for o in nd.outs:
                if o.grad is not None:
                    g, o.grad = o.grad, None
                    self.drop(g)
            for s in nd.saves:
                self.unsave(s)

    def _ckpt_backward(self, nd: _Ckpt) -> None:
        x = nd.x
        if nd.offload:  # bring the saved input back from the host
            x = self.new(nd.x.numel, nd.x.b, nd.x.rg, cat="activations")
        sub: list = []
        rec, self.rec = self.rec, sub
        cache, self.cache = self.cache, None
        out2 = nd.fn(x)
        self.rec, self.cache = rec, cache
        pairs = zip(out2, nd.out) if isinstance(out2, tuple) else ((out2, nd.out),)
        held = []
        for o2, o in pairs:
            if o2 is None:
                continue
            if o.held:  # a leaf: it keeps the gradient the later blocks gave it; the copy gets its own
                held.append((o2, o))
                continue
            o2.grad, o.grad = o.grad, None
            self.drop(o2)
        self.backward(sub)
        for o2, o in held:  # its AccumulateGrad node runs once this block's backward is done: leaf and gradient go
            self.drop(o2)
            if o.grad is not None:
                g, o.grad = o.grad, None
                self.drop(g)
            self.unsave(o)
        for k in (*nd.keep, *nd.held):
            self.unsave(k)
        if nd.offload:
            if x.grad is not None:
                nd.x.grad, x.grad = x.grad, None
            self.drop(x)
        else:
            self.unsave(nd.x)


# =====================================================================================================
# the programs


class _Ctx:
    """Everything a layer program needs to know about the setup, precomputed."""

    def __init__(self, setup: TrainingSetup) -> None:
        a = setup.arch
        self.setup = setup
        self.arch = a
        self.b, self.s = setup.batch_size, setup.seq_len
        self.N = self.b * self.s
        self.h = a.hidden_size
        self.nq = a.num_attention_heads
        self.nkv = a.num_kv_heads or a.num_attention_heads
        self.d = a.head_dim or (self.h // self.nq)
        self.I = a.intermediate_size
        self.V = a.vocab_size
        self.L = a.num_layers
        self.family = getattr(a, "family", "llama")
        self.mixed = setup.mixed_precision != "no"
        self.quant = setup.quant_bits
        self.compute = DTYPE_BYTES[setup.dtype] if setup.dtype != "fp32" or not self.quant else 2
        # bytes of trainable/dense weights
        self.wb = 4 if self.mixed else DTYPE_BYTES[setup.dtype]
        # bytes of matmul outputs
        self.ab = 2 if self.mixed else self.wb
        # prepare_model_for_kbit_training upcasts the non-quantised parameters to fp32 (TrainingSetup.kbit_upcast)
        self.other_wb = 4 if self.quant and setup.kbit_upcast else self.wb
        self.lora = bool(setup.lora_r)
        # PEFT autocast_adapter_dtype=True keeps adapters in fp32; DeepSpeed's 16-bit engine casts every parameter,
        # adapters included, to its dtype (deepspeed 0.19.5 runtime/engine.py _cast_module_mixed_precision)
        self.adapter_b = DTYPE_BYTES[setup.dtype] if setup.master_weights == "fp32" else 4
        self.r = setup.lora_r or 0
        # a frozen trunk trains only the output head (`HEADS`); with a tied head nothing but adapters would train
        self.frozen_trunk = setup.frozen == "trunk"
        self.full = not self.lora and not self.quant and not self.frozen_trunk
        self.ckpt_every = _every(setup.checkpointing)
        self.offload = setup.checkpointing == "offload"
        self.attn = "sdpa" if setup.attn == "flash" else setup.attn
        cfg = a.hf_config or {}
        self.cfg = cfg
        self.act = str(getattr(a, "hidden_act", None) or cfg.get("hidden_act") or cfg.get("activation_function")
                       or "silu")
        self.targets = self._targets()
        self.task = setup.effective_task
        # transformers 5.25 builds the rotated query with torch.cat for these model types (models/phi3/modeling_phi3.py
        # and models/gpt_neox/modeling_gpt_neox.py apply_rotary_pos_emb: ``torch.cat([rotated, q_pass], dim=-1)``;
        # models/phi/modeling_phi.py PhiAttention.forward: ``torch.cat((query_rot, query_pass), dim=-1)``), so the
        # query is contiguous as [b, heads, s, d], not a transposed [b, s, heads, d] projection.  SDPA's output takes the
        # query's layout (CUDA flash ``mha_fwd``: ``empty_like(q)``; the CPU flash kernel alike), and
        # integrations/sdpa_attention.py ``attn_output.transpose(1, 2).contiguous()`` then copies it: one more
        # [N, heads * d] tensor per layer, the one the output projection keeps.
        self.sdpa_out_copy = a.model_type in ("phi3", "gpt_neox", "phi")
        self.sliding = self._sliding_layers()

    def _sliding_layers(self) -> list[bool]:
        """Per decoder layer: attends through a sliding window (transformers 5.25 config classes: ``layer_types``;
        Gemma 2 every other layer from the first (configuration_gemma2.py), Gemma 3 all but every
        ``sliding_window_pattern``-th (configuration_gemma3.py, default 6), Qwen2 only with ``use_sliding_window``
        (configuration_qwen2.py), Mistral / Phi-3 every layer when ``sliding_window`` is set (MistralConfig default
        4096))."""
        a, L = self.arch, self.L
        text = a.text_config if hasattr(a, "text_config") else self.cfg
        mt = a.model_type
        if mt not in ("mistral", "mixtral", "phi3", "qwen2", "qwen3", "qwen3_moe", "gemma2", "gemma3_text", "gemma3",
                      "gpt_oss"):
            return [False] * L
        window = text.get("sliding_window", 4096 if mt == "mistral" else (4096 if mt == "gemma2" else None))
        if mt == "gpt_oss" and "sliding_window" not in text:
            window = 128  # GptOssConfig default
        if mt in ("gemma3_text", "gemma3") and "sliding_window" not in text:
            window = 512  # Gemma3TextConfig default (transformers 5.25 configuration_gemma3.py)
        if not window:
            return [False] * L
        types = text.get("layer_types")
        if isinstance(types, list) and len(types) >= L:
            return [t == "sliding_attention" for t in types[:L]]
        if mt == "gemma2":
            return [bool((i + 1) % 2) for i in range(L)]
        if mt in ("gemma3_text", "gemma3"):
            pat = int(text.get("sliding_window_pattern", 6) or 6)
            return [bool((i + 1) % pat) for i in range(L)]
        if mt == "gpt_oss":  # GptOssConfig without layer_types: sliding, full, sliding, ...
            return [not bool(i % 2) for i in range(L)]
        if mt in ("qwen2", "qwen3", "qwen3_moe"):
            if not text.get("use_sliding_window", False):
                return [False] * L
            start = int(text.get("max_window_layers", L) or L)
            return [i >= start for i in range(L)]
        return [True] * L

    @property
    def window(self) -> int | None:
        a = self.arch
        text = a.text_config if hasattr(a, "text_config") else self.cfg
        mt = a.model_type
        dflt = 4096 if mt in ("mistral", "gemma2") else (512 if mt in ("gemma3_text", "gemma3") else None)
        return text.get("sliding_window", dflt)

    def _targets(self) -> tuple[str, ...]:
        if not self.lora:
            return ()
        if self.setup.lora_targets:
            return tuple(self.setup.lora_targets)
        try:
            from .params import default_lora_targets

            return tuple(default_lora_targets(self.arch))
        except Exception:  # noqa: BLE001
            return ("q_proj", "v_proj")

    def is_target(self, name: str, path: str = "") -> bool:
        if not self.lora:
            return False
        if self.targets == ("all-linear",):
            return True
        full = "." + (path or name)
        return any(t == name or full.endswith("." + t) for t in self.targets)

    def softcap(self, key: str) -> float | None:
        """Gemma 2's tanh soft-capping (``attn_logit_softcapping``, ``final_logit_softcapping``; Gemma2Config defaults
        50.0 and 30.0 in transformers 5.25 models/gemma2/configuration_gemma2.py), None when off."""
        a = self.arch
        text = a.text_config if hasattr(a, "text_config") else self.cfg
        if key in text:
            v = text.get(key)
        else:
            v = {"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}.get(key) \
                if a.model_type == "gemma2" else None
        return float(v) if v else None

    def drop_p(self, *keys: str, default: float = 0.0) -> float:
        for k in keys:
            v = self.cfg.get(k)
            if v is not None:
                return float(v)
        return default


class _Linear:
    """A linear layer's parameters (+ LoRA adapters)."""

    def __init__(self, sim: _Sim, ctx: _Ctx, name: str, fin: int, fout: int, bias: bool, path: str = "",
                 count: int = 1, quantizable: bool = True, dense_weight: bool = False) -> None:
        self.fin, self.fout, self.count = fin, fout, count
        lora = ctx.is_target(name, path) and count == 1
        quant = ctx.quant if (quantizable and not dense_weight) else 0
        trainable = ctx.full
        numel = fin * fout * count
        if quant == 4:
            own = _round(numel * NF4_BYTES_PER_PARAM)
            self.W = sim.param(numel, 0.5, False, "weights", own=own)
        elif quant == 8:
            own = _round(numel * INT8_BYTES_PER_PARAM) + _round(4 * fout * count)
            self.W = sim.param(numel, 1, False, "weights", own=own)
        else:
            wb = ctx.other_wb if dense_weight else ctx.wb
            self.W = sim.param(numel, wb, trainable, "master_weights" if ctx.mixed else "weights",
                               dims=(fout * count, fin))
        self.quant = quant
        self.B = (sim.param(fout * count, ctx.other_wb if quant else ctx.wb, trainable,
                            "master_weights" if ctx.mixed else "weights") if bias else None)
        self.lA = self.lB = None
        if lora:
            lb = ctx.adapter_b
            self.lA = sim.param(ctx.r * fin, lb, True, "master_weights" if ctx.mixed else "weights", dims=(ctx.r, fin))
            self.lB = sim.param(fout * ctx.r, lb, True, "master_weights" if ctx.mixed else "weights", dims=(fout, ctx.r))

    def params(self) -> list[_T]:
        return [p for p in (self.W, self.B, self.lA, self.lB) if p is not None]


class _Model:
    """Builds the parameters of a model and runs its forward program on a _Sim."""

    def __init__(self, sim: _Sim, ctx: _Ctx) -> None:
        self.sim, self.ctx = sim, ctx
        self.params: list[_T] = []
        self.max_param = 0

    # -- parameter helpers ------------------------------------------------------------------------
    def _track(self, ps: Iterable[_T]) -> None:
        for p in ps:
            self.params.append(p)
            self.max_param = max(self.max_param, p.numel)

    def lm_head_and_loss(self, xn: _T) -> _T:
        """Logits from the final hidden states (a tied head reuses the embedding), then the loss;
        the model output and its logits are dropped once `.loss` is read."""
        sim, c = self.sim, self.ctx
        if self.head is None:
            head = _Linear.__new__(_Linear)
            head.fin, head.fout, head.count, head.quant = c.h, c.V, 1, 0
            head.W, head.B, head.lA, head.lB = self.emb, None, None, None
        else:
            head = self.head
        if c.setup.loss == "fused":
            return self.fused_linear_cross_entropy(xn, head.W)
        logits = self.linear(xn, head)
        sim.recat(logits, "logits_and_loss")
        sim.drop(xn)
        if c.softcap("final_logit_softcapping"):
            # Gemma2ForCausalLM.forward (transformers 5.25 models/gemma2/modeling_gemma2.py): logits / cap, tanh, * cap;
            # tanh keeps its output for backward
            logits = self.softcapped(logits, "logits_and_loss")
        loss = self.causal_lm_loss(logits)
        sim.drop(logits)
        return loss

    def fused_linear_cross_entropy(self, xn: _T, w: _T) -> _T:
        """Liger's fused linear cross-entropy over the final hidden states ``xn`` and the head's weight ``w``, as the
        trace runs it (trace.py ``_fused_linear_cross_entropy``, from liger-kernel ead96b6 ops/
        fused_linear_cross_entropy.py and transformers/model/loss_utils.py): the shifted labels, the gradient buffers
        and one chunk of logits at a time; the loop's locals live on into the next chunk.  Only the gradients are kept
        for backward, which hands them on as they are."""
        sim, c = self.sim, self.ctx
        cat = "logits_and_loss"
        labels = sim.new(c.b * (c.s + 1), 8, cat=cat)  # pad(labels, (0, 1), value=ignore_index)
        target = sim.new(c.N, 8, cat=cat)  # labels[..., 1:].contiguous()
        sim.drop(labels)
        rec, sim.rec = sim.rec, None  # an autograd.Function: its forward records nothing
        grad_input = sim.new(c.N * c.h, xn.b, cat=cat)  # zeros_like(_input)
        grad_weight = sim.new(w.numel, w.b, cat=cat) if w.rg else None  # zeros_like(weight), when the head trains
        loss_1d = sim.new(c.N, 4, cat=cat)
        mask = sim.new(c.N, 1, cat=cat)  # target != ignore_index
        sim.drop(sim.new(1, 8, cat=cat))  # target_mask.sum()
        low = 2 if c.mixed else w.b  # the matmuls' dtype: autocast's, else the weight's
        chunk = 1 << max(0, (-(-c.N // -(-c.V // c.h)) - 1).bit_length())  # next_power_of_2(cdiv(BT, cdiv(V, H)))
        logits = cast_in = None
        for start in range(0, c.N, chunk):
            rows = min(chunk, c.N - start)
            wt = sim.new(w.numel, low, cat="temporaries") if w.b != low else None  # weight.t(): a view, never cached
            new = sim.new(rows * c.V, low, cat=cat)  # _input_chunk @ weight.t()
            sim.drop(wt, logits)
            logits = new
            wc, own = self.wcast(w) if w.b != low else (w, False)  # grad_logits_chunk @ weight, into grad_input
            sim.drop(sim.new(rows * c.h, low, cat="temporaries"))
            if own:
                sim.drop(wc)
            if grad_weight is None:
                continue
            if grad_weight.b == 4 and low == 2:  # addmm(out_dtype=fp32, out=grad_weight): the input chunk in 16 bits
                new = sim.new(rows * c.h, low, cat="temporaries") if xn.b != low else None
                sim.drop(cast_in)
                cast_in = new
            else:  # grad_weight += mm(grad_logits_chunk.t(), _input_chunk).float()
                mm = sim.new(w.numel, low, cat="temporaries")
                sim.drop(sim.new(w.numel, 4, cat="temporaries") if low != 4 else None, mm)
        loss = sim.new(1, 4, cat=cat)  # torch.sum(loss_1d)
        sim.drop(logits, cast_in, loss_1d, mask)
        sim.rec = rec
        loss.rg = xn.rg or w.rg
        made = {id(xn): grad_input, **({id(w): grad_weight} if grad_weight is not None else {})}
        saved = [t for t in (grad_input, grad_weight) if t is not None]
        if loss.rg and rec is not None:
            for t in saved:
                t.saves += 1
            rec.append(_Node([xn, w], [loss], saved, 4, False, made=made))  # backward: torch.tensor(1.0)
        sim.drop(*saved, target)
        sim.drop(xn)
        return loss

    def linear_p(self, name: str, fin: int, fout: int, bias: bool, path: str = "", **kw) -> _Linear:
        lin = _Linear(self.sim, self.ctx, name, fin, fout, bias, path, **kw)
        if self.ctx.frozen_trunk and name in HEADS:
            for p in lin.params():
                p.rg = True
        self._track(lin.params())
        return lin

    def vec_p(self, n: int) -> _T:
        c = self.ctx
        p = self.sim.param(n, c.other_wb, c.full, "master_weights" if c.mixed else "weights")
        self._track([p])
        return p

    def table_p(self, rows: int, cols: int) -> _T:
        c = self.ctx
        p = self.sim.param(rows * cols, c.other_wb, c.full, "master_weights" if c.mixed else "weights",
                           dims=(rows, cols))
        self._track([p])
        return p

    # -- op helpers -------------------------------------------------------------------------------
    def softcapped(self, x: _T, cat: str = "activations") -> _T:
        """``tanh(x / cap) * cap``: three tensors of x's size, the tanh output saved; ``x`` is consumed."""
        sim = self.sim
        d = sim.op([x], x.numel, x.b, cat=cat)
        sim.drop(x)
        t = sim.op([d], x.numel, x.b, saves=[_OUT], cat=cat)
        sim.drop(d)
        out = sim.op([t], x.numel, x.b, cat=cat)
        sim.drop(t)
        return out

    def wcast(self, w: _T) -> tuple[_T, bool]:
        """Autocast's copy of a weight in half precision: cached (and returned without a new reference)
        for trainable leaves during forward, a fresh temporary otherwise."""
        sim = self.sim
        if w.b == 2:
            return w, False
        if w.rg and sim.cache is not None:
            hit = sim.cache.get(id(w))
            if hit is None:
                hit = sim.op([w], w.numel, 2, cat="weights")
                sim.cache[id(w)] = hit
            return hit, False
        return sim.op([w], w.numel, 2, cat="weights"), True

    def linear(self, x: _T, lin: _Linear, rows: int | None = None) -> _T:
        sim, c = self.sim, self.ctx
        rows = c.N if rows is None else rows
        owned: list[_T] = []
        if lin.quant == 8:
            out = self.int8_linear(x, lin, rows)
        elif lin.quant == 4:
            xin = sim.cast(x, c.compute) if x.b != c.compute else sim.ref(x)
            owned.append(xin)
            deq = lin.fin * lin.fout * 2
            tmp = sim.new(1, deq, cat="temporaries")  # dequantised weight during the matmul
            out = sim.op([xin, lin.B], rows * lin.fout, c.compute, saves=(), bw_temp=_round(deq))
            sim.drop(tmp)
            if x.b != c.compute:  # bitsandbytes Linear4bit.forward: `.to(inp_dtype)` (trace_bnb.py)
                back = sim.cast(out, x.b)
                sim.drop(out)
                out = back
        elif c.mixed:
            xin = sim.cast(x, 2)
            owned.append(xin)
            wc, own_w = self.wcast(lin.W)
            if own_w:
                owned.append(wc)
            bc = None
            if lin.B is not None:
                bc, own_b = self.wcast(lin.B)
                if own_b:
                    owned.append(bc)
            out = sim.op([xin, wc, bc], rows * lin.fout, 2,
                         saves=[xin if wc.rg else None, wc if xin.rg else None])
        else:
            # F.linear's weight gradient arrives as TBackward0's view of the mm output
            out = sim.op([x, lin.W, lin.B], rows * lin.fout, x.b,
                         saves=[x if lin.W.rg else None, lin.W if x.rg else None], view_grads=[lin.W])
        sim.drop(*owned)
        if lin.lA is not None:
            out = self.lora(x, out, lin, rows)
        return out

    def int8_linear(self, x: _T, lin: _Linear, rows: int) -> _T:
        """bitsandbytes' ``MatMul8bitLt`` over a frozen int8 weight (trace_bnb.py, bitsandbytes 95f9af3): the input is
        quantised row-wise through an fp16 copy (with an ``abs() >= threshold`` outlier mask), the int32 product is
        dequantised to fp16 and cast to the input's dtype; it keeps its input, and its backward dequantises the
        weight in the input's dtype (plus the fp32 row scales) for ``grad_output @ CB``."""
        sim = self.sim
        fp16 = self.fp16_stream(x)
        a16 = sim.ref(x) if fp16 else sim.new(x.numel, 2, cat="temporaries")  # A.to(torch.float16)
        quantised = [sim.new(rows, 4, cat="temporaries"), sim.new(x.numel, 1, cat="temporaries")]  # row stats, CA
        mask = [sim.new(x.numel, 2, cat="temporaries"), sim.new(x.numel, 1, cat="temporaries")]  # abs(), >= threshold
        sim.drop(*mask, a16)
        product = [sim.new(rows * lin.fout, 4, cat="temporaries")]  # int8_linear_matmul's int32 output
        if not fp16:
            product.append(sim.new(rows * lin.fout, 2, cat="temporaries"))  # int8_mm_dequant's fp16, then .to(A.dtype)
        # `ctx.tensors = (CAt, subA, A)`: an attribute, not `save_for_backward`, so a checkpointed block keeps it too
        out = sim.op([x, lin.B], rows * lin.fout, x.b, held=[x],
                     bw_temp=_round(lin.fin * lin.fout * x.b) + _round(4 * lin.fout))
        sim.drop(*product, *quantised)
        return out

    def fp16_stream(self, x: _T) -> bool:
        """Whether ``x`` is fp16 (2 bytes in an fp16 run: bf16 is 2 bytes too, and ``.to(torch.float16)`` copies it)."""
        return x.b == 2 and self.ctx.setup.dtype == "fp16"

    def lora(self, x: _T, result: _T, lin: _Linear, rows: int) -> _T:
        sim, c = self.sim, self.ctx
        if lin.quant == 4:  # peft lora.bnb.Linear4bit.forward: `result = result.clone()` (trace_bnb.py)
            copy = sim.op([result], result.numel, result.b, passthrough=True)  # CloneBackward0 hands the gradient on
            sim.drop(result)
            result = copy
        xl = sim.cast(x, c.adapter_b) if not c.mixed else sim.ref(x)  # PEFT _cast_input_dtype to the adapter dtype
        la = _Linear.__new__(_Linear)
        la.fin, la.fout, la.count, la.quant, la.W, la.B, la.lA, la.lB = lin.fin, c.r, 1, 0, lin.lA, None, None, None
        lb = _Linear.__new__(_Linear)
        lb.fin, lb.fout, lb.count, lb.quant, lb.W, lb.B, lb.lA, lb.lB = c.r, lin.fout, 1, 0, lin.lB, None, None, None
        a = self.linear(xl, la, rows)
        sim.drop(xl)
        bo = self.linear(a, lb, rows)
        sim.drop(a)
        sc = sim.op([bo], bo.numel, bo.b)  # * scaling
        sim.drop(bo)
        res = sim.op([result, sc], result.numel, max(result.b, sc.b), passthrough=True)
        sim.drop(result, sc)
        out = sim.cast(res, result.b)
        sim.drop(res)
        return out

    def input_requires_grad(self, x: _T) -> None:
        """`enable_input_require_grads`' hook: the input embeddings' output made a leaf that requires grad; its
        AccumulateGrad node holds it (and then its .grad) until the backward reaches it."""
        if not x.rg:
            x.rg = True
            if self.sim.rec is not None:
                x.saves += 1
                self.sim.rec.append(_Node([], [x], [x], 0, False))

    def split(self, base: _T, sizes: Iterable[int]) -> list[_T]:
        """Views of ``base`` (``qkv.split``); their backward concatenates the gradients into a new one."""
        sim = self.sim
        views = [sim.view(base, n) for n in sizes]
        if base.rg and sim.rec is not None:
            sim.rec.append(_Node([base], views, [], 0, False))
        return views

    def add(self, x: _T, y: _T) -> _T:
        return self.sim.op([x, y], max(x.numel, y.numel), max(x.b, y.b), passthrough=True)

    def dropout(self, x: _T, p: float) -> _T:
        sim = self.sim
        if p <= 0:
            return sim.ref(x)
        mask = sim.new(x.numel, 1)  # CUDA native_dropout keeps a bool mask
        out = sim.op([x], x.numel, x.b, saves=[mask], extra_outs=[mask])
        sim.drop(mask)
        return out

    def rmsnorm(self, x: _T, w: _T | None, width: int | None = None, gemma: bool = False,
                weight_first: bool = False) -> _T:
        """transformers' LlamaRMSNorm (x.float(), pow, mean, rsqrt, mul, .to(dtype), * weight).

        ``weight_first``: OLMo 2's and gpt-oss's RMSNorm (models/olmo2/modeling_olmo2.py Olmo2RMSNorm,
        models/gpt_oss/modeling_gpt_oss.py GptOssRMSNorm: ``(self.weight * hidden_states).to(input_dtype)``) multiplies
        the weight into the fp32 normed tensor, so the weight's gradient keeps that fp32 tensor and the product is fp32
        before its cast back."""
        sim, c = self.sim, self.ctx
        width = width or c.h
        rows = x.numel // width
        x32 = sim.cast(x, 4)
        sq = sim.op([x32], x32.numel, 4, saves=[x32])
        var = sim.op([sq], rows, 4)
        sim.drop(sq)
        ve = sim.op([var], rows, 4)
        sim.drop(var)
        r = sim.op([ve], rows, 4, saves=[_OUT])
        sim.drop(ve)
        y = sim.op([x32, r], x32.numel, 4, saves=[x32 if r.rg else None, r if x32.rg else None])
        sim.drop(x32, r)
        if w is None:
            out = sim.cast(y, x.b)
            sim.drop(y)
            return out
        if weight_first:
            z = sim.op([w, y], y.numel, max(w.b, y.b), saves=[y if w.rg else None, w if y.rg else None])
            sim.drop(y)
            out = sim.cast(z, x.b)
            sim.drop(z)
            return out
        if gemma:  # output * (1 + weight.float()), then .type_as(x)
            w1 = sim.op([w], w.numel, 4)
            z = sim.op([y, w1], y.numel, 4, saves=[y if w1.rg else None])
            sim.drop(y, w1)
            out = sim.cast(z, x.b)
            sim.drop(z)
            return out
        yc = sim.cast(y, x.b)
        sim.drop(y)
        out = sim.op([w, yc], yc.numel, max(w.b, yc.b), saves=[yc if w.rg else None, w if yc.rg else None])
        sim.drop(yc)
        return out

    def layernorm(self, x: _T, w: _T | None, bias: _T | None, width: int | None = None) -> _T:
        sim, c = self.sim, self.ctx
        xin = sim.cast(x, 4) if c.mixed else sim.ref(x)  # CUDA autocast runs layer_norm in fp32
        rows = x.numel // (width or c.h)
        mean = sim.new(rows, 4)
        rstd = sim.new(rows, 4)
        out = sim.op([xin, w, bias], xin.numel, xin.b, saves=[xin, mean, rstd], extra_outs=[mean, rstd])
        sim.drop(mean, rstd, xin)
        return out

    def norm(self, x: _T, w: _T | None, bias: _T | None = None, width: int | None = None) -> _T:
        if getattr(self.ctx.arch, "norm_type", "rmsnorm") == "layernorm":
            return self.layernorm(x, w, bias)
        mt = self.ctx.arch.model_type
        return self.rmsnorm(x, w, width, gemma=mt.startswith("gemma"), weight_first=mt in _WEIGHT_FIRST_RMSNORM)

    def activation(self, x: _T, name: str) -> _T:
        """Elementwise activation of an MLP, as transformers' ACT2FN runs it."""
        sim, c = self.sim, self.ctx
        name = (name or "silu").lower()
        if name == "gelu_new" or name == "gelu_fast" or name == "gelu_python_tanh":
            # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * pow(x, 3)))) in Python
            xp = sim.cast(x, 4) if c.mixed else sim.ref(x)  # autocast runs pow in fp32
            p3 = sim.op([xp], x.numel, xp.b, saves=[xp])
            sim.drop(xp)
            m1 = sim.op([p3], x.numel, p3.b)
            sim.drop(p3)
            a1 = sim.op([x, m1], x.numel, max(x.b, m1.b), passthrough=True)
            sim.drop(m1)
            m2 = sim.op([a1], x.numel, a1.b)
            sim.drop(a1)
            th = sim.op([m2], x.numel, m2.b, saves=[_OUT])
            sim.drop(m2)
            o1 = sim.op([th], x.numel, th.b)
            sim.drop(th)
            hf = sim.op([x], x.numel, x.b)
            out = sim.op([hf, o1], x.numel, max(hf.b, o1.b), saves=[hf, o1])
            sim.drop(hf, o1)
            return out
        if name in ("relu",):
            return sim.op([x], x.numel, x.b, saves=[_OUT])
        # silu, gelu, gelu_pytorch_tanh, ...: one fused kernel that keeps its input
        return sim.op([x], x.numel, x.b, saves=[x])

    def softmax(self, x: _T, b: float) -> _T:
        """softmax(x, dtype=...): the input is converted first (a copy), the output is kept for backward.
        (CUDA fuses fp16->fp32 into the kernel and skips the copy; the trace, like bf16 on CUDA, copies.)"""
        sim = self.sim
        xc = sim.cast(x, b)
        p = sim.op([xc], x.numel, b, saves=[_OUT])
        sim.drop(xc)
        return p

    def rope(self, x: _T, cos: _T, sin: _T) -> _T:
        """q * cos + rotate_half(q) * sin (promotes to the dtype of cos)."""
        sim = self.sim
        b = max(x.b, cos.b)
        t1 = sim.op([x, cos], x.numel, b, saves=[cos])
        neg = sim.new(x.numel // 2, x.b)
        rh = sim.op([x], x.numel, x.b)
        sim.drop(neg)
        t2 = sim.op([rh, sin], x.numel, b, saves=[sin])
        sim.drop(rh)
        out = sim.op([t1, t2], x.numel, b, passthrough=True)
        sim.drop(t1, t2)
        return out

    def attend(self, q: _T, k: _T, v: _T, o_proj: _Linear, sdpa_mask: _T | None = None) -> tuple[_T, _T | None]:
        """Attention (the family's eager program, or SDPA) and its output projection, dropping q, k, v:
        the projected output, and the eager attention weights the block keeps to its end (None for SDPA)."""
        sim, c = self.sim, self.ctx
        aw = None
        if c.attn == "eager":
            o, aw = self.eager(q, k, v)
        else:
            o = self.sdpa(q, k, v, c.nq, sdpa_mask)
        sim.drop(q, k, v)
        ao = self.linear(o, o_proj)
        sim.drop(o)
        return ao, aw

    def sdpa(self, q: _T, k: _T, v: _T, heads: int, mask: _T | None = None) -> _T:
        """Flash / memory-efficient SDPA: keeps q, k, v, the output and the fp32 log-sum-exp only (and an explicit
        mask, converted to the query's dtype)."""
        sim, c = self.sim, self.ctx
        owned = []
        if c.mixed:
            q, k, v = (sim.cast(t, 2) for t in (q, k, v))
            owned = [q, k, v]
        lse = sim.new(c.b * heads * c.s, 4)
        bias = None
        if mask is not None:
            # torch's scaled_dot_product_attention turns a boolean mask into an additive one in the query's dtype
            # (aten/src/ATen/native/transformers/attention.cpp convert_boolean_attn_mask: at::where), which the
            # kernel keeps for its backward (the memory-efficient kernel's attn_bias; CPU flash alike)
            bias = sim.new(c.b * c.s * c.s, q.b)
        out = sim.op([q, k, v], c.N * heads * c.d, q.b, saves=[q, k, v, _OUT, lse, bias], extra_outs=[lse])
        sim.drop(lse, bias, *owned)
        if c.sdpa_out_copy:  # the output has the query's [b, heads, s, d] layout: transpose(1, 2).contiguous() copies
            oc = sim.op([out], out.numel, out.b)
            sim.drop(out)
            out = oc
        return out

    # -- whole model ------------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def forward(self) -> _T:
        raise NotImplementedError

    # transformers' _set_gradient_checkpointing counts every GradientCheckpointingLayer of the model in module order
    # (modeling_utils.py: ``layer_index % every_n_layers``): a vision tower's blocks come before the decoder layers
    layer_offset = 0

    def layers(self, x: _T) -> _T:
        c = self.ctx
        for i, layer in enumerate(self.blocks):
            fn = (lambda h, layer=layer: self.block(h, layer))
            if c.ckpt_every and (i + self.layer_offset) % c.ckpt_every == 0:
                out = self.sim.checkpoint(fn, x, offload=c.offload)
            else:
                out = fn(x)
            self.sim.drop(x)
            x = out
        return x

    def causal_lm_loss(self, logits: _T) -> _T:
        sim, c = self.sim, self.ctx
        lf = sim.cast(logits, 4, cat="logits_and_loss")  # ForCausalLMLoss: logits.float()
        labels = sim.new(c.b * (c.s + 1), 8, cat="logits_and_loss")  # pad(labels, (0, 1))
        target = sim.new(c.N, 8, cat="logits_and_loss")  # shifted labels, contiguous
        sim.drop(labels)
        lsm = sim.op([lf], c.N * c.V, 4, saves=[_OUT], cat="logits_and_loss")
        sim.drop(lf)
        loss = sim.op([lsm], 1, 4, saves=[target], cat="logits_and_loss")
        sim.drop(lsm, target)
        return loss


# transformers 5.25: Qwen3MoeTopKRouter.forward casts the top-k routing weights to the router logits' dtype
# (``router_top_value.to(router_logits.dtype)``); MixtralTopKRouter.forward keeps them in fp32, so Mixtral's
# ``proj_out * sample_weights_g`` is an fp32 [S, h] tensor.
_MOE_ROUTING_WEIGHTS_TO_LOGITS_DTYPE = {"qwen3_moe": True, "mixtral": False}

# RMSNorm computing ``(weight * hidden_states.float()).to(input_dtype)`` (see _Model.rmsnorm)
_WEIGHT_FIRST_RMSNORM = frozenset({"olmo2", "gpt_oss"})

_ALIAS = {"router": "gate", "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "wi_0": "gate_proj", "wi_1": "up_proj",
          "wi": "gate_proj", "wo": "down_proj"}


class _LlamaModel(_Model):
    """Llama, Mistral, Mixtral, Qwen2/3, Gemma 1/2/3, Phi-3 (RMSNorm, RoPE, gated MLP)."""

    def build(self) -> None:
        c, a = self.ctx, self.ctx.arch
        self.emb = self.table_p(c.V, c.h)
        stacks = a.stacks() if hasattr(a, "stacks") else ()
        specs = {s.name: s for s in (stacks[0].linears if stacks else ())}
        self.fused_qkv = "qkv_proj" in specs
        self.n_norms = len(stacks[0].norms) if stacks else 2
        self.blocks = []
        text_stacks = [st for st in stacks if st.name != "vision"]
        for st in text_stacks:  # T5: its encoder then its decoder blocks, as one stack (approximate)
            for _ in range(st.num_layers):
                lay: dict[str, Any] = {}
                for sp in st.linears:
                    key = _ALIAS.get(sp.name, sp.name)
                    if key in lay:  # T5 decoder cross-attention: counted, not run
                        key = "x_" + key
                    lay[key] = self.linear_p(sp.name, sp.in_features, sp.out_features, sp.bias, sp.path,
                                             count=sp.count)
                for n in st.norms:
                    lay[n.name] = self.vec_p(n.size)
                lay["_idx"] = min(len(self.blocks), c.L - 1)
                self.blocks.append(lay)
            for _, n in st.extra:  # T5's relative attention bias table
                self.vec_p(n)
        if len(text_stacks) > 1:  # T5: the encoder's final norm as well
            self.vec_p(c.h)
        self.final = self.vec_p(c.h)
        self.head = None if a.tie_word_embeddings else self.linear_p("lm_head", c.h, c.V, False, "lm_head",
                                                                       dense_weight=True)

    def forward(self) -> _T:
        sim, c = self.sim, self.ctx
        ids = sim.new(c.N, 8)
        x = sim.op([self.emb], c.N * c.h, self.emb.b, saves=[ids])
        if c.ckpt_every:  # enable_input_require_grads() (transformers does it when checkpointing)
            self.input_requires_grad(x)
        if c.arch.model_type.startswith("gemma"):  # embeddings * sqrt(hidden)
            x2 = sim.op([x], x.numel, x.b)
            sim.drop(x)
            x = x2
        # rotary tables, shared by all layers: [1, s, head_dim] in the hidden dtype.  OLMo 2's rotary embedding returns
        # them in fp32 (models/olmo2/modeling_olmo2.py Olmo2RotaryEmbedding.forward has no ``.to(x.dtype)``); gpt-oss's
        # are ``freqs`` only, [1, s, head_dim / 2] (GptOssRotaryEmbedding.forward: ``emb = freqs``)
        mt = c.arch.model_type
        rope_w = c.s * c.d // 2 if mt == "gpt_oss" else c.s * c.d
        rope_b = 4 if mt == "olmo2" else x.b
        self.cos = sim.new(rope_w, rope_b)
        self.sin = sim.new(rope_w, rope_b)
        self.mask = sim.new(c.b * c.s * c.s, x.b) if c.attn == "eager" else None
        # gpt-oss builds a causal and a sliding-window mask (GptOssModel.forward causal_mask_mapping); eager turns each
        # into its own additive [b, 1, s, s] tensor (masking_utils.py eager_mask: torch.where)
        self.mask_sliding = None
        if c.attn == "eager" and mt == "gpt_oss" and any(c.sliding) and not all(c.sliding):
            self.mask_sliding = sim.new(c.b * c.s * c.s, x.b)
        # SDPA and a sliding window that masks something (transformers 5.25 masking_utils.py sdpa_mask: the mask is
        # skipped for is_causal unless ``kv_length >= local_attention_size`` in _ignore_causal_mask_sdpa): one boolean
        # [1, 1, s, s] mask for the sliding layers, expanded over the batch as a view
        self.sdpa_mask = None
        if c.attn != "eager" and any(c.sliding) and c.window and c.s >= c.window:
            self.sdpa_mask = sim.new(c.s * c.s, 1)
        x = self.layers(x)
        sim.drop(self.cos, self.sin, self.mask, self.mask_sliding, self.sdpa_mask)
        xn = self.norm(x, self.final)
        sim.drop(x)
        return self.lm_head_and_loss(xn)

    def block(self, x: _T, lay: dict) -> _T:
        sim, c, a = self.sim, self.ctx, self.ctx.arch
        if a.model_type == "olmo2":
            return self.olmo2_block(x, lay)
        if a.model_type == "gpt_oss":
            return self.gpt_oss_block(x, lay)
        gemma_sandwich = self.n_norms >= 4 + (2 if a.qk_norm else 0) and "pre_feedforward_layernorm" in lay
        xn = self.norm(x, lay.get("input_layernorm"))
        if self.fused_qkv:
            qkv = self.linear(xn, lay["qkv_proj"])
            q, k, v = self.split(qkv, (c.N * c.nq * c.d, c.N * c.nkv * c.d, c.N * c.nkv * c.d))
            sim.drop(qkv)
        else:
            q = self.linear(xn, lay["q_proj"])
            k = self.linear(xn, lay["k_proj"])
            v = self.linear(xn, lay["v_proj"])
        sim.drop(xn)
        if a.qk_norm:
            q2 = self.norm(q, lay.get("q_norm"), width=c.d)
            k2 = self.norm(k, lay.get("k_norm"), width=c.d)
            sim.drop(q, k)
            q, k = q2, k2
        if getattr(a, "position_embedding", "rope") == "rope":
            qe = self.rope(q, self.cos, self.sin)
            ke = self.rope(k, self.cos, self.sin)
            sim.drop(q, k)
        else:
            qe, ke = q, k
        # `hidden_states, _ = self.self_attn(...)`: `_` keeps the attention weights to the end
        sliding = self.sdpa_mask is not None and c.sliding[lay["_idx"]]
        ao, aw = self.attend(qe, ke, v, lay["o_proj"], self.sdpa_mask if sliding else None)
        if gemma_sandwich:
            t = self.norm(ao, lay.get("post_attention_layernorm"))
            sim.drop(ao)
            ao = t
        h1 = self.add(x, ao)
        sim.drop(ao)
        if gemma_sandwich:
            xn2 = self.norm(h1, lay.get("pre_feedforward_layernorm"))
        else:
            xn2 = self.norm(h1, lay.get("post_attention_layernorm"))
        if c.arch.is_moe:
            mo = self.moe(xn2, lay)
        else:
            mo = self.mlp(xn2, lay)
        sim.drop(xn2)
        if gemma_sandwich:
            t = self.norm(mo, lay.get("post_feedforward_layernorm"))
            sim.drop(mo)
            mo = t
        out = self.add(h1, mo)
        sim.drop(h1, mo, aw)
        return out

    def olmo2_block(self, x: _T, lay: dict) -> _T:
        """Olmo2DecoderLayer (transformers 5.25 models/olmo2/modeling_olmo2.py): the projections read the residual
        stream itself; q_norm / k_norm over the whole q and k projections (Olmo2Attention.forward), RoPE in fp32 (the
        tables are fp32) cast back (``q_embed.to(q_type)``); the attention and MLP outputs are normed before their
        residual adds (post_attention_layernorm, post_feedforward_layernorm)."""
        sim, c = self.sim, self.ctx
        q0 = self.linear(x, lay["q_proj"])
        q = self.norm(q0, lay["q_norm"], width=c.nq * c.d)
        sim.drop(q0)
        k0 = self.linear(x, lay["k_proj"])
        k = self.norm(k0, lay["k_norm"], width=c.nkv * c.d)
        sim.drop(k0)
        v = self.linear(x, lay["v_proj"])
        qe, ke = (self.rope_cast(t) for t in (q, k))
        sim.drop(q, k)
        ao, aw = self.attend(qe, ke, v, lay["o_proj"])
        an = self.norm(ao, lay["post_attention_layernorm"])
        sim.drop(ao)
        h1 = self.add(x, an)
        sim.drop(an)
        mo = self.mlp(h1, lay)
        mn = self.norm(mo, lay["post_feedforward_layernorm"])
        sim.drop(mo)
        out = self.add(h1, mn)
        sim.drop(h1, mn, aw)
        return out

    def rope_cast(self, x: _T) -> _T:
        """``(q * cos) + (rotate_half(q) * sin)`` promoted to the tables' dtype, then ``.to(q_type)``."""
        e = self.rope(x, self.cos, self.sin)
        out = self.sim.cast(e, x.b)
        self.sim.drop(e)
        return out

    def gpt_oss_block(self, x: _T, lay: dict) -> _T:
        """GptOssDecoderLayer (transformers 5.25 models/gpt_oss/modeling_gpt_oss.py): pre-norm, biased q/k/v/o, its own
        RoPE (``_apply_rotary_emb``: halves, then ``torch.cat``), eager attention with a learned sink logit per head,
        then the sparse MoE block (``gpt_oss_moe``)."""
        sim, c = self.sim, self.ctx
        xn = self.norm(x, lay["input_layernorm"])
        q = self.linear(xn, lay["q_proj"])
        k = self.linear(xn, lay["k_proj"])
        v = self.linear(xn, lay["v_proj"])
        sim.drop(xn)
        qe, ke = self.oss_rope(q), self.oss_rope(k)
        sim.drop(q, k)
        mask = self.mask_sliding if self.mask_sliding is not None and c.sliding[lay["_idx"]] else self.mask
        if c.attn == "eager":
            o, aw = self.eager_sinks(qe, ke, v, lay["sinks"], mask)
        else:  # flash kernels with sinks (transformers' hub kernels): what SDPA's flash kernel keeps
            o, aw = self.sdpa(qe, ke, v, c.nq), None
        sim.drop(qe, ke, v)
        ao = self.linear(o, lay["o_proj"])
        sim.drop(o)
        h1 = self.add(x, ao)
        sim.drop(ao)
        xn2 = self.norm(h1, lay["post_attention_layernorm"])
        mo = self.gpt_oss_moe(xn2, lay)
        sim.drop(xn2)
        out = self.add(h1, mo)
        sim.drop(h1, mo, aw)
        return out

    def oss_rope(self, x: _T) -> _T:
        """gpt-oss ``_apply_rotary_emb``: ``first * cos - second * sin`` and ``second * cos + first * sin`` on the two
        halves (each product keeps the [1, s, d/2] table it multiplies by), then ``torch.cat``; promoted to the tables'
        dtype (the residual stream's: fp32 under autocast)."""
        sim = self.sim
        half = x.numel // 2
        b = max(x.b, self.cos.b)
        first, second = self.split(x, (half, half))  # torch.chunk(x, 2, dim=-1): views
        halves = []
        for p, q, tp, tq in ((first, second, self.cos, self.sin), (second, first, self.cos, self.sin)):
            t1 = sim.op([p, tp], half, b, saves=[tp])
            t2 = sim.op([q, tq], half, b, saves=[tq])
            halves.append(sim.op([t1, t2], half, b, passthrough=True))
            sim.drop(t1, t2)
        sim.drop(first, second)
        out = sim.op(halves, x.numel, b)  # torch.cat: its backward slices the gradient, nothing saved
        sim.drop(*halves)
        return out

    def eager_sinks(self, qe: _T, ke: _T, v: _T, sinks: _T, mask: _T | None) -> tuple[_T, _T]:
        """gpt-oss ``eager_attention_forward``: repeat_kv, ``q @ k^T * scaling + mask``, the sink logit of each head
        concatenated as one more column (``torch.cat([attn_weights, sinks], dim=-1)``: [b, nq, s, s + 1]), minus its row
        max (``max(dim=-1)`` keeps its indices), softmax in that dtype (output kept), the sink column sliced off and
        ``.to(value.dtype)`` (a copy only when the dtypes differ, as under autocast), ``@ v``, and the
        ``transpose(1, 2).contiguous()`` copy.  Returns the output and the attention weights the layer keeps."""
        sim, c = self.sim, self.ctx
        if c.nq // max(c.nkv, 1) > 1:
            kr = sim.op([ke], c.N * c.nq * c.d, ke.b)
            vr = sim.op([v], c.N * c.nq * c.d, v.b)
        else:
            kr, vr = sim.ref(ke), sim.ref(v)
        S = c.b * c.nq * c.s * c.s
        S1 = c.b * c.nq * c.s * (c.s + 1)
        rows = c.b * c.nq * c.s
        qm, km = (sim.cast(qe, 2), sim.cast(kr, 2)) if c.mixed else (sim.ref(qe), sim.ref(kr))
        sc = sim.op([qm, km], S, qm.b, saves=[qm if km.rg else None, km if qm.rg else None])
        sim.drop(qm, km)
        sc2 = sim.op([sc], S, sc.b)  # * scaling
        sim.drop(sc)
        sc3 = sim.op([sc2, mask], S, max(sc2.b, mask.b if mask else 0))
        sim.drop(sc2)
        cat = sim.op([sc3, sinks], S1, max(sc3.b, sinks.b))
        sim.drop(sc3)
        idx = sim.new(rows, 8)  # max(dim=-1).indices, kept by its backward
        mx = sim.op([cat], rows, cat.b, saves=[idx], extra_outs=[idx])
        sim.drop(idx)
        cen = sim.op([cat, mx], S1, cat.b, passthrough=True)
        sim.drop(cat, mx)
        p = sim.op([cen], S1, cen.b, saves=[_OUT])  # softmax(dim=-1, dtype=combined_logits.dtype)
        sim.drop(cen)
        if p.b != vr.b:  # probs[..., :-1].to(value_states.dtype)
            pw = sim.op([p], S, vr.b)
        else:  # a view of the softmax output
            pw = sim.view(p, S)
            if p.rg and sim.rec is not None:
                sim.rec.append(_Node([p], [pw], [], 0, False))
        sim.drop(p)
        return self.probs_times_values(pw, kr, vr), pw

    def gpt_oss_moe(self, x: _T, lay: dict) -> _T:
        """GptOssMLP with transformers 5.25's default ``grouped_mm`` experts (integrations/moe.py
        ``grouped_mm_experts_forward``, GptOssExperts ``is_transposed=True, has_bias=True``).

        Router (GptOssTopKRouter.forward): ``F.linear`` with bias, top-k of the logits, softmax over the k values in
        their dtype.  Experts: the tokens gathered once per chosen expert, ``_grouped_mm`` against the whole
        ``[E, h, 2*mi]`` weight, the bias gathered per row (``gate_up_proj_bias[expert_ids_g]``) and added in place
        (``out.add_(bias)``), GptOssExperts._apply_gate on the interleaved halves (``gate_up[..., ::2]``, ``[..., 1::2]``:
        views, kept whole by the clamps' backward), ``clamp``, ``gate * sigmoid(gate * alpha)``, ``(up + 1) * glu``;
        the down projection and its bias alike; the routing weights multiplied in, un-permuted, summed over k."""
        sim, c, a = self.sim, self.ctx, self.ctx.arch
        k = max(1, a.num_experts_per_tok)
        mi = a.moe_intermediate_size or c.I
        S = c.N * k
        logits = self.linear(x, lay["gate"])
        tidx = sim.new(c.N * k, 8)  # topk indices, kept by topk's backward
        top = sim.op([logits], c.N * k, logits.b, saves=[tidx], extra_outs=[tidx])
        sim.drop(logits)
        scores = sim.op([top], c.N * k, top.b, saves=[_OUT])  # softmax(dim=1, dtype=router_top_value.dtype)
        sim.drop(top)
        ids_g = sim.new(S, 8)  # torch.sort(expert_ids): sorted ids and perm
        perm = sim.new(S, 8)
        sim.drop(tidx)
        tok = sim.new(S, 8)  # perm // num_top_k
        xr = sim.op([x], S * c.h, x.b, saves=[tok])  # hidden_states[perm // k]
        sim.drop(tok)
        sw = sim.op([scores], S, scores.b, saves=[perm])  # sample_weights[perm]
        sim.drop(scores)
        gu = self.grouped_linear_bias(xr, lay["gate_up_proj"], S, ids_g)
        sim.drop(xr)
        gate, up = self.split(gu, (S * mi, S * mi))  # [..., ::2] and [..., 1::2]
        sim.drop(gu)
        gc = sim.op([gate], S * mi, gate.b, saves=[gate])  # clamp(max=limit) keeps its input
        uc = sim.op([up], S * mi, up.b, saves=[up])  # clamp(-limit, limit)
        sim.drop(gate, up)
        ga = sim.op([gc], S * mi, gc.b)  # gate * alpha
        sg = sim.op([ga], S * mi, ga.b, saves=[_OUT])  # sigmoid
        sim.drop(ga)
        glu = sim.op([gc, sg], S * mi, gc.b, saves=[gc, sg])
        sim.drop(gc, sg)
        u1 = sim.op([uc], S * mi, uc.b, passthrough=True)  # up + 1
        sim.drop(uc)
        go = sim.op([u1, glu], S * mi, u1.b, saves=[u1, glu])
        sim.drop(u1, glu)
        dn = self.grouped_linear_bias(go, lay["down_proj"], S, ids_g)
        sim.drop(go, ids_g)
        wb = max(dn.b, sw.b)
        w = sim.op([dn, sw], S * c.h, wb, saves=[dn if sw.rg else None, sw if dn.rg else None])
        sim.drop(dn, sw)
        inv = sim.new(S, 8)  # inv_perm
        sim.drop(perm)
        return self.unpermute_and_sum(w, inv, x.b)

    def grouped_linear_bias(self, x: _T, lin: _Linear, rows: int, ids: _T) -> _T:
        """``_grouped_linear`` with a bias (integrations/moe.py): ``_grouped_mm`` (see ``grouped_linear``), then
        ``out.add_(bias[expert_ids_g])``: the gathered [rows, out] bias lives until the in-place add (the gather keeps
        the ids when the bias trains)."""
        sim = self.sim
        out = self.grouped_linear(x, lin, rows)
        if lin.B is None:
            return out
        bg = sim.op([lin.B], rows * lin.fout, lin.B.b, saves=[ids])
        s = sim.view(out, out.numel)  # add_ in place: the same storage, nothing saved
        s.rg = out.rg or bg.rg
        if s.rg and sim.rec is not None:
            sim.rec.append(_Node([out, bg], [s], [], 0, True))
        sim.drop(out, bg)
        return s

    def mlp(self, x: _T, lay: dict, rows: int | None = None, act: str | None = None) -> _T:
        """The gated MLP ``down_proj(act(gate_proj(x)) * up_proj(x))`` (fused gate/up for Phi-3, ungated for T5 v1.0);
        ``act`` defaults to the model's."""
        sim, c = self.sim, self.ctx
        rows = c.N if rows is None else rows
        act = act or c.act
        if "gate_up_proj" in lay:  # Phi-3
            gu = self.linear(x, lay["gate_up_proj"], rows)
            gt, up = self.split(gu, (rows * c.I, rows * c.I))
            sim.drop(gu)
            ac = self.activation(gt, act)
            sim.drop(gt)
        elif "up_proj" not in lay:  # T5 v1.0: wi -> act -> wo
            fc = self.linear(x, lay["gate_proj"], rows)
            ac = self.activation(fc, act)
            sim.drop(fc)
            dn = self.linear(ac, lay["down_proj"], rows)
            sim.drop(ac)
            return dn
        else:
            gt = self.linear(x, lay["gate_proj"], rows)
            ac = self.activation(gt, act)
            sim.drop(gt)
            up = self.linear(x, lay["up_proj"], rows)
        pr = sim.op([ac, up], ac.numel, max(ac.b, up.b), saves=[ac if up.rg else None, up if ac.rg else None])
        sim.drop(ac, up)
        dn = self.linear(pr, lay["down_proj"], rows)
        sim.drop(pr)
        return dn

    def moe(self, x: _T, lay: dict) -> _T:
        """A sparse MoE block as transformers 5.25 runs it by default (``experts_implementation="grouped_mm"``).

        Router (models/mixtral/modeling_mixtral.py ``MixtralTopKRouter.forward``, models/qwen3_moe/modeling_qwen3_moe.py
        ``Qwen3MoeTopKRouter.forward``): ``F.linear`` -> fp32 softmax -> top-k.  Experts (integrations/moe.py
        ``grouped_mm_experts_forward``): the tokens gathered once per chosen expert (``hidden_states[perm // k]``),
        ``_grouped_mm`` against the whole ``[E, 2*mi, h]`` / ``[E, h, mi]`` expert weights (saved, so their
        gradients are full-size ``[E, ...]`` tensors), ``act(gate) * up``, the routing weights multiplied in
        (``proj_out * sample_weights_g``, promoted to their dtype), un-permuted, summed over k and cast back.
        ``_grouped_mm`` is not autocast-enabled: its input is cast to the weight's dtype (``_grouped_mm``)."""
        sim, c, a = self.sim, self.ctx, self.ctx.arch
        k = max(1, a.num_experts_per_tok)
        mi = a.moe_intermediate_size or c.I
        S = c.N * k
        # router: logits, softmax in fp32 (Mixtral: router_logits.float() first), top-k values and indices
        logits = self.linear(x, lay["gate"])
        probs = self.softmax(logits, 4)
        sim.drop(logits)
        idx = sim.new(c.N * k, 8)  # top-k indices (kept by topk's backward)
        top = sim.op([probs], c.N * k, 4, saves=[idx])
        sim.drop(probs)
        if _MOE_ROUTING_WEIGHTS_TO_LOGITS_DTYPE.get(a.model_type, False):  # Qwen3-MoE: .to(router_logits.dtype)
            t = sim.cast(top, logits.b)
            sim.drop(top)
            top = t
        perm = sim.new(S, 8)  # torch.sort(expert_ids) -> perm (the gather's and the routing weights' index)
        sw = sim.op([top], S, top.b, saves=[perm])  # sample_weights[perm]
        sim.drop(top, idx)
        xr = sim.op([x], S * c.h, x.b, saves=[perm])  # hidden_states[perm // k]
        gu = self.grouped_linear(xr, lay["gate_up_proj"], S)
        sim.drop(xr)
        gt, up = self.split(gu, (S * mi, S * mi))  # chunk(2, dim=-1)
        sim.drop(gu)
        ac = self.activation(gt, c.act)
        sim.drop(gt)
        pr = sim.op([ac, up], ac.numel, max(ac.b, up.b), saves=[ac if up.rg else None, up if ac.rg else None])
        sim.drop(ac, up)
        dn = self.grouped_linear(pr, lay["down_proj"], S)
        sim.drop(pr)
        wb = max(dn.b, sw.b)
        w = sim.op([dn, sw], S * c.h, wb, saves=[dn if sw.rg else None, sw if dn.rg else None])
        sim.drop(dn, sw)
        return self.unpermute_and_sum(w, perm, x.b)

    def unpermute_and_sum(self, w: _T, inv_perm: _T, out_bytes: int) -> _T:
        """The experts' weighted outputs back in token order (``weighted_out[inv_perm]``: a copy keeping the index),
        ``.view(N, k, h).sum(dim=1)``, cast to the hidden dtype; ``w`` and the index are consumed."""
        sim, c = self.sim, self.ctx
        wo = sim.op([w], w.numel, w.b, saves=[inv_perm])
        sim.drop(w, inv_perm)
        sm = sim.op([wo], c.N * c.h, wo.b)
        sim.drop(wo)
        out = sim.cast(sm, out_bytes)
        sim.drop(sm)
        return out

    def grouped_linear(self, x: _T, lin: _Linear, rows: int) -> _T:
        """``_grouped_mm(input.to(weight.dtype), weight.transpose(-2, -1), offs)`` over all experts' weights
        (transformers 5.25 integrations/moe.py ``_grouped_linear``): saves its input and the weight; the weight's
        gradient is one ``[E, out, in]`` tensor."""
        sim, c = self.sim, self.ctx
        wb = c.compute if lin.quant else lin.W.b
        xin = sim.cast(x, wb)
        out = sim.op([xin, lin.W], rows * lin.fout, wb,
                     saves=[xin if lin.W.rg else None, lin.W if xin.rg else None])
        sim.drop(xin)
        return out

    def eager(self, qe: _T, ke: _T, v: _T) -> _T:
        """transformers' eager_attention_forward (repeat_kv, matmul, +mask, softmax fp32, matmul)."""
        sim, c = self.sim, self.ctx
        groups = c.nq // max(c.nkv, 1)
        if groups > 1:
            kr = sim.op([ke], c.N * c.nq * c.d, ke.b)
            vr = sim.op([v], c.N * c.nq * c.d, v.b)
        else:
            kr, vr = sim.ref(ke), sim.ref(v)
        S = c.b * c.nq * c.s * c.s
        qm, km = (sim.cast(qe, 2), sim.cast(kr, 2)) if c.mixed else (sim.ref(qe), sim.ref(kr))
        sc = sim.op([qm, km], S, qm.b, saves=[qm if km.rg else None, km if qm.rg else None])
        sim.drop(qm, km)
        sc2 = sim.op([sc], S, sc.b)
        sim.drop(sc)
        if c.softcap("attn_logit_softcapping"):
            # Gemma 2's eager_attention_forward (transformers 5.25 models/gemma2/modeling_gemma2.py): scores / softcap,
            # tanh (output saved), * softcap, before the mask
            sc2 = self.softcapped(sc2)
        sc3 = sim.op([sc2, self.mask], S, max(sc2.b, self.mask.b if self.mask else 0))
        sim.drop(sc2)
        p = self.softmax(sc3, 4)
        sim.drop(sc3)
        pc = sim.cast(p, qe.b)
        sim.drop(p)
        return self.probs_times_values(pc, kr, vr), pc

    def probs_times_values(self, probs: _T, kr: _T, vr: _T) -> _T:
        """Eager attention's ``attn_weights @ value_states`` (both cast under autocast), then
        ``transpose(1, 2).contiguous()``; the repeated keys and values are let go."""
        sim, c = self.sim, self.ctx
        pm, vm = (sim.cast(probs, 2), sim.cast(vr, 2)) if c.mixed else (sim.ref(probs), sim.ref(vr))
        o = sim.op([pm, vm], c.N * c.nq * c.d, pm.b, saves=[pm if vm.rg else None, vm if pm.rg else None])
        sim.drop(pm, vm, kr, vr)
        oc = sim.op([o], o.numel, o.b)  # transpose(1, 2).contiguous()
        sim.drop(o)
        return oc


class _GPT2Model(_Model):
    """GPT-2 (and, approximately, GPT-NeoX, Falcon, OPT, Phi-2): LayerNorm, learned or rotary positions,
    fused qkv, non-gated MLP, dropout."""

    def build(self) -> None:
        c, a = self.ctx, self.ctx.arch
        self.emb = self.table_p(c.V, c.h)
        npos = getattr(a, "num_position_embeddings", 0)
        self.wpe = self.table_p(npos, c.h) if npos else None
        st = a.stacks()[0]
        self.specs = st.linears
        self.blocks = []
        for _ in range(c.L):
            lay = {"lin": [self.linear_p(s.name, s.in_features, s.out_features, s.bias, s.path) for s in st.linears],
                   "norms": [(self.vec_p(n.size), self.vec_p(n.size) if n.bias else None) for n in st.norms]}
            self.blocks.append(lay)
        self.lnf = (self.vec_p(c.h), self.vec_p(c.h) if getattr(a, "norm_bias", True) else None)
        self.head = None if a.tie_word_embeddings else self.linear_p(
            "lm_head", c.h, c.V, bool(getattr(a, "lm_head_bias", False)), "lm_head", dense_weight=True)
        # transformers' config defaults: GPT-2 0.1 everywhere, OPT dropout=0.1, the others 0
        dflt = {"gpt2": 0.1, "opt": 0.1}.get(a.model_type, 0.0)
        self.p_embd = c.drop_p("embd_pdrop", "hidden_dropout", "dropout", default=dflt)
        self.p_resid = c.drop_p("resid_pdrop", "hidden_dropout", "dropout", default=dflt)
        self.p_attn = c.drop_p("attn_pdrop", "attention_dropout", default=0.1 if a.model_type == "gpt2" else 0.0)

    def forward(self) -> _T:
        sim, c = self.sim, self.ctx
        ids = sim.new(c.N, 8)
        x = sim.op([self.emb], c.N * c.h, self.emb.b, saves=[ids])
        if c.ckpt_every:  # enable_input_require_grads() (transformers does it when checkpointing)
            self.input_requires_grad(x)
        if self.wpe is not None:
            pe = sim.op([self.wpe], c.s * c.h, self.wpe.b)
            x2 = self.add(x, pe)
            sim.drop(x, pe)
            x = x2
        xd = self.dropout(x, self.p_embd)
        sim.drop(x)
        x = xd
        self.rope_tables = None
        if getattr(c.arch, "position_embedding", "learned") == "rope":
            self.rope_tables = (sim.new(c.s * c.d, x.b), sim.new(c.s * c.d, x.b))
        self.mask = sim.new(c.b * c.s * c.s, x.b) if c.attn == "eager" else None
        x = self.layers(x)
        if self.rope_tables:
            sim.drop(*self.rope_tables)
        sim.drop(self.mask)
        xn = self.norm(x, *self.lnf)
        sim.drop(x)
        return self.lm_head_and_loss(xn)

    def block(self, x: _T, lay: dict) -> _T:
        sim, c, a = self.sim, self.ctx, self.ctx.arch
        lins = lay["lin"]
        qkv_l, o_l, fc_l, proj_l = lins[0], lins[-3], lins[-2], lins[-1]
        if len(lins) == 6:  # separate q, k, v (OPT, Phi)
            qkv_l = None
        n1 = lay["norms"][0] if lay["norms"] else (None, None)
        xn = self.norm(x, *n1)
        if qkv_l is not None:
            qkv = self.linear(xn, qkv_l)
            q, k, v = self.split(qkv, (c.N * c.nq * c.d, c.N * c.nkv * c.d, c.N * c.nkv * c.d))
            sim.drop(qkv)
        else:
            q, k, v = (self.linear(xn, lins[i]) for i in range(3))
        if not a.parallel_attn:
            sim.drop(xn)
        if self.rope_tables:
            qe = self.rope(q, *self.rope_tables)
            ke = self.rope(k, *self.rope_tables)
            sim.drop(q, k)
            q, k = qe, ke
        # `attn_output, _ = self.attn(...)`: `_` keeps the attention weights to the end of the block
        ao, aw = self.attend(q, k, v, o_l)
        ad = self.dropout(ao, self.p_resid)
        sim.drop(ao)
        if a.parallel_attn:
            if len(lay["norms"]) >= 2:
                xn2 = self.norm(x, *lay["norms"][1])
                sim.drop(xn)
            else:
                xn2 = xn
            mo = self.mlp(xn2, fc_l, proj_l)
            sim.drop(xn2)
            s1 = self.add(ad, mo)
            sim.drop(ad, mo)
            out = self.add(s1, x)
            sim.drop(s1, aw)
            return out
        h1 = self.add(ad, x)
        sim.drop(ad)
        n2 = lay["norms"][1] if len(lay["norms"]) > 1 else (None, None)
        xn2 = self.norm(h1, *n2)
        mo = self.mlp(xn2, fc_l, proj_l)
        sim.drop(xn2)
        out = self.add(h1, mo)
        sim.drop(h1, mo, aw)
        return out

    def mlp(self, x: _T, fc_l: _Linear, proj_l: _Linear) -> _T:
        sim, c = self.sim, self.ctx
        fc = self.linear(x, fc_l)
        ac = self.activation(fc, c.act)
        sim.drop(fc)
        pr = self.linear(ac, proj_l)
        sim.drop(ac)
        out = self.dropout(pr, self.p_resid)
        sim.drop(pr)
        return out

    def eager(self, q: _T, k: _T, v: _T) -> _T:
        """GPT-2's eager attention: matmul * scale, + causal mask, softmax (fp32 under autocast),
        .type(value.dtype), dropout, matmul; reshape copies the transposed output."""
        sim, c = self.sim, self.ctx
        S = c.b * c.nq * c.s * c.s
        qm, km = (sim.cast(q, 2), sim.cast(k, 2)) if c.mixed else (sim.ref(q), sim.ref(k))
        sc = sim.op([qm, km], S, qm.b, saves=[qm if km.rg else None, km if qm.rg else None])
        sim.drop(qm, km)
        sc2 = sim.op([sc], S, sc.b)
        sim.drop(sc)
        if self.mask is not None:
            sc3 = sim.op([sc2, self.mask], S, max(sc2.b, self.mask.b))
            sim.drop(sc2)
            sc2 = sc3
        p = self.softmax(sc2, 4 if c.mixed else sc2.b)
        sim.drop(sc2)
        pc = sim.cast(p, v.b)
        sim.drop(p)
        pd = self.dropout(pc, self.p_attn)
        sim.drop(pc)
        pm, vm = (sim.cast(pd, 2), sim.cast(v, 2)) if c.mixed else (sim.ref(pd), sim.ref(v))
        o = sim.op([pm, vm], c.N * c.nq * c.d, pm.b, saves=[pm if vm.rg else None, vm if pm.rg else None])
        sim.drop(pm, vm)
        oc = sim.op([o], o.numel, o.b)
        sim.drop(o)
        return oc, pd


class _BertModel(_Model):
    """BERT-style encoders fine-tuned as sequence classifiers (post-LN, GELU, dropout, pooler)."""

    def build(self) -> None:
        c, a = self.ctx, self.ctx.arch
        self.emb = self.table_p(c.V, c.h)
        self.tte = self.table_p(int(c.cfg.get("type_vocab_size", 2)), c.h)
        self.wpe = self.table_p(getattr(a, "num_position_embeddings", 0) or a.max_position_embeddings, c.h)
        self.eln = (self.vec_p(c.h), self.vec_p(c.h))
        st = a.stacks()[0]
        self.blocks = []
        for _ in range(c.L):
            self.blocks.append({
                "lin": [self.linear_p(s.name, s.in_features, s.out_features, s.bias, s.path) for s in st.linears],
                "norms": [(self.vec_p(n.size), self.vec_p(n.size)) for n in st.norms],
            })
        self.pool = self.linear_p("pooler.dense", c.h, c.h, True, "pooler.dense", dense_weight=True)
        self.nl = int(c.cfg.get("num_labels", 2) or 2)
        self.cls = self.linear_p("classifier", c.h, self.nl, True, "classifier", dense_weight=True)
        if c.lora:  # PEFT SEQ_CLS trains a copy of the classifier (modules_to_save)
            for p in self.cls.params():
                p.rg = True
            self._track([self.sim.param(p.numel, p.b, False, p.cat) for p in self.cls.params()])
        self.p_h = c.drop_p("hidden_dropout_prob", default=0.1)
        self.p_a = c.drop_p("attention_probs_dropout_prob", default=0.1)

    def forward(self) -> _T:
        sim, c = self.sim, self.ctx
        ids = sim.new(c.N, 8)
        we = sim.op([self.emb], c.N * c.h, self.emb.b, saves=[ids])
        if c.ckpt_every:  # the hook is on the word embeddings (`get_input_embeddings()`)
            self.input_requires_grad(we)
        te = sim.op([self.tte], c.N * c.h, self.tte.b)
        x = self.add(we, te)
        sim.drop(we, te)
        pe = sim.op([self.wpe], c.s * c.h, self.wpe.b)
        x2 = self.add(x, pe)
        sim.drop(x, pe)
        xn = self.layernorm(x2, *self.eln)
        sim.drop(x2)
        x = self.dropout(xn, self.p_h)
        sim.drop(xn)
        held = sim.ref(x)  # BertModel.forward's `embedding_output` lives until the encoder returns (saved or not)
        x = self.layers(x)
        sim.drop(held)
        # hidden[:, 0]; its backward materialises a zero [b, s, h] gradient
        pooled_in = sim.op([x], c.b * c.h, x.b)
        sim.drop(x)
        pd = self.linear(pooled_in, self.pool, rows=c.b)
        sim.drop(pooled_in)
        th = sim.op([pd], pd.numel, pd.b, saves=[_OUT])
        sim.drop(pd)
        dr = self.dropout(th, self.p_h)
        sim.drop(th)
        logits = self.linear(dr, self.cls, rows=c.b)
        sim.drop(dr)
        lf = sim.cast(logits, 4)
        lsm = sim.op([lf], logits.numel, 4, saves=[_OUT], cat="logits_and_loss")
        sim.drop(lf)
        loss = sim.op([lsm], 1, 4, cat="logits_and_loss")
        sim.drop(lsm, logits)
        return loss

    def block(self, x: _T, lay: dict) -> _T:
        sim, c = self.sim, self.ctx
        lq, lk, lv, lo, li, lo2 = lay["lin"]
        q = self.linear(x, lq)
        k = self.linear(x, lk)
        v = self.linear(x, lv)
        # `attention_output, _ = self.attention(...)`: `_` keeps the attention weights to the end
        ao, aw = self.attend(q, k, v, lo)
        # BertSelfOutput / BertOutput: `hidden_states = self.LayerNorm(hidden_states + input_tensor)` holds the dropout
        # output until the norm returns
        ad = self.dropout(ao, self.p_h)
        sim.drop(ao)
        s1 = self.add(ad, x)
        h1 = self.layernorm(s1, *lay["norms"][0])
        sim.drop(s1, ad)
        it = self.linear(h1, li)
        ac = self.activation(it, c.act)
        sim.drop(it)
        # `feed_forward_chunk`: `intermediate_output` lives until `self.output(intermediate_output, ...)` returns
        o2 = self.linear(ac, lo2)
        d2 = self.dropout(o2, self.p_h)
        sim.drop(o2)
        s2 = self.add(d2, h1)
        out = self.layernorm(s2, *lay["norms"][1])
        sim.drop(s2, d2, ac, h1, aw)
        return out

    def eager(self, q: _T, k: _T, v: _T) -> _T:
        sim, c = self.sim, self.ctx
        S = c.b * c.nq * c.s * c.s
        qm, km = (sim.cast(q, 2), sim.cast(k, 2)) if c.mixed else (sim.ref(q), sim.ref(k))
        sc = sim.op([qm, km], S, qm.b, saves=[qm if km.rg else None, km if qm.rg else None])
        sim.drop(qm, km)
        sc2 = sim.op([sc], S, sc.b)
        sim.drop(sc)
        p = self.softmax(sc2, 4 if c.mixed else sc2.b)  # softmax: fp32 under CUDA autocast
        sim.drop(sc2)
        pd = self.dropout(p, self.p_a)
        sim.drop(p)
        pm, vm = (sim.cast(pd, 2), sim.cast(v, 2)) if c.mixed else (sim.ref(pd), sim.ref(v))
        o = sim.op([pm, vm], c.N * c.nq * c.d, pm.b, saves=[pm if vm.rg else None, vm if pm.rg else None])
        sim.drop(pm, vm)
        oc = sim.op([o], o.numel, o.b)
        sim.drop(o)
        return oc, pd


class _T5Model(_Model):
    """T5 / Flan-T5 as ``T5ForConditionalGeneration`` runs a training step (transformers 5.25 models/t5/modeling_t5.py).

    Two stacks over one ``shared`` embedding (also the lm_head: transformers >= 5 always ties it, arch.t5_ties_lm_head):
    the encoder over ``seq_len`` source tokens, the decoder over ``target_len`` (default: ``seq_len``) tokens, the labels
    shifted right (``_shift_right``).  Each stack's block 0 computes the relative position bias
    (``T5Attention.compute_bias``: bucket indices, an embedding lookup, a permuted [1, heads, q, k] view) that every
    later block of the stack reuses; the decoder's block 0 also makes the cross-attention's all-zero bias, shared as
    well.  No biases, no scaling of q·k; ``T5LayerNorm`` (RMS, fp32 variance, output cast to a half weight's dtype),
    dropout (``dropout_rate``) after the embeddings, every sub-layer and inside the MLP, the (gated-)GELU / ReLU MLP
    with ``.to(wo.weight.dtype)`` before ``wo``, cross-attention over the encoder output in every decoder block, the
    decoder output scaled by ``d_model ** -0.5`` when the config ties the head (``scale_decoder_outputs``), and
    ``CrossEntropyLoss`` on the logits as they are (no ``.float()``)."""

    # -- parameters -------------------------------------------------------------------------------
    def build(self) -> None:
        c, a = self.ctx, self.ctx.arch
        cfg = c.cfg
        self.emb = self.table_p(c.V, c.h)  # `shared`: both stacks' embed_tokens and the tied lm_head
        enc, dec = a.stacks()[:2]
        self.buckets = int(cfg.get("relative_attention_num_buckets", 32))
        self.max_distance = int(cfg.get("relative_attention_max_distance", 128))
        self.enc_blocks = [self._block_p(enc) for _ in range(enc.num_layers)]
        self.rel_enc = self.table_p(self.buckets, c.nq)  # encoder.block[0].layer[0].SelfAttention.relative_attention_bias
        self.enc_final = self.vec_p(c.h)
        self.dec_blocks = [self._block_p(dec) for _ in range(dec.num_layers)]
        self.rel_dec = self.table_p(self.buckets, c.nq)
        self.dec_final = self.vec_p(c.h)
        self.blocks = self.enc_blocks + self.dec_blocks
        self.head = None if a.tie_word_embeddings else self.linear_p("lm_head", c.h, c.V, False, "lm_head",
                                                                       dense_weight=True)
        self.p = c.drop_p("dropout_rate", default=0.1)
        proj = str(cfg.get("feed_forward_proj", "relu"))
        # T5Config.__post_init__: "gated-gelu" runs gelu_new (NewGELUActivation, the tanh formula in Python)
        self.act = "gelu_new" if proj == "gated-gelu" else proj.split("-")[-1]
        # T5Config.__post_init__: scale_decoder_outputs unless the saved config says tie_word_embeddings=False (v1.1, Flan)
        self.scale = cfg.get("tie_word_embeddings", None) is not False
        self.src = c.s
        self.tgt = c.setup.decoder_len

    def _block_p(self, st: Any) -> dict:
        lay: dict[str, Any] = {}
        for sp in st.linears:
            pre = "x_" if "EncDecAttention" in sp.path else ""
            lay[pre + sp.name] = self.linear_p(sp.name, sp.in_features, sp.out_features, sp.bias, sp.path)
        for i, n in enumerate(st.norms):
            lay[f"ln{i}"] = self.vec_p(n.size)
        return lay

    # -- ops ----------------------------------------------------------------------------------------
    def t5_norm(self, x: _T, w: _T) -> _T:
        """T5LayerNorm.forward: ``x.to(float32).pow(2).mean(-1)``, ``x * rsqrt(var + eps)`` (the *input*, promoted to
        fp32), ``.to(weight.dtype)`` when the weight is half, ``weight * x``."""
        sim = self.sim
        rows = x.numel // self.ctx.h
        x32 = sim.cast(x, 4)
        sq = sim.op([x32], x32.numel, 4, saves=[x32])
        sim.drop(x32)
        var = sim.op([sq], rows, 4)
        sim.drop(sq)
        ve = sim.op([var], rows, 4)
        sim.drop(var)
        r = sim.op([ve], rows, 4, saves=[_OUT])
        sim.drop(ve)
        y = sim.op([x, r], x.numel, 4, saves=[x if r.rg else None, r if x.rg else None])
        sim.drop(r)
        yc = sim.cast(y, w.b) if w.b < 4 else sim.ref(y)
        sim.drop(y)
        out = sim.op([w, yc], yc.numel, max(w.b, yc.b), saves=[yc if w.rg else None, w if yc.rg else None])
        sim.drop(yc)
        return out

    def residual(self, x: _T, y: _T) -> _T:
        """``hidden_states + self.dropout(y)``; ``y`` is consumed."""
        yd = self.dropout(y, self.p)
        self.sim.drop(y)
        out = self.add(x, yd)
        self.sim.drop(yd)
        return out

    def position_bias(self, table: _T, q_len: int, k_len: int, bidirectional: bool) -> _T:
        """``T5Attention.compute_bias``: the [q, k] long bucket indices (``_relative_position_bucket``, its transients
        in order), the embedding lookup ``[q, k, heads]`` in the table's dtype, which keeps the indices for its weight
        gradient; the permute / unsqueeze are views."""
        sim, n = self.sim, q_len * k_len
        ctx_pos, mem_pos = sim.new(q_len, 8), sim.new(k_len, 8)
        rel = sim.new(n, 8)  # memory_position - context_position
        sim.drop(ctx_pos, mem_pos)
        base = None
        if bidirectional:  # relative_buckets = 0 + (rel > 0).to(long) * nb; relative_position = abs(rel)
            gt = sim.new(n, 1)
            gl = sim.new(n, 8)
            sim.drop(gt)
            gm = sim.new(n, 8)
            sim.drop(gl)
            base = sim.new(n, 8)
            sim.drop(gm)
            pos = sim.new(n, 8)
        else:  # -torch.min(rel, zeros_like(rel))
            z = sim.new(n, 8)
            mn = sim.new(n, 8)
            sim.drop(z)
            pos = sim.new(n, 8)
            sim.drop(mn)
        small = sim.new(n, 1)  # is_small
        t = sim.new(n, 4)  # relative_position.float()
        for _ in range(3):  # / max_exact, log, / log(max_distance / max_exact), * (nb - max_exact)
            t2 = sim.new(n, 4)
            sim.drop(t)
            t = t2
        t2 = sim.new(n, 4)
        sim.drop(t)
        lg = sim.new(n, 8)  # .to(torch.long)
        sim.drop(t2)
        large = sim.new(n, 8)  # max_exact + ...
        sim.drop(lg)
        full = sim.new(n, 8)  # full_like
        lim = sim.new(n, 8)  # torch.min
        sim.drop(large, full)
        w = sim.new(n, 8)  # torch.where(is_small, relative_position, ...)
        sim.drop(small, lim, pos)
        if base is not None:  # relative_buckets += ... (in place)
            sim.drop(w)
            idx = base
        else:  # 0 + where(...): a new tensor
            idx = sim.new(n, 8)
            sim.drop(w)
        sim.drop(rel)
        values = sim.op([table], n * self.ctx.nq, table.b, saves=[idx])
        sim.drop(idx)
        return values

    def attention(self, xn: _T, kv: _T, lay: dict, pre: str, q_rows: int, k_rows: int, mask: _T) -> _T:
        """T5Attention.forward with ``sdpa_attention_forward`` (or eager): q from ``xn``, k and v from ``kv`` (the
        encoder output for cross-attention), the additive position-bias mask, the output projection."""
        sim, c = self.sim, self.ctx
        q = self.linear(xn, lay[pre + "q"], q_rows)
        k = self.linear(kv, lay[pre + "k"], k_rows)
        v = self.linear(kv, lay[pre + "v"], k_rows)
        ql, kl = q_rows // c.b, k_rows // c.b
        if c.attn == "eager":
            o = self.eager_biased(q, k, v, mask, ql, kl)
        else:
            o = self.sdpa_biased(q, k, v, mask, ql, kl)
        sim.drop(q, k, v)
        ao = self.linear(o, lay[pre + "o"], q_rows)
        sim.drop(o)
        return ao

    def sdpa_biased(self, q: _T, k: _T, v: _T, mask: _T, ql: int, kl: int) -> _T:
        """SDPA with a float ``attn_mask`` on CUDA: flash takes no mask, so the memory-efficient kernel (torch 2.13
        attention.cpp ``scaled_dot_product_attention``: ``preprocess_mask`` expands it to [b, heads, q, k], a view), which
        keeps q, k, v, the mask, the output and an fp32 log-sum-exp of [b, heads, ceil(q / 32) * 32]; its backward
        allocates the mask's gradient at the expanded size (``_efficient_attention_backward``), summed over the batch
        by the expand's backward.  Autocast casts the mask to half precision first (a copy of an fp32 bias)."""
        sim, c = self.sim, self.ctx
        owned = []
        if c.mixed:
            q, k, v, mask = (sim.cast(t, 2) for t in (q, k, v, mask))
            owned = [q, k, v, mask]
        lse = sim.new(c.b * c.nq * (-(-ql // 32) * 32), 4)
        grad_bias = c.b * mask.numel * mask.b if (mask.rg and c.b > 1) else 0
        out = sim.op([q, k, v, mask], c.b * ql * c.nq * c.d, q.b, saves=[q, k, v, mask, _OUT, lse],
                     extra_outs=[lse], bw_temp=_round(grad_bias))
        sim.drop(lse, *owned)
        return out

    def eager_biased(self, q: _T, k: _T, v: _T, mask: _T, ql: int, kl: int) -> _T:
        """T5's eager_attention_forward: ``q @ k^T`` (no scaling), ``+ position_bias``, softmax, dropout, ``@ v``,
        ``transpose(1, 2).contiguous()``."""
        sim, c = self.sim, self.ctx
        S = c.b * c.nq * ql * kl
        qm, km = (sim.cast(q, 2), sim.cast(k, 2)) if c.mixed else (sim.ref(q), sim.ref(k))
        sc = sim.op([qm, km], S, qm.b, saves=[qm if km.rg else None, km if qm.rg else None])
        sim.drop(qm, km)
        sc2 = sim.op([sc, mask], S, max(sc.b, mask.b), passthrough=True)
        sim.drop(sc)
        p = self.softmax(sc2, 4 if c.mixed else sc2.b)
        sim.drop(sc2)
        pd = self.dropout(p, self.p)
        sim.drop(p)
        pm, vm = (sim.cast(pd, 2), sim.cast(v, 2)) if c.mixed else (sim.ref(pd), sim.ref(v))
        o = sim.op([pm, vm], c.b * ql * c.nq * c.d, pm.b, saves=[pm if vm.rg else None, vm if pm.rg else None])
        sim.drop(pm, vm, pd)
        oc = sim.op([o], o.numel, o.b)
        sim.drop(o)
        return oc

    def ff(self, x: _T, lay: dict, rows: int) -> _T:
        """T5LayerFF's MLP: ``act(wi_0(x)) * wi_1(x)`` (or ``act(wi(x))``), dropout, ``.to(wo.weight.dtype)`` (a copy
        back to fp32 under autocast, whose matmuls return half), ``wo``."""
        sim = self.sim
        if "wi_0" in lay:
            g = self.linear(x, lay["wi_0"], rows)
            ac = self.activation(g, self.act)
            sim.drop(g)
            up = self.linear(x, lay["wi_1"], rows)
            h = sim.op([ac, up], ac.numel, max(ac.b, up.b), saves=[ac if up.rg else None, up if ac.rg else None])
            sim.drop(ac, up)
        else:
            g = self.linear(x, lay["wi"], rows)
            h = self.activation(g, self.act)
            sim.drop(g)
        hd = self.dropout(h, self.p)
        sim.drop(h)
        wo = lay["wo"]
        hw = sim.cast(hd, wo.W.b) if not wo.quant else sim.ref(hd)
        sim.drop(hd)
        out = self.linear(hw, wo, rows)
        sim.drop(hw)
        return out

    # -- the step -----------------------------------------------------------------------------------
    def embed(self, rows: int) -> _T:
        """``embed_tokens(ids)`` (the shared table), made to require grad under checkpointing
        (``enable_input_require_grads`` hooks the input embeddings), then dropout."""
        sim, c = self.sim, self.ctx
        ids = sim.new(rows, 8)
        x = sim.op([self.emb], rows * c.h, self.emb.b, saves=[ids])
        sim.drop(ids)
        if c.ckpt_every:
            self.input_requires_grad(x)
        xd = self.dropout(x, self.p)
        sim.drop(x)
        return xd

    def run_layer(self, i: int, fn: Callable[[_T], Any], x: _T, keep: Iterable[_T]) -> Any:
        """One block, checkpointed when ``activation_checkpointing_enable(every_n_layers=N)`` picked it: transformers
        counts the GradientCheckpointingLayer blocks of both stacks in module order (encoder first,
        modeling_utils.py ``_set_gradient_checkpointing``)."""
        c = self.ctx
        if c.ckpt_every and i % c.ckpt_every == 0:
            return self.sim.checkpoint(fn, x, offload=c.offload, keep=[k for k in keep if k is not None])
        return fn(x)

    def forward(self) -> _T:
        sim, c = self.sim, self.ctx
        b, s, t = c.b, self.src, self.tgt
        Ne, Nd = b * s, b * t
        # encoder
        x = self.embed(Ne)
        bias = None
        for j, lay in enumerate(self.enc_blocks):
            def enc_block(h, lay=lay, first=(j == 0), bias=bias):
                if first:
                    bias = self.position_bias(self.rel_enc, s, s, bidirectional=True)
                xn = self.t5_norm(h, lay["ln0"])
                mask = sim.op([bias], bias.numel, bias.b)  # create_position_bias_mask: permuted bias .contiguous()
                ao = self.attention(xn, xn, lay, "", Ne, Ne, mask)
                sim.drop(xn, mask)
                h1 = self.residual(h, ao)
                xn2 = self.t5_norm(h1, lay["ln1"])
                mo = self.ff(xn2, lay, Ne)
                sim.drop(xn2)
                out = self.residual(h1, mo)
                sim.drop(h1)
                return (out, bias) if first else out
            res = self.run_layer(j, enc_block, x, [bias])
            sim.drop(x)
            if j == 0:
                x, bias = res
            else:
                x = res
        xn = self.t5_norm(x, self.enc_final)
        sim.drop(x, bias)
        enc_out = self.dropout(xn, self.p)
        sim.drop(xn)
        # decoder: input ids = _shift_right(labels) (new_zeros, a shifted clone, masked_fill_ over a bool compare)
        labels = sim.new(Nd, 8, cat="logits_and_loss")
        dec_ids = sim.new(Nd, 8)
        tmp = sim.new(Nd, 8)
        sim.drop(tmp)
        x = self.embed(Nd)
        sim.drop(dec_ids)
        bias = xbias = None
        L0 = len(self.enc_blocks)
        for j, lay in enumerate(self.dec_blocks):
            def dec_block(h, lay=lay, first=(j == 0), bias=bias, xbias=xbias):
                if first:
                    bias = self.position_bias(self.rel_dec, t, t, bidirectional=False)
                xn = self.t5_norm(h, lay["ln0"])
                # create_position_bias_mask with is_causal: torch.where(arange compare, position_bias, min), which keeps
                # the [t, t] bool condition for its backward; the result has the permuted bias's layout, so the
                # `.contiguous()` it returns is a copy, and both are alive for a moment (integrations/sdpa_attention.py)
                ar = sim.new(2 * t, 8)
                cond = sim.new(t * t, 1)
                sim.drop(ar)
                where = sim.op([bias], bias.numel, bias.b, saves=[cond])
                sim.drop(cond)
                mask = sim.op([where], where.numel, where.b, passthrough=True)
                sim.drop(where)
                ao = self.attention(xn, xn, lay, "", Nd, Nd, mask)
                sim.drop(xn, mask)
                h1 = self.residual(h, ao)
                if first:  # cross-attention's bias: torch.zeros((1, heads, t, s), dtype=query dtype); requires_grad
                    # when the model is checkpointed (T5Attention.gradient_checkpointing, set for every module): a leaf,
                    # which its AccumulateGrad node holds, with its gradient, until the backward reaches that node
                    xbias = sim.new(c.nq * t * s, c.ab, rg=bool(c.ckpt_every))
                    if c.ckpt_every:
                        xbias.held = True
                        xbias.saves += 1
                        if sim.rec is not None:
                            sim.rec.append(_Node([], [xbias], [xbias], 0, False))
                xn2 = self.t5_norm(h1, lay["ln1"])
                co = self.attention(xn2, enc_out, lay, "x_", Nd, Ne, xbias)
                sim.drop(xn2)
                h2 = self.residual(h1, co)
                sim.drop(h1)
                xn3 = self.t5_norm(h2, lay["ln2"])
                mo = self.ff(xn3, lay, Nd)
                sim.drop(xn3)
                out = self.residual(h2, mo)
                sim.drop(h2)
                return (out, bias, xbias) if first else out
            res = self.run_layer(L0 + j, dec_block, x, [bias, xbias, enc_out])
            sim.drop(x)
            if j == 0:
                x, bias, xbias = res
            else:
                x = res
        sim.drop(enc_out, bias, xbias)
        xn = self.t5_norm(x, self.dec_final)
        sim.drop(x)
        xd = self.dropout(xn, self.p)
        sim.drop(xn)
        if self.scale:  # sequence_output * (model_dim ** -0.5)
            xs = sim.op([xd], xd.numel, xd.b)
            sim.drop(xd)
            xd = xs
        return self.seq2seq_loss(xd, labels, Nd)

    def seq2seq_loss(self, x: _T, labels: _T, rows: int) -> _T:
        """lm_head (the shared table), then ``CrossEntropyLoss(logits.view(-1, V), labels.view(-1))``: log_softmax in
        the logits' dtype (fp32 under autocast, whose cross_entropy runs in fp32), nll_loss."""
        sim, c = self.sim, self.ctx
        if self.head is None:
            head = _Linear.__new__(_Linear)
            head.fin, head.fout, head.count, head.quant = c.h, c.V, 1, 0
            head.W, head.B, head.lA, head.lB = self.emb, None, None, None
        else:
            head = self.head
        logits = self.linear(x, head, rows)
        sim.recat(logits, "logits_and_loss")
        sim.drop(x)
        lf = sim.cast(logits, 4, cat="logits_and_loss") if c.mixed else sim.ref(logits)
        sim.drop(logits)
        lsm = sim.op([lf], rows * c.V, lf.b, saves=[_OUT], cat="logits_and_loss")
        sim.drop(lf)
        loss = sim.op([lsm], 1, lf.b, saves=[labels], cat="logits_and_loss")
        sim.drop(lsm, labels)
        return loss


class _QwenVLModel(_LlamaModel):
    """Qwen2-VL / Qwen2.5-VL (transformers 5.25 models/qwen2_vl/modeling_qwen2_vl.py, models/qwen2_5_vl/
    modeling_qwen2_5_vl.py): the vision tower over every patch of the batch's images, the patch merger into the
    language model's width, the merged tokens scattered into the token embeddings, then a Qwen2 decoder with M-RoPE.

    ``get_image_features`` casts ``pixel_values`` (fp32 rows of ``channels x 2 x 14 x 14``) to the tower's dtype; the
    Conv3d patch embedding is a matmul over those rows; ``permute_input_for_window_attn`` gathers the patches into
    window order (an index copy that keeps the index); the rotary tables are fp32 ``[P, head_dim]``.  A block:
    norm1, ``qkv`` (one ``[P, 3 vh]`` output whose q/k/v are views: ``v`` keeps it alive), rotary in fp32
    (``apply_rotary_pos_emb_vision``: ``q.float()``, then back to the input dtype), SDPA per window (Qwen2.5-VL) or per
    image, each output and log-sum-exp kept, ``torch.cat`` of the outputs, ``proj``, residual, norm2, MLP, residual.
    The merger: ``ln_q``, a view as ``[P / 4, 4 vh]``, Linear, GELU, Linear, and the window order undone (an index
    copy)."""

    def build(self) -> None:
        super().build()
        c, v = self.ctx, self.ctx.arch.vision
        st = self.ctx.arch._vision_stack()
        self.layer_offset = v.num_layers
        mark = len(self.params)
        # a Conv3d: bitsandbytes quantises nn.Linear layers only
        self.patch = self.linear_p("proj", v.patch_dim, v.hidden_size, False, "visual.patch_embed.proj",
                                   quantizable=False)
        self.vblocks = []
        ln = v.kind == "qwen2_vl"
        for _ in range(v.num_layers):
            lay: dict[str, Any] = {sp.name: self.linear_p(sp.name, sp.in_features, sp.out_features, sp.bias,
                                                          "visual.blocks." + sp.path) for sp in st.linears}
            for n in st.norms:
                lay[n.name] = (self.vec_p(n.size), self.vec_p(n.size) if ln else None)
            self.vblocks.append(lay)
        m = v.hidden_size * v.spatial_merge_size ** 2
        self.ln_q = (self.vec_p(v.hidden_size), self.vec_p(v.hidden_size) if ln else None)
        self.mlp0 = self.linear_p("0", m, m, True, "visual.merger.mlp.0")
        self.mlp2 = self.linear_p("2", m, v.out_hidden_size, True, "visual.merger.mlp.2")
        # model.visual.requires_grad_(False); a tower that sees no image gets no gradient either, so AdamW (which makes
        # state only for parameters with a gradient) holds none for it
        if c.setup.freeze_vision_tower or not c.setup.images:
            for p in self.params[mark:]:
                p.rg = False

    def forward(self) -> _T:
        sim, c, v = self.sim, self.ctx, self.ctx.arch.vision
        ids = sim.new(c.N, 8)
        if c.setup.images:
            sim.new(3 * c.N, 8)  # the batch's M-RoPE position_ids [3, b, s] (get_rope_index)
        images = c.b * c.setup.images
        gh, gw, per_image = v.image_grid(c.setup.image_size)
        pixels = sim.new(images * gh * gw * v.patch_dim, 4) if images else None  # the batch's pixel_values (fp32)
        x = sim.op([self.emb], c.N * c.h, self.emb.b, saves=[ids])
        if c.ckpt_every:  # enable_input_require_grads() (transformers does it when checkpointing)
            self.input_requires_grad(x)
        if images:
            feats = self.vision(pixels, images * gh * gw)
            cat = sim.op([feats], feats.numel, feats.b)  # torch.cat(pooler_output): the per-image splits joined
            sim.drop(feats)
            emb = sim.cast(cat, x.b)  # .to(inputs_embeds.dtype): fp32 under autocast
            sim.drop(cat)
            mask = sim.new(c.N, 1)  # get_placeholder_mask: (input_ids == image_token_id).unsqueeze(-1), bool
            xs = sim.op([x, emb], x.numel, x.b, saves=[mask])  # inputs_embeds.masked_scatter(mask, image_embeds)
            sim.drop(x, emb, mask)
            x = xs
        # M-RoPE tables: position_ids expanded to [3, b, s], recomposed into [b, s, head_dim] in the hidden dtype
        self.cos = sim.new(c.b * c.s * c.d, x.b)
        self.sin = sim.new(c.b * c.s * c.d, x.b)
        self.mask = sim.new(c.b * c.s * c.s, x.b) if c.attn == "eager" else None
        self.sdpa_mask = None
        x = self.layers(x)
        sim.drop(self.cos, self.sin, self.mask)
        xn = self.norm(x, self.final)
        sim.drop(x)
        return self.lm_head_and_loss(xn)

    def vision(self, pixels: _T, P: int) -> _T:
        """The vision tower and merger over ``P`` patches: the merged features ``[P / merge**2, out_hidden_size]``."""
        sim, c, v = self.sim, self.ctx, self.ctx.arch.vision
        px = sim.cast(pixels, self.patch.W.b if not c.mixed else 4)  # pixel_values.type(self.visual.dtype)
        e = self.linear(px, self.patch, P)  # Conv3d with kernel = stride = the patch: one matmul over the rows
        sim.drop(px)
        if c.ckpt_every:  # enable_input_require_grads() hooks the tower's input embeddings (patch_embed) as well
            self.input_requires_grad(e)
        merged = P // v.spatial_merge_size ** 2
        widx = sim.new(merged, 8) if v.kind == "qwen2_5_vl" else None  # window_index (long)
        if widx is not None:  # hidden_states[window_index]: a copy; IndexBackward0 keeps the index
            x = sim.op([e], e.numel, e.b, saves=[widx])
            sim.drop(e)
        else:
            x = e
        hd = v.hidden_size // v.num_attention_heads
        self.vcos, self.vsin = sim.new(P * hd, 4), sim.new(P * hd, 4)  # rotary tables, fp32 (window order)
        gh, gw, _ = v.image_grid(c.setup.image_size)
        for i, lay in enumerate(self.vblocks):
            lay["_chunks"] = v.attention_chunks(c.setup.image_size, i) * (P // (gh * gw))  # every image's calls
            fn = (lambda h, lay=lay: self.vblock(h, lay, P))
            if c.ckpt_every and i % c.ckpt_every == 0:
                out = sim.checkpoint(fn, x, offload=c.offload)
            else:
                out = fn(x)
            sim.drop(x)
            x = out
        sim.drop(self.vcos, self.vsin)
        xn = self.vnorm(x, self.ln_q)
        sim.drop(x)
        m0 = self.linear(xn, self.mlp0, merged)  # ln_q(x).view(-1, 4 vh): a view
        sim.drop(xn)
        g = self.activation(m0, "gelu")
        sim.drop(m0)
        out = self.linear(g, self.mlp2, merged)
        sim.drop(g)
        if widx is not None:  # merged_hidden_states[reverse_indices, :]: a copy keeping argsort(window_index)
            rev = sim.new(merged, 8)
            o2 = sim.op([out], out.numel, out.b, saves=[rev])
            sim.drop(out, rev, widx)
            out = o2
        return out

    def vnorm(self, x: _T, wb: tuple) -> _T:
        """The tower's norms: LayerNorm (Qwen2-VL) or RMSNorm (Qwen2.5-VL), ``vh`` wide."""
        w, b = wb
        vh = self.ctx.arch.vision.hidden_size
        if self.ctx.arch.vision.kind == "qwen2_vl":
            return self.layernorm(x, w, b, width=vh)
        return self.rmsnorm(x, w, width=vh)

    def vrope(self, x: _T) -> _T:
        """apply_rotary_pos_emb_vision on q or k: ``x.float()``, ``x * cos + rotate_half(x) * sin``, back to x's dtype."""
        sim = self.sim
        x32 = sim.cast(x, 4)
        r = self.rope(x32, self.vcos, self.vsin)
        sim.drop(x32)
        out = sim.cast(r, x.b)
        sim.drop(r)
        return out

    def vblock(self, x: _T, lay: dict, P: int) -> _T:
        sim, c, v = self.sim, self.ctx, self.ctx.arch.vision
        vh = v.hidden_size
        xn = self.vnorm(x, lay["norm1"])
        qkv = self.linear(xn, lay["qkv"], P)
        sim.drop(xn)
        q, k, val = self.split(qkv, (P * vh, P * vh, P * vh))  # reshape, permute, unbind: views of the qkv output
        sim.drop(qkv)
        qe, ke = self.vrope(q), self.vrope(k)
        sim.drop(q, k)
        # SDPA over each window / image (non-flash path: torch.split along the sequence, one call each), outputs and
        # log-sum-exps kept; the outputs already have the [s, heads, d] layout (the query's), so
        # ``transpose(1, 2).contiguous()`` does not copy; torch.cat joins them (a copy)
        if c.attn == "eager":
            oc = self.veager(qe, ke, val, lay["_chunks"])
        else:
            lse = sim.new(P * v.num_attention_heads, 4)
            o = sim.op([qe, ke, val], P * vh, qe.b, saves=[qe, ke, val, _OUT, lse], extra_outs=[lse])
            sim.drop(lse, qe, ke, val)
            oc = sim.op([o], o.numel, o.b)
            sim.drop(o)
        ao = self.linear(oc, lay["proj"], P)
        sim.drop(oc)
        h1 = self.add(x, ao)
        sim.drop(ao)
        xn2 = self.vnorm(h1, lay["norm2"])
        if "fc1" in lay:  # VisionMlp: fc2(quick_gelu(fc1(x)))
            f = self.linear(xn2, lay["fc1"], P)
            a = self.quick_gelu(f)
            sim.drop(f)
            mo = self.linear(a, lay["fc2"], P)
            sim.drop(a)
        else:
            mo = self.mlp(xn2, lay, P, act=v.hidden_act)  # Qwen2_5_VLMLP: gated, biased
        sim.drop(xn2)
        out = self.add(h1, mo)
        sim.drop(h1, mo)
        return out

    def veager(self, q: _T, k: _T, val: _T, chunks: list[int]) -> _T:
        """The tower's eager_attention_forward over each window / image in turn (no mask, no repeat_kv): the scores
        ``q @ k^T`` and their scaled copy (transients), the fp32 softmax (kept) and its copy in q's dtype (kept by the
        matmul with v), the output and its ``transpose(1, 2).contiguous()`` copy; then torch.cat of those copies."""
        sim, v = self.sim, self.ctx.arch.vision
        vh, heads = v.hidden_size, v.num_attention_heads
        outs = []
        for n in chunks:
            S = heads * n * n
            sc = sim.op([q, k], S, q.b, saves=[q if k.rg else None, k if q.rg else None])
            sc2 = sim.op([sc], S, sc.b)
            sim.drop(sc)
            p = self.softmax(sc2, 4)
            sim.drop(sc2)
            pc = sim.cast(p, q.b)
            sim.drop(p)
            o = sim.op([pc, val], n * vh, pc.b, saves=[pc if val.rg else None, val if pc.rg else None])
            sim.drop(pc)
            outs.append(sim.op([o], o.numel, o.b))
            sim.drop(o)
        sim.drop(q, k, val)
        cat = sim.op(outs, sum(t.numel for t in outs), q.b)
        sim.drop(*outs)
        return cat

    def quick_gelu(self, x: _T) -> _T:
        """QuickGELUActivation: ``x * sigmoid(1.702 * x)`` (activations.py): the scaled copy, the sigmoid (its output
        kept) and the product (both factors kept)."""
        sim = self.sim
        t = sim.op([x], x.numel, x.b)
        sg = sim.op([t], x.numel, x.b, saves=[_OUT])
        sim.drop(t)
        out = sim.op([x, sg], x.numel, x.b, saves=[x, sg])
        sim.drop(sg)
        return out


def _model_class(ctx: _Ctx) -> type[_Model]:
    f = ctx.family
    vision = getattr(ctx.arch, "vision", None)
    if vision is not None and vision.is_qwen:
        return _QwenVLModel
    if ctx.task == "seq-cls" or f == "bert":
        return _BertModel
    if f in ("gpt2", "gpt_neox", "falcon", "opt", "phi"):
        return _GPT2Model
    if f == "t5":
        return _T5Model
    return _LlamaModel  # llama, phi3


# =====================================================================================================
# optimizer state and step temporaries


def _fp32_master(sim: _Sim, p: _T) -> _T:
    """DeepSpeed's fp32 copy of a 16-bit trainable parameter (same shape), the tensor its optimizer steps."""
    t = sim.new(p.numel, 4, cat="master_weights")
    t.dims = p.dims
    return t


def _opt_state(sim: _Sim, p: _T, opt: str) -> tuple[list[_T], int]:
    """State tensors of one parameter and the largest temporary its update needs (bytes)."""
    cat = "optimizer_state"
    if opt in ("adamw", "adamw-fused", "adamw-loop"):
        st = [sim.new(p.numel, p.b, cat=cat), sim.new(p.numel, p.b, cat=cat), sim.new(1, 4, cat=cat)]
        return st, 0
    if opt in ("adamw-8bit", "paged-adamw-8bit"):
        # bitsandbytes Optimizer2State.init_state (optim_bits=8, bitsandbytes 95f9af3 bitsandbytes/optim/optimizer.py):
        # two uint8 states and one fp32 absmax per 256-element block, fp32 states for a tensor under min_8bit_size;
        # a paged optimizer puts a state of >= 1e5 elements in cudaMallocManaged memory, outside torch's allocator
        # (get_state_buffer), never the absmax
        outside = opt == "paged-adamw-8bit" and p.numel >= BNB_PAGED_MIN_SIZE
        if p.numel < BNB_MIN_8BIT_SIZE:
            b = [sim.new(p.numel, 4, cat=cat, own=0 if outside else None) for _ in range(2)]
        else:
            blocks = -(-p.numel // BNB_BLOCK)
            b = [sim.new(p.numel, 1, cat=cat, own=0 if outside else None) for _ in range(2)]
            b += [sim.new(blocks, 4, cat=cat), sim.new(blocks, 4, cat=cat)]
        return b, 0
    if opt == "adafactor":
        # transformers.optimization.Adafactor (beta1=None): factored second moment for matrices (a row and
        # a column vector), a full one for vectors; fp32 (the state follows grad.float())
        if len(p.dims) >= 2:
            return [sim.new(p.dims[0], 4, cat=cat), sim.new(p.dims[1], 4, cat=cat)], 0
        return [sim.new(p.numel, 4, cat=cat)], 0
    return [], 0  # sgd without momentum


def _optimizer_temporaries(setup: TrainingSetup, stepped: list[tuple[int, float]], shards: int) -> list[int]:
    """Bytes of each temporary the optimizer step holds at once (all alive together), for the tensors it updates,
    given as (elements, bytes per element)."""
    sizes = [_round(n * b) for n, b in stepped]
    tmps: list[int] = []
    if setup.optimizer == "adamw":  # foreach: one sqrt(exp_avg_sq) copy of every updated tensor (_foreach_sqrt)
        tmps = sizes
    elif setup.optimizer == "adamw-loop":
        # torch.optim.AdamW(foreach=False): per parameter, (exp_avg_sq.sqrt() / bias_correction).add_(eps)
        tmps = [2 * max(sizes, default=0)]
    elif setup.optimizer == "adafactor":
        # per parameter, one after the other: grad**2 (+eps) and the approximated update (2 x fp32), plus
        # the fp32 copies of a half-precision grad and parameter
        tmps = [max((_round(n * 4) * (4 if b < 4 else 2) for n, b in stepped), default=0)]
    if setup.master_weights == "fp32":
        # the step copies this rank's gradient partition to fp32 for the master copy (stage_1_and_2.py step:
        # `single_grad_partition = flat_grad_partition.to(fp32)`; stage3.py _prepare_fp32_grad_for_sub_group, one
        # sub-group of sub_group_size = 1e9 elements at a time)
        grads32 = sum(_round(n * 4) for n, _ in stepped)
        tmps.append(min(grads32, _round(_SUB_GROUP_ELEMENTS * 4 * shards)) if setup.zero >= 3 else grads32)
    if setup.zero >= 1 and shards > 1:
        tmps = [_round(sum(tmps) / shards)]
    return [t for t in tmps if t]


# =====================================================================================================
# the walk


@dataclass
class _Walk:
    phases: dict[str, int]
    snaps: dict[str, dict[str, int]]
    params_total: int
    params_trainable: int
    notes: list[str]
    # the allocations and frees (_Sim.log) of loading the weights, of making the optimizer state, and of the step, whose
    # first backward and optimizer step start at the last two
    log: list[int] = field(default_factory=list)
    cuts: tuple[int, int, int, int] = (0, 0, 0, 0)


def _walk(setup: TrainingSetup) -> _Walk:
    """The steady-state step of ``setup``, after the first step made the optimizer state."""
    ctx = _Ctx(setup)
    sim = _Sim(reentrant=setup.reentrant)
    model = _model_class(ctx)(sim, ctx)
    model.build()
    notes: list[str] = []
    uniq = {id(p): p for p in model.params}.values()
    params = list(uniq)
    trainable = [p for p in params if p.rg]
    n_total = sum(p.numel for p in params)
    n_train = sum(p.numel for p in trainable)
    shards = max(setup.gpus, 1) if setup.zero else 1

    # ZeRO-3 / FSDP FULL_SHARD: every rank keeps 1/N of the weights (the units being run are gathered: below)
    gathered = _unsharded_units(model, params) if setup.zero >= 3 and shards > 1 else 0
    if setup.zero >= 3 and shards > 1:
        for p in params:
            if p.own:
                sim._sub(p)
                p.dead = False
                p.own = _shard_bytes(p, shards)
                sim._add(p)
        notes.append(f"ZeRO-3/FSDP: weights sharded over {shards} GPUs; the root unit and two gathered layers in full")
    # DeepSpeed's 16-bit mode: the fp32 master copy of the trainable parameters, which the optimizer steps (its state
    # is fp32 too); partitioned with the optimizer state below
    master = setup.master_weights == "fp32"

    stepped = [(p.numel, 4 if master else p.b) for p in trainable]  # what the optimizer updates: (elements, bytes)
    opt_tmps = _optimizer_temporaries(setup, stepped, shards)
    micro = min(max(setup.gradient_accumulation, 1), 2)

    loaded = len(sim.log)
    # optimizer state (steady state: created by the first step)
    masters = [_fp32_master(sim, p) for p in trainable] if master else []
    states: list[_T] = []
    for p in (masters or trainable):
        st, _ = _opt_state(sim, p, setup.optimizer)
        states.extend(st)
    if setup.optimizer in ("adamw-8bit", "paged-adamw-8bit") and any(p.numel >= BNB_MIN_8BIT_SIZE for p in (masters or trainable)):
        sim.new(256, 4, cat="optimizer_state")  # the signed and unsigned quantisation maps, moved to the device once
        sim.new(256, 4, cat="optimizer_state")
    states += masters
    if setup.zero >= 1 and shards > 1:
        for t in states:
            sim._sub(t)
            t.dead = False
            t.own = _round(t.own / shards)
            sim._add(t)
    if not setup.zero_grad_set_to_none:  # zero_grad(set_to_none=False): the gradients never go away
        for p in trainable:
            p.grad = sim.new(p.numel, p.b, cat="gradients")
    stated = len(sim.log)
    sim.set_phase("idle")

    backward_at = 0
    for _ in range(micro):
        sim.set_phase("forward")
        sim.rec = []
        sim.cache = {}
        loss = model.forward()
        for t in list(sim.cache.values()):  # autocast exits: its cached weight casts are released
            sim.drop(t)
        sim.cache = None
        nodes, sim.rec = sim.rec, []
        sim.set_phase("backward")
        backward_at = backward_at or len(sim.log)
        loss.grad = sim.new(1, 4, cat="temporaries")
        sim.backward(nodes)
        sim.drop(loss)
        if loss.grad is not None:
            sim.drop(loss.grad)
        if setup.zero >= 2 and shards > 1:
            for p in trainable:
                g = p.grad
                if g is not None and g.own:
                    sim._sub(g)
                    g.dead = False
                    g.own = _round(g.own / shards)
                    sim._add(g)
        sim.rec = None
    sim.set_phase("optimizer")
    optimizer_at = len(sim.log)
    temps = [sim.new(1, n, cat="temporaries") for n in opt_tmps]
    sim.drop(*temps)
    if setup.zero_grad_set_to_none:
        for p in trainable:
            if p.grad is not None:
                g, p.grad = p.grad, None
                sim.drop(g)
    sim.set_phase("idle")

    phases = {k: sim.peaks.get(k, 0) for k in ("forward", "backward", "optimizer")}
    snaps = {k: dict(sim.snaps.get(k, {})) for k in phases}
    if gathered:
        for k in ("forward", "backward"):
            phases[k] += gathered
            snaps[k]["temporaries"] = snaps[k].get("temporaries", 0) + gathered
    if setup.zero >= 2 and shards > 1:
        # ZeRO-2/3 reduce-scatter the gradients in buckets while the backward produces them (DeepSpeed's IPG buckets
        # of reduce_bucket_size = 5e8 elements, double-buffered with overlap_comm: deepspeed 0.19.5
        # runtime/zero/stage_1_and_2.py reduce_independent_p_g_buckets_and_remove_grads, config.py; FSDP per unit):
        # the backward never holds every gradient at once, only this rank's shard and the buckets in flight
        total = sum(_round(p.numel * p.b) for p in trainable)
        width = max((p.b for p in trainable), default=2)
        held = _round(total / shards) + 2 * min(total, _REDUCE_BUCKET_ELEMENTS * width)
        at_peak = snaps["backward"].get("gradients", 0)
        if at_peak > held:
            phases["backward"] -= at_peak - held
            snaps["backward"]["gradients"] = held
        notes.append(f"ZeRO-{setup.zero}: gradients reduce-scattered in buckets during the backward")
    if setup.gpus > 1 and not setup.zero:
        notes.append("DDP: gradient buckets hold a second copy of the gradients")
        gsize = sum(_round(p.numel * p.b) for p in trainable)
        for k in ("backward", "optimizer"):
            phases[k] += gsize
            snaps[k]["gradients"] = snaps[k].get("gradients", 0) + gsize
    return _Walk(phases, snaps, n_total, n_train, notes, sim.log, (loaded, stated, backward_at, optimizer_at))


def _storage_bytes(p: _T) -> int:
    """The bytes of ``p``'s own storage, the part ZeRO-3 / FSDP flattens and shards.  A quantised weight owns more:
    its quantisation state (bitsandbytes ``Params4bit.quant_state``: absmax and the nested quantisation's tensors;
    ``Int8Params.SCB``) is an attribute of the parameter, not a parameter, so FSDP's ``FlatParamHandle`` never
    flattens it (torch 2.13 ``distributed/fsdp/_flat_param.py``, ``flatten_tensors`` over ``module.parameters()``)
    and every rank keeps it whole."""
    return min(p.own, _round(p.numel * p.b))


def _shard_bytes(p: _T, shards: int) -> int:
    """This rank's bytes of ``p`` under ZeRO-3 / FSDP FULL_SHARD: 1/N of its storage, its quantisation state whole."""
    store = _storage_bytes(p)
    return _round(store / shards) + (p.own - store)


def _unsharded_units(model: Any, params: list[_T]) -> int:
    """Bytes of the unsharded (all-gathered) flat parameters alive during forward and backward under FSDP FULL_SHARD,
    on top of this rank's shards.

    Each unit gathers into a buffer of the whole unit's size next to the local shard, which stays allocated
    (torch 2.13 ``distributed/fsdp/_flat_param.py`` ``FlatParamHandle.unshard`` -> ``_alloc_padded_unsharded_flat_param``,
    the shard in ``flat_param._local_shard``); so a gathered unit costs its full size, not (N-1)/N of it.
    In flight: the decoder layer being computed and the one prefetched (``BackwardPrefetch.BACKWARD_PRE``, FSDP1's
    default; ``_runtime_utils.py`` ``_pre_backward_hook`` -> ``_prefetch_handle``), and the root unit (what no layer
    wraps: embeddings, final norm, head), which FSDP1 never reshards after forward (``_post_forward_reshard``:
    ``free_unsharded_flat_param = not state._is_root and ...``); a frozen root (LoRA, QLoRA) has no post-backward hook
    and is resharded only by ``_post_backward_final_callback`` -> ``_catch_all_reshard`` after the whole backward, a
    trainable one in its own post-backward hook, also after the last layer's backward."""
    blocks = getattr(model, "blocks", [])
    in_blocks = {id(p) for b in blocks for p in _block_params(b)}
    layer = max((sum(_storage_bytes(p) for p in _block_params(b)) for b in blocks), default=0)
    root = sum(_storage_bytes(p) for p in params if id(p) not in in_blocks)
    return 2 * layer + root


def _block_params(block: Any) -> list[_T]:
    out: list[_T] = []
    items = block.values() if isinstance(block, dict) else block
    for v in items:
        if isinstance(v, _Linear):
            out.extend(v.params())
        elif isinstance(v, _T):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(_block_params(v))
    return out


def _breakdown(snap: dict[str, int]) -> dict[str, int]:
    out = {k: 0 for k in BREAKDOWN_KEYS}
    for k, v in snap.items():
        out[k if k in out else "temporaries"] += v
    return out


def _replay(w: _Walk, allocator: CachingAllocator) -> None:
    """The run as the caching allocator sees it: the weights as they stay on the device; a first step, which allocates the
    cuBLAS workspaces at its first forward and first backward matmul and the optimizer state at its optimizer step; then
    the steady-state step, which finds the first one's blocks cached (its figures are the walk's)."""
    log = w.log
    loaded, stated, backward_at, optimizer_at = w.cuts
    ids = [0]  # the allocation number of the first allocation at each cut
    for lo, hi in ((0, loaded), (loaded, stated), (stated, backward_at), (backward_at, optimizer_at), (optimizer_at, len(log))):
        ids.append(ids[-1] + sum(1 for x in log[lo:hi] if x >= 0))
    cut_ids = dict(zip((0, loaded, stated, backward_at, optimizer_at, len(log)), ids))
    steady = cut_ids[stated]  # the step's own allocations: numbered anew when it runs again
    blocks: dict[int, Block] = {}
    # ZeRO-3 / FSDP weights, and under ZeRO the optimizer state (and DeepSpeed's fp32 master copy), reach the device as
    # this rank's shard, never whole; the walk makes each tensor whole and then its shard, so the whole ones (made and
    # freed before the step) are not played
    never_whole = {~x for x in log[:stated] if x < 0}

    malloc, free, pop = allocator.malloc, allocator.free, blocks.pop

    def play(lo: int, hi: int, again: int = 0) -> None:
        n = cut_ids[lo]
        for x in log[lo:hi]:
            if x > SMALL_SIZE:
                if n not in never_whole:
                    blocks[n + again if n >= steady else n] = malloc(x)
                n += 1
            elif x >= 0:  # the small pool (its own 2 MiB segments): taken as reserved byte for byte
                n += 1
            else:
                b = pop(~x + again if ~x >= steady else ~x, None)  # None: freed by the first step already
                if b is not None:
                    free(b)

    play(0, loaded)  # the weights as they stay
    allocator.malloc(BLAS_WORKSPACE_BYTES)  # the forward's thread
    play(stated, backward_at)
    for _ in range(BLAS_WORKSPACES - 1):  # autograd's device thread
        allocator.malloc(BLAS_WORKSPACE_BYTES)
    play(backward_at, optimizer_at)
    play(loaded, stated)
    play(optimizer_at, len(log))
    play(stated, len(log), again=ids[-1])


def card_bytes(peak: int, like: MemoryEstimate, outside_from: MemoryEstimate | None = None) -> int:
    """The card memory a step needs that allocates ``peak`` bytes at most, in the proportions of ``like``, a
    neighbouring plan the allocator's replay gave: its segments the allocator cannot give back (scaled) and its CUDA
    context; plus what ``outside_from`` (``like`` by default) holds outside the allocator (paged optimizer state)."""
    return _segments(peak * _kept(like) / max(like.peak_bytes, 1)) + _outside(outside_from or like) + like.cuda_context_bytes


def _kept(est: MemoryEstimate) -> int:
    return est.peak_bytes + est.allocator_bytes


def _outside(est: MemoryEstimate) -> int:
    return est.peak_bytes_nvidia_smi - _kept(est) - est.cuda_context_bytes


def _segments(nbytes: float) -> int:
    return int(-(-nbytes // ALLOCATOR_SEGMENT) * ALLOCATOR_SEGMENT)


def estimate(setup: TrainingSetup, *, cublas_workspaces: bool = True, like: MemoryEstimate | None = None) -> MemoryEstimate:
    """Peak device memory of one steady-state training step of ``setup``, per GPU.

    ``cublas_workspaces=False`` leaves out the cuBLAS workspaces, which are not tensors of the program: for a
    comparison with a tensor trace (live storage bytes) or with a CPU run.  ``like``: a neighbouring estimate (the same
    checkpointing plan) whose replay of the caching allocator stands for this one's: the allocator cache is scaled from
    it, and the replay, as long as the walk itself, is skipped (the planner's search)."""
    setup.validate()
    w = _walk(setup)
    allocator = None
    if like is None:
        allocator = CachingAllocator(expandable_segments=setup.expandable_segments)
        _replay(w, allocator)
    if cublas_workspaces:
        ws = BLAS_WORKSPACES * BLAS_WORKSPACE_BYTES
        w.phases = {k: v + ws for k, v in w.phases.items()}
        w.snaps = {k: {**v, "cublas_workspaces": ws} for k, v in w.snaps.items()}
    peak_phase = max(w.phases, key=lambda k: w.phases[k])
    peak = w.phases[peak_phase]
    # what the replay reserved, with what the walk adds to its phases afterwards (ZeRO's gathered units and gradient
    # buckets, DDP's buckets) and the small pool taken as reserved byte for byte: on a card as large as it likes, and
    # on the least card it runs in (the reserved segments it cannot give back)
    if allocator is not None:
        reserved = _segments(max(peak, allocator.peak_reserved + peak - allocator.peak_allocated))
        kept = _segments(max(peak, allocator.peak_in_use + peak - allocator.peak_allocated))
    else:
        reserved = _segments(peak * like.peak_bytes_reserved / max(like.peak_bytes, 1))
        kept = _segments(peak * _kept(like) / max(like.peak_bytes, 1))
    paged = 0
    if setup.optimizer == "paged-adamw-8bit":
        paged = sum(2 * _round(p) for p in (w.params_trainable,))  # ~2 bytes/param, unified memory
    notes = list(w.notes)
    if setup.attn == "flash":
        notes.append("flash attention keeps the same tensors as SDPA's flash kernel")
    if setup.load_in_8bit:
        notes.append("8-bit (LLM.int8): no outlier columns assumed")
        if setup.checkpointing not in ("none", None) and not setup.reentrant:
            notes.append("8-bit linears keep their inputs on the autograd context, which non-reentrant checkpointing does "
                         "not free (counted); reentrant checkpointing (transformers 4's default) frees them")
    if getattr(setup.arch, "family", "") in ("gpt_neox", "falcon", "opt", "phi"):
        notes.append(f"{setup.arch.model_type}: activations follow the GPT-2-style program (approximate)")
    return MemoryEstimate(
        peak_bytes=peak,
        peak_bytes_reserved=reserved,
        peak_bytes_nvidia_smi=kept + paged + CUDA_CONTEXT_BYTES,
        peak_phase=peak_phase,
        phases=dict(w.phases),
        breakdown=_breakdown(w.snaps[peak_phase]),
        phase_breakdown={k: _breakdown(v) for k, v in w.snaps.items()},
        params_total=w.params_total,
        params_trainable=w.params_trainable,
        setup=setup,
        notes=notes,
        allocator_bytes=kept - peak,
    )


# =====================================================================================================
# checkpointing plans live in plans.py; re-exported here (the API is ``memory.plans``)


def plans(setup: TrainingSetup, budget_bytes: int | None, known: dict[str, MemoryEstimate] | None = None):
    """Every checkpointing plan of ``setup`` with its peak, fit and extra compute; see ``plans.plans``."""
    from .plans import plans as _plans

    return _plans(setup, budget_bytes, known)


_PLAN_NAMES = ("PlanResult", "PlanList", "recommended", "extra_compute_pct", "step_flops", "plan_names")


def __getattr__(name: str):
    if name in _PLAN_NAMES:
        from . import plans as _p

        return getattr(_p, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
