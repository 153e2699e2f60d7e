"""`ckpt-doctor check` and `ckpt-doctor rules` as a user runs them: real files, real exit codes.

Most cases run in-process through click's CliRunner; a representative handful run
`python -m ckpt_doctor` in a subprocess.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from importlib import metadata

import pytest

from conftest import (
    ALL_CODES, CKPT101_FIXED, CKPT101_SCRIPT, CKPT102_SCRIPT, CLEAN_SCRIPT, REPO_ROOT, TARGET_ARGS, TARGET_TOML,
)

CKPT101_LINE = "a.py:5:12: CKPT101 [warning] "


# --- exit codes ---------------------------------------------------------------------------------


def test_subprocess_exit_codes_clean_findings_and_usage_error(cli):
    cli.write("clean.py", CLEAN_SCRIPT)
    cli.write("a.py", CKPT101_SCRIPT)

    clean = cli.check_subprocess("clean.py")
    assert clean.code == 0, clean.err
    assert clean.codes == []
    assert "All checks passed!" in clean.out

    bad = cli.check_subprocess("a.py", "clean.py")
    assert bad.code == 1, bad.err
    assert bad.out.splitlines()[0].startswith(CKPT101_LINE)
    assert bad.codes == ["CKPT101"]

    usage = cli.check_subprocess("a.py", "--fail-on", "sometimes")
    assert usage.code == 2
    assert usage.out == ""


def test_exit_zero_still_reports(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.check("a.py", "--exit-zero")
    assert result.code == 0
    assert result.codes == ["CKPT101"]


@pytest.mark.parametrize(
    "script, fail_on, expected",
    [
        (CKPT101_SCRIPT, None, 1),  # default: warning
        (CKPT101_SCRIPT, "warning", 1),
        (CKPT101_SCRIPT, "error", 0),
        (CKPT101_SCRIPT, "info", 1),
        (CKPT102_SCRIPT, None, 0),  # an info finding does not fail by default
        (CKPT102_SCRIPT, "warning", 0),
        (CKPT102_SCRIPT, "info", 1),
        (CLEAN_SCRIPT, "info", 0),
    ],
)
def test_fail_on(cli, script, fail_on, expected):
    cli.write("a.py", script)
    result = cli.check("a.py", *(["--fail-on", fail_on] if fail_on else []))
    assert result.code == expected, result.out + result.err
    if script is not CLEAN_SCRIPT:
        assert len(result.codes) == 1  # reported whatever the exit code


# --- select / ignore ----------------------------------------------------------------------------

TWO_FINDINGS = CKPT101_SCRIPT + "\n\ndef other(block, x):\n    return checkpoint(block, x, use_reentrant=True)\n"


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], ["CKPT101", "CKPT102"]),
        (["--select", "CKPT1"], ["CKPT101", "CKPT102"]),
        (["--select", "CKPT101"], ["CKPT101"]),
        (["--select", "ckpt102"], ["CKPT102"]),
        (["--select", "ALL"], ["CKPT101", "CKPT102"]),
        (["--select", "CKPT2"], []),
        (["--select", "CKPT2,CKPT101"], ["CKPT101"]),
        (["--select", "CKPT2", "--extend-select", "CKPT102"], ["CKPT102"]),
        (["--ignore", "CKPT1"], []),
        (["--ignore", "CKPT101"], ["CKPT102"]),
        (["--select", "ALL", "--ignore", "CKPT10"], []),
        (["--select", "CKPT101", "--ignore", "CKPT1"], ["CKPT101"]),  # the more specific code wins
        (["--ignore", "CKPT101", "--ignore", "CKPT102"], []),
    ],
)
def test_select_ignore_prefixes(cli, args, expected):
    cli.write("a.py", TWO_FINDINGS)
    result = cli.check("a.py", "--fail-on", "info", *args)
    assert result.codes == expected, result.out + result.err
    assert result.code == (1 if expected else 0)


@pytest.mark.parametrize("option", ["--select", "--ignore", "--extend-select"])
@pytest.mark.parametrize("value", ["FOO", "CKPT10X", "E501"])
def test_unknown_code_prefix_is_a_usage_error(cli, option, value):
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.check("a.py", option, value)
    assert result.code == 2
    assert value in result.err
    assert "CKPT101" not in result.out


def test_unknown_code_in_config_is_an_error(cli):
    # A typo in pyproject's select must not silently turn every rule off.
    cli.write("pyproject.toml", "[tool.ckpt-doctor]\nselect = [\"CKTP1\"]\n" + TARGET_TOML)
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.check("a.py", targets=False)
    assert result.code == 2, result.out
    assert "CKTP1" in result.err


# --- noqa ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "comment, suppressed",
    [
        ("  # noqa", True),
        ("  # noqa: CKPT101", True),
        ("  # NOQA:CKPT101", True),
        ("  # noqa: CKPT202, CKPT101", True),
        ("  # noqa: CKPT202", False),
        ("  # noqa: CKPT102", False),
        ("  # keep it", False),
    ],
)
def test_noqa_on_the_reported_line(cli, comment, suppressed):
    cli.write("a.py", CKPT101_SCRIPT.replace("checkpoint(block, x)", "checkpoint(block, x)" + comment))
    result = cli.check("a.py")
    unused = ["CKPT001"] if "CKPT2" in comment or "CKPT102" in comment else []  # a code that suppressed nothing
    assert result.codes == ([] if suppressed else ["CKPT101"]) + unused
    assert result.code == (0 if suppressed and not unused else 1)


def test_noqa_on_another_line_does_not_suppress(cli):
    cli.write("a.py", CKPT101_SCRIPT.replace("def forward(block, x):", "def forward(block, x):  # noqa: CKPT101"))
    assert cli.check("a.py").codes == ["CKPT001", "CKPT101"]  # and the comment is reported as unused


# --- pyproject.toml -----------------------------------------------------------------------------


def test_pyproject_found_from_cwd_and_parents(cli, monkeypatch):
    cli.write(
        "pyproject.toml",
        "[tool.ckpt-doctor]\n"
        'select = ["CKPT1"]\n'
        'ignore = ["CKPT102"]\n'
        'per-file-ignores = { "scripts/*" = ["CKPT101"] }\n'
        'extend-exclude = ["old"]\n'
        + TARGET_TOML,
    )
    cli.write("pkg/a.py", TWO_FINDINGS)
    cli.write("scripts/b.py", CKPT101_SCRIPT)
    cli.write("old/c.py", CKPT101_SCRIPT)

    result = cli.check(targets=False)  # no paths: the current folder
    assert result.code == 1
    assert result.out.splitlines()[0].startswith("pkg/a.py:5:12: CKPT101 [warning] ")
    assert result.codes == ["CKPT101"]  # CKPT102 ignored, scripts/ per-file-ignored, old/ excluded

    monkeypatch.chdir(cli.root / "pkg")  # the nearest pyproject.toml is the parent's
    sub = cli.check(".", "../scripts/b.py", targets=False)
    assert sub.codes == ["CKPT101"]
    assert sub.out.startswith("a.py:5:12: CKPT101")


def test_pyproject_fail_on_and_cli_override(cli):
    cli.write("pyproject.toml", '[tool.ckpt-doctor]\nfail-on = "error"\nselect = ["CKPT2"]\n' + TARGET_TOML)
    cli.write("a.py", CKPT101_SCRIPT)
    assert cli.check("a.py", targets=False).codes == []
    overridden = cli.check("a.py", "--select", "CKPT1", targets=False)
    assert overridden.codes == ["CKPT101"]
    assert overridden.code == 0  # fail-on = "error" from the file
    assert cli.check("a.py", "--select", "CKPT1", "--fail-on", "warning", targets=False).code == 1


def test_pyproject_target_versions_decide_version_rules(cli):
    # CKPT205 (deprecated gradient_checkpointing names) applies only where transformers has the new names.
    script = "from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('gpt2')\nmodel.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})\n"
    cli.write("a.py", script)
    cli.write("pyproject.toml", '[tool.ckpt-doctor]\nfail-on = "info"\n' + TARGET_TOML)
    new = cli.check("a.py", targets=False)
    cli.write("pyproject.toml", '[tool.ckpt-doctor]\nfail-on = "info"\ntarget-versions = { transformers = "4.46", torch = "2.5", peft = "0.13", trl = "0.12" }\n')
    old = cli.check("a.py", targets=False)
    assert "CKPT205" in new.codes
    assert "CKPT205" not in old.codes


@pytest.mark.parametrize(
    "table, words",
    [
        ('fail-on = "sometimes"', ["fail-on"]),
        ('selectt = ["CKPT1"]', ["selectt"]),
        ('target-versions = { tensorflow = "2.0" }', ["tensorflow"]),
        ('max-file-size = "lots"', ["lots"]),
        ("select = 3", ["select"]),
    ],
)
def test_bad_config_is_a_one_line_error(cli, table, words):
    cli.write("pyproject.toml", f"[tool.ckpt-doctor]\n{table}\n")
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.check("a.py")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "pyproject.toml" in result.err
    for word in words:
        assert word in result.err


def test_invalid_toml_is_an_error(cli):
    cli.write("pyproject.toml", "[tool.ckpt-doctor\nselect = \n")
    cli.write("a.py", CKPT101_SCRIPT)
    # A broken pyproject.toml without a readable [tool.ckpt-doctor] table is not ours to judge,
    # but an explicit --config must be.
    result = cli.check("a.py", "--config", "pyproject.toml")
    assert result.code == 2
    assert "pyproject.toml" in result.err and "Traceback" not in result.err


# --- target versions ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, word", [("tensorflow=2.15", "tensorflow"), ("transformers=banana", "banana"), ("transformers", "transformers")])
def test_bad_target_version_is_a_one_line_error(cli, value, word):
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.check("a.py", "--target-version", value)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert word in lines[0]
    assert result.codes == []


# --- files and folders --------------------------------------------------------------------------


def _tree(cli):
    for name in ("top.py", "sub/x.py", ".venv/lib/x.py", "build/x.py", "node_modules/x.py", "ignored/x.py",
                 "sub/gen_cache.py", "experiments/old/x.py", "nb/x.ipynb.bak", "README.md"):
        cli.write(name, CKPT101_SCRIPT)
    cli.write(".gitignore", "ignored/\n")
    cli.write("sub/.gitignore", "gen_*.py\n")


def _files(result):
    return sorted(line.split(":", 1)[0] for line in result.out.splitlines() if ": CKPT" in line)


def test_folders_respect_gitignore_and_default_excludes(cli):
    _tree(cli)
    result = cli.check(".")
    assert _files(result) == ["experiments/old/x.py", "sub/x.py", "top.py"]
    assert result.code == 1


def test_extend_exclude(cli):
    _tree(cli)
    assert _files(cli.check(".", "--extend-exclude", "experiments/old")) == ["sub/x.py", "top.py"]
    assert _files(cli.check(".", "--extend-exclude", "top.py", "--extend-exclude", "experiments")) == ["sub/x.py"]
    assert _files(cli.check("sub", "--extend-exclude", "x.py")) == []


def test_explicit_files_are_checked_unless_force_exclude(cli):
    _tree(cli)
    named = ["build/x.py", "ignored/x.py", ".venv/lib/x.py", "top.py"]
    assert _files(cli.check(*named)) == sorted(named)
    forced = cli.check(*named, "--force-exclude")
    assert _files(forced) == ["top.py"]
    only_excluded = cli.check("build/x.py", "--force-exclude")
    assert only_excluded.code == 0 and only_excluded.codes == []
    assert _files(cli.check("top.py", "--force-exclude", "--extend-exclude", "top.py")) == []


def test_missing_path_is_reported_and_others_still_checked(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.check("nope.py", "a.py")
    assert result.code == 2
    assert "nope.py" in result.err
    assert result.codes == ["CKPT101"]


# --- fixes --------------------------------------------------------------------------------------

COMMENTED = """\
import torch
from torch.utils.checkpoint import checkpoint  # the import


