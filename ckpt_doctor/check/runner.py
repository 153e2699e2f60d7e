"""Checking many files: the cache, parallel workers, and the fix loop."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ckpt_doctor.check.cache import Cache
from ckpt_doctor.config import Settings
from ckpt_doctor.findings import Finding
from ckpt_doctor.check.lint import FileResult, check_file, check_source, read_checked
from ckpt_doctor.analysis.versions import TargetVersions

MAX_FIX_ROUNDS = 8
PARALLEL_THRESHOLD = 16


@dataclass
class RunOptions:
    fix: bool = False
    unsafe_fixes: bool = False
    diff: bool = False
    use_cache: bool = True
    jobs: int | None = None
    keep_sources: bool = False  # full output and fix edits need the text


@dataclass
class RunResult:
    files: list[FileResult] = field(default_factory=list)
    fixes_applied: int = 0
    diffs: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for result in self.files for f in result.findings]

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.files if r.error]


def run_check(paths: list[str], settings: Settings, options: RunOptions, progress=None) -> RunResult:
    fixing = options.fix or options.diff
    keep = options.keep_sources or fixing
    jobs = options.jobs or os.cpu_count() or 1
    work = [(path, settings, options.use_cache, keep) for path in paths]
    if jobs > 1 and len(paths) >= PARALLEL_THRESHOLD:
        chunk = max(1, min(64, len(paths) // (jobs * 8) or 1))
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
        results = []
        try:
            for result in pool.map(_check_one, work, chunksize=chunk):
                results.append(result)
                if progress:
                    progress(len(results), len(paths))
        finally:  # on Ctrl-C / SIGTERM too: drop the queued files instead of checking them all first
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        results = []
        for item in work:
            results.append(_check_one(item))
            if progress:
                progress(len(results), len(paths))
    run = RunResult(sorted(results, key=lambda r: r.path))
    if fixing:
        for index, result in enumerate(run.files):
            try:
                run.files[index] = _fix_file(result, settings, options, run)
            except Exception as exc:  # one file's failure must not stop the others' fixes
                run.files[index] = replace(result, error=f"{result.path}: internal error while fixing: {type(exc).__name__}: {exc} (please report this)")
    return run


def _worker_init() -> None:
    """Workers leave Ctrl-C to the parent, which stops the run and shuts the pool down."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _check_one(item: tuple[str, Settings, bool, bool]) -> FileResult:
    path, settings, use_cache, keep_source = item
    try:
        result = _check_cached(path, settings) if use_cache else check_file(path, settings)
    except Exception as exc:  # an internal error on one file must not stop the others
        result = FileResult(path, error=f"{path}: internal error: {type(exc).__name__}: {exc} (please report this)")
    if not keep_source:
        result.source = None
    return result


def _check_cached(path: str, settings: Settings) -> FileResult:
    source = read_checked(path, settings)
    if isinstance(source, FileResult):
        return source
    cache = Cache(Path(settings.cache_dir) if settings.cache_dir else settings.root / ".ckpt_doctor_cache", settings.fingerprint())
    versions = TargetVersions(settings.target_versions, script=path, root=settings.root)
    versions_key = ";".join(f"{versions.get(p).low}-{versions.get(p).high}" for p in ("torch", "transformers", "peft", "trl"))
    key = cache.key(source.raw, os.path.abspath(path), versions_key)
    cached = cache.get(key)
    if cached is not None:
        for finding in cached:
            finding.path = path  # the same file named another way (./a.py, ../a.py)
        return FileResult(path, cached, source=source)
    result = check_source(source, settings)
    if result.error is None:
        cache.put(key, result.findings, result.dependencies)
    return result


def _fix_file(result: FileResult, settings: Settings, options: RunOptions, run: RunResult) -> FileResult:
    from ckpt_doctor.check.fix import FixError, unified_diff, write_atomically

    source = result.source
    if result.error or source is None:
        return result
    try:
        text, current, applied = fix_loop(result, settings, options.unsafe_fixes)
    except FixError as exc:
        return replace(result, error=f"{source.path}: cannot fix: {exc}")
    if text == source.text:
        return result
    if options.diff:
        run.diffs.append(unified_diff(source.path, source.text, text, notebook=source.is_notebook))
        run.fixes_applied += applied
        return result
    try:
        write_atomically(source.path, source.render(text), expected=source.raw)
    except (FixError, OSError) as exc:
        return replace(result, error=f"{source.path}: cannot write fixes: {exc}")
    run.fixes_applied += applied
    return current


def fix_loop(result: FileResult, settings: Settings, unsafe: bool) -> tuple[str, FileResult, int]:
    """What `--fix` makes of a checked file, without writing it: the fixed source text, its check, and how many fixes
    were applied. Rounds of fixes and re-checks until nothing changes (a fix can reveal another finding). Raises
    FixError. `check --fix` and the language server's "fix all" both run it."""
    from ckpt_doctor.check.fix import FixError, applicable, apply_fixes

    source = result.source
    assert source is not None and result.error is None
    text, current, applied = source.text, result, 0
    for _ in range(MAX_FIX_ROUNDS):
        specs = [f.fix for f in current.findings if applicable(f.fix, unsafe)]
        if not specs:
            break
        new_text = apply_fixes(text, specs)
        if not source.keeps_cells(new_text):  # leave out the fixes that would move code across cells
            specs = [spec for spec in specs if source.keeps_cells(apply_fixes(text, [spec]))]
            new_text = apply_fixes(text, specs)
        if new_text == text:
            break
        applied += len(specs)
        text = new_text
        current = check_source(source.with_text(text), settings)
        if current.error:
            raise FixError(f"the fixed code does not check ({current.error})")
    return text, current, applied


def stderr_progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total >= 50 and (done % 25 == 0 or done == total):
        sys.stderr.write(f"\rchecked {done}/{total} files")
        if done == total:
            sys.stderr.write("\r\033[K")
        sys.stderr.flush()
