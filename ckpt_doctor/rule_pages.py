"""Rule pages (`rules/CKPTnnn.md`): finding them, and reading their examples.

The pages live in the repository's `rules/` folder; `ckpt_doctor/_pages` links there so a built
wheel carries them as package data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_PAGE_FOLDERS = (Path(__file__).parent / "_pages", Path(__file__).parent.parent / "rules")


def page_path(code: str) -> Path | None:
    for folder in _PAGE_FOLDERS:
        candidate = folder / f"{code}.md"
        if candidate.is_file():
            return candidate
    return None


def page_text(code: str) -> str | None:
    path = page_path(code)
    return path.read_text(encoding="utf-8") if path else None


@dataclass
class PageExamples:
    code: str
    bad: str
    good: str
    assumes: dict[str, str]  # target versions the examples are written for (and gpu-memory for CKPT4xx)
    marked_lines: list[int]  # lines of `bad` that carry `# CKPTnnn`
    language: str = "python"  # python | yaml | json | sh: the kind of file the examples are
    bad_files: dict[str, str] = field(default_factory=dict)  # other files the bad example names (`ds_z2.json`)
    good_files: dict[str, str] = field(default_factory=dict)

    @property
    def suffix(self) -> str:
        return {"python": ".py", "yaml": ".yaml", "json": ".json", "sh": ".sh"}[self.language]


_SECTION = re.compile(r"^## (Example|Use instead)\s*\n(.*?)(?=^## |\Z)", re.MULTILINE | re.DOTALL)
_FENCE = re.compile(r"^```(\w+)(?: ([\w./-]+))?\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples(code: str) -> PageExamples:
    text = page_text(code)
    if text is None:
        raise FileNotFoundError(f"rules/{code}.md")
    sections: dict[str, tuple[str, str, dict[str, str]]] = {}
    for title, body in _SECTION.findall(text):
        blocks = _FENCE.findall(body)
        main = next(((language, source) for language, name, source in blocks if not name), None)
        if main is not None:
            sections[title] = (*main, {name: source for _, name, source in blocks if name})
    if "Example" not in sections or "Use instead" not in sections:
        raise ValueError(f"rules/{code}.md needs '## Example' and '## Use instead' code blocks")
    (language, bad, bad_files), (_, good, good_files) = sections["Example"], sections["Use instead"]
    assumes = {}
    match = re.search(r"^Examples assume:\s*(.+)$", text, re.MULTILINE)
    if match:
        for item in match.group(1).split():
            package, _, version = item.strip("`").replace("==", "=").partition("=")
            assumes[package] = version
    marker = re.compile(rf"#\s*{code}\b")
    marked = [n for n, line in enumerate(bad.splitlines(), start=1) if marker.search(line)]
    return PageExamples(code, bad, good, assumes, marked, language, bad_files, good_files)
