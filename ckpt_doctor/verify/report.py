"""The report of ``verify``: static findings, the estimate for what ran, the measurement, side by side.
JSON (schema in docs/verify.md) and one screen of text.  No torch."""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1
GiB = 1 << 30
MiB = 1 << 20

_EST_DTYPES = ("fp32", "bf16", "fp16")
_ATTN = {"sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash", "flash_attention_3": "flash",
         "flex_attention": "sdpa"}


# --------------------------------------------------------------------------------------------------------
# check


def static_findings(paths: list[str]) -> tuple[list[dict], str | None]:
    """``check --output-format json`` objects for the script, or ``([], reason)``."""
    if not paths:
        return [], "no script file to check"
    from dataclasses import replace

    from ckpt_doctor.analysis.versions import TRACKED, installed_version
    from ckpt_doctor.check.report import json_objects
    from ckpt_doctor.config import ConfigError, load_settings
    from ckpt_doctor.check.runner import RunOptions, run_check

    try:
        settings = load_settings()
    except ConfigError as exc:
        return [], str(exc)
    # the script ran in this interpreter: its installed libraries are the versions to judge it by, unless the
    # configuration names others
    ran = {package: str(version) for package in TRACKED if (version := installed_version(package)) is not None}
    settings = replace(settings, target_versions={**ran, **settings.target_versions})
    run = run_check(paths, settings, RunOptions(use_cache=False, keep_sources=True, jobs=1))
    if run.errors:
        return json_objects(run), "; ".join(run.errors)
    return json_objects(run), None


# --------------------------------------------------------------------------------------------------------
# the estimate for what ran


def setup_from_runtime(res: dict) -> tuple[dict | None, list[str]]:
    """``estimate``'s settings (flag names) for what the child saw, and notes on what was assumed."""
    notes: list[str] = []
    model = res.get("model") or {}
    cfg = model.get("config")
    if not cfg:
        return None, ["no Hugging Face model config was seen at runtime: nothing to estimate"]
    batch = res.get("batch") or {}
    if not batch.get("batch_size") or not batch.get("seq_len"):
        return None, ["the batch shape was not seen (no embedding input): nothing to estimate"]
    dtype = model.get("dtype")
    if dtype not in _EST_DTYPES:
        return None, [f"weights in {dtype}: the estimate models fp32, bf16 and fp16"]
    mixed = "no"
    ac = model.get("autocast") or {}
    if ac.get("dtype") in ("bfloat16", "float16") and dtype == "fp32":
        mixed = "bf16" if ac["dtype"] == "bfloat16" else "fp16"
    attn = _ATTN.get(str(model.get("attn") or "sdpa"))
    if attn is None:
        notes.append(f"attention {model.get('attn')!r} estimated as sdpa")
        attn = "sdpa"
    opt = (res.get("optimizer") or {}).get("estimate_name")
    if opt is None:
        notes.append(f"optimizer {(res.get('optimizer') or {}).get('class')} estimated as AdamW")
        opt = "adamw"
    hfc = model.get("hf_checkpointing") or {}
    plan = hfc.get("plan")
    calls = res.get("checkpoint_calls") or {}
    ran = (calls.get("reentrant", 0) + calls.get("non_reentrant", 0)) > 0
    if plan not in (None, "none") and not ran:
        notes.append(f"checkpointing was enabled ({plan}) but never ran: estimated without it")
        plan = "none"
    elif plan in (None, "none") and ran:
        plan = "full"
        notes.append("torch.utils.checkpoint called by the script itself: estimated as checkpointing every layer")
    elif plan == "partial":
        plan = "full"
        notes.append("an irregular set of checkpointed layers: estimated as full checkpointing")
    lora = model.get("lora") or {}
    targets = lora.get("targets")
    hf_class = str(model.get("hf_class") or "")
    task = "seq-cls" if hf_class.endswith("ForSequenceClassification") else \
        ("causal-lm" if hf_class.endswith("ForCausalLM") else "auto")
    setup = {
        "model_config": cfg,
        "model_name": cfg.get("_name_or_path") or hf_class or "runtime model",
        "batch_size": int(batch["batch_size"]),
        "seq_len": int(batch["seq_len"]),
        "dtype": dtype if mixed == "no" else "fp32",
        "mixed_precision": mixed,
        "attn": attn,
        "optimizer": opt,
        "lora_r": lora.get("r"),
        "lora_targets": list(targets) if isinstance(targets, (list, tuple)) else None,
        "gpus": int(model.get("world_size") or 1),
        "gradient_accumulation": max(1, int(batch.get("forward_calls") or 1)),
        "checkpointing": plan or "none",
        "task": task,
    }
    return setup, notes


