"""The script's own evaluation loops, and the forwards in them that autograd records.

An evaluation loop is a loop that runs the model and makes no step: no `.backward()`, `torch.autograd.grad` or
optimizer `.step()` in it, nor after it in its function before the model is put back in training mode. It evaluates
when the model's last mode call before it is `.eval()`, or when its function is named for evaluation
(`evaluate`, `validate`, `eval_epoch`). A forward in it records its graph unless the loop, its function or a call of
that function runs under `torch.no_grad()` / `torch.inference_mode()` / `torch.set_grad_enabled(False)`
(`Call.grad_off`); a function the script never calls is judged by its calls in the project's other modules (an
`engine.py` whose `eval_fn` `train.py` runs), and not at all when none is found. The graph lives as long as a tensor
made from the forward's output does: what the loop keeps across batches (`total += loss`,
`losses.append(outputs.loss)`, `preds = torch.cat((preds, outputs))`) keeps every batch's graph.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Callable

from ckpt_doctor.analysis.facts import GRAD_SWITCHES, Call, Loop, ScriptFacts, dotted_name
from ckpt_doctor.analysis.values import truth

_EVALUATION_NAME = re.compile(r"(?:^|_)(?:eval|evaluate|evaluation|valid|validate|validation|val|test)(?:_|$)", re.IGNORECASE)
_OPTIMIZER = re.compile(r"optim", re.IGNORECASE)
# methods of a tensor whose result has no autograd history, or is no tensor
_DETACHING = frozenset({"item", "detach", "tolist", "numpy", "argmax", "argmin", "long", "int", "bool", "eq", "ne", "gt", "lt",
                        "ge", "le", "size", "dim", "numel", "nonzero", "argsort", "topk_indices"})
# methods whose result keeps the graph of the tensor they are called on
_KEEPING = frozenset({"cpu", "cuda", "to", "float", "half", "bfloat16", "double", "mean", "sum", "view", "reshape", "squeeze",
                      "unsqueeze", "contiguous", "clone", "softmax", "log_softmax", "sigmoid", "exp", "log", "flatten",
                      "transpose", "permute", "mul", "div", "add", "sub", "masked_select", "gather"})
_KEEPS = frozenset({"append", "extend"})
# calls that take the trained model or its parameters: optimizers, `accelerator.prepare`, `deepspeed.initialize`
_TAKES_TRAINED = re.compile(r"adam|sgd|lion|adafactor|optim|prepare$|^initialize$", re.IGNORECASE)


@dataclass(frozen=True)
class GradForward:
    """A forward of the model in an evaluation loop, made with autograd recording."""

    call: Call  # `model(**batch)`
    model: str  # how the script names the model there: "model", "self.model"
    loop: Loop  # the innermost loop it is in
    in_eval_mode: bool  # the model's last mode call before the loop is `.eval()`
    kept: tuple[tuple[int, str], ...]  # (line, source) of what the loop keeps of it across batches
    called_from: str | None = None  # "train.py:110": the other module's call of its function, when the script makes none
    trained_elsewhere: bool = False  # the model is a parameter of its function, trained by the module calling it

    @property
    def over_batches(self) -> bool:
        """The loop walks a collection (`for batch in loader`), not a counter or a condition."""
        node = self.loop.node
        return isinstance(node, (ast.For, ast.AsyncFor)) and not (
            isinstance(node.iter, ast.Call) and isinstance(node.iter.func, ast.Name) and node.iter.func.id == "range")


# the calls other modules of the project make of one of the script's top-level functions: (file:line, call, whether
# that module trains: calls `.backward()`)
ImporterCalls = Callable[[str], "list[tuple[str, Call, bool]]"]


def grad_forwards(facts: ScriptFacts, importer_calls: ImporterCalls = lambda function: []) -> list[GradForward]:
    """The forwards of the script's evaluation loops that autograd records: of a model the script trains, or, in a
    function of the script that another module of the project calls, of the model that module trains and hands it
    (`test_epoch(model, val_loader)` in the `train.py` that steps `model`'s optimizer)."""
    if any(c.qualname in GRAD_SWITCHES and c.args and truth(c.args[0]) is False for c in facts.calls):
        return []  # `torch.set_grad_enabled(False)` somewhere: where it holds is not followed
    found = []
    trained, optimized = _trained(facts)
    for call in facts.calls:
        model = _model_called(call, optimized)
        if model is None or call.grad_off or call.via is not None:
            continue
        # a model nothing trains (`ref_model`, `teacher_model`) has no parameter autograd would record
        trained_elsewhere = model not in trained and _handed_in(facts, model, call.scope)
        if model not in trained and not trained_elsewhere:
            continue
        loop = _innermost(facts, call)
        if loop is None or loop.grad_off or _steps(facts, loop):
            continue
        in_eval_mode = _last_mode(facts, model, call.scope, loop.line) == "eval"
        if not (in_eval_mode or _EVALUATION_NAME.search(call.scope.rsplit(".", 1)[-1])):
            continue
        called_from = _called_with_grad(facts, call.scope, importer_calls, trained_elsewhere)
        if called_from is None:
            continue
        found.append(GradForward(call, model, loop, in_eval_mode, _kept(loop.node, call.node),
                                 called_from if called_from != "here" else None, trained_elsewhere))
    return found


def _model_called(call: Call, optimized: set[str]) -> str | None:
    """`model(...)`, `self.model(...)`, `model.forward(...)`, `model.module(...)`, or a call of a module whose parameters
    the script gives an optimizer by whatever name (`gad(batch)`): the model's name, else None."""
    func = call.node.func
    if isinstance(func, ast.Attribute) and func.attr in ("forward", "module"):
        func = func.value
    name = dotted_name(func)
    if name is None or ("model" not in name.rsplit(".", 1)[-1].lower() and name not in optimized):
        return None
    return name


def _trained(facts: ScriptFacts) -> tuple[set[str], set[str]]:
    """How the script names the models it trains: what it calls `.train()` on, whose parameters it gives an optimizer,
    what it hands `accelerator.prepare(...)` / `deepspeed.initialize(...)`; and, of them, those whose parameters it
    gives an optimizer (a module, whatever its name)."""
    trained = {c.receiver for c in facts.calls if c.name == "train" and c.is_method and c.receiver
               and (not c.args or truth(c.args[0]) is True)}
    optimized: set[str] = set()
    for call in facts.calls:
        if not _TAKES_TRAINED.search(call.name):
            continue
        for node in ast.walk(call.node):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("parameters", "named_parameters"):
                optimized.add(dotted_name(node.func.value))
        given = list(call.node.args) + [k.value for k in call.node.keywords]
        trained.update(name for name in map(dotted_name, given) if name and "model" in name.rsplit(".", 1)[-1].lower())
    optimized.discard(None)
    trained |= optimized
    trained.discard(None)
    return trained, optimized


def _handed_in(facts: ScriptFacts, model: str, scope: str) -> bool:
    """Whether `model` is a parameter of the top-level function `scope` (`def test_epoch(model, loader):`): a model its
    caller may train."""
    return "." not in scope and model in facts.functions.get(scope, [])


def _innermost(facts: ScriptFacts, call: Call) -> Loop | None:
    holding = [loop for loop in facts.loops if loop.holds(call)]
    return max(holding, key=lambda loop: loop.line, default=None)


def _is_step(call: Call) -> bool:
    return call.is_backward or (call.name == "manual_backward" and call.is_method) or call.qualname == "torch.autograd.grad" \
        or (call.name == "step" and bool(call.receiver) and bool(_OPTIMIZER.search(call.receiver)))


def _steps(facts: ScriptFacts, loop: Loop) -> bool:
    """Whether the loop makes a step, or its function makes one after it before a `.train()` (a loop that collects
    log-probabilities for a loss it backpropagates afterwards)."""
    end = loop.node.end_lineno or loop.line
    later = sorted((c for c in facts.calls if c.scope == loop.scope and c.via is None and c.line > loop.line), key=lambda c: c.line)
    for call in later:
        if call.line > end and call.name == "train" and call.is_method and not call.args:
            return False
        if _is_step(call):
            return True
    return False


def _called_with_grad(facts: ScriptFacts, scope: str, importer_calls: ImporterCalls, trained_elsewhere: bool) -> str | None:
    """How the function `scope` is known to run with autograd on: "here" when the script calls it and none of its calls
    turns autograd off, the first call another module of the project makes (`"train.py:110"`) when the script makes
    none and none of those turns it off; None otherwise (a caller nobody sees may turn it off). A function that runs a
    model handed in is judged by the calls of the modules that train it (`trained_elsewhere`), wherever else it is
    called from."""
    if scope == "<module>":
        return None if trained_elsewhere else "here"
    name = scope.rsplit(".", 1)[-1]
    method = "." in scope  # `self.evaluate(...)`, `trainer.evaluate(...)`
    callers = [c for c in facts.calls if c.name == name and (c.qualname == f"<local>.{scope}" or (method and c.is_method))]
    if callers and not trained_elsewhere:
        return None if any(c.grad_off for c in callers) else "here"
    if method:
        return None
    elsewhere = [(where, call) for where, call, trains in importer_calls(name) if trains or not trained_elsewhere]
    return elsewhere[0][0] if elsewhere and not any(c.grad_off for _, c in elsewhere) else None


def _last_mode(facts: ScriptFacts, model: str, scope: str, line: int) -> str | None:
    """"eval" or "train": the last `model.eval()` / `model.train()` of `scope` before `line`."""
    modes = [c for c in facts.calls if c.scope == scope and c.line <= line and c.is_method and c.name in ("eval", "train")
             and c.receiver in (model, f"{model}.module") and not c.args]
    return max(modes, key=lambda c: c.line).name if modes else None


def _kept(loop: ast.For | ast.AsyncFor | ast.While, forward: ast.Call) -> tuple[tuple[int, str], ...]:
    """What the loop keeps of the forward's output from one iteration to the next: `+=` into a name the loop does not
    rebind, `.append(...)` / `.extend(...)` on one, or a name rebound to a value made of itself
    (`preds = torch.cat((preds, outputs))`, `total = total + loss`)."""
    statements = [node for stmt in loop.body for node in _walk(stmt)]
    rebound = {t.id for node in statements if isinstance(node, ast.Assign) and not _accumulates(node)
               for t in node.targets if isinstance(t, ast.Name)}
    carried: set[str] = set()
    for node in statements:  # source order: an assignment taints the names read after it
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and _carries(node.value, forward, carried):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            carried.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    kept = []
    for node in statements:
        if isinstance(node, ast.Assign) and _accumulates(node) and _carries(node.value, forward, carried - {node.targets[0].id}):
            kept.append((node.lineno, ast.unparse(node)))  # not `output = F.interpolate(output, ...)`: this batch's own
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add) and _carries(node.value, forward, carried):
            target = dotted_name(node.target)
            if target and target not in rebound:
                kept.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _KEEPS
              and isinstance(node.func.value, ast.Name) and node.func.value.id not in rebound
              and any(_carries(a, forward, carried) for a in node.args)):
            kept.append((node.lineno, ast.unparse(node)))
    return tuple(kept)


