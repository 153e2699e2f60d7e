#!/usr/bin/env python3
"""Score ckpt-doctor on the blind corpus (bench/field/blind/) against the independent expert labels.

The labels (`blind/expert/*.json`) were written by readers who saw the code, the rule pages and
docs/version-facts.md, never the tool's output. This script runs the tool and compares:

- findings: a tool finding matches an expert finding of the same code within `--window` lines (the
  expert may point at the keyword, the tool at the call); an unmatched tool finding counts as false;
  recall is over the expert findings marked "clear";
- settings: batch size, sequence length, dtype, optimizer and checkpointing of the run the defaults
  describe, where the expert could read them (not null), against what `estimate SCRIPT` shows.

    python bench/field/build_corpus.py --tsv bench/field/blind/corpus.tsv --out /tmp/blind-corpus
    python bench/field/blind_eval.py --split dev            # the part the rules may be tuned on
    python bench/field/blind_eval.py --split holdout        # looked at once, at the end
    python bench/field/blind_eval.py --split dev --details  # every finding, matched or not
    python bench/field/build_corpus.py --tsv bench/field/blind/holdout3.tsv --out /tmp/blind-holdout3
    python bench/field/blind_eval.py --split holdout3       # the third holdout (holdout2 likewise), unseen until scored

Exit status: 0 when the figures are printed, 2 when the corpus or the labels are missing.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLIND = HERE / "blind"
sys.path.insert(0, str(HERE))
from evaluate import OPTIMIZER_FAMILY, family, from_estimate, from_findings, run_check, run_estimate  # noqa: E402

SETTINGS = ("batch_size", "seq_len", "dtype", "optimizer", "checkpointing")
SEVERITIES = ("error", "warning", "info")


LATER_HOLDOUTS = ("holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7", "holdout8", "holdout9", "holdout10", "holdout11", "holdout12", "holdout13", "holdout14", "holdout15", "holdout16", "holdout17", "holdout18", "holdout19", "holdout20", "holdout21", "holdout22")  # gathered and labelled after the first split, each in its own list


def scored_in(folder: Path, split: str) -> list[tuple[str, str]]:
    """The scored files of a corpus folder: a split of `split.tsv`, or every scored row of a later holdout's own list
    (`holdout2.tsv`, `holdout3.tsv`)."""
    if split in LATER_HOLDOUTS:
        if not (folder / f"{split}.tsv").is_file():
            sys.exit(f"error: {folder} has no {split}.tsv")
        with (folder / f"{split}.tsv").open(newline="", encoding="utf-8") as f:
            return [(r["repository"], r["path"]) for r in csv.DictReader(f, delimiter="\t") if r["field"] == "yes"]
    with (folder / "split.tsv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [(r["repository"], r["path"]) for r in rows if split == "all" or r["split"] == split]


def scored(split: str) -> list[tuple[str, str]]:
    return scored_in(BLIND, split)


def labels() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted((BLIND / "expert").glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8"))["files"]:
            out[(entry["repository"], entry["path"])] = entry
    return out


def rel(repository: str, path: str) -> str:
    return f"{repository.replace('/', '__')}/{path}"


def match(tool: list[dict], expert: list[dict], window: int) -> tuple[list[tuple[dict, dict | None]], list[dict]]:
    """Pair each tool finding with the nearest unused expert finding of its code; the expert ones left over. A
    finding is at its location and at the related locations it names itself (CKPT201 on arguments parsed from the
    command line: the parser, and the Trainer that enables checkpointing)."""
    left = list(expert)
    pairs = []
    for finding in sorted(tool, key=lambda f: f["location"]["row"]):
        rows = [finding["location"]["row"], *(r["location"]["row"] for r in finding.get("related", []))]

        def distance(e: dict) -> int:
            return min(abs(int(e.get("line") or 0) - row) for row in rows)

        near = [e for e in left if e["code"] == finding["code"] and distance(e) <= window]
        best = min(near, key=distance, default=None)
        if best is not None:
            left.remove(best)
        pairs.append((finding, best))
    return pairs, left


def _prose_optimizer(label: object) -> object:
    """A label written as prose ("DeepSpeed AdamW (ZeRO-2)", "AdamW8bit (bitsandbytes, DDP path)", holdout19): the
    family it names."""
    text = str(label).lower().replace("_", "").replace("-", "")
    if "adam" in text:
        return "adamw-8bit" if "8bit" in text else "adamw"
    return next((f for f in ("adafactor", "sgd") if f in text), label)


_DTYPES = re.compile(r"\b(fp32|bf16|fp16|4bit|8bit|4-bit|8-bit)\b")


def same_setting(name: str, expert: object, tool: object) -> bool:
    if name == "optimizer":
        wanted = family(expert)
        return family(tool) == (wanted if wanted in set(OPTIMIZER_FAMILY.values()) else _prose_optimizer(expert))
    if name == "checkpointing":
        want = "on" if str(expert).startswith("on") else "off" if str(expert).startswith("off") else "depends"
        if want == "depends":
            return True  # either reading is a reading of one of the runs; the finding side checks the option
        got = "off" if tool in ("none", "off", None) else "on"
        return got == want
    if name == "dtype":  # the weights' dtype, or the mixed precision the step computes in (the labels' brief); holdout11's
        # reader wrote autocast over fp32 weights as "bf16-mixed"
        wanted = str(expert).lower().removesuffix("-mixed")
        tools = [str(t).lower() for t in (tool if isinstance(tool, tuple) else (tool,))]
        if wanted in tools:
            return True
        # prose ("fp32 weights, bf16 autocast", "bf16 (on compute capability 8 GPUs)", holdout19): the dtypes it names
        named = [d.replace("-", "") for d in _DTYPES.findall(wanted)]
        return any(t in named for t in tools)
    try:
        return int(tool) == int(expert)
    except (TypeError, ValueError):
        return tool == expert


def arguments(argv: list[str] | None, description: str, corpus: str, later: str, window: int) -> argparse.Namespace:
    """The scorers' command line: the split, the corpus folder (a later holdout's own, `later` with the split's name
    in place of `holdout2`, by default), the match window."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--split", choices=("dev", "holdout", *LATER_HOLDOUTS, "all"), default="dev")
    ap.add_argument("--corpus", type=Path, default=None, help=f"default: {corpus} ({later} for holdout2, and so on)")
    ap.add_argument("--window", type=int, default=window, help="lines between the tool's and the expert's position")
    ap.add_argument("--gpu-memory", default="80GiB")
    ap.add_argument("--details", action="store_true")
    args = ap.parse_args(argv)
    args.corpus = args.corpus or Path(later.replace("holdout2", args.split) if args.split in LATER_HOLDOUTS else corpus)
    return args


