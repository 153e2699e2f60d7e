"""The script's own project: the sibling modules it imports, each summarised once.

`from .model_utils import load_model` / `from utils import apply_fsdp_checkpointing` name functions of the
project. A summary of such a function says what it returns (an `AutoModelForCausalLM`, a PEFT model) and
which library calls it makes (checkpointing, wrapping, freezing, quantised loads), so a call to it in the
script stands for those calls. Modules are found from the script's folder, its package and the project
root (the nearest folder with `pyproject.toml`, `setup.py`, `setup.cfg` or `.git`); libraries are never
looked for there. Summaries are cached by the module's content.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from ckpt_doctor.analysis.config_files import ProjectFiles, is_regular_file, shown_path
from ckpt_doctor.analysis.library import TORCH_CHECKPOINTS
from ckpt_doctor.analysis.values import Const, Missing

if TYPE_CHECKING:
    from ckpt_doctor.analysis.facts import AttrAssign, Call, ClassInfo, ScriptFacts
    from ckpt_doctor.analysis.values import Value

# Top-level names that are libraries, never a project's own module (a `transformers/` folder of patches
# beside a script is still not where `from transformers import ...` goes).
LIBRARIES = {"torch", "transformers", "peft", "trl", "accelerate", "deepspeed", "datasets", "numpy", "functools",
             "os", "sys", "json", "typing", "dataclasses", "argparse", "logging", "math", "re", "bitsandbytes",
             "lightning", "pytorch_lightning", "click", "fire", "wandb", "tqdm", "yaml", "omegaconf", "hydra"}
ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
# a package's `__init__.py` that only re-exports (`from .training import train_config`): read to follow the name
_REEXPORTS = re.compile(r"^from \.", re.MULTILINE)
# A module none of whose text names one of these (and that re-exports nothing) cannot change a finding: not parsed.
RELEVANT = re.compile(r"checkpoint|from_pretrained|from_config|requires_grad|peft|lora|use_cache|deepspeed|fsdp|"
                      r"TrainingArguments|Trainer|Config\b|backward|kbit|BitsAndBytes|DistributedDataParallel|@dataclass|add_argument")
MAX_DEPTH = 2  # the script's imports, and theirs: enough for `train.py -> utils -> model_utils`
_ROOT_WALK = 6
MAX_SIBLINGS = 200  # the modules of a folder `calls_from_importers` reads the names of


@dataclass
class FunctionSummary:
    """What calling a project function does, as the script sees it."""

    path: str  # the module's file, as it is named in messages
    params: list[str]
    calls: list["Call"]
    assigns: list["AttrAssign"]
    returns: "Value | None"


@dataclass
class _Module:
    path: Path
    facts: "ScriptFacts"
    summaries: dict[str, FunctionSummary | None] = field(default_factory=dict)
    by_function: dict[str, list["Call"]] = field(default_factory=dict)  # top-level function -> the calls in it

    def __post_init__(self) -> None:
        for call in self.facts.calls:
            self.by_function.setdefault(call.scope.split(".", 1)[0], []).append(call)


# (path, sha1 of the text) -> the module, shared by the scripts one process checks, least recently used first
_MODULES: OrderedDict[tuple[str, str, int], _Module | None] = OrderedDict()
MAX_MODULES = 64


class Project:
    def __init__(self, script: str, files: ProjectFiles, depth: int = 0) -> None:
        self.files = files
        self.depth = depth
        try:
            self.folder = Path(script).resolve().parent
        except (OSError, ValueError):
            self.folder = None
        self.root = _root(self.folder) if self.folder is not None and script != "-" else None
        self._known: dict[str, FunctionSummary | None] = {}
        self._paths: dict[str, Path | None] = {}

    @cached_property
    def repository(self) -> Path | None:
        """The checkout the project lies in (the nearest folder with `.git`), else its root: launchers live anywhere
        in it (`src/scripts/run.sh` of a repository whose package root is `src/pkg`)."""
        return _root(self.root, (".git",)) if self.root is not None else None

    def summary(self, qualname: str) -> FunctionSummary | None:
        """The summary of the project function `qualname` ("utils.load_model", "..model.build"), None when it is
        not a function of a project module we can read."""
        if qualname not in self._known:
            self._known[qualname] = self._summary(qualname)
        return self._known[qualname]

    def method_summary(self, class_qualname: str, method: str) -> FunctionSummary | None:
        """What `self.method()` does in a script's class that inherits `method` from the project's class `class_qualname`
        (align-anything's `SupervisedTrainer(SupervisedTrainerBase)` calling `self.init_engines()`): the calls of that
        method and of the methods of the class it calls on `self`."""
        key = f"{class_qualname}.{method}()"
        if key not in self._known:
            self._known[key] = self._method_summary(class_qualname, method)
        return self._known[key]

    def _method_summary(self, class_qualname: str, method: str) -> FunctionSummary | None:
        found = self._defining_class(class_qualname)
        if found is None:
            return None
        module, name = found
        info = module.facts.classes[name]
        if method not in info.methods:
            return None
        methods, todo = set(), [method]
        while todo:
            current = todo.pop()
            if current not in methods:
                methods.add(current)
                todo += [c.name for c in module.facts.calls
                         if c.scope == f"{name}.{current}" and c.receiver == "self" and c.name in info.methods]
        scopes = {f"{name}.{m}" for m in methods}
        calls = [c for c in module.facts.calls if _in(c.scope, scopes)]
        assigns = [a for a in module.facts.attr_assigns if _in(a.scope, scopes)]
        return FunctionSummary(shown_path(module.path), [], calls, assigns, None)

    def config_class(self, qualname: str) -> "tuple[ClassInfo, dict[str, Value]] | None":
        """What the project class `qualname` ("src.params.DPOArguments") extends and its dataclass fields, read from
        its module: the config classes argument parsers fill are often kept beside the script."""
        found = self._defining_class(qualname)
        if found is None:
            return None
        module, name = found
        where = shown_path(module.path)
        fields = {key: _in_file(value, where) for key, value in module.facts.dataclass_fields.get(name, {}).items()}
        return module.facts.classes[name], fields

    def star_exports(self, module: str, depth: int = 0) -> dict[str, str]:
        """The classes and functions `from module import *` binds, when `module` is one of the project's, each by
        its qualified name in the module that defines it; a package's `__init__.py` that star-imports its own modules
        (`from .arguments import *`) passes theirs on."""
        found = self._named_module(module)
        if found is None:
            return {}
        names: dict[str, str] = {}
        if depth < MAX_DEPTH:
            for inner in filter(None, (_imported(module, found.path, name) for name in found.facts.star_imports if name.startswith("."))):
                names.update(self.star_exports(inner, depth + 1))
        own = [*found.facts.classes, *found.facts.functions]
        names.update((name, f"{module}.{name}") for name in own if not name.startswith("_"))
        return names

    def runs_backward(self, module: str, depth: int = 0) -> str | None:
        """The file of `module`, when it is one of the project's and calls `.backward()` (`loss.backward()`,
        `self.accelerator.backward(loss)`), or one of the project modules it imports does: a training loop the script
        runs from a sibling module (HALOs' `trainers.py`; LOMO's `lomo_trainer.py` over `lomo.py`)."""
        found = self._named_module(module)
        if found is None:
            return None
        if any(c.is_backward for c in found.facts.calls):
            return shown_path(found.path)
        inner = filter(None, (_imported(module, found.path, name) for name in found.facts.imports)) if depth + 1 < MAX_DEPTH else ()
        return next(filter(None, (self.runs_backward(name, depth + 1) for name in inner)), None)

    def own_checkpoint_call(self, class_qualname: str, callees: tuple[str, ...] = TORCH_CHECKPOINTS) -> "tuple[str, Call] | None":
        """(the module, its first `torch.utils.checkpoint` call without `use_reentrant`, else its first) when
        `class_qualname` is a class (or a factory function, or an entry `X[]` of a registry) of the project's own
        module that calls torch's checkpoint itself (a copied `modeling_llama.py`); `callees`: other checkpoint
        functions to look for (DeepSpeed's)."""
        module, name = self._defining(class_qualname)
        if module is None or (name not in module.facts.classes and name not in module.facts.functions and not name.endswith("[]")):
            return None
        # its own module's calls, else those of the project modules it imports (a UNet whose blocks live beside it)
        module_name = class_qualname.rsplit(".", 1)[0]
        imported = (_imported(module_name, module.path, name) for name in module.facts.imports) if self.depth + 1 < MAX_DEPTH else ()
        nearby = (self._named_module(part) for name in filter(None, imported) for part in dict.fromkeys((name, name.rsplit(".", 1)[0])))
        for found in chain([module], filter(None, nearby)):
            calls = [call for call in found.facts.calls if call.qualname in callees]
            if calls:
                first = next((call for call in calls if isinstance(call.kwarg("use_reentrant"), Missing)), calls[0])
                return shown_path(found.path), first
        return None

    def calls_from_importers(self, function: str) -> "list[tuple[str, Call, bool]]":
        """(file:line, call, whether that module calls `.backward()`) for each call of the script's top-level function
        `function` that the project's other modules make: `engine.eval_fn(model, loader)` in `train.py` for
        `engine.py`'s `eval_fn` (a Kaggle-style `engine.py` whose loops `train.py` runs). Looked for in the `.py` files
        of the script's folder and of the project root that name both the script's module and the function; their own
        imports are not followed."""
        if self.root is None or self.folder is None:
            return []
        stem = Path(self.files.script).stem
        found = []
        for path in _sibling_modules(self.folder, self.root):
            if path.stem == stem and path.parent == self.folder:
                continue
            text = self.files.module(path)
            if text is None or function not in text or stem not in text:
                continue
            module = _extract_module(path, text, MAX_DEPTH)
            calls = module.facts.calls if module else []
            trains = any(call.is_backward for call in calls)
            found += [(f"{shown_path(path)}:{call.line}", call, trains) for call in calls
                      if call.name == function and (call.qualname or "").endswith(f"{stem}.{function}")]
        return found

    def _defining(self, qualname: str) -> "tuple[_Module | None, str]":
        """The project module that defines `qualname`, and the name in it."""
        if self.root is None or self.depth >= MAX_DEPTH or "." not in qualname.lstrip("."):
            return None, ""
        module_name, name = qualname.rsplit(".", 1)
        if module_name.lstrip(".").split(".", 1)[0] in LIBRARIES and not module_name.startswith("."):
            return None, ""
        path = self._module_path(module_name)
        return (self._module(path) if path is not None else None), name

    def _defining_class(self, qualname: str) -> "tuple[_Module, str] | None":
        """The project module that defines the class `qualname`, and its name there, through a package's `__init__.py`
        that re-exports it (`from .training import train_config`)."""
        module, name = self._defining(qualname)
        if module is not None and name not in module.facts.classes and self.depth + 1 < MAX_DEPTH:
            again = next((q for q in module.facts.imports if q.rsplit(".", 1)[-1] == name), None)
            return Project(str(module.path), ProjectFiles(str(module.path)), self.depth + 1)._defining_class(again) if again else None
        return (module, name) if module is not None and name in module.facts.classes else None

    def _summary(self, qualname: str) -> FunctionSummary | None:
        module, function = self._defining(qualname)
        if module is None:
            return None
        if function not in module.summaries:
            module.summaries[function] = _summarise(module, function)
        return module.summaries[function]

    def _named_module(self, module: str) -> "_Module | None":
        """The project's module `import module` names, read and summarised; None for a library or a module not found."""
        if self.root is None or module.lstrip(".").split(".", 1)[0] in LIBRARIES:
            return None
        path = self._module_path(module)
        return self._module(path) if path is not None else None

    def has_module(self, module: str) -> bool:
        """Whether `import module` names one of the project's own modules (the cheap question `check` asks of a
        file before it decides to read it at all)."""
        return self.root is not None and module.split(".", 1)[0] not in LIBRARIES and self._module_path(module) is not None

    def _module_path(self, module: str) -> Path | None:
        if module not in self._paths:
            self._paths[module] = self._find_module_path(module)
        return self._paths[module]

    def _find_module_path(self, module: str) -> Path | None:
        level = len(module) - len(module.lstrip("."))
        parts = [p for p in module.lstrip(".").split(".") if p]
        if level:
            bases = [self.folder.parents[level - 2] if level > 1 else self.folder] if level - 1 <= len(self.folder.parents) else []
        else:
            # the script's folder and those above it, up to the root: a package run from a subfolder (`cd train;
            # python src/entry_point/sft_train.py` importing `src.models...`)
            above = [p for p in self.folder.parents if p == self.root or self.root in p.parents]
            bases = list(dict.fromkeys([self.folder, *above, self.root, self.root / "src"]))
        for base in bases:
            candidate = base.joinpath(*parts)
            for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
                if is_regular_file(path) and _inside(path, self.root):
                    return path
        return None

    def _module(self, path: Path) -> _Module | None:
        text = self.files.module(path)
        if text is None or (not RELEVANT.search(text) and not _REEXPORTS.search(text)):
            return None  # a module that mentions no library call a rule or the estimate reads: nothing to summarise
        # the depth is part of the key: a module read as an import of an import follows no imports of its own, so its
        # facts are fewer than those of the same module imported by the script itself
        key = (str(path), hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest(), self.depth + 1)
        if key in _MODULES:
            _MODULES.move_to_end(key)
        else:
            _MODULES[key] = _extract_module(path, text, self.depth + 1)
            while len(_MODULES) > MAX_MODULES:  # facts hold syntax trees: keep the heap (and the GC's walks) small
                _MODULES.popitem(last=False)
        return _MODULES[key]


def _extract_module(path: Path, text: str, depth: int) -> _Module | None:
    from ckpt_doctor.analysis.facts import FactsError, extract

    files = ProjectFiles(str(path))
    try:
        facts = extract(text, str(path), files, Project(str(path), files, depth))
    except (SyntaxError, FactsError, ValueError):
        return None
    return _Module(path, facts)


def _summarise(module: _Module, function: str) -> FunctionSummary | None:
    facts = module.facts
    if function not in facts.functions:
        return None
    scopes = _reached(module, function)
    calls = [c for s in scopes for c in module.by_function.get(s, []) if not (c.qualname or "").startswith("<local>.")]
    assigns = [a for a in facts.attr_assigns if _in(a.scope, scopes)]
    returned = next((v for v in facts.returns.get(function, []) if _is_library_object(v) or _is_parsed_args(v)), None)
    return FunctionSummary(shown_path(module.path), facts.functions[function], calls, assigns, returned)


def _sibling_modules(folder: Path, root: Path) -> list[Path]:
    """The `.py` files of `folder` and of `root` (MAX_SIBLINGS of each at most, by name)."""
    paths: list[Path] = []
    for base in dict.fromkeys([folder, root]):
        try:
            paths += sorted(p for p in base.glob("*.py") if is_regular_file(p))[:MAX_SIBLINGS]
        except OSError:
            continue
    return paths


def _imported(module: str, path: Path, name: str) -> str | None:
    """The module `name` as the project module `module` (the file `path`) imports it: `.lomo` in `train/trainers.py`
    is `train.lomo`, a module of its own package; None for imports further up (`..x`)."""
    if not name.startswith("."):
        return name
    if name.startswith(".."):
        return None
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return f"{package}{name}" if package else name


def _in_file(value: "Value", where: str) -> "Value":
    """`value` as read from another file: its origin names that file."""
    if isinstance(value, Const) and value.origin is not None and value.origin.file is None:
        return replace(value, origin=replace(value.origin, file=where))
    return value


def _reached(module: _Module, function: str) -> set[str]:
    """`function` and the module's own top-level functions it calls, transitively."""
    seen, todo = set(), [function]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [c.qualname.split(".", 1)[1] for c in module.by_function.get(name, [])
                 if (c.qualname or "").startswith("<local>.") and c.qualname.split(".", 1)[1] in module.facts.functions]
    return seen


def _in(scope: str, scopes: set[str]) -> bool:
    return scope in scopes or any(scope.startswith(f"{s}.") for s in scopes)


def _is_library_object(value: object) -> bool:
    from ckpt_doctor.analysis.values import Instance

    return isinstance(value, Instance) and not value.qualname.startswith("<local>.")


def _is_parsed_args(value: object) -> bool:
    """`parser.parse_args_into_dataclasses()`, or argparse's `parser.parse_args()`: options the caller's launch sets."""
    from ckpt_doctor.analysis.values import Namespace, TupleVal

    return (isinstance(value, TupleVal) and bool(value.parsed_classes)) or (isinstance(value, Namespace) and value.kind == "argparse")


def _root(folder: Path, markers: tuple[str, ...] = ROOT_MARKERS) -> Path:
    """The nearest folder from `folder` up that holds one of `markers`, else `folder` itself."""
    for current in [folder, *list(folder.parents)[:_ROOT_WALK]]:
        if any((current / marker).exists() for marker in markers):
            return current
    return folder


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (OSError, ValueError):
        return False

