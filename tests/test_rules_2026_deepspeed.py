"""CKPT304 (ZeRO-3 + PEFT + non-reentrant checkpointing) read against the DeepSpeed release the project declares:
deepspeed >= 0.19.3 keeps the frozen parameters gathered through the recompute (deepspeedai/DeepSpeed#8148) [A4]."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ckpt_doctor.analysis.source import SourceFile, read_source
from ckpt_doctor.check.lint import check_source, lint_text
from ckpt_doctor.config import Settings

NEWEST = {"torch": "2.13", "transformers": "5.24", "peft": "0.21", "trl": "1.16"}

_SCRIPT = """
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

ds_config = {{"zero_optimization": {{"stage": 3}}, "bf16": {{"enabled": True}}}}
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.1-8B", dtype=torch.bfloat16)
model = get_peft_model(model, LoraConfig(r=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
args = TrainingArguments(output_dir="o", bf16=True, deepspeed=ds_config, gradient_checkpointing=True,
                         gradient_checkpointing_kwargs={{"use_reentrant": {reentrant}}})
Trainer(model=model, args=args, train_dataset=ds).train()
"""


def run(code: str, select: str, targets: dict) -> list:
    text = textwrap.dedent(code)
    settings = Settings(target_versions=targets, select=[select])
    return [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == select]


@pytest.mark.parametrize("deepspeed, found", [(None, True), ("0.15.3", True), ("0.19.2", True), ("0.19.3", False), ("0.19.5", False)])
def test_the_finding_follows_the_declared_deepspeed(deepspeed, found):
    targets = {**NEWEST, **({"deepspeed": deepspeed} if deepspeed else {})}
    findings = run(_SCRIPT.format(reentrant="False"), "CKPT304", targets)
    assert [f.code for f in findings] == (["CKPT304"] if found else [])
    if found:
        assert "deepspeed >= 0.19.3" in findings[0].message and "DeepSpeed#8148" in findings[0].message
        said = "version not declared" if deepspeed is None else deepspeed
        assert said in findings[0].message


def _project(tmp_path: Path, requirement: str) -> list:
    (tmp_path / ".git").mkdir(exist_ok=True)
    (tmp_path / "requirements.txt").write_text(f"torch==2.13.0\ntransformers==5.24.0\npeft==0.21.2\n{requirement}\n")
    (tmp_path / "train.py").write_text(_SCRIPT.format(reentrant="False"))
    settings = Settings(root=tmp_path, select=["CKPT304"])
    return [f for f in check_source(read_source(tmp_path / "train.py"), settings).findings if f.code == "CKPT304"]


def test_a_range_that_allows_older_releases_still_reports_and_says_so(tmp_path):
    (finding,) = _project(tmp_path, "deepspeed>=0.15")
    assert "requirements.txt" in finding.message


def test_a_floor_at_the_fix_is_clean(tmp_path):
    assert _project(tmp_path, "deepspeed>=0.19.3") == []


def test_reentrant_is_no_longer_held_back_as_the_workaround_on_a_fixed_release():
    # CKPT102 keeps quiet about use_reentrant=True where it is CKPT304's workaround; on deepspeed >= 0.19.3 it is not one
    code = _SCRIPT.format(reentrant="True").replace(
        "args = TrainingArguments", "from torch.utils.checkpoint import checkpoint\ny = checkpoint(block, x, use_reentrant=True)\nargs = TrainingArguments")
    assert run(code, "CKPT102", {**NEWEST, "deepspeed": "0.19.2"}) == []
    assert [f.span.start.line for f in run(code, "CKPT102", {**NEWEST, "deepspeed": "0.19.3"})] == [10, 11]


def _config(tmp_path: Path, requirement: str | None) -> list:
    (tmp_path / ".git").mkdir(exist_ok=True)
    (tmp_path / "sft.yaml").write_text("stage: sft\nfinetuning_type: lora\nuse_reentrant_gc: false\ndeepspeed: z3.json\n")
    (tmp_path / "z3.json").write_text('{"zero_optimization": {"stage": 3}}')
    if requirement:
        (tmp_path / "requirements.txt").write_text(requirement + "\n")
    result = check_source(read_source(tmp_path / "sft.yaml"), Settings(root=tmp_path, select=["CKPT304"]))
    assert result.error is None, result.error
    return result.findings


@pytest.mark.parametrize("requirement, found", [(None, 1), ("deepspeed==0.19.2", 1), ("deepspeed==0.19.3", 0)])
def test_a_llamafactory_config_follows_the_declared_deepspeed(tmp_path, requirement, found):
    findings = _config(tmp_path, requirement)
    assert len(findings) == found
    if found:
        assert "deepspeed >= 0.19.3" in findings[0].message