# a comment before the function
def forward(block, x):
    \"\"\"Docstring.\"\"\"
    y = checkpoint(block, x)  # trailing comment
    return checkpoint(block,   y)   # odd spacing is kept
"""


def test_fix_writes_keeps_comments_and_is_idempotent(cli):
    path = cli.write("a.py", COMMENTED)
    result = cli.check("a.py", "--fix")
    assert result.code == 0, result.out + result.err
    assert "Fixed 2 findings" in result.out
    fixed = path.read_bytes()
    assert fixed.decode() == COMMENTED.replace("checkpoint(block, x)", "checkpoint(block, x, use_reentrant=False)").replace(
        "checkpoint(block,   y)", "checkpoint(block,   y, use_reentrant=False)"
    )
    again = cli.check("a.py", "--fix")
    assert again.code == 0
    assert "Fixed" not in again.out
    assert path.read_bytes() == fixed
    assert cli.check("a.py").codes == []


def test_fix_of_multiline_call_with_comments_does_not_duplicate_them(cli):
    script = CKPT101_SCRIPT.replace("checkpoint(block, x)", "checkpoint(\n        block,  # the layer\n        x,\n    )")
    path = cli.write("a.py", script)
    assert cli.check("a.py", "--fix").code == 0
    text = path.read_text()
    compile(text, "a.py", "exec")
    assert text.count("# the layer") == 1, text
    assert "use_reentrant=False" in text


def test_fix_subprocess_keeps_permissions(cli):
    path = cli.write("a.py", CKPT101_SCRIPT, mode=0o751)
    result = cli.check_subprocess("a.py", "--fix")
    assert result.code == 0, result.out + result.err
    assert path.read_text() == CKPT101_FIXED
    assert stat.S_IMODE(path.stat().st_mode) == 0o751
    leftovers = [p.name for p in cli.root.iterdir() if p.name not in ("a.py", ".git")]
    assert leftovers == []  # no temporary file left behind


def test_diff_prints_and_writes_nothing(cli):
    path = cli.write("a.py", CKPT101_SCRIPT)
    before = path.stat().st_mtime_ns
    result = cli.check("a.py", "--diff")
    assert result.code == 1
    assert path.read_text() == CKPT101_SCRIPT
    assert path.stat().st_mtime_ns == before
    lines = result.out.splitlines()
    assert lines[0] == "--- a/a.py" and lines[1] == "+++ b/a.py"
    assert lines[2].startswith("@@ ")
    assert "-    return checkpoint(block, x)" in lines
    assert "+    return checkpoint(block, x, use_reentrant=False)" in lines
    # The diff applies: the + side is the --fix result.
    new_side = [l[1:] for l in lines[3:] if l.startswith(("+", " "))]
    assert "\n".join(new_side) in CKPT101_FIXED

    cli.write("a.py", CKPT101_FIXED)
    clean = cli.check("a.py", "--diff")
    assert clean.code == 0
    assert "---" not in clean.out


def test_unsafe_fixes(cli):
    path = cli.write("a.py", CKPT102_SCRIPT)
    safe_only = cli.check("a.py", "--fix", "--fail-on", "info")
    assert path.read_text() == CKPT102_SCRIPT
    assert safe_only.codes == ["CKPT102"] and safe_only.code == 1
    assert "--unsafe-fixes" in safe_only.out

    diff = cli.check("a.py", "--diff", "--unsafe-fixes")
    assert diff.code == 1 and "+    return checkpoint(block, x, use_reentrant=False)" in diff.out
    assert path.read_text() == CKPT102_SCRIPT

    unsafe = cli.check("a.py", "--fix", "--unsafe-fixes", "--fail-on", "info")
    assert unsafe.code == 0, unsafe.out
    assert path.read_text() == CLEAN_SCRIPT


def test_fix_through_module_alias_is_idempotent(cli):
    # `import torch.utils.checkpoint as cp` resolves; the fix parses and a second --fix adds nothing.
    script = "import torch.utils.checkpoint as cp\n\ndef f(block, x):\n    return cp.checkpoint(block, x)\n"
    path = cli.write("a.py", script)
    cli.check("a.py", "--fix")
    once = path.read_text()
    assert "use_reentrant=False" in once
    compile(once, "a.py", "exec")
    cli.check("a.py", "--fix")
    assert path.read_text() == once


# --- rules, version -----------------------------------------------------------------------------


def test_rules_lists_the_catalogue(cli):
    result = cli.invoke("rules")
    assert result.code == 0
    listed = [line.split()[0] for line in result.out.splitlines() if line.strip()]
    for code in ALL_CODES:
        assert code in listed
    assert listed == sorted(listed)


def test_rules_json(cli):
    data = json.loads(cli.invoke("rules", "--output-format", "json").out)
    by_code = {item["code"]: item for item in data}
    assert set(ALL_CODES) <= set(by_code)
    assert by_code["CKPT101"]["severity"] == "warning"
    assert by_code["CKPT101"]["fix"] == "safe"


def test_rules_page(cli):
    page = REPO_ROOT / "rules" / "CKPT101.md"
    if not page.is_file():
        pytest.skip("rules/CKPT101.md is not written yet")
    result = cli.invoke("rules", "CKPT101")
    assert result.code == 0
    assert result.out == page.read_text(encoding="utf-8")
    lower = cli.invoke("rules", "ckpt101")
    assert lower.out == result.out


def test_rules_unknown_code(cli):
    result = cli.invoke("rules", "CKPT999")
    assert result.code == 2
    assert "CKPT999" in result.err and result.out == ""


def test_version_subprocess(cli):
    result = cli.subprocess("--version")
    assert result.code == 0
    import ckpt_doctor

    assert ckpt_doctor.__version__ in result.out
    assert metadata.version("ckpt-doctor") == ckpt_doctor.__version__


# --- what a check imports -----------------------------------------------------------------------

_IMPORTS = """
import json, sys
from ckpt_doctor.cli import main
try:
    main(sys.argv[1:], prog_name="ckpt-doctor")
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "peft", "trl", "numpy", "libcst", "accelerate", "deepspeed"})
sys.stderr.write("MODULES=" + json.dumps({"code": code, "heavy": heavy}) + "\\n")
"""


def _imported(cli, *args):
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS, "check", *args], cwd=cli.root, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    line = [l for l in proc.stderr.splitlines() if l.startswith("MODULES=")]
    assert line, proc.stderr
    return json.loads(line[-1][len("MODULES="):])


def test_check_never_imports_torch_or_transformers_nor_libcst_without_fixes(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    cli.write("hf.py", "from transformers import TrainingArguments\nargs = TrainingArguments('out', gradient_checkpointing=True)\n")
    plain = _imported(cli, "a.py", "hf.py", "--no-cache")  # no --target-version: versions read from metadata
    assert plain == {"code": 1, "heavy": []}
    for fmt in ("concise", "github", "junit", "pylint"):
        assert _imported(cli, "a.py", "--no-cache", "--output-format", fmt, *TARGET_ARGS)["heavy"] == []
    # json, sarif, rdjson carry the fixes as text edits, which LibCST computes (still no torch)
    assert _imported(cli, "a.py", "--no-cache", "--output-format", "sarif", *TARGET_ARGS)["heavy"] == ["libcst"]
    # The probe can see an import: --diff needs libcst, and then it is there (but still no torch).
    assert _imported(cli, "a.py", "--no-cache", "--diff", *TARGET_ARGS)["heavy"] == ["libcst"]


# --- cache --------------------------------------------------------------------------------------


def test_cache_second_run_identical_and_respects_settings(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    first = cli.check("a.py", cache=True)
    entries = list((cli.root / ".ckpt_doctor_cache").rglob("*.json"))
    assert entries, "no cache entry written"
    second = cli.check("a.py", cache=True)
    assert (second.code, second.out, second.err) == (first.code, first.out, first.err)
    # A cached result is not reused under other settings or for other content.
    assert cli.check("a.py", "--select", "CKPT2", cache=True).codes == []
    cli.write("a.py", CKPT101_FIXED)
    assert cli.check("a.py", cache=True).codes == []


def test_cache_follows_the_settings_file_a_script_reads(cli):
    """A YAML config in the parent folder, named by an option default: changing it changes the finding."""
    cli.write("configs/train.yaml", "model: Qwen/Qwen2.5-0.5B\nbatch_size: 4\n")
    cli.write("scripts/train.py", """import argparse
