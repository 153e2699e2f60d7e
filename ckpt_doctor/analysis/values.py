"""What the facts pass knows about the value of an expression, without running anything.

A value is one of a few small shapes: a constant (with where it came from), a dict literal, a
qualified name (an imported module, class or function), the result of calling something, a
`functools.partial`, an argparse namespace or a dataclass instance whose defaults we read, or
`UNKNOWN`. Rules only ever ask a handful of questions of them (`truth`, `constant`, `get`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Origin:
    """Where a value came from, so findings can say 'the argparse default at line 12'."""

    line: int
    kind: str = "literal"  # literal | constant | argparse default | dataclass default | library default | launch line
    option: str | None = None  # the command-line option that sets the value ("--use_lora"), if one does
    file: str | None = None  # another file the value is written in (the launcher `run.sh`); `line` is its line

    def describe(self) -> str:
        if self.file is not None:
            return f"`{self.option}` in {self.file}:{self.line}" if self.option else f"{self.file}:{self.line}"
        if self.kind == "literal":
            return f"line {self.line}"
        return f"the {self.kind} at line {self.line}"


@dataclass(frozen=True)
class Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()


@dataclass(frozen=True)
class Const:
    """A constant, as the run the defaults describe sees it; `alternatives` are the values other paths
    give it (`gc = True if args.gc else False`, or assigned in both branches of an `if`)."""

    value: Any
    origin: Origin | None = None
    alternatives: tuple = ()  # ((Condition, Const), ...)


@dataclass(frozen=True)
class OptionVal:
    """A value only the command line sets: a field of `TrainingArguments` that `HfArgumentParser` fills
    from `sys.argv`, and no settings file or default of the script's own gives it."""

    option: str  # "--gradient_checkpointing"
    line: int
    default: Any = None  # the library's default when known and version-independent, else None


@dataclass
class DictVal:
    items: dict[str, "Value"]
    line: int = 0
    complete: bool = True  # False when the literal has **spread or non-constant keys
    span: Any = None  # findings.Span of the `{...}` or `dict(...)` expression, for fixes

    def get(self, key: str) -> "Value":
        return self.items.get(key, UNKNOWN if not self.complete else MISSING)


@dataclass(frozen=True)
class Missing:
    """A key or keyword that is certainly absent (distinct from UNKNOWN)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()


@dataclass(frozen=True)
class QualName:
    name: str  # e.g. "torch.utils.checkpoint.checkpoint"
    # what the same name is bound to on other paths: `try: from deepspeed... import checkpoint`
    # `except ImportError: from torch.utils.checkpoint import checkpoint`
    alternatives: tuple[str, ...] = ()


@dataclass
class Instance:
    """The result of calling `qualname` (a class or function) at a call site."""

    qualname: str
    call: Any  # facts.Call; typed loosely to keep this module free of cycles
    # the call that handed it back wrapped for the run (`accelerate.Accelerator.prepare`): a DDP module or a DeepSpeed
    # engine around it, whose attributes (`.config`) are not the model's
    wrapped_by: str | None = None


@dataclass
class PartialVal:
    func: "Value"
    kwargs: dict[str, "Value"]
    call: Any = None  # the facts.Call of `functools.partial(...)` itself


@dataclass
class Namespace:
    """`parser.parse_args()` or a dataclass instance from `HfArgumentParser`: attribute -> default."""

    fields: dict[str, "Value"] = field(default_factory=dict)
    kind: str = "argparse"
    # For an HfArgumentParser TrainingArguments/TRL config built from the command line.
    config_class: str | None = None
    line: int = 0  # where the parser builds it

    def get(self, name: str) -> "Value":
        if name in self.fields:
            return self.fields[name]
        if self.kind == "command line":  # a field of the library's class: only `sys.argv` sets it
            from ckpt_doctor.analysis.library import command_line_default

            return OptionVal(f"--{name}", self.line, command_line_default(self.config_class, name))
        return UNKNOWN


@dataclass
class TupleVal:
    items: list["Value"]
    parsed_classes: tuple[str, ...] = ()  # the dataclasses `HfArgumentParser(...).parse_args_into_dataclasses()` fills


Value = Union[Unknown, Missing, Const, OptionVal, DictVal, QualName, Instance, PartialVal, Namespace, TupleVal]


def constant(value: Value, default: Any = None) -> Any:
    return value.value if isinstance(value, Const) else default


def truth(value: Value) -> bool | None:
    """True / False when the value is a known constant, None when it cannot be known."""
    if isinstance(value, Const):
        return bool(value.value)
    if isinstance(value, Missing):
        return None
    if isinstance(value, DictVal):
        return bool(value.items) if value.complete else None
    return None

