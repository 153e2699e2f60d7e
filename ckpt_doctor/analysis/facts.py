"""The one extraction pass: source text -> `ScriptFacts`.

One `ast.parse`, one walk. The walk resolves names through imports, aliases, `functools.partial`
and local shadowing, propagates simple constants (module constants, dict literals, argparse
defaults, dataclass field defaults) and records every call and attribute assignment with its
resolved callee and evaluated keyword arguments. Rules are functions of these records; adding a
rule never adds a walk.

Function bodies are walked after the module body, as Python runs them: by the time `main()` is
called the whole module has executed, so a module-level `checkpoint = torch.load(...)` shadows an
imported `checkpoint` inside every function.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Iterable

from ckpt_doctor.analysis.conditions import ALWAYS, Condition, Literal, within
from ckpt_doctor.analysis.config_files import NoFiles, ProjectFiles, settings_in_text
from ckpt_doctor.analysis.launchers import UNKNOWN_VALUE, Launch, abbreviations, launched_value, with_launched
from ckpt_doctor.analysis.parse import LEAVES, children, parse_module
from ckpt_doctor.analysis.library import FLAT_PACKAGES as _FLAT_PACKAGES
from ckpt_doctor.analysis.library import DEEPSPEED_CHECKPOINTS, HF_ENABLE_METHODS, KBIT_PREPARATION, PEFT_WRAPPERS
from ckpt_doctor.analysis.values import (
    MISSING,
    constant,
    truth,
    UNKNOWN,
    Const,
    DictVal,
    Instance,
    Namespace,
    OptionVal,
    Origin,
    PartialVal,
    QualName,
    TupleVal,
    Value,
)
from ckpt_doctor.findings import Position, Span

if TYPE_CHECKING:
    from ckpt_doctor.analysis.project import FunctionSummary, Project
_ALIASES = {
    "torch.nn.parallel.distributed.DistributedDataParallel": "torch.nn.parallel.DistributedDataParallel",
    "torch.distributed.fsdp.fully_sharded_data_parallel.FullyShardedDataParallel": (
        "torch.distributed.fsdp.FullyShardedDataParallel"
    ),
    "torch.distributed.algorithms._checkpoint.checkpoint_wrapper.apply_activation_checkpointing": (
        "torch.distributed.algorithms._checkpoint.checkpoint_wrapper.apply_activation_checkpointing"
    ),
}
# the names a star import of a library module binds that the rules follow
_STAR_EXPORTS = {"torch.utils.checkpoint": ("checkpoint", "checkpoint_sequential"),
                 "transformers.trainer": ("Trainer", "TrainingArguments")}  # `from transformers.trainer import *`
_PARTIAL = {"functools.partial"}
# torch's dtype constants by every name they go by (compared in `torch_dtype == torch.bfloat16`)
_TORCH_DTYPES = {"torch.float16": "float16", "torch.half": "float16", "torch.bfloat16": "bfloat16", "torch.float32": "float32",
                 "torch.float": "float32", "torch.float64": "float64", "torch.double": "float64"}
ARGUMENT_PARSERS = ("transformers.HfArgumentParser", "trl.TrlParser", "alignment.H4ArgumentParser")  # the last: the alignment handbook's
H4_PARSER = "H4ArgumentParser"  # its name, in the copies projects keep (`lionalign.arguments`), read or not
# the `HfArgumentParser` / `TrlParser` methods that return the dataclasses (a settings file's values where one is read)
_HF_PARSES = ("parse_args_into_dataclasses", "parse_args_and_config", "parse_yaml_file", "parse_json_file", "parse_dict")
# the switches projects give their own models (open_lm, timm-style): `set_grad_checkpointing()`, ...
_OWN_ENABLE = re.compile(r"(set|enable)_(grad|gradient|activation)_checkpointing")
# the keyword a model class of a project takes to checkpoint its blocks (`MAR(grad_checkpointing=...)`, `use_checkpoint=`)
_OWN_CHECKPOINTING_KEYWORD = re.compile(r"(use_)?(grad|gradient|activation)_checkpoint(ing)?|use_(grad_)?checkpoint(ing)?")


def is_checkpointing_switch(name: str) -> bool:
    """Whether a method called `name` is a model's own checkpointing switch (`set_grad_checkpointing`, timm-style)."""
    return bool(_OWN_ENABLE.fullmatch(name))


def own_checkpointing_keyword(call: "Call") -> str | None:
    """The keyword of `call` that asks a model to checkpoint itself, unless it is a constant that says no (an option's
    default of False does not: the option turns it on)."""
    for name, value in call.kwargs.items():
        said_no = isinstance(value, Const) and not value.value and not value.alternatives and (value.origin is None or value.origin.option is None)
        if _OWN_CHECKPOINTING_KEYWORD.fullmatch(name) and not said_no:
            return name
    return None


def canonical(name: str) -> str:
    return _ALIASES.get(name, name)


@dataclass
class Call:
    """One call site, with its callee resolved as far as the pass could."""

    qualname: str | None  # "torch.utils.checkpoint.checkpoint", "transformers.TrainingArguments", ...
    method: str | None  # for `x.y(...)` on a value we cannot name: "y"
    receiver: str | None  # source text of `x` in `x.y(...)`: "model", "self.model"
    receiver_value: Value
    args: list[Value]
    arg_names: list[str | None]  # source text of each positional argument that is a (dotted) name
    kwargs: dict[str, Value]
    kwarg_names: dict[str, str]  # source text of each keyword value that is a (dotted) name
    keyword_spans: dict[str, Span]
    star_args: bool
    star_kwargs: bool
    span: Span
    statement: Span  # the enclosing statement (where inserted lines go)
    scope: str  # "<module>" or the function's dotted name
    line: int
    node: ast.Call
    via_partial: "Call | None" = None  # the functools.partial(...) call this one goes through
    assigned_to: str | None = None  # `model` in `model = AutoModel.from_pretrained(...)`
    # The branches the call runs in: `if args.use_lora:` gives (`--use_lora` true)
    condition: Condition = ALWAYS
    # what the callee's name is bound to on other paths (`checkpoint` from DeepSpeed in a `try`, from torch
    # in its `except ImportError`): a fix for `qualname`'s library would break those paths
    other_qualnames: tuple[str, ...] = ()
    # "utils.py:40" when the call is made by a project function the script calls (at `span`): it stands for
    # that call, so no fix may edit it here
    via: str | None = None
    # made where autograd records nothing: under `with torch.no_grad():` / `torch.inference_mode()` /
    # `torch.set_grad_enabled(False)`, or in a function decorated with one of them
    grad_off: bool = False

    @property
    def is_backward(self) -> bool:
        """`loss.backward()`, `accelerator.backward(loss)`: a backward pass the script runs itself."""
        return self.name == "backward" and self.is_method

    @property
    def runs_by_default(self) -> bool | None:
        """Whether the `if` tests around the call hold when the script runs with its defaults: False under
        `if args.gradient_checkpointing:` with an argparse default of False, None if unknown."""
        return self.condition.runs_by_default

    @property
    def name(self) -> str:
        """The last component of the callee: `checkpoint`, `from_pretrained`, `TrainingArguments`."""
        if self.qualname:
            return self.qualname.rsplit(".", 1)[-1]
        return self.method or ""

    @property
    def names_a_trainer(self) -> bool:
        """Whether it calls a class named like a Trainer (`Trainer`, `LLaVATrainer`, `TrainerWithCustomSampler`, or the
        class `trainer_cls` holds), whichever library or module it comes from."""
        return bool(self.qualname) and "Trainer" in self.name

    @property
    def is_method(self) -> bool:
        """`x.m(...)`, whatever `x` is (also `model(**b).loss.backward()`)."""
        return isinstance(self.node.func, ast.Attribute)

    def kwarg(self, name: str) -> Value:
        if name in self.kwargs:
            return self.kwargs[name]
        return UNKNOWN if self.star_kwargs else MISSING

    def receiver_root(self) -> str | None:
        if not self.receiver:
            return None
        return self.receiver.split(".", 1)[0]


@dataclass
class AttrAssign:
    """`target.attr = value`, e.g. `model.config.use_cache = False`."""

    target: str  # source text of the whole target: "model.config.use_cache"
    attr: str  # "use_cache"
    base_value: Value
    value: Value
    span: Span
    scope: str
    line: int
    condition: Condition = ALWAYS
    via: str | None = None  # as `Call.via`


@dataclass(frozen=True)
class Loop:
    """A `for` / `while` loop of the script's: its node (what it does is read from it), where it is, and whether it
    runs with autograd off (as `Call.grad_off`)."""

    node: ast.For | ast.AsyncFor | ast.While
    scope: str
    grad_off: bool

    @property
    def line(self) -> int:
        return self.node.lineno

    def holds(self, call: Call) -> bool:
        """Whether `call` is made in the loop's body (the script's own calls, not a project function's)."""
        end = self.node.end_lineno or self.node.lineno
        return call.via is None and call.scope == self.scope and self.node.lineno < call.line <= end


@dataclass
class ParamTest:
    """`op in OPS`, `op == X` in a function body, where `op` is one of the function's positional parameters: what a
    callback (a selective-checkpointing policy) compares what it is called with against."""

    scope: str  # the function's dotted name
    param: str
    index: int  # the parameter's position
    operator: str  # "in" | "not in" | "==" | "!="
    value: Value  # the right-hand side
    span: Span
    line: int
    condition: Condition = ALWAYS


@dataclass
class ClassInfo:
    """A class the script defines: what it extends and which methods it defines itself."""

    name: str
    bases: list[str]  # resolved names of its bases: "transformers.Trainer", "<local>.Base", "torch.nn.Module"
    library_base: str | None  # the transformers / peft / trl / accelerate class it extends, if any
    methods: set[str]


def own_name(qualname: str) -> str:
    """The key of a project class in `ScriptFacts.classes`: the script's own by their name, an imported one by its
    qualified name."""
    return qualname.split(".", 1)[1] if qualname.startswith("<local>.") else qualname


