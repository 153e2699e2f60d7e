"""The rule catalogue. Each rule is a small function of a `Context` that yields `Report`s.

```python
@rule("CKPT101", "checkpoint-use-reentrant-unset", Severity.WARNING, fix=Applicability.SAFE,
      summary="`checkpoint` called without an explicit `use_reentrant`")
def check(ctx):
    for call in ctx.training.torch_checkpoint_sites:
        ...
        yield Report(call.span, "message", fix=FixSpec(...))
```

Rule modules: `torch_checkpoint` (CKPT1xx), `huggingface` (CKPT2xx), `distributed` (CKPT3xx),
`memory` (CKPT4xx). The page of each rule is `rules/<CODE>.md`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterable, Iterator

from ckpt_doctor.config import Settings
from ckpt_doctor.analysis.facts import ScriptFacts
from ckpt_doctor.findings import Applicability, Finding, FixSpec, Severity, Span
from ckpt_doctor.analysis.training import Training
from ckpt_doctor.analysis.versions import TargetVersions

DOCS_URL = "https://github.com/ckpt-doctor/ckpt-doctor/blob/main/rules/{code}.md"


@dataclass
class Report:
    span: Span
    message: str
    fix: FixSpec | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Context:
    facts: ScriptFacts
    versions: TargetVersions
    settings: Settings
    path: str
    memo: dict = field(default_factory=dict)  # per-file results several rules share (e.g. the memory estimate)

    @cached_property
    def training(self) -> Training:
        return Training(self.facts, self.versions)


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: Severity
    summary: str
    fix: Applicability | None
    check: Callable[[Context], Iterable[Report]]

    @property
    def family(self) -> str:
        return self.code[:5]

    @property
    def url(self) -> str:
        return DOCS_URL.format(code=self.code)


REGISTRY: dict[str, Rule] = {}


def rule(code: str, name: str, severity: Severity, *, summary: str, fix: Applicability | None = None):
    def register(func: Callable[[Context], Iterable[Report]]) -> Callable[[Context], Iterable[Report]]:
        if code in REGISTRY:
            raise ValueError(f"rule {code} registered twice")
        REGISTRY[code] = Rule(code, name, severity, summary, fix, func)
        return func

    return register


def all_rules() -> list[Rule]:
    _load()
    return [REGISTRY[code] for code in sorted(REGISTRY)]


def get_rule(code: str) -> Rule | None:
    _load()
    return REGISTRY.get(code.upper())


def run_rules(ctx: Context, rules: Iterable[Rule]) -> Iterator[Finding]:
    for current in rules:
        for report in current.check(ctx):
            yield Finding(
                code=current.code,
                message=report.message,
                severity=current.severity,
                span=report.span,
                fix=report.fix,
                path=ctx.path,
                extra=report.extra,
            )


def _load() -> None:
    # every time, not "once the registry has entries": importing one rule module on its own (`estimate`
    # imports `rules.memory`) must not hide the others; a second import is a dictionary lookup
    from ckpt_doctor.rules import distributed, huggingface, memory, torch_checkpoint  # noqa: F401
