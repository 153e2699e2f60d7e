"""A 4-bit (QLoRA) base for the trace, as bitsandbytes and peft hold it in memory, without bitsandbytes or a GPU.

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

Only memory is emulated: the dequantised weights are empty tensors.  8-bit (LLM.int8) bases are not.
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

    return {"MatMul4Bit": MatMul4Bit, "Linear4bitMemory": Linear4bitMemory}


def quantize_4bit(model, compute_dtype) -> None:
    """Every ``nn.Linear`` of ``model`` but its output embedding becomes a ``Linear4bitMemory``, as transformers'
    bitsandbytes integration replaces them (the output embedding is in ``modules_to_not_convert``)."""
    import torch

    cls = _classes()["Linear4bitMemory"]
    head = model.get_output_embeddings()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child is not head:
                setattr(module, name, cls(child, compute_dtype))
    model.is_loaded_in_4bit = True


def patch_lora_forward(model) -> None:
    """peft's LoRA layers over a ``Linear4bitMemory`` run peft's ``lora.bnb.Linear4bit.forward`` (vanilla LoRA, no
    autocast: the trace's autocast is a function mode, and a 4-bit trace runs without it)."""
    import types

    cls = _classes()["Linear4bitMemory"]
    for module in model.modules():
        if isinstance(getattr(module, "base_layer", None), cls) and hasattr(module, "lora_A"):
            module.forward = types.MethodType(_lora_4bit_forward, module)


def _lora_4bit_forward(self, x, *args, **kwargs):
    result = self.base_layer(x, *args, **kwargs)
    result = result.clone()  # "for 4bit, we need to defensively clone here"
    for active_adapter in self.active_adapters:
        if active_adapter not in self.lora_A.keys():
            continue
        lora_A, lora_B = self.lora_A[active_adapter], self.lora_B[active_adapter]
        dropout, scaling = self.lora_dropout[active_adapter], self.scaling[active_adapter]
        expected_dtype = result.dtype
        x = self._cast_input_dtype(x, lora_A.weight.dtype)
        output = lora_B(lora_A(dropout(x))) * scaling
        output = output.to(expected_dtype)
        result = result + output
    return result


def packed_elements(model) -> int:
    """The parameters the 4-bit linears of ``model`` stand for beyond the bytes their packed weights count as elements
    (``Params4bit`` holds two per byte): what a parameter count of the model adds for them."""
    cls = _classes()["Linear4bitMemory"]
    return sum(m.in_features * m.out_features - m.weight.numel() for m in model.modules() if isinstance(m, cls))
