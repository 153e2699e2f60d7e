"""`# noqa` comments: reading them, deciding what they suppress, and writing them.

One module for the three users of the syntax: suppression in `lint` (line `# noqa[: CODES]` and file-level
`# ckpt-doctor: noqa[: CODES]`), `check --add-noqa` (which appends codes), and CKPT001 (unused-noqa, which
removes the codes that suppress nothing). A code suppresses a finding when the finding's code starts with it
(`CKPT2` covers CKPT201), as in ruff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ckpt_doctor.findings import Finding, FixSpec, Position, ReplaceText, Severity, Span

# `# noqa`, `# noqa: CKPT101`, `#noqa:CKPT101,E501`, case-insensitive as flake8 reads it
_LINE = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Za-z0-9]+(?:\s*,\s*[A-Za-z0-9]+)*))?", re.IGNORECASE)
# an own-line `# ckpt-doctor: noqa` (all findings of the file) or `# ckpt-doctor: noqa: CKPT201,CKPT3`
_FILE = re.compile(r"^#\s*ckpt-doctor:\s*noqa(?::\s*(?P<codes>[A-Za-z0-9]+(?:\s*,\s*[A-Za-z0-9]+)*))?\s*$", re.IGNORECASE)
OUR_CODE = re.compile(r"CKPT[0-9]{0,3}$")
UNUSED_NOQA = "CKPT001"


@dataclass
class Directive:
    """One `# noqa` comment on a line: where it is, and the codes it names (empty: a bare `# noqa`)."""

    line: int  # 1-based
    start: int  # 0-based column of `#`
    end: int  # 0-based column after the last code
    codes: list[str]
    used: set[str] = field(default_factory=set)  # the codes that suppressed a finding ("" for a bare noqa)

    def matching(self, code: str) -> str | None:
        """The code of this comment that suppresses `code` ("" for a bare noqa), or None."""
        if not self.codes:
            return ""
        return next((c for c in self.codes if code.startswith(c)), None)


def _codes(text: str | None) -> list[str]:
    return [c.strip().upper() for c in text.split(",")] if text else []


def line_directives(text: str, line_number: int) -> list[Directive]:
    """The noqa comments of one line (a `# ckpt-doctor: noqa` file directive is not one)."""
    if "noqa" not in text.lower() or _FILE.match(text.strip()):
        return []
    comment = _comment_start(text)
    if comment is None:
        return []
    return [Directive(line_number, m.start(), m.end(), _codes(m.group("codes"))) for m in _LINE.finditer(text, comment)]


def _comment_start(text: str) -> int | None:
    """The column of the `#` that starts this line's comment, outside string literals (`"# noqa"` is data). A
    quote that never closes on the line (`it's` in a YAML value, a line of a multi-line string) is not one."""
    quote = None
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            return index
        index += 1
    return text.find("#") if quote and "#" in text else None


def file_codes(lines: list[str]) -> list[str] | None:
    """The codes a file-level `# ckpt-doctor: noqa[: CODES]` suppresses: None when there is none, [] for all."""
    found: list[str] | None = None
    for line in lines:
        if "ckpt-doctor" not in line.lower():
            continue
        match = _FILE.match(line.strip()) if not line[:1].isspace() else None
        if match:
            codes = _codes(match.group("codes"))
            if not codes:
                return []
            found = (found or []) + codes
    return found


def _file_suppresses(codes: list[str] | None, code: str) -> bool:
    return codes is not None and (not codes or any(code.startswith(c) for c in codes))


@dataclass
class Suppression:
    kept: list[Finding]
    suppressed: list[Finding]
    unused: list[Finding]  # CKPT001 findings


def apply(lines: list[str], findings: list[Finding], *, path: str, enabled=lambda code: True) -> Suppression:
    """Split `findings` into those reported and those a noqa comment suppresses; with CKPT001 enabled, a finding
    for each noqa code (of ours) that suppressed nothing. `enabled(code)`: whether a rule runs on this file (a
    noqa for a rule that does not run is not unused, as in ruff)."""
    whole_file = file_codes(lines)
    directives: dict[int, list[Directive]] = {}
    kept, suppressed = [], []
    for finding in findings:
        line = finding.span.start.line
        if line not in directives:
            directives[line] = line_directives(lines[line - 1], line) if 0 < line <= len(lines) else []
        matched = [(d, c) for d in directives[line] if (c := d.matching(finding.code)) is not None]
        for directive, code in matched:
            directive.used.add(code)
        if matched or _file_suppresses(whole_file, finding.code):
            suppressed.append(finding)
        else:
            kept.append(finding)
    unused: list[Finding] = []
    if enabled(UNUSED_NOQA):
        for number, text in enumerate(lines, start=1):
            for directive in directives[number] if number in directives else line_directives(text, number):
                finding = _unused(directive, text, path, enabled)
                if finding is None:
                    continue
                # `# noqa: CKPT101, CKPT001` keeps an unused code on purpose (ruff's `# noqa: F401, RUF100`)
                hidden = directive.matching(UNUSED_NOQA) is not None or _file_suppresses(whole_file, UNUSED_NOQA)
                (suppressed if hidden else unused).append(finding)
    return Suppression(kept, suppressed, unused)


def _unused(directive: Directive, text: str, path: str, enabled) -> Finding | None:
    # a bare `# noqa` is left alone: on most lines it is there for another linter (`import x  # noqa` for F401),
    # which ckpt-doctor cannot see, unlike ruff's RUF100, which implements those rules itself
    ours = [c for c in directive.codes if OUR_CODE.match(c) and not UNUSED_NOQA.startswith(c)]
    unused = [c for c in ours if c not in directive.used and _any_enabled(c, enabled)]
    if not unused:
        return None
    keep = [c for c in directive.codes if c not in unused]
    what = ", ".join(f"`{c}`" for c in unused)
    message = f"unused `noqa` code{'s' if len(unused) > 1 else ''} {what}: no finding of {'it' if len(unused) == 1 else 'them'} on this line"
    new_text = text[: directive.start] + ("# noqa: " + ", ".join(keep) if keep else "") + text[directive.end :]
    if not keep:  # drop the whole comment; keep other comment text after it (`# noqa: CKPT101  # why`)
        head, tail = text[: directive.start].rstrip(), text[directive.end :].strip()
        if tail.startswith("#"):
            new_text = f"{head}  {tail}" if head else tail
        elif tail:
            new_text = f"{head}  # {tail}" if head else f"# {tail}"
        else:
            new_text = head
    span = Span(Position(directive.line, directive.start + 1), Position(directive.line, directive.end + 1))
    whole_line = Span(Position(directive.line, 1), Position(directive.line, len(text) + 1))
    fix = FixSpec(ReplaceText(new_text), whole_line, message="Remove the unused codes" if keep else "Remove the `noqa` comment")
    return Finding(UNUSED_NOQA, message, Severity.WARNING, span, fix=fix, path=path)


def _any_enabled(code: str, enabled) -> bool:
    """Whether some rule that `code` names (a code or a prefix) runs on this file."""
    from ckpt_doctor.rules import all_rules

    return any(r.code.startswith(code) and r.code != UNUSED_NOQA and enabled(r.code) for r in all_rules())


def with_codes(text: str, codes: list[str]) -> str:
    """`text` (one line, no newline) with `# noqa: CODES` appended, merged into the noqa comment already there."""
    existing = line_directives(text, 0)
    if existing:
        directive = existing[0]
        if not directive.codes:
            return text  # a bare noqa already suppresses everything
        merged = directive.codes + [c for c in codes if not directive.matching(c)]
        return text[: directive.start] + "# noqa: " + ", ".join(merged) + text[directive.end :]
    body = text.rstrip()
    return f"{body}  # noqa: {', '.join(codes)}" if body else f"# noqa: {', '.join(codes)}"
