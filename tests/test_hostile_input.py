"""Hostile and odd input, through the real command line (`python -m ckpt_doctor` in a subprocess, real
files in a temporary project). Each bad file gives one clear line on stderr naming it and exit 2; the
other files of the run are still checked (and fixed with `--fix`); nothing else on disk changes.

test_bad_input.py covers the basic cases (syntax errors, `print "x"`, non-UTF-8, NUL bytes at the
start of a file, broken notebook JSON, deep nesting without `--fix`, a read-only file and a file
modified before the write, in-process); this file covers what it does not.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    CKPT101_FIXED,
    CKPT101_SCRIPT,
    REPO_ROOT,
    TARGET_ARGS,
    code_cell,
    markdown_cell,
    notebook,
    run_subprocess,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def check_with_timeout(cli, *args, timeout: float):
    return run_subprocess(["check", *map(str, args), *TARGET_ARGS, "--no-cache"], cli.root, timeout=timeout)


def error_lines(result) -> list[str]:
    return [line for line in result.err.splitlines() if line.startswith("error: ")]


def assert_clean_errors(result, expected: dict[str, list[str]] | list[str]) -> None:
    """stderr is exactly one `error: NAME...` line per expected file (with the expected words), no traceback."""
    assert "Traceback" not in result.err, result.err[-3000:]
    assert "internal error" not in result.err, result.err
    stray = [line for line in result.err.splitlines() if line.strip() and not line.startswith("error: ")]
    assert not stray, result.err
    lines = error_lines(result)
    names = list(expected)
    assert len(lines) == len(names), "\n".join(lines)
    for name in names:
        mine = [line for line in lines if line.startswith(f"error: {name}:")]
        assert len(mine) == 1, (name, lines)
        for word in (expected[name] if isinstance(expected, dict) else []):
            assert word.lower() in mine[0].lower(), (word, mine[0])


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and ".git" not in p.parts}


# --- Python 2 ---------------------------------------------------------------------------------------

PYTHON2 = {
    "backticks.py": ("x = `1`\n", ["1:"]),
    "octal.py": ("import os\nos.chmod('x', 0777)\n", ["2:", "octal"]),
    "exec_stmt.py": ('exec "x = 1"\n', ["Python 2"]),
    "ur_string.py": ('x = ur"abc"\n', ["1:"]),
    "long_literal.py": ("x = 10L\n", ["1:"]),
    "not_equal.py": ("if x <> 1: pass\n", ["1:"]),
    "raise_comma.py": ('raise ValueError, "x"\n', ["1:"]),
    "tuple_params.py": ("def f((a, b)):\n    return a\n", ["1:"]),
    "tabs_and_spaces.py": ("if True:\n\tx = 1\n        y = 2\n", ["3:", "tabs"]),
    "print_chevron_coding.py": ("# -*- coding: utf-8 -*-\nimport sys\nprint >>sys.stderr, 'x',\nprint 'checkpoint'\n", ["4:", "Python 2"]),
}


def test_python2_except_comma_is_python_3_14_and_is_checked(cli):
    """`except Exception, e:` is Python 2, and also Python 3.14 (PEP 758: both names are exception types): it is
    read as 3.14 code whatever the interpreter, as ruff does, not reported as unparsable."""
    cli.write("except_comma.py", "from torch.utils.checkpoint import checkpoint\ntry:\n    pass\nexcept Exception, e:\n    pass\n"
              "checkpoint(f, x)\n")
    result = cli.check_subprocess("except_comma.py")
    assert result.codes == ["CKPT101"] and "cannot parse" not in result.err


def test_python2_files_each_one_line_and_others_fixed(cli):
    for name, (text, _) in PYTHON2.items():
        cli.write(f"legacy/{name}", text)
    good = cli.write("good.py", CKPT101_SCRIPT)
    before = snapshot(cli.root / "legacy")

    result = cli.check_subprocess(".")
    assert result.code == 2, result.out + result.err
    assert_clean_errors(result, {f"legacy/{n}": ["cannot parse", *words] for n, (_, words) in PYTHON2.items()})
    assert result.codes == ["CKPT101"]

    fixed = cli.check_subprocess(".", "--fix")
    assert fixed.code == 2
    assert snapshot(cli.root / "legacy") == before
    assert good.read_text() == CKPT101_FIXED


# --- NUL bytes and other binary content ---------------------------------------------------------------

def test_nul_bytes_in_odd_places(cli):
    cli.write("nul_end.py", CKPT101_SCRIPT.encode() + b"# trailing\x00\n")
    cli.write("nul_in_string.py", CKPT101_SCRIPT.encode() + b"s = '\x00'\n")
    cli.write("utf16.py", ("# checkpoint\n" + CKPT101_SCRIPT).encode("utf-16"))
    cli.write("nul_cell.ipynb", notebook([code_cell(CKPT101_SCRIPT + "s = '\x00'\n", "a")]))
    cli.write("good.py", CKPT101_SCRIPT)
    before = snapshot(cli.root)
    for args in ([], ["--fix"], ["--fix", "--output-format", "json"]):
        result = cli.check_subprocess(".", *args)
        assert result.code == 2, result.err
        assert_clean_errors(result, {"nul_end.py": ["NUL"], "nul_in_string.py": ["NUL"], "utf16.py": ["NUL"], "nul_cell.ipynb": ["null"]})
        if args[-1:] == ["json"]:
            assert json.loads(result.out) == []  # good.py was fixed by the previous run
    after = snapshot(cli.root)
    assert {k: v for k, v in after.items() if k != "good.py"} == {k: v for k, v in before.items() if k != "good.py"}
    assert after["good.py"] == CKPT101_FIXED.encode()


def test_settings_files_named_by_a_script_that_cannot_be_read_as_settings(cli):
    """Config files the script loads: odd names, devices, loops, folders, huge or broken files are simply not read."""
    cli.write("big.json", '{"per_device_train_batch_size": 4, "pad": "' + "x" * (2 << 20) + '"}')
    cli.write("broken.json", '{"per_device_train_batch_size": ')
    cli.write("list.json", "[1, 2]")
    cli.write("latin1.yaml", "batch_size: 4\nname: caf\xe9\n".encode("latin-1"))
    (cli.root / "folder.json").mkdir()
    (cli.root / "loop.yaml").symlink_to("loop.yaml")
    os.mkfifo(cli.root / "pipe.json")  # reading it would block forever
    long_name = "a" * 5000
    cli.write("train.py", f"""import json, yaml
