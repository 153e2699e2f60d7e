"""The pre-commit hooks, run for real with `pre-commit try-repo` against a temporary git repository.

try-repo builds a virtual environment and pip-installs this repository into it, so it needs PyPI.
It sees the working tree's tracked files (committed, staged, modified) but not untracked ones; when
the checkout has any local change the test therefore snapshots the working tree (tracked and
untracked files that .gitignore does not exclude) into a temporary repository and tries that, so
what is tested is always the code as it is on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CKPT101_FIXED, CKPT101_SCRIPT, CLEAN_SCRIPT, REPO_ROOT, TARGET_TOML

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
    pytest.mark.skipif(
        shutil.which("pre-commit") is None and subprocess.run([sys.executable, "-m", "pre_commit", "--version"], capture_output=True).returncode != 0,
        reason="pre-commit is not installed",
    ),
]

_GIT_IDENTITY = ["-c", "user.name=ckpt-doctor tests", "-c", "user.email=tests@example.invalid", "-c", "commit.gpgsign=false"]


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k not in ("SKIP", "PRE_COMMIT_HOME")}
    env.update(PRE_COMMIT_HOME=str(home), PRE_COMMIT_COLOR="never", NO_COLOR="1")
    return env


def _git(*args, cwd: Path, env: dict | None = None) -> str:
    return subprocess.run(["git", *_GIT_IDENTITY, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _pre_commit() -> list[str]:
    exe = shutil.which("pre-commit")
    return [exe] if exe else [sys.executable, "-m", "pre_commit"]


def _hooks_repo(tmp: Path, env: dict) -> Path:
    """REPO_ROOT itself when its checkout is clean, else a committed snapshot of its working tree."""
    if not (REPO_ROOT / ".pre-commit-hooks.yaml").is_file():
        pytest.fail(".pre-commit-hooks.yaml is missing from the repository root")
    try:
        status = _git("status", "--porcelain", cwd=REPO_ROOT, env=env)
    except subprocess.CalledProcessError:
        status = None  # not a git checkout (an unpacked sdist): snapshot it
    if status == "":
        return REPO_ROOT
    snapshot = tmp / "hooks-repo"
    snapshot.mkdir()
    if status is not None:
        listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO_ROOT, env=env).split("\0")
    else:
        listed = [str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if not (source.exists() or source.is_symlink()):
            continue  # deleted in the working tree
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        elif source.is_file():
            shutil.copy2(source, target)
    _git("init", "-q", cwd=snapshot, env=env)
    _git("add", "-A", cwd=snapshot, env=env)
    _git("commit", "-q", "-m", "snapshot of the working tree", cwd=snapshot, env=env)
    return snapshot


@pytest.fixture(scope="module")
def precommit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precommit")
    home = tmp / "pre-commit-home"
    env = _env(home)
    hooks = _hooks_repo(tmp, env)

    def run(hook: str, project: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*_pre_commit(), "try-repo", str(hooks), hook, "--all-files", "--color", "never"],
            cwd=project, env=env, capture_output=True, text=True, timeout=900,
        )

    run.env = env
    return run


def _user_repo(path: Path, env: dict) -> Path:
    path.mkdir()
    _git("init", "-q", cwd=path, env=env)
    (path / "pyproject.toml").write_text("[tool.ckpt-doctor]\n" + TARGET_TOML)
    (path / "train.py").write_text(CKPT101_SCRIPT)
    (path / "clean.py").write_text(CLEAN_SCRIPT)
    (path / "README.md").write_text("checkpoint(block, x) in prose is not checked\n")
    (path / "build").mkdir()
    (path / "build" / "generated.py").write_text(CKPT101_SCRIPT)  # excluded by default, even when named
    _git("add", "-A", cwd=path, env=env)
    _git("add", "-f", "build/generated.py", cwd=path, env=env)
    _git("commit", "-q", "-m", "initial", cwd=path, env=env)
    return path


def test_precommit_hooks_check_then_fix(precommit, tmp_path):
    project = _user_repo(tmp_path / "user-repo", precommit.env)

    check = precommit("ckpt-doctor", project)
    output = check.stdout + check.stderr
    assert check.returncode == 1, output
    assert "train.py:5:12: CKPT101 [warning]" in output
    assert "clean.py:" not in output
    assert "build/generated.py" not in output  # --force-exclude
    assert (project / "train.py").read_text() == CKPT101_SCRIPT

    fix = precommit("ckpt-doctor-fix", project)
    output = fix.stdout + fix.stderr
    assert fix.returncode == 1, output  # pre-commit fails a hook that modified files
    assert "files were modified by this hook" in output
    assert (project / "train.py").read_text() == CKPT101_FIXED
    assert (project / "build" / "generated.py").read_text() == CKPT101_SCRIPT
    assert (project / "clean.py").read_text() == CLEAN_SCRIPT

    again = precommit("ckpt-doctor", project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Passed" in again.stdout


def test_precommit_hook_reports_bad_files(precommit, tmp_path):
    project = tmp_path / "broken-repo"
    project.mkdir()
    _git("init", "-q", cwd=project, env=precommit.env)
    (project / "broken.py").write_text("def f(:\n")
    (project / "train.py").write_text(CKPT101_SCRIPT)
    _git("add", "-A", cwd=project, env=precommit.env)
    _git("commit", "-q", "-m", "initial", cwd=project, env=precommit.env)
    result = precommit("ckpt-doctor-fix", project)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "broken.py:1:" in output and "cannot parse" in output
    assert (project / "broken.py").read_text() == "def f(:\n"
    assert "use_reentrant=False" in (project / "train.py").read_text()
