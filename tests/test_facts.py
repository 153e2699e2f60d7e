"""The facts pass: name resolution, shadowing, constant propagation."""

from __future__ import annotations

import textwrap

import pytest

from ckpt_doctor.config import Settings
from ckpt_doctor.analysis.facts import extract
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.analysis.values import Const, DictVal, Missing, Namespace

CHECKPOINT = "torch.utils.checkpoint.checkpoint"
NEWEST = {"torch": "2.13", "transformers": "5.24", "peft": "0.21", "trl": "1.16"}


def facts_of(code: str):
    return extract(textwrap.dedent(code))


def codes_of(code: str, **targets: str) -> list[tuple[str, int]]:
    settings = Settings(target_versions={**NEWEST, **targets})
    text = textwrap.dedent(code)
    return [(f.code, f.span.start.line) for f in lint_text(SourceFile("t.py", text, text.encode()), settings)]


@pytest.mark.parametrize(
    "code",
    [
        "from torch.utils.checkpoint import checkpoint as ckpt\nckpt(f, x)",
        "import torch.utils.checkpoint as cp\ncp.checkpoint(f, x)",
        "import torch\ntorch.utils.checkpoint.checkpoint(f, x)",
        "import torch.utils.checkpoint\ntorch.utils.checkpoint.checkpoint(f, x)",
        "from torch.utils import checkpoint\ncheckpoint.checkpoint(f, x)",
        "from torch.utils.checkpoint import *\ncheckpoint(f, x)",
        "from torch.utils.checkpoint import checkpoint\ndef g(f, x):\n    return checkpoint(f, x)",
    ],
)
def test_checkpoint_resolved_through_imports_and_aliases(code):
    calls = facts_of(code).calls_to(CHECKPOINT)
    assert len(calls) == 1
    assert isinstance(calls[0].kwarg("use_reentrant"), Missing)


@pytest.mark.parametrize(
    "code",
    [
        # a local variable shadows the import
        "from torch.utils.checkpoint import checkpoint\nimport torch\ncheckpoint = torch.load(p)\ncheckpoint(1)",
        # a parameter called checkpoint
        "from torch.utils.checkpoint import checkpoint\ndef load(checkpoint):\n    return checkpoint(1)",
        # assigned inside the function, after the import
        "from torch.utils.checkpoint import checkpoint\ndef load(p):\n    checkpoint = torch.load(p)\n    return checkpoint['model']",
        # calling the module itself is not a checkpoint call
        "from torch.utils import checkpoint\ncheckpoint(f, x)",
        # a checkpoint function of another library
        "from deepspeed.checkpointing import checkpoint\ncheckpoint(f, x)",
        # never imported
        "checkpoint(f, x)",
        # for-loop target
        "from torch.utils.checkpoint import checkpoint\nfor checkpoint in paths:\n    checkpoint(1)",
    ],
)
def test_shadowed_or_foreign_names_are_not_checkpoint_calls(code):
    assert facts_of(code).calls_to(CHECKPOINT) == []


def test_partial_carries_keywords_to_its_calls():
    facts = facts_of(
        """
        import functools
        from torch.utils.checkpoint import checkpoint
        ckpt = functools.partial(checkpoint, use_reentrant=False)
        def forward(block, x):
            return ckpt(block, x)
        """
    )
    (call,) = facts.calls_to(CHECKPOINT)
    assert call.kwarg("use_reentrant") == Const(False, call.kwarg("use_reentrant").origin)
    assert call.via_partial is not None and call.via_partial.line == 4


def test_partial_without_use_reentrant_is_reported_once_at_the_partial():
    found = codes_of(
        """
        from functools import partial
        from torch.utils.checkpoint import checkpoint
        ckpt = partial(checkpoint, preserve_rng_state=True)
        def forward(block, x):
            return ckpt(block, x) + ckpt(block, x)
        """
    )
    assert found == [("CKPT101", 4)]


@pytest.mark.parametrize(
    "code",
    [
        "trainer.train(resume_from_checkpoint=True)",
        "parser.add_argument('--checkpointing_steps', default=100)",
        "accelerator.save_state(f'checkpoint-{step}')\nsave_checkpoint(model)",
        "# model.gradient_checkpointing_enable()\n# checkpoint(f, x)",
        "'''\nfrom torch.utils.checkpoint import checkpoint\ncheckpoint(f, x)\n'''",
        "args = TrainingArguments(output_dir='o', save_total_limit=2)  # checkpoint rotation",
    ],
)
def test_lookalike_words_and_comments_trigger_nothing(code):
    assert codes_of(code) == []


def test_module_constants_and_dict_literals_propagate():
    facts = facts_of(
        """
        from torch.utils.checkpoint import checkpoint
        REENTRANT = False
        KWARGS = {"use_reentrant": REENTRANT}
        checkpoint(f, x, use_reentrant=REENTRANT)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=KWARGS)
        """
    )
    (call,) = facts.calls_to(CHECKPOINT)
    assert call.kwarg("use_reentrant").value is False
    (enable,) = facts.method_calls("gradient_checkpointing_enable")
    kwargs = enable.kwarg("gradient_checkpointing_kwargs")
    assert isinstance(kwargs, DictVal) and kwargs.get("use_reentrant").value is False


