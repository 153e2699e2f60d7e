"""Checking many files: the cache, parallel workers, and the fix loop."""

from __future__ import annotations

import os
import stat
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from ckpt_doctor.check.cache import Cache
from ckpt_doctor.config import Settings
from ckpt_doctor.findings import Finding
from ckpt_doctor.check.lint import FileResult, check_file, check_source, read_checked
from ckpt_doctor.analysis.versions import requirement_files_read, versions_key

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
    write: bool = True  # --fix writes the files; False (stdin): the fixed text is kept in RunResult.fixed_texts


@dataclass
class RunResult:
    files: list[FileResult] = field(default_factory=list)
    fixes_applied: int = 0
    diffs: list[str] = field(default_factory=list)
    fixed: dict[str, Counter] = field(default_factory=dict)  # path -> how many fixes of each code were applied
    fixed_texts: dict[str, bytes] = field(default_factory=dict)  # path -> the fixed file, when not written

    @property
    def findings(self) -> list[Finding]:
        return [f for result in self.files for f in result.findings]

    @property
    def suppressed(self) -> list[Finding]:
        """The findings a noqa comment hides (SARIF reports them as suppressed)."""
        return [f for result in self.files for f in result.suppressed]

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.files if r.error]


def run_check(paths: list[str], settings: Settings, options: RunOptions, progress=None) -> RunResult:
    keep = options.keep_sources or options.fix or options.diff
    jobs = options.jobs or os.cpu_count() or 1
    cache = _cache_for(settings) if options.use_cache else None
    results: list[FileResult] = []
    misses = []
    for path in paths:  # a warm cache answers here, without starting workers
        hit = _cached(path, settings, cache, keep) if cache is not None else None
        if hit is not None:
            results.append(hit)
        else:
            misses.append((path, settings, cache, keep))
    if progress and results:
        progress(len(results), len(paths))
    if jobs > 1 and len(misses) >= PARALLEL_THRESHOLD:
        chunk = max(1, min(64, len(misses) // (jobs * 8) or 1))
        from concurrent.futures import ProcessPoolExecutor  # a one-file check does not pay for multiprocessing

        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
        try:
            for result in pool.map(_check_one, misses, chunksize=chunk):
                results.append(result)
                if progress:
                    progress(len(results), len(paths))
        finally:  # on Ctrl-C / SIGTERM too: drop the queued files instead of checking them all first
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        for item in misses:
            results.append(_check_one(item))
            if progress:
                progress(len(results), len(paths))
    return _fixed(RunResult(sorted(results, key=lambda r: r.path)), settings, options)


def run_text(name: str, raw: bytes, settings: Settings, options: RunOptions) -> RunResult:
    """A file given as bytes (stdin) under `name`: checked as that file would be, never written (with --fix the
    fixed bytes are in `fixed_texts[name]`)."""
    from ckpt_doctor.analysis.source import SourceError, source_from_bytes

    try:
        source = source_from_bytes(name, raw, settings.max_file_size)
    except SourceError as exc:
        return RunResult([FileResult(name, error=str(exc))])
    return _fixed(RunResult([check_source(source, settings)]), settings, replace(options, write=False))


def _fixed(run: RunResult, settings: Settings, options: RunOptions) -> RunResult:
    if options.fix or options.diff:
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


def _cache_for(settings: Settings) -> Cache:
    return Cache(Path(settings.cache_dir) if settings.cache_dir else settings.root / ".ckpt_doctor_cache", settings.fingerprint())


def _check_one(item: tuple[str, Settings, Cache | None, bool]) -> FileResult:
    path, settings, cache, keep_source = item
    try:
        result = check_file(path, settings)
        if cache is not None and result.error is None and result.source is not None:
            cache.put(_key(cache, path, settings, result.source.raw), result.findings,
                      [*result.dependencies, *map(str, requirement_files_read(path, settings.root))], result.suppressed)
    except Exception as exc:  # an internal error on one file must not stop the others
        result = FileResult(path, error=f"{path}: internal error: {type(exc).__name__}: {exc} (please report this)")
    if not keep_source:
        result.source = None
    return result


def _cached(path: str, settings: Settings, cache: Cache, keep_source: bool) -> FileResult | None:
    """The findings the cache holds for the file as it is now, or None: read from its bytes, before any parsing."""
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode) or status.st_size > settings.max_file_size:
            return None
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    cached = cache.get(_key(cache, path, settings, raw))
    if cached is None:
        return None
    findings, suppressed = cached
    for finding in findings + suppressed:
        finding.path = path  # the same file named another way (./a.py, ../a.py)
    source = read_checked(path, settings) if keep_source else None
    return FileResult(path, findings, source=source if not isinstance(source, FileResult) else None, suppressed=suppressed)


def _key(cache: Cache, path: str, settings: Settings, raw: bytes) -> str:
    return cache.key(raw, os.path.abspath(path), versions_key(path, settings.root))


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
        _count(run, source.path, applied)
        return result
    if options.write:
        try:
            write_atomically(source.path, source.render(text), expected=source.raw)
        except (FixError, OSError) as exc:
            return replace(result, error=f"{source.path}: cannot write fixes: {exc}")
    else:
        run.fixed_texts[source.path] = source.render(text)
    _count(run, source.path, applied)
    return current


def _count(run: RunResult, path: str, applied: Counter) -> None:
    run.fixes_applied += sum(applied.values())
    run.fixed[path] = applied


def fix_loop(result: FileResult, settings: Settings, unsafe: bool) -> tuple[str, FileResult, Counter]:
    """What `--fix` makes of a checked file, without writing it: the fixed source text, its check, and the fixes
    applied (a count per code). Rounds of fixes and re-checks until nothing changes (a fix can reveal another
    finding). Raises FixError. `check --fix` and the language server's "fix all" both run it."""
    from ckpt_doctor.check.fix import FixError, applicable, apply_fixes

    source = result.source
    assert source is not None and result.error is None
    text, current, applied = source.text, result, Counter()
    for _ in range(MAX_FIX_ROUNDS):
        fixable = [f for f in current.findings if applicable(f.fix, unsafe)]
        if not fixable:
            break
        new_text = apply_fixes(text, [f.fix for f in fixable])
        if not source.keeps_cells(new_text):  # leave out the fixes that would move code across cells
            fixable = [f for f in fixable if source.keeps_cells(apply_fixes(text, [f.fix]))]
            new_text = apply_fixes(text, [f.fix for f in fixable])
        if new_text == text:
            break
        applied.update(f.code for f in fixable)
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
