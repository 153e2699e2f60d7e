"""`check --add-noqa`: every current finding suppressed by a `# noqa: CODE` on its line, merged into the noqa
comment already there, each file written atomically.

Python scripts, notebooks, YAML configs and shell launchers take `#` comments; JSON has no comments and is left
as it is. A line where a comment would change the code (inside a multi-line string, after a `\\` continuation)
is left too, and counted as such.
"""

from __future__ import annotations

import io
import tokenize
from collections import defaultdict
from dataclasses import dataclass, field

from ckpt_doctor.analysis.parse import parse_module
from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.check import noqa
from ckpt_doctor.check.fix import FixError, write_atomically
from ckpt_doctor.check.lint import is_script
from ckpt_doctor.check.runner import RunResult


@dataclass
class Added:
    directives: int = 0  # lines that got (or extended) a noqa comment
    files: int = 0
    left: list[str] = field(default_factory=list)  # "path:line: why" for findings that cannot take one
    errors: list[str] = field(default_factory=list)  # one line each, naming the file


def add_noqa(run: RunResult) -> Added:
    added = Added()
    for result in run.files:
        source = result.source
        if result.error or source is None or not result.findings:
            continue
        if source.path.endswith(".json"):
            added.left += [f"{source.path}:{f.span.start.line}: JSON has no comments" for f in result.findings]
            continue
        codes: dict[int, list[str]] = defaultdict(list)
        for finding in result.findings:
            if finding.code not in codes[finding.span.start.line]:
                codes[finding.span.start.line].append(finding.code)
        try:
            new_text, count, left = _with_noqa(source, codes)
        except SyntaxError:
            added.errors.append(f"{source.path}: cannot add noqa comments: the file does not parse")
            continue
        added.left += left
        if not count:
            continue
        try:
            write_atomically(source.path, source.render(new_text), expected=source.raw)
        except (FixError, OSError) as exc:
            added.errors.append(f"{source.path}: cannot add noqa comments: {exc}")
            continue
        added.directives += count
        added.files += 1
    return added


def _with_noqa(source: SourceFile, codes: dict[int, list[str]]) -> tuple[str, int, list[str]]:
    lines = source.text.splitlines(keepends=True)
    python = is_script(source)
    blocked = _string_lines(source.text) if python else set()
    count, left = 0, []
    for number, line_codes in sorted(codes.items()):
        if not 0 < number <= len(lines):
            continue
        line = lines[number - 1]
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        if number in blocked or body.rstrip().endswith("\\"):
            left.append(f"{source.path}:{number}: a comment here would change the code")
            continue
        new = noqa.with_codes(body, line_codes)
        if new != body:
            lines[number - 1] = new + ending
            count += 1
    text = "".join(lines)
    if python and count:
        parse_module(text, source.path)  # never hand back code that does not parse
    return text, count, left


def _string_lines(text: str) -> set[int]:
    """Lines a multi-line string literal continues past: a comment at their end would be part of the string."""
    blocked: set[int] = set()
    opened: list[int] = []  # f-strings (Python 3.12+ tokenizes them in pieces): the lines they start on
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                blocked.update(range(token.start[0], token.end[0]))
            elif token.type == getattr(tokenize, "FSTRING_START", -1):
                opened.append(token.start[0])
            elif token.type == getattr(tokenize, "FSTRING_END", -1) and opened:
                blocked.update(range(opened.pop(), token.end[0]))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return blocked
