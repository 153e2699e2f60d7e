"""SARIF 2.1.0 for code scanning: results with stable `partialFingerprints`, `fixes` from the findings' edits,
`relatedLocations` for findings about two places, and the findings a noqa comment hides, marked `suppressions`."""

from __future__ import annotations

import json
from typing import TextIO

from ckpt_doctor import __version__
from ckpt_doctor.check.lint import FileResult
from ckpt_doctor.check.report import edits_by_finding, fingerprints, relative_path, row
from ckpt_doctor.check.runner import RunResult
from ckpt_doctor.findings import Finding, Severity, Span

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT_KEY = "ckptDoctorLineHash/v1"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def uri(path: str) -> str:
    """SARIF §3.10.2: `artifactLocation.uri` is a URI reference, so a space or `%` is percent-encoded."""
    from urllib.parse import quote

    return quote(relative_path(path))


def _region(span: Span) -> dict:
    return {"startLine": span.start.line, "startColumn": span.start.column, "endLine": span.end.line, "endColumn": span.end.column}


def _location(path: str, region: dict) -> dict:
    return {"physicalLocation": {"artifactLocation": {"uri": uri(path)}, "region": region}}


def sarif_document(run: RunResult) -> dict:
    from ckpt_doctor.rules import all_rules

    rules = all_rules()
    index = {r.code: i for i, r in enumerate(rules)}
    # suppressed findings are results too (GitHub shows them as dismissed); they live in a run of their own
    shown = RunResult(run.files + [FileResult(r.path, r.suppressed, source=r.source) for r in run.files if r.suppressed])
    hashes = fingerprints(shown)
    edits = edits_by_finding(shown)
    suppressed = {id(f) for f in run.suppressed}
    results = []
    for finding in sorted(shown.findings, key=lambda f: f.sort_key):
        start_row, start_col, end_row, end_col = row(finding)
        result = {
            "ruleId": finding.code,
            "ruleIndex": index.get(finding.code, 0),
            "level": _LEVEL[finding.severity],
            "message": {"text": finding.message},
            "locations": [_location(finding.path, {"startLine": start_row, "startColumn": start_col, "endLine": end_row, "endColumn": end_col})],
            "partialFingerprints": {FINGERPRINT_KEY: hashes[id(finding)]},
        }
        if finding.cell is not None:
            result["properties"] = {"cell": finding.cell + 1}
        else:  # lines of a notebook's joined text are no place in the .ipynb file
            if finding.related:
                result["relatedLocations"] = [
                    {"id": number, **_location(finding.path, _region(related.span)), "message": {"text": related.message}}
                    for number, related in enumerate(finding.related, start=1)
                ]
            fix = _fix(finding, edits.get(id(finding)))
            if fix is not None:
                result["fixes"] = [fix]
        if id(finding) in suppressed:
            result["suppressions"] = [{"kind": "inSource"}]
        results.append(result)
    notifications = [{"level": "error", "message": {"text": error}} for error in run.errors]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "ckpt-doctor",
                        "version": __version__,
                        "informationUri": "https://github.com/ckpt-doctor/ckpt-doctor",
                        "rules": [
                            {
                                "id": r.code,
                                "name": r.name,
                                "shortDescription": {"text": r.summary},
                                "helpUri": r.url,
                                "defaultConfiguration": {"level": _LEVEL[r.severity]},
                            }
                            for r in rules
                        ],
                    }
                },
                "invocations": [{"executionSuccessful": not run.errors, "toolExecutionNotifications": notifications}],
                "results": results,
            }
        ],
    }


def _fix(finding: Finding, edits: list[dict] | None) -> dict | None:
    """SARIF §3.55: a fix is a description and the changes to each file, as regions replaced by text."""
    if not edits or finding.fix is None:
        return None
    replacements = [
        {
            "deletedRegion": {"startLine": e["location"]["row"], "startColumn": e["location"]["column"],
                              "endLine": e["end_location"]["row"], "endColumn": e["end_location"]["column"]},
            "insertedContent": {"text": e["content"]},
        }
        for e in edits
    ]
    description = f"{finding.fix.message} ({finding.fix.applicability} fix)" if finding.fix.message else f"{finding.fix.applicability} fix"
    return {"description": {"text": description}, "artifactChanges": [{"artifactLocation": {"uri": uri(finding.path)}, "replacements": replacements}]}


def render_sarif(run: RunResult, out: TextIO, unsafe: bool, hint: bool) -> None:
    json.dump(sarif_document(run), out, indent=2)
    out.write("\n")
