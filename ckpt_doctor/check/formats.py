"""Machine formats for CI tools: json-lines, junit, gitlab (Code Quality), pylint and rdjson (reviewdog).

Each renderer takes the run and writes one document; the shapes follow what the consuming tool reads (see
tests/test_output_formats.py, which checks each against a schema or a parser of that tool's shape).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TextIO
from xml.etree import ElementTree

from ckpt_doctor.check.report import edits_by_finding, fingerprints, json_objects, relative_path, row
from ckpt_doctor.check.runner import RunResult
from ckpt_doctor.findings import Severity
from ckpt_doctor.rules import DOCS_URL, get_rule


def _json_lines(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    """One `json` object per line (ruff's json-lines)."""
    for item in json_objects(run):
        out.write(json.dumps(item) + "\n")


def _junit(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    """JUnit XML as ruff writes it: a test suite per file, a failing test case per finding, an erroring one per
    file that could not be checked."""
    by_path: dict[str, list] = defaultdict(list)
    for finding in run.findings:
        by_path[finding.path].append(finding)
    errors = {e.split(":", 1)[0]: e for e in run.errors}
    root = ElementTree.Element("testsuites", name="ckpt-doctor", tests=str(len(run.findings) + len(errors)),
                               failures=str(len(run.findings)), errors=str(len(errors)))
    for path in sorted(set(by_path) | set(errors)):
        findings = by_path.get(path, [])
        suite = ElementTree.SubElement(root, "testsuite", name=path, tests=str(len(findings) + (path in errors)),
                                       failures=str(len(findings)), errors=str(int(path in errors)))
        for finding in findings:
            start_row, start_col, _, _ = row(finding)
            case = ElementTree.SubElement(suite, "testcase", name=f"org.ckpt-doctor.{finding.code}", classname=path,
                                          file=path, line=str(start_row))
            failure = ElementTree.SubElement(case, "failure", message=finding.message, type=str(finding.severity))
            failure.text = f"line {start_row}, col {start_col}, {finding.message}"
        if path in errors:
            case = ElementTree.SubElement(suite, "testcase", name="org.ckpt-doctor.check", classname=path, file=path)
            ElementTree.SubElement(case, "error", message=errors[path], type="error")
    if not by_path and not errors:
        suite = ElementTree.SubElement(root, "testsuite", name="ckpt-doctor", tests="1", failures="0", errors="0")
        ElementTree.SubElement(suite, "testcase", name="No findings", classname="ckpt-doctor")
    ElementTree.indent(root)
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n")


_GITLAB_SEVERITY = {Severity.ERROR: "major", Severity.WARNING: "minor", Severity.INFO: "info"}


def _gitlab(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    """GitLab Code Quality: a JSON array of CodeClimate-style issues; the fingerprint is the line-move-stable
    hash SARIF uses, so an issue is "unchanged" in a merge request whose lines above it moved."""
    hashes = fingerprints(run)
    issues = []
    for finding in run.findings:
        start_row, start_col, end_row, _ = row(finding)
        issues.append({
            "type": "issue",
            "check_name": finding.code,
            "description": f"{finding.code}: {finding.message}",
            "categories": ["Bug Risk"],
            "severity": _GITLAB_SEVERITY[finding.severity],
            "fingerprint": hashes[id(finding)],
            "location": {"path": relative_path(finding.path), "lines": {"begin": start_row, "end": end_row}},
        })
    json.dump(issues, out, indent=2)
    out.write("\n")


def _pylint(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    """`path:line:column: CODE: message (name)`, the shape pylint's parseable output gives and its parsers read."""
    for finding in run.findings:
        start_row, start_col, _, _ = row(finding)
        rule = get_rule(finding.code)
        name = f" ({rule.name})" if rule else ""
        message = " ".join(finding.message.split())  # one line per finding
        out.write(f"{finding.path}:{start_row}:{start_col}: {finding.code}: {message}{name}\n")


_RDJSON_SEVERITY = {Severity.ERROR: "ERROR", Severity.WARNING: "WARNING", Severity.INFO: "INFO"}


def _rdjson(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    """reviewdog's Diagnostic Format (rdjson: `DiagnosticResult` of reviewdog's proto): positions 1-based, the
    fix edits as `suggestions` (reviewdog posts them as suggested changes)."""
    edits = edits_by_finding(run)
    sources = {r.path: r.source for r in run.files if r.source is not None}
    diagnostics = []
    for finding in run.findings:
        start_row, start_col, end_row, end_col = row(finding)
        source = sources.get(finding.path) if finding.cell is None else None

        def position(line: int, column: int) -> dict:
            """rdjson columns count UTF-8 bytes, ours characters."""
            text = source.line_text(line) if source is not None else ""
            return {"line": line, "column": len(text[: column - 1].encode("utf-8")) + 1 + max(0, column - 1 - len(text))}

        diagnostic = {
            "message": finding.message,
            "location": {
                "path": relative_path(finding.path),
                "range": {"start": position(start_row, start_col), "end": position(end_row, end_col)},
            },
            "severity": _RDJSON_SEVERITY[finding.severity],
            "code": {"value": finding.code, "url": DOCS_URL.format(code=finding.code)},
        }
        suggestions = [
            {"range": {"start": position(e["location"]["row"], e["location"]["column"]),
                       "end": position(e["end_location"]["row"], e["end_location"]["column"])},
             "text": e["content"]}
            for e in (edits.get(id(finding)) or [] if finding.cell is None else [])
        ]
        if suggestions:
            diagnostic["suggestions"] = suggestions
        diagnostics.append(diagnostic)
    document = {"source": {"name": "ckpt-doctor", "url": "https://github.com/ckpt-doctor/ckpt-doctor"}, "diagnostics": diagnostics}
    json.dump(document, out, indent=2)
    out.write("\n")


RENDERERS = {"json-lines": _json_lines, "junit": _junit, "gitlab": _gitlab, "pylint": _pylint, "rdjson": _rdjson}
