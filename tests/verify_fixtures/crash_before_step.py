"""Fails before its first optimizer step: reentrant checkpoint of the whole model over token ids only."""
import os

import torch
from torch.utils.checkpoint import checkpoint
from transformers import AutoConfig, AutoModelForCausalLM

config = AutoConfig.from_pretrained(os.path.join(os.path.dirname(__file__), "tiny"))
model = AutoModelForCausalLM.from_config(config)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
ids = torch.randint(0, config.vocab_size, (2, 8))
loss = checkpoint(lambda x: model(input_ids=x, labels=x).loss, ids, use_reentrant=True)
loss.backward()
optimizer.step()
