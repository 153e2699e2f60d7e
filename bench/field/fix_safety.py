#!/usr/bin/env python3
"""No fix may break code: apply every fix ckpt-doctor offers to every file of a corpus and check the result.

For each Python file (notebooks are left to the notebook tests):
1. `--fix --unsafe-fixes` applied: the fixed text must compile;
2. every fix that edits a call must edit a call of the library it is for: a torch / transformers / peft / TRL
   callee, or a receiver the analysis resolved to such an object, made in this file (not in a sibling module);
3. every name a *safe* fix writes must exist in the lowest release the project allows (`FIX_NAMES_SINCE`);
   run on the file as found (with its pins), and again as if its project declared nothing.

    python bench/field/fix_safety.py /tmp/ckpt-corpus /tmp/blind-corpus

For each framework config and launcher (YAML, JSON, shell), the fixes (key renames) applied must leave a file
that still reads as YAML / JSON (`bash -n` passes for a shell script), keep every other line as it was, and write
only keys the framework reads.

Prints one line per problem and the totals; exit status 1 when there is a problem, 0 otherwise.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ckpt_doctor.analysis import analyze
from ckpt_doctor.analysis.library import FIX_NAMES_SINCE, HF_PACKAGES
from ckpt_doctor.analysis.source import SourceError, read_source
from ckpt_doctor.check.fix import FixError, apply_fixes
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.config import Settings
from ckpt_doctor.findings import Applicability, RenameKeywords, RenameMethod, ReplaceText, SetKeywords

CALL_EDITS = (SetKeywords, RenameMethod, RenameKeywords)
LIBRARY_CALLEES = ("torch.", "functools.partial") + HF_PACKAGES


def problems_in(path: Path, root: Path) -> tuple[int, list[str]]:
    """(fixes offered, problems) for one file."""
    try:
        source = read_source(str(path))
    except SourceError:
        return 0, []
    if source.cells is not None:
        return 0, []
    settings = Settings(root=root)
    try:
        findings = lint_text(source, settings)
        analysis = analyze(source, settings)
    except (SyntaxError, ValueError):
        return 0, []
    try:
        compile(source.text, str(path), "exec")
    except (SyntaxError, ValueError):
        return 0, []  # it does not compile as written (a repeated keyword, which `ast.parse` accepts): no fix to blame
    fixes = [f for f in findings if f.fix is not None and f.fix.applicability is not Applicability.DISPLAY_ONLY]
    out: list[str] = []
    try:
        fixed = apply_fixes(source.text, [f.fix for f in fixes])
        compile(fixed, str(path), "exec")
    except FixError:
        pass  # refused as a whole: nothing is written, nothing breaks
    except SyntaxError as exc:
        out.append(f"{path}: the fixed file does not compile: {exc.msg} (line {exc.lineno})")
    calls = {c.span: c for c in analysis.facts.calls if c.via is None}
    for finding in fixes:
        where = f"{path}:{finding.span.start.line}: {finding.code}"
        if isinstance(finding.fix.edit, CALL_EDITS):
            call = calls.get(finding.fix.span)
            if call is None or call.via is not None:
                out.append(f"{where}: the fix edits no call of this file")
            elif not (call.qualname or "").startswith(LIBRARY_CALLEES) and analysis.training.receiver_is_library(call) is not True:
                out.append(f"{where}: the fix edits `{call.receiver}.{call.name}()`, not known to be the library's")
        if finding.fix.applicability is Applicability.SAFE:
            for name in finding.fix.introduced_names():
                package, since = FIX_NAMES_SINCE.get(name, (None, None))
                if package is not None and analysis.versions.at_least(package, since) is not True:
                    out.append(f"{where}: a safe fix writes `{name}`, which {package} before {since} lacks "
                               f"({analysis.versions.get(package).describe(package)})")
    return len(fixes), out


def config_problems_in(path: Path, root: Path) -> tuple[int, list[str]]:
    """(fixes offered, problems) for one config or launcher."""
    import subprocess

    from ckpt_doctor.analysis import analyze_config, analyze_launcher
    from ckpt_doctor.analysis.config_document import ConfigError, read_document
    from ckpt_doctor.analysis.frameworks import key_set
    from ckpt_doctor.check.lint import check_source

    try:
        source = read_source(str(path))
    except SourceError:
        return 0, []
    settings = Settings(root=root)
    result = check_source(source, settings)
    fixes = [f for f in result.findings if f.fix is not None and f.fix.applicability is not Applicability.DISPLAY_ONLY]
    if not fixes:
        return 0, []
    out: list[str] = []
    fixed = apply_fixes(source.text, [f.fix for f in fixes])
    changed = {f.fix.span.start.line for f in fixes}
    before, after = source.text.splitlines(), fixed.splitlines()
    if len(before) != len(after) or any(a != b for n, (a, b) in enumerate(zip(before, after), 1) if n not in changed):
        out.append(f"{path}: a fix changed lines it does not report")
    if path.suffix in (".yaml", ".yml", ".json"):
        try:
            read_document(fixed, str(path))
        except ConfigError as exc:
            out.append(f"{path}: the fixed file does not read: {exc}")
        runs = [analyze_config(source, settings)]
    else:
        done = subprocess.run(["bash", "-n"], input=fixed, text=True, capture_output=True, check=False)
        if done.returncode != 0:
            out.append(f"{path}: the fixed script does not parse: {done.stderr.strip()[:200]}")
        runs = analyze_launcher(source, settings)
    tables = {"swift": "swift", "llamafactory": "llamafactory", "axolotl": "axolotl", "accelerate": "accelerate"}
    for finding in fixes:
        new = finding.fix.edit.content.strip("\"'-") if isinstance(finding.fix.edit, ReplaceText) else ""
        frameworks = {a.run.framework.id for a in runs if a is not None}
        keys = [key_set(tables[f]) for f in frameworks if f in tables]
        if keys and not any(k is not None and new in k.keys for k in keys):
            out.append(f"{path}:{finding.span.start.line}: {finding.code} writes `{new}`, which the framework does not read")
    return len(fixes), out


def pinless(path: Path) -> tuple[int, list[str]]:
    """The same file as if its project declared nothing: a copy's text under a folder with no pins."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
        copy.write_bytes(path.read_bytes())
        (Path(folder) / ".git").mkdir()
        offered, found = problems_in(copy, Path(folder))
        return offered, [p.replace(str(copy), f"{path} (pinless)") for p in found]


def main(argv: list[str] | None = None) -> int:
    roots = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    if not roots:
        print(__doc__.split("\n\n")[-2].strip(), file=sys.stderr)
        return 2
    files = offered = 0
    problems: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            files += 1
            for count, found in (problems_in(path, root), pinless(path)):
                offered += count
                problems += found
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json", ".sh") and p.is_file()):
            files += 1
            count, found = config_problems_in(path, root)
            offered += count
            problems += found
    for line in problems:
        print(line)
    print(f"{files} files, {offered} fixes offered (as found + pinless), {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
