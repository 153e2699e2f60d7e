#!/usr/bin/env python3
"""How fast is `ckpt-doctor check`? Measures it the way users run it: as fresh processes.

(a) one small file checked end to end (a fresh `ckpt-doctor check --no-cache` process, median of N
    runs), next to the bare interpreter start-up and the import time of the package;
(b) files/s and lines/s over a corpus of real training scripts, `--no-cache` at `-j 1`, `-j 2` and the
    default number of jobs, then with the cache warm;
(c) for reference, ruff (every rule, concise output, no cache) on the same corpus, if it is installed.

The corpus is a folder of .py/.ipynb files, e.g. the one `bench/field/build_corpus.py` writes from the
list in `bench/field/corpus.tsv`:

    python bench/field/build_corpus.py            # -> $CKPT_DOCTOR_CORPUS or /tmp/ckpt-corpus
    python bench/check_speed.py                   # table on stdout
    python bench/check_speed.py /tmp/ckpt-corpus --json bench/results/check_speed.json

Exit status: 0 measured (files the tool could not check are listed as warnings and counted in the JSON);
2 when the corpus (or ckpt-doctor) is missing; 1 when a measured run failed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = os.environ.get("CKPT_DOCTOR_CORPUS") or "/tmp/ckpt-corpus"
SMALL_FILE = REPO / "examples" / "train_lora.py"
SMALL_CONFIG = REPO / "examples" / "llamafactory_lora_sft.yaml"  # with the DeepSpeed JSON it names
FALLBACK_SMALL = '''"""A small LoRA fine-tune (benchmark input)."""
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf", torch_dtype=torch.bfloat16)
model.gradient_checkpointing_enable()
model = get_peft_model(model, LoraConfig(r=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
args = TrainingArguments(output_dir="out", per_device_train_batch_size=4, bf16=True)
Trainer(model=model, args=args).train()
'''


# ----------------------------------------------------------------------------------------------- helpers

def ckpt_doctor_command() -> list[str]:
    """The console script next to this interpreter, else on PATH, else `python -m ckpt_doctor`."""
    here = Path(sys.executable).parent / "ckpt-doctor"
    if here.is_file() and os.access(here, os.X_OK):
        return [str(here)]
    found = shutil.which("ckpt-doctor")
    if found:
        return [found]
    return [sys.executable, "-m", "ckpt_doctor"]


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    # as an installed tool runs: with its bytecode cached (PYTHONDONTWRITEBYTECODE, set in some shells and CI images,
    # would make every start-up compile the package again: 0.29 s instead of 0.16 s for one file on this machine)
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start, proc


def repeat(cmd: list[str], n: int, cwd: Path, env: dict | None = None, file_errors_under: Path | None = None) -> dict:
    """Run `cmd` n times. With `file_errors_under`, exit 2 counts as a measured run when every stderr
    line it printed is a per-file `error: <file under that folder>...` (the other files were checked)."""
    times, last = [], None
    for _ in range(n):
        t, last = timed(cmd, cwd, env)
        if last.returncode != 0 and not (file_errors_under and last.returncode == 2 and _only_file_errors(last.stderr, file_errors_under)):
            return {"error": f"exit {last.returncode}: {last.stderr.decode(errors='replace').strip()[-800:]}"}
        times.append(t)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": n,
            "stdout_bytes": len(last.stdout), "stderr": last.stderr.decode(errors="replace")}


def _only_file_errors(stderr: bytes, folder: Path) -> bool:
    lines = [l for l in stderr.decode(errors="replace").splitlines() if l.strip()]
    return bool(lines) and all(l.startswith(f"error: {folder}") for l in lines if l.startswith("error:")) \
        and any(l.startswith("error:") for l in lines)


def corpus_stats(folder: Path) -> dict:
    files = py = nb = lines = size = 0
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in (".py", ".ipynb"):
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # .ckpt_doctor_cache, .ipynb_checkpoints, ... (both tools skip them)
        files += 1
        size += path.stat().st_size
        if path.suffix == ".py":
            py += 1
            lines += path.read_bytes().count(b"\n")
        else:
            nb += 1
            try:
                cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
            except (OSError, ValueError):
                continue
            for cell in cells:
                if cell.get("cell_type") == "code":
                    src = cell.get("source", "")
                    lines += len(src) if isinstance(src, list) else src.count("\n") + 1
    return {"files": files, "py_files": py, "notebooks": nb, "lines": lines, "bytes": size}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return {"nproc": int(nproc) if nproc.isdigit() else nproc, "os_cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
            "python": platform.python_version(), "platform": platform.platform()}


def version_of(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None


def top_imports(stderr: str, limit: int = 6) -> list[dict]:
    """Top-level modules by cumulative import time, from `python -X importtime` output."""
    rows = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top level only
            rows.append({"module": m.group(4), "cumulative_ms": int(m.group(2)) / 1000})
    rows.sort(key=lambda r: -r["cumulative_ms"])
    return rows[:limit]


def rate(stats: dict, seconds: float) -> dict:
    return {"files_per_s": stats["files"] / seconds, "lines_per_s": stats["lines"] / seconds}


# ----------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS,
                    help="folder of training scripts (default: $CKPT_DOCTOR_CORPUS or /tmp/ckpt-corpus)")
    ap.add_argument("--json", dest="json_file", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--small-runs", type=int, default=10, help="runs for the one-small-file figure (default 10)")
    ap.add_argument("--corpus-runs", type=int, default=3, help="runs per corpus figure (default 3)")
    ap.add_argument("--no-ruff", action="store_true", help="skip the ruff reference")
    args = ap.parse_args(argv)

    corpus = Path(args.corpus).expanduser().resolve()
    if not corpus.is_dir():
        print(f"error: corpus folder {corpus} is missing. Build it with `python bench/field/build_corpus.py "
              f"--out {corpus}` (needs local snapshots of the listed repositories), or pass another folder.",
              file=sys.stderr)
        return 2
    stats = corpus_stats(corpus)
    if stats["files"] == 0:
        print(f"error: corpus folder {corpus} holds no .py or .ipynb files", file=sys.stderr)
        return 2

    tool = ckpt_doctor_command()
    tool_version = version_of(tool + ["--version"])
    if tool_version is None:
        print(f"error: cannot run ckpt-doctor ({' '.join(tool)}); install it with `pip install -e .`", file=sys.stderr)
        return 2

    failures: list[str] = []
    warnings: list[str] = []  # files the tool could not check: bugs to report, but the run was measured
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                    "ckpt_doctor": tool_version, "command": tool, "corpus": {"path": str(corpus), **stats}}

    with tempfile.TemporaryDirectory(prefix="ckpt-bench-") as tmp:
        work = Path(tmp)  # cwd of every run: no pyproject.toml above it, and the cache lands here
        small = work / "small" / "train.py"
        small.parent.mkdir()
        small.write_text(SMALL_FILE.read_text(encoding="utf-8") if SMALL_FILE.is_file() else FALLBACK_SMALL, encoding="utf-8")
        small_lines = small.read_text(encoding="utf-8").count("\n")

        # (a) start-up -------------------------------------------------------------------------------
        py = sys.executable
        base = repeat([py, "-c", "pass"], args.small_runs, work)
        imp = repeat([py, "-c", "import ckpt_doctor.cli"], args.small_runs, work)
        one = repeat(tool + ["check", "--no-cache", "--exit-zero", str(small)], args.small_runs, work)
        config = repeat(tool + ["check", "--no-cache", "--exit-zero", str(SMALL_CONFIG.relative_to(REPO))], args.small_runs, REPO)
        trace = timed([py, "-X", "importtime", "-m", "ckpt_doctor", "check", "--no-cache", "--exit-zero", str(small)], work)[1]
        heavy = sorted({m for m in ("torch", "transformers", "peft", "trl", "accelerate", "libcst")
                        if re.search(rf"\|\s*{m}$", trace.stderr.decode(errors="replace"), re.M)})
        for name, r in (("interpreter", base), ("import", imp), ("one small file", one)):
            if "error" in r:
                failures.append(f"{name}: {r['error']}")
        result["startup"] = {
            "small_file": {"source": str(SMALL_FILE.relative_to(REPO)) if SMALL_FILE.is_file() else "built-in", "lines": small_lines},
            "python_startup_s": base.get("median_s"),
            "import_ckpt_doctor_cli_s": (imp["median_s"] - base["median_s"]) if "median_s" in imp and "median_s" in base else None,
            "check_one_small_file_s": one.get("median_s"),
            "check_one_small_file_min_s": one.get("min_s"),
            "check_one_config_s": config.get("median_s"),  # a LLaMA-Factory YAML and the DeepSpeed JSON it names
            "runs": args.small_runs,
            "modules_imported_by_check": heavy,
            "top_imports": top_imports(trace.stderr.decode(errors="replace")),
        }

        # (b) corpus -------------------------------------------------------------------------------
        runs: dict[str, dict] = {}
        jobs_default = os.cpu_count() or 1
        variants = [("no cache, -j 1", ["-j", "1"]), ("no cache, -j 2", ["-j", "2"])]
        if jobs_default not in (1, 2):
            variants.append((f"no cache, default jobs ({jobs_default})", []))
        else:
            variants[jobs_default - 1] = (variants[jobs_default - 1][0] + " (default)", variants[jobs_default - 1][1])
        for label, extra in variants:
            r = repeat(tool + ["check", "--no-cache", "--exit-zero", *extra, str(corpus)], args.corpus_runs, work, file_errors_under=corpus)
            runs[label] = r
        # warm cache: one run fills it (timed too), then the warm runs
        fill = repeat(tool + ["check", "--exit-zero", str(corpus)], 1, work, file_errors_under=corpus)
        runs["cache filling (first run), default jobs"] = fill
        runs["cache warm, default jobs"] = repeat(tool + ["check", "--exit-zero", str(corpus)], args.corpus_runs, work, file_errors_under=corpus)
        for label, r in runs.items():
            if "error" in r:
                failures.append(f"{label}: {r['error']}")
            else:
                r.update(rate(stats, r["median_s"]))
                errs = [l for l in r.pop("stderr").splitlines() if l.startswith("error:")]
                r["file_errors"] = len(errs)
                if errs:
                    r["file_error_sample"] = errs[:5]
                    warnings.append(f"{label}: {len(errs)} file(s) could not be checked, e.g. {errs[0]}")
        result["corpus_runs"] = runs

        # (c) ruff ---------------------------------------------------------------------------------
        ruff = None if args.no_ruff else (shutil.which("ruff") or (str(Path(py).parent / "ruff") if (Path(py).parent / "ruff").is_file() else None))
        if ruff:
            ruff_runs = {}
            for label, sel in (("ruff, every rule (--select ALL)", ["--select", "ALL"]), ("ruff, default rules", [])):
                cmd = [ruff, "check", "--isolated", "--no-cache", "--exit-zero", "--output-format", "concise", *sel, str(corpus)]
                r = repeat(cmd, args.corpus_runs, work)
                if "error" in r:
                    failures.append(f"{label}: {r['error']}")
                else:
                    r.pop("stderr")
                    r.update(rate(stats, r["median_s"]))
                ruff_runs[label] = r
            result["ruff"] = {"version": version_of([ruff, "--version"]), "runs": ruff_runs}
        else:
            result["ruff"] = None

    print_table(result)
    if args.json_file:
        args.json_file.parent.mkdir(parents=True, exist_ok=True)
        args.json_file.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json_file}")
    if warnings:
        print("\nwarning: some files could not be checked (the timings include them):", file=sys.stderr)
        for w in dict.fromkeys(w.split(": ", 1)[1] for w in warnings):
            print(f"  {w}", file=sys.stderr)
    if failures:
        print("\nfailed runs:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0


def print_table(r: dict) -> None:
    m, c, s = r["machine"], r["corpus"], r["startup"]
    print(f"ckpt-doctor check speed  ({r['ckpt_doctor']}; {m['nproc']} CPUs, {m['cpu_model']}; Python {m['python']})")
    print(f"corpus: {c['path']}: {c['files']} files ({c['py_files']} .py, {c['notebooks']} .ipynb), {c['lines']:,} lines")
    print()
    fmt = lambda x, unit="s": "-" if x is None else f"{x:.3f} {unit}"
    print(f"{'start-up (median of ' + str(s['runs']) + ' fresh processes)':<52} {'time':>12}")
    print(f"{'  python -c pass':<52} {fmt(s['python_startup_s']):>12}")
    print(f"{'  import ckpt_doctor.cli (minus interpreter)':<52} {fmt(s['import_ckpt_doctor_cli_s']):>12}")
    label = f"  check --no-cache, one file ({s['small_file']['lines']} lines), end to end"
    print(f"{label:<52} {fmt(s['check_one_small_file_s']):>12}")
    if s.get("check_one_config_s") is not None:
        print(f"{'  check --no-cache, one framework config, end to end':<52} {fmt(s['check_one_config_s']):>12}")
    print(f"  heavy modules imported by check: {', '.join(s['modules_imported_by_check']) or 'none'}")
    print()
    print(f"{'corpus (median of runs)':<52} {'time':>9} {'files/s':>9} {'lines/s':>10}")
    rows = list(r["corpus_runs"].items())
    if r.get("ruff"):
        rows += [(f"{k} [{r['ruff']['version']}]", v) for k, v in r["ruff"]["runs"].items()]
    for label, v in rows:
        if "error" in v:
            print(f"  {label:<50} FAILED: {v['error'][:60]}")
            continue
        extra = f"  ({v['file_errors']} file errors)" if v.get("file_errors") else ""
        print(f"  {label:<50} {v['median_s']:>7.2f} s {v['files_per_s']:>9.1f} {v['lines_per_s']:>10,.0f}{extra}")
    if r.get("ruff") is None:
        print("  ruff: not installed (pip install ruff), no reference figure")


if __name__ == "__main__":
    sys.exit(main())
