"""Code actions: a quick fix per fixable finding, "fix all safe fixes" and `# noqa` suppressions.

The edits are those of `check --fix`: a finding's fix is `edits_for` (the json output's edits), "fix all" is the
CLI's fix loop (`fix_loop`: rounds of fixes and re-checks), both from ckpt_doctor.check; a notebook's fixed source
is written back into its JSON by `SourceFile.render`, as `--fix` writes the file. Safe fixes are preferred quick
fixes; unsafe ones (`--unsafe-fixes`) say so in their title; suggestions (display-only) get no action.
"""

from __future__ import annotations

from dataclasses import dataclass

from ckpt_doctor.findings import Applicability, Finding
from ckpt_doctor.server.documents import Checked
from ckpt_doctor.server.positions import Point, to_point

FIX_ALL = "source.fixAll.ckpt-doctor"
QUICK_FIX = "quickfix"
Edit = tuple[str, Point, Point]  # new text, start, end (0-based, code points of the buffer)


@dataclass
class Action:
    title: str
    kind: str
    what: str  # fix | fix-all | noqa
    finding: int | None = None  # index into checked.findings
    preferred: bool = False


def actions_for(checked: Checked, indices: list[int], only: list[str] | None) -> list[Action]:
    """The actions for the findings at `indices` (those under the cursor), and "fix all" when a safe fix exists."""
    out: list[Action] = []
    findings = checked.findings
    for index in dict.fromkeys(indices):
        finding = findings[index]
        fix = finding.fix
        if fix is not None and fix.applicability is not Applicability.DISPLAY_ONLY and _wanted(QUICK_FIX, only):
            safe = fix.applicability is Applicability.SAFE
            message = fix.message or f"Fix {finding.code}"
            out.append(Action(f"{finding.code}: {message}" + ("" if safe else " (unsafe)"), QUICK_FIX, "fix", index, preferred=safe))
        if _suppressible(checked) and _wanted(QUICK_FIX, only):
            out.append(Action(f"{finding.code}: suppress with `# noqa: {finding.code}`", QUICK_FIX, "noqa", index))
    if _wanted(FIX_ALL, only) and any(f.fix is not None and f.fix.applicability is Applicability.SAFE for f in findings):
        out.append(Action("ckpt-doctor: fix all safe fixes in this file", FIX_ALL, "fix-all"))
    return out


def _wanted(kind: str, only: list[str] | None) -> bool:
    return not only or any(kind == o or kind.startswith(o + ".") for o in only)


def _suppressible(checked: Checked) -> bool:
    """`# noqa` is read on a line of a script, a notebook's cell, a YAML file or a launcher; JSON has no comments."""
    return checked.kind != "json"


def edits(checked: Checked, action: Action) -> list[Edit]:
    """The buffer edits of `action` (empty when it cannot be made on this text)."""
    key = ("edits", action.what, action.finding)
    if key not in checked.memo:  # editors ask for the actions at every cursor move
        source = checked.source
        if action.what == "fix" and not source.is_notebook:  # the json output's edit for this fix
            from ckpt_doctor.check.fix import edits_for

            spec = checked.findings[action.finding].fix
            checked.memo[key] = [(content, to_point(start), to_point(end)) for content, start, end in edits_for(source.text, [spec])[0]]
        else:
            new_text = fixed_source(checked, action)
            checked.memo[key] = _buffer_edit(checked, new_text) if new_text is not None else []
    return checked.memo[key]


def fixed_source(checked: Checked, action: Action) -> str | None:
    """The file's source text (a notebook's: its cells joined) after `action`; None when it cannot be made."""
    from ckpt_doctor.check.fix import FixError, apply_fixes
    from ckpt_doctor.check.runner import fix_loop

    key = ("source", action.what, action.finding)
    if key not in checked.memo:
        source = checked.source
        try:
            if action.what == "fix-all":
                new_text = fix_loop(checked.result, checked.settings, unsafe=False)[0]
            elif action.what == "fix":
                new_text = apply_fixes(source.text, [checked.findings[action.finding].fix])
            else:
                new_text = _with_noqa(checked, checked.findings[action.finding])
        except FixError:
            new_text = None
        if new_text is not None and not source.keeps_cells(new_text):
            new_text = None  # a fix that would move code across a notebook's cells
        checked.memo[key] = new_text
    return checked.memo[key]


def _buffer_edit(checked: Checked, new_text: str) -> list[Edit]:
    """One edit from the buffer to the file `--fix` would write (a notebook's JSON re-rendered)."""
    from ckpt_doctor.check.fix import minimal_edit

    source = checked.source
    new_buffer = source.render(new_text).decode(source.encoding) if source.is_notebook else new_text
    return [(content, to_point(start), to_point(end)) for content, start, end in minimal_edit(checked.text, new_buffer)]


def _with_noqa(checked: Checked, finding: Finding) -> str | None:
    """The source with `# noqa: CODE` on the line the finding is reported on, merged into a noqa comment there: what
    `check --add-noqa` writes (None where a comment would change the code)."""
    from ckpt_doctor.check.add_noqa import _with_noqa as add_noqa

    try:
        text, count, _ = add_noqa(checked.source, {finding.span.start.line: [finding.code]})
    except SyntaxError:
        return None
    return text if count else None
