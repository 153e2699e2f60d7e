"""`check --statistics` (findings counted per code, as ruff prints them) and `check --show-fixes` (the fixes
applied, or available, per file and code)."""

from __future__ import annotations

import json
from collections import Counter
from typing import TextIO

from ckpt_doctor.check.fix import applicable
from ckpt_doctor.check.runner import RunResult
from ckpt_doctor.rules import get_rule


def _name(code: str) -> str:
    rule = get_rule(code)
    return rule.name if rule else ""


def statistics(run: RunResult, out: TextIO, *, unsafe: bool = False, as_json: bool = False) -> None:
    """One row per code, most frequent first: count, code, `[*]` when its findings have a fix `--fix` applies, name."""
    counts = Counter(f.code for f in run.findings)
    fixable = {f.code for f in run.findings if applicable(f.fix, unsafe)}
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if as_json:
        data = [{"code": code, "name": _name(code), "count": count, "fixable": code in fixable} for code, count in rows]
        out.write(json.dumps(data, indent=2) + "\n")
        return
    width = max((len(str(count)) for _, count in rows), default=1)
    for code, count in rows:
        marker = "[*] " if code in fixable else "    "
        out.write(f"{count:>{width}}\t{code}\t{marker}{_name(code)}\n")
    if fixable:
        out.write("[*] fixable with `ckpt-doctor check --fix`\n")


def show_fixes(run: RunResult, out: TextIO, *, unsafe: bool = False, applied: bool = False, would: bool = False) -> None:
    """The fixes per file, `N × CODE (name)`: those applied (`--fix`, `--diff`: `would`), else those available."""
    if applied or would:
        per_file = {path: counts for path, counts in run.fixed.items() if counts}
        verb = "Would fix" if would else "Fixed"
    else:
        per_file = {}
        for finding in run.findings:
            if applicable(finding.fix, unsafe):
                per_file.setdefault(finding.path, Counter())[finding.code] += 1
        verb = "Fixable with `--fix --unsafe-fixes`" if unsafe else "Fixable with `--fix`"
    total = sum(sum(c.values()) for c in per_file.values())
    if not total:
        out.write("No fixes applied.\n" if applied else "No fixes available.\n")
        return
    out.write(f"{verb}: {total} finding{'s' if total != 1 else ''}\n")
    for path in sorted(per_file):
        out.write(f"- {path}:\n")
        for code, count in sorted(per_file[path].items(), key=lambda item: (-item[1], item[0])):
            out.write(f"    {count} × {code} ({_name(code)})\n")
