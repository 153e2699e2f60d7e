"""Reading what the user gave us: Python files and notebooks, as text we can parse and write back.

Everything that can go wrong with a file (not UTF-8, binary, too big, a broken notebook) becomes a
`SourceError` with a one-line message; the caller reports it and goes on with the other files.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import stat
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024

# A notebook's non-Python lines (IPython magics, shell escapes, help) are hidden from the parser
# behind this comment, and brought back exactly as they were when a fixed notebook is written.
_MAGIC_PREFIX = "#ckpt-doctor-magic:"
_CELL_MARKER = "#ckpt-doctor-cell:"
_MAGIC_LINE = re.compile(r"^\s*(%|!|\?)|^\s*\w[\w.]*\?\??\s*$")


class SourceError(Exception):
    """A file we cannot check. `str()` is the one-line reason; `path` names the file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class NotPython(SourceError):
    """A file that is not ours to check (a notebook of another language): skipped, not an error."""


@dataclass
class CellMap:
    """Where each line of a notebook's joined source came from."""

    # For virtual line n (1-based): (cell index, line in cell, 1-based) or None for marker lines.
    lines: list[tuple[int, int] | None] = field(default_factory=list)

    def locate(self, line: int) -> tuple[int, int] | None:
        if 1 <= line <= len(self.lines):
            return self.lines[line - 1]
        return None


@dataclass
class SourceFile:
    path: str
    text: str  # the Python source (for notebooks: code cells joined, magics hidden)
    raw: bytes  # the file exactly as read, to detect changes before writing back
    encoding: str = "utf-8"
    bom: bool = False
    notebook: dict | None = None  # the parsed notebook JSON
    cells: CellMap | None = None

    @property
    def is_notebook(self) -> bool:
        return self.notebook is not None

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 1 <= line <= len(lines) else ""

    def pip_pins(self) -> dict:
        """Versions pinned by `%pip install` / `!pip install` lines of a notebook."""
        from ckpt_doctor.analysis.versions import pins_in_pip_command

        pins: dict = {}
        commands: list[str] = []
        continued = False
        for line in self.text.splitlines() if self.notebook is not None else ():
            magic = line[len(_MAGIC_PREFIX) :] if line.startswith(_MAGIC_PREFIX) else None
            if magic is not None and (continued or "pip install" in magic):
                commands[-1:] = [commands[-1] + " " + magic] if continued else [*commands[-1:], magic]
                continued = magic.rstrip().endswith("\\")
            else:
                continued = False
        for command in commands:
            if "install" in command:
                for package, version in pins_in_pip_command(command.split("install", 1)[1].replace("\\", " ")).items():
                    pins.setdefault(package, version)
        return pins

    def keeps_cells(self, new_text: str) -> bool:
        """Whether `new_text` still has this notebook's cell boundaries, in order (a fix that rewrites a statement
        spanning two cells would merge them)."""
        def markers(text: str) -> list[str]:
            return [line for line in text.splitlines() if line.startswith(_CELL_MARKER)]

        return self.notebook is None or markers(new_text) == markers(self.text)

    def with_text(self, new_text: str) -> "SourceFile":
        """This file as it will be once `new_text` is written (cell map rebuilt for notebooks)."""
        raw = self.render(new_text)
        return _read_notebook(self.path, raw) if self.notebook is not None else _read_python(self.path, raw)

    def render(self, new_text: str) -> bytes:
        """The bytes of this file with its Python source replaced by `new_text`."""
        if self.notebook is None:
            data = new_text.encode(self.encoding)
            return (codecs.BOM_UTF8 + data) if self.bom else data
        return _render_notebook(self, new_text)