@dataclass
class ScriptFacts:
    path: str
    calls: list[Call] = field(default_factory=list)
    attr_assigns: list[AttrAssign] = field(default_factory=list)
    imports: dict[str, int] = field(default_factory=dict)  # imported module/qualname -> first line
    star_imports: list[str] = field(default_factory=list)  # `from module import *`, the project's modules among them
    argparse_defaults: dict[str, Const] = field(default_factory=dict)
    # name -> the first constant bound to it anywhere: `batch_size = 12`, `def train(cutoff_len: int = 256)`,
    # `{"train_batch_size": 16}` (for settings a script keeps outside any library call)
    named_constants: dict[str, Const] = field(default_factory=dict)
    # settings files HfArgumentParser reads (`parse_json_file("args.json")`): (name as written, line, top-level values)
    settings_files: list[tuple[str, int, dict[str, Value]]] = field(default_factory=list)
    dataclass_fields: dict[str, dict[str, Value]] = field(default_factory=dict)
    strings: list[tuple[str, int]] = field(default_factory=list)  # string literals of interest (paths)
    classes: dict[str, ClassInfo] = field(default_factory=dict)
    returns: dict[str, list[Value]] = field(default_factory=dict)  # function (dotted scope name) -> returned values
    functions: dict[str, list[str]] = field(default_factory=dict)  # module-level function -> its parameters
    lines: list[str] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)  # the launcher lines that run the script, nearest first
    # the module does something when run: a call, `with` or loop at its top level, or an `if __name__ == "__main__":`
    # block (a library's helper module only defines)
    runs: bool = False
    param_tests: list[ParamTest] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    # checkpointing turned on for a model class of the project's own, whose module calls torch's `checkpoint` itself
    # (a copied `modeling_llama.py`): (what turns it on: an enable call, a Trainer given the model, the model's own
    # keyword (the load itself) or `model.gradient_checkpointing = ...`; the model's load; its module; that call)
    model_checkpoints: list[tuple["Call | AttrAssign", Call, str, Call]] = field(default_factory=list)
    # the project module the script imports whose code calls `.backward()`: the hand-written loop lives there
    loop_module: str | None = None
    # the project module (reached from a function or class the script calls) whose code calls DeepSpeed's checkpoint
    deepspeed_checkpoint_module: str | None = None

    @property
    def launch(self) -> Launch | None:
        """The launcher line whose options are those of the run the analysis describes."""
        return self.launches[0] if self.launches else None

    # -- queries rules use ------------------------------------------------------------------
    def calls_to(self, *qualnames: str) -> list[Call]:
        wanted = set(qualnames)
        return [c for c in self.calls if c.qualname in wanted]

    def argument_parsers(self) -> list[Call]:
        """`HfArgumentParser(...)` / `TrlParser(...)`, and the project's subclasses of them (the alignment handbook's
        `H4ArgumentParser`)."""
        return [c for c in self.calls if c.qualname in ARGUMENT_PARSERS or (c.qualname and (
            self.library_base(own_name(c.qualname)) in ARGUMENT_PARSERS or c.qualname.rsplit(".", 1)[-1] == H4_PARSER))]

    def calls_named(self, *names: str) -> list[Call]:
        """Calls whose callee ends in one of `names`, resolved or not (methods of unknown objects)."""
        wanted = set(names)
        return [c for c in self.calls if c.name in wanted]

    def method_calls(self, *methods: str) -> list[Call]:
        """`x.m(...)` calls for each method name `m`, whatever `x` is."""
        wanted = set(methods)
        return [c for c in self.calls if c.receiver is not None and c.name in wanted]

    def assigns_to(self, attr: str) -> list[AttrAssign]:
        return [a for a in self.attr_assigns if a.attr == attr]

    def own_fields(self, classes) -> set[str]:
        """The fields of the project's own dataclasses among `classes` (qualified names: "<local>.ModelArguments",
        "src.params.DataArguments")."""
        return {f for name in classes if isinstance(name, str) for f in self.dataclass_fields.get(own_name(name), {})}

    def library_base(self, name: str) -> str | None:
        """The transformers / peft / trl / accelerate class the script's own class `name` extends, if any."""
        known = self.classes.get(name)
        return known.library_base if known else None

    def own_method(self, name: str) -> list[ClassInfo]:
        """The script's own classes that define a method `name` and do not extend a library class."""
        return [c for c in self.classes.values() if name in c.methods and c.library_base is None]

    def enclosing_class(self, scope: str) -> ClassInfo | None:
        """The class whose method `scope` ("Trainer.compute_loss") is, if the script defines it."""
        owner = scope.rsplit(".", 1)[0] if "." in scope else None
        while owner:
            if owner.rsplit(".", 1)[-1] in self.classes:
                return self.classes[owner.rsplit(".", 1)[-1]]
            owner = owner.rsplit(".", 1)[0] if "." in owner else None
        return None


class FactsError(Exception):
    pass


def extract(text: str, path: str = "<string>", files: ProjectFiles | None = None, project: "Project | None" = None,
            launches: list[Launch] | None = None) -> ScriptFacts:
    """Parse `text` and run the one extraction pass; `files` reads the settings files the script names, `project`
    summarises the project functions it calls (neither without them), `launches` give the options launchers pass.
    Raises SyntaxError, or FactsError when too deep."""
    try:
        tree = parse_module(text, path)  # newer syntax than the host's too (`type X = ...` on 3.11)
    except (RecursionError, MemoryError):
        raise FactsError("too deeply nested to analyse") from None
    facts = ScriptFacts(path=path, lines=_split_lines(text), launches=launches or [])
    try:
        _Extractor(facts, files or NoFiles(), project).run(tree)
    except RecursionError:
        raise FactsError("too deeply nested to analyse") from None
    return facts


def _split_lines(text: str) -> list[str]:
    return re.split(r"\r\n|\r|\n", text)


# -- scopes ---------------------------------------------------------------------------------


class _Scope:
    def __init__(self, name: str, parent: "_Scope | None", kind: str, local_names: set[str] | None = None):
        self.name = name
        self.parent = parent
        self.kind = kind  # module | function | class
        self.bindings: dict[str, Value] = {}
        self.local_names = local_names or set()
        self.params: set[str] = set()
        self.positional: list[str] = []

    def lookup(self, name: str) -> Value | None:
        scope: _Scope | None = self
        first = True
        while scope is not None:
            if scope.kind != "class" or first:
                if name in scope.bindings:
                    return scope.bindings[name]
                if scope.kind == "function" and name in scope.local_names:
                    return UNKNOWN  # a local (or parameter) not yet bound to anything we know
            first = False
            scope = scope.parent
        return None

    def lookup_attribute(self, root: str, attr: str) -> Value | None:
        """The value last assigned to `root.attr` (`args.gradient_checkpointing = False`) in the scope that binds
        `root`; None when no assignment reaches here."""
        scope: _Scope | None = self
        key = f"{root}.{attr}"
        while scope is not None:
            if key in scope.bindings:
                return scope.bindings[key]
            if root in scope.bindings or root in scope.local_names or root in scope.params:
                return None  # `root` is this scope's own: an assignment outside is to another object
            scope = scope.parent
        return None


_CONSTANT_HOLDERS = frozenset({ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Dict})  # what `_named_constants` reads
_BINDERS = frozenset({ast.Name, ast.Import, ast.ImportFrom, ast.ExceptHandler})  # what `_bind` reads


def _assigned_names(body: Iterable[ast.stmt]) -> set[str]:
    """Names bound anywhere in a function body (not in nested functions/classes)."""
    names: set[str] = set()
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        _bind(node, names)
        stack += children(node)
    return names


