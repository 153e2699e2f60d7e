#!/usr/bin/env python3
"""Score the rules of issue 12 on their evidence corpus (bench/field/rules2026/) against the blind expert labels.

The files were gathered by one helper for the patterns the rules are about (occurrences and look-alikes), and
labelled by another (`rules2026/expert.json`) who saw the files, the rule pages and the libraries' sources, never
the tool or its output. Findings are matched as in `blind_eval.py` (same code within `--window` lines). For each
code: the tool's findings that match an expert finding (true), those that match none (false; a match with an
expert's `not_problems` entry is shown as such), and the expert's findings the tool missed, clear and debatable.

    python bench/field/build_corpus.py --tsv bench/field/rules2026/corpus.tsv --out /tmp/rules2026-corpus
    python bench/field/rules_eval.py                  # the figures per code
    python bench/field/rules_eval.py --details        # every finding, matched or not
    python bench/field/build_corpus.py --tsv bench/field/rules2026/round2.tsv --out /tmp/rules2026-round2
    python bench/field/rules_eval.py --round 2        # the second round (expert_round2.json); --round 3 likewise

Exit status: 0 when the figures are printed, 2 when the corpus or the labels are missing.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES2026 = HERE / "rules2026"
sys.path.insert(0, str(HERE))
from blind_eval import match, rel, tool_findings  # noqa: E402


ROUNDS = {1: ("corpus.tsv", "expert.json", "/tmp/rules2026-corpus"), 2: ("round2.tsv", "expert_round2.json", "/tmp/rules2026-round2"),
          3: ("round3.tsv", "expert_round3.json", "/tmp/rules2026-round3"), 4: ("round4.tsv", "expert_round4.json", "/tmp/rules2026-round4"),
          5: ("round5.tsv", "expert_round5.json", "/tmp/rules2026-round5"), 6: ("round6.tsv", "expert_round6.json", "/tmp/rules2026-round6"),
          7: ("round7.tsv", "expert_round7.json", "/tmp/rules2026-round7"), 9: ("round9.tsv", "expert_round9.json", "/tmp/rules2026-round9"),
          10: ("round10.tsv", "expert_round10.json", "/tmp/rules2026-round10"),
          11: ("round11.tsv", "expert_round11.json", "/tmp/rules2026-round11")}


def scored(round_: int) -> list[tuple[str, str]]:
    with (RULES2026 / ROUNDS[round_][0]).open(newline="", encoding="utf-8") as f:
        return [(r["repository"], r["path"]) for r in csv.DictReader(f, delimiter="\t") if r["field"] == "yes"]


def labels(round_: int) -> dict[tuple[str, str], dict]:
    entries = json.loads((RULES2026 / ROUNDS[round_][1]).read_text(encoding="utf-8"))["files"]
    return {(e["repository"], e["path"]): e for e in entries}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--round", dest="round_", type=int, choices=sorted(ROUNDS), default=1,
                    help="1: corpus.tsv, 2: round2.tsv, 3: round3.tsv, 4: round4.tsv (each gathered for the rules the rounds before found no occurrence of)")
    ap.add_argument("--corpus", type=Path, default=None, help="default: /tmp/rules2026-corpus (round 2: /tmp/rules2026-round2)")
    ap.add_argument("--window", type=int, default=25)
    ap.add_argument("--gpu-memory", default="80GiB")
    ap.add_argument("--details", action="store_true")
    args = ap.parse_args(argv)
    files, expert = scored(args.round_), labels(args.round_)
    args.corpus = args.corpus or Path(ROUNDS[args.round_][2])
    by_file = tool_findings(args.corpus, files, expert, args.gpu_memory, allow_errors=True)
    if by_file is None:
        return 2
    # code -> [true, false, false on a look-alike the expert cleared, missed clear, missed debatable]
    figures: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    errors_false = 0
    for repository, path in files:
        key, label = rel(repository, path), expert[(repository, path)]
        expert_findings = [e for e in label["findings"] if str(e.get("code", "")).startswith("CKPT")]
        pairs, missed = match(by_file.get(key, []), expert_findings, args.window)
        # look-alikes the expert cleared, by code and line (a reader's prose about a file is no such entry)
        not_problems = [p for p in label.get("not_problems", []) if isinstance(p, dict)]
        cleared, _ = match([f for f, hit in pairs if hit is None], not_problems, args.window)
        cleared_ids = {id(f) for f, hit in cleared if hit is not None}
        for finding, hit in pairs:
            row = figures[finding["code"]]
            row[0 if hit else 1] += 1
            row[2] += id(finding) in cleared_ids
            errors_false += hit is None and finding["severity"] == "error"
        for e in missed:
            figures[e["code"]][3 if e.get("clarity") == "clear" else 4] += 1
        if args.details and (pairs or missed):
            print(f"\n{key}")
            for finding, hit in pairs:
                verdict = "match" if hit else ("A LOOK-ALIKE THE EXPERT CLEARED" if id(finding) in cleared_ids else "NO EXPERT MATCH")
                print(f"  tool {finding['code']}:{finding['location']['row']} [{finding['severity']}] {verdict}: {finding['message'][:150]}")
            for e in missed:
                print(f"  expert {e['code']}:{e.get('line')} ({e.get('clarity')}) missed: {e.get('reason', '')[:150]}")
    print(f"\nissue 12 evidence corpus, round {args.round_}: {len(files)} scored files (tool: ckpt-doctor check --gpu-memory {args.gpu_memory})")
    print(f"  {'code':8} {'true':>5} {'false':>6} {'(cleared look-alike)':>21} {'missed clear':>13} {'missed debatable':>17}")
    for code in sorted(figures):
        true, false, cleared, clear, debatable = figures[code]
        print(f"  {code:8} {true:5d} {false:6d} {cleared:21d} {clear:13d} {debatable:17d}")
    print(f"  false error-level findings: {errors_false}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
