"""Files the checker cannot check: each gives one line on stderr naming the file and exit 2, the other
files of the run are still checked, and `--fix` never touches them."""

from __future__ import annotations

import codecs
import os
import stat

import pytest

from conftest import CKPT101_FIXED, CKPT101_SCRIPT

LATIN1 = "# -*- coding: latin-1 -*-\n# caf\u00e9 au lait\n" + CKPT101_SCRIPT

BAD_FILES = {
    "syntax": ("bad.py", b"from torch.utils.checkpoint import checkpoint\ndef f(:\n    return checkpoint(f, 1)\n", ["bad.py:2:", "cannot parse"]),
    "python2": ("bad.py", b'from torch.utils.checkpoint import checkpoint\nprint "hi"\n', ["Python 2"]),
    "python2-no-trigger": ("bad.py", b'print "hi"\n', ["Python 2"]),
    "latin1-no-cookie": ("bad.py", "# checkpoint\ns = 'caf\u00e9'\n".encode("latin-1"), []),
    "latin1-later-line": ("bad.py", ("import torch\n\n\n# checkpoint\ns = 'caf\u00e9'\n").encode("latin-1"), ["UTF-8"]),
    "nul-bytes": ("bad.py", b"import torch\x00\x01\x02checkpoint\n", ["binary"]),
    "notebook-invalid-json": ("bad.ipynb", b'{"cells": [{"cell_type": "code", "source": "checkpoint(', ["JSON"]),
    "notebook-without-cells": ("bad.ipynb", b'{"metadata": {}, "nbformat": 4, "nbformat_minor": 5}', ["cells"]),
    "notebook-cells-not-list": ("bad.ipynb", b'{"cells": {"a": 1}, "metadata": {}, "nbformat": 4}', ["cells"]),
    "notebook-is-a-list": ("bad.ipynb", b"[1, 2, 3]", []),
    "notebook-bad-cell": ("bad.ipynb", b'{"cells": [42], "metadata": {}, "nbformat": 4}', ["cell"]),
    "notebook-syntax-error": ("bad.ipynb", b'{"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "source": ["import torch\\n", "def f(:\\n"]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', ["cell 1", "2"]),
}


def _error_lines(result, name):
    lines = [line for line in result.err.splitlines() if line.strip()]
    mine = [line for line in lines if name in line]
    return lines, mine


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_is_one_line_error_and_others_still_checked(cli, case):
    name, data, words = BAD_FILES[case]
    bad = cli.write(name, data)
    cli.write("good.py", CKPT101_SCRIPT)
    result = cli.check(name, "good.py")
    assert result.code == 2, result.out + result.err
    lines, mine = _error_lines(result, name)
    assert len(mine) == 1 and len(lines) == 1, result.err
    assert "Traceback" not in result.err
    assert mine[0].startswith(f"error: {name}")
    for word in words:
        assert word in mine[0], mine[0]
    assert result.codes == ["CKPT101"]  # good.py still checked and reported
    assert "good.py:5:12: CKPT101" in result.out

    fixed = cli.check(name, "good.py", "--fix")
    assert fixed.code == 2
    assert bad.read_bytes() == data  # --fix never touches a file it cannot read
    assert (cli.root / "good.py").read_text() == CKPT101_FIXED


def test_not_utf8_says_so(cli):
    cli.write("bad.py", "# checkpoint\ns = 'caf\u00e9'\n".encode("latin-1"))
    result = cli.check("bad.py")
    assert result.code == 2
    assert "UTF-8" in result.err or "utf-8" in result.err.lower(), result.err


def test_subprocess_bad_files_exit_2(cli):
    cli.write("a_syntax.py", "def f(:\n")
    cli.write("b_binary.py", b"\x00\x01checkpoint")
    cli.write("c.py", CKPT101_SCRIPT)
    result = cli.check_subprocess(".")
    assert result.code == 2
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "a_syntax.py" in errors[0] and "b_binary.py" in errors[1]
    assert result.codes == ["CKPT101"]


def test_latin1_with_coding_cookie_is_checked_and_fixed_in_latin1(cli):
    path = cli.write("a.py", LATIN1.encode("latin-1"))
    result = cli.check("a.py")
    assert result.code == 1, result.err
    assert result.out.startswith("a.py:7:12: CKPT101")
    assert cli.check("a.py", "--fix").code == 0
    data = path.read_bytes()
    assert data == LATIN1.replace("checkpoint(block, x)", "checkpoint(block, x, use_reentrant=False)").encode("latin-1")


def test_too_big_file_from_config(cli):
    cli.write("pyproject.toml", '[tool.ckpt-doctor]\nmax-file-size = "1KiB"\n')
    big = CKPT101_SCRIPT + "\n" + "# filler line of text\n" * 60
    cli.write("big.py", big)
    cli.write("small.py", CKPT101_SCRIPT)
    result = cli.check("big.py", "small.py", "--fix")
    assert result.code == 2
    lines, mine = _error_lines(result, "big.py")
    assert len(lines) == 1 and len(mine) == 1 and "max-file-size" in mine[0]
    assert (cli.root / "big.py").read_text() == big
    assert (cli.root / "small.py").read_text() == CKPT101_FIXED


