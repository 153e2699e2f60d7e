"""`ckpt-doctor server` without the `[server]` extra: one line saying what to install, exit 2 (runs without pygls)."""

from __future__ import annotations

import sys

from click.testing import CliRunner

from ckpt_doctor.cli import main
from tests.conftest import REPO_ROOT


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


def test_the_server_imports_neither_torch_nor_transformers(tmp_path):
    """Checking, fixing and the hover's estimate, as the server runs them, in a fresh interpreter."""
    import subprocess

    import pytest

    pytest.importorskip("pygls")
    code = """
import sys
from pathlib import Path
from ckpt_doctor.server.protocol import build_server
from ckpt_doctor.server.documents import check_buffer
from ckpt_doctor.server.workspace import WorkspaceSettings
from ckpt_doctor.server.hover import hover
from ckpt_doctor.server import actions
from ckpt_doctor.findings import Position
build_server()
text = Path(sys.argv[1]).read_text()
settings, _ = WorkspaceSettings().for_path(sys.argv[1])
checked = check_buffer(sys.argv[1], 1, text, settings)
assert checked.findings, checked.problem
assert "peak" in hover(checked, Position(17, 30)).markdown
for action in actions.actions_for(checked, list(range(len(checked.findings))), None):
    actions.edits(checked, action)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft", "trl")))
"""
    script = tmp_path / "train.py"
    script.write_text((REPO_ROOT / "examples" / "train_lora.py").read_text(encoding="utf-8"), encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", code, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
