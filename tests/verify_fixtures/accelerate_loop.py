"""An accelerate loop on a tiny random-init Llama: checkpointing through the deprecated name, use_cache left on."""
import os

import torch
from accelerate import Accelerator
from transformers import AutoConfig, AutoModelForCausalLM

accelerator = Accelerator(cpu=True)
config = AutoConfig.from_pretrained(os.path.join(os.path.dirname(__file__), "tiny"))
model = AutoModelForCausalLM.from_config(config)
model.gradient_checkpointing_enable()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
data = [torch.randint(0, config.vocab_size, (2, 16)) for _ in range(8)]
loader = torch.utils.data.DataLoader(data, batch_size=None)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
model.train()
for ids in loader:
    out = model(input_ids=ids, labels=ids, use_cache=True)
    accelerator.backward(out.loss)
    optimizer.step()
    optimizer.zero_grad()
print("finished all steps")