def _bind(node: ast.AST, names: set[str]) -> None:
    """The name `node` binds in its scope, if it binds one (an assignment target, an import, `except ... as e`)."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
        names.add(node.id)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            names.add((alias.asname or alias.name).split(".")[0])
    elif isinstance(node, ast.ExceptHandler) and node.name:
        names.add(node.name)


def _params(args: ast.arguments) -> set[str]:
    every = args.posonlyargs + args.args + args.kwonlyargs
    names = {a.arg for a in every}
    if args.vararg:
        names.add(args.vararg.arg)
    if args.kwarg:
        names.add(args.kwarg.arg)
    return names


# -- the pass -------------------------------------------------------------------------------

_STRING_OF_INTEREST = re.compile(r"\.(json|ya?ml)$", re.IGNORECASE)


class _Extractor:
    def __init__(self, facts: ScriptFacts, files: ProjectFiles, project: "Project | None") -> None:
        self.facts = facts
        self.files = files
        self.project = project
        self.lines = facts.lines
        self.call_records: dict[int, Call] = {}
        self.pending: list[tuple[ast.AST, _Scope]] = []
        self.local_calls: dict[str, list[Call]] = {}  # module-level function -> the calls to it seen so far
        self.statement: Span | None = None
        self.condition: Condition = ALWAYS  # the branches around the statement being walked
        self.entry_points: set[str] = set()  # functions handed to a command-line framework
        self.option_holders: set[str] = set()  # what `.add_argument` is called on (`parser`, a parameter of a helper)
        self.parses_dataclasses = False  # the script fills dataclasses from the command line (`HfArgumentParser`, `TrlParser`)
        self.assigned: dict[int, set[str]] = {}  # id(function node) -> the names its body binds (the prepass)
        self.not_project: set[str] = set()  # qualified names no project module defines as a class
        self.grad_off = False  # the statement being walked runs with autograd off (`with torch.no_grad():`)
        self.grad_off_functions: set[int] = set()  # id(function node) of those decorated `@torch.no_grad()`

    # positions
    def _col(self, line: int, byte_col: int) -> int:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if text.isascii():
            return byte_col + 1
        return len(text.encode("utf-8")[:byte_col].decode("utf-8", errors="replace")) + 1

    def span(self, node: ast.AST) -> Span:
        start = Position(node.lineno, self._col(node.lineno, node.col_offset))
        end_line = getattr(node, "end_lineno", None) or node.lineno
        end_col = getattr(node, "end_col_offset", None)
        end = Position(end_line, self._col(end_line, end_col) if end_col is not None else start.column)
        return Span(start, end)

    # driver
    def run(self, tree: ast.Module) -> None:
        self._prepass(tree)
        module = _Scope("<module>", None, "module")
        self.block(tree.body, module)
        while self.pending:
            # a function whose call was already seen first: its callers pass what its parameters hold, and walking it
            # records its own calls, so `main()` -> `train(**kwargs)` -> `load_model(...)` is followed down the chain
            index = next((i for i, (node, _) in enumerate(self.pending) if node.name in self.local_calls), 0)
            node, scope = self.pending.pop(index)
            self.function_body(node, scope)
        self._project_model_checkpoints()
        self._project_deepspeed_checkpoints()
        calls = self.facts.calls
        turns_on = any(c.name in HF_ENABLE_METHODS for c in calls) or any(a.attr == "gradient_checkpointing" for a in self.facts.attr_assigns)
        if self.project is not None and turns_on and not any(c.is_backward for c in calls):
            # where a script turns checkpointing on but runs no step itself, is its loop in a module of the project?
            self.facts.loop_module = next(filter(None, map(self.project.runs_backward, list(self.facts.imports))), None)
        for call in self.facts.calls:
            if call.names_a_trainer or (call.qualname and call.name.endswith("Parser")):
                # `LOMOTrainer(...)`, `TrainerWithCustomSampler(...)`, `trainer_cls(...)` holding one, `H4ArgumentParser(...)`
                # from a sibling module: does it extend the library's?
                self._project_class(call.qualname)
            elif call.qualname and call.qualname.endswith(LOADERS):
                self._project_class(call.qualname.rsplit(".", 1)[0])  # a copied `modeling_llama.py`'s `LlamaForCausalLM`
            elif call.name in HF_ENABLE_METHODS:
                for load in _model_loads(call.receiver_value):  # `model = LlamaForCausalLM(config)`, the project's copy
                    self._project_class(load.qualname)

    def _project_model_checkpoints(self) -> None:
        """`model.gradient_checkpointing_enable()` on a model the project's own class loads
        (`from src.models.modeling_llama import LlamaForCausalLM`), or `model.set_grad_checkpointing()` on one its own
        factory makes (open_lm's `create_model`), or a Trainer given such a model (it turns checkpointing on at
        `train()` when its arguments ask for it), its own keyword (`MAR(grad_checkpointing=...)`), or its flag set by
        hand (`model.gradient_checkpointing = args.gradient_checkpointing`): the checkpoint calls of that module run."""
        if self.project is None:
            return
        switches: list[tuple[Call | AttrAssign, Value]] = [
            (a, a.base_value) for a in self.facts.attr_assigns if a.attr in ("gradient_checkpointing", "grad_checkpointing")
            and a.target.count(".") == 1]
        for call in self.facts.calls:
            if call.receiver is not None and (call.name in HF_ENABLE_METHODS or is_checkpointing_switch(call.name)):
                model = call.receiver_value
            elif call.names_a_trainer and "model" in call.kwargs:
                model = call.kwargs["model"]
            elif call.qualname in KBIT_PREPARATION and truth(call.kwarg("use_gradient_checkpointing")) is not False:
                # peft calls `model.gradient_checkpointing_enable()` unless told not to (the default is True)
                model = call.args[0] if call.args else call.kwarg("model")
            elif call.qualname is not None and own_checkpointing_keyword(call) is not None:
                model = Instance(call.qualname, call)  # `MAR(..., grad_checkpointing=args.grad_checkpointing)`
            else:
                continue
            switches.append((call, model))
        for switch, model in switches:
            for load in _model_loads(model):
                # the class, or the class of a classmethod that makes it (`from_pretrained`, `Transformer.from_model_args`)
                found = self.project.own_checkpoint_call(load.qualname) or self.project.own_checkpoint_call(load.qualname.rsplit(".", 1)[0])
                if found is not None:
                    self.facts.model_checkpoints.append((switch, load.call, *found))
                    break

    def _project_deepspeed_checkpoints(self) -> None:
        """A project function or class the script calls whose module (or a project module it imports) calls DeepSpeed's
        `deepspeed.checkpointing.checkpoint` (fmengine's `get_model`, whose pipeline layers checkpoint): the DeepSpeed
        config's `activation_checkpointing` block configures those calls."""
        if self.project is None or not any(name.split(".", 1)[0] == "deepspeed" for name in self.facts.imports):
            return
        for call in self.facts.calls:
            if call.qualname and call.via is None:
                found = self.project.own_checkpoint_call(call.qualname, DEEPSPEED_CHECKPOINTS)
                if found is not None:
                    self.facts.deepspeed_checkpoint_module = found[0]
                    return

    def _project_fields(self, qualname: str) -> dict[str, Value]:
        """The field defaults of the project's own dataclass `qualname` (a class of a sibling module), {} for
        anything else."""
        self._project_class(qualname)
        return self.facts.dataclass_fields.get(qualname, {}) if qualname in self.facts.classes else {}

    def _project_class(self, name: str) -> None:
        """Read the project's own class `name` (`from src.params import DPOArguments`, a class an argument parser
        fills): what it extends and its fields, from its module, kept under its qualified name."""
        if self.project is None or name.startswith("<local>.") or name in self.facts.classes or name in self.not_project:
            return
        found = self.project.config_class(name)
        if found is not None:
            self.facts.classes[name], self.facts.dataclass_fields[name] = found
        else:
            self.not_project.add(name)

    def _prepass(self, tree: ast.Module) -> None:
        """Collect what is defined anywhere but used everywhere: argparse options, dataclass fields."""
        self.facts.runs = any((isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call))
                              or isinstance(stmt, (ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While))
                              or (isinstance(stmt, ast.If) and _is_main_guard(stmt.test)) for stmt in tree.body)
        module_consts: dict[str, Value] = {}
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                if isinstance(stmt.value, ast.Constant):
                    module_consts[stmt.targets[0].id] = Const(stmt.value.value, Origin(stmt.lineno, "constant"))
        consts = _Scope("<prepass>", None, "module")
        consts.bindings.update(module_consts)
        # one walk, in ast.walk's order, that also collects the names each function binds (for its scope); node types
        # are compared by identity: this loop visits every node of the file
        queue: deque[tuple[ast.AST, set[str] | None]] = deque([(tree, None)])
        pop, push = queue.popleft, queue.extend
        while queue:
            node, bound = pop()
            kind = type(node)
            inner = bound
            if kind is ast.FunctionDef or kind is ast.AsyncFunctionDef or kind is ast.ClassDef:
                if bound is not None:
                    bound.add(node.name)
                inner = self.assigned.setdefault(id(node), set()) if kind is not ast.ClassDef else None
            elif kind is ast.Lambda:
                inner = None
            elif bound is not None and kind in _BINDERS:
                _bind(node, bound)
            found = children(node) if kind not in LEAVES else None
            if found:
                push([(child, inner) for child in found])
            if kind is ast.Call:
                # `fire.Fire(train)`, `CLI(setup)`, `typer.run(main)`: the function's parameters are options
                self.entry_points.update(a.id for a in node.args if type(a) is ast.Name)
                if type(node.func) is ast.Attribute and node.func.attr == "add_argument":
                    self._argparse_option(node, consts)
                    self.option_holders.add(dotted_name(node.func.value))
                elif type(node.func) is ast.Attribute and node.func.attr in _HF_PARSES:
                    self.parses_dataclasses = True
            elif kind is ast.ClassDef:
                if any(_is_dataclass_decorator(d) for d in node.decorator_list):
                    self.facts.dataclass_fields[node.name] = self._dataclass_fields(node, consts)
            elif kind in _CONSTANT_HOLDERS:
                self._named_constants(node)

    def _named_constants(self, node: ast.AST) -> None:
        pairs: list[tuple[ast.expr, ast.expr | None, str]] = []
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef)):
            # unconditional statements only: `if args.block_size is None: block_size = 1024` is a fallback
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    pairs.append((stmt.targets[0], stmt.value, "constant"))
                elif isinstance(stmt, ast.AnnAssign):
                    pairs.append((stmt.target, stmt.value, "constant"))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args
            pairs += [(ast.Name(a.arg), d, "parameter default") for a, d in zip(args[len(args) - len(node.args.defaults):], node.args.defaults)]
            pairs += [(ast.Name(a.arg), d, "parameter default") for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults)]
        elif isinstance(node, ast.Dict):
            pairs += [(ast.Name(k.value), v, "config value") for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        for target, value, kind in pairs:
            if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and value.value is not None:
                self.facts.named_constants.setdefault(target.id, Const(value.value, Origin(value.lineno, kind)))

    def _argparse_option(self, node: ast.Call, consts: _Scope) -> None:
        flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        longs = [f for f in flags if f.startswith("--")]
        flag = longs[0] if longs else (flags[0] if flags else None)  # the option as the user writes it
        if "dest" in kw and isinstance(kw["dest"], ast.Constant):
            dest = str(kw["dest"].value)
        elif flag is not None:
            dest = flag.lstrip("-").replace("-", "_")
        else:
            return
        action = kw.get("action")
        action_name = action.value if isinstance(action, ast.Constant) else None
        stored = {"store_true": True, "store_false": False}.get(str(action_name))
        launched = self._launched(longs or [f"--{dest}"], flag=stored is not None, stored=stored)
        if launched is not None:
            self.facts.argparse_defaults.setdefault(dest, launched)
            return
        if "default" in kw:
            value = self.eval(kw["default"], consts)
            if not isinstance(value, Const):
                return
            default = value.value
        elif action_name == "store_true":
            default = False
        elif action_name == "store_false":
            default = True
        else:
            default = None
        self.facts.argparse_defaults.setdefault(dest, Const(default, Origin(node.lineno, "argparse default", option=flag or f"--{dest}")))

    def _sibling_options(self, parsed: Namespace, where: str) -> Namespace:
        """`opt = parse_args()` of a sibling module (`where`) that builds an argparse parser and returns
        `parser.parse_args()`: its options, with the values the launcher passes; they join the script's own
        (`opt.batch_size` read anywhere)."""
        abbreviated = abbreviations(self.facts.launch, parsed.fields)
        for dest, value in parsed.fields.items():
            option = value.origin.option if isinstance(value, Const) and value.origin else None
            given = [f"--{abbreviated[dest]}"] if dest in abbreviated else []
            launched = self._launched([option or f"--{dest}", *given], flag=isinstance(constant(value), bool))
            if launched is None and isinstance(value, Const) and value.origin is not None and value.origin.file is None:
                value = replace(value, origin=replace(value.origin, file=where))
            self.facts.argparse_defaults.setdefault(dest, launched or value)
        return Namespace({dest: self.facts.argparse_defaults[dest] for dest in parsed.fields})

    def _launched(self, options: Iterable[str], *, flag: bool = False, stored: bool | None = None) -> Value | None:
        return launched_value(self.facts.launch, options, flag=flag, stored=stored)

    def _option_value(self, value: Value, option: str) -> Value:
        """An option's value in the launched run: the launcher's, else `value` (its default)."""
        return self._launched([option], flag=isinstance(constant(value), bool)) or value

    def _dataclass_fields(self, node: ast.ClassDef, consts: _Scope) -> dict[str, Value]:
        fields: dict[str, Value] = {}
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            name = stmt.target.id
            value_node = stmt.value
            if value_node is None:
                fields[name] = UNKNOWN
                continue
            if isinstance(value_node, ast.Call) and dotted_name(value_node.func) in ("field", "dataclasses.field"):
                default = next((k.value for k in value_node.keywords if k.arg == "default"), None)
                if default is None:
                    fields[name] = UNKNOWN
                    continue
                value_node = default
            value = self.eval(value_node, consts)
            if isinstance(value, Const):
                value = Const(value.value, Origin(value_node.lineno, "dataclass default"))
            fields[name] = value
        return fields

    # statements
    def block(self, body: list[ast.stmt], scope: _Scope) -> None:
        for stmt in body:
            self.stmt(stmt, scope)

    def function_body(self, node: ast.FunctionDef | ast.AsyncFunctionDef, parent: _Scope) -> None:
        name = node.name if parent.kind == "module" else f"{parent.name}.{node.name}"
        assigned = self.assigned.get(id(node))
        scope = _Scope(name, parent, "function", (assigned if assigned is not None else _assigned_names(node.body)) | _params(node.args))
        scope.params = _params(node.args)
        scope.positional = [a.arg for a in node.args.posonlyargs + node.args.args]
        if parent.kind == "module":
            self.facts.functions[node.name] = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
            scope.bindings.update(self._arguments(node, self.local_calls.get(node.name, [])))
        self.condition = ALWAYS
        self.grad_off = id(node) in self.grad_off_functions  # a body runs as its decorators say, not where it is defined
        self.block(node.body, scope)
        self.grad_off = False

    def _arguments(self, node: ast.FunctionDef | ast.AsyncFunctionDef, calls: list[Call]) -> dict[str, Value]:
        """What the parameters hold when the function is called from one place or from none we see (a CLI
        entry point: `CLI(setup)`, `fire.Fire(train)`, click): the arguments we know, else the constant defaults,
        which are the values of options when a command-line framework calls the function.
        `main(model_args, data_args, training_args)` after `HfArgumentParser(...).parse_args_into_dataclasses()`;
        `def setup(lora_dropout: float = 0.05)`; `@click.option("--gc", default=True) def main(**kwargs)`."""
        clicked = _click_options(node)
        if clicked and all(not c.args and not c.kwargs for c in calls):
            calls = []  # `main()`: click's decorators fill the parameters from the command line
        if len(calls) > 1 or (calls and (calls[0].star_args or calls[0].star_kwargs)):
            return {}
        args = node.args
        positional = [a.arg for a in args.posonlyargs + args.args]
        with_defaults = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
        with_defaults += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        command_line = not calls and node.name in self.entry_points
        values: dict[str, Value] = {
            name: Const(d.value, Origin(d.lineno, "parameter default", option=f"--{name}" if command_line else None))
            for name, d in with_defaults if isinstance(d, ast.Constant)
        }
        if command_line:
            values = {name: self._option_value(value, f"--{name}") for name, value in values.items()}
        if clicked and not calls:
            clicked = {name: self._option_value(value, value.option if isinstance(value, OptionVal) else value.origin.option)
                       for name, value in clicked.items()}
            named = set(positional) | {a.arg for a in args.kwonlyargs}
            values.update({k: v for k, v in clicked.items() if k in named})
            if args.kwarg:  # click passes the options the signature does not name as keyword arguments
                values[args.kwarg.arg] = DictVal({k: v for k, v in clicked.items() if k not in named}, node.lineno)
        hydra = self._hydra_config(node) if positional and all(not c.args and not c.kwargs for c in calls) else None
        if hydra is not None:  # `@hydra.main(config_path=..., config_name=...) def main(cfg)`: hydra passes the config
            values[positional[0]] = hydra
            calls = []  # `main()`: hydra's decorator fills the argument
        if calls:
            passed = dict(zip(positional, calls[0].args))
            passed.update({k: v for k, v in calls[0].kwargs.items() if k in positional or k in {a.arg for a in args.kwonlyargs}})
            values.update(passed)
        return {name: value for name, value in values.items() if value is not UNKNOWN}

    def _hydra_config(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> Value | None:
        """The primary config `@hydra.main(config_path="conf", config_name="config")` composes: the YAML file
        `conf/config.yaml` beside the script, as the decorated function's argument (its `defaults:` list and the
        command line's overrides are not followed)."""
        for decorator in node.decorator_list:
            named = dotted_name(decorator.func) if isinstance(decorator, ast.Call) else None
            if not (named == "hydra.main" or (named == "main" and "hydra.main" in self.facts.imports)):
                continue
            given = {k.arg: k.value for k in decorator.keywords if k.arg}
            folder, name = given.get("config_path"), given.get("config_name")
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                return None
            relative = f"{name.value}.yaml" if not name.value.endswith((".yaml", ".yml")) else name.value
            if isinstance(folder, ast.Constant) and isinstance(folder.value, str):
                relative = f"{folder.value.rstrip('/')}/{relative}"
            value = self._loaded_file(Const(relative), decorator.lineno)
            if not isinstance(value, DictVal):
                return None
            for key, item in value.items.items():  # what sibling modules read as `config.batch_size` too
                if isinstance(item, Const):
                    self.facts.named_constants.setdefault(key, item)
            return value
        return None

    def stmt(self, node: ast.stmt, scope: _Scope) -> None:
        previous = self.statement
        self.statement = self.span(node)
        try:
            self._stmt(node, scope)
        finally:
            self.statement = previous

    def _stmt(self, node: ast.stmt, scope: _Scope) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for expr in node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d]:
                self.record_calls(expr, scope)
            if any(self._turns_grad_off(d, scope) for d in node.decorator_list):
                self.grad_off_functions.add(id(node))
            copied = node.name in _PEFT_COPIES and {"use_gradient_checkpointing", "gradient_checkpointing_kwargs"} <= _params(node.args)
            # a copy of peft's `prepare_model_for_kbit_training` (peft >= 0.6's signature) kept in the script does what
            # peft's does
            scope.bindings[node.name] = QualName(f"peft.{node.name}" if copied else f"<local>.{node.name}")
            self.pending.append((node, scope))
        elif isinstance(node, ast.ClassDef):
            for expr in node.decorator_list + node.bases + [k.value for k in node.keywords]:
                self.record_calls(expr, scope)
            class_scope = _Scope(f"{scope.name}.{node.name}" if scope.kind != "module" else node.name, scope, "class")
            bases = [value.name for value in (self.eval(base, scope) for base in node.bases) if isinstance(value, QualName)]
            # `class MyTrainer(Trainer)` is a Trainer to every rule, and so is a subclass of it
            libraries = (self.facts.library_base(b.split(".", 1)[1]) if b.startswith("<local>.") else b for b in bases)
            library = next((b for b in libraries if b and b.split(".", 1)[0] in _FLAT_PACKAGES), None)
            methods = {s.name for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
            self.facts.classes[node.name] = ClassInfo(node.name, bases, library, methods)
            self.block(node.body, class_scope)
            scope.bindings[node.name] = QualName(f"<local>.{node.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                self.facts.imports.setdefault(alias.name, node.lineno)
                if alias.asname:
                    scope.bindings[alias.asname] = QualName(canonical(alias.name))
                else:
                    top = alias.name.split(".")[0]
                    scope.bindings[top] = QualName(top)
        elif isinstance(node, ast.ImportFrom):
            module = ("." * node.level) + (node.module or "")
            self.facts.imports.setdefault(module, node.lineno)
            for alias in node.names:
                if alias.name == "*":
                    self.facts.star_imports.append(module)
                    for name in _STAR_EXPORTS.get(module, ()):
                        scope.bindings[name] = QualName(self._import_qualname(module, name))
                    if self.project is not None and module not in _STAR_EXPORTS:
                        scope.bindings.update((name, QualName(qual)) for name, qual in self.project.star_exports(module).items())
                    continue
                qual = self._import_qualname(module, alias.name)
                self.facts.imports.setdefault(qual, node.lineno)
                scope.bindings[alias.asname or alias.name] = QualName(qual)
        elif isinstance(node, ast.Assign):
            value = self.eval(node.value, scope)
            self.record_calls(node.value, scope)
            if isinstance(node.value, ast.Call) and len(node.targets) == 1:
                self.call_records[id(node.value)].assigned_to = dotted_name(node.targets[0])
            for target in node.targets:
                self.bind(target, value, scope, node)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                value = self.eval(node.value, scope)
                self.record_calls(node.value, scope)
                self.bind(node.target, value, scope, node)
        elif isinstance(node, ast.AugAssign):
            self.record_calls(node.value, scope)
            self.bind(node.target, UNKNOWN, scope, node)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.record_calls(node.iter, scope)
            self.bind(node.target, self._loop_item(node, scope), scope, node)
            self.facts.loops.append(Loop(node, scope.name, self.grad_off))
            self.block(node.body, scope)
            self.block(node.orelse, scope)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            outer = self.grad_off
            for item in node.items:
                self.record_calls(item.context_expr, scope)
                self.grad_off = self.grad_off or self._turns_grad_off(item.context_expr, scope)
                if item.optional_vars is not None:
                    entered = self.eval(item.context_expr, scope)
                    is_file = isinstance(entered, Instance) and entered.qualname == "open"  # `with open(p) as f`
                    self.bind(item.optional_vars, entered if is_file else UNKNOWN, scope, node)
            self.block(node.body, scope)
            self.grad_off = outer
        elif isinstance(node, ast.If):
            self.record_calls(node.test, scope)
            then, otherwise, default = self._test_literals(node.test, scope)
            outer, before = self.condition, dict(scope.bindings)
            self.condition = within(outer, then)
            self.block(node.body, scope)
            after_body = scope.bindings
            scope.bindings = dict(before)
            self.condition = within(outer, otherwise)
            self.block(node.orelse, scope)
            self.condition = outer
            scope.bindings = _merge_branches(before, after_body, scope.bindings, then, default)
        elif isinstance(node, ast.While):
            self.record_calls(node.test, scope)
            self.facts.loops.append(Loop(node, scope.name, self.grad_off))
            self.block(node.body, scope)
            self.block(node.orelse, scope)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            self.block(node.body, scope)
            after_body = dict(scope.bindings)
            for handler in node.handlers:
                if handler.name:
                    scope.bindings[handler.name] = UNKNOWN
                self.block(handler.body, scope)
            _note_alternative_names(after_body, scope.bindings)  # `except ImportError:` imports another library's
            self.block(node.orelse, scope)
            self.block(node.finalbody, scope)
        elif isinstance(node, ast.Return):
            if node.value is not None:
                self.record_calls(node.value, scope)
                self.facts.returns.setdefault(scope.name, []).append(self.eval(node.value, scope))
        elif type(node).__name__ == "Match":
            self.record_calls(node.subject, scope)
            for case in node.cases:
                self.block(case.body, scope)
        else:  # Expr, Return, Raise, Assert, Delete, Global, ...
            for child in children(node):
                if isinstance(child, ast.expr):
                    self.record_calls(child, scope)

    def _turns_grad_off(self, expr: ast.expr, scope: _Scope) -> bool:
        """`torch.no_grad()`, `torch.inference_mode()`, `torch.set_grad_enabled(<anything but True>)` (as a context or a
        decorator; `@torch.no_grad` also without the call)."""
        called = isinstance(expr, ast.Call)
        callee = self.eval(expr.func if called else expr, scope)
        name = callee.name if isinstance(callee, QualName) else None
        if name in GRAD_OFF:
            return not (called and expr.args and truth(self.eval(expr.args[0], scope)) is False)  # `inference_mode(False)`
        if name in GRAD_SWITCHES and called and expr.args:
            return truth(self.eval(expr.args[0], scope)) is not True  # `set_grad_enabled(phase == "train")` too
        return False

    def _loop_item(self, node: ast.For | ast.AsyncFor, scope: _Scope) -> Value:
        """`for p in model.bert.parameters():` binds `p` to a parameter of `model.bert` (a `PARAMETERS` instance
        whose call names the module), so `p.requires_grad = False` says what it freezes; `named_parameters()`
        binds `(name, p)`."""
        iterated = node.iter
        if not (isinstance(iterated, ast.Call) and isinstance(iterated.func, ast.Attribute)
                and iterated.func.attr in ("parameters", "named_parameters")):
            return UNKNOWN
        item = Instance(PARAMETERS, self.call_records[id(iterated)])
        return TupleVal([UNKNOWN, item]) if iterated.func.attr == "named_parameters" else item

    @staticmethod
    def _import_qualname(module: str, name: str) -> str:
        top = module.split(".")[0]
        if top in _FLAT_PACKAGES and not module.startswith("."):
            return f"{top}.{name}"
        return canonical(f"{module}.{name}")

    def bind(self, target: ast.expr, value: Value, scope: _Scope, stmt: ast.stmt) -> None:
        if isinstance(target, ast.Name):
            if isinstance(value, Const) and value.origin and value.origin.kind == "literal":
                value = Const(value.value, Origin(value.origin.line, "constant"))
            scope.bindings[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            items = value.items if isinstance(value, TupleVal) and len(value.items) == len(target.elts) else None
            for index, element in enumerate(target.elts):
                element = element.value if isinstance(element, ast.Starred) else element
                self.bind(element, items[index] if items else UNKNOWN, scope, stmt)
        elif isinstance(target, ast.Attribute):
            base = self.eval(target.value, scope)
            if isinstance(target.value, ast.Name) and not isinstance(base, QualName):
                # `args.gradient_checkpointing = False` after parsing: what the script reads from then on
                scope.bindings[f"{target.value.id}.{target.attr}"] = value
            self.facts.attr_assigns.append(
                AttrAssign(
                    target=dotted_name(target) or target.attr,
                    attr=target.attr,
                    base_value=base,
                    value=value,
                    span=self.span(stmt),
                    scope=scope.name,
                    line=stmt.lineno,
                    condition=self.condition,
                )
            )
        elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            container = scope.lookup(target.value.id)
            key = self.eval(target.slice, scope)
            if isinstance(container, DictVal) and isinstance(key, Const) and isinstance(key.value, str):
                container.items[key.value] = value
        elif isinstance(target, ast.Starred):
            self.bind(target.value, UNKNOWN, scope, stmt)

    # expressions
    def record_calls(self, expr: ast.AST, scope: _Scope) -> None:
        """Record every call inside `expr` (lambdas and comprehensions included); a call in one branch of
        `a if test else b` runs by default as the test says, like one under an `if` statement."""
        todo = deque([expr])  # breadth first, as `ast.walk`
        while todo:
            node = todo.popleft()
            if isinstance(node, ast.IfExp):
                self.record_calls(node.test, scope)
                self._branches(node, scope, lambda branch: self.record_calls(branch, scope))
                continue
            if isinstance(node, ast.Call) and id(node) not in self.call_records:
                self.call(node, scope)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _STRING_OF_INTEREST.search(node.value):
                self.facts.strings.append((node.value, node.lineno))
            elif isinstance(node, ast.Compare) and scope.kind == "function":
                self._param_test(node, scope)
            if type(node) not in LEAVES:
                todo += children(node)

    def _param_test(self, node: ast.Compare, scope: _Scope) -> None:
        """Record `param in X` / `param == X` (one comparison, the parameter on the left)."""
        if len(node.ops) != 1 or not isinstance(node.left, ast.Name) or node.left.id not in scope.positional:
            return
        operator = _TEST_OPERATORS.get(type(node.ops[0]))
        if operator is None:
            return
        self.facts.param_tests.append(ParamTest(
            scope.name, node.left.id, scope.positional.index(node.left.id), operator,
            self.eval(node.comparators[0], scope), self.span(node), node.lineno, self.condition,
        ))

    def call(self, node: ast.Call, scope: _Scope) -> Call:
        known = self.call_records.get(id(node))
        if known is not None:
            return known
        func_value = self._callee(node.func, scope)
        qualname = method = receiver = None
        receiver_value: Value = UNKNOWN
        partial: PartialVal | None = None
        if isinstance(func_value, PartialVal):
            partial = func_value
            func_value = partial.func
        other_qualnames: tuple[str, ...] = ()
        if isinstance(func_value, QualName):
            qualname, other_qualnames = func_value.name, func_value.alternatives
            if qualname.startswith("<local>."):
                qualname = self.facts.library_base(qualname.split(".", 1)[1]) or qualname
        if isinstance(node.func, ast.Attribute):
            receiver = dotted_name(node.func.value)
            receiver_value = self.eval(node.func.value, scope)
            if qualname is None:
                method = node.func.attr
        kwargs: dict[str, Value] = {}
        spans: dict[str, Span] = {}
        star_kwargs = False
        if partial is not None:
            kwargs.update(partial.kwargs)
        for keyword in node.keywords:
            if keyword.arg is None:
                spread = self.eval(keyword.value, scope)
                if isinstance(spread, DictVal):
                    kwargs.update(spread.items)
                    star_kwargs = star_kwargs or not spread.complete
                else:
                    star_kwargs = True
                continue
            kwargs[keyword.arg] = self.eval(keyword.value, scope)
            spans[keyword.arg] = self.span(keyword)
        args = [self.eval(a, scope) for a in node.args if not isinstance(a, ast.Starred)]
        record = Call(
            qualname=qualname,
            method=method,
            receiver=receiver,
            receiver_value=receiver_value,
            args=args,
            arg_names=[dotted_name(a) for a in node.args if not isinstance(a, ast.Starred)],
            kwargs=kwargs,
            kwarg_names={k.arg: name for k in node.keywords if k.arg and (name := dotted_name(k.value))},
            keyword_spans=spans,
            star_args=any(isinstance(a, ast.Starred) for a in node.args),
            star_kwargs=star_kwargs,
            span=self.span(node),
            statement=self.statement or self.span(node),
            scope=scope.name,
            line=node.lineno,
            node=node,
            condition=self.condition,
            other_qualnames=other_qualnames,
            grad_off=self.grad_off,
        )
        if partial is not None:
            record.via_partial = partial.call
        if qualname and qualname.startswith("<local>.") and scope.kind != "class":
            self.local_calls.setdefault(qualname.split(".", 1)[1], []).append(record)
        self.call_records[id(node)] = record
        self.facts.calls.append(record)
        summary = self._project_function(qualname)
        if summary is None and receiver == "self" and method is not None:
            summary = self._inherited_method(method, scope)
        if summary is not None:
            self._inline(summary, record, scope)
        return record

    def _inherited_method(self, method: str, scope: _Scope) -> "FunctionSummary | None":
        """`self.init_engines()` in a class of the script that inherits the method from a class of the project."""
        owner = self.facts.enclosing_class(scope.name)
        if self.project is None or owner is None or method in owner.methods:
            return None
        bases = (b for b in owner.bases if not b.startswith("<local>."))
        return next(filter(None, (self.project.method_summary(base, method) for base in bases)), None)

    def _project_function(self, qualname: str | None) -> "FunctionSummary | None":
        if self.project is None or not qualname or qualname.startswith("<local>.") or qualname in _BUILTINS:
            return None
        return self.project.summary(qualname)

    def _inline(self, summary: "FunctionSummary", outer: Call, scope: _Scope) -> None:
        """`apply_fsdp_checkpointing(model)`: the library calls the project function makes, as calls made here, on
        what this call passes it (its parameter `model` is the script's `model`)."""
        passed_names = dict(zip(summary.params, outer.arg_names))
        passed_names.update(outer.kwarg_names)
        passed = dict(zip(summary.params, outer.args))
        passed.update(outer.kwargs)

        def receiver(text: str | None) -> tuple[str | None, Value | None]:
            root, _, rest = (text or "").partition(".")
            if root in passed_names and passed_names[root]:
                return passed_names[root] + (f".{rest}" if rest else ""), passed.get(root) if not rest else None
            return text, None

        for inner in summary.calls:
            text, value = receiver(inner.receiver)
            self.facts.calls.append(replace(
                inner, span=outer.span, statement=outer.statement, line=outer.line, scope=scope.name,
                condition=within(self.condition, inner.condition), receiver=text,
                receiver_value=value if value is not None else inner.receiver_value, via=inner.via or f"{summary.path}:{inner.line}"))
        for assign in summary.assigns:
            text, _ = receiver(assign.target)
            self.facts.attr_assigns.append(replace(
                assign, target=text or assign.target, span=outer.statement, line=outer.line, scope=scope.name,
                condition=within(self.condition, assign.condition), via=assign.via or f"{summary.path}:{assign.line}"))

    def eval(self, node: ast.AST, scope: _Scope) -> Value:
        if isinstance(node, ast.Constant):
            return Const(node.value, Origin(node.lineno))
        if isinstance(node, ast.Name):
            found = scope.lookup(node.id)
            if found is UNKNOWN and node.id in scope.params and node.id not in scope.bindings:
                # `def train(model_id): ...` called as `train(args.model_id)`: the option's default
                return self._namespace_fallback(node.id)
            if found is not None:
                return found
            if node.id in ("True", "False", "None"):
                return Const({"True": True, "False": False, "None": None}[node.id], Origin(node.lineno))
            return QualName(node.id) if node.id in _BUILTINS else UNKNOWN
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name):
                assigned = scope.lookup_attribute(node.value.id, node.attr)
                if assigned is not None:
                    return assigned
            base = self.eval(node.value, scope)
            if isinstance(base, QualName):
                return QualName(canonical(f"{base.name}.{node.attr}"))
            if isinstance(base, Namespace):
                return base.get(node.attr)
            if isinstance(base, DictVal):  # `cfg.solver.gradient_checkpointing` of `OmegaConf.load(...)` (or an EasyDict)
                return base.get(node.attr) if base.complete else base.items.get(node.attr, UNKNOWN)
            if isinstance(base, Instance) and node.attr in base.call.kwargs:
                return base.call.kwargs[node.attr]
            if isinstance(base, Instance) and not base.call.star_kwargs and not base.call.args:
                fields = self._project_fields(base.qualname)  # `cfg = config.train_config()`: its defaults
                if node.attr in fields:
                    return fields[node.attr]
            # an object whose attributes we cannot list: returned by a local function, or built from `**spread`
            # (`argparse.Namespace(**vars(model_args), **vars(training_args))`)
            opaque = isinstance(base, Instance) and (base.qualname.startswith("<local>.") or base.call.star_kwargs)
            if (isinstance(node.value, ast.Name) or _is_options_on_self(node.value)) and (base is UNKNOWN or opaque):
                return self._namespace_fallback(node.attr)
            return UNKNOWN
        if isinstance(node, ast.Dict):
            items: dict[str, Value] = {}
            complete = True
            for key, value in zip(node.keys, node.values):
                if key is None:
                    spread = self.eval(value, scope)
                    if isinstance(spread, DictVal):
                        items.update(spread.items)
                        complete = complete and spread.complete
                    else:
                        complete = False
                    continue
                key_value = self.eval(key, scope)
                if isinstance(key_value, Const) and isinstance(key_value.value, str):
                    items[key_value.value] = self.eval(value, scope)
                else:
                    complete = False
            return DictVal(items, node.lineno, complete, self.span(node))
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return TupleVal([self.eval(e, scope) for e in node.elts])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            inner = self.eval(node.operand, scope)
            if isinstance(inner, Const):
                try:
                    result = (not inner.value) if isinstance(node.op, ast.Not) else -inner.value
                except TypeError:
                    return UNKNOWN
                return Const(result, inner.origin)
            return UNKNOWN
        if isinstance(node, ast.Subscript):
            container = self.eval(node.value, scope)
            if isinstance(node.slice, ast.Slice):  # `args.config[-5:] == ".yaml"`: a piece of a known word
                bounds = [None if part is None else constant(self.eval(part, scope)) for part in (node.slice.lower, node.slice.upper, node.slice.step)]
                text = constant(container)
                if isinstance(text, str) and all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds) and bounds[2] != 0:
                    return Const(text[slice(*bounds)], container.origin)
                return UNKNOWN
            key = self.eval(node.slice, scope)
            if isinstance(container, DictVal) and isinstance(key, Const) and isinstance(key.value, str):
                return container.get(key.value) if container.complete else container.items.get(key.value, UNKNOWN)
            if isinstance(container, QualName) and container.name == "sys.argv" and isinstance(key, Const):
                return self._argv(key.value)
            if isinstance(container, TupleVal) and isinstance(key, Const) and isinstance(key.value, int):
                try:
                    return container.items[key.value]
                except IndexError:
                    return UNKNOWN
            return UNKNOWN
        if isinstance(node, ast.IfExp):
            body, other, test, then = self._branches(node, scope, lambda branch: self.eval(branch, scope))
            if test is not None:  # `False if args.gradient_checkpointing else True`, the option's default known
                return _with_alternative(body, other, [l.negated() for l in then]) if test else _with_alternative(other, body, then)
            if isinstance(body, Const) and isinstance(other, Const) and body.value == other.value:
                return body
            if isinstance(body, QualName) and isinstance(other, QualName):  # `A if args.x else B`: one of two callees
                return body if body.name == other.name else replace(body, alternatives=(*body.alternatives, other.name))
            return UNKNOWN
        if isinstance(node, ast.Call):
            return self._eval_call(node, scope)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)):
            left, right = self.eval(node.left, scope), self.eval(node.comparators[0], scope)
            if isinstance(left, Const) and isinstance(right, Const) and not left.alternatives:
                same = left.value == right.value if isinstance(node.ops[0], (ast.Eq, ast.NotEq)) else left.value is right.value
                return Const(same if isinstance(node.ops[0], (ast.Eq, ast.Is)) else not same, left.origin)
            dtypes = [_TORCH_DTYPES.get(v.name) if isinstance(v, QualName) and not v.alternatives else None for v in (left, right)]
            if None not in dtypes:  # `bf16=torch_dtype == torch.bfloat16`, the variable bound to a torch dtype
                same = dtypes[0] == dtypes[1]
                return Const(same if isinstance(node.ops[0], (ast.Eq, ast.Is)) else not same, Origin(node.lineno, "literal"))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            left, right = self.eval(node.left, scope), self.eval(node.comparators[0], scope)
            # `dtype in ["auto", None]` on a value a settings file or the code gives (an option's stays a test of the option)
            if isinstance(left, Const) and not left.alternatives and not (left.origin and left.origin.option) \
                    and isinstance(right, TupleVal) and right.items and all(isinstance(item, Const) and not item.alternatives for item in right.items):
                found = any(left.value == item.value for item in right.items)
                return Const(found if isinstance(node.ops[0], ast.In) else not found, left.origin)
        return UNKNOWN

    def _argv(self, index: object) -> Value:
        """`sys.argv[1]` of the launched run: the launcher's first argument after the script (a settings file);
        `sys.argv[-1]`, its last, where the line passes no option after the script's positional arguments."""
        launch = self.facts.launch
        if launch is None or not isinstance(index, int) or index == 0 or abs(index) > len(launch.positional):
            return UNKNOWN
        if index < 0 and (launch.options or launch.forwards):
            return UNKNOWN  # the last word may be an option's value
        word = launch.positional[index - 1 if index > 0 else index]
        return UNKNOWN if word is UNKNOWN_VALUE else Const(word, Origin(launch.line, "launch line", file=launch.file))

    def _branches(self, node: ast.IfExp, scope: _Scope, visit):
        """``visit`` both branches of ``a if test else b``, each under the condition the test gives it (calls in
        ``a`` do not run by default when ``test`` is false with the script's defaults); also the test's truth and
        the literals of the ``a`` branch."""
        then, otherwise, test = self._test_literals(node.test, scope)
        outer = self.condition
        try:
            self.condition = within(outer, then)
            body = visit(node.body)
            self.condition = within(outer, otherwise)
            return body, visit(node.orelse), test, then
        finally:
            self.condition = outer

    # path conditions
    def _test_literals(self, test: ast.expr, scope: _Scope) -> tuple[list[Literal], list[Literal], bool | None]:
        """The literals the `if` branch and the `else` branch of `test` add, and the test's default truth."""
        if _is_main_guard(test):
            return [], [], True
        default = truth(self.eval(test, scope))
        whole = self._literal(test, scope, default)
        if isinstance(test, ast.BoolOp):
            parts = [self._literal(v, scope, truth(self.eval(v, scope))) for v in test.values]
            if isinstance(test.op, ast.And):
                return [whole, *parts], [whole.negated()], default
            return [whole], [whole.negated(), *(p.negated() for p in parts)], default
        return [whole], [whole.negated()], default

    def _text(self, node: ast.expr) -> str:
        """The expression as written: a slice of its line (cheap), or `ast.unparse` when it spans lines."""
        line = node.lineno
        if line == getattr(node, "end_lineno", None) and 0 < line <= len(self.lines) and self.lines[line - 1].isascii():
            return self.lines[line - 1][node.col_offset:node.end_col_offset]
        return _unparse(node)

    def _literal(self, test: ast.expr, scope: _Scope, default: bool | None) -> Literal:
        """`test` is true, keyed by the option it reads when it reads one (`args.use_lora`, `not args.full`,
        `args.peft == "lora"`, `"--lora" in sys.argv`), else by its text in this function."""
        text = self._text(test)
        holds = True
        while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            test, holds = test.operand, not holds
        equals: str | None = None  # `args.peft == "lora"`: the literal asks whether `args.peft` equals 'lora'
        subject = test
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            left, op, right = test.left, test.ops[0], test.comparators[0]
            if isinstance(op, ast.In) and isinstance(left, ast.Constant) and isinstance(left.value, str) and dotted_name(right) == "sys.argv":
                passed = self.facts.launch is not None and self.facts.launch.passes(left.value)  # absent unless passed
                return Literal(f"option {left.value}", holds, text, left.value, default=passed if holds else not passed)
            if isinstance(op, (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)) and isinstance(right, ast.Constant):
                subject, equals = left, repr(right.value)
                holds = holds if isinstance(op, (ast.Eq, ast.Is)) else not holds
        value = self.eval(subject, scope)
        option = value.origin.option if isinstance(value, Const) and value.origin else value.option if isinstance(value, OptionVal) else None
        key = f"option {option}" if option else f"{scope.name}: {self._text(subject)}"
        answer = None if default is None else (default if holds else not default)
        return Literal(key, holds, text, option, answer, equals)

    def _namespace_fallback(self, attr: str) -> Value:
        """`args.lr` where `args` came from a function we did not follow: argparse / dataclass defaults, else what the
        launcher passes as `--lr`."""
        if attr in self.facts.argparse_defaults:
            return self.facts.argparse_defaults[attr]
        for _, _, values in self.facts.settings_files:
            if attr in values and constant(values[attr], ...) is not None:
                return values[attr]
        owners = [f for f in self.facts.dataclass_fields.values() if attr in f]
        if len(owners) == 1:  # a field the launcher passes is an option of a parser we did not follow
            # (and, where the script fills its dataclasses from the command line, the field is that option: its tests in
            # two functions are one option, `args = argparse.Namespace(**vars(model_args), **vars(training_args))`)
            field_value = _as_option(owners[0][attr], attr) if self.parses_dataclasses else owners[0][attr]
            return self._option_value(field_value, f"--{attr}")
        return self._launched([f"--{attr}"]) or UNKNOWN

    def _callee(self, func: ast.expr, scope: _Scope) -> Value:
        """What a call calls. An entry of a registry in one of the project's modules (`HUNYUAN_DIT_MODELS[args.model](...)`,
        `mar.__dict__[args.model](...)`) is `module.REGISTRY[]`: one of that module's classes or factories."""
        if isinstance(func, ast.Subscript) and self.project is not None:
            registry = self.eval(func.value, scope)
            if isinstance(registry, QualName) and "." in registry.name and not registry.name.startswith("<local>."):
                module = registry.name.removesuffix(".__dict__") if registry.name.endswith(".__dict__") else registry.name.rsplit(".", 1)[0]
                if self.project.has_module(module):
                    return QualName(f"{registry.name}[]")
        return self.eval(func, scope)

    def _eval_call(self, node: ast.Call, scope: _Scope) -> Value:
        func = self._callee(node.func, scope)
        if isinstance(func, QualName) and func.name == "dict" and not node.args:
            record = self.call(node, scope)
            return DictVal(dict(record.kwargs), node.lineno, not record.star_kwargs, record.span)
        if isinstance(func, QualName) and func.name in _PARTIAL and node.args:
            record = self.call(node, scope)
            target = self.eval(node.args[0], scope)
            return PartialVal(target, dict(record.kwargs), record)
        record = self.call(node, scope)
        if isinstance(func, QualName) and func.name in _COLLECTIONS and len(record.args) == 1 and isinstance(record.args[0], TupleVal):
            return record.args[0]  # `frozenset([...])`, `set((...))`: the same items
        if isinstance(func, QualName) and func.name in _FILE_LOADERS and record.args:
            # the file, a path to it, or its text (`json.loads(f.read())`, `yaml.safe_load(Path(p).read_text())`)
            return self._loaded_file(self._read_text_of(node.args[0], scope) or record.args[0], node.lineno)
        if isinstance(func, QualName) and func.name in _SAME_PATH and record.args:
            return record.args[0]  # `os.path.abspath(sys.argv[1])` names the same file
        if isinstance(func, QualName) and func.name == "getattr" and len(record.args) == 2 and isinstance(record.args[0], QualName):
            attr = record.args[1]  # `getattr(torch, model_args.torch_dtype)` with "bfloat16" from a settings file
            if isinstance(attr, Const) and isinstance(attr.value, str) and attr.value.isidentifier():
                return QualName(f"{record.args[0].name}.{attr.value}")
        summary = self._project_function(record.qualname)
        if summary is not None and isinstance(summary.returns, TupleVal) and summary.returns.parsed_classes:
            # `args = parse_args()` of a sibling module that returns `parser.parse_args_into_dataclasses()`: parsed
            # here, where the launcher's options are known
            module = record.qualname.rsplit(".", 1)[0]
            classes = [QualName(f"{module}.{own_name(name)}" if name.startswith("<local>.") else name)
                       for name in summary.returns.parsed_classes]
            return self._hf_parser_result(classes, node.lineno, {})
        if summary is not None and isinstance(summary.returns, Namespace) and summary.returns.kind == "argparse":
            return self._sibling_options(summary.returns, summary.path)
        if summary is not None and summary.returns is not None:
            return summary.returns  # `model = load_model(args)`: the `AutoModelForCausalLM` its module returns
        if isinstance(func, QualName):
            local = func.name.startswith("<local>.")
            class_name = func.name.split(".", 1)[1] if local else None
            if class_name and class_name in self.facts.dataclass_fields:
                fields = dict(self.facts.dataclass_fields[class_name])
                fields.update(record.kwargs)
                return Namespace(fields, kind="dataclass", config_class=self.facts.library_base(class_name))
            return Instance(func.name, record)
        if isinstance(node.func, ast.Attribute):
            receiver = record.receiver_value
            attr = node.func.attr
            if attr in ("parse_args", "parse_known_args") and (_is_argparse(receiver) or dotted_name(node.func.value) in self.option_holders):
                # a parser built here, or one a helper is handed (`def default_args(parser): parser.add_argument(...)`)
                for dest, given in abbreviations(self.facts.launch, self.facts.argparse_defaults).items():
                    default = self.facts.argparse_defaults[dest]  # `--max_seq_len 2048` sets `--max_seq_length`
                    self.facts.argparse_defaults[dest] = self._launched([f"--{given}"], flag=isinstance(constant(default), bool)) or default
                namespace = Namespace(dict(self.facts.argparse_defaults))
                return namespace if attr == "parse_args" else TupleVal([namespace, UNKNOWN])
            if attr in _HF_PARSES or (attr == "parse" and isinstance(receiver, Instance) and self._is_h4_parser(receiver.qualname)):
                classes = (receiver.call.args[0] if receiver.call.args else receiver.call.kwargs.get("dataclass_types")) \
                    if isinstance(receiver, Instance) else None
                if classes is not None:  # `HfArgumentParser((A, B))`, `TrlParser(dataclass_types=[A])`
                    items = classes.items if isinstance(classes, TupleVal) else [classes]
                    return self._hf_parser_result(items, receiver.call.line, self._settings_file(node, scope))
                return UNKNOWN
            if attr in _STR_TESTS and isinstance(receiver, Const) and isinstance(receiver.value, str) and len(record.args) == 1:
                # `sys.argv[-1].endswith(".yaml")`: decided when the launcher passes the word
                suffix = constant(record.args[0])
                if isinstance(suffix, str) or (isinstance(suffix, tuple) and all(isinstance(x, str) for x in suffix)):
                    return Const(getattr(receiver.value, attr)(suffix), receiver.origin)
            if isinstance(receiver, Instance):
                if attr in _RETURNS_SELF:
                    return receiver  # `model.to("cuda")` is still the model
                if f"{receiver.qualname}.{attr}" in _PREPARES and record.args and not record.star_args:
                    # `model, optim = accelerator.prepare(model, optim)`: the same objects, wrapped for the run
                    given = [replace(a, wrapped_by=f"{receiver.qualname}.{attr}") if isinstance(a, Instance) else a for a in record.args]
                    return given[0] if len(given) == 1 else TupleVal(given)
                return Instance(f"{receiver.qualname}().{attr}", record)
        return UNKNOWN

    def _is_h4_parser(self, qualname: str) -> bool:
        """Whether `qualname` is the alignment handbook's `H4ArgumentParser` (the package, or the copy projects keep):
        an `HfArgumentParser` subclass whose `parse()` reads the YAML file `sys.argv[1]`, then the options after it."""
        name = own_name(qualname)
        self._project_class(qualname)
        known = self.facts.classes.get(name)
        return name.rsplit(".", 1)[-1] == H4_PARSER or (known is not None and "parse" in known.methods
                                                                 and known.library_base in ARGUMENT_PARSERS)

    def _settings_file(self, node: ast.Call, scope: _Scope) -> dict[str, Value]:
        """The values of the JSON / YAML file `parser.parse_json_file(path)` reads, when we can find it."""
        arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg in ("json_file", "yaml_file")), None)
        if arg is not None:
            named = self.eval(arg, scope)
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "parse_args_and_config":
            named = self._launched(["--config"])  # TRL's `TrlParser.parse_args_and_config()` reads the file `--config` names
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "parse":
            named = self._argv(1)  # the alignment handbook's `H4ArgumentParser.parse()`: `sys.argv[1]` when it ends with .yaml
            named = named if isinstance(constant(named), str) and constant(named).endswith(".yaml") else None
        else:
            named = None
        found = self._read_file(named, node.lineno) if named is not None else None
        if found is None:
            return {}
        name, data = found
        values = dict(_file_value(data, Origin(node.lineno, f"value in {name}")).items)
        self.facts.settings_files.append((name, node.lineno, values))
        return values

    def _read_text_of(self, node: ast.expr, scope: _Scope) -> Value | None:
        """What `f.read()` (of `f = open(path)`) or `Path(path).read_text()` reads: the file, as `_read_file` takes
        it; None for anything else."""
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.args):
            return None
        owner = self.eval(node.func.value, scope)
        if node.func.attr == "read" and isinstance(owner, Instance) and owner.qualname == "open":
            return owner
        if node.func.attr == "read_text" and isinstance(owner, Instance) and owner.qualname in ("pathlib.Path", "Path") \
                and owner.call.args:
            return owner.call.args[0]
        return None

    def _loaded_file(self, source: Value, line: int) -> Value:
        """`json.load(open(path))`, `yaml.safe_load(f)`, `OmegaConf.load(path)`: the file's values."""
        found = self._read_file(source, line)
        return UNKNOWN if found is None else _file_value(found[1], Origin(line, f"value in {found[0]}"))

    def _read_file(self, source: Value, line: int) -> tuple[str, dict] | None:
        """(name as written, contents) of the settings file ``source`` names: a path, or `open(path)`."""
        if isinstance(source, Instance) and source.qualname == "open" and source.call.args:
            source = source.call.args[0]
        name = constant(source)
        if not isinstance(name, str):
            return None
        launch = self.facts.launch
        written = launch.written_files.get(name) or launch.written_files.get(name.removeprefix("./")) if launch is not None else None
        if written is not None:  # the launcher wrote it just before the run (`cat <<EOT > dpo_config.yaml`)
            data = settings_in_text(written[1], PurePosixPath(name).suffix)
            return None if data is None else (f"{name} (written by {launch.file}:{written[0]})", data)
        data = self.files.settings(name)
        return None if data is None else (name, data)

    def _hf_parser_result(self, items: list[Value], line: int, file_values: dict[str, Value]) -> TupleVal:
        """The dataclasses `HfArgumentParser(items)` (built at `line`) `.parse_args_into_dataclasses()` returns: every
        field is an option (`--field`), whose value is the settings file's, else the dataclass default, else the
        library's."""
        for item in items:
            if isinstance(item, QualName):
                self._project_class(item.name)
        own = self.facts.own_fields(getattr(item, "name", None) for item in items)
        launch = self.facts.launch
        out: list[Value] = []
        for item in items:
            key = own_name(item.name) if isinstance(item, QualName) else None
            if key is not None and (item.name.startswith("<local>.") or key in self.facts.classes):
                fields = {name: _as_option(value, name) for name, value in self.facts.dataclass_fields.get(key, {}).items()}
                library = self.facts.library_base(key)
                # a subclass of `TrainingArguments` also takes the file's keys that no dataclass of the script declares
                fields.update({k: v for k, v in file_values.items() if k in fields or (library and k not in own)})
                fields = with_launched(launch, fields, own, library=bool(library))
                out.append(Namespace(fields, kind="command line" if library else "dataclass", config_class=library, line=line))
            elif isinstance(item, QualName):
                fields = with_launched(launch, dict(file_values), own, library=True)
                out.append(Namespace(fields, kind="command line", config_class=item.name, line=line))
            else:
                out.append(UNKNOWN)
        parsed = tuple(item.name for item in items if isinstance(item, QualName))
        return TupleVal(out, parsed_classes=parsed if not file_values and len(parsed) == len(items) else ())


