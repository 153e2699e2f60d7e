"""4-bit (QLoRA) and 8-bit (LLM.int8) bases for the trace, as bitsandbytes and peft hold them in memory, without
bitsandbytes or a GPU.

What a QLoRA script runs (transformers' bitsandbytes integration, bitsandbytes 95f9af3, peft 0.21.2), and what is made
here instead, allocation for allocation:

* ``from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=True))`` turns
  every ``nn.Linear`` but the output embedding into a ``bnb.nn.Linear4bit``: a packed uint8 weight of ``(n + 1) // 2``
  bytes (``Params4bit``), one 8-bit absmax per 64-element block and, double-quantised, one fp32 absmax per 256 of
  those (``QuantState``; the closed form's ``NF4_BYTES_PER_PARAM``).  Here: ``Linear4bitMemory``, a ``nn.Linear``
  (so that peft wraps it as it wraps any linear) whose weight is that uint8 tensor, the absmax tensors its buffers.
* ``Linear4bit.forward`` (bitsandbytes/nn/modules.py): ``x.to(compute_dtype)``, then ``bnb.matmul_4bit``, then
  ``.to(inp_dtype)``.  ``MatMul4Bit`` (bitsandbytes/autograd/_functions.py) dequantises the weight to a temporary
  ``[out, in]`` tensor of the compute dtype and runs ``F.linear`` (the ``gemm_4bit`` op does so for more than 1536
  rows, ``_gemm_4bit_use_custom_cuda``; a training step has more), keeps no activation (``ctx.tensors = (None, B)``:
  the packed weight), and its backward dequantises again for ``grad_output @ W``.
* peft's ``prepare_model_for_kbit_training`` (run as it is: ``TrainingSetup.kbit_upcast``) freezes everything and casts
  every fp16/bf16 parameter that is not ``Params4bit`` to fp32.
* peft's LoRA layer over a ``Linear4bit`` (peft/tuners/lora/bnb.py ``Linear4bit.forward``) clones the base result
  ("for 4bit, we need to defensively clone here"), casts the input to the adapters' dtype, and casts their output to
  the result's before adding it: ``patch_lora_forward``.

An 8-bit base (``BitsAndBytesConfig(load_in_8bit=True)``: ``llm_int8_threshold`` 6.0, ``llm_int8_has_fp16_weight``
False) turns the same linears into ``bnb.nn.Linear8bitLt``: an int8 ``[out, in]`` weight (``Int8Params.CB``) and one
fp32 scale per row (``SCB``).  Here: ``Linear8bitMemory``.  Its forward (bitsandbytes 95f9af3) is ``bnb.matmul`` ->
``MatMul8bitLt`` (autograd/_functions.py), on CUDA:

* ``F.int8_vectorwise_quant(A.to(torch.float16), threshold)`` (backends/cuda/ops.py): an fp16 copy of the input
  (unless it is fp16), fp32 row stats, the int8 rows, and for the outlier columns ``A.abs() >= threshold``; which
  columns are outliers depends on the values, which a fake tensor does not have: taken as none (LLM.int8's outliers
  are a few of thousands of features; their ``subA`` columns are kept for the backward);
* ``int8_mixed_scaled_mm`` (backends/default/ops.py) -> ``int8_scaled_mm``: an int32 ``[N, out]`` product
  (``int8_linear_matmul``), dequantised into an fp16 ``[N, out]`` (``int8_mm_dequant``) and returned as ``.to(A.dtype)``;
* it keeps its input for the backward (``ctx.tensors = (CAt, subA, A)`` whenever the input requires grad; ``CAt`` is
  None with a frozen weight), and the backward dequantises the weight in the input's dtype
  (``state.CB.to(ctx.dtype_A, copy=True).mul_(state.SCB.unsqueeze(1).mul(1.0 / 127.0))``) for
  ``grad_output @ CB``.

peft's LoRA layer over a ``Linear8bitLt`` (peft/tuners/lora/bnb.py ``Linear8bitLt.forward``) does not clone the base
result.

Only memory is emulated: the dequantised weights and the quantised inputs are empty tensors.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _classes() -> dict[str, Any]:
    import torch

    class MatMul4Bit(torch.autograd.Function):
        @staticmethod
        def forward(ctx, A, B, bias, shape):
            ctx.shape = shape
            weight = torch.empty(shape, dtype=A.dtype)  # F.dequantize_4bit(B, quant_state).to(A.dtype)
            return torch.nn.functional.linear(A, weight, bias)

        @staticmethod
        def backward(ctx, grad_output):
            grad_bias = None
            if ctx.needs_input_grad[2]:
                grad_bias = grad_output.sum(0)
            weight = torch.empty(ctx.shape, dtype=grad_output.dtype)  # dequantised again
            return torch.matmul(grad_output, weight), None, grad_bias, None

    class Linear4bitMemory(torch.nn.Linear):
        def __init__(self, linear, compute_dtype) -> None:
            torch.nn.Module.__init__(self)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            n = self.in_features * self.out_features
            device = linear.weight.device
            self.weight = torch.nn.Parameter(torch.empty((n + 1) // 2, 1, dtype=torch.uint8, device=device),
                                             requires_grad=False)
            blocks = -(-n // 64)
            self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8, device=device))
            self.register_buffer("absmax2", torch.empty(-(-blocks // 256), dtype=torch.float32, device=device))
            self.bias = linear.bias
            self.compute_dtype = compute_dtype

        def forward(self, x):
            inp_dtype = x.dtype
            x = x.to(self.compute_dtype)
            bias = None if self.bias is None else self.bias.to(self.compute_dtype)
            shape = (self.out_features, self.in_features)
            return MatMul4Bit.apply(x, self.weight, bias, shape).to(inp_dtype)

    class MatMul8bitLt(torch.autograd.Function):
        @staticmethod
        def forward(ctx, A, CB, SCB, bias):
            grad_shape = A.shape
            if A.dim() == 3:
                A = A.reshape(-1, A.shape[-1])
            # F.int8_vectorwise_quant(A.to(torch.float16), threshold=6.0)
            a16 = A.to(torch.float16)
            row_stats = torch.empty(a16.shape[0], dtype=torch.float32)
            CA = torch.empty(a16.shape, dtype=torch.int8)
            outliers = a16.abs() >= THRESHOLD  # outlier_cols = argwhere(outliers.any(dim=0)): taken as none
            del outliers, a16
            subA = torch.empty(0, dtype=A.dtype)  # int8_mixed_scaled_mm without outlier columns
            out_i32 = torch.empty((A.shape[0], CB.shape[0]), dtype=torch.int32)  # int8_linear_matmul
            out16 = torch.empty_like(out_i32, dtype=torch.float16)  # int8_mm_dequant
            if bias is not None:
                out16.add_(bias)
            output = out16.to(A.dtype)
            del out16, out_i32, CA, row_stats
            if ctx.needs_input_grad[0]:
                ctx.tensors = (None, subA, A)  # CAt: None, the weight being frozen
            ctx.CB, ctx.SCB, ctx.dtype_A, ctx.grad_shape = CB, SCB, A.dtype, grad_shape
            return output.reshape(*grad_shape[:-1], CB.shape[0])

        @staticmethod
        def backward(ctx, grad_output):
            grad_bias = None
            if ctx.needs_input_grad[3]:
                grad_bias = grad_output.sum(0)
            grad_output = grad_output.reshape(-1, grad_output.shape[-1]).contiguous()
            CB = ctx.CB.to(ctx.dtype_A, copy=True).mul_(ctx.SCB.unsqueeze(1).mul(1.0 / 127.0))
            grad_A = torch.matmul(grad_output.to(ctx.dtype_A), CB).view(ctx.grad_shape)
            return grad_A, None, None, grad_bias

    class Linear8bitMemory(torch.nn.Linear):
        def __init__(self, linear) -> None:
            torch.nn.Module.__init__(self)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            device = linear.weight.device
            self.weight = torch.nn.Parameter(torch.empty(self.out_features, self.in_features, dtype=torch.int8,
                                                         device=device), requires_grad=False)
            self.register_buffer("SCB", torch.empty(self.out_features, dtype=torch.float32, device=device))
            self.bias = linear.bias

        def forward(self, x):
            if self.bias is not None and self.bias.dtype != x.dtype:
                self.bias.data = self.bias.data.to(x.dtype)
            return MatMul8bitLt.apply(x, self.weight, self.SCB, self.bias)

    return {"MatMul4Bit": MatMul4Bit, "Linear4bitMemory": Linear4bitMemory, "MatMul8bitLt": MatMul8bitLt,
            "Linear8bitMemory": Linear8bitMemory}


THRESHOLD = 6.0  # transformers' BitsAndBytesConfig.llm_int8_threshold default


def quantize(model, bits: int, compute_dtype) -> None:
    """Every ``nn.Linear`` of ``model`` but its output embedding becomes a ``Linear4bitMemory`` (``bits`` 4) or a
    ``Linear8bitMemory`` (8), as transformers' bitsandbytes integration replaces them (the output embedding is in
    ``modules_to_not_convert``); ``compute_dtype``: the 4-bit ``bnb_4bit_compute_dtype``."""
    import torch

    classes = _classes()
    make = (lambda child: classes["Linear4bitMemory"](child, compute_dtype)) if bits == 4 else classes["Linear8bitMemory"]
    head = model.get_output_embeddings()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child is not head:
                setattr(module, name, make(child))
    setattr(model, f"is_loaded_in_{bits}bit", True)  # what peft's prepare_model_for_kbit_training asks


def patch_lora_forward(model, autocast: dict | None = None) -> None:
    """peft's LoRA layers over a ``Linear4bitMemory`` / ``Linear8bitMemory`` run peft's ``lora.bnb.Linear4bit.forward``
    / ``Linear8bitLt.forward`` (vanilla LoRA). Both skip their dtype conversions under autocast
    (``requires_conversion = not torch.is_autocast_enabled()``); the trace's autocast is a function mode, which
    ``torch.is_autocast_enabled()`` does not see, so ``autocast`` (the trace's state: ``{"enabled": ...}``) says it."""
    import functools
    import types

    classes = _classes()
    state = autocast if autocast is not None else {}
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, (classes["Linear4bitMemory"], classes["Linear8bitMemory"])) and hasattr(module, "lora_A"):
            clone = isinstance(base, classes["Linear4bitMemory"])
            module.forward = types.MethodType(functools.partial(_lora_bnb_forward, clone=clone, autocast=state), module)


def _lora_bnb_forward(self, x, *args, clone: bool, autocast: dict, **kwargs):
    result = self.base_layer(x, *args, **kwargs)
    if clone:
        result = result.clone()  # 4-bit: "for 4bit, we need to defensively clone here"
    for active_adapter in self.active_adapters:
        if active_adapter not in self.lora_A.keys():
            continue
        lora_A, lora_B = self.lora_A[active_adapter], self.lora_B[active_adapter]
        dropout, scaling = self.lora_dropout[active_adapter], self.scaling[active_adapter]
        requires_conversion = not autocast.get("enabled", False)
        if requires_conversion:
            expected_dtype = result.dtype
            x = self._cast_input_dtype(x, lora_A.weight.dtype)
        output = lora_B(lora_A(dropout(x))) * scaling
        if requires_conversion:
            output = output.to(expected_dtype)
        result = result + output
    return result


def packed_elements(model) -> int:
    """The parameters the 4-bit linears of ``model`` stand for beyond the bytes their packed weights count as elements
    (``Params4bit`` holds two per byte): what a parameter count of the model adds for them."""
    cls = _classes()["Linear4bitMemory"]
    return sum(m.in_features * m.out_features - m.weight.numel() for m in model.modules() if isinstance(m, cls))
