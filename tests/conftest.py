"""Shared helpers for the command-line tests (test_cli, test_output_formats, test_bad_input,
test_notebooks, test_precommit).

Every run pins the library versions the script targets, so results never depend on what happens to
be installed, and most runs pass `--no-cache` so one test never sees another's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO_ROOT = Path(__file__).resolve().parent.parent

TARGET_ARGS = [
    "--target-version", "transformers=5.24",
    "--target-version", "trl=1.16",
    "--target-version", "torch=2.13",
    "--target-version", "peft=0.21",
]
TARGET_TOML = 'target-versions = { transformers = "5.24", trl = "1.16", torch = "2.13", peft = "0.21" }\n'

# CKPT101 (warning, safe fix) on line 5, column 12.
CKPT101_SCRIPT = """\
import torch
from torch.utils.checkpoint import checkpoint

def forward(block, x):
    return checkpoint(block, x)
"""
CKPT101_FIXED = CKPT101_SCRIPT.replace("checkpoint(block, x)", "checkpoint(block, x, use_reentrant=False)")

# CKPT102 (info, unsafe fix) on line 5, column 12.
CKPT102_SCRIPT = """\
import torch
from torch.utils.checkpoint import checkpoint

def forward(block, x):
    return checkpoint(block, x, use_reentrant=True)
"""

CLEAN_SCRIPT = """\
import torch
from torch.utils.checkpoint import checkpoint

def forward(block, x):
    return checkpoint(block, x, use_reentrant=False)
"""

ALL_CODES = [
    "CKPT001",
    "CKPT101", "CKPT102", "CKPT103", "CKPT104", "CKPT105", "CKPT106", "CKPT107", "CKPT108", "CKPT109", "CKPT110",
    "CKPT201", "CKPT202", "CKPT203", "CKPT204", "CKPT205", "CKPT206", "CKPT207", "CKPT208", "CKPT209",
    "CKPT301", "CKPT302", "CKPT303", "CKPT304", "CKPT305", "CKPT306",
]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def codes(self) -> list[str]:
        """The rule codes of the concise lines on stdout, in order."""
        found = []
        for line in self.out.splitlines():
            parts = line.split(": ", 2)
            if len(parts) >= 2 and parts[1].split(" ")[0].startswith("CKPT"):
                found.append(parts[1].split(" ")[0])
        return found

    def json(self):
        return json.loads(self.out)


def _check_args(args, cache: bool, targets: bool) -> list[str]:
    args = ["check", *map(str, args)]
    if targets:
        args += TARGET_ARGS
    if not cache and "--no-cache" not in args:
        args.append("--no-cache")
    return args


def run_subprocess(args, cwd, *, env: dict | None = None, timeout: float = 120) -> Result:
    """`python -m ckpt_doctor ARGS` as a user runs it."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), environment.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    environment.pop("PYTHONWARNINGS", None)
    environment.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "ckpt_doctor", *map(str, args)],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


class Cli:
    """Runs the command line in a temporary project folder (the current directory of the run)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, name: str, text: str | bytes, mode: int | None = None) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_bytes(text.encode("utf-8"))
        if mode is not None:
            path.chmod(mode)
        return path

    def invoke(self, *args) -> Result:
        """In-process through click's CliRunner (fast)."""
        from ckpt_doctor.cli import main

        try:
            runner = CliRunner(mix_stderr=False)  # click < 8.2
        except TypeError:
            runner = CliRunner()
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            import traceback

            raise AssertionError(
                "the command raised instead of reporting:\n" + "".join(traceback.format_exception(*result.exc_info))
            )
        return Result(result.exit_code, result.stdout, result.stderr)

    def check(self, *args, cache: bool = False, targets: bool = True) -> Result:
        return self.invoke(*_check_args(args, cache, targets))

    def subprocess(self, *args, env: dict | None = None) -> Result:
        return run_subprocess(args, self.root, env=env)

    def check_subprocess(self, *args, cache: bool = False, targets: bool = True, env: dict | None = None) -> Result:
        return run_subprocess(_check_args(args, cache, targets), self.root, env=env)


@pytest.fixture
def cli(tmp_path, monkeypatch) -> Cli:
    """A project folder as the current directory; `.git` stops the search for .gitignore files above it."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    monkeypatch.chdir(project)
    return Cli(project)


def notebook(cells: list[dict], indent: int = 1) -> str:
    """An nbformat 4 notebook as Jupyter writes it."""
    doc = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "version": "3.11.7"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(doc, indent=indent, ensure_ascii=False) + "\n"


def code_cell(source: str, cell_id: str, outputs: list | None = None, count: int | None = None) -> dict:
    return {
        "cell_type": "code",
        "execution_count": count,
        "id": cell_id,
        "metadata": {"tags": ["keep-me"]},
        "outputs": outputs or [],
        "source": source.splitlines(keepends=True),
    }


def markdown_cell(source: str, cell_id: str) -> dict:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": source.splitlines(keepends=True)}
