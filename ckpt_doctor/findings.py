"""What a rule reports: a finding at a place in a file, with an optional fix.

Findings are plain data. A fix is a `FixSpec`: one typed edit (`SetKeywords`, `InsertStatement`, `ReplaceText`,
...) at a source position the facts pass saw; `ckpt_doctor.check.fix` turns it into a LibCST transform or a text
edit only when fixes are asked for, so detection never imports LibCST's metadata machinery.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Union


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "Severity":
        return cls[text.upper()]


class Applicability(str, enum.Enum):
    SAFE = "safe"  # behaviour the user wants, nothing else changes
    UNSAFE = "unsafe"  # changes what the program does; needs --unsafe-fixes
    DISPLAY_ONLY = "display-only"  # a suggestion shown to the user, never applied

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, order=True)
class Position:
    """1-based line, 1-based column counted in characters (as ruff reports them)."""

    line: int
    column: int


@dataclass(frozen=True)
class Span:
    start: Position
    end: Position


@dataclass(frozen=True)
class SetKeywords:
    """Pass each `name=value` (value: source text) to the call at the span; `replace`: overwrite one already given."""

    keywords: tuple[tuple[str, str], ...]
    replace: bool = True

    def written_names(self) -> set[str]:
        return {name for name, _ in self.keywords}


@dataclass(frozen=True)
class SetDictKey:
    """Add `"key": value` to the dict literal (or `dict(...)` call) at the span, unless the key is there."""

    key: str
    value: str

    def written_names(self) -> set[str]:
        return {self.key}


@dataclass(frozen=True)
class InsertStatement:
    """One statement (no indentation) after the statement at the span, or before it."""

    code: str
    before: bool = False

    def written_names(self) -> set[str]:
        return set(re.findall(r"[A-Za-z_]\w*", self.code))


@dataclass(frozen=True)
class RenameAttribute:
    """The attribute the assignment statement at the span sets."""

    old: str
    new: str

    def written_names(self) -> set[str]:
        return {self.new}


@dataclass(frozen=True)
class RenameMethod:
    """The method the call at the span calls, and keywords of that call ((old, new), ...)."""

    old: str
    new: str
    keywords: tuple[tuple[str, str], ...] = ()

    def written_names(self) -> set[str]:
        return {self.new} | {new for _, new in self.keywords}


@dataclass(frozen=True)
class RenameKeywords:
    """Keywords of the call at the span ((old, new), ...)."""

    renames: tuple[tuple[str, str], ...]

    def written_names(self) -> set[str]:
        return {new for _, new in self.renames}


@dataclass(frozen=True)
class ReplaceText:
    """The text at the span, as text (configs and launchers: nothing is parsed)."""

    content: str

    def written_names(self) -> set[str]:
        return set()


Edit = Union[SetKeywords, SetDictKey, InsertStatement, RenameAttribute, RenameMethod, RenameKeywords, ReplaceText]
EDITS: dict[str, type] = {cls.__name__: cls for cls in (SetKeywords, SetDictKey, InsertStatement, RenameAttribute, RenameMethod,
                                                        RenameKeywords, ReplaceText)}


@dataclass(frozen=True)
class FixSpec:
    """A fix: one typed edit at a place the facts pass saw; `ckpt_doctor.check.fix` applies it (LibCST for the
    edits of Python code, text for `ReplaceText`)."""

    edit: Edit
    span: Span
    applicability: Applicability = Applicability.SAFE
    message: str = ""
    imports: tuple[str, ...] = ()  # e.g. ("import functools",) added when missing

    def introduced_names(self) -> set[str]:
        """The names and keywords this fix writes into the script (`use_reentrant`, `enable_input_require_grads`)."""
        return self.edit.written_names()


@dataclass(frozen=True)
class Related:
    """A second place a finding is about (CKPT301's DDP call, CKPT302's other checkpointing), with what it is."""

    span: Span
    message: str


@dataclass
class Finding:
    code: str
    message: str
    severity: Severity
    span: Span
    fix: FixSpec | None = None
    path: str = ""
    # Where the finding sits in a notebook: cell index (0-based among all cells) and line in the cell.
    cell: int | None = None
    cell_span: Span | None = None
    extra: dict[str, object] = field(default_factory=dict)
    # the options under which it holds, as `Condition.as_list()` gives them; empty: in every run
    condition: list[dict] = field(default_factory=list)
    related: list[Related] = field(default_factory=list)  # in the same file

    @property
    def sort_key(self) -> tuple:
        return (self.path, self.span.start, self.code)


def finding_to_dict(finding: Finding) -> dict:
    """A plain-JSON form, used by the cache and by worker processes."""
    fix = finding.fix
    return {
        "code": finding.code,
        "message": finding.message,
        "severity": int(finding.severity),
        "span": _span_to_list(finding.span),
        "path": finding.path,
        "cell": finding.cell,
        "cell_span": _span_to_list(finding.cell_span) if finding.cell_span else None,
        "condition": finding.condition,
        "related": [[*_span_to_list(r.span), r.message] for r in finding.related],
        "fix": None
        if fix is None
        else {
            "edit": type(fix.edit).__name__,
            "fields": {k: _freeze(v) for k, v in vars(fix.edit).items()},
            "span": _span_to_list(fix.span),
            "applicability": fix.applicability.value,
            "message": fix.message,
            "imports": list(fix.imports),
        },
    }


def finding_from_dict(data: dict) -> Finding:
    fix = data.get("fix")
    return Finding(
        code=data["code"],
        message=data["message"],
        severity=Severity(data["severity"]),
        span=_span_from_list(data["span"]),
        path=data["path"],
        cell=data.get("cell"),
        cell_span=_span_from_list(data["cell_span"]) if data.get("cell_span") else None,
        condition=data.get("condition", []),
        related=[Related(_span_from_list(r[:4]), r[4]) for r in data.get("related", [])],
        fix=None
        if fix is None
        else FixSpec(
            edit=EDITS[fix["edit"]](**{k: _thaw(v) for k, v in fix["fields"].items()}),
            span=_span_from_list(fix["span"]),
            applicability=Applicability(fix["applicability"]),
            message=fix["message"],
            imports=tuple(fix["imports"]),
        ),
    )


def _span_to_list(span: Span) -> list[int]:
    return [span.start.line, span.start.column, span.end.line, span.end.column]


def _span_from_list(values: list[int]) -> Span:
    return Span(Position(values[0], values[1]), Position(values[2], values[3]))


def _freeze(value: object) -> object:
    if isinstance(value, tuple):
        return {"tuple": [_freeze(v) for v in value]}
    return value


def _thaw(value: object) -> object:
    if isinstance(value, dict) and "tuple" in value:
        return tuple(_thaw(v) for v in value["tuple"])
    return value
