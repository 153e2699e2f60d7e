"""CKPT110 (a graph break inside a checkpointed function of a compiled model), beyond its page examples: the ways a
function gets checkpointed, the breaks that count, and the look-alikes that compile fine or are not torch's."""

from __future__ import annotations

import textwrap

from ckpt_doctor.analysis.facts import extract
from ckpt_doctor.analysis.graph_breaks import checkpointed_bodies
from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.config import Settings

NEWEST = {"torch": "2.13", "transformers": "5.24", "peft": "0.21", "trl": "1.16"}
HEAD = """
import argparse
import warnings
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing, checkpoint_wrapper
"""


def run(code: str, targets: dict | None = None):
    text = textwrap.dedent(HEAD) + textwrap.dedent(code)
    settings = Settings(target_versions=NEWEST if targets is None else targets, select=["CKPT110"])
    return [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == "CKPT110"]


def lines(code: str, **kwargs) -> list[int]:
    offset = len(textwrap.dedent(HEAD).splitlines())
    return sorted(f.span.start.line - offset for f in run(code, **kwargs))


BLOCK = """
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        h = self.lin(x)
        {line}
        return h
"""


def block(line: str) -> str:
    return BLOCK.format(line=line)


LOOP = """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)


model = torch.compile(Net())
"""


def test_each_break_in_a_checkpointed_module_is_reported():
    for line in ("print(h.shape)", "s = h.sum().item()", "v = h.tolist()", "warnings.warn('x')", "breakpoint()",
                 "torch._dynamo.graph_break()"):
        assert lines(block(line) + LOOP) == [9], line
    (finding,) = run(block("print(h.shape)") + LOOP)
    assert "`print(...)` in `Block.forward`, the function checkpointed at line" in finding.message
    assert "falls back to eager" in finding.message and "torch 2.13" in finding.message


def test_calls_that_do_not_break_are_clean():
    for line in ("n = h.detach().numpy()", "d = {}.items()", "s = h.sum()", "self.log(h)"):
        assert lines(block(line) + LOOP) == [], line


def test_the_ways_a_function_is_checkpointed():
    code = """
    def helper(h):
        print("helper")
        return h

    class Block(nn.Module):
        def forward(self, x):
            return x.sum().item()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.wrapped = checkpoint_wrapper(Block())

        def _inner(self, x):
            return self._log(x)

        def _log(self, x):
            warnings.warn("inner")
            return x

        def forward(self, x):
            def local(y):
                print(y)
                return y
            x = checkpoint(local, x, use_reentrant=False)
            x = checkpoint(helper, x, use_reentrant=False)
            x = checkpoint(self._inner, x, use_reentrant=False)
            return self.wrapped(x)

    model = torch.compile(Net())
    """
    assert lines(code) == [3, 8, 19, 24]
    messages = " ".join(f.message for f in run(code))
    assert "`Net._log`, which `Net._inner` calls" in messages
    assert "wrapped by `checkpoint_wrapper`" in messages


def test_apply_activation_checkpointing_with_own_class():
    code = block("print(h)") + """
model = nn.Sequential(Block(), Block())
apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, Block))
model = torch.compile(model)
"""
    assert lines(code) == [9]
    library = block("print(h)") + """
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, LlamaDecoderLayer))
model = torch.compile(model)
"""
    assert lines(library) == []


def test_no_compile_or_fullgraph_is_clean():
    assert lines(block("print(h)") + LOOP.replace("model = torch.compile(Net())", "model = Net()")) == []
    assert lines(block("print(h)") + LOOP.replace("torch.compile(Net())", "torch.compile(Net(), fullgraph=True)")) == []
    trainer = LOOP.replace("model = torch.compile(Net())", "from transformers import TrainingArguments\n"
                           "args = TrainingArguments('out', torch_compile=True)")
    assert lines(block("print(h)") + trainer) == [9]


def test_guarded_or_captured_breaks_are_clean():
    guarded = block("if not torch.compiler.is_compiling():\n            print(h)") + LOOP
    assert lines(guarded) == []
    captured = "torch._dynamo.config.capture_scalar_outputs = True\n" + block("s = h.sum().item()") + LOOP
    assert lines(captured) == []
    reordered = "torch._dynamo.config.reorderable_logging_functions.add(print)\n" + block("print(h)") + LOOP
    assert lines(reordered) == []
    # only `.item()` is captured: a print still breaks
    assert lines("torch._dynamo.config.capture_scalar_outputs = True\n" + block("print(h)") + LOOP) == [10]


def test_own_print_and_library_layers_are_clean():
    own = "def print(*args):\n    pass\n" + block("print(h)") + LOOP
    assert lines(own) == []
    library = """
from transformers import AutoModelForCausalLM
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = AutoModelForCausalLM.from_pretrained("gpt2")

    def forward(self, x):
        print(x)
        return checkpoint(self.block, x, use_reentrant=False)

model = torch.compile(Net())
"""
    assert lines(library) == []  # the print is in the caller, not in the checkpointed function


def test_function_compiled_itself_or_rebound_is_clean():
    decorated = """
@torch.compile
def body(x):
    print(x)
    return x

y = checkpoint(body, torch.ones(2), use_reentrant=False)
"""
    assert lines(decorated) == []
    rebound = block("print(h)") + """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.block = torch.compile(self.block)

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
"""
    assert lines(rebound) == []


def test_branches():
    optional = block("print(h)") + LOOP.replace("model = torch.compile(Net())",
                                                   "p = argparse.ArgumentParser()\np.add_argument('--compile', action='store_true')\n"
                                                   "args = p.parse_args()\nmodel = Net()\nif args.compile:\n    model = torch.compile(model)")
    (finding,) = run(optional)
    assert "--compile" in finding.message
    other = block("print(h)") + """
p = argparse.ArgumentParser()
p.add_argument('--gc', action='store_true')
args = p.parse_args()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        if args.gc:
            return checkpoint(self.block, x, use_reentrant=False)
        return self.block(x)


if not args.gc:
    model = torch.compile(Net())
"""
    assert lines(other) == []
    debug = block("if self.debug:\n            print(h)") + LOOP
    (finding,) = run(debug)
    assert "self.debug" in finding.message


def test_versions():
    assert lines(block("print(h)") + LOOP, targets={**NEWEST, "torch": "2.3"}) == []
    assert lines(block("print(h)") + LOOP, targets={**NEWEST, "torch": "2.4"}) == [9]


def test_bodies_fact():
    text = textwrap.dedent(HEAD) + block("print(h)") + LOOP
    facts = extract(text, "t.py")
    from ckpt_doctor.analysis.training import Training  # noqa: F401  (the sites come from the facts' calls)
    sites = [c for c in facts.calls if c.qualname == "torch.utils.checkpoint.checkpoint"]
    (body,) = checkpointed_bodies(facts, sites)
    assert body.function == "Block.forward" and [b.what for b in body.breaks] == ["`print(...)`"]
