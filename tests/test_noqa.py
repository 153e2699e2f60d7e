"""Suppression comments: file-level `# ckpt-doctor: noqa[: CODES]`, CKPT001 (unused-noqa), and the noqa module
shared by suppression, `--add-noqa` and CKPT001."""

from __future__ import annotations

import pytest

from conftest import CKPT101_SCRIPT, CLEAN_SCRIPT
from ckpt_doctor.check import noqa

TWO = CKPT101_SCRIPT + "\n\ndef other(block, x):\n    return checkpoint(block, x, use_reentrant=True)\n"  # CKPT101 l5, CKPT102 l9
LORA_YAML = "stage: sft\nfinetuning_type: lora\nlora_r: 16\n"  # CKPT501 on line 3


# --- file-level suppression ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "directive, codes",
    [
        ("# ckpt-doctor: noqa", []),
        ("# ckpt-doctor: noqa: CKPT101", ["CKPT102"]),
        ("# CKPT-DOCTOR: NOQA: CKPT1", []),
        ("#ckpt-doctor:noqa:CKPT102", ["CKPT101"]),
        ("# ckpt-doctor: noqa: CKPT2", ["CKPT101", "CKPT102"]),
    ],
)
def test_file_level_noqa(cli, directive, codes):
    cli.write("a.py", directive + "\n" + TWO)
    result = cli.check("a.py", "--fail-on", "info")
    assert result.codes == codes
    assert result.code == (1 if codes else 0)


def test_file_level_noqa_anywhere_at_top_level_but_not_indented_or_trailing(cli):
    cli.write("a.py", TWO + "\n# ckpt-doctor: noqa\n")
    assert cli.check("a.py").codes == []
    cli.write("a.py", TWO.replace("    return checkpoint(block, x)\n", "    # ckpt-doctor: noqa\n    return checkpoint(block, x)\n"))
    assert cli.check("a.py", "--fail-on", "info").codes == ["CKPT101", "CKPT102"]
    cli.write("a.py", "x = 1  # ckpt-doctor: noqa\n" + TWO)
    assert cli.check("a.py", "--fail-on", "info").codes == ["CKPT101", "CKPT102"]


def test_file_level_noqa_in_yaml_config(cli):
    cli.write("sft.yaml", LORA_YAML)
    assert cli.check("sft.yaml").codes == ["CKPT501"]
    cli.write("sft.yaml", "# ckpt-doctor: noqa: CKPT501\n" + LORA_YAML)
    assert cli.check("sft.yaml").codes == []
    cli.write("sft.yaml", "# ckpt-doctor: noqa: CKPT502\n" + LORA_YAML)
    assert cli.check("sft.yaml").codes == ["CKPT501"]


# --- CKPT001 unused-noqa ------------------------------------------------------------------------


def test_unused_noqa_is_reported_with_a_safe_fix(cli):
    path = cli.write("a.py", CLEAN_SCRIPT.replace("use_reentrant=False)", "use_reentrant=False)  # noqa: CKPT101, E501  # legacy"))
    result = cli.check("a.py")
    assert result.codes == ["CKPT001"] and result.code == 1
    assert "a.py:5:55: CKPT001 [warning]" in result.out and "`CKPT101`" in result.out
    assert cli.check("a.py", "--fix").code == 0
    assert path.read_text().splitlines()[4] == "    return checkpoint(block, x, use_reentrant=False)  # noqa: E501  # legacy"


@pytest.mark.parametrize(
    "comment, fixed",
    [
        ("  # noqa: CKPT101", ""),
        ("  # noqa: CKPT101  # keep this", "  # keep this"),
        ("  # noqa:CKPT101,CKPT2", ""),
        ("  # NOQA: E501,CKPT1,W291", "  # noqa: E501, W291"),
    ],
)
def test_unused_noqa_fix(cli, comment, fixed):
    path = cli.write("a.py", CLEAN_SCRIPT.replace("use_reentrant=False)", "use_reentrant=False)" + comment))
    assert cli.check("a.py").codes == ["CKPT001"]
    cli.check("a.py", "--fix")
    assert path.read_text() == CLEAN_SCRIPT.replace("use_reentrant=False)", "use_reentrant=False)" + fixed)


def test_unused_noqa_fixed_together_with_other_fixes(cli):
    path = cli.write("a.py", CKPT101_SCRIPT + "x = 1  # noqa: CKPT3\n")
    assert cli.check("a.py").codes == ["CKPT101", "CKPT001"]
    cli.check("a.py", "--fix")
    assert path.read_text() == CKPT101_SCRIPT.replace("checkpoint(block, x)", "checkpoint(block, x, use_reentrant=False)") + "x = 1\n"


