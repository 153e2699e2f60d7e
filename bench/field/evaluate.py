#!/usr/bin/env python3
"""Field-trial figures for ckpt-doctor (issue 5): precision of the findings judged by hand, and how well
the tool reads the training settings a human reads from the scripts.

Inputs (next to this file):
  verdicts.json    every finding the tool gave on the field=yes scripts, judged by hand (true / false /
                   debatable, with a reason and, for false/debatable, the likely cause in the tool), plus
                   `missed`: what an expert flags that the tool did not.
  extraction.json  per field script and setting (model, batch_size, seq_len, dtype, optimizer,
                   checkpointing): what a human reads from the file (or null + the library default), and
                   the tool's reading with `agree`.

    python bench/field/evaluate.py            # print the figures from the two JSON files
    python bench/field/evaluate.py --rerun    # re-run the tool on the corpus first, refresh the tool-side
                                              # columns of both files (human judgements are kept), then print

--rerun rebuilds the corpus with build_corpus.py if a field script is missing (offline, from the local
snapshots), copies the config files extraction.json names for a script (e.g. a JSON the script names as
its --train_args_file default) next to it, and runs

    ckpt-doctor check --no-cache --exit-zero --output-format json --gpu-memory 80GiB <field scripts>
    ckpt-doctor estimate <script> --output-format json --gpu-memory 80GiB          # per script

from inside the corpus folder. Findings are matched to the hand verdicts by (repository, path, code,
cell, line); a finding with no verdict is reported as `unjudged` (judge it and add it), a verdict whose
finding is gone is kept with `present: false` and left out of the precision figures.

The tool's reading of a setting is what a user sees: the `setup`/`model` objects of `estimate` (exit 0),
the model named in its exit-2 message ("cannot resolve model 'X'"), and the "Settings: ..." /
"model 'X'" text of CKPT401-404 findings. When several of these are visible they all have to match.
`tool_internal` is ckpt_doctor.analysis.settings.read_settings() on the same file with the versions `check`
uses: a diagnostic that separates "read wrong" from "read right but never shown".

Exit status: 0 (figures printed), 2 on a usage error or when the tool cannot be run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERDICTS = HERE / "verdicts.json"
EXTRACTION = HERE / "extraction.json"
CORPUS_TSV = HERE / "corpus.tsv"
DEFAULT_CORPUS = "/tmp/ckpt-corpus"
SETTINGS = ("model", "batch_size", "seq_len", "dtype", "optimizer", "checkpointing")
SEVERITIES = ("error", "warning", "info")
OPTIMIZER_FAMILY = {
    "adamw": "adamw", "adamw-fused": "adamw", "adamw-loop": "adamw", "adam": "adamw",  # the same memory (holdout11 writes "adam")
    "adamw-torch": "adamw", "adamw-torch-fused": "adamw",  # transformers' `optim` names, `_` read as `-` (holdout18)
    "adamw-8bit": "adamw-8bit", "paged-adamw-8bit": "adamw-8bit",
    "paged-adamw-32bit": "adamw",  # the tool sizes it as AdamW (its state lives on the card until memory runs short)
    "adafactor": "adafactor", "sgd": "sgd",
}
ESTIMATE_DEFAULTS = {"batch_size": 1, "dtype": "bf16", "optimizer": "adamw", "checkpointing": "off"}


# ---------------------------------------------------------------------------------------------- corpus
def field_rows() -> list[dict[str, str]]:
    with CORPUS_TSV.open(newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if r["field"].strip().lower() == "yes"]


def corpus_rel(repository: str, path: str) -> str:
    owner, _, name = repository.partition("/")
    return f"{owner}__{name}/{path}"


def ensure_corpus(corpus: Path, rows: list[dict[str, str]], extraction: dict, build: bool) -> None:
    missing = [r for r in rows if not (corpus / corpus_rel(r["repository"], r["path"])).is_file()]
    if missing and build:
        print(f"rebuilding the corpus in {corpus} ({len(missing)} field scripts missing)", file=sys.stderr)
        subprocess.run([sys.executable, str(HERE / "build_corpus.py"), "--field-only", "--out", str(corpus), "-q"], check=False)
        missing = [r for r in rows if not (corpus / corpus_rel(r["repository"], r["path"])).is_file()]
    if missing:
        sys.exit(f"error: {len(missing)} field scripts are not in {corpus} (run build_corpus.py); first: "
                 f"{missing[0]['repository']}:{missing[0]['path']}")
    # config files a script names literally (they are not .py, so build_corpus.py does not bring them)
    commits = {r["repository"]: r["commit"] for r in rows}
    sys.path.insert(0, str(HERE))
    try:
        import build_corpus  # the sibling script, for find_git_dir / git_show
    finally:
        sys.path.pop(0)
    for item in extraction["scripts"]:
        for name in item.get("config_files", []):
            target = corpus / corpus_rel(item["repository"], name)
            if target.is_file():
                continue
            git_dir = build_corpus.find_git_dir(item["repository"], [Path(m) for m in build_corpus.DEFAULT_MIRRORS])
            data = build_corpus.git_show(git_dir, commits[item["repository"]], name) if git_dir else "no snapshot"
            if isinstance(data, bytes):
                build_corpus.write(target, data)
            else:
                print(f"warning: config file {item['repository']}:{name} not copied ({data})", file=sys.stderr)


def tool_command() -> list[str]:
    from shutil import which

    exe = which("ckpt-doctor")
    return [exe] if exe else [sys.executable, "-m", "ckpt_doctor"]


def run_check(corpus: Path, rels: list[str], gpu_memory: str, allow_errors: bool = False) -> list[dict]:
    """The findings as JSON; `allow_errors`: files the tool could not check are printed, the others still count."""
    ignore = ["--ignore", os.environ["BENCH_IGNORE"]] if os.environ.get("BENCH_IGNORE") else []  # rules left out of a run
    cmd = tool_command() + ["check", "--no-cache", "--exit-zero", "--output-format", "json", "--gpu-memory", gpu_memory, *ignore, *rels]
    res = subprocess.run(cmd, cwd=corpus, capture_output=True, text=True, check=False)
    if allow_errors and res.returncode == 2 and res.stdout.strip():
        print(f"  files the tool could not check:\n{res.stderr.strip()}", file=sys.stderr)
    elif res.returncode not in (0, 1):
        sys.exit(f"error: `ckpt-doctor check` exited {res.returncode}: {res.stderr.strip()[-2000:]}")
    try:
        return json.loads(res.stdout or "[]")
    except json.JSONDecodeError:
        sys.exit(f"error: `ckpt-doctor check` did not print JSON: {res.stdout[:500]!r} {res.stderr[-500:]!r}")


def run_estimate(corpus: Path, rel: str, gpu_memory: str) -> dict:
    cmd = tool_command() + ["estimate", rel, "--output-format", "json", "--gpu-memory", gpu_memory]
    res = subprocess.run(cmd, cwd=corpus, capture_output=True, text=True, check=False)
    out = {"exit": res.returncode, "stderr": res.stderr.strip()[-4000:]}  # the settings the message names, whole
    if res.returncode == 0:
        try:
            out["json"] = json.loads(res.stdout)
        except json.JSONDecodeError:
            out["stderr"] = f"not JSON: {res.stdout[:200]!r}"
    return out


# ------------------------------------------------------------------------------- reading the tool's view
def family(opt: object) -> object:
    """The optimizer's family; the labels may spell it as the Trainer's `optim` does (`adamw_8bit`)."""
    return OPTIMIZER_FAMILY.get(str(opt).replace("_", "-"), opt) if opt is not None else None


def from_estimate(est: dict) -> dict[str, object]:
    """{setting: value} as `estimate` shows it; missing keys: not shown."""
    shown: dict[str, object] = {}
    if "json" in est:
        data = est["json"]
        setup = data.get("setup", {})
        shown["model"] = data.get("model", {}).get("name")
        shown["batch_size"] = setup.get("batch_size")
        shown["seq_len"] = setup.get("seq_len")
        dtype = setup.get("dtype")
        shown["dtype"] = "4bit" if setup.get("load_in_4bit") else "8bit" if setup.get("load_in_8bit") else dtype
        shown["weights_dtype"] = dtype  # of what a quantised load leaves unquantised
        shown["mixed_precision"] = setup.get("mixed_precision")
        shown["optimizer"] = family(setup.get("optimizer"))
        shown["checkpointing"] = "off" if setup.get("checkpointing") in (None, "none") else "on"
        return shown
    stderr = est.get("stderr", "")
    match = re.search(r"\(settings read(?: from [^:]+)?: (.*)\)$", stderr)  # "read from X:" or, model unknown, "read:"
    if match:
        shown.update(from_settings_text(match.group(1))[0])  # assumed ones: see read_settings' notes
    match = re.search(r"cannot resolve model '([^']+)'", stderr)
    if match:
        shown["model"] = match.group(1)
    return shown


_SETTING_RE = {
    "model": re.compile(r"\bmodel (\S+) \("),
    "batch_size": re.compile(r"\bbatch (\d+) \("),
    "seq_len": re.compile(r"\bsequence (\d+) \("),
    "dtype": re.compile(r"\bdtype (\w+) \("),
    "mixed_precision": re.compile(r"\bmixed precision (\w+) \("),
    "optimizer": re.compile(r"\boptimizer ([\w-]+) \("),
}


def from_settings_text(text: str) -> tuple[dict[str, object], set[str]]:
    """{setting: value} from the settings a message shows ("model X (line 3), batch 8 (line 9), ...; assumed
    where the script does not say: ..."), and the settings it calls assumed."""
    shown: dict[str, object] = {}
    assumed: set[str] = set()
    stated, _, assumed_text = text.partition("; assumed where the script does not say:")
    for name, regex in _SETTING_RE.items():
        for part, is_assumed in ((stated, False), (assumed_text, True)):
            match = regex.search(part)
            if match:
                value: object = match.group(1)
                if name in ("batch_size", "seq_len"):
                    value = int(str(value))
                if name == "optimizer":
                    value = family(value)
                shown[name] = value
                if is_assumed:
                    assumed.add(name)
    if "dtype" in shown:
        shown["weights_dtype"] = shown["dtype"]  # of what a quantised load leaves unquantised
    if "4-bit" in stated:
        shown["dtype"] = "4bit"
        assumed.discard("dtype")
    elif "8-bit" in stated:
        shown["dtype"] = "8bit"
        assumed.discard("dtype")
    for part, is_assumed in ((stated, False), (assumed_text, True)):
        match = re.search(r"\bcheckpointing (\w+) \(", part)
        if match:
            shown["checkpointing"] = "off" if match.group(1) in ("none", "off") else "on"
            if is_assumed:
                assumed.add("checkpointing")
    return shown, assumed


def from_findings(findings: list[dict]) -> tuple[dict[str, object], set[str]]:
    """{setting: value} from the CKPT40x messages of one file, and the settings they call assumed."""
    shown: dict[str, object] = {}
    assumed: set[str] = set()
    for f in findings:
        msg = f.get("message", "")
        if f["code"] == "CKPT404":
            match = re.search(r"model '([^']+)' \((?:cell \d+, )?line \d+\)", msg)
            if match:
                shown["model"] = match.group(1)
            if "Settings read:" in msg:
                read, read_assumed = from_settings_text(msg.split("Settings read:", 1)[1])
                shown.update({k: v for k, v in read.items() if k != "model"})
                assumed |= read_assumed
            continue
        if f["code"] not in ("CKPT401", "CKPT402", "CKPT403") or "Settings:" not in msg:
            continue
        read, read_assumed = from_settings_text(msg.split("Settings:", 1)[1])
        shown.update(read)
        assumed |= read_assumed
        if f["code"] == "CKPT403":
            shown["checkpointing"] = "on"
        elif f["code"] == "CKPT401":
            shown["checkpointing"] = "off"
    return shown, assumed


def internal_reading(corpus: Path, rel: str) -> dict[str, dict] | None:
    """read_settings() with the versions `check` uses; None when the API is not there (any more)."""
    import os

    cwd = os.getcwd()
    try:
        os.chdir(corpus)
        from ckpt_doctor.analysis.api_era import version_ceilings
        from ckpt_doctor.config import load_settings
        from ckpt_doctor.analysis.facts import extract
        from ckpt_doctor.analysis.settings import read_settings
        from ckpt_doctor.analysis.source import read_source
        from ckpt_doctor.analysis.training import Training
        from ckpt_doctor.analysis.versions import TargetVersions

        config = load_settings()
        source = read_source(rel, config.max_file_size)
        facts = extract(source.text, rel)
        versions = TargetVersions(config.target_versions, script=rel, root=config.root,
                                  ceilings=version_ceilings(facts), inline_pins=source.pip_pins())
        s = read_settings(Training(facts, versions))
    except Exception as exc:  # noqa: BLE001 - a diagnostic column must never stop the evaluation
        return {"error": {"value": f"{type(exc).__name__}: {exc}"[:200], "stated": False}}
    finally:
        os.chdir(cwd)

    def entry(setting, value=None) -> dict:
        if setting is None:
            return {"value": "unknown", "stated": False}
        value = setting.value if value is None else value
        return {"value": value, "stated": bool(setting.stated), "from": f"{value} <- {setting.describe()}"}

    dtype = "4bit" if s.load_in_4bit else "8bit" if s.load_in_8bit else s.dtype.value
    ckpt = s.checkpointing
    return {
        "model": entry(s.model),
        "batch_size": entry(s.batch_size),
        "seq_len": entry(s.seq_len),
        "dtype": {**entry(s.dtype, dtype), "stated": bool(s.dtype.stated or s.load_in_4bit or s.load_in_8bit)},
        "optimizer": entry(s.optimizer, family(s.optimizer.value)),
        "checkpointing": entry(ckpt, "off" if ckpt.value == "none" else "on"),
    }


# ------------------------------------------------------------------------------------------ agreement
def _same(a: object, b: object, also: list) -> bool:
    def norm(x: object) -> object:
        return x.rstrip("/") if isinstance(x, str) else x

    return norm(a) == norm(b) or any(norm(a) == norm(x) for x in also)


def judge(entry: dict, readings: list[tuple[str, object, bool]]) -> tuple[bool, str]:
    """readings: (source, value, assumed). Returns (agree, why)."""
    human = entry.get("human")
    also = entry.get("also_accept", [])
    shown = [(src, v, a) for src, v, a in readings if v not in (None, "unknown")]
    if human is not None:
        if not shown:
            return False, "not shown by the tool"
        wrong = [(src, v) for src, v, _ in shown if not _same(v, human, also)]
        if wrong:
            return False, "; ".join(f"{src} says {v!r}" for src, v in wrong)
        return True, "same value"
    default = entry.get("default")
    if not shown:
        return True, "tool shows nothing (no invented value)"
    bad = []
    for src, v, assumed in shown:
        if default is not None:
            if not _same(v, default, also):
                bad.append(f"{src} says {v!r}, library default is {default!r}")
        elif not assumed:
            bad.append(f"{src} says {v!r} as if read from the script")
    if bad:
        return False, "; ".join(bad)
    return True, "stated default" if default is not None else "labelled as assumed"


# --------------------------------------------------------------------------------------------- rerun
def key_of(item: dict) -> tuple:
    return (item["repository"], item["path"], item["code"], item.get("cell"), item["line"])


def refresh(corpus: Path, gpu_memory: str, build: bool) -> None:
    verdicts = json.loads(VERDICTS.read_text(encoding="utf-8"))
    extraction = json.loads(EXTRACTION.read_text(encoding="utf-8"))
    rows = field_rows()
    ensure_corpus(corpus, rows, extraction, build)
    rels = [corpus_rel(r["repository"], r["path"]) for r in rows]
    by_rel = {corpus_rel(r["repository"], r["path"]): r for r in rows}
    findings = run_check(corpus, rels, gpu_memory)

    per_file: dict[tuple[str, str], list[dict]] = defaultdict(list)
    current: dict[tuple, dict] = {}
    root = str(corpus.resolve()) + "/"
    for f in findings:
        rel = f["filename"].replace(root, "") if f["filename"].startswith(root) else f["filename"]
        row = by_rel.get(rel)
        if row is None:
            continue
        item = {"repository": row["repository"], "path": row["path"], "code": f["code"], "line": f["location"]["row"],
                "cell": f.get("cell"), "severity": f["severity"], "message": f["message"]}
        current[key_of(item)] = item
        per_file[(row["repository"], row["path"])].append(f)

    old = {key_of(v): v for v in verdicts["verdicts"]}
    merged = []
    for key, item in current.items():
        judged = old.get(key)
        if judged is not None:
            merged.append({**judged, "severity": item["severity"], "message": item["message"], "present": True})
        else:
            merged.append({**item, "verdict": "unjudged", "reason": "", "present": True})
    for key, judged in old.items():
        if key not in current:
            merged.append({**judged, "present": False})
    merged.sort(key=lambda v: (v["repository"], v["path"], v.get("cell") or 0, v["line"], v["code"]))
    verdicts["verdicts"] = merged
    for miss in verdicts["missed"]:
        miss["found_now"] = key_of(miss) in current
    VERDICTS.write_text(json.dumps(verdicts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    for item in extraction["scripts"]:
        rel = corpus_rel(item["repository"], item["path"])
        est = run_estimate(corpus, rel, gpu_memory)
        est_shown = from_estimate(est)
        msg_shown, msg_assumed = from_findings(per_file.get((item["repository"], item["path"]), []))
        internal = internal_reading(corpus, rel)
        item["estimate"] = {"exit": est["exit"], "message": "" if est["exit"] == 0 else est["stderr"].splitlines()[-1:] and est["stderr"].splitlines()[-1]}
        for name in SETTINGS:
            entry = item["settings"][name]
            inner = (internal or {}).get(name)
            readings = []
            if name in est_shown:
                # estimate's JSON does not say what was assumed; the reader it uses does
                assumed = (not inner["stated"]) if inner and "stated" in inner else est_shown[name] == ESTIMATE_DEFAULTS.get(name)
                readings.append(("estimate", est_shown[name], assumed))
            if name in msg_shown:
                readings.append(("check", msg_shown[name], name in msg_assumed))
            tool = {src: v for src, v, _ in readings} or "unknown"
            entry["tool"] = tool
            entry["agree"], entry["why"] = judge(entry, readings)
            if inner is not None:
                entry["tool_internal"] = inner.get("from", inner["value"])
                entry["agree_internal"], _ = judge(entry, [("internal", inner["value"], not inner.get("stated", False))])
            else:
                entry.pop("tool_internal", None)
                entry.pop("agree_internal", None)
    EXTRACTION.write_text(json.dumps(extraction, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------- figures
def cell_prefix(item: dict) -> str:
    return f"cell {item['cell']}:" if item.get("cell") else ""


def pct(n: int, d: int) -> str:
    return f"{100 * n / d:5.1f} % ({n}/{d})" if d else "  n/a"


def report(details: bool = False) -> int:
    verdicts = json.loads(VERDICTS.read_text(encoding="utf-8"))
    extraction = json.loads(EXTRACTION.read_text(encoding="utf-8"))
    present = [v for v in verdicts["verdicts"] if v.get("present", True)]
    gone = [v for v in verdicts["verdicts"] if not v.get("present", True)]
    counts = Counter((v["severity"], v["verdict"]) for v in present)
    scripts = {(s["repository"], s["path"]) for s in extraction["scripts"]}

    print(f"Field trial: {len(scripts)} scripts, {len(present)} findings judged by hand"
          + (f" ({len(gone)} earlier findings no longer reported)" if gone else ""))
    print()
    print("Findings by severity and verdict:")
    for sev in SEVERITIES:
        row = "  ".join(f"{verdict} {counts[(sev, verdict)]}" for verdict in ("true", "false", "debatable", "unjudged") if counts[(sev, verdict)])
        print(f"  {sev:8} {sum(c for (s, _), c in counts.items() if s == sev):3}   {row}")
    false_errors = [v for v in present if v["severity"] == "error" and v["verdict"] == "false"]
    print()
    print(f"Error-level findings judged false: {len(false_errors)}   (goal: 0)")
    for v in false_errors:
        print(f"    {v['repository']}:{v['path']}:{cell_prefix(v)}{v['line']} {v['code']}  [{v.get('cause', '')}]")
    for sev in ("warning", "info"):
        t, f, d = counts[(sev, "true")], counts[(sev, "false")], counts[(sev, "debatable")]
        goal = "   (goal: >= 90 %)" if sev == "warning" else ""
        print(f"{sev.capitalize()} precision, debatable left out:     {pct(t, t + f)}{goal}")
        print(f"{sev.capitalize()} precision, debatable as false:     {pct(t, t + f + d)}")
    if counts[("error", "true")] + counts[("error", "false")] + counts[("error", "debatable")]:
        t, f, d = counts[("error", "true")], counts[("error", "false")], counts[("error", "debatable")]
        print(f"Error precision, debatable left out:       {pct(t, t + f)}")
    unjudged = [v for v in present if v["verdict"] == "unjudged"]
    if unjudged:
        print(f"\nUNJUDGED findings (new since the hand review; judge them in verdicts.json): {len(unjudged)}")
        for v in unjudged:
            print(f"    {v['repository']}:{v['path']}:{v['line']} {v['code']} {v['severity']}: {v['message'][:140]}")
            moved = [g for g in gone if (g["repository"], g["path"], g["code"]) == (v["repository"], v["path"], v["code"])]
            for g in moved:
                print(f"        (an earlier {g['code']} here at line {g['line']} was judged {g['verdict']}: {g['reason'][:100]})")

    missed = verdicts.get("missed", [])
    clear = [m for m in missed if m.get("certainty", "clear") == "clear"]
    found = [m for m in missed if m.get("found_now")]
    print(f"\nMisses an expert flags: {len(clear)} clear, {len(missed) - len(clear)} debatable"
          + (f"; now found by the tool: {len(found)}" if found else ""))
    by_sev = Counter(m["severity"] for m in clear if not m.get("found_now"))
    print("    clear misses still missed, by severity: " + ", ".join(f"{s} {by_sev[s]}" for s in SEVERITIES if by_sev[s]))

    print("\nFalse and debatable findings, and clear misses, by likely cause:")
    causes: dict[str, list[str]] = defaultdict(list)
    for v in present:
        if v["verdict"] in ("false", "debatable"):
            where = f"{v['path']}:{cell_prefix(v)}{v['line']}"
            causes[v.get("cause", "?")].append(f"{v['verdict']:9} {v['code']} {v['severity']:7} {v['repository']}/{where}")
    for m in clear:
        where = f"{m['path']}:{cell_prefix(m)}{m['line']}"
        label = "found now" if m.get("found_now") else "missed"
        causes[m.get("cause", "?")].append(f"{label:9} {m['code']} {m['severity']:7} {m['repository']}/{where}")
    for cause in sorted(causes):
        print(f"  {cause}:")
        for line in causes[cause]:
            print(f"      {line}")

    # settings extraction
    print("\nSettings extraction (human-readable settings only; every visible tool reading must match):")
    per_setting = {name: Counter() for name in SETTINGS}
    internal = {name: Counter() for name in SETTINGS}
    nulls = Counter()
    script_ok = Counter()
    disagreements: list[str] = []
    internal_wrong: list[str] = []
    have_tool = any("agree" in s["settings"][n] for s in extraction["scripts"] for n in SETTINGS)
    if not have_tool:
        print("    no tool readings in extraction.json yet: run with --rerun")
        return 0
    for s in extraction["scripts"]:
        readable = 0
        right = 0
        for name in SETTINGS:
            e = s["settings"][name]
            if "agree" not in e:
                continue
            if e["human"] is None:
                nulls["total"] += 1
                nulls["agree"] += bool(e["agree"])
                if "agree_internal" in e:
                    nulls["internal_total"] += 1
                    nulls["internal_agree"] += bool(e["agree_internal"])
                if not e["agree"]:
                    disagreements.append(f"    {name:13} {s['repository']}:{s['path']}: not in the file; {e.get('why', '')}")
                if e.get("agree_internal") is False:
                    internal_wrong.append(f"    {name:13} {s['repository']}:{s['path']}: not in the file, library default "
                                          f"{e.get('default')!r}; read_settings: {e.get('tool_internal')}")
                continue
            readable += 1
            per_setting[name]["total"] += 1
            per_setting[name]["agree"] += bool(e["agree"])
            right += bool(e["agree"])
            if "agree_internal" in e:
                internal[name]["total"] += 1
                internal[name]["agree"] += bool(e["agree_internal"])
            if not e["agree"]:
                disagreements.append(f"    {name:13} {s['repository']}:{s['path']}: human {e['human']!r}; {e.get('why', '')}")
            if e.get("agree_internal") is False:
                internal_wrong.append(f"    {name:13} {s['repository']}:{s['path']}: human {e['human']!r}; read_settings: {e.get('tool_internal')}")
        if readable:
            script_ok["total"] += 1
            script_ok["all"] += right == readable
    tot = Counter()
    tot_int = Counter()
    print(f"    {'setting':14} {'as shown to the user':24} {'read_settings() (diagnostic)':28}")
    for name in SETTINGS:
        tot.update(per_setting[name])
        tot_int.update(internal[name])
        print(f"    {name:14} {pct(per_setting[name]['agree'], per_setting[name]['total']):24} "
              f"{pct(internal[name]['agree'], internal[name]['total']):28}")
    print(f"    {'overall':14} {pct(tot['agree'], tot['total']):24} {pct(tot_int['agree'], tot_int['total']):28}   (goal: >= 90 %)")
    print(f"    scripts with every readable setting right: {pct(script_ok['all'], script_ok['total'])}")
    print(f"    settings the file does not state, tool used a stated default or nothing: {pct(nulls['agree'], nulls['total'])}"
          f"   read_settings(): {pct(nulls['internal_agree'], nulls['internal_total'])}")
    not_shown = sum(1 for line in disagreements if line.endswith("not shown by the tool"))
    print(f"    of the {tot['total'] - tot['agree']} wrong readable settings, {not_shown} are simply not shown "
          "(estimate exits 2 and no CKPT401-403 finding carries them)")
    if details:
        print("\nDisagreements, as shown to the user:")
        print("\n".join(disagreements) or "    none")
        print("\nDisagreements of read_settings() (diagnostic):")
        print("\n".join(internal_wrong) or "    none")
    else:
        print("    (--details lists every disagreement)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rerun", action="store_true", help="re-run ckpt-doctor on the corpus and refresh the tool-side columns")
    ap.add_argument("--corpus", type=Path, default=Path(DEFAULT_CORPUS), help="corpus folder (default: %(default)s)")
    ap.add_argument("--gpu-memory", default="80GiB", help="budget passed to check and estimate (default: %(default)s)")
    ap.add_argument("--no-build", action="store_true", help="with --rerun: do not call build_corpus.py for missing scripts")
    ap.add_argument("--details", action="store_true", help="also list every settings disagreement")
    args = ap.parse_args(argv)
    if args.rerun:
        refresh(args.corpus, args.gpu_memory, build=not args.no_build)
    return report(details=args.details)


if __name__ == "__main__":
    sys.exit(main())
