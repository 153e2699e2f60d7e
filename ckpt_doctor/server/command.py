"""`ckpt-doctor server`: the language server over stdio. Needs the `[server]` extra (pygls, lsprotocol)."""

from __future__ import annotations

import sys

import click

EXIT_USAGE = 2


@click.command("server", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--stdio", is_flag=True, help="Talk over stdin/stdout (the default and only transport; accepted because editors pass it).")
def server(stdio: bool) -> None:  # noqa: ARG001
    """Run the language server (LSP over stdio): diagnostics, quick fixes and memory hovers in your editor."""
    try:
        import lsprotocol  # noqa: F401
        import pygls  # noqa: F401
    except ImportError:
        click.echo("error: `ckpt-doctor server` needs pygls and lsprotocol: pip install 'ckpt-doctor[server]'", err=True)
        sys.exit(EXIT_USAGE)
    from ckpt_doctor.server.protocol import build_server

    build_server().start_io()
