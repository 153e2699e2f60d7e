"""The functions a script checkpoints, and what in them makes `torch.compile` break its graph.

torch 2.13.0, `torch/utils/checkpoint.py`, Note [torch.compile and checkpoint]: Dynamo wraps a
`checkpoint(fn, ...)` call in a higher-order op only when it can trace `fn` whole; otherwise it graph-breaks
at the call, and `checkpoint` itself is `@torch._disable_dynamo`, so `fn` and everything it calls run
eagerly. A break in a loop (`for layer in self.layers: checkpoint(layer, x)`) makes Dynamo skip the whole
calling frame ("graph break in loop") [T12].

What counts as a break here is only what breaks on every release checked and whatever the model's
tensors: `print(...)`, `warnings.warn(...)`, `breakpoint()`, `pdb.set_trace()`, `torch._dynamo.graph_break()`,
and `.item()` / `.tolist()` (unless the script sets `capture_scalar_outputs`). `.numpy()` is traced
(torch's NumPy interop) and `if tensor:` cannot be told from `if flag:`; neither is looked for.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from ckpt_doctor.analysis.facts import Call, ScriptFacts
from ckpt_doctor.analysis.values import Instance, QualName

CHECKPOINT_WRAPPER = "torch.distributed.algorithms._checkpoint.checkpoint_wrapper.checkpoint_wrapper"
APPLY_AC = "torch.distributed.algorithms._checkpoint.checkpoint_wrapper.apply_activation_checkpointing"

# callee -> how a message names it; these break the graph whatever their arguments
_BREAKING_CALLS = {
    "print": "`print(...)`",
    "warnings.warn": "`warnings.warn(...)`",
    "breakpoint": "`breakpoint()`",
    "pdb.set_trace": "`pdb.set_trace()`",
    "torch._dynamo.graph_break": "`torch._dynamo.graph_break()`",
}
_LOGGING_CALLS = {"print", "warnings.warn"}  # unless added to `torch._dynamo.config.reorderable_logging_functions`
_SCALAR_METHODS = {"item": "`.item()`", "tolist": "`.tolist()`"}  # unless `capture_scalar_outputs` is on
_COMPILING_TESTS = ("is_compiling", "is_dynamo_compiling", "is_exporting", "is_scripting", "is_tracing")


@dataclass(frozen=True)
class GraphBreak:
    call: Call
    what: str  # "`print(...)`"
    via: str | None = None  # the function of the body's that it is in, when not the body itself ("helper")


@dataclass
class CheckpointedBody:
    """A function of the script's that runs under a checkpoint: `fn` of `checkpoint(fn, ...)`, or the
    `forward` of a module given to `checkpoint_wrapper` / picked by `apply_activation_checkpointing`."""

    site: Call  # the checkpoint call, or the wrapper's
    function: str  # its dotted name: "Block.forward", "Net.forward.custom", "helper"
    breaks: list[GraphBreak]


def checkpointed_bodies(facts: ScriptFacts, checkpoint_sites: list[Call]) -> list[CheckpointedBody]:
    """The checkpointed functions of this file that hold a graph break, each with the breaks found."""
    scopes = _scopes(facts)
    scalars_captured = _mentions(facts, "capture_scalar_outputs", "TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS")
    logging_reordered = _mentions(facts, "reorderable_logging_functions")
    found: list[CheckpointedBody] = []
    pairs = [(site, _checkpointed(facts, site, scopes)) for site in checkpoint_sites if site.name != "partial"]
    pairs += [(w, _wrapped(facts, w)) for w in facts.calls_to(CHECKPOINT_WRAPPER, APPLY_AC)]
    for site, function in pairs:
        if function is None or site.via is not None:
            continue
        breaks = _breaks(facts, function, scopes, scalars_captured, logging_reordered)
        if breaks:
            found.append(CheckpointedBody(site, function, breaks))
    return found


def _scopes(facts: ScriptFacts) -> set[str]:
    """The functions of this file that make calls (the only ones a break can be in)."""
    return {c.scope for c in facts.calls if c.via is None}


def _mentions(facts: ScriptFacts, *words: str) -> bool:
    return any(word in line for line in facts.lines for word in words)


def _checkpointed(facts: ScriptFacts, site: Call, scopes: set[str]) -> str | None:
    """The function `checkpoint(fn, ...)` runs, when it is the script's own: a nested or module-level function,
    `self.method`, or `self.block` bound to an instance of the script's own module class."""
    if not site.args:
        return None
    fn, text = site.args[0], site.arg_names[0] if site.arg_names else None
    if isinstance(fn, QualName) and fn.name.startswith("<local>.") and not fn.alternatives:
        name = fn.name.split(".", 1)[1]
        nested = f"{site.scope}.{name}"
        if nested in scopes:
            return nested
        if name in facts.functions:
            return name
        return None
    if not text or not text.startswith("self.") or text.count(".") != 1:
        return None
    owner = facts.enclosing_class(site.scope)
    if owner is None:
        return None
    attribute = text.split(".", 1)[1]
    if attribute in owner.methods:
        return f"{owner.name}.{attribute}"
    bound = [a.value for a in facts.attr_assigns if a.target == text and a.scope.startswith(f"{owner.name}.")]
    return _own_forward(facts, bound)


