"""Checking one file: source -> facts -> findings, with noqa, per-file ignores and notebook cells.

`check_file` is what a worker process runs; it never raises for a bad file, it returns the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ckpt_doctor.analysis.api_era import version_ceilings
from ckpt_doctor.config import Settings
from ckpt_doctor.analysis.config_files import locate
from ckpt_doctor.analysis.facts import FactsError, ScriptFacts, extract
from ckpt_doctor.findings import Finding, Position, Span
from ckpt_doctor.rules import Context, all_rules, run_rules
from ckpt_doctor.analysis.source import NotPython, SourceError, SourceFile, read_source
from ckpt_doctor.analysis.versions import TargetVersions

# A file that mentions none of these cannot trigger any rule: it skips the parse.
PREFILTER = re.compile(r"checkpoint|use_cache|kbit|deepspeed|\btrl\b|TrainingArguments|find_unused|fsdp", re.IGNORECASE)
# The memory rules (CKPT4xx) look at any script that loads a model and trains it.
MEMORY_PREFILTER = re.compile(r"from_pretrained|Trainer\b|\.backward\(")
_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Za-z0-9]+(?:\s*,\s*[A-Za-z0-9]+)*))?", re.IGNORECASE)


@dataclass
class FileResult:
    path: str
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # one line, already naming the file
    source: SourceFile | None = None
    dependencies: list[str] = field(default_factory=list)  # other files the findings depend on


def check_file(path: str, settings: Settings) -> FileResult:
    try:
        source = read_source(path, settings.max_file_size)
    except NotPython:
        return FileResult(path)
    except SourceError as exc:
        return FileResult(path, error=str(exc))
    return check_source(source, settings)


def check_source(source: SourceFile, settings: Settings) -> FileResult:
    dependencies: list[str] = []
    try:
        findings = lint_text(source, settings, dependencies)
    except SyntaxError as exc:
        return FileResult(source.path, error=_syntax_error(source, exc), source=source)
    except FactsError as exc:
        return FileResult(source.path, error=f"{source.path}: {exc}", source=source)
    return FileResult(source.path, findings, source=source, dependencies=dependencies)


def lint_text(source: SourceFile, settings: Settings, dependencies: list[str] | None = None) -> list[Finding]:
    memory_rules = settings.enabled("CKPT401") or settings.enabled("CKPT404")
    if not PREFILTER.search(source.text) and not (memory_rules and MEMORY_PREFILTER.search(source.text)):
        if source.text.strip():
            compile_check(source)
        return []
    facts = extract(source.text, source.path)
    if dependencies is not None and source.path != "-":  # the settings files it names: the cache key holds them
        dependencies.extend(str(path) for path in (locate(source.path, name) for name, _ in facts.strings) if path)
    ctx = Context(facts, target_versions(source, facts, settings), settings, source.path)
    rules = [r for r in all_rules() if settings.enabled(r.code) and not settings.ignored_for(source.path, r.code)]
    findings = [f for f in run_rules(ctx, rules) if not _suppressed(facts.lines, f)]
    if source.cells is not None:
        findings = [f for f in (_to_cell(source, f) for f in findings) if f is not None]
    unique = {(f.code, f.span): f for f in findings}
    return sorted(unique.values(), key=lambda f: f.sort_key)


def target_versions(source: SourceFile, facts: ScriptFacts, settings: Settings) -> TargetVersions:
    """The versions a script targets: configuration, notebook %pip pins, project pins, API era, installed."""
    return TargetVersions(
        settings.target_versions, script=source.path, root=settings.root, ceilings=version_ceilings(facts), inline_pins=source.pip_pins()
    )


def compile_check(source: SourceFile) -> None:
    """A file the prefilter skips must still be reported if it is not Python at all."""
    import ast

    ast.parse(source.text, filename=source.path)


def _suppressed(lines: list[str], finding: Finding) -> bool:
    line = lines[finding.span.start.line - 1] if 0 < finding.span.start.line <= len(lines) else ""
    if "noqa" not in line.lower():
        return False
    for match in _NOQA.finditer(line):
        codes = match.group("codes")
        if not codes:
            return True
        if any(finding.code.startswith(code.strip().upper()) for code in codes.split(",")):
            return True
    return False


def _to_cell(source: SourceFile, finding: Finding) -> Finding | None:
    assert source.cells is not None
    start = source.cells.locate(finding.span.start.line)
    end = source.cells.locate(finding.span.end.line) or start
    if start is None:
        return None
    finding.cell = start[0]
    finding.cell_span = Span(Position(start[1], finding.span.start.column), Position(end[1], finding.span.end.column))
    finding.message = _LINE_REFERENCE.sub(lambda m: _cell_line(source, int(m.group(1))), finding.message)
    return finding


# Rules speak of "line N" in the joined notebook text; the user reads cells.
_LINE_REFERENCE = re.compile(r"\bline (\d+)\b")


def _cell_line(source: SourceFile, line: int) -> str:
    located = source.cells.locate(line) if source.cells else None
    return f"cell {located[0] + 1}, line {located[1]}" if located else f"line {line}"


def _syntax_error(source: SourceFile, exc: SyntaxError) -> str:
    line, column = exc.lineno or 0, (exc.offset or 0)
    where = f"{line}:{column}"
    if source.cells is not None:
        located = source.cells.locate(line)
        if located:
            where = f"cell {located[0] + 1}:{located[1]}:{column}"
    message = exc.msg or "invalid syntax"
    hint = ""
    if "print" in message or "Missing parentheses" in message or source.text.lstrip().startswith("print "):
        hint = " (Python 2 code?)"
    return f"{source.path}:{where}: cannot parse: {message}{hint}"