import yaml
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
parser = argparse.ArgumentParser()
parser.add_argument("--config", default="configs/train.yaml")
cfg = yaml.safe_load(open(parser.parse_args().config))
model = AutoModelForCausalLM.from_pretrained(cfg["model"])
Trainer(model=model, args=TrainingArguments(per_device_train_batch_size=cfg["batch_size"])).train()
encoded = tokenizer(texts, truncation=True, max_length=2048)
""")
    args = ("scripts/train.py", "--select", "CKPT4", "--gpu-memory", "16GiB", "--output-format", "json")
    first = cli.check(*args, cache=True).json()
    assert "batch 4 (line 6, value in configs/train.yaml)" in first[0]["message"], first
    cli.write("configs/train.yaml", "model: Qwen/Qwen2.5-0.5B\nbatch_size: 32\n")
    again = cli.check(*args, cache=True).json()
    assert "batch 32 (line 6, value in configs/train.yaml)" in again[0]["message"], again


def test_cache_follows_the_requirement_files_and_their_includes(cli):
    """The versions a file targets come from requirement files: an edit of one, `-r` includes too, is a miss."""
    cli.write("requirements.txt", "-r requirements/base.txt\n")
    cli.write("requirements/base.txt", "transformers==4.46.0\n")
    cli.write("train.py", """from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
