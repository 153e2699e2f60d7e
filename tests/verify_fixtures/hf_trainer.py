"""An HF Trainer script on a tiny random-init Llama with checkpointing on (transformers' default kwargs)."""
import os
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

out = sys.argv[1] if len(sys.argv) > 1 else "out"
config = AutoConfig.from_pretrained(os.path.join(os.path.dirname(__file__), "tiny"))
model = AutoModelForCausalLM.from_config(config)


class Random(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        ids = torch.randint(0, config.vocab_size, (32,), generator=g)
        return {"input_ids": ids, "labels": ids.clone()}


args = TrainingArguments(
    output_dir=out,
    per_device_train_batch_size=4,
    max_steps=5,
    gradient_checkpointing=True,
    report_to="none",
    save_strategy="no",
    logging_strategy="no",
    use_cpu=True,
)
Trainer(model=model, args=args, train_dataset=Random()).train()
print("finished all steps")
