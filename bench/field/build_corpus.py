#!/usr/bin/env python3
"""Rebuild the field/benchmark corpus of real training scripts from local git snapshots.

The repository keeps only the list (``corpus.tsv``: repository, commit, path, field, note), never the
scripts themselves. This script reads that list, finds a local snapshot of each repository and writes
each file with ``git show COMMIT:PATH`` to ``<out>/<owner>__<repo>/<path>``. It never touches the
network: a repository with no local snapshot, or a snapshot that lacks the commit, is reported as
missing and skipped.

Unless ``--no-pins`` is given, the version pins a user of the script would have next to it come along
too: every ``requirements*.txt``, ``pyproject.toml`` and ``setup.cfg`` of the same commit that lies in
the script's folder or in one of its parent folders inside the repository (ckpt-doctor reads the
nearest pins to decide which torch / transformers / peft / trl the script targets). They are not
.py/.ipynb files, so the benchmark does not count them.

A snapshot of ``owner/name`` is looked for, in each ``--mirrors`` folder (default ``/work/.mirror``),
as any of ``owner+name/repo``, ``owner+name``, ``owner__name``, ``owner/name`` that is a git directory
(bare or with a ``.git`` inside).

    python bench/field/build_corpus.py                      # -> $CKPT_DOCTOR_CORPUS or /tmp/ckpt-corpus
    python bench/field/build_corpus.py --out /tmp/c --field-only
    python bench/field/build_corpus.py --mirrors ~/mirrors --mirrors /work/.mirror

Exit status: 0 when every listed file was written, 1 when some were missing, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TSV = HERE / "corpus.tsv"
DEFAULT_OUT = os.environ.get("CKPT_DOCTOR_CORPUS") or "/tmp/ckpt-corpus"
DEFAULT_MIRRORS = ["/work/.mirror"]


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    need = {"repository", "commit", "path", "field"}
    if rows and not need <= set(rows[0]):
        raise SystemExit(f"error: {path}: expected columns {sorted(need)}, got {sorted(rows[0])}")
    return rows


def _is_git_dir(p: Path) -> Path | None:
    if (p / "HEAD").is_file() and (p / "objects").is_dir():
        return p
    if (p / ".git").is_dir():
        return p / ".git"
    return None


def find_git_dir(repository: str, mirrors: list[Path]) -> Path | None:
    owner, _, name = repository.partition("/")
    for root in mirrors:
        for cand in (
            root / f"{owner}+{name}" / "repo",
            root / f"{owner}+{name}",
            root / f"{owner}__{name}",
            root / owner / name,
        ):
            g = _is_git_dir(cand)
            if g is not None:
                return g
    return None


sys.path.insert(0, str(HERE.parent.parent))
from ckpt_doctor.analysis.versions import FRAMEWORK_VERSION_FILES  # noqa: E402

PIN_FILE = re.compile(r"(^|/)(requirements[^/]*\.txt|pyproject\.toml|setup\.cfg|setup\.py)$")


def pin_files_for(tree: list[str], path: str) -> list[str]:
    """Pin files of the commit in the folder of `path` or above it (inside the repository)."""
    folders = {""}
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        folders.add("/".join(parts[:i]))
    out = []
    for name in tree:
        if PIN_FILE.search(name) and name.rpartition("/")[0] in folders:
            out.append(name)
        elif any(name == f"{folder}/{own}".lstrip("/") for own in FRAMEWORK_VERSION_FILES for folder in folders):
            out.append(name)  # a framework's own release, in its own checkout (its examples run it)
    return out


def git_tree(git_dir: Path, commit: str) -> list[str]:
    res = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "--name-only", commit],
                         capture_output=True, text=True)
    return res.stdout.splitlines() if res.returncode == 0 else []


def safe_target(out: Path, repository: str, path: str) -> Path:
    owner, _, name = repository.partition("/")
    rel = Path(path)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"unsafe path in list: {path!r}")
    return out / f"{owner}__{name}" / rel


def git_show(git_dir: Path, commit: str, path: str) -> bytes | str:
    """The file's bytes, or a one-line reason why not."""
    res = subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"],
        capture_output=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_NO_REPLACE_OBJECTS": "1"},
    )
    if res.returncode != 0:
        why = res.stderr.decode(errors="replace").strip().splitlines()
        return why[-1] if why else "git show failed"
    return res.stdout


def write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tsv", type=Path, default=DEFAULT_TSV, help="the list (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                    help="corpus folder (default: $CKPT_DOCTOR_CORPUS or /tmp/ckpt-corpus)")
    ap.add_argument("--mirrors", type=Path, action="append",
                    help="folder holding local snapshots (repeatable; default /work/.mirror)")
    ap.add_argument("--field-only", action="store_true", help="only the rows with field=yes")
    ap.add_argument("--no-pins", action="store_true",
                    help="do not bring the requirements*.txt / pyproject.toml / setup.cfg / setup.py next to the scripts")
    ap.add_argument("--quiet", "-q", action="store_true")
    args = ap.parse_args(argv)

    if not args.tsv.is_file():
        print(f"error: no list at {args.tsv}", file=sys.stderr)
        return 2
    mirrors = args.mirrors or [Path(m) for m in DEFAULT_MIRRORS]
    rows = read_tsv(args.tsv)
    if args.field_only:
        rows = [r for r in rows if r["field"].strip().lower() == "yes"]

    written = 0
    missing: list[str] = []
    git_dirs: dict[str, Path | None] = {}
    trees: dict[tuple[str, str], list[str]] = {}
    pins_done: set[tuple[str, str]] = set()
    for r in rows:
        repo, commit, path = r["repository"].strip(), r["commit"].strip(), r["path"].strip()
        if repo not in git_dirs:
            git_dirs[repo] = find_git_dir(repo, mirrors)
        g = git_dirs[repo]
        if g is None:
            missing.append(f"{repo}@{commit[:12]}:{path} (no local snapshot of {repo})")
            continue
        try:
            target = safe_target(args.out, repo, path)
        except ValueError as e:
            missing.append(f"{repo}:{path} ({e})")
            continue
        data = git_show(g, commit, path)
        if isinstance(data, str):
            missing.append(f"{repo}@{commit[:12]}:{path} ({data})")
            continue
        write(target, data)
        written += 1
        # a checkout's root: the tool looks for the project's launchers and modules up to it
        (safe_target(args.out, repo, ".git")).mkdir(exist_ok=True)
        if not args.no_pins:
            if (repo, commit) not in trees:
                trees[(repo, commit)] = git_tree(g, commit)
            for pin in pin_files_for(trees[(repo, commit)], path):
                if (repo, pin) in pins_done:
                    continue
                pins_done.add((repo, pin))
                pdata = git_show(g, commit, pin)
                if isinstance(pdata, bytes):
                    write(safe_target(args.out, repo, pin), pdata)

    if not args.quiet:
        extra = "" if args.no_pins else f" (and {len(pins_done)} pin files next to them)"
        print(f"wrote {written} of {len(rows)} files to {args.out}{extra}")
    if missing:
        print(f"missing {len(missing)}:", file=sys.stderr)
        for m in missing:
            print(f"  {m}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
