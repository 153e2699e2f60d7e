"""Fine-tune Llama-2-7B with LoRA on one GPU (an example with the usual checkpointing mistakes)."""

import argparse

import torch
from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

parser = argparse.ArgumentParser()
parser.add_argument("--model_name_or_path", default="meta-llama/Llama-2-7b-hf")
parser.add_argument("--output_dir", default="out")
parser.add_argument("--max_length", type=int, default=2048)
args = parser.parse_args()

tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, torch_dtype=torch.bfloat16)
model.config.use_cache = False

lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
model = get_peft_model(model, lora)

dataset = load_dataset("tatsu-lab/alpaca", split="train")
dataset = dataset.map(lambda row: tokenizer(row["text"], truncation=True, max_length=args.max_length))

training_args = TrainingArguments(
    output_dir=args.output_dir,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=4,
    learning_rate=2e-4,
    bf16=True,
    gradient_checkpointing=True,
)
trainer = Trainer(model=model, args=training_args, train_dataset=dataset)
trainer.train()
model.save_pretrained(args.output_dir)
