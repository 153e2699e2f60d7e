"""Checking an editor's buffer as `check` checks the file: the same `check_source` on the text in memory.

A buffer is checked when `check` would check the file: Python (.py, .pyi, or a buffer the editor says is Python), a
notebook (.ipynb), a YAML / JSON config or a launcher (`is_config`), or a shell script known by its `#!` line. Anything
else gets no diagnostics. A file that cannot be read or parsed gets one diagnostic saying so, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ckpt_doctor.analysis.source import NotPython, SourceError, SourceFile, source_from_bytes
from ckpt_doctor.check.lint import FileResult, check_source, is_config, is_shell_script
from ckpt_doctor.config import Settings
from ckpt_doctor.server.positions import NotebookLines, Point, split_lines

PYTHON_SUFFIXES = (".py", ".pyi")


@dataclass
class Problem:
    """A file that could not be checked: the reason, and where (None: the file as a whole)."""

    message: str
    at: Point | None = None
    cell: tuple[int, Point] | None = None  # in a notebook: the cell, and the place in it


@dataclass
class Checked:
    """One version of a buffer, checked."""

    path: str
    version: int | None
    text: str
    settings: Settings
    source: SourceFile | None = None
    result: FileResult | None = None
    problem: Problem | None = None
    notebook: NotebookLines | None = None
    lines: list[str] = field(default_factory=list)
    memo: dict = field(default_factory=dict)  # what hovers and code actions work out, once per version

    @property
    def findings(self) -> list:
        return self.result.findings if self.result is not None else []

    @property
    def kind(self) -> str:
        """notebook | json | config (YAML, launchers) | python."""
        if self.notebook is not None:
            return "notebook"
        if self.path.endswith(PYTHON_SUFFIXES):
            return "python"
        if self.path.endswith(".json"):
            return "json"
        return "config" if is_config(self.path) or is_shell_script(self.path, self.text) else "python"


def checkable(path: str, language_id: str | None, text: str) -> bool:
    """Whether `check` would read this buffer (an unrecognised YAML or JSON is read, and gives nothing)."""
    return (path.endswith(PYTHON_SUFFIXES + (".ipynb",)) or language_id == "python" or is_config(path)
            or is_shell_script(path, text))


def check_buffer(path: str, version: int | None, text: str, settings: Settings) -> Checked:
    checked = Checked(path, version, text, settings, lines=split_lines(text))
    raw = text.encode("utf-8")
    if len(raw) > settings.max_file_size:
        if not is_config(path):  # as `check` does: a config too big to be one is skipped, a script is an error
            checked.problem = Problem(f"file is {len(raw) / 2**20:.1f} MiB, over the {settings.max_file_size / 2**20:.0f} MiB "
                                      "limit (max-file-size); not checked")
        return checked
    try:
        # the editor's text is already decoded: only a notebook needs reading (its JSON into cells)
        source = source_from_bytes(path, raw, settings.max_file_size) if path.endswith(".ipynb") else SourceFile(path, text, raw)
    except NotPython:
        return checked
    except SourceError as exc:
        checked.problem = Problem(exc.reason)
        return checked
    checked.source = source
    if source.is_notebook:
        checked.notebook = NotebookLines(text)
    try:
        checked.result = check_source(source, settings)
    except Exception as exc:  # noqa: BLE001 - an internal error must not stop the server
        checked.problem = Problem(f"internal error: {type(exc).__name__}: {exc} (please report this)")
        return checked
    if checked.result.error:
        checked.problem = _problem(checked, checked.result.error)
    return checked


_WHERE = re.compile(r":(?:cell (?P<cell>\d+):)?(?P<line>\d+):(?P<column>\d+): ")


def _problem(checked: Checked, error: str) -> Problem:
    """`check`'s one-line error ("path:line:col: cannot parse: ...") as a problem at that place."""
    rest = error[len(checked.path):] if error.startswith(checked.path) else error
    match = _WHERE.match(rest)
    if match is None:
        return Problem(rest.lstrip(": "))
    message = rest[match.end():]
    line, column = int(match.group("line")), max(int(match.group("column")), 1)
    if match.group("cell") is not None:
        from ckpt_doctor.findings import Position

        cell = int(match.group("cell")) - 1
        at = checked.notebook.point(cell, Position(line, column)) if checked.notebook else None
        return Problem(message, at, (cell, (max(line - 1, 0), column - 1)))
    return Problem(message, (max(line - 1, 0), column - 1))
