"""The exact trace of one training step: ground truth for the closed form.

``trace_step(setup)`` builds the real transformers model from ``setup.arch.hf_config`` (random init on the
meta device, no download), materialises it as fake tensors (``FakeTensorMode``: no real memory), and runs
two full training iterations (forward, loss, backward, ``optimizer.step()``, ``zero_grad``), counting the bytes of
the live storages (``live_bytes_tracker``, a dispatch mode).  The second iteration is the one reported: it is the
steady state, where the optimizer state already exists during forward and backward, which is what
``torch.cuda.max_memory_allocated`` reports after a few steps.

A CPU-only torch cannot fake CUDA tensors, so the tensors are fake *CPU* tensors and the trace applies what
CUDA does differently itself:

* every allocation is rounded up to CUDA's 512-byte block (``torch.cuda`` counts rounded blocks);
* dropout keeps a 1-byte mask (CUDA's fused ``native_dropout``), not CPU's same-dtype noise tensor;
* SDPA attention runs with ``dropout_p=0`` (CUDA's flash kernel keeps a seed, not a mask, so memory is the
  same), and ``flash`` is traced as ``sdpa`` (both keep only the output and the log-sum-exp);
* mixed precision is CUDA autocast's policy, emulated by a ``TorchFunctionMode`` (CPU autocast keeps e.g.
  LayerNorm and softmax in bf16, CUDA runs them in fp32), including autocast's cache of cast weights.

torch and transformers (and peft for LoRA) are imported lazily: this module is only used by
``ckpt-doctor estimate --trace``, the benchmarks and the tests.  Nothing else in ckpt_doctor imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
import weakref
from typing import Any, Callable

CUDA_BLOCK = 512  # bytes; c10/cuda/CUDACachingAllocator.cpp kMinBlockSize / round_size()

PHASES = ("forward", "backward", "optimizer")

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

# Encoder-only model types are traced (and estimated) as sequence classifiers: the usual fine-tuning task.
ENCODER_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2", "albert", "camembert",
     "modernbert"}
)


def cuda_round(nbytes: int) -> int:
    """Bytes the CUDA caching allocator accounts for an allocation of ``nbytes`` (0 stays 0)."""
    if nbytes <= 0:
        return 0
    return -(-nbytes // CUDA_BLOCK) * CUDA_BLOCK


@dataclasses.dataclass
class TraceResult:
    peak_bytes: int
    phases: dict[str, int]
    peak_phase: str
    breakdown: dict[str, int]
    phase_breakdown: dict[str, dict[str, int]]
    params_total: int
    params_trainable: int
    seconds: float
    method: str
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TraceUnsupported(RuntimeError):
    """The setup asks for something the trace cannot run on this machine (quantisation, ZeRO, ...)."""


# --------------------------------------------------------------------------------------------------------
# model construction


def _check_supported(setup) -> None:
    bits = setup.quant_bits
    if bits and not setup.lora_r:
        raise TraceUnsupported(f"--trace of a {bits}-bit base needs adapters (--lora-r): nothing else of it can train")
    if setup.gpus != 1 or setup.zero:
        raise TraceUnsupported("--trace runs one process; drop --gpus/--zero (the closed form covers sharding)")
    if setup.checkpointing == "offload":
        raise TraceUnsupported("--trace does not model host offload; the closed form covers --checkpointing offload")
    from ckpt_doctor.estimate.arch import attention_refusal

    refusal = attention_refusal(setup.arch, setup.attn)
    if refusal:
        raise TraceUnsupported(refusal)
    if setup.attn == "flash" and attention_refusal(setup.arch, "sdpa"):
        raise TraceUnsupported(f"{setup.arch.name}: --trace runs flash attention as sdpa, which transformers refuses for "
                               f"{setup.arch.model_type}; the closed form estimates flash")


def task_of(arch) -> str:
    """seq-cls for encoders, seq2seq-lm for encoder-decoders (T5), else causal-lm."""
    if arch.model_type in ENCODER_TYPES:
        return "seq-cls"
    return "seq2seq-lm" if getattr(arch, "is_encoder_decoder", False) else "causal-lm"


def is_qwen_vl(arch) -> bool:
    """Qwen2-VL / Qwen2.5-VL: built as ``AutoModelForImageTextToText`` and fed an image batch (``make_inputs``)."""
    vision = getattr(arch, "vision", None)
    return getattr(vision, "kind", "") in ("qwen2_vl", "qwen2_5_vl")


def hf_config(setup):
    from transformers import AutoConfig

    d = dict(setup.arch.hf_config or {})
    model_type = d.pop("model_type", None) or setup.arch.model_type
    for k in ("architectures", "transformers_version", "torch_dtype", "dtype", "auto_map", "_name_or_path",
              "quantization_config", "attn_implementation", "_attn_implementation"):
        d.pop(k, None)
    cfg = AutoConfig.for_model(model_type, **d)
    cfg.use_cache = False
    return cfg


def build_model(setup, *, meta: bool, autocast_state: dict | None = None):
    """The transformers model for ``setup``: dtype, attention, LoRA and checkpointing as a user sets them."""
    import torch
    import transformers

    cfg = hf_config(setup)
    attn = "sdpa" if setup.attn == "flash" else setup.attn
    cls = (transformers.AutoModelForImageTextToText if is_qwen_vl(setup.arch)
           else {"seq-cls": transformers.AutoModelForSequenceClassification,
                 "seq2seq-lm": transformers.AutoModelForSeq2SeqLM}.get(task_of(setup.arch), transformers.AutoModelForCausalLM))
    ctx = torch.device("meta") if meta else contextlib.nullcontext()
    with ctx:
        model = cls.from_config(cfg, attn_implementation=attn)
    weights = "fp32" if setup.mixed_precision != "no" else setup.dtype
    model.to(getattr(torch, _DTYPES[weights]))
    model.train()
    if setup.quant_bits:  # as bitsandbytes and peft hold it (trace_bnb.py); the closed form's compute dtype
        from .trace_bnb import quantize

        quantize(model, setup.quant_bits, torch.bfloat16 if setup.dtype == "fp32" else getattr(torch, _DTYPES[setup.dtype]))
        if setup.kbit_upcast:
            import peft

            peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=setup.checkpointing not in ("none", None),
                                                 gradient_checkpointing_kwargs={"use_reentrant": setup.reentrant})
        else:
            model.requires_grad_(False)
    if setup.lora_r:
        import peft

        targets = list(setup.lora_targets or ("q_proj", "v_proj"))
        lcfg = peft.LoraConfig(r=setup.lora_r, lora_alpha=2 * setup.lora_r, lora_dropout=0.0,
                               target_modules=targets,
                               task_type={"seq-cls": "SEQ_CLS", "seq2seq-lm": "SEQ_2_SEQ_LM"}.get(
                                   task_of(setup.arch), "CAUSAL_LM"))
        model = peft.get_peft_model(model, lcfg)
        model.train()
        if setup.quant_bits:
            from .trace_bnb import patch_lora_forward

            patch_lora_forward(model, autocast_state if setup.mixed_precision != "no" else None)
    if getattr(setup, "freeze_vision_tower", False) and is_qwen_vl(setup.arch):  # `model.visual.requires_grad_(False)`
        for name, param in model.named_parameters():
            if ".visual." in f".{name}":
                param.requires_grad_(False)
    if getattr(setup, "frozen", "none") == "trunk":  # a heads-only fine-tune: `model.<trunk>.requires_grad_(False)`
        from ckpt_doctor.estimate.memory import HEADS

        for name, param in model.named_parameters():
            param.requires_grad_(name.split(".", 1)[0] in HEADS)
    if setup.checkpointing not in ("none", None):
        every = 1 if setup.checkpointing == "full" else int(setup.checkpointing.split("_", 1)[1])
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        enable_checkpointing(base, every, setup.reentrant)
    return model


def enable_checkpointing(model, every: int, reentrant: bool = False) -> None:
    """Checkpointing of every ``every``-th layer (non-reentrant unless ``reentrant``), through the installed
    transformers' own API: ``activation_checkpointing_enable`` from 5.23, ``gradient_checkpointing_enable`` before
    (docs/version-facts.md H3), which has no ``every_n_layers``."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable({"use_reentrant": reentrant}, every_n_layers=every)
    elif every == 1:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    else:
        import transformers

        raise ValueError(f"checkpointing every_{every} needs transformers >= 5.23 (every_n_layers); "
                         f"installed: {transformers.__version__}")


