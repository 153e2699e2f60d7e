"""Snapshot tests over the realistic training scripts in `fixtures/`.

Each folder `fixtures/<name>/` holds one script (`train.py`, or `train.ipynb` for a notebook), a
`pyproject.toml` pinning the target library versions, any side files the script names (DeepSpeed JSON
configs), and the snapshots:

- `expected.txt`: the concise output of `ckpt-doctor check --no-cache train.py` run inside the folder;
- `fixed.py` / `fixed.ipynb`: the script after `ckpt-doctor check --no-cache --fix` (safe fixes only).
  Without it, `--fix` must leave the script byte-identical.

For every fixture the test copies the folder to a temporary directory, runs the CLI in-process with the
working directory set to the copy, compares the output with `expected.txt`, runs `--fix` and compares the
result with the fixed snapshot, runs `--fix` again and checks that nothing changes, and checks that the
fixed file still parses.

Regenerate the snapshots after an intended change of the tool's output:

    CKPT_DOCTOR_UPDATE_SNAPSHOTS=1 pytest tests/test_fixtures.py

then review `git diff fixtures/` before committing. Fixtures listed in `KNOWN_WRONG` are never
rewritten: their `expected.txt` (and fixed snapshot) hold the findings worked out by hand from the rule
pages, which the tool does not produce yet. Their tests are `xfail(strict=True)`, and for them only the
`line: CODE [severity]` of each finding is compared (the tool's message for a finding it does not
emit yet is unknown). When the tool is fixed the test XPASSes, which fails the run: remove the entry.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ckpt_doctor.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
UPDATE = os.environ.get("CKPT_DOCTOR_UPDATE_SNAPSHOTS") == "1"

# fixture -> why the tool's output differs from the findings worked out by hand.
KNOWN_WRONG: dict[str, str] = {}  # fixture name -> why the tool's output is wrong (none at present)

_FINDING = re.compile(r"^(?P<loc>.+?):(?P<line>\d+):(?P<col>\d+): (?P<code>CKPT\d{3}) \[(?P<severity>\w+)\]")


def _fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and any(p.glob("train.*")))


def _script(folder: Path) -> Path:
    notebook = folder / "train.ipynb"
    return notebook if notebook.exists() else folder / "train.py"


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(main, ["check", "--no-cache", *args], catch_exceptions=False)
    assert result.exit_code in (0, 1), f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def _findings(text: str) -> list[tuple[str, int, str, str]]:
    """(location, line, code, severity) of each finding; the column and the message are left out."""
    found = []
    for line in text.splitlines():
        match = _FINDING.match(line)
        if match:
            found.append((match["loc"], int(match["line"]), match["code"], match["severity"]))
    return sorted(found)


def _assert_parses(path: Path) -> None:
    if path.suffix == ".ipynb":
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for index, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            # IPython magics and shell escapes are not Python; the tool hides them the same way.
            source = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
            compile(source, f"{path.name}[cell {index}]", "exec")
    else:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _params():
    for name in _fixture_names():
        marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=KNOWN_WRONG[name])] if name in KNOWN_WRONG else []
        yield pytest.param(name, marks=marks, id=name)


def test_enough_fixtures():
    names = _fixture_names()
    assert len(names) >= 14
    assert any((FIXTURES / n / "train.ipynb").exists() for n in names)
    clean = [n for n in names if (FIXTURES / n / "expected.txt").read_text(encoding="utf-8").startswith("All checks passed")]
    assert len(clean) >= 3
    assert set(KNOWN_WRONG) <= set(names)


@pytest.mark.parametrize("name", list(_params()))
def test_fixture(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source_folder = FIXTURES / name
    work = tmp_path / name
    shutil.copytree(source_folder, work, ignore=shutil.ignore_patterns("expected.txt", "fixed.*", "__pycache__", ".ckpt_doctor_cache"))
    monkeypatch.chdir(work)
    script = _script(work)
    original = script.read_bytes()
    expected_file = source_folder / "expected.txt"
    fixed_file = source_folder / ("fixed" + script.suffix)
    hand_written = name in KNOWN_WRONG

    # 1. the findings
    output = _run([script.name])
    if UPDATE and not hand_written:
        expected_file.write_text(output, encoding="utf-8")
    expected = expected_file.read_text(encoding="utf-8")
    if hand_written:
        assert _findings(output) == _findings(expected)
    else:
        assert output == expected

    # 2. the safe fixes
    _run(["--fix", script.name])
    fixed = script.read_bytes()
    if UPDATE and not hand_written:
        if fixed != original:
            fixed_file.write_bytes(fixed)
        elif fixed_file.exists():
            fixed_file.unlink()
    if fixed_file.exists():
        assert fixed == fixed_file.read_bytes()
    else:
        assert fixed == original, "--fix changed a fixture that has no fixed snapshot"
    _assert_parses(script)

    # 3. idempotent: a second --fix changes nothing
    _run(["--fix", script.name])
    assert script.read_bytes() == fixed
