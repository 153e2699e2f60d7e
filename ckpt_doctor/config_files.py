"""Settings files a script names: the JSON or YAML file `HfArgumentParser.parse_json_file` /
`parse_yaml_file` reads (a literal path, or the default of `--config`-like options).

Read without importing PyYAML: training recipes keep these files flat (`key: value` per line), and a nested
or unusual file is simply not read.  Paths are taken relative to the script's folder, then to its parents
(recipes are run from the repository root).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

MAX_BYTES = 1 << 20
_PARENTS = 4
_YAML_LINE = re.compile(r"^([A-Za-z_][\w.-]*)\s*:\s*(.*?)\s*$")


def locate(script: str, name: str) -> Path | None:
    """The file ``name`` names, relative to ``script``'s folder or one of its parents."""
    if not name.endswith((".json", ".yaml", ".yml")):
        return None
    candidate = Path(name)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    folder = Path(script).resolve().parent
    for base in [folder, *list(folder.parents)[:_PARENTS]]:
        if (base / candidate).is_file():
            return base / candidate
    return None


def read_settings_file(path: Path) -> dict[str, object] | None:
    """The top-level settings of a JSON or flat YAML file; None if it cannot be read as such."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    return _flat_yaml(text)


def _flat_yaml(text: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or line[0] in " \t-":
            continue  # blank, comment, nested block or list item: not a top-level scalar
        match = _YAML_LINE.match(line)
        if match and match.group(2):
            out[match.group(1)] = _scalar(match.group(2))
    return out


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
