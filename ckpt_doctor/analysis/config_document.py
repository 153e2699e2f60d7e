"""A YAML or JSON settings file, read with the line of every key.

Framework configs (LLaMA-Factory, axolotl, torchtune, ms-swift, TRL, accelerate) are YAML; DeepSpeed's are
JSON. Findings point at a key, so each value keeps where it is written. ruamel.yaml reads both (JSON is
YAML 1.2) and is the library the fixes write back with, keeping comments, order and quoting.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class ConfigError(Exception):
    """A settings file that cannot be read as one; `str()` is the one-line reason."""


@dataclass(frozen=True)
class Entry:
    key: str  # dotted: "fsdp_config.activation_checkpointing"
    value: object  # a scalar, or a list of scalars; mappings are split into their own entries
    line: int  # 1-based line of the key
    column: int  # 1-based column of the key


@dataclass
class Document:
    path: str
    text: str
    entries: dict[str, Entry] = field(default_factory=dict)  # every key, nested ones dotted, in file order
    duplicates: list[tuple[str, list[int]]] = field(default_factory=list)  # a key written more than once, its lines

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def value(self, key: str, default: object = None) -> object:
        entry = self.entries.get(key)
        return default if entry is None else entry.value

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    @property
    def top_level(self) -> list[str]:
        return [key for key in self.entries if "." not in key]


def read_document(text: str, path: str) -> Document:
    """The entries of a YAML / JSON mapping; raises ConfigError when the text is not one."""
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("not a JSON object")
        document = Document(path, text)
        _json_entries(document, data, "", _JsonLines(text))
        return document
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    reader = YAML(typ="rt", pure=True)
    reader.allow_duplicate_keys = True  # the frameworks read YAML with PyYAML, where the last one wins
    try:
        data = reader.load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    except Exception as exc:  # ruamel raises a few plain errors on hostile input (duplicate keys, bad anchors)
        raise ConfigError(f"not valid YAML: {exc}") from None
    if data is None:
        return Document(path, text)
    if not hasattr(data, "items"):
        raise ConfigError("not a YAML mapping")
    document = Document(path, text)
    _yaml_entries(document, data, "")
    _last_duplicates(document, reader)
    return document


_TOP_KEY = re.compile(r"^([A-Za-z_][\w.-]*)\s*:(.*)$", re.MULTILINE)


def _last_duplicates(document: Document, reader) -> None:
    """A top-level key written twice: ruamel keeps the first value, PyYAML (which the frameworks use) the last."""
    seen: dict[str, list[tuple[int, str]]] = {}
    for match in _TOP_KEY.finditer(document.text):
        seen.setdefault(match.group(1), []).append((document.text.count("\n", 0, match.start()) + 1, match.group(0)))
    for key, places in seen.items():
        if len(places) < 2 or key not in document.entries or document.entries[key].value is _MAPPING:
            continue
        line, text = places[-1]
        try:
            value = reader.load(text)
        except Exception:
            continue
        if hasattr(value, "get") and key in value:
            document.entries[key] = Entry(key, _plain(value[key]), line, 1)
            document.duplicates.append((key, [place for place, _ in places]))


def _yaml_entries(document: Document, mapping, prefix: str) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        try:
            line, column = mapping.lc.key(key)
        except (AttributeError, KeyError, TypeError):
            line, column = 0, 0
        if hasattr(value, "items"):
            document.entries[name] = Entry(name, _MAPPING, line + 1, column + 1)
            _yaml_entries(document, value, f"{name}.")
        else:
            document.entries[name] = Entry(name, _plain(value), line + 1, column + 1)


def _plain(value: object) -> object:
    """ruamel's scalar and list types as plain Python (a `ScalarFloat` is a float, a `CommentedSeq` a list)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


class _Mapping:
    def __repr__(self) -> str:
        return "<mapping>"


_MAPPING = _Mapping()  # the value of a key whose value is a nested mapping (its keys are entries of their own)


class _JsonLines:
    """The line of each `"key":` in JSON text, in order of appearance, for keys `json.loads` gives in that order."""

    def __init__(self, text: str) -> None:
        self.found = [(m.group(1), text.count("\n", 0, m.start()) + 1, m.start() - text.rfind("\n", 0, m.start()))
                      for m in re.finditer(r'"((?:[^"\\]|\\.)*)"\s*:', text)]
        self.position = 0

    def next(self, key: str) -> tuple[int, int]:
        for index in range(self.position, len(self.found)):
            name, line, column = self.found[index]
            if name == key:
                self.position = index + 1
                return line, column
        return 1, 1


def _json_entries(document: Document, mapping: dict, prefix: str, lines: _JsonLines) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        line, column = lines.next(str(key))
        if isinstance(value, dict):
            document.entries[name] = Entry(name, _MAPPING, line, column)
            _json_entries(document, value, f"{name}.", lines)
        else:
            document.entries[name] = Entry(name, value, line, column)
