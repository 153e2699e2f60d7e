"""`ckpt-doctor server` without the `[server]` extra: one line saying what to install, exit 2 (runs without pygls)."""

from __future__ import annotations

import sys

from click.testing import CliRunner

from ckpt_doctor.cli import main


def test_server_is_a_lazy_subcommand():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "server" in result.output


def test_server_without_pygls_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygls", None)  # `import pygls` raises ImportError
    result = CliRunner().invoke(main, ["server"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'ckpt-doctor[server]'" in lines[0] and lines[0].startswith("error:")


def test_check_does_not_import_the_server_or_pygls(tmp_path):
    import subprocess

    script = tmp_path / "a.py"
    script.write_text("import torch\n", encoding="utf-8")
    code = ("import sys, runpy; sys.argv = ['ckpt-doctor', 'check', '--no-cache', %r]\n"
            "try:\n    runpy.run_module('ckpt_doctor', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pygls', 'lsprotocol') or m.startswith('ckpt_doctor.server')))") % str(script)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "[]"