def run_estimate(setup: dict, *, cublas_workspaces: bool = True) -> tuple[dict | None, str | None]:
    """The closed-form estimate (``estimate.memory``) of a runtime setup: ``(dict, None)`` or ``(None, why)``.
    A CPU run measures live tensors: ``cublas_workspaces=False``."""
    from ckpt_doctor.estimate.arch import ModelArch, UnsupportedConfig
    from ckpt_doctor.estimate.memory import TrainingSetup, estimate

    try:
        arch = ModelArch.from_hf_config(dict(setup["model_config"]), str(setup["model_name"]))
    except UnsupportedConfig as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a strange config must not be a traceback
        return None, f"model config not understood: {type(exc).__name__}: {exc}"
    fields = {k: v for k, v in setup.items() if k not in ("model_config", "model_name")}
    if fields.get("lora_targets"):
        fields["lora_targets"] = tuple(fields["lora_targets"])
    try:
        ts = TrainingSetup(arch=arch, **fields).validate()
        est = estimate(ts, cublas_workspaces=cublas_workspaces)
    except Exception as exc:  # noqa: BLE001
        return None, f"estimate failed: {type(exc).__name__}: {exc}"
    d = est.to_dict()
    d["setup"] = {k: v for k, v in fields.items()}
    d["model"] = {"name": arch.name, "model_type": arch.model_type}
    return d, None


def error_pct(estimated: int | None, measured: int | None) -> float | None:
    if not estimated or not measured:
        return None
    return round((estimated - measured) / measured * 100.0, 1) + 0.0  # no "-0.0"


# --------------------------------------------------------------------------------------------------------
# the report object


def _device_text(dev: dict) -> str:
    if not dev:
        return "unknown"
    if dev.get("type") == "cuda" and dev.get("name"):
        return f"cuda:{dev.get('index', 0)} ({dev['name']})"
    return str(dev.get("type"))


def _measured_peak(res: dict) -> int | None:
    steps = res.get("steps") or []
    if steps and steps[-1].get("peak_allocated_bytes") is not None:
        return steps[-1]["peak_allocated_bytes"]
    return res.get("peak_allocated_bytes")


def build_report(res: dict, *, target: dict, findings: list[dict], findings_note: str | None,
                 estimate: dict | None, estimate_notes: list[str], error: dict | None = None,
                 compare: dict | None = None) -> dict:
    steps = res.get("steps") or []
    measured = _measured_peak(res)
    est_peak = (estimate or {}).get("peak_bytes")
    calls = res.get("checkpoint_calls") or {}
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "target": target,
        "status": "ok" if error is None else "error",
        "error": error,
        "device": _device_text(res.get("device") or {}),
        "device_info": res.get("device"),
        "steps_run": res.get("steps_run", len(steps)),
        "step_seconds": steps[-1]["seconds"] if steps else None,
        "steps": steps,
        "peak_allocated_bytes": res.get("peak_allocated_bytes"),
        "peak_reserved_bytes": res.get("peak_reserved_bytes"),
        "nvml_used_bytes": res.get("nvml_used_bytes"),
        "nvml_scope": res.get("nvml_scope"),
        "memory_source": res.get("memory_source"),
        "cpu_peak_rss_bytes": res.get("cpu_peak_rss_bytes"),
        "params_total": res.get("params_total"),
        "params_trainable": res.get("params_trainable"),
        "optimizer": res.get("optimizer"),
        "model": _model_summary(res.get("model")),
        "batch": res.get("batch"),
        "checkpoint_calls": {"reentrant": calls.get("reentrant", 0), "non_reentrant": calls.get("non_reentrant", 0),
                             "implicit_use_reentrant": calls.get("implicit_use_reentrant", 0),
                             "bypassed": calls.get("bypassed", 0)},
        "checkpoint_sites": res.get("checkpoint_sites") or [],
        "train_mode": res.get("train_mode"),
        "modules_in_eval": res.get("modules_in_eval"),
        "warnings": [
            {k: w.get(k) for k in ("code", "category", "message", "count", "source", "user_site", "origin", "why")}
            for w in (res.get("warnings") or [])
        ],
        "findings": findings,
        "findings_note": findings_note,
        "estimate": estimate,
        "estimate_notes": estimate_notes,
        "measured_peak_bytes": measured,
        "estimate_error_pct": error_pct(est_peak, measured),
        "estimate_error_pct_reserved": error_pct((estimate or {}).get("peak_bytes_reserved"),
                                                 (steps[-1].get("peak_reserved_bytes") if steps else None)),
        "compare": compare,
        "notes": res.get("notes") or [],
        "elapsed_seconds": res.get("elapsed_seconds"),
    }
    report["codes"] = code_summary(report)
    return report


