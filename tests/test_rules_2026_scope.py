"""CKPT210 (Llama 3.2 Vision's vision encoder never checkpointed) beyond its page: other branches, options, the
project's own class of the same name, other transformers releases, a frozen tower, the script's own checkpointing."""

from __future__ import annotations

import textwrap

from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.config import Settings

NEWEST = {"torch": "2.13", "transformers": "5.24", "peft": "0.21", "trl": "1.16"}


def run(code: str, select: str = "CKPT210", targets: dict | None = None):
    text = textwrap.dedent(code)
    settings = Settings(target_versions=NEWEST if targets is None else targets, select=[select])
    return [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == select]


def lines(code: str, **kwargs) -> list[int]:
    return [f.span.start.line for f in run(code, **kwargs)]


LOOP = """
from transformers import MllamaForConditionalGeneration
model = MllamaForConditionalGeneration.from_pretrained(path)
model.gradient_checkpointing_enable()
{extra}
loss = model(**batch).loss
loss.backward()
"""


def test_model_method_on_mllama_is_reported():
    found = run(LOOP.format(extra=""))
    assert [f.span.start.line for f in found] == [4]
    assert "MllamaForConditionalGeneration" in found[0].message and "4.55" in found[0].message


def test_auto_class_with_a_vision_id_is_reported_and_causal_lm_is_not():
    code = """
    from transformers import {cls}, TrainingArguments
    model = {cls}.from_pretrained("{mid}")
    args = TrainingArguments("out", activation_checkpointing=True)
    """
    assert lines(code.format(cls="AutoModelForImageTextToText", mid="unsloth/Llama-3.2-11B-Vision-Instruct")) == [4]
    assert lines(code.format(cls="AutoModelForCausalLM", mid="meta-llama/Llama-3.2-11B-Vision-Instruct")) == []  # text model only
    assert lines(code.format(cls="AutoModelForImageTextToText", mid="meta-llama/Llama-3.2-1B")) == []  # not the vision model
    assert lines(code.format(cls="AutoModelForImageTextToText", mid="Qwen/Qwen2-VL-7B-Instruct")) == []


def test_text_only_mllama_class_is_clean():
    assert lines(LOOP.replace("MllamaForConditionalGeneration", "MllamaForCausalLM").format(extra="")) == []


def test_checkpointing_off_or_on_another_branch_is_clean():
    assert lines("""
    from transformers import MllamaForConditionalGeneration, TrainingArguments
    model = MllamaForConditionalGeneration.from_pretrained(path)
    args = TrainingArguments("out", activation_checkpointing=False)
    """) == []
    assert lines("""
    import argparse
    from transformers import MllamaForConditionalGeneration, AutoModelForCausalLM
    p = argparse.ArgumentParser(); p.add_argument("--vision", action="store_true"); args = p.parse_args()
    if args.vision:
        model = MllamaForConditionalGeneration.from_pretrained(path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
        model.gradient_checkpointing_enable()
    """) == []


def test_option_dependent_checkpointing_names_the_option():
    found = run("""
    import argparse
    from transformers import MllamaForConditionalGeneration
    p = argparse.ArgumentParser(); p.add_argument("--gc", action="store_true"); args = p.parse_args()
    model = MllamaForConditionalGeneration.from_pretrained(path)
    if args.gc:
        model.gradient_checkpointing_enable()
    """)
    assert [f.span.start.line for f in found] == [7] and "--gc" in found[0].message


def test_projects_own_method_of_that_name_is_clean():
    assert lines("""
    from transformers import MllamaForConditionalGeneration
    class Wrapper:
        def gradient_checkpointing_enable(self):
            pass
    model = MllamaForConditionalGeneration.from_pretrained(path)
    w = Wrapper()
    w.gradient_checkpointing_enable()
    """) == []


def test_projects_own_mllama_class_is_clean():
    assert lines("""
    class MllamaForConditionalGeneration:
        @classmethod
        def from_pretrained(cls, path):
            return cls()
    model = MllamaForConditionalGeneration.from_pretrained(path)
    model.gradient_checkpointing_enable()
    """) == []


def test_releases_that_checkpoint_the_vision_encoder_are_clean():
    code = LOOP.format(extra="")
    assert lines(code, targets={**NEWEST, "transformers": "4.54"}) == []
    assert lines(code, targets={**NEWEST, "transformers": "4.55"}) == [4]
    assert lines(code, targets={**NEWEST, "transformers": "4.57"}) == [4]


def test_frozen_tower_counts_on_transformers_5_only():
    frozen = LOOP.format(extra="model.model.vision_model.requires_grad_(False)")
    assert lines(frozen, targets={**NEWEST, "transformers": "4.57"}) == []
    found = run(frozen)
    assert [f.span.start.line for f in found] == [4] and "frozen" in found[0].message
    loop_frozen = LOOP.format(extra="for p in model.model.vision_model.parameters():\n    p.requires_grad = False")
    assert lines(loop_frozen, targets={**NEWEST, "transformers": "4.57"}) == []
    # freezing something else says nothing of the vision tower
    other = LOOP.format(extra="model.model.language_model.requires_grad_(False)")
    assert lines(other, targets={**NEWEST, "transformers": "4.57"}) == [4]


def test_scripts_own_layer_checkpointing_is_clean():
    assert lines(LOOP.format(extra="""
import functools
from torch.utils.checkpoint import checkpoint
for layer in model.model.vision_model.transformer.layers:
    layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
""")) == []
