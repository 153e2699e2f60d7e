"""The rules of issue 12 (checkpointing and OOM in 2026), beyond their page examples: branches, options whose
value is not known, the project's own objects of the same name, configs."""

from __future__ import annotations

import textwrap

from ckpt_doctor.check.fix import applicable, apply_fixes
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.config import Settings

NEWEST = {"torch": "2.13", "transformers": "5.24", "peft": "0.21", "trl": "1.16"}


def run(code: str, select: str, targets: dict | None = None, gpu_memory: str | None = None):
    text = textwrap.dedent(code)
    settings = Settings(target_versions=NEWEST if targets is None else targets, select=[select], gpu_memory=gpu_memory)
    return [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == select]


def lines(code: str, select: str, **kwargs) -> list[int]:
    return [f.span.start.line for f in run(code, select, **kwargs)]


# -- CKPT106 ---------------------------------------------------------------------------------------

def test_budget_without_compile_is_reported_and_aliases_resolve():
    assert lines(
        """
        import torch
        from torch._functorch import config as fconf
        fconf.activation_memory_budget = 0.4
        with torch._functorch.config.patch(activation_memory_budget=0.2):
            train(model)
        """,
        "CKPT106",
    ) == [4, 5]


def test_budget_with_compile_on_the_same_path_is_clean():
    assert lines(
        """
        import torch
        import torch._functorch.config
        torch._functorch.config.activation_memory_budget = 0.5
        model = torch.compile(model)
        """,
        "CKPT106",
    ) == []


def test_budget_and_compile_in_one_branch_is_clean():
    assert lines(
        """
        import argparse, torch
        p = argparse.ArgumentParser(); p.add_argument("--compile", action="store_true"); args = p.parse_args()
        if args.compile:
            torch._functorch.config.activation_memory_budget = 0.5
            model = torch.compile(model)
        """,
        "CKPT106",
    ) == []


def test_compile_only_with_an_option_leaves_the_run_without_it():
    found = run(
        """
        import argparse, torch
        p = argparse.ArgumentParser(); p.add_argument("--no_compile", action="store_false", dest="compile"); args = p.parse_args()
        torch._functorch.config.activation_memory_budget = 0.5
        if args.compile:
            model = torch.compile(model)
        """,
        "CKPT106",
    )
    assert [f.span.start.line for f in found] == [4]
    assert "line 6" in found[0].message and "only" in found[0].message


def test_trainer_compile_flag_and_bare_decorator_count_as_compiling():
    assert lines(
        """
        import torch
        from transformers import TrainingArguments
        torch._functorch.config.activation_memory_budget = 0.5
        args = TrainingArguments("out", torch_compile_mode="max-autotune-no-cudagraphs")
        """,
        "CKPT106",
    ) == []
    assert lines(
        """
        import torch
        torch._functorch.config.activation_memory_budget = 0.5
        @torch.compile
        def step(model, batch):
            return model(**batch).loss
        """,
        "CKPT106",
    ) == []


def test_command_line_torch_compile_is_an_option_not_off():
    found = run(
        """
        import torch
        from transformers import HfArgumentParser, TrainingArguments
        (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses()
        torch._functorch.config.activation_memory_budget = 0.5
        """,
        "CKPT106",
    )
    assert len(found) == 1 and "without `--torch_compile`" in found[0].message


def test_the_projects_own_budget_attribute_and_the_default_are_not_torch():
    assert lines(
        """
        import torch
        cfg.activation_memory_budget = 0.5
        torch._functorch.config.activation_memory_budget = 1.0
        """,
        "CKPT106",
    ) == []


def test_budget_on_dynamo_config_raises_even_when_compiled():
    found = run(
        """
        import torch
        torch._dynamo.config.activation_memory_budget = 0.5
        model = torch.compile(model)
        """,
        "CKPT106",
    )
    assert [f.span.start.line for f in found] == [3] and "AttributeError" in found[0].message


# -- CKPT107 ---------------------------------------------------------------------------------------

def test_cudagraph_compile_and_checkpointing_on_exclusive_branches_never_meet():
    assert lines(
        """
        import argparse, torch
        p = argparse.ArgumentParser(); p.add_argument("--gc", action="store_true"); args = p.parse_args()
        if args.gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model = torch.compile(model, mode="reduce-overhead")
        """,
        "CKPT107",
    ) == []


def test_trainer_compile_mode_with_trainer_checkpointing_is_reported_and_fixed():
    code = textwrap.dedent(
        """
        from transformers import Trainer, TrainingArguments
        args = TrainingArguments("out", gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
                                 torch_compile_mode="max-autotune")
        Trainer(model=model, args=args).train()
        """
    )
    found = run(code, "CKPT107")
    assert [f.span.start.line for f in found] == [3]
    fixed = apply_fixes(code, [f.fix for f in found if applicable(f.fix, unsafe=True)])
    assert 'torch_compile_mode="max-autotune-no-cudagraphs"' in fixed
    assert run(fixed, "CKPT107") == []


def test_modes_without_cuda_graphs_and_unknown_modes_are_clean():
    for mode in ('"default"', '"max-autotune-no-cudagraphs"', "args.mode"):
        assert lines(
            f"""
            import torch
            from torch.utils.checkpoint import checkpoint
            model = torch.compile(model, mode={mode})
            y = checkpoint(block, x, use_reentrant=False)
            """,
            "CKPT107",
        ) == [], mode


def test_cudagraphs_option_is_reported_without_a_fix():
    found = run(
        """
        import torch
        from torch.utils.checkpoint import checkpoint
        model = torch.compile(model, options={"triton.cudagraphs": True})
        y = checkpoint(block, x, use_reentrant=False)
        """,
        "CKPT107",
    )
    assert [f.span.start.line for f in found] == [4] and found[0].fix is None


def test_a_project_method_named_compile_is_not_torch():
    assert lines(
        """
        from torch.utils.checkpoint import checkpoint
        class Graph:
            def compile(self, mode=None):
                return self
        g = Graph()
        g.compile(mode="reduce-overhead")
        y = checkpoint(block, x, use_reentrant=False)
        """,
        "CKPT107",
    ) == []
