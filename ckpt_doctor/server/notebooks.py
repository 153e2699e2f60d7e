"""Notebooks an editor sends cell by cell (LSP notebook documents: VS Code's notebook editor, among others).

The cells are put together as the .ipynb `check` would read (code and markdown cells, in order), checked as that file,
and the findings handed back to the cells they are in (`Finding.cell`, `cell_span`). A fix or a suppression changes
the joined source; `split_cells` gives each cell's new text, and each changed cell gets its edit.
"""

from __future__ import annotations

import json

from ckpt_doctor.findings import Finding, Position
from ckpt_doctor.server.documents import Checked
from ckpt_doctor.server.positions import Point, split_lines, to_point, widen

Edit = tuple[str, Point, Point]


def notebook_json(cells: list[tuple[bool, str]]) -> str:
    """An nbformat 4 notebook of `cells` ((is code, text), in order)."""
    return json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "source": text, "outputs": [], "execution_count": None} if code
                  else {"cell_type": "markdown", "metadata": {}, "source": text} for code, text in cells],
        "metadata": {"language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }, indent=1)


def cell_range(cell_text: str, finding: Finding) -> tuple[Point, Point] | None:
    if finding.cell_span is None:
        return None
    return widen(split_lines(cell_text), to_point(finding.cell_span.start), to_point(finding.cell_span.end))


def cell_edits(checked: Checked, new_text: str, cell_texts: list[str]) -> dict[int, list[Edit]]:
    """The edit of each cell that `new_text` (the joined source after a fix) changes."""
    from ckpt_doctor.analysis.source import split_cells
    from ckpt_doctor.check.fix import minimal_edit

    out: dict[int, list[Edit]] = {}
    for index, lines in split_cells(new_text).items():
        if index >= len(cell_texts):
            continue
        old = cell_texts[index]
        new = "\n".join(lines) + ("\n" if old.endswith("\n") else "")
        if new != old:
            out[index] = [(content, to_point(start), to_point(end)) for content, start, end in minimal_edit(old, new)]
    return out


def joined_position(checked: Checked, cell: int, point: Point) -> Position | None:
    """Where (line, character) of cell `cell` is in the joined source (1-based)."""
    mapping = checked.source.cells.lines if checked.source is not None and checked.source.cells is not None else []
    for number, located in enumerate(mapping, start=1):
        if located == (cell, point[0] + 1):
            return Position(number, point[1] + 1)
    return None


def cell_point(checked: Checked, position: Position) -> tuple[int, Point] | None:
    """The cell and (line, character) in it of a position of the joined source."""
    located = checked.source.cells.locate(position.line) if checked.source is not None and checked.source.cells else None
    return (located[0], (located[1] - 1, position.column - 1)) if located else None
