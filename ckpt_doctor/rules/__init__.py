"""The rule catalogue. Each rule is a small function of a `Context` that yields `Report`s.

```python
@rule("CKPT101", "checkpoint-use-reentrant-unset", Severity.WARNING, fix=Applicability.SAFE,
      summary="`checkpoint` called without an explicit `use_reentrant`")
def check(ctx):
    for call in ctx.training.torch_checkpoint_sites:
        ...
        yield Report(call.span, "message", fix=FixSpec(...))
```

Rule modules: `suppression` (CKPT001, run by `check.noqa` after the others), `torch_checkpoint` (CKPT1xx), `huggingface` (CKPT2xx), `distributed` (CKPT3xx),
`memory` (CKPT4xx). The page of each rule is `rules/<CODE>.md`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

from ckpt_doctor.analysis.launchers import Launch, launch_for
from ckpt_doctor.analysis.conditions import ALWAYS, Condition
from ckpt_doctor.config import Settings
from ckpt_doctor.analysis.facts import ScriptFacts
from ckpt_doctor.analysis.library import FIX_NAMES_SINCE
from ckpt_doctor.findings import Applicability, Finding, FixSpec, Related, Severity, Span
from ckpt_doctor.analysis import Analysis, ConfigAnalysis, analyze
from ckpt_doctor.analysis.training import Training
from ckpt_doctor.analysis.versions import TargetVersions

DOCS_URL = "https://github.com/ckpt-doctor/ckpt-doctor/blob/main/rules/{code}.md"


@dataclass
class Report:
    span: Span
    message: str
    fix: FixSpec | None = None
    extra: dict = field(default_factory=dict)
    condition: Condition = ALWAYS  # the path on which the facts behind it all happen
    related: list[Related] = field(default_factory=list)  # other places of this file the finding is about


@dataclass
class Context:
    """What a rule sees: the analysis of one file, and the tool's configuration."""

    analysis: Analysis | ConfigAnalysis
    config: Settings
    memo: dict = field(default_factory=dict)  # per-file results several rules share (e.g. the memory estimate)

    @property
    def path(self) -> str:
        return self.analysis.source.path

    @property
    def kind(self) -> str:
        """What the file is: a training "script", or a framework "config"."""
        return "config" if isinstance(self.analysis, ConfigAnalysis) else "script"

    @property
    def facts(self) -> ScriptFacts:
        return self.analysis.facts

    @property
    def versions(self) -> TargetVersions:
        return self.analysis.versions

    @property
    def training(self) -> Training:
        return self.analysis.training

    def run_by(self, launch: Launch) -> "Context":
        """This script as `launch` alone runs it: its options, and the configs and files it names (memoised)."""
        key = ("run by", launch.where)
        if key not in self.memo:
            self.memo[key] = Context(analyze(self.analysis.source, self.config, launches=[launch]), self.config)
        return self.memo[key]


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: Severity
    summary: str
    fix: Applicability | None
    checks: dict[str, Callable[[Context], Iterable[Report]]]  # input kind ("script", "config") -> its check

    def check(self, ctx: Context) -> Iterable[Report]:
        found = self.checks.get(ctx.kind)
        return found(ctx) if found is not None else ()

    @property
    def family(self) -> str:
        return self.code[:5]

    @property
    def url(self) -> str:
        return DOCS_URL.format(code=self.code)


REGISTRY: dict[str, Rule] = {}


def rule(code: str, name: str, severity: Severity, *, summary: str, fix: Applicability | None = None, inputs: tuple[str, ...] = ("script",)):
    """Register a rule; `inputs`: what it reads, training scripts ("script") or framework configs ("config")."""
    def register(func: Callable[[Context], Iterable[Report]]) -> Callable[[Context], Iterable[Report]]:
        if code in REGISTRY:
            raise ValueError(f"rule {code} registered twice")
        REGISTRY[code] = Rule(code, name, severity, summary, fix, {kind: func for kind in inputs})
        return func

    return register


def config_check(code: str):
    """The same rule (one code, one page), as it reads a framework config."""
    def register(func: Callable[[Context], Iterable[Report]]) -> Callable[[Context], Iterable[Report]]:
        REGISTRY[code].checks["config"] = func
        return func

    return register