def _wrapped(facts: ScriptFacts, call: Call) -> str | None:
    """`checkpoint_wrapper(Block(...))`: `Block.forward`; `apply_activation_checkpointing(model,
    check_fn=lambda m: isinstance(m, Block))`: the same, for the script's own `Block`."""
    if call.name == "checkpoint_wrapper":
        return _own_forward(facts, call.args[:1])
    check = next((k.value for k in call.node.keywords if k.arg == "check_fn"), None)
    if not isinstance(check, ast.Lambda) or not isinstance(check.body, ast.Call):
        return None
    test = check.body
    if isinstance(test.func, ast.Name) and test.func.id == "isinstance" and len(test.args) == 2 and isinstance(test.args[1], ast.Name):
        owner = facts.classes.get(test.args[1].id)
        if owner is not None and owner.library_base is None and "forward" in owner.methods:
            return f"{owner.name}.forward"
    return None


def _own_forward(facts: ScriptFacts, values: list) -> str | None:
    """`K.forward` when every value bound is an instance of the script's own class `K` that defines `forward`."""
    classes = {v.qualname for v in values if isinstance(v, Instance)}
    if len(classes) != 1 or len(values) != sum(isinstance(v, Instance) for v in values):
        return None  # also rebound to something else (`self.block = torch.compile(self.block)`)
    (qualname,) = classes
    if not qualname.startswith("<local>."):
        return None
    owner = facts.classes.get(qualname.split(".", 1)[1])
    if owner is None or owner.library_base is not None or "forward" not in owner.methods:
        return None
    return f"{owner.name}.forward"


def _breaks(facts: ScriptFacts, function: str, scopes: set[str], scalars_captured: bool, logging_reordered: bool) -> list[GraphBreak]:
    """The breaks in `function`'s own body, and in the script's functions it calls directly (one level)."""
    found = []
    for call in facts.calls:
        if call.scope != function or call.via is not None or _only_eager(call):
            continue
        what = _breaking(call, scalars_captured, logging_reordered)
        if what:
            found.append(GraphBreak(call, what))
            continue
        callee = _own_callee(facts, call, function, scopes)
        if callee is not None:
            found += [GraphBreak(inner, what, callee) for inner in facts.calls
                      if inner.scope == callee and inner.via is None and not _only_eager(inner)
                      and (what := _breaking(inner, scalars_captured, logging_reordered))]
    return found


def _breaking(call: Call, scalars_captured: bool, logging_reordered: bool) -> str | None:
    if call.qualname in _BREAKING_CALLS and not call.other_qualnames:
        if call.qualname in _LOGGING_CALLS and logging_reordered:
            return None
        return _BREAKING_CALLS[call.qualname]
    if call.qualname is None and call.method in _SCALAR_METHODS and call.is_method and not call.args and not call.kwargs:
        return None if scalars_captured else _SCALAR_METHODS[call.method]
    return None


def _only_eager(call: Call) -> bool:
    """Under `if not torch.compiler.is_compiling():` (or any test of compiling): Dynamo does not trace it."""
    return any(word in literal.text for literal in call.condition.literals for word in _COMPILING_TESTS)


def _own_callee(facts: ScriptFacts, call: Call, function: str, scopes: set[str]) -> str | None:
    """The script's own function a call in the body runs: `helper(h)`, `self._norm(h)`."""
    if call.qualname and call.qualname.startswith("<local>."):
        name = call.qualname.split(".", 1)[1]
        return name if name in facts.functions and name in scopes else None
    if call.qualname is None and call.receiver == "self" and call.method:
        owner = facts.enclosing_class(function)
        if owner is not None and call.method in owner.methods:
            name = f"{owner.name}.{call.method}"
            return name if name in scopes and name != function else None
    return None