def read_source(path: str | Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> SourceFile:
    path = Path(path)
    name = str(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise SourceError(name, f"cannot read: {exc.strerror or exc}") from None
    except RuntimeError:
        raise SourceError(name, "cannot read: symbolic link loop") from None
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(name, "not a regular file (a pipe, device or socket); not read")
    size = info.st_size
    if size > max_bytes:
        raise SourceError(
            name, f"file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit (max-file-size)"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceError(name, f"cannot read: {exc.strerror or exc}") from None
    return source_from_bytes(name, raw, max_bytes)


def source_from_bytes(name: str, raw: bytes, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> SourceFile:
    """A file given as bytes (`check --stdin-filename NAME -`, an editor's buffer), read as the file `name` would be."""
    if len(raw) > max_bytes:
        raise SourceError(name, f"input is {len(raw) / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit (max-file-size)")
    return _read_notebook(name, raw) if name.endswith(".ipynb") else _read_python(name, raw)


def _read_python(name: str, raw: bytes) -> SourceFile:
    if b"\x00" in raw:
        raise SourceError(name, "binary file (contains NUL bytes), not Python source")
    bom = raw.startswith(codecs.BOM_UTF8)
    try:
        encoding, cookie = tokenize.detect_encoding(io.BytesIO(raw).readline)
    except SyntaxError as exc:
        if "invalid or missing encoding declaration" in str(exc.msg):
            offset = _first_non_utf8(raw)
            raise SourceError(name, f"not valid UTF-8 (byte 0x{raw[offset]:02x} at offset {offset}) and no coding declaration") from None
        raise SourceError(name, f"bad encoding declaration: {exc.msg}") from None
    if encoding == "utf-8-sig":
        encoding = "utf-8"
    body = raw[len(codecs.BOM_UTF8) :] if bom else raw
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SourceError(
            name, f"not valid {encoding.upper()} (byte 0x{body[exc.start]:02x} at offset {exc.start})"
        ) from None
    return SourceFile(path=name, text=text, raw=raw, encoding=encoding, bom=bom)


def _first_non_utf8(raw: bytes) -> int:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return 0


def _read_notebook(name: str, raw: bytes) -> SourceFile:
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SourceError(name, "notebook is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise SourceError(name, f"notebook is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # absurd numbers, absurd nesting
        raise SourceError(name, f"notebook JSON cannot be read: {type(exc).__name__}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        raise SourceError(name, "notebook has no 'cells' list (not an nbformat 4 notebook)")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise SourceError(name, "notebook 'metadata' is not an object")
    for key, field_name in (("language_info", "name"), ("kernelspec", "language")):
        info = metadata.get(key) or {}
        language = info.get(field_name) if isinstance(info, dict) else None
        if language not in (None, "python"):
            raise NotPython(name, f"a {language} notebook, not Python: skipped")
    out: list[str] = []
    cell_map = CellMap()
    for index, cell in enumerate(doc["cells"]):
        if not isinstance(cell, dict):
            raise SourceError(name, f"notebook cell {index + 1} is not an object")
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise SourceError(name, f"notebook cell {index + 1} has no text source")
        out.append(f"{_CELL_MARKER}{index}\n")
        cell_map.lines.append(None)
        hidden = source.lstrip().startswith("%%")  # a cell magic: the whole cell is not Python
        continued = False  # a magic line ending in a backslash goes on on the next line
        for number, line in enumerate(source.splitlines(), start=1):
            if hidden or continued or _MAGIC_LINE.match(line):
                continued = line.rstrip().endswith("\\")
                line = _MAGIC_PREFIX + line
            out.append(line + "\n")
            cell_map.lines.append((index, number))
    return SourceFile(path=name, text="".join(out), raw=raw, notebook=doc, cells=cell_map)


def split_cells(text: str) -> dict[int, list[str]]:
    """A notebook's joined source back into its code cells' lines, magics restored."""
    cells: dict[int, list[str]] = {}
    current: int | None = None
    for line in text.splitlines():
        if line.startswith(_CELL_MARKER):
            current = int(line[len(_CELL_MARKER) :])
            cells[current] = []
        elif current is not None:
            cells[current].append(line[len(_MAGIC_PREFIX) :] if line.startswith(_MAGIC_PREFIX) else line)
    return cells


def _render_notebook(source: SourceFile, new_text: str) -> bytes:
    doc = json.loads(json.dumps(source.notebook))  # deep copy
    for index, lines in split_cells(new_text).items():
        cell = doc["cells"][index]
        original = cell.get("source", "")
        text = "\n".join(lines)
        joined_original = "".join(original) if isinstance(original, list) else original
        if joined_original.endswith("\n"):
            text += "\n"
        if isinstance(original, list):
            cell["source"] = [part for part in text.splitlines(keepends=True)]
        else:
            cell["source"] = text
    indent = _json_indent(source.raw)
    rendered = json.dumps(doc, indent=indent, ensure_ascii=source.raw.isascii())
    if source.raw.endswith(b"\n"):
        rendered += "\n"
    if b"\r\n" in source.raw:
        rendered = rendered.replace("\n", "\r\n")
    return rendered.encode("utf-8")


def _json_indent(raw: bytes) -> int:
    match = re.search(rb"\n( +)\"", raw)
    return len(match.group(1)) if match else 1
