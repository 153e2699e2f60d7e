#!/usr/bin/env python3
"""Does `ckpt-doctor check` scale to a big repository? A synthetic repository of 10,000 files.

The repository (generated under a temporary folder, seeded, so every run sees the same files) mixes:

  * training scripts with findings: HF Trainer + LoRA without checkpointing kwargs, custom loops with
    `gradient_checkpointing_enable()` and `use_cache` left on, torch modules calling `checkpoint(...)`
    without `use_reentrant`;
  * the same kinds of scripts written correctly (no findings);
  * notebooks (markdown, `%pip` magics, code cells with and without findings);
  * plain Python: utilities, data code, CLIs; half of them mention `save_checkpoint`, so they pass
    the prefilter and are parsed in full, the other half are skipped by it (as most of a real repo is).

It runs `ckpt-doctor check --no-cache` on the whole tree at `-j 1` and `-j 2` (fresh processes, stdout
to a file) and reports, for each: wall time, files/s, lines/s, the peak RSS of the largest process
(`os.wait4`, i.e. getrusage of the finished tree) and the peak RSS summed over the whole process tree
(sampled every 50 ms from /proc, or with psutil elsewhere). A run on a quarter of the tree shows whether
memory grows with the number of files. Finally it runs `-j 2` with stdout and stderr on a pseudo
terminal and records what the progress indication shows there.

    python bench/scale.py                                  # 10,000 files, table on stdout
    python bench/scale.py --json bench/results/scale.json  # and the figures as JSON
    python bench/scale.py --files 2000 --keep /tmp/scale   # smaller; keep the tree

Exit status: 0 measured; 1 when a run failed (exit status other than 1, the expected "findings").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import pty
import random
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = 'target-versions = { transformers = "4.46", torch = "2.4", peft = "0.13", trl = "0.12" }'

try:
    import psutil
except ImportError:  # pragma: no cover - the summed tree RSS is then not measured
    psutil = None


# ----------------------------------------------------------------------------------------------- the repository

MODELS = ["meta-llama/Llama-3.1-8B", "mistralai/Mistral-7B-v0.3", "Qwen/Qwen2.5-1.5B", "gpt2", "EleutherAI/pythia-410m",
          "google/gemma-2-2b", "microsoft/phi-2", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"]


def helpers(rng: random.Random, count: int) -> str:
    """Ordinary functions: the bulk of any real file."""
    out = []
    for i in range(count):
        name = rng.choice(["tokenize", "collate", "pack", "filter", "shuffle", "normalize", "log", "load", "batch", "score"])
        kind = rng.randrange(4)
        if kind == 0:
            out.append(f"def {name}_{i}(examples, max_len={rng.choice([512, 1024, 2048])}):\n"
                       f"    out = []\n    for ex in examples:\n        ids = ex[\"input_ids\"][:max_len]\n"
                       f"        if len(ids) < {rng.randrange(4, 64)}:\n            continue\n        out.append({{\"input_ids\": ids, \"labels\": list(ids)}})\n    return out\n")
        elif kind == 1:
            out.append(f"def {name}_{i}(values):\n    total = 0.0\n    for v in values:\n        total += float(v) * {rng.random():.3f}\n"
                       f"    return total / max(len(values), 1)\n")
        elif kind == 2:
            out.append(f"class {name.title()}Config{i}:\n    def __init__(self, size={rng.randrange(1, 999)}, rate={rng.random():.4f}):\n"
                       f"        self.size = size\n        self.rate = rate\n\n    def as_dict(self):\n        return {{\"size\": self.size, \"rate\": self.rate}}\n")
        else:
            out.append(f"def {name}_{i}(path):\n    with open(path, encoding=\"utf-8\") as handle:\n"
                       f"        return [line.strip() for line in handle if line.strip() and not line.startswith(\"#\")]\n")
    return "\n\n".join(out) + "\n"


def hf_trainer(rng: random.Random, finding: bool) -> str:
    model = rng.choice(MODELS)
    kwargs = "" if finding else '\n    gradient_checkpointing_kwargs={"use_reentrant": False},'
    lora = rng.random() < 0.6
    return (
        f'"""Fine-tune {model} with the Hugging Face Trainer."""\nimport os\n\nimport torch\nfrom datasets import load_dataset\n'
        + ("from peft import LoraConfig, get_peft_model\n" if lora else "")
        + "from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments\n\n"
        f'MODEL_ID = "{model}"\nMAX_LEN = {rng.choice([512, 1024, 2048, 4096])}\n\n'
        + helpers(rng, rng.randrange(2, 8)) + "\n\n"
        "def main():\n    tokenizer = AutoTokenizer.from_pretrained(MODEL_ID)\n"
        "    model = AutoModelForCausalLM.from_pretrained(MODEL_ID, torch_dtype=torch.bfloat16)\n"
        + ("    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=[\"q_proj\", \"v_proj\"]))\n"
           + ("    model.enable_input_require_grads()\n" if not finding else "") if lora else "")
        + "    args = TrainingArguments(\n        output_dir=os.environ.get(\"OUT\", \"runs\"),\n"
        f"        per_device_train_batch_size={rng.choice([1, 2, 4, 8])},\n        gradient_accumulation_steps={rng.choice([1, 4, 16])},\n"
        f"        bf16=True,\n        gradient_checkpointing=True,{kwargs}\n        num_train_epochs=1,\n    )\n"
        "    data = load_dataset(\"json\", data_files=\"train.jsonl\")[\"train\"]\n"
        "    Trainer(model=model, args=args, train_dataset=data, tokenizer=tokenizer).train()\n\n\n"
        'if __name__ == "__main__":\n    main()\n'
    )


def custom_loop(rng: random.Random, finding: bool) -> str:
    return (
        "import torch\nfrom torch.utils.data import DataLoader\nfrom transformers import AutoModelForCausalLM\n\n"
        + helpers(rng, rng.randrange(2, 8)) + "\n\n"
        f"def train(loader: DataLoader, steps: int = {rng.randrange(100, 5000)}):\n"
        f'    model = AutoModelForCausalLM.from_pretrained("{rng.choice(MODELS)}").cuda()\n'
        + ("    model.gradient_checkpointing_enable()\n" if finding else
           '    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})\n    model.config.use_cache = False\n')
        + "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)\n    model.train()\n"
        "    for step, batch in enumerate(loader):\n        loss = model(**batch).loss\n        loss.backward()\n"
        "        optimizer.step()\n        optimizer.zero_grad()\n        if step >= steps:\n            break\n"
    )


def torch_module(rng: random.Random, finding: bool) -> str:
    extra = "" if finding else ", use_reentrant=False"
    return (
        "import torch\nimport torch.nn as nn\nfrom torch.utils.checkpoint import checkpoint\n\n\n"
        f"class Block(nn.Module):\n    def __init__(self, dim={rng.choice([256, 512, 1024])}):\n        super().__init__()\n"
        "        self.norm = nn.LayerNorm(dim)\n        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))\n\n"
        "    def forward(self, x):\n        return x + self.mlp(self.norm(x))\n\n\n"
        f"class Model(nn.Module):\n    def __init__(self, depth={rng.randrange(2, 48)}):\n        super().__init__()\n"
        "        self.blocks = nn.ModuleList(Block() for _ in range(depth))\n        self.gradient_checkpointing = True\n\n"
        "    def forward(self, x):\n        for block in self.blocks:\n"
        f"            if self.gradient_checkpointing and self.training:\n                x = checkpoint(block, x{extra})\n"
        "            else:\n                x = block(x)\n        return x\n\n\n" + helpers(rng, rng.randrange(1, 6))
    )


def plain(rng: random.Random, mentions_checkpoint: bool) -> str:
    head = "import argparse\nimport json\nimport os\nfrom dataclasses import dataclass\n\n\n"
    body = helpers(rng, rng.randrange(3, 14))
    if mentions_checkpoint:
        body += ("\n\ndef save_checkpoint(state, folder, step):\n    os.makedirs(folder, exist_ok=True)\n"
                 "    path = os.path.join(folder, f\"checkpoint-{step}.json\")\n    with open(path, \"w\") as handle:\n"
                 "        json.dump(state, handle)\n    return path\n")
    return head + body


def notebook(rng: random.Random, finding: bool) -> str:
    code = [
        "%pip install -q transformers peft datasets\n",
        hf_trainer(rng, finding) if rng.random() < 0.5 else custom_loop(rng, finding),
        "%%time\nmain()\n",
    ]
    cells = [{"cell_type": "markdown", "id": "intro", "metadata": {}, "source": ["# Fine-tuning\n", "A notebook.\n"]}]
    for i, source in enumerate(code):
        lines = source.splitlines(keepends=True)
        cells.append({"cell_type": "code", "execution_count": i + 1, "id": f"c{i}", "metadata": {}, "outputs": [], "source": lines})
    doc = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                                        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(doc, indent=1) + "\n"


KINDS = [  # (name, share, suffix, generator)
    ("training, findings", 0.25, ".py", lambda rng: rng.choice([hf_trainer, custom_loop, torch_module])(rng, True)),
    ("training, clean", 0.20, ".py", lambda rng: rng.choice([hf_trainer, custom_loop, torch_module])(rng, False)),
    ("notebook", 0.08, ".ipynb", lambda rng: notebook(rng, rng.random() < 0.5)),
    ("plain, save_checkpoint", 0.235, ".py", lambda rng: plain(rng, True)),
    ("plain", 0.235, ".py", lambda rng: plain(rng, False)),
]


def generate(root: Path, count: int, seed: int = 20261127) -> dict:
    rng = random.Random(seed)
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f"[tool.ckpt-doctor]\n{TARGETS}\n", encoding="utf-8")
    kinds = {name: 0 for name, *_ in KINDS}
    lines = size = 0
    per_folder = 100
    for i in range(count):
        pick, acc = rng.random(), 0.0
        for name, share, suffix, make in KINDS:
            acc += share
            if pick < acc:
                break
        text = make(rng)
        folder = root / f"part{i // (per_folder * 25):02d}" / f"pkg{(i // per_folder) % 25:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name.split(',')[0].split()[0]}_{i:05d}{suffix}"
        path.write_text(text, encoding="utf-8")
        kinds[name] += 1
        lines += text.count("\n")
        size += len(text.encode())
    return {"files": count, "kinds": kinds, "lines": lines, "bytes": size, "seed": seed}


# ----------------------------------------------------------------------------------------------- measuring

def ckpt_doctor_command() -> list[str]:
    here = Path(sys.executable).parent / "ckpt-doctor"
    if here.is_file() and os.access(here, os.X_OK):
        return [str(here)]
    found = shutil.which("ckpt-doctor")
    return [found] if found else [sys.executable, "-m", "ckpt_doctor"]


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _proc_tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc/PID/task/TID/children (cheap: no scan of every process)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in children.read_text().split())
            except OSError:
                pass
    return out


def _proc_rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class TreeSampler(threading.Thread):
    """The peak of the summed RSS of a process and all its descendants, sampled every `interval` s.

    Reads /proc directly where it can: psutil's children(recursive=True) scans every process on the
    machine and, at 50 Hz, took most of one of the two CPUs this benchmark is meant to measure.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.peak_processes, self.samples = pid, interval, 0, 0, 0
        self.method = "procfs" if Path(f"/proc/{pid}/task").is_dir() else ("psutil" if psutil else None)
        self.stop = threading.Event()

    def _sample(self) -> tuple[int, int]:
        if self.method == "procfs":
            pids = _proc_tree(self.pid)
            return sum(_proc_rss(p) for p in pids), len(pids)
        root = psutil.Process(self.pid)
        procs = [root, *root.children(recursive=True)]
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total, len(procs)

    def run(self) -> None:
        if self.method is None:
            return
        while not self.stop.is_set():
            try:
                total, n = self._sample()
            except Exception:  # noqa: BLE001 - the process is gone (psutil.Error, OSError)
                break
            self.samples += 1
            if total > self.peak:
                self.peak, self.peak_processes = total, n
            self.stop.wait(self.interval)