def all_rules() -> list[Rule]:
    _load()
    return [REGISTRY[code] for code in sorted(REGISTRY)]


def get_rule(code: str) -> Rule | None:
    _load()
    return REGISTRY.get(code.upper())


# the rules whose verdict turns on how many processes run the script, and under which runner (DDP, DeepSpeed)
_TOPOLOGY_RULES = ("CKPT111", "CKPT3")


def run_rules(ctx: Context, rules: Iterable[Rule]) -> Iterator[Finding]:
    rules = list(rules)
    seen: set[tuple[str, Span]] = set()
    for finding in _run_rules(ctx, rules):
        seen.add((finding.code, finding.span))
        yield finding
    other = _other_topology(ctx)
    if other is not None:
        # the facts were read as the first launch runs the script; a launcher that runs it over another number of
        # processes (`accelerate launch` on two GPUs, the first one `python`) is a run of its own for these rules
        for finding in _run_rules(ctx.run_by(other), [r for r in rules if r.code.startswith(_TOPOLOGY_RULES)]):
            if (finding.code, finding.span) not in seen:
                yield _as_run_by(finding, other)


def _other_topology(ctx: Context) -> Launch | None:
    """The first launch that runs the script on another topology than the first launch: several processes against
    one, or another runner over several."""
    launches = ctx.facts.launches if ctx.kind == "script" else []
    if len(launches) < 2:
        return None

    def topology(launch: Launch) -> tuple:
        many = (launch.processes or 1) > 1
        return (many, launch.runner if many else None)

    first = topology(launches[0])
    return next((l for l in launches[1:] if l.processes is not None and topology(l) != first), None)


def _as_run_by(finding: Finding, launch: Launch) -> Finding:
    said = f"as {launch.where} runs it"
    if finding.message.endswith(")") and "(only " in finding.message:
        return replace(finding, message=f"{finding.message[:-1]}, {said})")
    return replace(finding, message=f"{finding.message} (only {said})")


def _run_rules(ctx: Context, rules: Iterable[Rule]) -> Iterator[Finding]:
    for current in rules:
        for report in current.check(ctx):
            needs = report.condition.describe()
            launches = ctx.facts.launches if ctx.kind == "script" else []
            if launches and needs:
                # the project's launchers say how it runs: a finding none of them reaches is about a run nobody makes
                launch = launch_for(launches, report.condition.needed)
                if launch is None:
                    continue
                if launch is not launches[0]:
                    # the facts were read as the first launch runs the script (its DeepSpeed config, ...): the finding
                    # stands only if that launch's own run gives it too
                    if not any(other.span == report.span for other in current.check(ctx.run_by(launch))):
                        continue
                    needs += f", as {launch.where} runs it"
            yield Finding(
                code=current.code,
                message=f"{report.message} (only {needs})" if needs else report.message,
                severity=current.severity,
                span=report.span,
                fix=_within_versions(report.fix, ctx.versions),
                path=ctx.path,
                extra=report.extra,
                condition=report.condition.as_list(),
                related=list(report.related),
            )


def _within_versions(fix: FixSpec | None, versions: TargetVersions) -> FixSpec | None:
    """A safe fix stays safe only if every name it writes exists in the lowest release the project allows: a
    rename to `activation_checkpointing_enable` on a project that may run transformers 4 would break it."""
    if fix is None or fix.applicability is not Applicability.SAFE:
        return fix
    for name in fix.introduced_names():
        package, since = FIX_NAMES_SINCE.get(name, (None, None))
        if package is not None and versions.at_least(package, since) is not True:
            return replace(fix, applicability=Applicability.UNSAFE)
    return fix


def _load() -> None:
    # every time, not "once the registry has entries": importing one rule module on its own (`estimate`
    # imports `rules.memory`) must not hide the others; a second import is a dictionary lookup
    from ckpt_doctor.rules import adapters, distributed, evaluation, huggingface, memory, suppression, torch_checkpoint  # noqa: F401
    from ckpt_doctor.rules import configs  # noqa: F401  (after the others: it adds config checks to their rules)