def test_argparse_defaults_reach_attribute_reads():
    facts = facts_of(
        """
        import argparse
        from transformers import TrainingArguments
        def parse():
            p = argparse.ArgumentParser()
            p.add_argument("--gradient-checkpointing", action="store_true")
            p.add_argument("--batch_size", type=int, default=8)
            return p.parse_args()
        def main():
            args = parse()
            TrainingArguments(output_dir="o", gradient_checkpointing=args.gradient_checkpointing,
                              per_device_train_batch_size=args.batch_size)
        """
    )
    (call,) = facts.calls_to("transformers.TrainingArguments")
    flag = call.kwarg("gradient_checkpointing")
    assert flag.value is False and flag.origin.kind == "argparse default" and flag.origin.line == 6
    assert call.kwarg("per_device_train_batch_size").value == 8


def test_hf_argument_parser_dataclass_defaults():
    facts = facts_of(
        """
        from dataclasses import dataclass, field
        from transformers import HfArgumentParser, TrainingArguments
        @dataclass
        class ModelArguments:
            model_name_or_path: str = field(default="meta-llama/Llama-2-7b-hf")
            use_lora: bool = True
        parser = HfArgumentParser((ModelArguments, TrainingArguments))
        model_args, training_args = parser.parse_args_into_dataclasses()
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)
        """
    )
    (load,) = facts.calls_named("from_pretrained")
    assert load.args[0].value == "meta-llama/Llama-2-7b-hf"
    assert load.args[0].origin.kind == "dataclass default"


def test_training_args_keywords_read_back_through_the_instance():
    facts = facts_of(
        """
        from trl import SFTConfig
        cfg = SFTConfig(output_dir="o", gradient_checkpointing=False, max_length=512)
        x = cfg.max_length
        """
    )
    (call,) = facts.calls_to("trl.SFTConfig")
    assert call.kwarg("gradient_checkpointing").value is False
    assert call.kwarg("max_length").value == 512


def test_submodule_imports_of_public_names_are_canonical():
    facts = facts_of(
        "from transformers.training_args import TrainingArguments\n"
        "from trl.trainer.sft_config import SFTConfig\n"
        "TrainingArguments(output_dir='o')\nSFTConfig(output_dir='o')"
    )
    assert [c.qualname for c in facts.calls if c.qualname] == ["transformers.TrainingArguments", "trl.SFTConfig"]


def test_command_line_training_arguments_are_a_namespace():
    facts = facts_of(
        """
        from transformers import HfArgumentParser, TrainingArguments
        (training_args,) = HfArgumentParser((TrainingArguments,)).parse_args_into_dataclasses()
        training_args.gradient_checkpointing = True
        """
    )
    (assign,) = facts.assigns_to("gradient_checkpointing")
    assert isinstance(assign.base_value, Namespace) and assign.base_value.config_class == "transformers.TrainingArguments"


def test_columns_count_characters_not_bytes():
    facts = facts_of("from torch.utils.checkpoint import checkpoint\nname = 'é'; checkpoint(f, x)\n")
    (call,) = facts.calls_to(CHECKPOINT)
    assert call.span.start.column == len("name = 'é'; ") + 1


def test_calls_under_an_if_know_whether_they_run_with_the_defaults():
    facts = facts_of(
        """
        import argparse
        p = argparse.ArgumentParser()
        p.add_argument("--gradient_checkpointing", action="store_true")
        p.add_argument("--bf16", action="store_false")
        args = p.parse_args()
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        else:
            model.train()
        if args.bf16:
            model.to(torch.bfloat16)
        if os.environ.get("X"):
            model.eval()
        """
    )
    runs = {c.name: c.runs_by_default for c in facts.calls if c.receiver == "model"}
    assert runs == {"gradient_checkpointing_enable": False, "train": True, "to": True, "eval": None}


def test_a_parameter_named_like_an_option_takes_its_default():
    facts = facts_of(
        """
        import argparse
        from transformers import AutoModelForCausalLM
        def train(model_id, checkpoint):
            return AutoModelForCausalLM.from_pretrained(model_id), checkpoint(1)
        p = argparse.ArgumentParser()
        p.add_argument("--model_id", default="gpt2")
        args = p.parse_args()
        train(args.model_id, None)
        """
    )
    (load,) = facts.calls_named("from_pretrained")
    assert load.args[0].value == "gpt2" and load.args[0].origin.kind == "argparse default"


def test_a_dtype_picked_by_getattr_behind_a_membership_test():
    # Columbia-NLP-Lab/LionAlignment (holdout17), from the alignment handbook: the dtype string of a settings file
    facts = facts_of(
        """
        import torch
        from transformers import AutoModelForCausalLM
        name = "bfloat16"
        dtype = name if name in ["auto", None] else getattr(torch, name)
        AutoModelForCausalLM.from_pretrained("m", torch_dtype=dtype)
        auto = "auto"
        AutoModelForCausalLM.from_pretrained("m", torch_dtype=auto if auto in ["auto", None] else getattr(torch, auto))
        """
    )
    loads = [c for c in facts.calls if c.name == "from_pretrained"]
    assert loads[0].kwarg("torch_dtype").name == "torch.bfloat16"
    assert loads[1].kwarg("torch_dtype").value == "auto"


def test_a_copy_of_the_handbook_parser_is_an_argument_parser_by_its_name():
    facts = facts_of(
        """
        from lionalign.arguments import H4ArgumentParser
        from transformers import TrainingArguments
        parser = H4ArgumentParser((TrainingArguments,))
        (training_args,) = parser.parse()
        """
    )
    assert [c.line for c in facts.argument_parsers()] == [4]
