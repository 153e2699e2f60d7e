"""Findings as LSP diagnostics: the rule's code linked to its page, the severity, the place."""

from __future__ import annotations

from lsprotocol import types

from ckpt_doctor.findings import Finding, Severity
from ckpt_doctor.rules import get_rule
from ckpt_doctor.server.documents import Checked
from ckpt_doctor.server.positions import Point, finding_range, split_lines

SOURCE = "ckpt-doctor"
SEVERITIES = {
    Severity.ERROR: types.DiagnosticSeverity.Error,
    Severity.WARNING: types.DiagnosticSeverity.Warning,
    Severity.INFO: types.DiagnosticSeverity.Information,
}


def diagnostics(checked: Checked, to_client) -> list[types.Diagnostic]:
    """`to_client(lines, start, end)`: a range in the client's units from code-point points."""
    out = []
    if checked.problem is not None:
        out.append(_problem(checked.lines, checked.problem.at or (0, 0), checked.problem.message, to_client))
    for index, finding in enumerate(checked.findings):
        where = finding_range(checked.lines, finding, checked.notebook)
        if where is not None:
            out.append(diagnostic(finding, to_client(checked.lines, *where), index))
    return out


def cell_diagnostics(checked: Checked, cell_texts: list[str], to_client) -> list[list[types.Diagnostic]]:
    """A notebook document's diagnostics, cell by cell (`cell_texts`: every cell's text, in order)."""
    from ckpt_doctor.server.notebooks import cell_range

    lines = [split_lines(text) for text in cell_texts]
    out: list[list[types.Diagnostic]] = [[] for _ in cell_texts]
    if checked.problem is not None:
        cell, at = checked.problem.cell or (0, (0, 0))
        if cell < len(out):
            out[cell].append(_problem(lines[cell], at, checked.problem.message, to_client))
    for index, finding in enumerate(checked.findings):
        if finding.cell is not None and finding.cell < len(out) and (where := cell_range(cell_texts[finding.cell], finding)):
            out[finding.cell].append(diagnostic(finding, to_client(lines[finding.cell], *where), index))
    return out


def _problem(lines: list[str], at: Point, message: str, to_client) -> types.Diagnostic:
    """A file that could not be checked: one error, from the place named to the end of its line."""
    end = (at[0], len(lines[at[0]]) if at[0] < len(lines) else 0)
    return types.Diagnostic(range=to_client(lines, at, max(end, at)), message=message, severity=types.DiagnosticSeverity.Error,
                            source=SOURCE)


def diagnostic(finding: Finding, where: types.Range, index: int) -> types.Diagnostic:
    rule = get_rule(finding.code)
    return types.Diagnostic(
        range=where,
        message=finding.message,
        severity=SEVERITIES[finding.severity],
        code=finding.code,
        code_description=types.CodeDescription(href=rule.url) if rule is not None else None,
        source=SOURCE,
        tags=[types.DiagnosticTag.Deprecated] if rule is not None and "deprecated" in rule.name else None,
        data={"finding": index},  # the code action request hands it back: which finding a fix is for
    )


def finding_index(diagnostic: types.Diagnostic) -> int | None:
    data = diagnostic.data
    if isinstance(data, dict) and isinstance(data.get("finding"), int):
        return data["finding"]
    return None


def client_range(codec):
    """A `to_client` for `diagnostics` with pygls' position codec (UTF-16, UTF-8 or UTF-32, as negotiated)."""
    from pygls.workspace.position_codec import ServerTextPosition, ServerTextRange

    def convert(lines: list[str], start: Point, end: Point) -> types.Range:
        return codec.range_to_client_units(lines, ServerTextRange(ServerTextPosition(*start), ServerTextPosition(*end)))

    return convert
