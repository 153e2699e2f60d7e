"""Which files to check: paths given on the command line, folders walked with excludes and .gitignore."""

from __future__ import annotations

import fnmatch
import os
import re
from functools import lru_cache
from pathlib import Path

from ckpt_doctor.config import Settings

SUFFIXES = (".py", ".pyi", ".ipynb", ".yaml", ".yml", ".json", ".sh")  # configs and launchers of no framework are skipped


def discover(paths: list[str], settings: Settings, force_exclude: bool = False) -> tuple[list[str], list[str]]:
    """(files to check, one-line errors for paths that do not exist)."""
    files: list[str] = []
    errors: list[str] = []
    seen: set[str] = set()
    patterns = list(settings.exclude) + list(settings.extend_exclude)

    def add(path: Path) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            files.append(str(path))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in _walk(path, settings, patterns):
                add(file)
        elif path.is_file() or path.is_symlink():
            if force_exclude and (_excluded(path, settings.root, patterns) or _gitignored(path, settings)):
                continue
            add(path)
        else:
            errors.append(f"{raw}: no such file or directory")
    return files, errors


def _walk(top: Path, settings: Settings, patterns: list[str]):
    ignores: dict[Path, object] = {}
    if settings.respect_gitignore:  # .gitignore files above `top`, up to the repository root
        for folder in Path(os.path.abspath(top)).parents:
            spec = _gitignore_spec(folder)
            if spec is not None:
                ignores[folder] = spec
            if (folder / ".git").exists():
                break
    for folder, dirnames, filenames in os.walk(top, followlinks=False):
        here = Path(folder)
        spec = _gitignore_spec(here) if settings.respect_gitignore else None
        if spec is not None:
            ignores[Path(os.path.abspath(here))] = spec
        base = _relative(here, settings.root)  # resolved once per folder; a link below it is resolved on its own
        dirnames[:] = sorted(
            d for d in dirnames
            if not _excluded(here / d, settings.root, patterns, base) and not _ignored(here / d, ignores, True)
        )
        for name in sorted(filenames):
            path = here / name
            if path.suffix in SUFFIXES and not _excluded(path, settings.root, patterns, base) and not _ignored(path, ignores, False):
                if path.is_file() or path.is_symlink():  # not pipes or sockets named *.py
                    yield path


def _excluded(path: Path, root: Path, patterns: list[str], folder: str | None = None) -> bool:
    """Whether a pattern matches the file's name, or its path from the root (or a folder above it). `folder`: the
    path from the root of the folder `path` is in, when the caller has it."""
    if folder is not None and not os.path.islink(path):
        relative = f"{folder}/{path.name}" if folder else path.name
    else:
        relative = _relative(path, root)
    by_name, by_path = _compiled(tuple(patterns))
    return by_name.match(path.name) is not None or by_path.match(relative) is not None


def _relative(path: Path, root: Path) -> str:
    try:
        relative = path.resolve().relative_to(root).as_posix()
    except (ValueError, OSError, RuntimeError):  # outside the root, or a symlink loop
        return path.as_posix()
    return "" if relative == "." else relative


@lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern]:
    """The patterns as two regular expressions (one test per path instead of four per pattern)."""
    stripped = [p.rstrip("/") for p in patterns]
    by_name = "|".join(f"(?:{fnmatch.translate(p)})" for p in stripped) or "(?!)"
    by_path = "|".join(f"(?:{fnmatch.translate(p)})|(?:{re.escape(p)}(?:/.*)?\\Z)" for p in stripped) or "(?!)"
    return re.compile(by_name, re.DOTALL), re.compile(by_path, re.DOTALL)


def _gitignore_spec(folder: Path):
    gitignore = folder / ".gitignore"
    if not gitignore.is_file():
        return None
    import pathspec

    try:
        lines = gitignore.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ignored(path: Path, ignores: dict, is_dir: bool) -> bool:
    absolute = Path(os.path.abspath(path))
    for base, spec in ignores.items():
        try:
            relative = absolute.relative_to(base).as_posix()
        except ValueError:
            continue
        if spec.match_file(relative + ("/" if is_dir else "")):
            return True
    return False


def _gitignored(path: Path, settings: Settings) -> bool:
    if not settings.respect_gitignore:
        return False
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: read_source reports it
        return False
    for folder in resolved.parents:
        spec = _gitignore_spec(folder)
        if spec is not None and spec.match_file(resolved.relative_to(folder).as_posix()):
            return True
        if (folder / ".git").exists():
            break
    return False
