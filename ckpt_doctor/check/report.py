"""Output formats for `check`: concise, full, json (ruff's shape), github; SARIF is `check.sarif`, the other
machine formats (json-lines, junit, gitlab, pylint, rdjson) `check.formats`."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Callable, TextIO

from ckpt_doctor import __version__
from ckpt_doctor.check import OUTPUT_FORMATS
from ckpt_doctor.findings import Applicability, Finding, Severity
from ckpt_doctor.rules import DOCS_URL, get_rule
from ckpt_doctor.check.runner import RunResult

FORMATS = OUTPUT_FORMATS  # concise, full, json, github here; sarif in check.sarif; the others in check.formats
# formats whose renderer needs the checked text (source lines, fix edits, fingerprints)
NEEDS_SOURCES = ("full", "json", "json-lines", "gitlab", "rdjson", "sarif")


def render(fmt: str, run: RunResult, out: TextIO, *, unsafe_fixes: bool = False, show_fix_hint: bool = True) -> None:
    renderer = RENDERERS.get(fmt)
    if renderer is None:  # imported when asked for: the default run does not pay for them
        if fmt == "sarif":
            from ckpt_doctor.check.sarif import render_sarif as renderer
        else:
            from ckpt_doctor.check.formats import RENDERERS as more

            renderer = more[fmt]
    renderer(run, out, unsafe_fixes, show_fix_hint)


def _where(finding: Finding) -> str:
    if finding.cell is not None and finding.cell_span is not None:
        return f"{finding.path}:cell {finding.cell + 1}:{finding.cell_span.start.line}:{finding.cell_span.start.column}"
    return f"{finding.path}:{finding.span.start.line}:{finding.span.start.column}"


def row(finding: Finding) -> tuple[int, int, int, int]:
    span = finding.cell_span if finding.cell_span is not None else finding.span
    return span.start.line, span.start.column, span.end.line, span.end.column


def _fixable(finding: Finding, unsafe: bool) -> bool:
    from ckpt_doctor.check.fix import applicable

    return applicable(finding.fix, unsafe)


def _concise(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    for finding in run.findings:
        out.write(f"{_where(finding)}: {finding.code} [{finding.severity}] {finding.message}\n")
    _summary(run, out, unsafe, hint)


def _full(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    sources = {r.path: r.source for r in run.files if r.source is not None}
    for finding in run.findings:
        out.write(f"{_where(finding)}: {finding.code} [{finding.severity}] {finding.message}\n")
        source = sources.get(finding.path)
        if source is not None:
            line = finding.span.start.line
            number = finding.cell_span.start.line if finding.cell_span else line
            text = source.line_text(line)
            gutter = len(str(number))
            out.write(f"{' ' * gutter} |\n{number} | {text}\n")
            start = finding.span.start.column
            end = finding.span.end.column if finding.span.end.line == line else len(text) + 1
            out.write(f"{' ' * gutter} | {' ' * (start - 1)}{'^' * max(1, end - start)}\n")
        if finding.fix is not None:
            kind = {Applicability.SAFE: "safe fix", Applicability.UNSAFE: "unsafe fix", Applicability.DISPLAY_ONLY: "suggestion"}[finding.fix.applicability]
            out.write(f"  = help: {finding.fix.message} ({kind})\n")
        rule = get_rule(finding.code)
        out.write(f"  = docs: ckpt-doctor rules {finding.code}" + (f"  ({rule.url})" if rule else "") + "\n\n")
    _summary(run, out, unsafe, hint)


def _summary(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    findings = run.findings
    if run.fixes_applied and not run.diffs:
        out.write(f"Fixed {run.fixes_applied} finding{'s' if run.fixes_applied != 1 else ''}.\n")
    if not findings:
        if not run.errors and not run.fixes_applied:
            out.write("All checks passed!\n")
        return
    counts = Counter(f.severity for f in findings)
    parts = [f"{counts[s]} {s}" + ("s" if counts[s] != 1 and s is not Severity.INFO else "") for s in (Severity.ERROR, Severity.WARNING, Severity.INFO) if counts[s]]
    out.write(f"Found {len(findings)} finding{'s' if len(findings) != 1 else ''} ({', '.join(parts)}).\n")
    if hint:
        safe = sum(1 for f in findings if _fixable(f, False))
        more = sum(1 for f in findings if _fixable(f, True)) - safe
        if safe:
            out.write(f"[*] {safe} fixable with the `--fix` option.\n")
        if more and not unsafe:
            out.write(f"{more} more fixable with `--fix --unsafe-fixes`.\n")


def relative_path(path: str) -> str:
    """The path as CI tools want it: relative to the working directory (the project root in CI), `/`-separated."""
    relative = os.path.relpath(path) if not path.startswith("..") else path
    return relative.replace(os.sep, "/")


def fingerprint(finding: Finding, source_line: str, occurrence: int = 0) -> str:
    """A hash that stays the same when the flagged code moves to another line: the code, the path and the flagged
    text with its whitespace normalized (the expression when it is on one line, else its first line), and which
    occurrence of that text in the file it is (two identical flagged lines get two fingerprints)."""
    import hashlib

    span = finding.span
    text = source_line[span.start.column - 1 : span.end.column - 1] if span.start.line == span.end.line else source_line
    normalized = " ".join((text.strip() or source_line.strip()).split())
    key = "\0".join((finding.code, relative_path(finding.path), normalized, str(occurrence)))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def fingerprints(run: RunResult) -> dict[int, str]:
    """`fingerprint` of each finding (id(finding) -> hash), identical flagged texts of a file numbered in order."""
    lines = {r.path: r.source for r in run.files if r.source is not None}
    seen: Counter = Counter()
    out = {}
    for finding in run.findings:
        source = lines.get(finding.path)
        line = source.line_text(finding.span.start.line) if source is not None else ""
        base = fingerprint(finding, line)
        out[id(finding)] = fingerprint(finding, line, seen[base]) if seen[base] else base
        seen[base] += 1
    return out


def edits_by_finding(run: RunResult) -> dict[int, list[dict]]:
    """Text edits of every fixable finding, each file parsed once (id(finding) -> edits)."""
    from ckpt_doctor.check.fix import edits_for

    out: dict[int, list[dict]] = {}
    for result in run.files:
        source = result.source
        fixable = [f for f in result.findings if f.fix is not None and f.fix.applicability is not Applicability.DISPLAY_ONLY]
        if source is None or not fixable:
            continue
        for finding, edits in zip(fixable, edits_for(source.text, [f.fix for f in fixable])):
            out[id(finding)] = [e for e in (_edit_dict(source, *edit) for edit in edits) if e is not None]
            if len(out[id(finding)]) != len(edits):
                out[id(finding)] = []  # an edit across notebook cells cannot be expressed
    return out


def _edit_dict(source, content, start, end) -> dict | None:
    if source.cells is not None:
        start_cell, end_cell = source.cells.locate(start.line), source.cells.locate(end.line)
        if not start_cell or not end_cell or start_cell[0] != end_cell[0]:
            return None
        start = type(start)(start_cell[1], start.column)
        end = type(end)(end_cell[1], end.column)
    return {"content": content, "location": {"row": start.line, "column": start.column}, "end_location": {"row": end.line, "column": end.column}}


def json_objects(run: RunResult) -> list[dict]:
    edits = edits_by_finding(run)
    objects = []
    for finding in run.findings:
        start_row, start_col, end_row, end_col = row(finding)
        fix = None
        if finding.fix is not None:
            fix = {"applicability": str(finding.fix.applicability), "message": finding.fix.message, "edits": edits.get(id(finding), [])}
        objects.append(
            {
                "cell": None if finding.cell is None else finding.cell + 1,
                "code": finding.code,
                # the options the finding needs (`[{"option": "--use_lora", "value": true, "test": "args.use_lora"}]`)
                "condition": finding.condition,
                "end_location": {"row": end_row, "column": end_col},
                "filename": os.path.abspath(finding.path),
                "fix": fix,
                "location": {"row": start_row, "column": start_col},
                "message": finding.message,
                "noqa_row": start_row,
                # the other places of the file the finding is about (scripts; a notebook's are left out)
                "related": [] if finding.cell is not None else [
                    {"location": {"row": r.span.start.line, "column": r.span.start.column},
                     "end_location": {"row": r.span.end.line, "column": r.span.end.column}, "message": r.message}
                    for r in finding.related],
                "severity": str(finding.severity),
                "url": DOCS_URL.format(code=finding.code),
            }
        )
    return objects


def _json(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    json.dump(json_objects(run), out, indent=2)
    out.write("\n")


_GITHUB_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _github_escape(text: str, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def _github(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    for finding in run.findings:
        start_row, start_col, end_row, end_col = row(finding)
        title = _github_escape(f"ckpt-doctor ({finding.code})", True)
        where = _where(finding)
        out.write(
            f"::{_GITHUB_LEVEL[finding.severity]} title={title},file={_github_escape(finding.path, True)},"
            f"line={start_row},col={start_col},endLine={end_row},endColumn={end_col}::"
            f"{_github_escape(where)}: {finding.code} {_github_escape(finding.message)}\n"
        )
    for error in run.errors:
        path = error.split(":", 1)[0]
        out.write(f"::error title=ckpt-doctor,file={_github_escape(path, True)}::{_github_escape(error)}\n")


RENDERERS: dict[str, Callable[[RunResult, TextIO, bool, bool], None]] = {
    "concise": _concise,
    "full": _full,
    "json": _json,
    "github": _github,
}
