#!/usr/bin/env python3
"""Score ckpt-doctor on the config and launcher corpus (bench/field/configs/) against the blind expert labels.

The labels (`configs/expert/*.json`) were written by a reader who saw the files, the rule pages and the
frameworks' sources, never the tool, its data or its output. Findings are matched as in `blind_eval.py` (same
code within `--window` lines); settings are compared where the expert could read them (not null), with the run
the tool reads from the file: a framework config, a framework launch line, or the Python script a launcher runs.

    python bench/field/build_corpus.py --tsv bench/field/configs/corpus.tsv --out /tmp/config-corpus
    python bench/field/config_eval.py --split dev --details
    python bench/field/config_eval.py --split holdout        # looked at once, at the end
    python bench/field/build_corpus.py --tsv bench/field/configs/holdout2.tsv --out /tmp/config-holdout2
    python bench/field/config_eval.py --split holdout2       # the second holdout, looked at once, at the end

Exit status: 0 when the figures are printed, 2 when the corpus or the labels are missing.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
sys.path.insert(0, str(HERE))
from blind_eval import SEVERITIES, arguments, print_figures, print_file, score_settings, scored_in, tool_findings  # noqa: E402
from evaluate import OPTIMIZER_FAMILY, family  # noqa: E402

SETTINGS = ("batch_size", "grad_accum", "seq_len", "dtype", "optimizer", "checkpointing", "lora", "zero_stage", "gpus")


def scored(split: str) -> list[tuple[str, str]]:
    return scored_in(CONFIGS, split)


def labels() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted((CONFIGS / "expert").glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8"))["files"]:
            out[(entry["repository"], entry["path"])] = entry
    return out


def tool_settings(path: Path, gpu_memory: str) -> dict[str, object]:
    """The run the tool reads from one file, in the labels' terms; {} when it reads none."""
    from ckpt_doctor.analysis import analyze_config, analyze_launched_script, analyze_launcher
    from ckpt_doctor.analysis.source import read_source
    from ckpt_doctor.check.lint import is_config
    from ckpt_doctor.config import Settings

    config = Settings(root=path.parent, gpu_memory=gpu_memory)
    try:
        source = read_source(path)
        if path.suffix in (".yaml", ".yml", ".json"):
            analysis = analyze_config(source, config)
        elif is_config(str(path)):
            analysis = next(iter(analyze_launcher(source, config)), None) or analyze_launched_script(source, config)
        else:
            return {}
    except Exception as exc:  # a file the tool cannot read is a miss on every setting
        print(f"  ({path}: {type(exc).__name__}: {exc})", file=sys.stderr)
        return {}
    if analysis is None:
        return {}
    s = analysis.settings
    run = getattr(analysis, "run", None)
    out: dict[str, object] = {
        "batch_size": s.batch_size.value, "grad_accum": s.gradient_accumulation.value, "seq_len": s.seq_len.value if s.seq_len else None,
        # the labels' dtype is the training precision: bf16 autocast over fp32 weights is "bf16"
        "dtype": "4bit" if s.load_in_4bit else "8bit" if s.load_in_8bit else
                 s.mixed_precision.value if s.dtype.value == "fp32" and s.mixed_precision.value in ("bf16", "fp16") else s.dtype.value,
        "optimizer": family(s.optimizer.value) if s.optimizer.value in OPTIMIZER_FAMILY else "other",
        "checkpointing": "off" if s.checkpointing.value in (None, "none") else "on",
        "lora": s.lora_r is not None, "zero_stage": int(s.zero.value) if s.zero.note != "FSDP full shard" else 0,
        "gpus": s.gpus.value,  # one GPU when nothing says more, as the labels do
    }
    if run is not None:
        out["checkpointing"] = "on" if run.checkpointing.value else "off"
        out["lora"] = bool(run.lora.value)
        out["zero_stage"] = run.zero_stage.value
    return out


def match(tool: list[dict], expert: list[dict], window: int) -> tuple[list[tuple[dict, dict | None]], list[dict]]:
    """Pair each tool finding with the nearest expert finding of its code: within `window` lines, or anywhere in the
    file for the memory rules (CKPT4xx judge the whole run; experts point at the batch, the tool at the model). Several
    tool findings may match one expert finding (an expert writes "`flash_attention` and `xformers_attention` are
    deprecated" once; the tool reports each key), and a key finding (CKPT501) matches the expert finding that names its
    key, wherever that is; the expert findings no tool finding matched are returned."""
    pairs = []
    for finding in sorted(tool, key=lambda f: f["location"]["row"]):
        row = finding["location"]["row"]
        reach = 10**6 if finding["code"].startswith("CKPT4") else window
        near = [e for e in expert if e["code"] == finding["code"]
                and (abs(int(e.get("line") or 0) - row) <= reach or _names_key(e, finding))]
        pairs.append((finding, min(near, key=lambda e: abs(int(e.get("line") or 0) - row), default=None)))
    found = [id(e) for _, e in pairs if e is not None]
    return pairs, [e for e in expert if id(e) not in found]


def _names_key(expert: dict, finding: dict) -> bool:
    key = re.search(r"`([\w.-]+)`", finding["message"]) if finding["code"] == "CKPT501" else None
    return bool(key) and re.search(rf"(?<![\w.]){re.escape(key.group(1))}(?![\w-])", expert.get("reason", "")) is not None


def same(name: str, expert: object, tool: object) -> bool:
    if name == "checkpointing":
        want = str(expert).split()[0].lower()
        return True if want == "depends" else tool == want
    if name == "optimizer":
        return family(tool) == family(expert)
    if name == "dtype":
        return str(tool).lower() == str(expert).lower()
    if isinstance(expert, bool) or isinstance(tool, bool):
        return bool(tool) == bool(expert)
    try:
        return int(tool) == int(expert)
    except (TypeError, ValueError):
        return tool == expert


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv, __doc__.split("\n\n")[0], "/tmp/config-corpus", "/tmp/config-holdout2", 3)
    files = scored(args.split)
    expert = labels()
    by_file = tool_findings(args.corpus, files, expert, args.gpu_memory, allow_errors=True)  # (run_check prints the unreadable)
    if by_file is None:
        return 2
    rel = {f: f"{f[0].replace('/', '__')}/{f[1]}" for f in files}

    counts = {s: [0, 0] for s in SEVERITIES}
    clear_found = clear_all = settings_right = settings_all = 0
    readable = notes = 0
    for f in files:
        key, label = rel[f], expert[f]
        pairs, missed = match(by_file.get(key, []), label["findings"], args.window)
        for finding, hit in pairs:
            if finding["code"] == "CKPT404":  # a note about the tool, which the readers were told not to flag
                notes += 1
                continue
            counts[finding["severity"]][1] += 1
            counts[finding["severity"]][0] += hit is not None
        clear = [e for e in label["findings"] if e.get("clarity") == "clear"]
        clear_all += len(clear)
        clear_found += sum(1 for e in clear if e not in missed)
        reading = tool_settings(args.corpus / key, args.gpu_memory)
        readable += bool(reading)
        right, total, wrong = score_settings(SETTINGS, label["settings"], reading, same)
        settings_right, settings_all = settings_right + right, settings_all + total
        if args.details:
            print_file(f"{key} [{label.get('kind')}]", pairs, missed, wrong)
    print(f"\nconfig corpus, split {args.split}: {len(files)} scored files, {readable} read as a run (tool: ckpt-doctor check "
          f"--gpu-memory {args.gpu_memory})")
    print_figures(counts, clear_found, clear_all, settings_right, settings_all, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
