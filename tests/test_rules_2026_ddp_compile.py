"""CKPT111 (torch.compile of a DDP model that checkpoints, on a torch whose DDP optimizer fails on it), beyond its page
examples: the releases, the ways a model gets DDP, compiled and checkpointed, the workaround, and the paths."""

from __future__ import annotations

import textwrap

import pytest

from ckpt_doctor.analysis.source import SourceFile, read_source
from ckpt_doctor.check.lint import check_source, lint_text
from ckpt_doctor.config import Settings

HEAD = """\
import argparse
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint
from transformers import AutoModelForCausalLM
"""
HF = """\
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B")
model.gradient_checkpointing_enable()
model = DDP(model, device_ids=[0])
model = torch.compile(model)
"""


def run(code: str, torch: str | None = "2.4", **versions):
    text = HEAD + textwrap.dedent(code)
    targets = {"transformers": "4.44", **({"torch": torch} if torch else {}), **versions}
    settings = Settings(target_versions=targets, select=["CKPT111"])
    return [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == "CKPT111"]


def lines(code: str, **kwargs) -> list[int]:
    offset = len(HEAD.splitlines())
    return [f.span.start.line - offset for f in run(code, **kwargs)]


@pytest.mark.parametrize("torch,said", [("2.1.2", "NotImplementedError: DDPOptimizer backend"),
                                        ("2.5.1", "NotImplementedError: DDPOptimizer backend"),
                                        ("2.6.0", "RuntimeError: val"), ("2.8.0", "RuntimeError: val")])
def test_the_releases_whose_ddp_optimizer_fails(torch, said):
    (found,) = run(HF, torch=torch)
    assert found.span.start.line == len(HEAD.splitlines()) + 4  # the compile
    assert said in found.message and "`DistributedDataParallel` at line 9" in found.message
    assert "optimize_ddp = False" in found.message


@pytest.mark.parametrize("torch", ["2.0.1", "2.9.0", "2.13", None])
def test_releases_that_work_or_an_undeclared_torch_are_clean(torch):
    # undeclared: a fresh install takes the newest release, which compiles it
    assert run(HF, torch=torch) == []


def test_a_range_that_allows_a_working_release_is_clean():
    assert run(HF, torch=None, **{}) == []


def test_the_workaround_and_no_checkpointing_are_clean():
    assert run(HF.replace("model = torch.compile(model)", "torch._dynamo.config.optimize_ddp = False\nmodel = torch.compile(model)")) == []
    assert run(HF.replace("model = torch.compile(model)", 'torch._dynamo.config.optimize_ddp = "python_reducer"\nmodel = torch.compile(model)')) == []
    assert run(HF.replace("model.gradient_checkpointing_enable()\n", "")) == []
    assert run(HF.replace("model = DDP(model, device_ids=[0])\n", "")) == []
    # keeping the DDP optimizer on is no workaround
    assert len(run(HF.replace("model = torch.compile(model)", "torch._dynamo.config.optimize_ddp = True\nmodel = torch.compile(model)"))) == 1


def test_either_order_and_the_ways_a_model_checkpoints():
    compiled_first = """\
        model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B")
        model.gradient_checkpointing_enable()
        model = torch.compile(model)
        model = DDP(model)
        """
    assert lines(compiled_first) == [3]
    own = """\
        class Block(torch.nn.Module):
            def forward(self, x):
                return checkpoint(self.inner, x, use_reentrant=False)
        model = DDP(Block())
        model.compile()
        """
    assert lines(own) == [5]
    timm_style = """\
        import timm
        model = timm.create_model("vit_base_patch16_224")
        model.set_grad_checkpointing(enable=True)
        model = torch.compile(DDP(model))
        """
    assert lines(timm_style) == [4]
    assert lines(timm_style.replace("enable=True", "enable=False")) == []


def test_the_options_it_takes_are_the_findings_condition():
    code = """\
        p = argparse.ArgumentParser()
        p.add_argument("--distributed", action="store_true")
        p.add_argument("--torchcompile", action="store_true")
        p.add_argument("--grad-checkpointing", action="store_true")
        args = p.parse_args()
        model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B")
        if args.grad_checkpointing:
            model.gradient_checkpointing_enable()
        if args.distributed:
            model = DDP(model)
        if args.torchcompile:
            model = torch.compile(model)
        """
    (found,) = run(code)
    described = str(found.condition)
    assert all(flag in described for flag in ("distributed", "torchcompile", "grad_checkpointing")), described
    # DDP on the other branch of the same test: never together
    exclusive = code.replace("if args.torchcompile:", "if not args.distributed:")
    assert run(exclusive) == []


def _project(tmp_path, script: str, launcher: str, torch: str = "2.3.0"):
    (tmp_path / ".git").mkdir(parents=True)
    (tmp_path / "requirements.txt").write_text(f"torch=={torch}\ntransformers==4.44.0\n")
    (tmp_path / "train.py").write_text(textwrap.dedent(script))
    (tmp_path / "run.sh").write_text(launcher)
    settings = Settings(root=tmp_path, select=["CKPT111"])
    return [f for f in check_source(read_source(str(tmp_path / "train.py")), settings).findings if f.code == "CKPT111"]


TRAINER = """\
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B")
args = TrainingArguments("out", per_device_train_batch_size=4, gradient_checkpointing=True, torch_compile=True)
Trainer(model=model, args=args, train_dataset=ds).train()
"""


def test_the_trainer_under_several_processes_wraps_ddp(tmp_path):
    (found,) = _project(tmp_path, TRAINER, "torchrun --nproc_per_node 4 train.py\n")
    assert found.span.start.line == 3 and "DDP (4 processes" in found.message


@pytest.mark.parametrize("launcher", ["python train.py\n", "deepspeed --num_gpus 4 train.py --deepspeed ds.json\n"])
@pytest.mark.parametrize("stage", [3, 0])  # DeepSpeed's engine is not DDP, whatever its ZeRO stage
def test_the_trainer_on_one_process_or_under_deepspeed_is_clean(tmp_path, launcher, stage):
    (tmp_path / "ds.json").write_text(f'{{"zero_optimization": {{"stage": {stage}}}}}')
    assert _project(tmp_path, TRAINER, launcher) == []


PARSED_TRAINER = """\
from transformers import AutoModelForCausalLM, HfArgumentParser, Trainer, TrainingArguments
(args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses()
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B")
Trainer(model=model, args=args, train_dataset=ds).train()
"""


def test_a_torch_compile_option_nothing_of_the_project_sets_is_not_a_compile(tmp_path):
    # every HfArgumentParser script takes `--torch_compile`; a run compiles only where the project passes it
    launch = "torchrun --nproc_per_node 4 train.py --gradient_checkpointing True{}\n"
    assert _project(tmp_path / "a", PARSED_TRAINER, launch.format("")) == []
    (found,) = _project(tmp_path / "b", PARSED_TRAINER, launch.format(" --torch_compile True"))
    assert "DDP (4 processes" in found.message
