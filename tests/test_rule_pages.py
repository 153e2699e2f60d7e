"""Every rule has a page, and every page's examples run through the checker.

Bad example: flagged by its rule exactly on the lines marked `# CKPTnnn`. Good example: no finding
of any rule. The fix of the bad example (unsafe ones included) parses, is idempotent, and leaves
the rule with nothing to report.
"""

from __future__ import annotations

import ast
import re
import tempfile
from pathlib import Path

import pytest

from ckpt_doctor.config import Settings
from ckpt_doctor.check.fix import applicable, apply_fixes
from ckpt_doctor.analysis.config_document import read_document
from ckpt_doctor.analysis.source import read_source
from ckpt_doctor.check.lint import check_source, lint_text
from ckpt_doctor.rule_pages import examples, page_text
from ckpt_doctor.rules import all_rules
from ckpt_doctor.analysis.source import SourceFile

NEWEST = {"torch": "2.13", "transformers": "5.24", "peft": "0.21", "trl": "1.16"}
RULES = all_rules()


def lint(code: str, assumes: dict[str, str], select: str = "CKPT", page=None, files: dict[str, str] | None = None):
    """The findings on an example: a script checked as text, a config or launcher written out with the files it names."""
    targets = {k: v for k, v in assumes.items() if k != "gpu-memory"}
    settings = Settings(target_versions={**NEWEST, **targets}, select=[select], gpu_memory=assumes.get("gpu-memory"))
    if page is None or page.language == "python":
        return lint_text(SourceFile("example.py", code, code.encode()), settings)
    folder = Path(tempfile.mkdtemp())
    for name, text in {f"example{page.suffix}": code, **(files or {})}.items():
        (folder / name).write_text(text, encoding="utf-8")
    return check_source(read_source(folder / f"example{page.suffix}"), settings).findings


def parses(page, text: str) -> None:
    if page.language == "python":
        ast.parse(text)
    elif page.language in ("yaml", "json"):
        read_document(text, f"example{page.suffix}")


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.code)
def test_page_header_matches_the_rule(rule):
    text = page_text(rule.code)
    assert text is not None, f"rules/{rule.code}.md is missing"
    assert text.startswith(f"# {rule.code}: {rule.name}\n")
    table = re.search(r"^\| *([a-z]+) *\| *([^|]+?) *\|", text.split("|---|", 1)[1], re.MULTILINE)
    assert table, "the Severity | Fix | Applies to table is missing"
    assert table.group(1) == str(rule.severity)
    fix_cell = table.group(2).lower()
    if rule.fix is None:
        assert fix_cell.startswith(("none", "no fix")), fix_cell
    else:
        assert fix_cell.startswith(str(rule.fix)), fix_cell
    for section in ("## What it does", "## Why is this bad", "## Example", "## Use instead", "## Fix safety"):
        assert section in text


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_bad_example_is_flagged_on_the_marked_lines(rule):
    page = examples(rule.code)
    parses(page, page.bad)
    assert page.marked_lines, f"{rule.code}: mark the reported line(s) with '# {rule.code}'"
    lines = sorted({f.span.start.line for f in lint(page.bad, page.assumes, page=page, files=page.bad_files) if f.code == rule.code})
    assert lines == page.marked_lines


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_good_example_is_clean(rule):
    page = examples(rule.code)
    parses(page, page.good)
    assert [(f.code, f.span.start.line, f.message) for f in lint(page.good, page.assumes, page=page, files=page.good_files)] == []


@pytest.mark.parametrize("rule", [r for r in RULES if r.fix is not None and str(r.fix) != "display-only"], ids=lambda r: r.code)
def test_fix_of_bad_example_parses_is_idempotent_and_clears_the_rule(rule):
    page = examples(rule.code)
    # CKPT001 judges the noqa codes of the rules that run: it needs them selected too
    select = rule.code if rule.checks else "CKPT"
    findings = [f for f in lint(page.bad, page.assumes, select=select, page=page, files=page.bad_files) if f.code == rule.code]
    specs = [f.fix for f in findings if applicable(f.fix, unsafe=True)]
    assert specs, f"{rule.code} offers a fix, but none applies to its example"
    fixed = apply_fixes(page.bad, specs)
    parses(page, fixed)
    assert fixed != page.bad
    # flagged no more, so a second --fix has nothing left to do
    assert [f for f in lint(fixed, page.assumes, select=select, page=page, files=page.bad_files) if f.code == rule.code] == []


def test_the_readme_catalogue_lists_every_rule_by_its_name_and_severity():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(r"^\| (CKPT\d{3}) \| ([a-z0-9-]+) \| (\w+) \|", readme, re.MULTILINE)}
    assert rows == {r.code: (r.name, r.severity.name.lower()) for r in all_rules()}
