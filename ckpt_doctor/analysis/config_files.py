"""Settings files a script names: the JSON or YAML file `HfArgumentParser.parse_json_file` /
`parse_yaml_file`, `json.load`, `yaml.safe_load` or `OmegaConf.load` reads (a literal path, or the default
of a `--config`-like option).

Read without importing PyYAML: training configs are mappings of scalars (`key: value`, nested by
indentation); lists, anchors and flow collections are left out.  Paths are taken relative to the script's
folder, then to its parents (recipes are run from the repository root).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

MAX_BYTES = 1 << 20
MAX_LAUNCHER_BYTES = 256 * 1024
README_NAMES = ("README.md", "readme.md", "Readme.md")  # where projects show their launch and install commands
_PARENTS = 4
_YAML_LINE = re.compile(r"^([A-Za-z_][\w.-]*)\s*:\s*(.*?)\s*$")


def locate(script: str, name: str) -> Path | None:
    """The file ``name`` names, relative to ``script``'s folder or one of its parents."""
    if not name.endswith((".json", ".yaml", ".yml")):
        return None
    candidate = Path(name)
    if candidate.is_absolute():
        return candidate if is_regular_file(candidate) else None
    try:
        folder = Path(script).resolve().parent
    except (OSError, ValueError):
        return None
    return next((base / candidate for base in [folder, *list(folder.parents)[:_PARENTS]] if is_regular_file(base / candidate)), None)


def shown_path(path: str | Path) -> str:
    """A path as messages name it: relative to the working folder when it lies below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive
        return str(path)
    return relative if not relative.startswith("..") else str(path)


def is_regular_file(path: Path) -> bool:
    """A plain file (not a pipe or device) behind a name a script wrote: too long, NUL or a loop is none."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def read_settings_file(path: Path) -> dict[str, object] | None:
    """The settings of a JSON or YAML file (mappings of scalars, nested or not; lists are left out); None
    if it cannot be read as such."""
    text = bounded_text(path, MAX_BYTES)
    return None if text is None else settings_in_text(text, path.suffix)


def settings_in_text(text: str, suffix: str) -> dict[str, object] | None:
    """The settings of JSON (`suffix` ".json") or YAML text; None if it cannot be read as such."""
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    return _yaml_mapping(text)


def _yaml_mapping(text: str) -> dict[str, object]:
    """`key: scalar` lines, nested by indentation under `key:`; list items and flow collections are skipped."""
    root: dict[str, object] = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-", "---")):
            continue
        indent = len(line) - len(line.lstrip(" "))
        match = _YAML_LINE.match(stripped)
        if not match:
            continue
        while indent <= stack[-1][0]:
            stack.pop()
        key, value = match.group(1), match.group(2)
        parent = stack[-1][1]
        if value == "" or value.startswith("#"):
            child: dict[str, object] = {}
            parent[key] = child
            stack.append((indent, child))
        elif not value.startswith(("[", "{", "&", "*", "|", ">")):
            parent[key] = _scalar(value)
    return root


def _scalar(text: str) -> object:
    text = re.sub(r"\s+#.*$", "", text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("null", "~", "none"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class ProjectFiles:
    """Reads the files a script names, relative to the script, and remembers which it read: the analysis is
    handed one of these instead of opening files itself, and the check's cache key holds what it read."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.read: list[str] = []
        self._modules: dict[Path, str | None] = {}  # a module is read once per analysis, however many names it gives

    def settings_text(self, name: str) -> tuple[str | None, Path | None]:
        """The text of the YAML / JSON file `name` (as the script wrote it) and its path; (None, None) if there is
        none."""
        path = self._settings_file(name)
        return (bounded_text(path, MAX_BYTES), path) if path is not None else (None, None)

    def settings(self, name: str) -> dict[str, object] | None:
        """The settings in the JSON / YAML file `name` (as the script wrote it), None if there is none."""
        path = self._settings_file(name)
        return read_settings_file(path) if path is not None else None

    def _settings_file(self, name: str) -> Path | None:
        """The file `name` names, recorded as read (the check's cache key holds it); None when there is none."""
        path = locate(self.script, name) if self.script != "-" else None
        if path is not None:
            self.read.append(str(path))
        return path

    def module(self, path: Path) -> str | None:
        """The text of one of the project's Python modules, None if it cannot be read as such."""
        if path not in self._modules:
            self._modules[path] = bounded_text(path, MAX_BYTES)
            if self._modules[path] is not None:
                self.read.append(str(path))
        return self._modules[path]

    def launcher(self, path: Path) -> str | None:
        """The text of a shell script or Makefile that may run the script, None if it cannot be read as such.
        Every launcher looked at joins the files read: a change to one may change what the script runs with."""
        self.read.append(str(path))
        return bounded_text(path, MAX_LAUNCHER_BYTES)

    def located(self, names: list[str]) -> list[str]:
        """The files the script's string literals name, whether or not the analysis read them."""
        if self.script == "-":
            return []
        return [str(path) for path in (locate(self.script, name) for name in names) if path]


def bounded_text(path: Path, limit: int) -> str | None:
    """A UTF-8 file's text, None when it is larger than `limit`, unreadable or not UTF-8."""
    try:
        if path.stat().st_size > limit:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None


class NoFiles(ProjectFiles):
    """For text that is not on disk: every named file is absent."""

    def __init__(self) -> None:
        super().__init__("-")