def _is_main_guard(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.comparators) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = {dotted_name(test.left), dotted_name(test.comparators[0])}
    constants = {s.value for s in (test.left, test.comparators[0]) if isinstance(s, ast.Constant)}
    return "__name__" in sides and "__main__" in constants


def _unparse(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except (ValueError, RecursionError):  # pragma: no cover - a tree ast itself built
        return "<expression>"


def _with_alternative(chosen: Value, other: Value, literals: list[Literal]) -> Value:
    """`chosen`, the value of the default run, knowing that the path `literals` gives `other` instead."""
    if isinstance(chosen, Const) and isinstance(other, Const) and chosen.value != other.value and literals:
        return replace(chosen, alternatives=chosen.alternatives + ((Condition(frozenset(literals)), other),))
    return chosen


def _merge_branches(before: dict, then: dict, otherwise: dict, literals: list[Literal], default: bool | None) -> dict:
    """The bindings after `if test: ... else: ...`: for a name the branches bind differently, the default run's
    value when the test's default is known (else the `else` branch's, or the `if` branch's when only it binds),
    with the other branch's value kept as an alternative: a constant that depends on the test, or an imported
    name that is another library's on the other path."""
    merged = dict(otherwise)
    for name in [n for n in otherwise if "." in n and n not in before and n not in then]:
        del merged[name]  # `args.x = ...` on one path only: read as the object gives it (no binding holds that value)
    for name, value in then.items():
        other = otherwise.get(name)
        if other is value:
            continue
        if other is None and "." in name and name not in before:
            continue
        rebound_in_else = name in otherwise and other is not before.get(name)
        if default is True or (default is None and not rebound_in_else):
            merged[name] = _with_alternative(value, other, [l.negated() for l in literals]) if other is not None else value
        else:
            merged[name] = _with_alternative(other, value, literals) if other is not None else value
        if isinstance(value, QualName) and isinstance(other, QualName) and value.name != other.name:
            chosen, alternative = (value, other) if merged[name] is value else (other, value)
            merged[name] = QualName(chosen.name, chosen.alternatives + (alternative.name,))
    return merged


def _note_alternative_names(tried: dict, final: dict) -> None:
    """After `try: from a import f` / `except ImportError: from b import f`, `f` is `b.f` or `a.f`."""
    for name, value in final.items():
        first = tried.get(name)
        if isinstance(value, QualName) and isinstance(first, QualName) and first.name != value.name:
            final[name] = QualName(value.name, value.alternatives + (first.name,))


def _click_options(node: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, Value]:
    """`@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=True)` -> the parameter it
    fills (`gradient_checkpointing`) and its default, as the value of that option."""
    options: dict[str, Value] = {}
    for decorator in node.decorator_list:
        if not (isinstance(decorator, ast.Call) and (dotted_name(decorator.func) or "").rsplit(".", 1)[-1] == "option"):
            continue
        names = [a.value for a in decorator.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if not names:
            continue
        # `--x/--no-x` is one boolean option named by its first half; click names the parameter after the first
        # long option (or an undashed name given as well)
        flags = [name.split("/")[0] for name in names if name.startswith("-")]
        plain = [name for name in names if name.isidentifier()]
        longs = [f for f in flags if f.startswith("--")] or flags
        if plain:
            param = plain[0]
        elif longs:
            param = longs[0].lstrip("-").replace("-", "_").lower()
        else:
            continue
        keywords = {k.arg: k.value for k in decorator.keywords if k.arg}
        default = keywords.get("default")
        if isinstance(default, ast.Constant):
            value: object = default.value
        elif default is None and (isinstance(keywords.get("is_flag"), ast.Constant) and keywords["is_flag"].value or "/" in names[0]):
            value = False
        else:
            options[param] = OptionVal(flags[0] if flags else f"--{param}", decorator.lineno)
            continue
        options[param] = Const(value, Origin(decorator.lineno, "click default", option=flags[0] if flags else f"--{param}"))
    return options


def _as_option(value: Value, name: str) -> Value:
    """A dataclass field's default as the value of the option `--name` that `HfArgumentParser` makes of it."""
    if isinstance(value, Const) and value.origin is not None and value.origin.option is None:
        return replace(value, origin=replace(value.origin, option=f"--{name}"))
    if value is UNKNOWN:
        return OptionVal(f"--{name}", 0)
    return value


# what a class keeps the parsed options in (`self.args = args` in `__init__`, then `self.args.model_name`)
_OPTIONS_ATTRIBUTES = frozenset({"args", "opt", "opts", "cfg", "hparams", "flags", "training_args", "train_args", "script_args",
                                 "model_args", "data_args"})


def _is_options_on_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in _OPTIONS_ATTRIBUTES and isinstance(node.value, ast.Name) and node.value.id == "self"


_PEFT_COPIES = frozenset(name.rsplit(".", 1)[1] for name in KBIT_PREPARATION)


def _is_argparse(value: Value) -> bool:
    return isinstance(value, Instance) and value.qualname in ("argparse.ArgumentParser",)


def _is_dataclass_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return dotted_name(target) in ("dataclass", "dataclasses.dataclass")


def dotted_name(node: ast.AST) -> str | None:
    """`a.b.c` for a name or an attribute chain over a name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


PARAMETERS = "<parameters>"  # a parameter of the module a `for p in module.parameters()` loop walks

# nn.Module methods that return the module itself
_RETURNS_SELF = {"to", "cuda", "cpu", "half", "float", "bfloat16", "double", "train", "eval", "requires_grad_", "to_empty"}
_STR_TESTS = {"endswith", "startswith"}
_PREPARES = {"accelerate.Accelerator.prepare", "accelerate.Accelerator.prepare_model"}  # hand back what they are given
_SAME_PATH = {"os.path.abspath", "os.path.realpath", "os.path.expanduser", "os.path.normpath"}
_FILE_LOADERS = {"json.load", "json.loads", "yaml.safe_load", "yaml.load", "yaml.full_load", "omegaconf.OmegaConf.load"}


LOADERS = (".from_pretrained", ".from_config")
# what turns autograd's recording off, as a context manager or a decorator (torch 2.13.0 `torch/autograd/grad_mode.py`)
GRAD_OFF = frozenset({"torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad", "torch.autograd.inference_mode",
                      "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.inference_mode"})
GRAD_SWITCHES = frozenset({"torch.set_grad_enabled", "torch.autograd.set_grad_enabled", "torch.autograd.grad_mode.set_grad_enabled"})


def _model_loads(value: Value, depth: int = 0) -> list[Instance]:
    """The results of calls a model value stands for (`X.from_pretrained(...)`, `X(config)`), through PEFT's wrappers
    (`get_peft_model(model, ...)`); classes of the script itself are left out (their code is in the file)."""
    if not isinstance(value, Instance) or depth > 3:
        return []
    if value.qualname in PEFT_WRAPPERS and value.call is not None and value.call.args:
        return _model_loads(value.call.args[0], depth + 1)
    return [value] if not value.qualname.startswith("<local>.") and value.call is not None else []


def _file_value(data: object, origin: Origin) -> Value:
    """A settings file's contents as values; a mapping may hold keys the reader skipped (YAML lists)."""
    if isinstance(data, dict):
        return DictVal({str(k): _file_value(v, origin) for k, v in data.items()}, origin.line, complete=False)
    if isinstance(data, list):
        return TupleVal([_file_value(v, origin) for v in data])
    return Const(data, origin)


_BUILTINS = {"dict", "print", "len", "getattr", "setattr", "isinstance", "super", "range", "open", "list", "tuple", "set", "frozenset", "breakpoint"}
_COLLECTIONS = {"list", "tuple", "set", "frozenset"}
_TEST_OPERATORS = {ast.In: "in", ast.NotIn: "not in", ast.Eq: "==", ast.NotEq: "!="}

