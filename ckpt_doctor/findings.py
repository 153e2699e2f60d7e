"""What a rule reports: a finding at a place in a file, with an optional fix.

Findings are plain data. A fix is described as a `FixSpec` (what to change, where, in terms of the
source positions the facts pass saw); `ckpt_doctor.check.fix` turns specs into LibCST transforms and text
edits only when fixes are asked for, so detection never imports LibCST's metadata machinery.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field


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
class FixSpec:
    """A fix, described abstractly; `ckpt_doctor.check.fix` knows how to apply each `kind`.

    kinds and their arguments:
      set_keyword      span: the call; name, value (source text), replace (bool: overwrite if present)
      set_keywords     span: the call; keywords ((name, value), ...), each set or overwritten
      set_dict_key     span: the dict literal; key, value (source text)
      insert_after     span: the statement to insert after; code (one statement, no indentation)
      insert_before    span: the statement to insert before; code
      rename_attribute span: the assignment statement; old, new (the assigned attribute)
      rename_method    span: the call; old, new (method name), keywords ((old, new), ...)
      rename_keywords  span: the call; renames ((old, new), ...)
    """

    kind: str
    span: Span
    args: tuple[tuple[str, object], ...] = ()
    applicability: Applicability = Applicability.SAFE
    message: str = ""
    imports: tuple[str, ...] = ()  # e.g. ("import functools",) added when missing

    def introduced_names(self) -> set[str]:
        """The names and keywords this fix writes into the script (`use_reentrant`, `enable_input_require_grads`)."""
        names: set[str] = set()
        for key, value in self.args:
            if key in ("name", "key", "new"):
                names.add(str(value))
            elif key == "keywords" and self.kind == "set_keywords":
                names |= {str(name) for name, _ in value}
            elif key in ("renames", "keywords"):
                names |= {str(new) for _, new in value}
            elif key == "code":
                names |= set(re.findall(r"[A-Za-z_]\w*", str(value)))
        return names

    def arg(self, name: str, default: object = None) -> object:
        for key, value in self.args:
            if key == name:
                return value
        return default


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
        "fix": None
        if fix is None
        else {
            "kind": fix.kind,
            "span": _span_to_list(fix.span),
            "args": [[k, _freeze(v)] for k, v in fix.args],
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
        fix=None
        if fix is None
        else FixSpec(
            kind=fix["kind"],
            span=_span_from_list(fix["span"]),
            args=tuple((k, _thaw(v)) for k, v in fix["args"]),
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