def _materialize_fake(model, fake_mode) -> None:
    """Replace every meta parameter and buffer by a fake CPU tensor of the same shape and dtype."""
    import torch

    memo: dict[int, Any] = {}
    with fake_mode:
        for mod in model.modules():
            for name, p in list(mod._parameters.items()):
                if p is None:
                    continue
                if id(p) not in memo:
                    t = torch.empty(p.shape, dtype=p.dtype, device="cpu")
                    memo[id(p)] = torch.nn.Parameter(t, requires_grad=p.requires_grad)
                mod._parameters[name] = memo[id(p)]
            for name, b in list(mod._buffers.items()):
                if b is None:
                    continue
                if id(b) not in memo:
                    memo[id(b)] = torch.zeros(b.shape, dtype=b.dtype, device="cpu")
                mod._buffers[name] = memo[id(b)]
            for name, v in list(vars(mod).items()):  # plain tensor attributes (e.g. rotary original_inv_freq)
                if isinstance(v, torch.Tensor) and not isinstance(v, torch.nn.Parameter) and v.is_meta:
                    setattr(mod, name, torch.zeros(v.shape, dtype=v.dtype, device="cpu"))


def make_inputs(setup, vocab: int):
    import torch

    b, s = setup.batch_size, setup.seq_len
    if is_qwen_vl(setup.arch) and getattr(setup, "images", 0):
        return _vl_inputs(setup, vocab)
    ids = torch.randint(0, vocab, (b, s), dtype=torch.long)
    if task_of(setup.arch) == "seq-cls":
        return {"input_ids": ids, "labels": torch.zeros(b, dtype=torch.long)}
    if task_of(setup.arch) == "seq2seq-lm":
        # the target sequence: the model makes the decoder's input ids by shifting the labels right
        # (T5ForConditionalGeneration.forward: ``decoder_input_ids = self._shift_right(labels)``), as a Trainer step
        # whose collator passes input_ids and labels only
        t = getattr(setup, "target_len", None) or s
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (b, t), dtype=torch.long)}
    return {"input_ids": ids, "labels": ids.clone()}


def _vl_inputs(setup, vocab: int):
    """A Qwen2-VL / Qwen2.5-VL batch as its processor makes it (transformers 5.25 models/qwen2_vl/
    image_processing_qwen2_vl.py): ``setup.images`` images of ``setup.image_size`` pixels per sample, each cut into
    ``grid_h x grid_w`` patches of ``channels x temporal_patch_size x patch x patch`` fp32 values (``pixel_values``,
    one row per patch, all images of the batch stacked), ``image_grid_thw`` = ``[1, grid_h, grid_w]`` per image, and
    ``input_ids`` holding one ``image_token_id`` per merged patch (the visual tokens: part of the sequence length).
    ``image_grid_thw`` is made from a Python list, so under the trace's FakeTensorMode it is a constant
    (``_qwen_vl_patches``) and its ``.tolist()`` answers."""
    import torch

    a, v = setup.arch, setup.arch.vision
    b, s = setup.batch_size, setup.seq_len
    gh, gw, per_image = v.image_grid(setup.image_size)
    n_img = b * setup.images
    image_token = int(a.hf_config.get("image_token_id", 151655))
    # text ids below every special token (and the language model's vocabulary); the image tokens after the first one
    low = min(vocab, a.vocab_size, image_token, int(a.hf_config.get("bos_token_id") or image_token))
    ids = torch.randint(0, low, (b, s), dtype=torch.long)
    start = min(1, s - setup.images * per_image)
    ids[:, start:start + setup.images * per_image] = image_token
    pixels = torch.randn(n_img * gh * gw, v.num_channels * v.temporal_patch_size * v.patch_size ** 2)
    grid = torch.tensor([[1, gh, gw]] * n_img, dtype=torch.long)
    # M-RoPE positions, [3, b, s] as get_rope_index makes them from the processor's mm_token_type_ids (their values
    # change no memory; computing them reads the token ids, which a fake tensor does not have)
    positions = torch.arange(s).view(1, 1, s).expand(3, b, s).contiguous()
    return {"input_ids": ids, "labels": ids.clone(), "pixel_values": pixels, "image_grid_thw": grid,
            "position_ids": positions}