def tool_findings(corpus: Path, files: list[tuple[str, str]], expert: dict, gpu_memory: str,
                  allow_errors: bool = False) -> dict[str, list[dict]] | None:
    """The tool's findings on the scored files, by path in the corpus; None (said on stderr) when a file is not in
    the corpus or not labelled."""
    missing = [rel(*f) for f in files if not (corpus / rel(*f)).is_file() or f not in expert]
    if missing:
        print(f"error: not in the corpus or not labelled: {', '.join(missing[:5])}", file=sys.stderr)
        return None
    by_file: dict[str, list[dict]] = {}
    for item in run_check(corpus, [rel(*f) for f in files], gpu_memory, allow_errors=allow_errors):
        by_file.setdefault(str(Path(item["filename"]).resolve().relative_to(corpus.resolve())), []).append(item)
    return by_file


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv, __doc__.split("\n\n")[0], "/tmp/blind-corpus", "/tmp/blind-holdout2", 25)
    files = scored(args.split)
    expert = labels()
    by_file = tool_findings(args.corpus, files, expert, args.gpu_memory)
    if by_file is None:
        return 2

    counts = {s: [0, 0] for s in SEVERITIES}  # severity -> [true, all]
    clear_found = clear_all = 0
    settings_right = settings_all = 0
    for repository, path in files:
        key = rel(repository, path)
        label = expert[(repository, path)]
        pairs, missed = match(by_file.get(key, []), label["findings"], args.window)
        for finding, hit in pairs:
            counts[finding["severity"]][1] += 1
            counts[finding["severity"]][0] += hit is not None
        clear = [e for e in label["findings"] if e.get("clarity") == "clear"]
        clear_all += len(clear)
        clear_found += sum(1 for e in clear if e not in missed)
        estimate = run_estimate(args.corpus, key, args.gpu_memory)
        reading = from_estimate(estimate)
        reading.update({k: v for k, v in from_findings(by_file.get(key, []))[0].items() if k not in reading})
        # the dtype the step computes in: the weights', the mixed precision's, and, for a quantised load, that of the
        # unquantised rest (labels give "4bit" or that dtype: both are shown)
        quantised = (reading.get("weights_dtype"),) if reading.get("dtype") in ("4bit", "8bit") else ()
        reading["dtype"] = (reading.get("dtype"), *quantised, *((reading["mixed_precision"],) if reading.get("mixed_precision") not in (None, "no") else ()))
        right, total, wrong = score_settings(SETTINGS, label["settings"], reading, same_setting)
        settings_right, settings_all = settings_right + right, settings_all + total
        if args.details:
            print_file(key, pairs, missed, wrong)

    print(f"\nblind corpus, split {args.split}: {len(files)} scored files (tool: ckpt-doctor check --gpu-memory {args.gpu_memory})")
    print_figures(counts, clear_found, clear_all, settings_right, settings_all)
    return 0