def test_utf8_bom_and_crlf_kept_by_fix(cli):
    bom = cli.write("bom.py", codecs.BOM_UTF8 + CKPT101_SCRIPT.encode())
    crlf = cli.write("crlf.py", CKPT101_SCRIPT.replace("\n", "\r\n").encode())
    both = cli.write("both.py", codecs.BOM_UTF8 + CKPT101_SCRIPT.replace("\n", "\r\n").encode())
    result = cli.check("bom.py", "crlf.py", "both.py")
    assert result.code == 1
    assert [line.split(":")[:3] for line in result.out.splitlines() if "CKPT101" in line] == [
        ["bom.py", "5", "12"], ["both.py", "5", "12"], ["crlf.py", "5", "12"],
    ]
    assert cli.check("bom.py", "crlf.py", "both.py", "--fix").code == 0
    assert bom.read_bytes() == codecs.BOM_UTF8 + CKPT101_FIXED.encode()
    assert crlf.read_bytes() == CKPT101_FIXED.replace("\n", "\r\n").encode()
    assert both.read_bytes() == codecs.BOM_UTF8 + CKPT101_FIXED.replace("\n", "\r\n").encode()


@pytest.mark.parametrize("data", [b"", b"\n", codecs.BOM_UTF8, b"# just a comment\n", b'"""Docstring."""\n'])
def test_empty_files_are_clean(cli, data):
    cli.write("pkg/__init__.py", data)
    result = cli.check("pkg/__init__.py")
    assert result.code == 0, result.err
    assert result.err == ""
    assert "All checks passed!" in result.out


def test_empty_notebook_is_clean(cli):
    cli.write("nb.ipynb", '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
    result = cli.check("nb.ipynb")
    assert result.code == 0 and result.err == ""


DEEP = {
    "parens-200": "x = " + "(" * 200 + "1" + ")" * 200 + "\n",
    "lists-5000": "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "unary-5000": "x = " + "-" * 5000 + "1\n",
    "sum-100000": "x = " + "1 + " * 100000 + "1\n",
    "calls-300": "x = " + "f(" * 300 + ")" * 300 + "\n",
}


@pytest.mark.parametrize("name", list(DEEP), ids=list(DEEP))
@pytest.mark.parametrize("mode", [[], ["--output-format", "json"], ["--diff"]], ids=["concise", "json", "diff"])
def test_deeply_nested_code_never_gives_a_traceback(cli, name, mode):
    text = CKPT101_SCRIPT + DEEP[name]
    path = cli.write("deep.py", text)
    result = cli.check("deep.py", *mode)
    assert "Traceback" not in result.err and "RecursionError" not in result.err
    assert result.code in (1, 2)
    if result.code == 2:
        errors = [line for line in result.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "deep.py" in errors[0]
    assert path.read_text() == text


@pytest.mark.parametrize("depth", [450, 1000])
def test_deep_but_valid_code_with_fix_never_gives_a_traceback(cli, depth):
    # Detection handles these, but the LibCST fix path must not crash on them either.
    text = CKPT101_SCRIPT + "y = " + "x + " * depth + "1\nz = " + "-" * depth + "1\n"
    path = cli.write("deep.py", text)
    result = cli.check_subprocess("deep.py", "--fix")
    assert "Traceback" not in result.err, result.err[-500:]
    after = path.read_text()
    if after == text:
        assert result.code == 2 and "deep.py" in result.err
    else:
        compile(after, "deep.py", "exec")
        assert "use_reentrant=False" in after


def test_nonexistent_path(cli):
    result = cli.check_subprocess("missing/train.py")
    assert result.code == 2
    assert result.err.strip() == "error: missing/train.py: no such file or directory"


def test_fix_never_touches_a_file_that_failed_to_parse(cli):
    text = CKPT101_SCRIPT + "\ndef broken(:\n    pass\n"
    path = cli.write("a.py", text)
    before = os.stat(path)
    result = cli.check("a.py", "--fix", "--unsafe-fixes")
    assert result.code == 2
    assert path.read_text() == text
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert cli.check("a.py", "--diff").out == ""


def test_read_only_file_with_fix(cli):
    path = cli.write("a.py", CKPT101_SCRIPT, mode=0o444)
    other = cli.write("b.py", CKPT101_SCRIPT)
    try:
        result = cli.check("a.py", "b.py", "--fix")
        assert result.code == 2
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and "a.py" in lines[0] and "read-only" in lines[0]
        assert path.read_text() == CKPT101_SCRIPT
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert other.read_text() == CKPT101_FIXED
    finally:
        path.chmod(0o644)


def test_file_changed_during_check_is_not_overwritten(cli, monkeypatch):
    # write_atomically refuses when the bytes on disk are not the ones that were checked.
    from ckpt_doctor.check import fix

    path = cli.write("a.py", CKPT101_SCRIPT)
    original = fix.write_atomically

    def meddle(target, data, expected=None):
        path.write_text(CKPT101_SCRIPT + "# edited by the user meanwhile\n")
        return original(target, data, expected=expected)

    monkeypatch.setattr(fix, "write_atomically", meddle)
    result = cli.check("a.py", "--fix")
    assert result.code == 2 and "a.py" in result.err
    assert path.read_text().endswith("# edited by the user meanwhile\n")


def test_a_syntax_error_of_the_tools_own_code_is_not_blamed_on_the_checked_file(tmp_path, monkeypatch):
    # an IndentationError while importing a rule module once read "train.py:336:8: cannot parse: unexpected indent"
    from ckpt_doctor.analysis.source import read_source
    from ckpt_doctor.check import lint
    from ckpt_doctor.config import Settings

    path = tmp_path / "train.py"
    path.write_text(CKPT101_SCRIPT)

    def broken(*args, **kwargs):
        raise IndentationError("unexpected indent", ("/site-packages/ckpt_doctor/rules/huggingface.py", 336, 8, "    return\n"))

    monkeypatch.setattr(lint, "lint_text", broken)
    with pytest.raises(IndentationError):
        lint.check_source(read_source(str(path)), Settings())