@contextlib.contextmanager
def _qwen_vl_patches(setup):
    """What a FakeTensorMode trace of Qwen2-VL / Qwen2.5-VL needs; memory stays that of the real step.

    * Data-dependent shapes: the vision tower reads ``image_grid_thw`` and the window bounds with ``.tolist()``
      (transformers 5.25 vision_utils.py ``get_vision_position_ids`` / ``get_vision_window_index``,
      models/qwen2_5_vl/modeling_qwen2_5_vl.py ``get_image_features`` and ``Qwen2_5_VLVisionAttention.forward``:
      ``lengths.tolist()``).  FakeTensorMode answers ``.item()`` only for constant tensors of at most
      ``CONSTANT_NUMEL_LIMIT`` (1) elements; the limit is raised so the small integer tensors made from Python lists
      (``image_grid_thw``, and everything computed from constants only) stay constants.  ``get_vision_window_index``
      builds its index from ``torch.arange`` (never a constant), so it runs on the real grid outside the mode and its
      two tensors come back as constants.
    * ``position_ids`` are given (``_vl_inputs``), so ``compute_3d_position_ids`` / ``get_rope_index`` do not run.
    * ``get_placeholder_mask``'s ``torch_compilable_check`` reads the image-token count (data): skipped
      (``TRANSFORMERS_DISABLE_TORCH_CHECK=1``); the inputs are made to match it.
    * ``inputs_embeds.masked_scatter(image_mask, image_embeds)``: its backward takes ``grad.masked_select(mask)``, whose
      size is data-dependent (no fake kernel without a ShapeEnv).  Replaced by an autograd function that saves the same
      ``mask`` and returns the same tensors: ``grad.masked_fill(mask, 0)`` for the text embeddings and a new tensor of
      the image features' shape -- what ``masked_select(...).view(source.shape)`` allocates when the placeholder count
      matches the features (torch 2.13 FunctionsManual.cpp ``masked_scatter_backward_symint``)."""
    if not is_qwen_vl(setup.arch):
        yield
        return
    import importlib
    import os

    import torch
    from torch._subclasses import fake_tensor as ft

    orig_scatter = torch.Tensor.masked_scatter

    class _MaskedScatter(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, mask, source):
            ctx.save_for_backward(mask)
            ctx.source_shape = source.shape
            return orig_scatter(x, mask, source)

        @staticmethod
        def backward(ctx, grad):
            (mask,) = ctx.saved_tensors
            gx = grad.masked_fill(mask, 0) if ctx.needs_input_grad[0] else None
            gs = grad.new_empty(ctx.source_shape) if ctx.needs_input_grad[2] else None
            return gx, None, gs

    mods = [importlib.import_module(f"transformers.models.{m}.modeling_{m}") for m in ("qwen2_vl", "qwen2_5_vl")]
    saved = [(m, m.get_vision_window_index) for m in mods if hasattr(m, "get_vision_window_index")]

    def on_the_real_grid(orig):
        def window_index(grid_thw, *args, **kwargs):
            real = getattr(grid_thw, "constant", None)
            if real is None:
                return orig(grid_thw, *args, **kwargs)
            with ft.unset_fake_temporarily():
                index, bounds = orig(real, *args, **kwargs)
                index, bounds = (index.tolist(), index.dtype), (bounds.tolist(), bounds.dtype)
            return torch.tensor(index[0], dtype=index[1]), torch.tensor(bounds[0], dtype=bounds[1])
        return window_index

    limit, env = ft.CONSTANT_NUMEL_LIMIT, os.environ.get("TRANSFORMERS_DISABLE_TORCH_CHECK")
    ft.CONSTANT_NUMEL_LIMIT = 1 << 16
    os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] = "1"
    torch.Tensor.masked_scatter = lambda self, mask, source: _MaskedScatter.apply(self, mask, source)
    for m, fn in saved:
        m.get_vision_window_index = on_the_real_grid(fn)
    try:
        yield
    finally:
        ft.CONSTANT_NUMEL_LIMIT = limit
        torch.Tensor.masked_scatter = orig_scatter
        for m, fn in saved:
            m.get_vision_window_index = fn
        if env is None:
            os.environ.pop("TRANSFORMERS_DISABLE_TORCH_CHECK", None)
        else:
            os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] = env


def make_optimizer(setup, params):
    import torch

    params = [p for p in params if p.requires_grad]
    if setup.optimizer in ("adamw", "adamw-fused", "adamw-loop"):
        fused = setup.optimizer == "adamw-fused"
        foreach = setup.optimizer == "adamw"
        # foreach is what torch picks by default for CUDA tensors; on CPU it must be asked for.
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, foreach=foreach, fused=fused or None)
    if setup.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        return _bnb_adamw_8bit(params, paged=setup.optimizer == "paged-adamw-8bit")
    if setup.optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    if setup.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # as transformers.Trainer builds it for optim="adafactor"
        return Adafactor(params, lr=1e-4, scale_parameter=False, relative_step=False)
    raise TraceUnsupported(f"--trace cannot run optimizer {setup.optimizer!r}")


