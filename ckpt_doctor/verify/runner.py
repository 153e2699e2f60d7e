"""The parent side of ``verify``: start the bootstrap in a child process (its own session, hence its own
process group), show progress, enforce the time limit, and read the JSON it writes.  No torch here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import bootstrap as _b  # constants only: bootstrap imports torch inside functions

_SPINNER = "|/-\\"


@dataclass
class ChildRun:
    returncode: int | None
    timed_out: bool
    seconds: float
    result: dict | None
    output: str              # the child's stdout and stderr, interleaved
    pgid: int | None = None
    last_status: str | None = None
    notes: list[str] = field(default_factory=list)

    def output_tail(self, n: int = 25) -> list[str]:
        return self.output.rstrip("\n").splitlines()[-n:]


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent.parent)


def child_env(device: str, steps: int, checkpointing: str, result: str, status: str) -> dict:
    env = dict(os.environ)
    env[_b.ENV_RESULT] = result
    env[_b.ENV_STATUS] = status
    env[_b.ENV_STEPS] = str(steps)
    env[_b.ENV_DEVICE] = device
    env[_b.ENV_CHECKPOINTING] = checkpointing
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # Trainer / accelerate pick the CPU as they would on a CPU-only machine
    root = _package_root()
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, root])  # after the user's entries: ckpt_doctor importable
    return env


def kill_group(pgid: int | None, sig: int = signal.SIGKILL) -> None:
    if not pgid:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(target: list[str], *, device: str, steps: int, timeout: float, checkpointing: str = "",
              progress: bool = False, label: str = "", cwd: str | None = None) -> ChildRun:
    """``python -m ckpt_doctor.verify.bootstrap TARGET...`` with the instrumentation settings in its
    environment.  ``target`` is ``[SCRIPT, *ARGS]`` or ``["--module", NAME, *ARGS]``."""
    tmp = tempfile.mkdtemp(prefix="ckpt-doctor-verify-")
    result_path = os.path.join(tmp, "result.json")
    status_path = os.path.join(tmp, "status")
    log_path = os.path.join(tmp, "output.log")
    env = child_env(device, steps, checkpointing, result_path, status_path)
    cmd = [sys.executable, "-m", "ckpt_doctor.verify.bootstrap", *target]
    t0 = time.perf_counter()
    timed_out = False
    spin = 0
    shown = False
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=cwd, start_new_session=True)
            pgid = proc.pid  # a new session: the child leads its own process group
            try:
                while True:
                    try:
                        proc.wait(timeout=0.1)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    elapsed = time.perf_counter() - t0
                    if elapsed > timeout:
                        timed_out = True
                        kill_group(pgid, signal.SIGTERM)
                        try:
                            proc.wait(timeout=3)
                        except subprocess.TimeoutExpired:
                            pass
                        kill_group(pgid, signal.SIGKILL)
                        proc.wait()
                        break
                    if progress:
                        status = _read(status_path) or "starting"
                        sys.stderr.write(f"\r\033[K{_SPINNER[spin % 4]} verify{label}: {status} ({elapsed:.0f} s)")
                        sys.stderr.flush()
                        spin += 1
                        shown = True
            except BaseException:
                kill_group(pgid, signal.SIGKILL)
                proc.wait()
                raise
            finally:
                kill_group(pgid, signal.SIGKILL)  # what the script left behind (data-loader workers, ...)
    finally:
        if shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
    seconds = time.perf_counter() - t0
    output = _read(log_path) or ""
    result = None
    text = _read(result_path)
    if text:
        try:
            result = json.loads(text)
        except json.JSONDecodeError:
            result = None
    last_status = _read(status_path)
    shutil.rmtree(tmp, ignore_errors=True)
    return ChildRun(proc.returncode, timed_out, seconds, result, output, pgid, last_status)


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