def measured_run(cmd: list[str], cwd: Path) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    summary = re.search(r"Found (\d+) finding", stdout)
    return {
        "exit": proc.returncode,
        "wall_s": round(wall, 3),
        "findings": int(summary.group(1)) if summary else 0,
        "errors": sum(1 for line in stderr.splitlines() if line.startswith("error:")),
        "peak_rss_largest_process_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "peak_rss_tree_mib": round(sampler.peak / 2**20, 1) if sampler.method else None,
        "processes_at_peak": sampler.peak_processes if sampler.method else None,
        "rss_samples": sampler.samples,
        "rss_sampling": f"{sampler.method}, every {sampler.interval * 1000:.0f} ms" if sampler.method else None,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "stderr_tail": stderr.strip()[-400:],
    }


def progress_on_terminal(cmd: list[str], cwd: Path) -> dict:
    """Run with stdout and stderr on a pseudo terminal; return what the progress line showed."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, first_progress_at = [], None
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal closed
                break
            if not data:
                break
            if first_progress_at is None and b"\rchecked " in data:
                first_progress_at = time.perf_counter() - start
            chunks.append(data)
        elif proc.poll() is not None:
            try:
                data = os.read(master, 65536)
                chunks.append(data)
                continue
            except OSError:
                break
    proc.wait()
    os.close(master)
    wall = time.perf_counter() - start
    text = b"".join(chunks).decode(errors="replace")
    updates = re.findall(r"\rchecked (\d+)/(\d+) files", text)
    return {
        "exit": proc.returncode,
        "wall_s": round(wall, 3),
        "tty": True,
        "updates": len(updates),
        "first": f"checked {updates[0][0]}/{updates[0][1]} files" if updates else None,
        "last": f"checked {updates[-1][0]}/{updates[-1][1]} files" if updates else None,
        "first_update_after_s": round(first_progress_at, 3) if first_progress_at is not None else None,
        "line_cleared_at_end": "\r\x1b[K" in text,
        "shows": "a single self-overwriting stderr line `\\rchecked N/M files` (every 25 files), erased with "
                 "`\\r\\x1b[K` when done" if updates else "nothing",
    }


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": cpus, "cpu_model": model, "python": platform.python_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", dest="json_file", type=Path, default=None, help="write the figures here")
    parser.add_argument("--keep", type=Path, default=None, help="generate the tree here and keep it")
    parser.add_argument("--repeat", type=int, default=3, help="runs per -j (the CPUs of a shared VM are noisy): median and best")
    parser.add_argument("--no-progress", action="store_true", help="skip the pseudo-terminal run")
    args = parser.parse_args(argv)

    folder = args.keep or Path(tempfile.mkdtemp(prefix="ckpt-scale-"))
    if args.keep and folder.exists():
        shutil.rmtree(folder)
    try:
        t = time.perf_counter()
        repo = generate(folder, args.files)
        repo["generate_s"] = round(time.perf_counter() - t, 2)
        print(f"generated {repo['files']} files, {repo['lines']} lines, {repo['bytes'] / 2**20:.1f} MiB in {folder} ({repo['generate_s']} s)")
        command = ckpt_doctor_command()
        runs, failed = {}, False
        for jobs in args.jobs:
            tries = [measured_run([*command, "check", ".", "--no-cache", "-j", str(jobs)], folder) for _ in range(max(1, args.repeat))]
            walls = sorted(t["wall_s"] for t in tries)
            run = dict(tries[-1])
            run.update(
                wall_s=statistics.median(walls), wall_s_best=walls[0], wall_s_all=[t["wall_s"] for t in tries],
                files_per_s=round(args.files / statistics.median(walls), 1), files_per_s_best=round(args.files / walls[0], 1),
                lines_per_s=round(repo["lines"] / statistics.median(walls)),
                cpu_s_all=[t["cpu_s"] for t in tries],
                peak_rss_largest_process_mib=max(t["peak_rss_largest_process_mib"] for t in tries),
                peak_rss_tree_mib=max((t["peak_rss_tree_mib"] or 0) for t in tries) or None,
            )
            runs[f"-j {jobs}"] = run
            failed |= any(t["exit"] != 1 or t["findings"] != tries[0]["findings"] for t in tries)
            print(f"-j {jobs}: median {run['wall_s']:.1f} s (best {walls[0]:.1f} s of {len(walls)}), {run['files_per_s']:.0f} files/s "
                  f"(best {run['files_per_s_best']:.0f}), {run['lines_per_s']:.0f} lines/s, peak RSS largest process "
                  f"{run['peak_rss_largest_process_mib']:.0f} MiB, whole tree {run['peak_rss_tree_mib']} MiB "
                  f"({run['processes_at_peak']} processes); {run['findings']} findings, {run['errors']} file errors, exit {run['exit']}")
        quarter = sorted(p.name for p in folder.glob("part*"))[: max(1, len(list(folder.glob("part*"))) // 4)]
        jobs = max(args.jobs)
        small = measured_run([*command, "check", *quarter, "--no-cache", "-j", str(jobs)], folder)
        small["files"] = sum(1 for p in quarter for _ in (folder / p).rglob("*.*"))
        print(f"a quarter ({small['files']} files) at -j {jobs}: peak RSS largest process {small['peak_rss_largest_process_mib']:.0f} MiB, "
              f"whole tree {small['peak_rss_tree_mib']} MiB")
        progress = None
        if not args.no_progress:
            progress = progress_on_terminal([*command, "check", ".", "--no-cache", "-j", str(jobs)], folder)
            print(f"on a terminal: {progress['updates']} progress updates, first '{progress['first']}' after "
                  f"{progress['first_update_after_s']} s, last '{progress['last']}', cleared at the end: {progress['line_cleared_at_end']}")
        result = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "command": command + ["check", ".", "--no-cache", "-j", "N"],
            "note": "2 vCPUs shared with other work: run-to-run wall times vary up to 2x; median and best of --repeat runs",
            "repository": repo,
            "runs": runs,
            "quarter_of_the_tree": {"jobs": jobs, **small},
            "progress_on_terminal": progress,
            "psutil": psutil.__version__ if psutil else None,
        }
        if args.json_file:
            args.json_file.parent.mkdir(parents=True, exist_ok=True)
            args.json_file.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {args.json_file}")
        return 1 if failed else 0
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