model = AutoModelForCausalLM.from_pretrained("gpt2")
Trainer(model=model, args=TrainingArguments("out", gradient_checkpointing=True)).train()
""")
    assert "CKPT201" in cli.check("train.py", cache=True, targets=False).codes
    cli.write("requirements/base.txt", "transformers==5.24.0\n")
    assert "CKPT201" not in cli.check("train.py", cache=True, targets=False).codes


@pytest.mark.parametrize("garbage", [b"garbage{{", b"\xff\xfe\x00", b"", b"[1, 2]", b'{"findings": 7}', b'"text"', b"null"])
def test_corrupted_cache_entry_is_ignored(cli, garbage):
    cli.write("a.py", CKPT101_SCRIPT)
    first = cli.check("a.py", "--output-format", "json", cache=True)
    entries = list((cli.root / ".ckpt_doctor_cache").rglob("*.json"))
    assert entries
    for entry in entries:
        entry.write_bytes(garbage)
    again = cli.check("a.py", "--output-format", "json", cache=True)
    assert again.code == first.code == 1
    assert again.json() == first.json()
    assert again.err == ""


def test_no_cache_writes_no_cache_folder(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.check_subprocess("a.py", "--no-cache")
    assert result.code == 1
    assert not (cli.root / ".ckpt_doctor_cache").exists()
    assert sorted(p.name for p in cli.root.iterdir()) == [".git", "a.py"]


def test_cache_does_not_leak_paths_between_working_directories(cli, monkeypatch):
    cli.write("proj/a.py", CKPT101_SCRIPT)
    cli.write("proj/pyproject.toml", "[tool.ckpt-doctor]\n" + TARGET_TOML)
    monkeypatch.chdir(cli.root / "proj")
    assert cli.check("a.py", cache=True, targets=False).out.startswith("a.py:5:12: CKPT101")
    (cli.root / "proj" / "sub").mkdir()
    monkeypatch.chdir(cli.root / "proj" / "sub")
    assert cli.check("../a.py", cache=True, targets=False).out.startswith("../a.py:5:12: CKPT101")
