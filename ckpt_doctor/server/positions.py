"""Where a finding lies in the editor's text, as 0-based (line, character) in code points; `protocol` turns them
into the client's units (UTF-16 by default) with pygls' position codec.

A script's findings are where the facts pass saw them. A notebook is edited as its .ipynb JSON, while its findings
are in cells (`Finding.cell`, `cell_span`): `NotebookLines` finds each cell's source lines in the JSON text, as
nbformat writes it (every line of a `"source": [...]` list on a line of its own).
"""

from __future__ import annotations

import json
import re

from ckpt_doctor.findings import Finding, Position

Point = tuple[int, int]  # 0-based line, 0-based character


def split_lines(text: str) -> list[str]:
    """Lines as the LSP (and Python's tokenizer) count them: only CR LF, LF and CR end a line."""
    return re.split(r"\r\n|\r|\n", text)


def finding_range(lines: list[str], finding: Finding, notebook: "NotebookLines | None" = None) -> tuple[Point, Point] | None:
    """The range to underline; an empty span (a config's key, a launcher's line) covers its line's text."""
    if notebook is not None:
        if finding.cell is None or finding.cell_span is None:
            return None
        start = notebook.point(finding.cell, finding.cell_span.start)
        end = notebook.point(finding.cell, finding.cell_span.end)
        if start is None:
            return None
        return widen(lines, start, end if end is not None and end >= start else start)
    return widen(lines, to_point(finding.span.start), to_point(finding.span.end))


def to_point(position: Position) -> Point:
    return max(position.line - 1, 0), max(position.column - 1, 0)


def to_position(point: Point) -> Position:
    return Position(point[0] + 1, point[1] + 1)


def widen(lines: list[str], start: Point, end: Point) -> tuple[Point, Point]:
    """`start`-`end`, or the text of `start`'s line when the span is empty."""
    if end > start:
        return start, end
    line = lines[start[0]] if start[0] < len(lines) else ""
    text = line.rstrip("\r\n")
    first = len(text) - len(text.lstrip())
    begin = start if start[1] > first else (start[0], first)
    return begin, (start[0], max(len(text.rstrip()), begin[1]))


class NotebookLines:
    """The JSON text's line and character of each line of each cell's source."""

    _SOURCE = re.compile(r'^(?P<indent>[ \t]*)"source":\s*(?P<open>[\["])')

    def __init__(self, text: str) -> None:
        self.lines = split_lines(text)
        self.cells: list[int] = []  # the JSON line of each cell's "source" key, in cell order
        indent = None
        for number, line in enumerate(self.lines):
            match = self._SOURCE.match(line)
            if match and indent in (None, match.group("indent")):  # the cells' own key, not one in their metadata
                indent = match.group("indent")
                self.cells.append(number)

    def point(self, cell: int, position: Position) -> Point | None:
        if not 0 <= cell < len(self.cells):
            return None
        key = self.cells[cell]
        if not self.lines[key].rstrip().endswith("["):  # "source": "one string" or an inline list: its key line
            return key, len(self.lines[key]) - len(self.lines[key].lstrip())
        number = key + position.line
        if number >= len(self.lines):
            return None
        line = self.lines[number]
        quote = line.find('"')
        if quote < 0:
            return None
        # characters of the cell's line up to the column, as they are written (escaped) in the JSON string
        written = json.dumps(_json_string(line[quote:])[: position.column - 1], ensure_ascii="\\u" in line)[1:-1]
        return number, min(quote + 1 + len(written), len(line))


def _json_string(text: str) -> str:
    """The value of the JSON string literal at the start of `text` ("" if it is not one)."""
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return ""
    return value if isinstance(value, str) else ""
