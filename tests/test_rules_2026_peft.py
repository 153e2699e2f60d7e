"""CKPT601: LoRA targets that name the MoE experts on transformers 5 with a peft that never reaches the fused experts."""

from __future__ import annotations

import textwrap

import pytest

from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.config import Settings

OLD_PEFT = {"torch": "2.13", "transformers": "5.24", "peft": "0.18", "trl": "1.16"}

_SCRIPT = """
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

model = AutoModelForCausalLM.from_pretrained({model!r})
config = LoraConfig(r=16, target_modules={targets}{extra})
model = get_peft_model(model, config)
Trainer(model=model, args=TrainingArguments(output_dir="o"), train_dataset=ds).train()
"""

_MLP = '["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]'


def run(code: str, targets: dict | None = None) -> list:
    text = textwrap.dedent(code)
    settings = Settings(target_versions=OLD_PEFT if targets is None else targets, select=["CKPT601"])
    return [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == "CKPT601"]


def script(model: str = "Qwen/Qwen3-30B-A3B", targets: str = _MLP, extra: str = "") -> str:
    return _SCRIPT.format(model=model, targets=targets, extra=extra)


def test_expert_names_on_a_fused_moe_with_an_old_peft_are_reported_on_target_modules():
    (finding,) = run(script())
    assert finding.span.start.line == 6 and "`gate_proj`, `up_proj`, `down_proj`" in finding.message
    assert "peft 0.18 (target version)" in finding.message and "target_parameters" in finding.message


def test_all_linear_and_mixtral_names():
    assert len(run(script(targets='"all-linear"'))) == 1
    assert len(run(script(model="mistralai/Mixtral-8x7B-v0.1", targets='["q_proj", "w1", "w2", "w3"]'))) == 1


@pytest.mark.parametrize("versions", [
    {**OLD_PEFT, "peft": "0.19"},  # peft converts the names itself
    {**OLD_PEFT, "peft": "0.21"},
    {**OLD_PEFT, "transformers": "4.57"},  # experts are nn.Linear there
    {"torch": "2.13", "transformers": "5.24"},  # peft not known: not judged
])
def test_other_versions_are_clean(versions):
    assert run(script(), targets=versions) == []


@pytest.mark.parametrize("code", [
    script(targets='["q_proj", "k_proj", "v_proj", "o_proj"]'),  # asks for no expert
    script(extra=', target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]'),
    script(model="meta-llama/Llama-3.1-8B"),  # dense: gate_proj is an nn.Linear
    script(model="mistralai/Mixtral-8x7B-v0.1"),  # Mixtral's experts are not gate_proj: another matter
    script(targets="args.targets"),  # not known
    script().replace("model = get_peft_model(model, config)\n", ""),  # a config never applied
])
def test_look_alikes_are_clean(code):
    assert run(code) == []


def test_the_projects_own_loraconfig_is_not_peft():
    code = script().replace("from peft import LoraConfig, get_peft_model", "from peft import get_peft_model\nfrom mylib import LoraConfig")
    assert run(code) == []


def test_lora_under_an_option_is_reported_on_that_path():
    code = """
    import argparse
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
    p = argparse.ArgumentParser(); p.add_argument("--lora", action="store_true"); args = p.parse_args()
    model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen3-30B-A3B")
    if args.lora:
        model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    Trainer(model=model, args=TrainingArguments(output_dir="o"), train_dataset=ds).train()
    """
    (finding,) = run(code)
    assert finding.span.start.line == 8
