"""No fix breaks code (issue 9): every fix offered on the fixtures, the examples and every rule page's example
compiles, edits a call of the library it is for, and writes only names the project's lowest release has, also
when the project declares no versions at all. `bench/field/fix_safety.py` runs the same on the real corpora."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ckpt_doctor.rule_pages import examples
from ckpt_doctor.rules import all_rules

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fix_safety", ROOT / "bench" / "field" / "fix_safety.py")
fix_safety = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fix_safety)

SCRIPTS = sorted(ROOT.glob("fixtures/*/train.py")) + sorted(ROOT.glob("examples/*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_fix_breaks_a_fixture(path):
    offered, problems = fix_safety.problems_in(path, path.parent)
    assert problems == []
    assert fix_safety.pinless(path)[1] == []


def test_the_fixtures_do_offer_fixes():
    assert sum(fix_safety.problems_in(p, p.parent)[0] for p in SCRIPTS) >= 10  # the checks above checked something


@pytest.mark.parametrize("code", [r.code for r in all_rules()])
def test_no_fix_breaks_a_rule_page_example(code, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(examples(code).bad)
    (tmp_path / ".git").mkdir()
    assert fix_safety.problems_in(script, tmp_path)[1] == []
