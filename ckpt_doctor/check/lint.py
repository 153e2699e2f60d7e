"""Checking one file: source -> facts -> findings, with noqa (`check.noqa`), per-file ignores and notebook cells.

`check_file` is what a worker process runs; it never raises for a bad file, it returns the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ckpt_doctor.analysis import Analysis, ConfigAnalysis, FactsError, analyze, analyze_config, analyze_launcher, launched_scripts
from ckpt_doctor.analysis.config_files import shown_path
from ckpt_doctor.analysis.launchers import LAUNCHER_SUFFIXES, is_makefile
from ckpt_doctor.analysis.config_document import CONFIG_SUFFIXES, ConfigError
from ckpt_doctor.analysis.frameworks import recognisable
from ckpt_doctor.analysis.config_files import NoFiles
from ckpt_doctor.analysis.parse import parse_module
from ckpt_doctor.analysis.project import Project
from ckpt_doctor.check import noqa
from ckpt_doctor.config import Settings
from ckpt_doctor.findings import Finding, Position, Span
from ckpt_doctor.rules import Context, all_rules, run_rules
from ckpt_doctor.analysis.source import NotPython, SourceError, SourceFile, read_source

# A file that mentions none of these cannot trigger any rule: it skips the parse.
PREFILTER = re.compile(r"checkpoint|use_cache|kbit|deepspeed|\btrl\b|TrainingArguments|find_unused|fsdp|activation_memory_budget|compute_metrics|vllm", re.IGNORECASE)
# The memory rules (CKPT4xx) look at any script that loads a model and trains it.
MEMORY_PREFILTER = re.compile(r"from_pretrained|Trainer\b|\.backward\(|\.eval\(\)")  # CKPT407: an evaluation another module runs
MEMORY_RULES = ("CKPT401", "CKPT404", "CKPT407")  # those of them that need no keyword of PREFILTER


@dataclass
class FileResult:
    path: str
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # one line, already naming the file
    source: SourceFile | None = None
    dependencies: list[str] = field(default_factory=list)  # other files the findings depend on
    suppressed: list[Finding] = field(default_factory=list)  # findings a noqa comment hides (SARIF lists them)


def check_file(path: str, settings: Settings) -> FileResult:
    source = read_checked(path, settings)
    return source if isinstance(source, FileResult) else check_source(source, settings)


def read_checked(path: str, settings: Settings) -> SourceFile | FileResult:
    """The file's source, or the result that stands for it: nothing to check (not Python, or a YAML / JSON / shell
    file too big or binary to be a training config: skipped as any file of no framework), or its error."""
    try:
        return read_source(path, settings.max_file_size)
    except NotPython:
        return FileResult(path)
    except SourceError as exc:
        return FileResult(path) if is_config(path) else FileResult(path, error=str(exc))


def check_source(source: SourceFile, settings: Settings) -> FileResult:
    dependencies: list[str] = []
    suppressed: list[Finding] = []
    try:
        lint = lint_text if is_script(source) else lint_config
        findings = lint(source, settings, dependencies, suppressed)
    except SyntaxError as exc:
        if exc.filename not in (source.path, "<unknown>", None):
            raise  # not the file's: a module of the tool itself that cannot be imported (an internal error)
        return FileResult(source.path, error=_syntax_error(source, exc), source=source)
    except ConfigError as exc:
        if not recognisable(source.text):  # a Helm template, a YAML of another tool: not ours to judge
            return FileResult(source.path, source=source)
        return FileResult(source.path, error=f"{source.path}: {exc}", source=source)
    except FactsError as exc:
        return FileResult(source.path, error=f"{source.path}: {exc}", source=source)
    return FileResult(source.path, findings, source=source, dependencies=dependencies, suppressed=suppressed)


def lint_text(source: SourceFile, settings: Settings, dependencies: list[str] | None = None,
              suppressed: list[Finding] | None = None) -> list[Finding]:
    """The findings of a script or notebook; those a noqa comment hides go to `suppressed` when it is given."""
    memory_rules = any(settings.enabled(code) for code in MEMORY_RULES)
    if not PREFILTER.search(source.text) and not (memory_rules and MEMORY_PREFILTER.search(source.text)) and not _imports_siblings(source):
        if source.text.strip():
            compile_check(source)
        return _apply_noqa(source, [], settings, suppressed)  # a `# noqa: CKPT101` here suppresses nothing
    analysis = analyze(source, settings)
    findings = _apply_noqa(source, _rule_findings(analysis, settings), settings, suppressed)
    if dependencies is not None:  # the settings files it names: the cache key holds them
        dependencies.extend(analysis.dependencies)
    return findings


def _rule_findings(analysis: Analysis | ConfigAnalysis, settings: Settings) -> list[Finding]:
    rules = [r for r in all_rules() if settings.enabled(r.code) and not settings.ignored_for(analysis.source.path, r.code)]
    return list(run_rules(Context(analysis, settings), rules))


def _apply_noqa(source: SourceFile, findings: list[Finding], settings: Settings, suppressed: list[Finding] | None) -> list[Finding]:
    """Line and file noqa comments applied (with CKPT001 on the codes that suppress nothing), notebook findings
    placed in their cells, duplicates dropped, in order."""
    if "noqa" not in source.text.lower():
        result = noqa.Suppression(findings, [], [])
    else:
        enabled = lambda code: settings.enabled(code) and not settings.ignored_for(source.path, code)  # noqa: E731
        result = noqa.apply(source.text.splitlines(), findings, path=source.path, enabled=enabled)
    if suppressed is not None:
        suppressed.extend(_placed(source, result.suppressed))
    return _placed(source, result.kept + result.unused)


def _placed(source: SourceFile, findings: list[Finding]) -> list[Finding]:
    if source.cells is not None:
        findings = [f for f in (_to_cell(source, f) for f in findings) if f is not None]
    unique = {(f.code, f.span): f for f in findings}
    return sorted(unique.values(), key=lambda f: f.sort_key)


def _unsuppressed(analysis: Analysis, settings: Settings) -> list[Finding]:
    return noqa.apply(analysis.source.text.splitlines(), _rule_findings(analysis, settings), path=analysis.source.path,
                      enabled=lambda code: code != noqa.UNUSED_NOQA).kept


def is_config(path: str) -> bool:
    """A YAML / JSON settings file, or a launcher (shell script, Makefile): read as the runs they describe."""
    return path.endswith(CONFIG_SUFFIXES + LAUNCHER_SUFFIXES) or is_makefile(path)


def is_script(source: SourceFile) -> bool:
    """Python code (a script or notebook), not a framework config or a launcher."""
    return not (is_config(source.path) or _shell_script(source))


def _shell_script(source: SourceFile) -> bool:
    return is_shell_script(source.path, source.text)


def is_shell_script(path: str, text: str) -> bool:
    """A launcher without a suffix (`run`, `train`): a shell's `#!` line. pre-commit passes these as shell files."""
    first = text.split("\n", 1)[0]
    return not path.endswith((".py", ".pyi", ".ipynb")) and first.startswith("#!") and re.search(r"\b(ba|z|da)?sh\b", first) is not None


