#!/usr/bin/env python3
"""How fast does the language server answer an edit? Drives the real server (`ckpt-doctor server`) over stdio with
pygls' client, as an editor does.

A ~500-line training script (bench/server_script.py: examples/train_lora.py grown with helpers) is opened in a
throw-away project; the time to its first diagnostics is measured (cold: imports, first configuration read), then
N edits are sent one at a time (the `learning_rate` changed), each timed from didChange to the
publishDiagnostics of that version: what the user waits for. Last, bursts of keystrokes 10 ms apart, timed from the
last one (those wait for the server's debounce, then one check).

    pip install -e '.[server]'
    python bench/server_speed.py                 # 20 edits, a table on stdout
    python bench/server_speed.py --edits 50 --json bench/results/server_speed.json

The goal: warm diagnostics under 100 ms for a 500-line script. Exit status 0 measured, 1 when the goal is missed,
2 when pygls is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_script import build_script  # noqa: E402

GOAL_MS = 100.0
PYPROJECT = '[tool.ckpt-doctor]\ntarget-versions = { transformers = "4.46", trl = "0.12", torch = "2.5", peft = "0.13" }\n'


async def measure(lines: int, edits: int) -> dict:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("bench", "1")
    published: asyncio.Queue = asyncio.Queue()

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(params: types.PublishDiagnosticsParams) -> None:
        published.put_nowait((time.perf_counter(), params))

    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
        text = build_script(lines)
        path = project / "train.py"
        path.write_text(text, encoding="utf-8")
        uri = path.as_uri()

        started = time.perf_counter()
        await client.start_io(sys.executable, "-m", "ckpt_doctor", "server", env=dict(os.environ))
        await client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities(), root_uri=project.as_uri()))
        client.initialized(types.InitializedParams())
        opened = time.perf_counter()
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text)))
        first_at, first = await wait_for(published, uri, 1)
        first_ms = (first_at - opened) * 1000

        times = []
        for version in range(2, edits + 2):
            edited = text.replace("learning_rate=2e-4", f"learning_rate={version}e-5")  # a keystroke's worth
            sent = time.perf_counter()
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                [types.TextDocumentContentChangeWholeDocument(text=edited)]))
            at, params = await wait_for(published, uri, version)
            times.append((at - sent) * 1000)
            assert [d.code for d in params.diagnostics] == [d.code for d in first.diagnostics], "findings changed under a neutral edit"

        # typing: 5 keystrokes 10 ms apart, checked once, after the last (debounce + one check)
        bursts = []
        version = edits + 1
        for burst in range(5):
            for key in range(5):
                version += 1
                client.text_document_did_change(types.DidChangeTextDocumentParams(
                    types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    [types.TextDocumentContentChangeWholeDocument(text=text.replace("learning_rate=2e-4", f"learning_rate={version}e-5"))]))
                sent = time.perf_counter()
                await asyncio.sleep(0.01)
            at, _ = await wait_for(published, uri, version)
            bursts.append((at - sent) * 1000)
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()

    from ckpt_doctor.server.protocol import DEBOUNCE_SECONDS

    times.sort()
    return {
        "lines": text.count("\n"),
        "findings": len(first.diagnostics),
        "start_and_initialize_ms": round((opened - started) * 1000, 1),
        "first_diagnostics_ms": round(first_ms, 1),
        "edits": edits,
        "warm_median_ms": round(statistics.median(times), 1),
        "warm_p95_ms": round(times[max(0, int(round(0.95 * len(times))) - 1)], 1),
        "warm_max_ms": round(times[-1], 1),
        "debounce_ms": DEBOUNCE_SECONDS * 1000,
        "typing_burst_median_ms": round(statistics.median(bursts), 1),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


async def wait_for(queue: asyncio.Queue, uri: str, version: int):
    while True:
        at, params = await asyncio.wait_for(queue.get(), timeout=60)
        if params.uri == uri and params.version == version:
            return at, params


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    options = parser.parse_args()
    try:
        import pygls  # noqa: F401
    except ImportError:
        print("error: needs pygls: pip install -e '.[server]'", file=sys.stderr)
        return 2
    figures = asyncio.run(measure(options.lines, options.edits))
    print(f"script: {figures['lines']} lines, {figures['findings']} findings")
    print(f"server start + initialize: {figures['start_and_initialize_ms']:8.1f} ms")
    print(f"first diagnostics (cold):  {figures['first_diagnostics_ms']:8.1f} ms")
    print(f"edit -> diagnostics, {figures['edits']} edits one at a time (warm; an edit after a pause is checked at once):")
    print(f"  median {figures['warm_median_ms']:.1f} ms, p95 {figures['warm_p95_ms']:.1f} ms, max {figures['warm_max_ms']:.1f} ms "
          f"(goal: < {GOAL_MS:.0f} ms)")
    print(f"last keystroke of a burst (10 ms apart) -> diagnostics: median {figures['typing_burst_median_ms']:.1f} ms "
          f"({figures['debounce_ms']:.0f} ms debounce + one check)")
    print(f"{figures['cpus']} CPUs, load average {figures['load_average']}")
    if options.json:
        Path(options.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if figures["warm_median_ms"] < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
