"""The `ckpt-doctor` command line. Subcommands are imported only when they run, so `check` starts
without paying for `estimate` or `verify`, and none of them imports torch or transformers."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import click

from ckpt_doctor import __version__
from ckpt_doctor.check import OUTPUT_FORMATS

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class LazyGroup(click.Group):
    """Commands listed as "module:attribute", imported on first use."""

    lazy = {
        "check": "ckpt_doctor.cli:check",
        "estimate": "ckpt_doctor.estimate.command:estimate",
        "verify": "ckpt_doctor.verify.command:verify",
        "rules": "ckpt_doctor.cli:rules",
        "server": "ckpt_doctor.server.command:server",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in self.lazy if self._available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = self.lazy.get(name)
        if target is None or not self._available(name):
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def _available(self, name: str) -> bool:
        module = self.lazy[name].split(":")[0]
        return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="ckpt-doctor")
def main() -> None:
    """Find activation-checkpointing misuse and GPU out-of-memory risk in training scripts, before they run."""


def _codes(values: tuple[str, ...]) -> list[str]:
    from ckpt_doctor.config import valid_code_prefix

    codes = [code.strip().upper() for value in values for code in value.split(",") if code.strip()]
    for code in codes:
        if not valid_code_prefix(code):
            raise click.BadParameter(f"{code!r} is not a rule code or prefix (e.g. CKPT1, CKPT201, ALL)")
    return codes


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--fix/--no-fix", default=False, help="Apply safe fixes in place.")
@click.option("--unsafe-fixes", is_flag=True, help="With --fix or --diff, also apply fixes that change behaviour.")
@click.option("--diff", is_flag=True, help="Print the fixes as a unified diff and write nothing.")
@click.option("--show-fixes", is_flag=True, help="List the fixes applied (with --fix or --diff) or available, per file and code.")
@click.option("--select", multiple=True, metavar="CODES", help="Rule codes or prefixes to enable (e.g. CKPT2,CKPT101).")
@click.option("--extend-select", multiple=True, metavar="CODES", help="Enable these in addition to the selection.")
@click.option("--ignore", multiple=True, metavar="CODES", help="Rule codes or prefixes to disable.")
@click.option("--output-format", type=click.Choice(OUTPUT_FORMATS), default=None, help="Output format (default: concise).")
@click.option("-o", "--output-file", type=click.Path(dir_okay=False), default=None, help="Write the report to this file (atomically) instead of stdout.")
@click.option("--statistics", is_flag=True, help="Print the number of findings of each code (most frequent first) instead of the findings.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]), default=None, help="Lowest severity that fails the run (default: warning).")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings.")
@click.option("--add-noqa", is_flag=True, help="Suppress every current finding with `# noqa: CODE` on its line (scripts, notebooks, YAML, shell).")
@click.option("--stdin-filename", default=None, metavar="PATH", help="Check the text on stdin as this file (path `-`); with --fix, print the fixed text.")
@click.option("--watch", is_flag=True, help="Check again whenever a checked file changes (Ctrl-C stops).")
@click.option("--show-settings", is_flag=True, help="Print the resolved settings, target versions and where each comes from, then exit.")
@click.option("--target-version", "target_versions", multiple=True, metavar="PKG=VER", help="Library version the script targets, e.g. transformers=4.46 (repeatable).")
@click.option("--gpu-memory", default=None, metavar="SIZE", help="GPU memory budget for the CKPT4xx rules, e.g. 80GiB.")
@click.option("--extend-exclude", multiple=True, metavar="PATTERN", help="More paths or globs to skip.")
@click.option("--force-exclude", is_flag=True, help="Apply excludes to paths named on the command line too (pre-commit).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="pyproject.toml to read [tool.ckpt-doctor] from.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the cache.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Worker processes (default: CPU count).")
def check(
    paths: tuple[str, ...],
    fix: bool,
    unsafe_fixes: bool,
    diff: bool,
    show_fixes: bool,
    select: tuple[str, ...],
    extend_select: tuple[str, ...],
    ignore: tuple[str, ...],
    output_format: str | None,
    output_file: str | None,
    statistics: bool,
    fail_on: str | None,
    exit_zero: bool,
    add_noqa: bool,
    stdin_filename: str | None,
    watch: bool,
    show_settings: bool,
    target_versions: tuple[str, ...],
    gpu_memory: str | None,
    extend_exclude: tuple[str, ...],
    force_exclude: bool,
    config_file: str | None,
    no_cache: bool,
    jobs: int | None,
) -> None:
    """Check training scripts and notebooks for checkpointing misuse and OOM risk."""
    stdin = "-" in paths or stdin_filename is not None
    if stdin and [p for p in paths if p != "-"]:
        _fail("`-` (stdin) cannot be checked together with other paths")
    for flag, given in (("--watch", watch), ("--add-noqa", add_noqa)):
        if given and stdin:
            _fail(f"{flag} cannot be used with stdin (`-` / --stdin-filename)")
    if add_noqa and (fix or diff):
        _fail("--add-noqa cannot be used with --fix or --diff")

    def resolve():
        settings, from_cli = _check_settings(config_file, select, extend_select, ignore, target_versions, fail_on,
                                             gpu_memory, extend_exclude)
        return settings, from_cli, output_format or settings.output_format or "concise"  # the reader checked it

    first = resolve()
    settings, from_cli, fmt = first
    if show_settings:
        from ckpt_doctor.check.show_settings import render, resolved

        path = stdin_filename or next((p for p in paths if p != "-"), None)
        _emit(render(resolved(settings, from_cli, path), as_json=fmt in ("json", "json-lines")), output_file)
        sys.exit(EXIT_CLEAN)

    def once(resolved=None) -> int:
        settings, _, fmt = resolved or resolve()  # again in --watch: an edited configuration counts
        return _check_once(paths, settings, fmt, (stdin_filename or "-") if stdin else None, fix=fix, unsafe_fixes=unsafe_fixes,
                           diff=diff, show_fixes=show_fixes, output_file=output_file, statistics=statistics,
                           exit_zero=exit_zero, add_noqa=add_noqa, force_exclude=force_exclude, no_cache=no_cache, jobs=jobs)

    if not watch:
        _exit_on_signals()
        sys.exit(once(first))
    import time

    from ckpt_doctor.check.discovery import discover
    from ckpt_doctor.check.watch import watch as watch_files

    _exit_on_signals(quiet=True)  # Ctrl-C is how a watch ends

    def watched() -> list[str]:
        files, _ = discover(list(paths) or ["."], resolve()[0], force_exclude=force_exclude)
        return files + ([str(settings.config_file)] if settings.config_file else [])

    def announce(text: str) -> None:
        click.echo(f"[{time.strftime('%H:%M:%S')}] {text}", err=True)

    watch_files(once, watched, announce)


def _check_settings(config_file, select, extend_select, ignore, target_versions, fail_on, gpu_memory, extend_exclude):
    """The settings of the configuration file with the command line's on top, and the keys the command line set."""
    from ckpt_doctor.analysis.versions import parse_target_versions
    from ckpt_doctor.config import ConfigError, load_settings, parse_severity, parse_size

    try:
        settings = load_settings(Path(config_file) if config_file else None)
    except ConfigError as exc:
        _fail(str(exc))
    given = {"select": select, "extend-select": extend_select, "ignore": ignore, "target-versions": target_versions,
             "fail-on": fail_on, "gpu-memory": gpu_memory, "extend-exclude": extend_exclude}
    try:
        if select:
            settings.select = _codes(select)
        if extend_select:
            settings.extend_select += _codes(extend_select)
        if ignore:
            settings.ignore += _codes(ignore)
        if target_versions:
            settings.target_versions.update(parse_target_versions(list(target_versions)))
        if fail_on:
            settings.fail_on = parse_severity(fail_on)
        if gpu_memory:
            parse_size(gpu_memory)
            settings.gpu_memory = gpu_memory
    except ValueError as exc:
        _fail(str(exc))
    settings.extend_exclude += list(extend_exclude)
    return settings, {key for key, value in given.items() if value}