def _model_summary(model: dict | None) -> dict | None:
    if not model:
        return None
    out = {k: v for k, v in model.items() if k != "config"}
    cfg = model.get("config") or {}
    if cfg:
        out["model_type"] = cfg.get("model_type")
        out["name_or_path"] = cfg.get("_name_or_path") or None
        out["use_cache"] = cfg.get("use_cache")
    return out


def code_summary(report: dict) -> list[dict]:
    """Every rule code seen, statically or at runtime: ``{code, static, runtime, summary}``, static order first."""
    from ckpt_doctor.rules import get_rule

    codes: dict[str, dict] = {}
    for f in report.get("findings") or []:
        codes.setdefault(f["code"], {"code": f["code"], "static": 0, "runtime": 0})["static"] += 1
    for w in report.get("warnings") or []:
        if w.get("code"):
            codes.setdefault(w["code"], {"code": w["code"], "static": 0, "runtime": 0})["runtime"] += 1
    err = report.get("error") or {}
    if err.get("code"):
        codes.setdefault(err["code"], {"code": err["code"], "static": 0, "runtime": 0})["runtime"] += 1
    for c in codes.values():
        r = get_rule(c["code"])
        c["summary"] = r.summary if r else None
        c["severity"] = str(r.severity) if r else None
        c["verdict"] = ("memory: see the estimate and the measurement" if c["code"].startswith("CKPT40") else
                        "confirmed at runtime" if c["static"] and c["runtime"] else
                        "seen only at runtime" if c["runtime"] else "not observed at runtime")
    order = {"confirmed at runtime": 0, "seen only at runtime": 1, "not observed at runtime": 2}
    return sorted(codes.values(), key=lambda c: order.get(c["verdict"], 3))


def compare_report(first: dict, second: dict, toggled_to: str) -> dict:
    """``--compare``: the step as written and with checkpointing toggled; memory saved and time added by
    checkpointing (positive: checkpointing saves memory / costs time)."""
    def side(res: dict) -> dict:
        steps = res.get("steps") or []
        calls = res.get("checkpoint_calls") or {}
        hfc = ((res.get("model") or {}).get("hf_checkpointing") or {})
        return {
            "checkpointing": bool(calls.get("reentrant", 0) + calls.get("non_reentrant", 0) or
                                  (hfc.get("enabled") or 0) > 0),
            "peak_allocated_bytes": _measured_peak(res),
            "peak_reserved_bytes": steps[-1].get("peak_reserved_bytes") if steps else None,
            "step_seconds": steps[-1]["seconds"] if steps else None,
            "checkpoint_calls": {"reentrant": calls.get("reentrant", 0), "non_reentrant": calls.get("non_reentrant", 0)},
        }

    a, b = side(first), side(second)
    on, off = (a, b) if toggled_to == "off" else (b, a)
    saved = saved_pct = added_pct = None
    if on["peak_allocated_bytes"] and off["peak_allocated_bytes"]:
        saved = off["peak_allocated_bytes"] - on["peak_allocated_bytes"]
        saved_pct = round(saved / off["peak_allocated_bytes"] * 100, 1)
    if on["step_seconds"] and off["step_seconds"]:
        added_pct = round((on["step_seconds"] - off["step_seconds"]) / off["step_seconds"] * 100, 1)
    return {
        "toggled_to": toggled_to,
        "toggle": second.get("toggle"),
        "as_written": a,
        "toggled": b,
        "memory_saved_bytes": saved,
        "memory_saved_pct": saved_pct,
        "time_added_pct": added_pct,
        "note": "one step each, first step timings include warm-up; use --steps 3 for steadier numbers"
        if len(first.get("steps") or []) < 2 else None,
    }


