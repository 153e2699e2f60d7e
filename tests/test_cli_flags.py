"""The `check` flags modelled on ruff's: --statistics, --show-fixes, --watch, --add-noqa, --stdin-filename / `-`,
--output-file, --show-settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CKPT101_FIXED, CKPT101_SCRIPT, CKPT102_SCRIPT, REPO_ROOT, TARGET_ARGS, code_cell, notebook

TWO = CKPT101_SCRIPT + "\n\ndef other(block, x):\n    return checkpoint(block, x, use_reentrant=True)\n"  # CKPT101 l5, CKPT102 l9
THREE = TWO + "\n\ndef third(block, x):\n    return checkpoint(block, x)\n"  # and CKPT101 on line 13
LORA_YAML = "stage: sft\nfinetuning_type: lora\nlora_r: 16\n"  # CKPT501 on line 3


# --- --statistics -------------------------------------------------------------------------------

STAT_ROW = re.compile(r"^\s*(?P<count>\d+)\t(?P<code>CKPT\d{3})\t(?P<fix>\[\*\] |    )(?P<name>[a-z0-9-]+)$")


def test_statistics_counts_per_code_most_frequent_first(cli):
    cli.write("a.py", THREE)
    result = cli.check("a.py", "--statistics")
    rows = [STAT_ROW.match(line) for line in result.out.splitlines() if "\t" in line]
    assert all(rows) and len(rows) == 2, result.out
    assert [(m["count"], m["code"], m["fix"], m["name"]) for m in rows] == [
        ("2", "CKPT101", "[*] ", "checkpoint-use-reentrant-unset"), ("1", "CKPT102", "    ", "checkpoint-reentrant-explicit")]
    assert "a.py:5" not in result.out  # counts instead of the findings
    assert result.code == 1
    unsafe = cli.check("a.py", "--statistics", "--unsafe-fixes").out
    assert re.search(r"1\tCKPT102\t\[\*\] ", unsafe)  # fixable once unsafe fixes are allowed


def test_statistics_json_and_clean(cli):
    cli.write("a.py", THREE)
    data = cli.check("a.py", "--statistics", "--output-format", "json").json()
    assert data == [{"code": "CKPT101", "name": "checkpoint-use-reentrant-unset", "count": 2, "fixable": True},
                    {"code": "CKPT102", "name": "checkpoint-reentrant-explicit", "count": 1, "fixable": False}]
    cli.write("a.py", CKPT101_FIXED)
    clean = cli.check("a.py", "--statistics")
    assert clean.code == 0 and clean.out == ""


# --- --show-fixes -------------------------------------------------------------------------------


def test_show_fixes_lists_applied_fixes(cli):
    path = cli.write("a.py", THREE)
    result = cli.check("a.py", "--fix", "--show-fixes")
    assert "Fixed 2 findings." in result.out
    assert "Fixed: 2 findings\n- a.py:\n    2 × CKPT101 (checkpoint-use-reentrant-unset)\n" in result.out
    assert "CKPT102 (" not in result.out  # unsafe: not applied
    assert "use_reentrant=False" in path.read_text()


def test_show_fixes_without_fix_lists_available_ones(cli):
    path = cli.write("a.py", TWO)
    result = cli.check("a.py", "--show-fixes", "--unsafe-fixes")
    assert "Fixable with `--fix --unsafe-fixes`: 2 findings\n- a.py:\n" in result.out
    assert "1 × CKPT101 (" in result.out and "1 × CKPT102 (" in result.out
    assert path.read_text() == TWO
    would = cli.check("a.py", "--diff", "--show-fixes")
    assert would.out.startswith("--- a/a.py") and "Would fix: 1 finding\n- a.py:\n    1 × CKPT101 (" in would.out
    cli.write("a.py", CKPT101_FIXED)
    assert "No fixes available." in cli.check("a.py", "--show-fixes").out


def test_show_fixes_keeps_machine_output_parseable(cli):
    cli.write("a.py", TWO)
    result = cli.check("a.py", "--show-fixes", "--output-format", "json")
    assert [d["code"] for d in result.json()] == ["CKPT101", "CKPT102"]
    assert "1 × CKPT101" in result.err


# --- --stdin-filename / - -----------------------------------------------------------------------


def _stdin(cli, text: str | bytes, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    data = text.encode() if isinstance(text, str) else text
    return subprocess.run([sys.executable, "-m", "ckpt_doctor", "check", "--no-cache", *TARGET_ARGS, *args], input=data,
                          cwd=cli.root, env=env, capture_output=True, timeout=120)


def test_stdin_is_checked_under_its_name(cli):
    proc = _stdin(cli, TWO, "--stdin-filename", "train.py", "-")
    out = proc.stdout.decode()
    assert proc.returncode == 1
    assert out.startswith("train.py:5:12: CKPT101 [warning]") and "train.py:9:33: CKPT102 [info]" in out
    assert not (cli.root / "train.py").exists()
    plain = _stdin(cli, TWO, "-")
    assert plain.stdout.decode().startswith("-:5:12: CKPT101")


def test_stdin_name_decides_per_file_ignores_and_the_kind_of_file(cli):
    cli.write("pyproject.toml", '[tool.ckpt-doctor]\nper-file-ignores = { "legacy/*" = ["CKPT101"] }\n')
    assert _stdin(cli, CKPT101_SCRIPT, "--stdin-filename", "legacy/old.py").returncode == 0
    assert _stdin(cli, CKPT101_SCRIPT, "--stdin-filename", "new.py").returncode == 1
    yaml = _stdin(cli, LORA_YAML, "--stdin-filename", "sft.yaml", "-")
    assert "sft.yaml:3:1: CKPT501" in yaml.stdout.decode()


def test_stdin_fix_prints_the_fixed_text(cli):
    proc = _stdin(cli, TWO, "--stdin-filename", "a.py", "-", "--fix")
    assert proc.stdout.decode() == TWO.replace("checkpoint(block, x)\n", "checkpoint(block, x, use_reentrant=False)\n")
    assert "Fixed 1 finding." in proc.stderr.decode()
    assert proc.returncode == 0  # what is left is an info
    unchanged = _stdin(cli, CKPT102_SCRIPT, "-", "--fix")
    assert unchanged.stdout.decode() == CKPT102_SCRIPT  # nothing to fix: the input as it was


def test_stdin_bad_input_is_a_one_line_error(cli):
    proc = _stdin(cli, b"import torch\x00\n", "--stdin-filename", "bin.py")
    assert proc.returncode == 2
    [line] = proc.stderr.decode().splitlines()
    assert line.startswith("error: bin.py: ") and "binary" in line
    broken = _stdin(cli, "def f(:\n", "--stdin-filename", "broken.py")
    assert broken.returncode == 2 and "broken.py:1:" in broken.stderr.decode()


def test_stdin_with_other_paths_or_watch_is_a_usage_error(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    for args in (("-", "a.py"), ("-", "--watch"), ("-", "--add-noqa")):
        result = cli.check(*args)
        assert result.code == 2 and result.err.startswith("error: ") and len(result.err.splitlines()) == 1


# --- --output-file ------------------------------------------------------------------------------


def test_output_file_gets_the_report(cli):
    cli.write("a.py", TWO)
    result = cli.check("a.py", "--output-format", "json", "--output-file", "reports/out.json")
    assert result.code == 1 and result.out == ""
    written = cli.root / "reports" / "out.json"
    assert [d["code"] for d in json.loads(written.read_text())] == ["CKPT101", "CKPT102"]
    cli.write("a.py", CKPT101_FIXED)
    assert cli.check("a.py", "-o", "reports/out.json", "--output-format", "json").code == 0
    assert json.loads(written.read_text()) == []  # replaced, not appended
    assert [p.name for p in written.parent.iterdir()] == ["out.json"]  # no temporary file left behind
    cli.check("a.py", "--output-file", "reports/out.txt")
    assert (cli.root / "reports" / "out.txt").read_text() == "All checks passed!\n"


def test_output_file_that_cannot_be_written_is_a_one_line_error(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    cli.write("blocker", "a file, not a folder")
    result = cli.check("a.py", "--output-file", "blocker/out.txt")
    assert result.code == 2
    [line] = result.err.splitlines()
    assert line.startswith("error: blocker/out.txt: cannot write the report")
    if os.geteuid() != 0:
        target = cli.write("ro.txt", "old report\n", mode=0o444)
        assert cli.check("a.py", "-o", "ro.txt").code == 2
        assert target.read_text() == "old report\n"


# --- --add-noqa ---------------------------------------------------------------------------------


def test_add_noqa_suppresses_every_finding_and_merges_comments(cli):
    path = cli.write("a.py", TWO.replace("use_reentrant=True)\n", "use_reentrant=True)  # noqa: E501\n"))
    result = cli.check("a.py", "--add-noqa", "--fail-on", "info")
    assert result.code == 0 and "Added 2 noqa directives in 1 file." in result.err
    lines = path.read_text().splitlines()
    assert lines[4] == "    return checkpoint(block, x)  # noqa: CKPT101"
    assert lines[8] == "    return checkpoint(block, x, use_reentrant=True)  # noqa: E501, CKPT102"
    after = cli.check("a.py", "--fail-on", "info")
    assert after.code == 0 and after.codes == []  # and no CKPT001: each code suppresses its finding
    assert "Added 0 noqa directives." in cli.check("a.py", "--add-noqa").err


def test_add_noqa_in_configs_and_notebooks_not_json(cli):
    cli.write("sft.yaml", LORA_YAML.replace("lora_r: 16", "lora_r: 16  # rank"))
    cli.write("nb.ipynb", notebook([code_cell(CKPT101_SCRIPT, "c1")]))
    cli.write("ds.json", '{"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}\n')
    before = (cli.root / "ds.json").read_bytes()
    result = cli.check(".", "--add-noqa")
    assert "lora_r: 16  # rank  # noqa: CKPT501" in (cli.root / "sft.yaml").read_text()
    cell = json.loads((cli.root / "nb.ipynb").read_text())["cells"][0]
    assert "".join(cell["source"]).splitlines()[4].endswith("checkpoint(block, x)  # noqa: CKPT101")
    assert cell["metadata"] == {"tags": ["keep-me"]}
    assert (cli.root / "ds.json").read_bytes() == before
    assert cli.check("sft.yaml", "nb.ipynb").code == 0


def test_add_noqa_leaves_lines_where_a_comment_would_change_the_code(cli):
    text = 'from torch.utils.checkpoint import checkpoint\n\ny = checkpoint(f, \\\n    x)\nDOC = f"""{checkpoint(f, x)}\nmore"""\n'
    path = cli.write("a.py", text)
    assert len(cli.check("a.py").codes) == 2
    result = cli.check("a.py", "--add-noqa")
    assert path.read_text() == text
    assert result.err.count("a comment here would change the code") == 2 and "Added 0 noqa directives." in result.err


def test_add_noqa_on_a_read_only_file_names_it_and_leaves_it(cli):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    path = cli.write("a.py", CKPT101_SCRIPT, mode=0o444)
    result = cli.check("a.py", "--add-noqa")
    assert result.code == 2 and "error: a.py: cannot add noqa comments: file is read-only" in result.err
    assert path.read_text() == CKPT101_SCRIPT


def test_add_noqa_refuses_fix(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    assert cli.check("a.py", "--add-noqa", "--fix").code == 2


# --- --show-settings ----------------------------------------------------------------------------


def test_show_settings_names_values_and_their_origins(cli):
    cli.write("pyproject.toml", '[tool.ckpt-doctor]\nignore = ["CKPT204"]\ngpu-memory = "80GiB"\n')
    cli.write("requirements.txt", "transformers>=4.46,<5\n")
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.invoke("check", "a.py", "--show-settings", "--select", "CKPT2", "--target-version", "torch=2.13")
    assert result.code == 0  # even though a.py has findings: nothing is checked
    out = result.out
    config = str((cli.root / "pyproject.toml").resolve())
    assert f"config file: {config}" in out
    assert re.search(r"select\s+= \[\"CKPT2\"\]  \(command line\)", out)
    assert re.search(rf"ignore\s+= \[\"CKPT204\"\]  \({re.escape(config)}\)", out)
    assert re.search(rf"gpu-memory\s+= 80GiB  \({re.escape(config)}\)", out)
    assert re.search(r"fail-on\s+= warning  \(default\)", out)
    assert "Enabled rules: CKPT201, CKPT202, CKPT203, CKPT205" in out  # CKPT204 ignored
    assert re.search(r"torch\s+2\.13  \(target version \(command line\)\)", out)
    assert re.search(r"transformers\s+>=4\.46,<5  \(requires >=4\.46,<5 in requirements\.txt\)", out)


def test_show_settings_json(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    data = cli.invoke("check", "a.py", "--show-settings", "--output-format", "json").json()
    assert data["config-file"] is None
    assert data["settings"]["gpu-memory"]["origin"] == "default"
    assert "24GiB" in data["settings"]["gpu-memory"]["value"]
    assert set(data["target-versions"]) >= {"torch", "transformers", "peft", "trl"}
    assert "CKPT001" in data["enabled-rules"]


# --- --watch ------------------------------------------------------------------------------------


def _read_until(proc, pattern: str, timeout: float = 60) -> str:
    """Lines of the process's output up to the first that matches `pattern`."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def test_watch_checks_again_when_a_file_changes(cli):
    path = cli.write("a.py", CKPT101_FIXED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "ckpt_doctor", "check", "a.py", "--watch", "--no-cache", *TARGET_ARGS],
                            cwd=cli.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = _read_until(proc, "Watching for file changes")
        assert "All checks passed!" in first
        time.sleep(0.05)
        path.write_text(CKPT101_SCRIPT)  # a finding appears
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # even on a file system with coarse times
        second = _read_until(proc, "Watching for file changes")
        assert "File change detected: a.py" in second
        assert "a.py:5:12: CKPT101 [warning]" in second
        assert proc.poll() is None  # still watching
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0  # SIGTERM / Ctrl-C is how a watch ends


def test_watch_helper_sees_new_and_changed_files_not_its_own_writes(tmp_path):
    import threading

    from ckpt_doctor.check.watch import watch

    target = tmp_path / "a.py"
    target.write_text("x = 1\n")
    runs, messages = [], []

    def once():
        runs.append(sorted(p.name for p in tmp_path.iterdir()))
        if len(runs) == 1:
            target.write_text("x = 2\n")  # a --fix during the check: not a change to react to
            threading.Timer(0.3, lambda: (tmp_path / "b.py").write_text("y = 1\n")).start()

    watch(once, lambda: [str(p) for p in tmp_path.iterdir()], messages.append, interval=0.02, rounds=2)
    assert runs == [["a.py"], ["a.py", "b.py"]]
    assert messages == ["Watching for file changes.", f"File change detected: {tmp_path / 'b.py'}"]
