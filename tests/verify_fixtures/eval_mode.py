"""Checkpointing on, but the loop trains the model in eval() mode (after a validation pass)."""
import os

import torch
from transformers import AutoConfig, AutoModelForCausalLM

config = AutoConfig.from_pretrained(os.path.join(os.path.dirname(__file__), "tiny"))
model = AutoModelForCausalLM.from_config(config)
model.activation_checkpointing_enable()
model.config.use_cache = False
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
ids = torch.randint(0, config.vocab_size, (2, 16))
model.eval()
with torch.no_grad():
    print("validation loss", model(input_ids=ids, labels=ids).loss.item())
for _ in range(3):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