# --------------------------------------------------------------------------------------------------------
# text


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / MiB:.1f} MiB"


def fmt_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _rel(path: str | None) -> str:
    import os

    if not path:
        return "?"
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path
    except ValueError:
        return path


def render_text(r: dict) -> str:
    out: list[str] = []
    t = r["target"]
    what = t.get("script") or (f"-m {t['module']}" if t.get("module") else f"--model {t.get('model')}")
    out.append(f"ckpt-doctor verify {what}: {r['steps_run']} step{'s' if r['steps_run'] != 1 else ''} on "
               f"{r['device']}, step {r['step_seconds'] or 0:.2f} s")
    out.append("")
    # static
    out.append(f"check ({len(r['findings'])} finding{'s' if len(r['findings']) != 1 else ''}):")
    for f in r["findings"][:8]:
        out.append(f"  {_rel(f['filename'])}:{f['location']['row']}:{f['location']['column']}: {f['code']} {f['message']}")
    if len(r["findings"]) > 8:
        out.append(f"  ... and {len(r['findings']) - 8} more")
    if r.get("findings_note"):
        out.append(f"  ({r['findings_note']})")
    # runtime
    out.append("")
    out.append("runtime:")
    m = r.get("model") or {}
    if m:
        name = m.get("hf_class") or m.get("class")
        mode = {True: "train", False: "EVAL", None: "?"}[r.get("train_mode")]
        extra = f", {r['modules_in_eval']} submodules in eval" if r.get("modules_in_eval") and r.get("train_mode") else ""
        out.append(f"  model          {name}, {fmt_count(r['params_total'])} params "
                   f"({fmt_count(r['params_trainable'])} trainable), {m.get('dtype')}, {mode} mode{extra}")
    b = r.get("batch") or {}
    o = r.get("optimizer") or {}
    if b or o:
        ac = (m.get("autocast") or {}).get("dtype")
        out.append(f"  step           batch {b.get('batch_size')} x {b.get('seq_len')} tokens"
                   f"{', autocast ' + ac if ac else ''}, {str(o.get('class', '?')).rsplit('.', 1)[-1]}"
                   f"{' x' + str(b.get('forward_calls')) + ' micro-batches' if (b.get('forward_calls') or 1) > 1 else ''}")
    c = r["checkpoint_calls"]
    total = c["reentrant"] + c["non_reentrant"]
    hfc = m.get("hf_checkpointing") or {}
    hf = f"; HF flag on {hfc['enabled']}/{hfc['layers']} layers" if hfc.get("layers") else ""
    if total:
        implicit = f" ({c['implicit_use_reentrant']} without use_reentrant)" if c["implicit_use_reentrant"] else ""
        out.append(f"  checkpointing  ran: {total} calls, {c['reentrant']} reentrant{implicit}, "
                   f"{c['non_reentrant']} non-reentrant{hf}")
    else:
        out.append(f"  checkpointing  did not run (0 calls into torch.utils.checkpoint){hf}")
    for s in r.get("checkpoint_sites", [])[:3]:
        out.append(f"                 {s['calls']} x {s['mode']} from {_rel(s['file'])}:{s['line']} ({s['origin']})")
    out.append("  memory         " + _memory_line(r))
    for n in (r.get("notes") or [])[:3]:
        out.append(f"  note           {n}")
    # estimate
    out.append("")
    est = r.get("estimate")
    if est:
        s = est.get("setup", {})
        out.append(f"estimate (for what ran: {s.get('dtype')}"
                   f"{'/' + s['mixed_precision'] if s.get('mixed_precision') not in (None, 'no') else ''}, "
                   f"{s.get('attn')}, {s.get('optimizer')}, checkpointing {s.get('checkpointing')}"
                   f"{', LoRA r=' + str(s['lora_r']) if s.get('lora_r') else ''}):")
        err = r.get("estimate_error_pct")
        errs = f"  error {err:+.1f} %" if err is not None else "  (no comparable measurement)"
        out.append(f"  peak {fmt_bytes(est['peak_bytes'])} in {est['peak_phase']} vs measured "
                   f"{fmt_bytes(r.get('measured_peak_bytes'))}{errs}")
    else:
        out.append("estimate: none")
    for n in r.get("estimate_notes") or []:
        out.append(f"  ({n})")
    # compare
    cmp_ = r.get("compare")
    if cmp_:
        out.append("")
        a, bb = cmp_["as_written"], cmp_["toggled"]
        tog = cmp_.get("toggle") or {}
        out.append(f"compare (checkpointing {'on' if a['checkpointing'] else 'off'} as written, "
                   f"then {cmp_['toggled_to']}{'' if tog.get('applied') else ' -- NOT applied: ' + str(tog.get('reason'))}):")
        out.append(f"  as written  peak {fmt_bytes(a['peak_allocated_bytes'])}, step {a['step_seconds'] or 0:.3f} s")
        out.append(f"  toggled     peak {fmt_bytes(bb['peak_allocated_bytes'])}, step {bb['step_seconds'] or 0:.3f} s")
        if cmp_.get("memory_saved_pct") is not None or cmp_.get("time_added_pct") is not None:
            out.append(f"  checkpointing saves {fmt_bytes(cmp_.get('memory_saved_bytes'))} "
                       f"({_pct(cmp_.get('memory_saved_pct'))}) for {_pct(cmp_.get('time_added_pct'))} more time")
    # warnings
    ws = r.get("warnings") or []
    mapped = [w for w in ws if w.get("code")]
    if ws:
        out.append("")
        out.append(f"warnings at runtime ({len(mapped)} mapped to rules, {len(ws) - len(mapped)} other):")
        for w in mapped[:6]:
            at = f" [from {_rel(w['user_site'])}]" if w.get("user_site") else ""
            out.append(f"  {w['code']}  {w['category']}: {_short(w['message'])}{at}")
        for w in [w for w in ws if not w.get("code")][:3]:
            out.append(f"  -        {w['category']}: {_short(w['message'])}")
    # what to change
    codes = r.get("codes") or []
    out.append("")
    if codes:
        out.append("what to change:")
        for c in codes:
            out.append(f"  {c['code']} ({c['verdict']}): {c['summary']}")
        out.append("  (`ckpt-doctor rules CODE` explains each; `ckpt-doctor check --fix` applies the safe fixes)")
    else:
        out.append("nothing to change: no finding and no runtime warning maps to a rule.")
    return "\n".join(out)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} %"


def _short(msg: str, n: int = 110) -> str:
    line = " ".join(str(msg).split())
    return line if len(line) <= n else line[: n - 3] + "..."


def _memory_line(r: dict) -> str:
    src = r.get("memory_source")
    if src == "cuda":
        nv = f", NVML {fmt_bytes(r.get('nvml_used_bytes'))} ({r.get('nvml_scope')})" if r.get("nvml_used_bytes") else ""
        return (f"peak allocated {fmt_bytes(r.get('peak_allocated_bytes'))}, reserved "
                f"{fmt_bytes(r.get('peak_reserved_bytes'))}{nv} (torch.cuda.max_memory_*)")
    if src == "cpu-live-tensors":
        return (f"peak {fmt_bytes(r.get('peak_allocated_bytes'))} of live tensors from the first forward on "
                f"(CPU run, CUDA-rounded; not a GPU measurement); process RSS {fmt_bytes(r.get('cpu_peak_rss_bytes'))}")
    return f"not measured on {r.get('device')}; process RSS {fmt_bytes(r.get('cpu_peak_rss_bytes'))}"
