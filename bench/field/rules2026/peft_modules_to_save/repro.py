"""Tiny CPU/gloo reproduction of peft modules_to_save + DDP.

Usage: PYTHONPATH=<peft dir> python repro.py
Runs several scenarios, each in 2 spawned processes (gloo), 3 optimizer steps.
"""
import os
import sys
import socket
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(16, 16)

    def forward(self, x):
        return torch.relu(self.body(x))


class Tiny(nn.Module):
    def __init__(self, ckpt=None):
        super().__init__()
        self.pre = nn.Linear(8, 16)
        self.block = Block()
        self.head = nn.Linear(16, 4)
        self.ckpt = ckpt  # None | "reentrant" | "nonreentrant"

    def forward(self, x):
        h = self.pre(x)
        if self.ckpt is None:
            h = self.block(h)
        else:
            h = checkpoint(self.block, h, use_reentrant=(self.ckpt == "reentrant"))
        return self.head(h)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def worker(rank, world, port, ckpt, find_unused, static_graph, q):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    step = "setup"
    orig_rg = "?"
    try:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        base = Tiny(ckpt)
        base.config = {"model_type": "custom"}  # peft 0.3.0 reads base_model.config
        cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["body"], modules_to_save=["head"])
        model = get_peft_model(base, cfg)
        # like transformers' enable_input_require_grads: make the checkpoint input require grad
        if ckpt is not None:
            model.base_model.model.pre.register_forward_hook(lambda m, i, o: o.requires_grad_(True))
        orig_rg = [n for n, p in model.named_parameters() if p.requires_grad and "original_module" in n]
        ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused, static_graph=static_graph)
        opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.1)
        for step in range(3):
            x = torch.randn(4, 8)
            y = torch.randint(0, 4, (4,))
            loss = nn.functional.cross_entropy(ddp(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
        if rank == 0:
            q.put(("OK", f"3 steps; trainable original_module params: {orig_rg}"))
    except Exception as e:  # noqa
        if rank == 0:
            msg = str(e).replace("\n", " ")
            q.put(("ERROR", f"step {step}: {type(e).__name__}: {msg[:260]}; trainable original_module params: {orig_rg}"))
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def run(ckpt, find_unused, static_graph=False):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, 2, port, ckpt, find_unused, static_graph, q)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        if p.is_alive():
            p.terminate()
    try:
        return q.get(timeout=5)
    except Exception:
        return ("HANG/NO RESULT", "")


if __name__ == "__main__":
    import peft

    print(f"peft {peft.__version__} ({peft.__file__}), torch {torch.__version__}")
    for ckpt, fu, sg in [
        (None, False, False),
        (None, True, False),
        ("reentrant", False, False),
        ("reentrant", True, False),
        ("nonreentrant", False, False),
        ("nonreentrant", True, False),
        ("reentrant", False, True),
    ]:
        status, detail = run(ckpt, fu, sg)
        print(f"ckpt={str(ckpt):13s} find_unused={fu!s:5s} static_graph={sg!s:5s} -> {status}: {detail}", flush=True)
