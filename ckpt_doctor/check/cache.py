"""A cache of findings keyed by file content, settings, target versions and tool version.

One JSON file per entry under `.ckpt_doctor_cache/`, written atomically, so concurrent runs and
interrupted runs never leave a half-written entry; an unreadable entry is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ckpt_doctor import __version__
from ckpt_doctor.findings import Finding, finding_from_dict, finding_to_dict


class Cache:
    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder / __version__
        self.fingerprint = fingerprint + _tool_stamp()

    def key(self, raw: bytes, path: str, versions: str) -> str:
        digest = hashlib.sha256()
        for part in (raw, path.encode(), self.fingerprint.encode(), versions.encode()):
            digest.update(part)
            digest.update(b"\0")
        return digest.hexdigest()

    def get(self, key: str) -> tuple[list[Finding], list[Finding]] | None:
        """The findings of an entry, and those its noqa comments suppress."""
        try:
            data = json.loads((self.folder / key[:2] / f"{key}.json").read_text(encoding="utf-8"))
            if not _dependencies_fresh(data.get("dependencies", {})):
                return None
            return [finding_from_dict(f) for f in data["findings"]], [finding_from_dict(f) for f in data["suppressed"]]
        except Exception:  # any damage to an entry is a miss, never an error
            return None

    def put(self, key: str, findings: list[Finding], dependencies: list[str] = (), suppressed: list[Finding] = ()) -> None:
        folder = self.folder / key[:2]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _ensure_gitignore(self.folder.parent)
            payload = json.dumps({"findings": [finding_to_dict(f) for f in findings], "dependencies": _stamp(dependencies),
                                  "suppressed": [finding_to_dict(f) for f in suppressed]})
            fd, temp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
            os.replace(temp, folder / f"{key}.json")
        except OSError:
            pass  # a cache that cannot be written is only a slower run


def _tool_stamp() -> str:
    """The tool's own code and data, by modification time and size: an edited rule in a development install is a
    new tool, as a new release is (what the version alone would miss)."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
            try:
                status = path.stat()
            except OSError:
                continue
            digest.update(f"{path.relative_to(package)}:{status.st_mtime_ns}:{status.st_size};".encode())
    return digest.hexdigest()[:16]


def _stamp(paths) -> dict[str, list[float]]:
    stamps = {}
    for path in paths:
        try:
            stat = os.stat(path)
            stamps[path] = [stat.st_mtime, stat.st_size]
        except OSError:
            stamps[path] = [0, -1]
    return stamps


def _dependencies_fresh(stamps: dict) -> bool:
    return _stamp(stamps) == {k: list(v) for k, v in stamps.items()}


def _ensure_gitignore(folder: Path) -> None:
    marker = folder / ".gitignore"
    if not marker.exists():
        marker.write_text("# Automatically created by ckpt-doctor.\n*\n", encoding="utf-8")