def _accumulates(node: ast.Assign) -> bool:
    """`name = f(..., name, ...)`: one name rebound to a value that reads it (an accumulation when the value also has
    the forward's history through another name)."""
    if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
        return False
    target = node.targets[0].id
    return any(isinstance(n, ast.Name) and n.id == target for n in ast.walk(node.value))


def _walk(node: ast.AST):
    """The nodes of a statement in source order, not entering functions, lambdas or classes defined in it."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            yield from _walk(child)


def _carries(expr: ast.expr, forward: ast.Call, carried: set[str]) -> bool:
    """Whether `expr`'s value has the forward's autograd history (conservatively: what cannot be told does not)."""
    if expr is forward:
        return True
    if isinstance(expr, ast.Name):
        return expr.id in carried
    if isinstance(expr, ast.Attribute):
        return expr.attr != "data" and _carries(expr.value, forward, carried)
    if isinstance(expr, ast.Subscript):
        return _carries(expr.value, forward, carried)
    if isinstance(expr, ast.BinOp):
        return _carries(expr.left, forward, carried) or _carries(expr.right, forward, carried)
    if isinstance(expr, ast.UnaryOp):
        return _carries(expr.operand, forward, carried)
    if isinstance(expr, (ast.Tuple, ast.List)):
        return any(_carries(e, forward, carried) for e in expr.elts)
    if not isinstance(expr, ast.Call):
        return False
    func = expr.func
    if isinstance(func, ast.Attribute) and not _is_function(func):
        if func.attr in _DETACHING:
            return False
        return func.attr in _KEEPING and _carries(func.value, forward, carried)
    name = (dotted_name(func) or "").lower()
    differentiable = "loss" in name or "criterion" in name or (name.startswith(("torch.", "f.")) and "arg" not in name)
    return differentiable and any(_carries(a, forward, carried) for a in expr.args)


def _is_function(func: ast.Attribute) -> bool:
    """`torch.softmax`, `F.cross_entropy`, `self.criterion`: a function reached through a module or `self`, not a
    tensor method."""
    root = func.value
    while isinstance(root, ast.Attribute):
        root = root.value
    return isinstance(root, ast.Name) and root.id in ("torch", "F", "nn", "self") and dotted_name(func.value) is not None
