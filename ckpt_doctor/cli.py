"""The `ckpt-doctor` command line. Subcommands are imported only when they run, so `check` starts
without paying for `estimate` or `verify`, and none of them imports torch or transformers."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import click

from ckpt_doctor import __version__

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
@click.option("--select", multiple=True, metavar="CODES", help="Rule codes or prefixes to enable (e.g. CKPT2,CKPT101).")
@click.option("--extend-select", multiple=True, metavar="CODES", help="Enable these in addition to the selection.")
@click.option("--ignore", multiple=True, metavar="CODES", help="Rule codes or prefixes to disable.")
@click.option("--output-format", type=click.Choice(["concise", "full", "json", "github", "sarif"]), default=None, help="Output format (default: concise).")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]), default=None, help="Lowest severity that fails the run (default: warning).")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings.")
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
    select: tuple[str, ...],
    extend_select: tuple[str, ...],
    ignore: tuple[str, ...],
    output_format: str | None,
    fail_on: str | None,
    exit_zero: bool,
    target_versions: tuple[str, ...],
    gpu_memory: str | None,
    extend_exclude: tuple[str, ...],
    force_exclude: bool,
    config_file: str | None,
    no_cache: bool,
    jobs: int | None,
) -> None:
    """Check training scripts and notebooks for checkpointing misuse and OOM risk."""
    from ckpt_doctor.config import ConfigError, load_settings, parse_severity, parse_size
    from ckpt_doctor.check.discovery import discover
    from ckpt_doctor.check.lint import FileResult
    from ckpt_doctor.check.report import render
    from ckpt_doctor.check.runner import RunOptions, run_check, stderr_progress
    from ckpt_doctor.analysis.versions import parse_target_versions

    try:
        settings = load_settings(Path(config_file) if config_file else None)
    except ConfigError as exc:
        _fail(str(exc))
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
    fmt = output_format or settings.output_format or "concise"
    if fmt not in ("concise", "full", "json", "github", "sarif"):
        _fail(f"unknown output-format {fmt!r} in configuration")

    _exit_on_signals()
    files, missing = discover(list(paths) or ["."], settings, force_exclude=force_exclude)
    options = RunOptions(fix=fix and not diff, unsafe_fixes=unsafe_fixes, diff=diff, use_cache=not no_cache, jobs=jobs,
                         keep_sources=fmt in ("full", "json"))
    run = run_check(files, settings, options, progress=stderr_progress)
    run.files.extend(FileResult(line.split(":", 1)[0], error=line) for line in missing)

    for line in run.errors:
        click.echo(f"error: {line}", err=True)
    if diff:
        for text in run.diffs:
            click.echo(text, nl=False)
        if fmt == "concise":
            n = run.fixes_applied
            click.echo(f"Would fix {n} finding{'s' if n != 1 else ''}." if n else "No fixes available.", err=True)
    else:
        render(fmt, run, sys.stdout, unsafe_fixes=unsafe_fixes)

    if run.errors:
        sys.exit(EXIT_ERROR)
    if diff:
        sys.exit(EXIT_FINDINGS if run.diffs else EXIT_CLEAN)
    failing = [f for f in run.findings if f.severity >= settings.fail_on]
    sys.exit(EXIT_FINDINGS if failing and not exit_zero else EXIT_CLEAN)


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


def _exit_on_signals() -> None:
    """Ctrl-C and SIGTERM end the run with exit 2 through normal unwinding, so a write in progress
    is rolled back (fix.write_atomically) instead of leaving a temporary file."""
    import signal

    def stop(signum, frame):  # noqa: ARG001
        signal.signal(signum, signal.SIG_IGN)  # once is enough
        click.echo(f"\nerror: interrupted ({signal.Signals(signum).name}); files are either unchanged or fully fixed", err=True)
        raise SystemExit(EXIT_ERROR)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