from torch.utils.data import DataLoader
for name in ("big.json", "broken.json", "list.json", "folder.json", "pipe.json", "/dev/zero.json", "a\\x00b.json", "{long_name}.json"):
    cfg = json.load(open(name))
import deepspeed
engine = deepspeed.initialize(model=model, config="pipe.json")
cfg = yaml.safe_load(open("loop.yaml"))
cfg = yaml.safe_load(open("latin1.yaml"))
loader = DataLoader(ds, batch_size=cfg["batch_size"], shuffle=True)
loss.backward()
""")
    before = snapshot(cli.root)
    result = cli.check_subprocess("train.py", "--select", "CKPT4")
    assert result.code == 0 and not result.err, result.err
    assert snapshot(cli.root) == before


# --- big files ----------------------------------------------------------------------------------------

MEASURED = """\
import resource, sys
sys.argv[0] = "ckpt-doctor"
try:
    from ckpt_doctor.cli import main
    main()
finally:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked (large) pytest process
    hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")]
    sys.stderr.write(f"\\nPEAK_RSS_KB={hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n")
"""


def run_measured(cli, *args, timeout: float = 60):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", MEASURED, "check", *map(str, args), *TARGET_ARGS, "--no-cache"],
        cwd=cli.root, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    peak = int(proc.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0])
    err = proc.stderr.rsplit("\nPEAK_RSS_KB=", 1)[0]
    return proc.returncode, proc.stdout, err, peak


def test_50_mb_file_is_refused_without_reading_it(cli):
    huge = cli.root / "huge.py"
    with open(huge, "wb") as handle:  # 50 MiB of Python that would take minutes to analyse
        chunk = (CKPT101_SCRIPT + "w = [0.1, 0.2, 0.3, 0.4]\n" * 4000).encode()
        while handle.tell() < 50 * 2**20:
            handle.write(chunk)
    size = huge.stat().st_size
    cli.write("good.py", CKPT101_SCRIPT)
    code, _out, err, peak_kb = run_measured(cli, ".", "--fix", timeout=30)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: huge.py: file is 50.") and "10 MiB limit (max-file-size)" in lines[0], err
    assert huge.stat().st_size == size
    assert (cli.root / "good.py").read_text() == CKPT101_FIXED
    assert peak_kb < 200 * 1024, f"peak RSS {peak_kb} KiB: the 50 MiB file was read"


def test_12_mb_file_over_the_default_limit_and_accepted_when_configured(cli):
    # A big but quick-to-parse file: a training script followed by 12 MiB of comments and a data blob.
    padding = "# " + "weights table, generated " * 4 + "\n"
    text = CKPT101_SCRIPT + padding * (6 * 2**20 // len(padding)) + "BLOB = '" + "A" * (6 * 2**20) + "'\n"
    big = cli.write("big.py", text)
    assert 12 * 2**20 <= big.stat().st_size < 13 * 2**20

    refused = cli.check_subprocess("big.py")
    assert refused.code == 2
    assert_clean_errors(refused, {"big.py": ["12.0 MiB", "max-file-size"]})

    cli.write("pyproject.toml", '[tool.ckpt-doctor]\nmax-file-size = "16MiB"\n')
    code, out, err, peak_kb = run_measured(cli, "big.py", "--fix", timeout=60)
    assert code == 0 and err.strip() == "" and out.strip() == "Fixed 1 finding.", out + err
    assert big.read_text() == text.replace("checkpoint(block, x)", "checkpoint(block, x, use_reentrant=False)", 1)
    assert peak_kb < 512 * 1024, f"peak RSS {peak_kb} KiB for a 12 MiB file"  # 175 MiB measured


# --- deep nesting, with --fix and JSON output together ------------------------------------------------

DEEP = {
    "attribute_chain": "x = a" + ".b" * 20_000 + "\n",
    "nested_dicts": "x = " + '{"a": ' * 1000 + "1" + "}" * 1000 + "\n",
    "nested_ifs_99": "".join("    " * i + "if x:\n" for i in range(99)) + "    " * 99 + "pass\n",
    "nested_ifs_120": "".join(" " * i + "if x:\n" for i in range(120)) + " " * 120 + "pass\n",
    "lambdas": "f = " + "lambda: " * 1000 + "1\n",
    "implicit_concat": "x = (" + ' "a"' * 100_000 + ")\n",
    "subscripts": "x = " + "a[" * 1000 + "0" + "]" * 1000 + "\n",
    "nested_checkpoints": "y = " + "checkpoint(block, " * 30 + "x" + ")" * 30 + "\n",
    "not_chain": "x = " + "not " * 20_000 + "y\n",
    "comparisons": "x = " + " < ".join(["a"] * 5_000) + "\n",
}


def test_deeply_nested_code_with_fix_and_json_never_gives_a_traceback(cli):
    for name, tail in DEEP.items():
        cli.write(f"deep/{name}.py", CKPT101_SCRIPT + tail)
        cli.write(f"deep/{name}.ipynb", notebook([code_cell(CKPT101_SCRIPT + tail, "a")]))
    good = cli.write("good.py", CKPT101_SCRIPT)
    before = snapshot(cli.root / "deep")

    result = cli.check_subprocess(".", "--fix", "--output-format", "json")
    assert "Traceback" not in result.err and "RecursionError" not in result.err, result.err[-3000:]
    assert "internal error" not in result.err, result.err
    json.loads(result.out)  # the report is still complete JSON
    assert result.code == 2
    errors = error_lines(result)
    assert len(errors) == len(result.err.strip().splitlines())
    after = snapshot(cli.root / "deep")
    for path, data in after.items():
        mine = [line for line in errors if line.startswith(f"error: deep/{path}")]
        assert len(mine) <= 1, mine
        if data == before[path]:
            continue  # refused (reported) or nothing to fix
        assert not mine, mine  # written, so no error for it
        if path.endswith(".py"):
            compile(data, path, "exec")
            assert b"use_reentrant=False" in data
        else:
            assert "use_reentrant=False" in "".join(json.loads(data)["cells"][0]["source"])
    assert good.read_text() == CKPT101_FIXED


# --- symlinks -----------------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_directory_symlink_loops_are_not_followed(cli):
    cli.write("pkg/train.py", CKPT101_SCRIPT)
    os.symlink("..", cli.root / "pkg" / "up")  # pkg/up/pkg/up/... forever
    os.symlink(".", cli.root / "pkg" / "here")
    result = cli.check_subprocess(".")
    assert result.code == 1, result.err
    assert result.err == ""
    assert [line.split(":")[0] for line in result.out.splitlines() if "CKPT101" in line] == ["pkg/train.py"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_file_symlink_loop_in_a_scanned_folder(cli):
    cli.write("good.py", CKPT101_SCRIPT)
    os.symlink("loop.py", cli.root / "loop.py")
    os.symlink("pong.py", cli.root / "ping.py")
    os.symlink("ping.py", cli.root / "pong.py")
    result = cli.check_subprocess(".")
    assert "Traceback" not in result.err, result.err[-2000:]
    assert result.codes == ["CKPT101"]
    for line in error_lines(result):  # reported (one line each) or skipped; never a crash
        assert "symbolic links" in line or "loop" in line, line
    assert len(error_lines(result)) <= 3


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_dangling_symlink_is_one_line(cli):
    cli.write("good.py", CKPT101_SCRIPT)
    os.symlink("gone.py", cli.root / "dangling.py")
    result = cli.check_subprocess(".")
    assert result.code == 2
    assert_clean_errors(result, {"dangling.py": ["cannot read"]})
    assert result.codes == ["CKPT101"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_to_a_file_outside_is_checked_under_its_own_name(cli, tmp_path):
    outside = tmp_path / "outside" / "shared_train.py"
    outside.parent.mkdir()
    outside.write_text(CKPT101_SCRIPT)
    os.symlink(outside, cli.root / "link.py")
    result = cli.check_subprocess(".")
    assert result.code == 1, result.err
    assert result.out.startswith("link.py:5:12: CKPT101")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_fix_through_a_symlink_keeps_the_link(cli, tmp_path):
    outside = tmp_path / "outside" / "shared_train.py"
    outside.parent.mkdir()
    outside.write_text(CKPT101_SCRIPT)
    link = cli.root / "link.py"
    os.symlink(outside, link)
    result = cli.check_subprocess(".", "--fix")
    assert link.is_symlink(), "the symlink was replaced by a regular file"
    # Either the target is fixed through the link, or the link is refused with one line; never both copies.
    if outside.read_text() == CKPT101_FIXED:
        assert result.code == 0
    else:
        assert result.code == 2 and outside.read_text() == CKPT101_SCRIPT
        assert_clean_errors(result, {"link.py": []})
    assert not list(cli.root.glob("*.tmp")) and not list(outside.parent.glob("*.tmp"))


# --- unreadable files and special files ----------------------------------------------------------------

def make_unreadable(path: Path) -> None:
    """A file whose read fails. chmod 000 does not stop root, so as root: a link to a file that fails with EIO."""
    if not IS_ROOT:
        path.write_text(CKPT101_SCRIPT)
        path.chmod(0)
        return
    if not Path("/proc/self/mem").exists():
        pytest.skip("running as root, where chmod 000 still reads, and no /proc/self/mem to fail a read")
    os.symlink("/proc/self/mem", path)  # stat works (size 0), read() fails with EIO at offset 0


def test_unreadable_file_is_one_line_and_others_fixed(cli):
    bad = cli.root / "secret.py"
    make_unreadable(bad)
    good = cli.write("good.py", CKPT101_SCRIPT)
    try:
        result = cli.check_subprocess(".", "--fix")
        assert result.code == 2
        assert_clean_errors(result, {"secret.py": ["cannot read"]})
        assert good.read_text() == CKPT101_FIXED
        if not IS_ROOT:
            assert stat.S_IMODE(bad.stat().st_mode) == 0
    finally:
        if not bad.is_symlink():
            bad.chmod(0o644)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_in_a_scanned_folder_does_not_hang(cli):
    os.mkfifo(cli.root / "pipe.py")
    cli.write("good.py", CKPT101_SCRIPT)
    try:
        result = check_with_timeout(cli, ".", timeout=4)
    except subprocess.TimeoutExpired:
        pytest.fail("ckpt-doctor hung reading a named pipe")
    assert result.codes == ["CKPT101"]
    assert len(error_lines(result)) <= 1 and "Traceback" not in result.err


# --- read-only files with --fix, many of them, in parallel -----------------------------------------

def test_read_only_files_among_many_keep_bytes_and_modes(cli):
    modes = {}
    for i in range(20):
        mode = [0o444, 0o644, 0o400, 0o600, 0o555, 0o755][i % 6]
        if i % 5 == 4:
            path = cli.write(f"nb_{i:02d}.ipynb", notebook([markdown_cell("# x", "m"), code_cell(CKPT101_SCRIPT, "a")]))
        else:
            path = cli.write(f"f_{i:02d}.py", CKPT101_SCRIPT)
        path.chmod(mode)
        modes[path.name] = mode
    before = snapshot(cli.root)
    try:
        result = cli.check_subprocess(".", "--fix", "-j", "2")
        assert result.code == 2
        read_only = sorted(name for name, mode in modes.items() if not mode & 0o200)
        assert_clean_errors(result, {name: ["read-only"] for name in read_only})
        for name, mode in modes.items():
            path = cli.root / name
            assert stat.S_IMODE(path.stat().st_mode) == mode, name
            data = path.read_bytes()
            if name in read_only:
                assert data == before[name], name
            else:
                assert data != before[name] and b"use_reentrant=False" in data, name
        assert not list(cli.root.glob(".*.tmp"))
    finally:
        for name in modes:
            (cli.root / name).chmod(0o644)


# --- the file changes between the check and the write (in-process) ------------------------------------

def _meddle_before_write(monkeypatch, action):
    from ckpt_doctor.check import fix

    original = fix.write_atomically
    calls = []

    def meddling(target, data, expected=None):
        calls.append(str(target))
        action(Path(target))
        return original(target, data, expected=expected)

    monkeypatch.setattr(fix, "write_atomically", meddling)
    return calls


MEDDLING = {
    "deleted": (lambda p: p.unlink(), ["re-read"]),
    "emptied": (lambda p: p.write_bytes(b""), ["changed"]),
    "replaced-by-directory": (lambda p: (p.unlink(), p.mkdir()), ["re-read"]),
    "made-read-only": (lambda p: p.chmod(0o444), ["read-only"]),
    "already-fixed-by-someone": (lambda p: p.write_text(CKPT101_FIXED), ["changed"]),
}


@pytest.mark.parametrize("case", list(MEDDLING))
def test_file_changing_between_check_and_write(cli, monkeypatch, case):
    action, words = MEDDLING[case]
    target = cli.write("a.py", CKPT101_SCRIPT)
    other = cli.write("b.py", CKPT101_SCRIPT)
    calls = _meddle_before_write(monkeypatch, lambda p: action(p) if p.name == "a.py" else None)
    try:
        result = cli.check("a.py", "b.py", "--fix")
        assert calls == ["a.py", "b.py"]
        assert result.code == 2
        assert_clean_errors(result, {"a.py": words})
        assert other.read_text() == CKPT101_FIXED
        assert not list(cli.root.glob(".*.tmp"))
        if case == "deleted":
            assert not target.exists()  # not recreated
        elif case == "made-read-only":
            assert target.read_text() == CKPT101_SCRIPT
    finally:
        if target.is_file():
            target.chmod(0o644)


def test_notebook_changing_between_check_and_write(cli, monkeypatch):
    path = cli.write("nb.ipynb", notebook([code_cell(CKPT101_SCRIPT, "a")]))
    edited = notebook([code_cell(CKPT101_SCRIPT, "a"), markdown_cell("added meanwhile", "m")])
    _meddle_before_write(monkeypatch, lambda p: p.write_text(edited))
    result = cli.check("nb.ipynb", "--fix")
    assert result.code == 2
    assert_clean_errors(result, {"nb.ipynb": ["changed"]})
    assert path.read_text() == edited


def test_touched_but_unchanged_file_is_still_fixed(cli, monkeypatch):
    path = cli.write("a.py", CKPT101_SCRIPT)
    _meddle_before_write(monkeypatch, lambda p: os.utime(p, (1, 1)))  # an editor saved the same bytes
    result = cli.check("a.py", "--fix")
    assert result.code == 0, result.err
    assert path.read_text() == CKPT101_FIXED


# --- notebooks: broken structure, other languages, non-Python cells ----------------------------------

ODD_NOTEBOOKS = {
    "truncated": notebook([code_cell(CKPT101_SCRIPT, "a")])[:-40],
    "empty_file": "",
    "trailing_garbage": notebook([code_cell(CKPT101_SCRIPT, "a")]) + "}\n",
    "nbformat_3_worksheets": '{"worksheets": [{"cells": []}], "metadata": {}, "nbformat": 3}',
}
INTERNAL_ERROR = (
    "source.py:155-162: json.loads' RecursionError and ValueError (int digits limit) are not caught (only "
    "JSONDecodeError), and a non-dict `metadata` hits `.get`: 'internal error ... (please report this)'"
)
ODD_NOTEBOOKS_INTERNAL = {
    "metadata_is_a_string": '{"cells": [], "metadata": "python", "nbformat": 4}',
    "metadata_is_a_list": '{"cells": [], "metadata": ["python"], "nbformat": 4}',
    "deeply_nested_json": '{"cells": [], "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "huge_integer": '{"cells": [], "metadata": {}, "nbformat": ' + "9" * 5000 + "}",
}


@pytest.mark.parametrize(
    "case, data",
    [pytest.param(k, v, id=k) for k, v in ODD_NOTEBOOKS.items()]
    + [pytest.param(k, v, id=k) for k, v in ODD_NOTEBOOKS_INTERNAL.items()],
)
def test_odd_notebook_is_one_clear_line(cli, case, data):
    bad = cli.write(f"{case}.ipynb", data)
    good = cli.write("good.py", CKPT101_SCRIPT)
    result = cli.check_subprocess(".", "--fix")
    assert result.code == 2
    assert_clean_errors(result, {f"{case}.ipynb": ["notebook"]})
    assert bad.read_text() == data
    assert good.read_text() == CKPT101_FIXED


def test_notebook_with_non_string_source_line_does_not_abort_fix(cli):
    cell = code_cell(CKPT101_SCRIPT, "a")
    cell["source"] = cell["source"][:2] + [42] + cell["source"][2:]
    cli.write("a_odd.ipynb", notebook([cell]))
    good = cli.write("z_good.py", CKPT101_SCRIPT)
    result = cli.check_subprocess(".", "--fix")
    assert "Traceback" not in result.err, result.err[-1500:]
    assert good.read_text() == CKPT101_FIXED


def r_notebook(with_language_info: bool) -> str:
    doc = json.loads(notebook([code_cell("library(ggplot2)\ndf %>% filter(x > 1)\nprint(checkpoint)\n", "r")]))
    doc["metadata"] = {"kernelspec": {"display_name": "R", "language": "R", "name": "ir"}}
    if with_language_info:
        doc["metadata"]["language_info"] = {"name": "R", "version": "4.3.1"}
    return json.dumps(doc, indent=1) + "\n"


@pytest.mark.parametrize("with_language_info", [True, False], ids=["language_info", "kernelspec-only"])
def test_r_notebook_in_a_folder_is_skipped(cli, with_language_info):
    nb = cli.write("analysis.ipynb", r_notebook(with_language_info))
    cli.write("good.py", CKPT101_SCRIPT)
    before = nb.read_bytes()
    result = cli.check_subprocess(".", "--fix")
    assert nb.read_bytes() == before
    assert result.code == 0, result.err
    assert "Traceback" not in result.err


def test_r_notebook_named_explicitly_is_one_line_and_untouched(cli):
    nb = cli.write("analysis.ipynb", r_notebook(True))
    before = nb.read_bytes()
    result = cli.check_subprocess("analysis.ipynb", "--fix")
    assert result.code in (0, 2)
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) <= 1
    assert nb.read_bytes() == before


def test_non_python_cells_are_left_alone_and_python_cells_fixed(cli):
    cells = [
        markdown_cell("```python\ncheckpoint(block, x)\n```", "md"),
        {"cell_type": "raw", "id": "raw", "metadata": {}, "source": ["checkpoint(block, x\n"]},
        code_cell("%%bash\nfor f in *.py; do\n  echo \"checkpoint($f)\"\ndone\n", "bash"),
        code_cell("%%R -i df\nlibrary(dplyr)\ndf %>% filter(x > 1)\n", "r"),
        code_cell("%%writefile helper.py\nfrom torch.utils.checkpoint import checkpoint\ny = checkpoint(f, x)\n", "wf"),
        code_cell("!pip install -q 'torch>=2.4'\n%load_ext autoreload\n%autoreload 2\nls?\n", "magics"),
        code_cell(CKPT101_SCRIPT, "py"),
        code_cell("%%time\nforward(None, 1)\n", "timed"),
    ]
    path = cli.write("nb.ipynb", notebook(cells))
    before = json.loads(path.read_text())
    result = cli.check_subprocess("nb.ipynb")
    assert result.code == 1 and result.err == "", result.err
    assert [line.split(": ")[0] for line in result.out.splitlines() if "CKPT" in line] == ["nb.ipynb:cell 7:5:12"]
    fixed = cli.check_subprocess("nb.ipynb", "--fix")
    assert fixed.code == 0, fixed.err
    after = json.loads(path.read_text())
    for index, (old, new) in enumerate(zip(before["cells"], after["cells"])):
        if index == 6:
            assert "".join(new["source"]) == CKPT101_FIXED
        else:
            assert new == old, index


@pytest.mark.parametrize("style", ["crlf", "ascii-escapes"])
def test_notebook_fix_changes_only_the_fixed_line(cli, style):
    doc = json.loads(notebook([markdown_cell("caf\u00e9 \u2014 na\u00efve", "m"), code_cell(CKPT101_SCRIPT, "a")]))
    text = json.dumps(doc, indent=1, ensure_ascii=style == "ascii-escapes") + "\n"
    data = text.replace("\n", "\r\n").encode() if style == "crlf" else text.encode()
    path = cli.write("nb.ipynb", data)
    assert cli.check_subprocess("nb.ipynb", "--fix").code == 0
    old, new = data.splitlines(keepends=True), path.read_bytes().splitlines(keepends=True)
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    assert len(old) == len(new) and len(changed) == 1, changed[:3]
    assert b"use_reentrant=False" in changed[0][1]


# --- many findings in one file: output formats stay linear ------------------------------------------

def test_json_output_of_a_file_with_hundreds_of_findings_is_fast(cli):
    cli.write("unrolled.py", CKPT101_SCRIPT + "".join(f"y{i} = checkpoint(block, x{i})\n" for i in range(200)))
    try:  # concise output takes 0.2 s; JSON took 13 s here
        result = check_with_timeout(cli, "unrolled.py", "--output-format", "json", timeout=4)
    except subprocess.TimeoutExpired:
        pytest.fail("JSON output of 201 findings took over 4 s")
    assert len(json.loads(result.out)) == 201


# --- the GitHub Action (action.yml) -------------------------------------------------------------------

def _action() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))


def _step_env(step: dict, inputs: dict) -> dict:
    env = {}
    for key, value in (step.get("env") or {}).items():
        value = str(value)
        for name, given in inputs.items():
            value = value.replace(f"${{{{ inputs.{name} }}}}", given)
        env[key] = value.replace("${{ github.action_path }}", str(REPO_ROOT))
    assert "${{" not in "".join(env.values()), env
    return env


def test_action_yml_declares_inputs_and_composite_steps():
    action = _action()
    assert action["name"] and action["description"]
    inputs = action["inputs"]
    assert {"args", "version", "output-format", "sarif-file"} <= set(inputs)
    assert inputs["args"]["default"] == "check ."
    assert inputs["output-format"]["default"] == "github"
    assert inputs["version"]["default"] == "" and inputs["sarif-file"]["default"] == ""
    assert all(not spec.get("required", False) for spec in inputs.values())
    runs = action["runs"]
    assert runs["using"] == "composite"
    steps = runs["steps"]
    assert any(str(s.get("uses", "")).startswith("actions/setup-python@") for s in steps)
    for step in steps:
        assert "uses" in step or ("run" in step and step.get("shell") == "bash"), step
        assert "${{ inputs." not in step.get("run", ""), "inputs go through env, not into the script"
    install = next(s for s in steps if "pip install" in s.get("run", ""))
    assert "${{ github.action_path }}" in install["env"].values() and "${{ inputs.version }}" in install["env"].values()
    check = next(s for s in steps if s.get("id") == "check")
    assert "--output-format" in check["run"] and "${{ inputs.output-format }}" in check["env"].values()
    sarif = next(s for s in steps if "sarif" in s.get("run", ""))
    assert "inputs.sarif-file" in sarif["if"] and "--output-format sarif" in sarif["run"]
    assert action["outputs"]["exit-code"]["value"] == "${{ steps.check.outputs.exit-code }}"


def test_action_run_steps_work_as_scripts(cli, tmp_path):
    """The check and SARIF steps' bash, run as the runner would (env from the inputs), on a project."""
    action = _action()
    cli.write("a.py", CKPT101_SCRIPT)
    cli.write("pyproject.toml", "[tool.ckpt-doctor]\ntarget-versions = { torch = \"2.13\", transformers = \"5.24\" }\n")
    inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    inputs["args"] = "check . --no-cache"
    inputs["sarif-file"] = "reports/ckpt-doctor.sarif"
    github_output = tmp_path / "github_output"
    results = {}
    for step in action["runs"]["steps"]:
        if step.get("id") == "check" or "sarif" in step.get("run", ""):
            env = dict(os.environ, GITHUB_OUTPUT=str(github_output), **_step_env(step, inputs))
            proc = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cli.root, env=env, capture_output=True, text=True, timeout=120, check=False)
            results[step.get("id") or "sarif"] = proc
    check = results["check"]
    assert check.returncode == 1, check.stderr
    annotations = [line for line in check.stdout.splitlines() if line.startswith("::")]
    assert len(annotations) == 1 and annotations[0].startswith("::warning ") and "CKPT101" in annotations[0], check.stdout
    assert "file=a.py,line=5,col=12" in annotations[0]
    assert "exit-code=1" in github_output.read_text()
    sarif = results["sarif"]
    assert sarif.returncode == 0, sarif.stderr
    report = json.loads((cli.root / "reports" / "ckpt-doctor.sarif").read_text())
    assert report["version"] == "2.1.0"
    assert [r["ruleId"] for r in report["runs"][0]["results"]] == ["CKPT101"]