@pytest.mark.parametrize(
    "comment, args",
    [
        ("  # noqa: E501", ()),  # another tool's code
        ("  # noqa", ()),  # a bare noqa may be another linter's
        ("  # noqa: CKPT101", ("--ignore", "CKPT101")),  # a rule that does not run: not unused (ruff)
        ("  # noqa: CKPT101", ("--select", "CKPT2")),
        ("  # noqa: CKPT101", ("--ignore", "CKPT001")),
        ("  # noqa: CKPT999", ()),  # names no rule
    ],
)
def test_unused_noqa_is_not_reported(cli, comment, args):
    cli.write("a.py", CLEAN_SCRIPT.replace("use_reentrant=False)", "use_reentrant=False)" + comment))
    assert cli.check("a.py", *args).codes == []


def test_unused_noqa_respects_per_file_ignores(cli):
    cli.write("pyproject.toml", '[tool.ckpt-doctor]\nper-file-ignores = { "legacy/*" = ["CKPT101"] }\n')
    cli.write("legacy/a.py", CLEAN_SCRIPT.replace("use_reentrant=False)", "use_reentrant=False)  # noqa: CKPT101"))
    assert cli.check("legacy/a.py").codes == []


def test_noqa_in_a_string_is_not_a_comment(cli):
    cli.write("a.py", CLEAN_SCRIPT + 'NOTE = "x  # noqa: CKPT101"\n')
    assert cli.check("a.py").codes == []
    cli.write("a.py", CKPT101_SCRIPT.replace("checkpoint(block, x)", 'checkpoint(block, x, "# noqa")'))
    assert cli.check("a.py").codes == ["CKPT101"]


def test_unused_noqa_in_a_file_the_prefilter_skips(cli):
    cli.write("a.py", "x = 1  # noqa: CKPT101\n")
    assert cli.check("a.py").codes == ["CKPT001"]


def test_unused_noqa_in_a_yaml_config(cli):
    path = cli.write("sft.yaml", LORA_YAML + "lora_alpha: 32  # noqa: CKPT501\n")
    assert cli.check("sft.yaml").codes == ["CKPT501", "CKPT001"]
    cli.check("sft.yaml", "--fix")
    assert path.read_text().endswith("lora_alpha: 32\n")


def test_file_level_noqa_silences_unused_noqa(cli):
    cli.write("a.py", "# ckpt-doctor: noqa: CKPT001\n" + CLEAN_SCRIPT.replace("use_reentrant=False)", "use_reentrant=False)  # noqa: CKPT101"))
    assert cli.check("a.py").codes == []


# --- the module ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, codes, expected",
    [
        ("x = f(a)", ["CKPT101"], "x = f(a)  # noqa: CKPT101"),
        ("x = f(a)   ", ["CKPT101", "CKPT204"], "x = f(a)  # noqa: CKPT101, CKPT204"),
        ("x = f(a)  # noqa: E501", ["CKPT101"], "x = f(a)  # noqa: E501, CKPT101"),
        ("x = f(a)  # noqa:E501  # why", ["CKPT101"], "x = f(a)  # noqa: E501, CKPT101  # why"),
        ("x = f(a)  # noqa: CKPT1", ["CKPT101"], "x = f(a)  # noqa: CKPT1"),
        ("x = f(a)  # noqa", ["CKPT101"], "x = f(a)  # noqa"),
        ("x = f(a)  # a comment", ["CKPT101"], "x = f(a)  # a comment  # noqa: CKPT101"),
        ('x = f("# noqa: E501")', ["CKPT101"], 'x = f("# noqa: E501")  # noqa: CKPT101'),
    ],
)
def test_with_codes(line, codes, expected):
    assert noqa.with_codes(line, codes) == expected
    assert {d for directive in noqa.line_directives(expected, 1) for d in directive.codes} >= set(codes) or "# noqa" in expected


def test_file_codes():
    assert noqa.file_codes(["x = 1"]) is None
    assert noqa.file_codes(["# ckpt-doctor: noqa"]) == []
    assert noqa.file_codes(["# ckpt-doctor: noqa: CKPT1, ckpt201", "# ckpt-doctor: noqa: CKPT3"]) == ["CKPT1", "CKPT201", "CKPT3"]
    assert noqa.file_codes(["    # ckpt-doctor: noqa"]) is None
