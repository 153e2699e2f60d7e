"""Measure the cuBLAS workspaces a training step holds in ``torch.cuda.memory_allocated`` (needs a CUDA GPU).

PyTorch gives every (cuBLAS handle, stream) pair its own workspace, allocated through the caching allocator,
and handles are per thread: the forward runs on the caller's thread and the backward on autograd's device
thread, so a training step holds two.  ``ckpt-doctor estimate`` counts them (``memory.BLAS_WORKSPACE_BYTES``);
this script checks the size and the count on the machine at hand:

    python bench/cublas_workspace_probe.py            # prints one JSON object
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("cublas_workspace_probe: needs a CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    n = 512
    x = torch.randn(n, n, device=dev, requires_grad=True)
    w = torch.randn(n, n, device=dev, requires_grad=True)
    torch.cuda.synchronize()
    tensor = n * n * 4

    before = torch.cuda.memory_allocated()
    y = x @ w  # cuBLAS, caller's thread
    torch.cuda.synchronize()
    after_forward = torch.cuda.memory_allocated()
    y.sum().backward()  # two more matmuls, autograd's device thread
    torch.cuda.synchronize()
    after_backward = torch.cuda.memory_allocated()

    # bf16 linear with a bias: the cuBLASLt epilogue path; it shares the cuBLAS workspace when unified
    lin = torch.nn.Linear(n, n, device=dev, dtype=torch.bfloat16)
    xb = torch.randn(n, n, device=dev, dtype=torch.bfloat16, requires_grad=True)
    torch.cuda.synchronize()
    before_lt = torch.cuda.memory_allocated()
    yb = lin(xb)
    yb.float().sum().backward()
    torch.cuda.synchronize()
    lt_tensors = n * n * 2 + lin.weight.numel() * 2 + lin.bias.numel() * 2 + xb.numel() * 2
    after_lt = torch.cuda.memory_allocated()

    out = {
        "gpu": torch.cuda.get_device_name(),
        "capability": list(torch.cuda.get_device_capability()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "forward_thread_workspace_bytes": after_forward - before - tensor,
        "backward_thread_workspace_bytes": after_backward - after_forward - 2 * tensor,
        "cublaslt_extra_bytes": after_lt - before_lt - lt_tensors,
        "total_workspace_bytes": after_backward - before - 3 * tensor,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