def score_settings(names, wanted: dict, reading: dict, same) -> tuple[int, int, list[str]]:
    """(right, readable, "name: expert x, tool y" for each wrong one) over the settings the expert could read."""
    right = total = 0
    wrong = []
    for name in names:
        want = wanted.get(name)
        if want is None:
            continue
        total += 1
        if same(name, want, reading.get(name)):
            right += 1
        else:
            wrong.append(f"{name}: expert {want!r}, tool {reading.get(name)!r}")
    return right, total, wrong


def print_file(key: str, pairs, missed, wrong: list[str]) -> None:
    print(f"\n{key}")
    for finding, hit in pairs:
        verdict = "match" if hit else "NO EXPERT MATCH"
        print(f"  tool {finding['code']}:{finding['location']['row']} [{finding['severity']}] {verdict}: {finding['message'][:160]}")
    for e in missed:
        print(f"  expert {e['code']}:{e.get('line')} ({e.get('clarity')}) missed: {e.get('reason', '')[:160]}")
    for line in wrong:
        print(f"  setting {line}")


def print_figures(counts: dict, clear_found: int, clear_all: int, settings_right: int, settings_all: int, notes: int | None = None) -> None:
    for severity in SEVERITIES:
        true, total = counts[severity]
        share = f"{100 * true / total:.0f} %" if total else "n/a"
        print(f"  {severity:8s} findings: {total:3d}, matching an expert finding: {true:3d} ({share}), not: {total - true}")
    if notes is not None:
        print(f"  (and {notes} CKPT404 notes: memory not estimated)")
    print(f"  recall of the clear expert findings: {clear_found}/{clear_all}" + (f" ({100 * clear_found / clear_all:.0f} %)" if clear_all else ""))
    print(f"  settings right where the expert could read them: {settings_right}/{settings_all}"
          + (f" ({100 * settings_right / settings_all:.0f} %)" if settings_all else ""))


if __name__ == "__main__":
    sys.exit(main())