def _bnb_adamw_8bit(params, *, paged: bool):
    """bitsandbytes' 8-bit AdamW (``bnb.optim.AdamW8bit``, the Trainer's ``adamw_bnb_8bit``; ``PagedAdamW8bit``) as
    memory sees it, without bitsandbytes or a GPU.  It allocates what ``Optimizer2State.init_state`` allocates on the
    first step (bitsandbytes 95f9af3 bitsandbytes/optim/optimizer.py): per parameter two uint8 states of its shape and
    two fp32 absmax vectors of one value per 256-element block, or two fp32 states for a tensor under
    ``min_8bit_size`` (4096 elements); the two 256-value quantisation maps, once.  A paged optimizer's state buffer of
    >= 1e5 elements is ``F.get_paged`` managed memory, outside torch's allocator (``get_state_buffer``): not
    allocated here.  ``update_step`` is one in-place CUDA kernel (``optimizer_update_8bit_blockwise`` /
    ``optimizer_update_32bit``): no temporaries, so the step changes nothing here (the values do not matter)."""
    import torch

    from .memory import BNB_BLOCK, BNB_MIN_8BIT_SIZE, BNB_PAGED_MIN_SIZE

    class AdamW8bitMemory(torch.optim.Optimizer):
        def __init__(self, params) -> None:
            super().__init__(params, {"lr": 1e-4})
            self.qmaps: tuple | None = None

        def _buffer(self, p, dtype):
            return None if paged and p.numel() >= BNB_PAGED_MIN_SIZE else torch.zeros_like(p, dtype=dtype)

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    if p.grad is None or state:
                        continue
                    n = p.numel()
                    if n < BNB_MIN_8BIT_SIZE:
                        state["state1"], state["state2"] = self._buffer(p, torch.float32), self._buffer(p, torch.float32)
                        continue
                    if self.qmaps is None:
                        self.qmaps = (torch.zeros(256), torch.zeros(256))
                    state["state1"], state["state2"] = self._buffer(p, torch.uint8), self._buffer(p, torch.uint8)
                    blocks = -(-n // BNB_BLOCK)
                    state["absmax1"], state["absmax2"] = torch.zeros(blocks), torch.zeros(blocks)

    return AdamW8bitMemory(params)


# --------------------------------------------------------------------------------------------------------
# CUDA semantics on CPU tensors


_LOWER = frozenset({
    "linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "baddbmm", "addmm", "addbmm", "addmv", "addr",
    "mv", "einsum", "chain_matmul", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "prelu", "scaled_dot_product_attention", "linalg_vecdot",
})
_FP32 = frozenset({
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
    "sinh", "tan", "pow", "__pow__", "softplus", "layer_norm", "group_norm", "cosine_similarity", "nll_loss",
    "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss", "binary_cross_entropy_with_logits",
    "cross_entropy", "logsumexp", "cdist", "dist", "renorm",
})
_FP32_OPT_DTYPE = frozenset({"softmax", "log_softmax", "sum", "prod", "cumsum", "cumprod"})
_PROMOTE = frozenset({"addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "stack", "cat",
                      "index_put", "scatter_add", "tensordot", "index_copy"})


def _cuda_semantics_mode(mixed: str, state: dict):
    """A TorchFunctionMode that makes CPU tensors behave like CUDA ones where memory differs (see module doc)."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_map

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed)

    def cast(x, dtype):
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()) or x.dtype == dtype or x.dtype == torch.float64:
            return x
        # autocast caches the low-precision cast of an fp32 leaf that requires grad and is no view (torch
        # aten/src/ATen/autocast_mode.cpp cached_cast: ``arg.requires_grad() && arg.is_leaf() && !arg.is_view()``);
        # a weight's view made under no_grad, ``weight.t()`` in a custom Function, is a leaf that requires grad
        cacheable = (state["cache"] is not None and x.is_leaf and x.requires_grad and not x._is_view()
                     and dtype == low and x.dtype == torch.float32)
        if cacheable:
            hit = state["cache"].get(id(x))
            if hit is not None and hit[0]() is x:
                return hit[1]
        y = x.to(dtype)
        if cacheable:
            state["cache"][id(x)] = (weakref.ref(x), y)
        return y

    class _CudaSemantics(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            name = getattr(func, "__name__", "")
            if name == "dropout" and func is torch.nn.functional.dropout:
                x = args[0] if args else kwargs["input"]
                p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
                training = args[2] if len(args) > 2 else kwargs.get("training", True)
                if not training or p == 0:
                    return x
                return torch.native_dropout(x, p, True)[0]
            if name == "scaled_dot_product_attention":
                if len(args) > 4:
                    args = tuple(args[:4]) + (0.0,) + tuple(args[5:])
                else:
                    kwargs["dropout_p"] = 0.0
                if low is not None and state["enabled"]:
                    args, kwargs = tree_map(lambda t: cast(t, low), (args, kwargs))
                mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
                if isinstance(mask, torch.Tensor) and mask.is_floating_point() and mask.requires_grad:
                    return _efficient_sdpa(args, kwargs)
                return func(*args, **kwargs)
            if low is not None and state["enabled"]:
                if name in _LOWER:
                    args, kwargs = tree_map(lambda t: cast(t, low), (args, kwargs))
                elif name in _FP32:
                    args, kwargs = tree_map(lambda t: cast(t, torch.float32), (args, kwargs))
                elif name in _FP32_OPT_DTYPE and kwargs.get("dtype") is None and (
                    name not in ("softmax", "log_softmax") or len(args) < 3 or args[2] is None  # F.softmax 3rd arg
                ):
                    first = args[0] if args else None
                    if isinstance(first, torch.Tensor) and first.is_floating_point() and first.dtype in (
                        torch.float16, torch.bfloat16
                    ):
                        kwargs["dtype"] = torch.float32
                elif name in _PROMOTE:
                    flat = [t for t in torch.utils._pytree.tree_leaves((args, kwargs))
                            if isinstance(t, torch.Tensor) and t.is_floating_point()]
                    if flat and len({t.dtype for t in flat}) > 1:
                        widest = torch.float32 if any(t.dtype == torch.float32 for t in flat) else flat[0].dtype
                        args, kwargs = tree_map(lambda t: cast(t, widest), (args, kwargs))
            return func(*args, **kwargs)

    return _CudaSemantics()


def _efficient_sdpa(args, kwargs):
    """``scaled_dot_product_attention`` with an additive mask that requires grad (T5's relative position bias), as CUDA
    runs it: flash takes no mask, so the memory-efficient kernel (torch 2.13 aten/src/ATen/native/transformers/
    attention.cpp ``scaled_dot_product_attention``: ``preprocess_mask`` expands the mask to [b, heads, q, k], then
    ``_scaled_dot_product_efficient_attention``), which saves q, k, v, the mask, the output and an fp32 log-sum-exp, and
    whose backward allocates the mask's gradient at its expanded size (``_efficient_attention_backward``: grad_bias of
    ``bias.sizes()``).  CPU's SDPA refuses a mask that requires grad to its flash kernel and runs the math fallback
    (``_fused_sdp_choice`` = math), which keeps the [b, heads, q, k] probabilities: a CPU artifact, so the trace calls
    the efficient op itself (its fake-tensor meta kernels give the shapes)."""
    import torch

    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
    kw = dict(zip(names, args))
    kw.update(kwargs)
    q, k, v, mask = kw["query"], kw["key"], kw["value"], kw["attn_mask"]
    bias = mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, bias, True, float(kw.get("dropout_p") or 0.0), bool(kw.get("is_causal") or False), scale=kw.get("scale"))
    return out[0]


def _inplace_grad_accumulation_mode(state: dict):
    """Undo one artifact of tracing under a dispatch mode: autograd sums the gradients a tensor receives from its
    uses in place when it holds the last reference to the first one (torch 2.13 torch/csrc/autograd/input_buffer.cpp
    ``accumulate``), but its
    ``can_accumulate_inplace`` asks ``at::isTensorSubclassLike``, which is true whenever any dispatch mode is active
    (ATen/TensorSubclassLikeUtils.h: ``if (c10::impl::dispatch_mode_enabled()) return true``).  So under
    FakeTensorMode / the live-bytes mode every such sum is out of place.  For a tied embedding under autocast that is one
    extra [V, h] fp32 tensor a real step never holds (the lm_head's gradient reaches the weight as ToCopyBackward0's
    fresh tensor, summed in place; in pure fp32/bf16 it is a TBackward0 view, summed out of place, as here).
    T5's cross-attention bias, which checkpointing makes require grad and every decoder block uses, had one
    `[1, heads, t, s]` sum too many.  This mode turns the backward's ``add(old, new)`` of two tensors of one shape and
    dtype into ``old.add_(new)`` when ``old`` is not a view and requires no grad, as the engine does without a mode;
    the real CPU steps read from the allocator agree with it (``allocator_step``, every grid family)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    add = torch.ops.aten.add.Tensor

    class _InplaceGradAccumulation(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is add and state.get("backward") and len(args) == 2 and not kwargs:
                a, b = args
                if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                        and a.dtype == b.dtype and not a._is_view() and a.is_contiguous() and not a.requires_grad):
                    return torch.ops.aten.add_.Tensor(a, b)
            return func(*args, **kwargs)

    return _InplaceGradAccumulation()


# --------------------------------------------------------------------------------------------------------
# trackers


def _recompute_under(model, mode) -> None:
    """Checkpoint recomputation runs inside the autograd engine, where Python function modes are not active;
    re-enter ``mode`` there so the recomputed forward sees the same CUDA semantics (as checkpoint re-enters
    autocast)."""
    from torch.overrides import _get_current_function_mode_stack

    def wrap(ckpt):
        def checkpoint_func(function, *args, **kwargs):
            def run(*a, **k):
                if any(m is mode for m in _get_current_function_mode_stack()):
                    return function(*a, **k)
                with mode:
                    return function(*a, **k)

            return ckpt(run, *args, **kwargs)

        return checkpoint_func

    for mod in model.modules():
        f = getattr(mod, "_gradient_checkpointing_func", None)
        if f is not None and getattr(mod, "gradient_checkpointing", False):
            mod._gradient_checkpointing_func = wrap(f)


class _PhaseMixin:
    def _phase_init(self) -> None:
        self.phase = "setup"
        self.phase_peaks: dict[str, int] = {}
        self.phase_snaps: dict[str, dict[str, int]] = {}

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self._note()

    def start_measure(self) -> None:
        self.phase_peaks.clear()
        self.phase_snaps.clear()

    def _note(self) -> None:
        cur = self.current_total()
        if cur > self.phase_peaks.get(self.phase, -1):
            self.phase_peaks[self.phase] = cur
            self.phase_snaps[self.phase] = self.current_categories()


@contextlib.contextmanager
def _hf_sees_real_tensors():
    """transformers treats FakeTensors as "tracing" and then builds an explicit s x s causal mask, which turns off
    SDPA's ``is_causal`` fast path (and GQA without ``repeat_kv``).  A real CUDA step does not, so neither do we."""
    try:
        from transformers import masking_utils
    except ImportError:  # pragma: no cover - older transformers
        yield
        return
    orig = getattr(masking_utils, "is_tracing", None)
    if orig is None:
        yield
        return
    orig_packed = getattr(masking_utils, "find_packed_sequence_indices", None)
    masking_utils.is_tracing = lambda tensor=None: orig(None)
    if orig_packed is not None:  # reads position_ids values; our sequences are never packed
        masking_utils.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        masking_utils.is_tracing = orig
        if orig_packed is not None:
            masking_utils.find_packed_sequence_indices = orig_packed


def live_bytes_tracker(describe: Callable[[str, Any], str] | None = None):
    """Live storage bytes, CUDA-rounded, per phase: every storage an op returns, or that is registered with ``track``,
    counts until Python frees it (fake tensors and real ones alike).  ``allocator_step`` checks it against the CPU
    allocator's own events.  The breakdown says what a storage is when it was registered (parameters, buffers,
    inputs), else the phase whose op made it: "made in backward" holds the gradients, "made in optimizer" the
    optimizer state.

    ``describe(origin, tensor)``, a diagnostic's (``bench/estimate_trace_diff.py``), names each storage instead (origin:
    the kind it was registered as, or the phase and op that made it, "bac:mm"), and the storages live at each phase's
    peak are kept in ``peak_live`` as (bytes, name).
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveBytes(_PhaseMixin, TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self._phase_init()
            self.live: dict[int, tuple[int, str, Any]] = {}
            self.kinds: dict[str, int] = {}
            self.total = 0
            self.peak_live: dict[str, list[tuple[int, str]]] = {}

        def current_total(self) -> int:
            return self.total

        def current_categories(self) -> dict[str, int]:
            return {**{kind: n for kind, n in self.kinds.items() if n}, "Total": self.total}

        def _note(self) -> None:
            if describe is not None and self.total > self.phase_peaks.get(self.phase, -1):
                self.peak_live[self.phase] = [(n, kind) for n, kind, _ in self.live.values()]
            super()._note()

        def _drop(self, key: int) -> None:
            nbytes, kind, _ = self.live.pop(key, (0, "", None))
            if nbytes:
                self.total -= nbytes
                self.kinds[kind] -= nbytes

        def track(self, *objs, kind: str | None = None, op: str | None = None) -> None:
            for t in tree_leaves(objs):
                if not isinstance(t, torch.Tensor):
                    continue
                st = t.untyped_storage()
                key = st._cdata
                if key in self.live:
                    continue
                nbytes = cuda_round(st.nbytes())
                if describe is not None:
                    name = describe(kind or f"{self.phase[:3]}:{op}", t)
                else:
                    name = kind or f"made in {self.phase}"
                self.live[key] = (nbytes, name, weakref.ref(st, lambda _r, k=key: self._drop(k)))
                self.total += nbytes
                self.kinds[name] = self.kinds.get(name, 0) + nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.track(out, op=func.__name__)
            self._note()
            return out

    return LiveBytes()


# --------------------------------------------------------------------------------------------------------
# the step


def _fused_loss_forward(model, inputs):
    """The loss of a causal LM patched with Liger's fused linear cross-entropy (``use_liger_kernel=True``; liger-kernel
    ead96b6 src/liger_kernel/transformers/model/llama.py ``lce_forward``, and the same in every model it patches): the
    decoder's last hidden states, never the logits, go to ``LigerForCausalLMLoss`` (model/loss_utils.py), which shifts
    the labels and runs ``LigerFusedLinearCrossEntropyFunction`` on the flattened tokens (Gemma's final soft-capping is
    applied inside its kernel, in place: nothing to allocate).  Liger's other kernels
    (RMSNorm, SwiGLU, RoPE) are not applied: the trace keeps transformers' own, as the closed form does."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.base_model(**{k: v for k, v in inputs.items() if k != "labels"})[0]
    kept = hidden[:, slice(0, None), :]  # logits_to_keep=0
    labels = torch.nn.functional.pad(inputs["labels"], (0, 1), value=-100)
    shift_labels = labels[..., 1:].contiguous()
    del labels
    weight = base.get_output_embeddings().weight
    return _fused_linear_cross_entropy().apply(kept.view(-1, kept.shape[-1]), weight, shift_labels.view(-1))