def _check_once(paths, settings, fmt: str, stdin_name: str | None, *, fix: bool, unsafe_fixes: bool, diff: bool,
                show_fixes: bool, output_file: str | None, statistics: bool, exit_zero: bool, add_noqa: bool,
                force_exclude: bool, no_cache: bool, jobs: int | None) -> int:
    """One check: run it, print or write the report; the exit code."""
    import io

    from ckpt_doctor.check.lint import FileResult
    from ckpt_doctor.check.report import NEEDS_SOURCES, render
    from ckpt_doctor.check.runner import RunOptions, run_check, run_text, stderr_progress

    options = RunOptions(fix=fix and not diff, unsafe_fixes=unsafe_fixes, diff=diff, use_cache=not no_cache, jobs=jobs,
                         keep_sources=fmt in NEEDS_SOURCES or add_noqa)
    if stdin_name is not None:
        raw = click.get_binary_stream("stdin").read()
        run = run_text(stdin_name, raw, settings, options)
    else:
        from ckpt_doctor.check.discovery import discover

        files, missing = discover(list(paths) or ["."], settings, force_exclude=force_exclude)
        run = run_check(files, settings, options, progress=stderr_progress)
        run.files.extend(FileResult(line.split(":", 1)[0], error=line) for line in missing)

    for line in run.errors:
        click.echo(f"error: {line}", err=True)
    if add_noqa:
        return _add_noqa(run)

    out = io.StringIO()
    if stdin_name is not None and options.fix:  # the fixed text is the output, as ruff does; the report goes to stderr
        stdout = click.get_binary_stream("stdout")
        stdout.write(run.fixed_texts.get(stdin_name, raw))
        stdout.flush()
    if diff:
        for text in run.diffs:
            out.write(text)
        if fmt == "concise" and not show_fixes:
            n = run.fixes_applied
            click.echo(f"Would fix {n} finding{'s' if n != 1 else ''}." if n else "No fixes available.", err=True)
    elif statistics:
        from ckpt_doctor.check.summaries import statistics as print_statistics

        print_statistics(run, out, unsafe=unsafe_fixes, as_json=fmt in ("json", "json-lines"))
    else:
        render(fmt, run, out, unsafe_fixes=unsafe_fixes)
    if show_fixes:
        from ckpt_doctor.check.summaries import show_fixes as print_fixes

        text = io.StringIO()
        print_fixes(run, text, unsafe=unsafe_fixes, applied=options.fix, would=diff)
        if fmt in ("concise", "full") and not statistics:
            out.write(text.getvalue())
        else:  # keep a machine format parseable
            click.echo(text.getvalue(), err=True, nl=False)
    if stdin_name is not None and options.fix and output_file is None:
        click.echo(out.getvalue(), err=True, nl=False)
    else:
        _emit(out.getvalue(), output_file)

    if run.errors:
        return EXIT_ERROR
    if diff:
        return EXIT_FINDINGS if run.diffs else EXIT_CLEAN
    failing = [f for f in run.findings if f.severity >= settings.fail_on]
    return EXIT_FINDINGS if failing and not exit_zero else EXIT_CLEAN


