"""`check --watch`: check, then check again whenever a file changes, until Ctrl-C / SIGTERM.

Changes are found by polling the modification times and sizes of the files a check would read (found again each
time, so a new file counts) and of the configuration file: no extra dependency, and it works the same on every
platform and file system (network mounts and containers included, where change notifications often fail).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable


def snapshot(paths: Iterable[str]) -> dict[str, tuple[int, int]]:
    stamps = {}
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue
        stamps[path] = (info.st_mtime_ns, info.st_size)
    return stamps


def watch(check_once: Callable[[], None], watched: Callable[[], Iterable[str]], announce: Callable[[str], None],
          interval: float = 0.5, rounds: int | None = None) -> None:
    """Run `check_once`, then again each time the stamps of `watched()` change; `rounds`: stop after that many
    checks (tests), else run until interrupted."""
    done = 0
    while True:
        check_once()
        done += 1
        if rounds is not None and done >= rounds:
            return
        before = snapshot(watched())  # after the check: its own --fix writes are not a change
        announce("Watching for file changes.")
        while True:
            time.sleep(interval)
            after = snapshot(watched())
            if after != before:
                changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
                announce(f"File change detected: {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}")
                break
