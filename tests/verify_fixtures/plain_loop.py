"""A plain PyTorch loop on a tiny random-init Llama: the script checkpoints the decoder layers itself with
torch.utils.checkpoint -- layer 0 non-reentrant, layer 1 without use_reentrant (torch's reentrant default)."""
import argparse
import os

import torch
from torch.utils.checkpoint import checkpoint
from transformers import AutoConfig, AutoModelForCausalLM

parser = argparse.ArgumentParser()
parser.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "tiny"))
parser.add_argument("--batch-size", type=int, default=2)
parser.add_argument("--seq-len", type=int, default=32)
parser.add_argument("--steps", type=int, default=5)
args = parser.parse_args()

torch.manual_seed(0)
config = AutoConfig.from_pretrained(args.config)
model = AutoModelForCausalLM.from_config(config)

for i, layer in enumerate(model.model.layers):
    inner = layer.forward
    if i == 0:
        layer.forward = lambda *a, _f=inner, **k: checkpoint(_f, *a, use_reentrant=False, **k)
    else:
        layer.forward = lambda *a, _f=inner, **k: checkpoint(lambda *x: _f(*x, **k), *a)

device = "cuda" if torch.cuda.is_available() else "cpu"
model.to(device).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step in range(args.steps):
    ids = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), device=device)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    print(f"step {step} loss {loss.item():.4f}")
print("finished all steps")