@functools.cache
def _fused_linear_cross_entropy():
    """``LigerFusedLinearCrossEntropyFunction`` (reduction "mean", no bias, ``accum_dtype=None``) as memory sees it, in
    torch (liger-kernel ead96b6 src/liger_kernel/ops/fused_linear_cross_entropy.py), line for line where it allocates:

    * forward: ``grad_input = zeros_like(_input)``, ``grad_weight = zeros_like(weight)`` when the head trains, an fp32
      ``loss_1d`` and the ``target != ignore_index`` mask; then the tokens in chunks of
      ``next_power_of_2(cdiv(BT, cdiv(V, H)))``: a chunk's logits (``_input_chunk @ weight.t()``, in the matmul's
      dtype), whose gradient the Triton kernel writes in place, ``grad_logits_chunk @ weight`` copied into
      ``grad_input``, and the weight's gradient summed into ``grad_weight``: on a CUDA card of capability >= 8 with
      torch >= 2.8, an fp32 ``grad_weight`` and 16-bit logits, by ``torch.addmm(..., out_dtype=torch.float32,
      out=grad_weight)`` (no temporary but the input chunk cast to the logits' dtype), else ``grad_weight +=
      torch.mm(grad_logits_chunk.t(), _input_chunk).float()``.  The loop's locals (the last chunk's logits and cast
      input) live on into the next chunk, as in Python.  Only the gradients are saved for backward;
    * backward: ``torch.equal(grad_output, torch.tensor(1.0))``, then the gradients scaled in place.

    The Triton kernel's values are not computed (memory only): the loss is the sum of the zero ``loss_1d``."""
    import torch

    class FusedLinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, _input, weight, target):
            BT, H = _input.shape
            V = weight.shape[0]
            inc_factor = -(-V // H)
            chunk_size = 1 << max(0, (-(-BT // inc_factor) - 1).bit_length())  # triton.next_power_of_2
            grad_input = torch.zeros_like(_input)
            grad_weight = torch.zeros_like(weight) if weight.requires_grad else None
            loss_1d = torch.zeros(BT, dtype=torch.float32)
            target_mask = target != -100
            target_mask.sum()  # .item(): the count of labelled tokens
            for start_idx in range(0, BT, chunk_size):
                end_idx = min(start_idx + chunk_size, BT)
                _input_chunk = _input[start_idx:end_idx]
                logits_chunk = _input_chunk @ weight.t()
                logits_chunk = logits_chunk.contiguous()
                grad_logits_chunk = logits_chunk  # liger_cross_entropy_kernel: loss and gradient, in place
                grad_input[start_idx:end_idx] = grad_logits_chunk @ weight
                if grad_weight is not None:
                    if grad_weight.dtype == torch.float32 and grad_logits_chunk.dtype in (torch.float16, torch.bfloat16):
                        input_chunk = _input_chunk  # torch.addmm(grad_weight, ..., out_dtype=fp32, out=grad_weight)
                        if input_chunk.dtype != grad_logits_chunk.dtype:
                            input_chunk = input_chunk.to(grad_logits_chunk.dtype)
                    else:
                        grad_weight += torch.mm(grad_logits_chunk.t(), _input_chunk).float()
            loss = torch.sum(loss_1d)
            ctx.save_for_backward(grad_input.detach(), grad_weight.detach() if grad_weight is not None else None)
            return loss

        @staticmethod
        def backward(ctx, grad_output):
            grad_input, grad_weight = ctx.saved_tensors
            torch.tensor(1.0)  # torch.equal(grad_output, torch.tensor(1.0)); element_mul_kernel scales in place
            return grad_input, grad_weight, None

    return FusedLinearCrossEntropy


def _step(model, opt, inputs, setup, tracker, autocast_state, iterations: int) -> None:
    micro = min(max(setup.gradient_accumulation, 1), 2)  # the 2nd micro-step already shows the held grads
    for it in range(iterations):
        if it == iterations - 1:
            tracker.start_measure()
        for _ in range(micro):
            tracker.set_phase("forward")
            autocast_state["enabled"] = True
            autocast_state["cache"] = {}
            # the output object (and its logits) is dropped, as in Trainer
            loss = _fused_loss_forward(model, inputs) if getattr(setup, "loss", "plain") == "fused" else model(**inputs).loss
            if micro > 1:
                loss = loss / setup.gradient_accumulation
            autocast_state["cache"] = None  # autocast clears its weight cache on exit
            tracker.set_phase("backward")
            autocast_state["backward"] = True
            loss.backward()
            autocast_state["backward"] = False
            del loss
        autocast_state["enabled"] = False
        tracker.set_phase("optimizer")
        opt.step()
        opt.zero_grad(set_to_none=getattr(setup, "zero_grad_set_to_none", True))
        tracker.set_phase("idle")


def _parameter_counts(model) -> tuple[int, int]:
    """(total, trainable) parameters of ``model``, tied ones once, a 4-bit linear's as many as it stands for."""
    from .trace_bnb import packed_elements

    params = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in params) + packed_elements(model)
    return int(total), int(sum(p.numel() for p in params if p.requires_grad))


def _result(tracker, model, t0: float, method: str, notes: list[str]) -> TraceResult:
    phases = {p: int(tracker.phase_peaks.get(p, 0)) for p in PHASES}
    peak_phase = max(PHASES, key=lambda p: phases[p])
    total, trainable = _parameter_counts(model)
    return TraceResult(
        peak_bytes=phases[peak_phase], phases=phases, peak_phase=peak_phase,
        breakdown=dict(tracker.phase_snaps.get(peak_phase, {})),
        phase_breakdown={p: dict(tracker.phase_snaps.get(p, {})) for p in PHASES},
        params_total=int(total), params_trainable=int(trainable), seconds=round(time.perf_counter() - t0, 3),
        method=method, notes=notes,
    )


class TraceFailed(TraceUnsupported):
    """The trace of a setup failed inside torch / transformers / peft: one line naming the model, never a traceback."""


def trace_step(setup, device: str = "cpu", *, fake: bool = True, iterations: int = 2, tracker=None) -> TraceResult:
    """Peak bytes of one steady-state training step of ``setup`` as ``torch.cuda.max_memory_allocated`` sees it
    (``tracker``: a ``live_bytes_tracker`` to count with, a diagnostic's; a plain one by default).

    Raises :class:`TraceUnsupported` (a setup the trace cannot run, or transformers refuses) or :class:`TraceFailed`
    (anything else that went wrong, in one line naming the model) -- never another exception, except ImportError
    (torch, transformers or peft missing), which the caller turns into an install hint."""
    _check_supported(setup)
    try:
        return _trace_step(setup, device, fake=fake, iterations=iterations, tracker=tracker)
    except (TraceUnsupported, ImportError):
        raise
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        name = getattr(setup.arch, "name", "the model")
        first = (str(exc).strip().splitlines() or [""])[0]
        if len(first) > 300:
            first = first[:297] + "..."
        raise TraceFailed(f"--trace of {name} ({setup.arch.model_type}) failed: {type(exc).__name__}: {first}") from None


def _trace_step(setup, device: str = "cpu", *, fake: bool = True, iterations: int = 2, tracker=None) -> TraceResult:
    """Peak bytes of one steady-state training step of ``setup`` as ``torch.cuda.max_memory_allocated`` sees it.

    ``fake=True`` (default): FakeTensorMode, no real memory, any model size.
    ``fake=False``: a real CPU step of a (small!) model -- a cross-check.
    Both count live storage bytes (``live_bytes_tracker``).
    """
    if device != "cpu":
        raise TraceUnsupported("the trace fakes CPU tensors and applies CUDA's rounding itself; use device='cpu'")
    _check_supported(setup)
    import torch

    t0 = time.perf_counter()
    notes: list[str] = []
    if setup.attn == "flash":
        notes.append("flash traced as sdpa (same saved tensors: output + log-sum-exp)")
    autocast_state: dict[str, Any] = {"enabled": False, "cache": None}
    sem = _cuda_semantics_mode(setup.mixed_precision, autocast_state)
    vocab = int(getattr(hf_config(setup), "vocab_size", 32000))
    fake_mode = contextlib.nullcontext()
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        model = build_model(setup, meta=True, autocast_state=autocast_state)
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        _materialize_fake(model, fake_mode)
    else:
        torch.manual_seed(0)
        model = build_model(setup, meta=False, autocast_state=autocast_state)
    _recompute_under(model, sem)
    with _hf_sees_real_tensors(), (_qwen_vl_patches(setup) if fake else contextlib.nullcontext()), fake_mode:
        inputs = make_inputs(setup, vocab)
        opt = make_optimizer(setup, model.parameters())
        tracker = tracker or live_bytes_tracker()
        tracker.track(list(model.parameters()), kind="parameters")
        tracker.track(list(model.buffers()), kind="buffers")
        tracker.track(list(inputs.values()), kind="inputs")
        with tracker, sem, _inplace_grad_accumulation_mode(autocast_state):
            _step(model, opt, inputs, setup, tracker, autocast_state, iterations)
    method = "FakeTensorMode + live storage bytes" if fake else "real CPU step + live storage bytes"
    return _result(tracker, model, t0, method, notes)


# --------------------------------------------------------------------------------------------------------
# the allocator's own account of a real step


_MARK = 1_000_003  # sentinel allocation sizes (bytes): _MARK + index of the phase that starts


def allocator_step(setup, *, iterations: int = 2) -> TraceResult:
    """Peak bytes of one steady-state training step of a (small!) real model on CPU, read from the CPU allocator's
    own events -- no dispatch mode, no fake tensors, nothing that changes what autograd does.

    The step runs ``iterations - 1`` times unobserved (the optimizer state exists afterwards), then once under
    ``torch.profiler.profile(profile_memory=True)``, which records every allocation and free of the CPU allocator
    (``c10::reportMemoryUsage``, with its size).  The live total starts from the storages alive before the measured
    iteration (parameters, buffers, optimizer state, inputs, held gradients), each allocation is rounded as CUDA's
    caching allocator rounds it (512 bytes), and the phases are separated by sentinel allocations of sizes no
    tensor of the step has.  CUDA semantics a CPU step lacks (autocast's CUDA op lists, 1-byte dropout masks) are
    applied by the same function mode as the trace (not a dispatch mode).  Differences from the fake trace are
    real: e.g. autograd's in-place gradient accumulation, which any dispatch mode turns off.
    """
    _check_supported(setup)
    import torch
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    torch.manual_seed(0)
    autocast_state: dict[str, Any] = {"enabled": False, "cache": None}
    sem = _cuda_semantics_mode(setup.mixed_precision, autocast_state)
    model = build_model(setup, meta=False, autocast_state=autocast_state)
    _recompute_under(model, sem)
    inputs = make_inputs(setup, int(getattr(hf_config(setup), "vocab_size", 32000)))
    opt = make_optimizer(setup, model.parameters())

    class Marks:
        def start_measure(self) -> None:
            pass

        def set_phase(self, phase: str) -> None:
            order = ("forward", "backward", "optimizer", "idle")
            torch.empty(_MARK + order.index(phase), dtype=torch.uint8)  # allocated and freed at once

    with sem:
        if iterations > 1:
            _step(model, opt, inputs, setup, Marks(), autocast_state, iterations - 1)
    live: dict[int, int] = {}
    tensors = list(model.parameters()) + list(model.buffers()) + list(inputs.values())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    tensors += list(getattr(opt, "qmaps", None) or ())  # the 8-bit optimizer's quantisation maps
    for t in tensors:
        st = t.untyped_storage()
        live[st.data_ptr()] = cuda_round(st.nbytes())
    base = sum(live.values())
    # oneDNN's CPU kernels keep workspaces of their own that depend on the CPU (on a Xeon, the tiny Qwen2.5-VL's Conv3d
    # patch embedding held 2.8 MB more in backward than the trace; the same test had passed on an EPYC): the step runs
    # torch's native kernels, without buffers that neither CUDA nor the trace has
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, torch.backends.mkldnn.flags(enabled=False):
        with sem:
            _step(model, opt, inputs, setup, Marks(), autocast_state, 1)

    def walk(nodes):
        for n in nodes:
            yield n
            yield from walk(n.children)

    events = sorted((n for n in walk(prof.profiler.kineto_results.experimental_event_tree())
                     if n.tag == _EventType.Allocation), key=lambda n: n.start_time_ns)
    cur, phase = base, "setup"
    peaks: dict[str, int] = {}
    marks = {_MARK + i: p for i, p in enumerate(("forward", "backward", "optimizer", "idle"))}
    for n in events:
        size = int(n.extra_fields.alloc_size)
        if abs(size) in marks:
            if size > 0:
                phase = marks[size]
                peaks[phase] = max(peaks.get(phase, 0), cur)
            continue
        cur += cuda_round(size) if size > 0 else -cuda_round(-size)
        peaks[phase] = max(peaks.get(phase, 0), cur)
    phases = {p: int(peaks.get(p, 0)) for p in PHASES}
    peak_phase = max(PHASES, key=lambda p: phases[p])
    total, trainable = _parameter_counts(model)
    return TraceResult(
        peak_bytes=phases[peak_phase], phases=phases, peak_phase=peak_phase, breakdown={"Total": phases[peak_phase]},
        phase_breakdown={p: {"Total": phases[p]} for p in PHASES},
        params_total=total, params_trainable=trainable,
        seconds=round(time.perf_counter() - t0, 3), method="real CPU step + CPU allocator events (torch.profiler)",
        notes=[],
    )