def _add_noqa(run) -> int:
    from ckpt_doctor.check.add_noqa import add_noqa

    added = add_noqa(run)
    for line in added.errors:
        click.echo(f"error: {line}", err=True)
    for line in added.left:
        click.echo(f"warning: {line}; no noqa comment added", err=True)
    n = added.directives
    click.echo(f"Added {n} noqa directive{'s' if n != 1 else ''}" + (f" in {added.files} file{'s' if added.files != 1 else ''}." if n else "."), err=True)
    return EXIT_ERROR if run.errors or added.errors else EXIT_CLEAN


def _emit(text: str, output_file: str | None) -> None:
    """The report to stdout, or to `output_file` written atomically (never half-written)."""
    if output_file is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from ckpt_doctor.check.fix import FixError, write_atomically

    try:
        write_atomically(output_file, text.encode("utf-8"), create=True)
    except (FixError, OSError) as exc:
        _fail(f"{output_file}: cannot write the report: {getattr(exc, 'strerror', None) or exc}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("code", required=False)
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text")
def rules(code: str | None, output_format: str) -> None:
    """List the rules, or print the page of one rule (`ckpt-doctor rules CKPT201`)."""
    from ckpt_doctor.rule_pages import page_text
    from ckpt_doctor.rules import all_rules, get_rule

    if code is None:
        catalogue = all_rules()
        if output_format == "json":
            import json

            data = [{"code": r.code, "name": r.name, "severity": str(r.severity), "fix": str(r.fix) if r.fix else None, "summary": r.summary, "url": r.url} for r in catalogue]
            click.echo(json.dumps(data, indent=2))
            return
        width = max(len(r.name) for r in catalogue)
        for r in catalogue:
            fix = f"fix: {r.fix}" if r.fix else "no fix"
            click.echo(f"{r.code}  {r.name:<{width}}  {str(r.severity):<7}  {fix:<17}  {r.summary}")
        return
    found = get_rule(code)
    if found is None:
        _fail(f"unknown rule {code!r}; `ckpt-doctor rules` lists them")
    text = page_text(found.code)
    if text is None:
        _fail(f"the page of {found.code} is missing from this installation")
    if output_format == "json":
        import json

        click.echo(json.dumps({"code": found.code, "name": found.name, "page": text}, indent=2))
    else:
        click.echo(text, nl=not text.endswith("\n"))


def _exit_on_signals(quiet: bool = False) -> None:
    """Ctrl-C and SIGTERM end the run with exit 2 through normal unwinding, so a write in progress
    is rolled back (fix.write_atomically) instead of leaving a temporary file. `quiet` (--watch, which ends this
    way): exit 0 without a word."""
    import signal

    def stop(signum, frame):  # noqa: ARG001
        signal.signal(signum, signal.SIG_IGN)  # once is enough
        if quiet:
            raise SystemExit(EXIT_CLEAN)
        click.echo(f"\nerror: interrupted ({signal.Signals(signum).name}); files are either unchanged or fully fixed", err=True)
        raise SystemExit(EXIT_ERROR)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