def lint_config(source: SourceFile, settings: Settings, dependencies: list[str] | None = None,
                suppressed: list[Finding] | None = None) -> list[Finding]:
    """A framework's config, or the framework launches of a shell script; any other file of these kinds is skipped."""
    if source.path.endswith(CONFIG_SUFFIXES):
        analysis = analyze_config(source, settings)
        analyses = [analysis] if analysis is not None else []
    else:
        analyses = analyze_launcher(source, settings)
    findings = [] if source.path.endswith(CONFIG_SUFFIXES) else _launched_script_findings(source, settings, dependencies)
    for analysis in analyses:
        findings += _rule_findings(analysis, settings)
        if dependencies is not None:
            dependencies.extend(analysis.dependencies)
    return _apply_noqa(source, findings, settings, suppressed)


def _launched_script_findings(source: SourceFile, settings: Settings, dependencies: list[str] | None) -> list[Finding]:
    """The findings on a script of the project that a launch line of `source` causes (they are not there when the
    script runs without a launcher): reported at the launcher's line that gives the value, where the user changes it."""
    found: list[Finding] = []
    for script, launch in launched_scripts(source):
        try:
            script_source = read_source(script, settings.max_file_size)
            launched = analyze(script_source, settings, launches=[launch])
            alone = analyze(script_source, settings, launches=[])
        except (SourceError, SyntaxError, FactsError):
            continue  # the script's own check reports it
        before = {(f.code, f.span.start.line) for f in _unsuppressed(alone, settings)}
        cited = re.compile(rf"{re.escape(launch.file)}:(\d+)")
        for finding in _unsuppressed(launched, settings):
            if (finding.code, finding.span.start.line) in before:
                continue
            line = int(match.group(1)) if (match := cited.search(finding.message)) else launch.line
            found.append(Finding(finding.code, f"{shown_path(script)}:{finding.span.start.line}: {finding.message}", finding.severity,
                                 Span(Position(line, 1), Position(line, 1)), path=source.path, condition=finding.condition))
        if dependencies is not None:
            dependencies.extend([str(script), *launched.dependencies])
    return found


def _imports_siblings(source: SourceFile) -> bool:
    """Whether the script imports a module of its own project (whose calls the analysis follows): a relative
    import, or one the project's module resolution finds."""
    if _RELATIVE_IMPORT.search(source.text):
        return True
    if source.path == "-":
        return False
    project = Project(source.path, NoFiles())
    return any(project.has_module(name) for name in set(_ABSOLUTE_IMPORT.findall(source.text)))


_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.", re.MULTILINE)
_ABSOLUTE_IMPORT = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_][\w.]*)", re.MULTILINE)


def compile_check(source: SourceFile) -> None:
    """A file the prefilter skips must still be reported if it is not Python (of any version) at all."""
    parse_module(source.text, source.path)


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
