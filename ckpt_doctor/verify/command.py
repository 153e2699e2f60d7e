"""``ckpt-doctor verify``: one real training step of the user's script, measured, next to what ``check``
and ``estimate`` predicted.  Registered lazily by ``ckpt_doctor.cli``; imports no torch (the child does).

    ckpt-doctor verify train.py [--device cuda|cpu] [--timeout S] [--compare] -- SCRIPT_ARGS
    ckpt-doctor verify --module pkg.train -- ARGS          # as `python -m pkg.train ARGS`
    ckpt-doctor verify --model gpt2 --batch-size 8 --seq-len 1024 [--gradient-checkpointing]   # synthetic

Exit codes: 0 the step ran and nothing maps to a rule; 1 the step ran and a finding or a runtime warning
maps to a rule; 2 no step was measured (usage error, extra missing, no CUDA, the script failed or ended
before its first optimizer step, time-out).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile

import click

from . import report as _report
from .runner import ChildRun, run_child

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
INSTALL_HINT = "pip install 'ckpt-doctor[verify]'"


def _fail(message: str, hint: str | None = None) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"  {hint}", err=True)
    raise click.exceptions.Exit(EXIT_ERROR)


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _module_file(name: str) -> str | None:
    """The file ``python -m NAME`` would run, found without importing anything."""
    rel = name.replace(".", os.sep)
    for base in [os.getcwd(), *sys.path]:
        if not base or not os.path.isdir(base):
            continue
        for cand in (os.path.join(base, rel + ".py"), os.path.join(base, rel, "__main__.py")):
            if os.path.isfile(cand):
                return cand
    return None


def _child_error(run: ChildRun, timeout: float) -> dict | None:
    """Why no step was measured, or None when at least one step was."""
    res = run.result
    tail = run.output_tail()
    if res and res.get("steps_run", 0) >= 1:
        return None
    if run.timed_out:
        return {"kind": "timeout", "message": f"timed out after {timeout:g} s (last: {run.last_status or 'starting'}); "
                f"the whole process group was killed", "output_tail": tail}
    if res is None:
        return {"kind": "crash", "message": f"the child process exited with status {run.returncode} and no result "
                "(killed by the OOM killer or a signal?)", "output_tail": tail}
    status = res.get("status")
    err = res.get("error") or {}
    if status == "no_cuda":
        looked = ", ".join(f"{k}={v}" for k, v in (err.get("looked_for") or {}).items())
        return {"kind": "no_cuda", "message": f"no CUDA device: {err.get('message')}",
                "looked_for": err.get("looked_for"), "detail": looked,
                "hint": "--device cpu runs the same machinery on the CPU (a smoke test: no GPU memory figures)"}
    if err.get("kind") == "no_torch":
        return {"kind": "extra_missing", "message": err.get("message"), "hint": INSTALL_HINT}
    if status == "no_step":
        return {"kind": "no_step", "message": "the script ended without calling optimizer.step()",
                "output_tail": tail}
    if status == "error":
        kind = "script_failed"
        msg = f"the script failed before its first optimizer step: {err.get('type')}: {err.get('message')}"
        if err.get("kind") == "exit":
            msg = f"the script exited before its first optimizer step ({err.get('message')})"
        mapped = [w for w in (res.get("warnings") or []) if w.get("code")]
        return {"kind": kind, "message": msg, "exception": err.get("type"), "warnings": mapped,
                "traceback_tail": err.get("traceback_tail") or [], "output_tail": tail,
                "code": err.get("code"), "why": err.get("why")}
    return {"kind": "unknown", "message": f"no step measured (status {status})", "output_tail": tail}


def _print_error(err: dict, verbose_output: str | None = None) -> None:
    click.echo(f"error: {err['message']}", err=True)
    if err.get("detail"):
        click.echo(f"  looked for: {err['detail']}", err=True)
    lines = err.get("traceback_tail") or err.get("output_tail") or []
    if lines and err["kind"] != "no_cuda":
        click.echo("  " + ("traceback (last lines):" if err.get("traceback_tail") else "output (last lines):"), err=True)
        for line in lines[-12:]:
            click.echo(f"    {line}", err=True)
    for w in err.get("warnings") or []:
        click.echo(f"  runtime warning before that: {w['code']} {w['category']}: {_report._short(w['message'])}", err=True)
    if err.get("code"):
        click.echo(f"  this is {err['code']}: {err.get('why')} (`ckpt-doctor rules {err['code']}`)", err=True)
    if err.get("hint"):
        click.echo(f"  {err['hint']}", err=True)


def _synthetic_spec(model: str, flags: dict, device: str, steps: int) -> tuple[dict, dict]:
    """(spec for the child, setup for the estimate) of ``--model`` mode."""
    from ckpt_doctor.estimate.command import DEFAULTS
    from ckpt_doctor.estimate.registry import lookup

    try:
        arch, source = lookup(model)
    except Exception as exc:  # noqa: BLE001
        arch, source = None, str(exc)
    if arch is None:
        _fail(f"cannot resolve model {model!r}: {source}", "pass --model with a bundled id or a local config.json "
              "(to run a module as `python -m NAME`, use --module NAME)")
    setup = {k: v for k, v in DEFAULTS.items()}
    setup.update({k: v for k, v in flags.items() if v is not None})
    if flags.get("seq_len") is None:
        setup["seq_len"] = min(int(DEFAULTS["seq_len"]), int(arch.max_position_embeddings or DEFAULTS["seq_len"]))
    if isinstance(setup.get("lora_targets"), str):
        setup["lora_targets"] = [t.strip() for t in setup["lora_targets"].split(",") if t.strip()] or None
    for k in ("load_in_4bit", "load_in_8bit"):
        setup.pop(k, None)
    if setup.get("gpus", 1) != 1 or setup.get("zero", 0):
        _fail("the synthetic step runs on one device (no --gpus / --zero)")
    setup.pop("gpus", None)
    setup.pop("zero", None)
    try:
        from ckpt_doctor.estimate.memory import TrainingSetup

        ts_fields = dict(setup)
        if ts_fields.get("lora_targets"):
            ts_fields["lora_targets"] = tuple(ts_fields["lora_targets"])
        TrainingSetup(arch=arch, **ts_fields).validate()
    except (TypeError, ValueError) as exc:
        _fail(str(exc))
    spec = {"name": arch.name, "hf_config": arch.hf_config, "setup": setup, "device": device, "steps": steps,
            "source": source}
    est_setup = {"model_config": arch.hf_config, "model_name": arch.name, **setup}
    return spec, est_setup


@click.command("verify", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[SCRIPT] [-- SCRIPT_ARGS...]")
@click.option("--module", "module_name", metavar="NAME", help="Run a module as `python -m NAME` instead of a script.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="cpu: a smoke run of the same machinery, without GPU memory figures.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True, metavar="S",
              help="Seconds before the whole process group is killed (per run).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimizer steps to run; the last one is measured (default 1; 2 with --model).")
@click.option("--compare", is_flag=True, help="Run again with checkpointing toggled: memory saved, time added.")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Also print the script's own output (stderr).")
@click.option("--model", "model", metavar="ID_OR_CONFIG",
              help="Synthetic mode: build this model from its config (random weights, no download).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Synthetic: micro-batch size (default 1).")
@click.option("--seq-len", type=click.IntRange(min=1), help="Synthetic: tokens per sample (default 2048, capped).")
@click.option("--gradient-checkpointing", is_flag=True, help="Synthetic: checkpoint every layer (= --checkpointing full).")
@click.option("--checkpointing", metavar="PLAN", help="Synthetic: none, full, every_N.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), help="Synthetic: weights dtype (default bf16).")
@click.option("--mixed-precision", type=click.Choice(["no", "bf16", "fp16"]), help="Synthetic: autocast over fp32.")
@click.option("--attn", type=click.Choice(["eager", "sdpa", "flash"]), help="Synthetic: attention (default sdpa).")
@click.option("--optimizer", type=click.Choice(["adamw", "adamw-fused", "adamw-loop", "sgd", "adafactor"]),
              help="Synthetic: optimizer (default adamw, foreach).")
@click.option("--lora-r", type=click.IntRange(min=1), help="Synthetic: LoRA rank (needs peft).")
@click.option("--lora-targets", metavar="NAMES", help="Synthetic: comma-separated LoRA targets.")
def verify(command: tuple[str, ...], module_name: str | None, device: str, timeout: float, steps: int | None,
           compare: bool, output_format: str, verbose: bool, model: str | None, batch_size: int | None,
           seq_len: int | None, gradient_checkpointing: bool, checkpointing: str | None, dtype: str | None,
           mixed_precision: str | None, attn: str | None, optimizer: str | None, lora_r: int | None,
           lora_targets: str | None) -> None:
    """Run one real optimizer step of a training script (or a synthetic step of --model) in a child process,
    and show what `check` predicted, what `estimate` expects for the settings that ran, and what happened:
    peak memory, step time, checkpoint calls and their mode, train mode, warnings mapped to rule codes."""
    script = None
    args: list[str] = list(command)
    synthetic_flags = {"batch_size": batch_size, "seq_len": seq_len, "dtype": dtype, "mixed_precision": mixed_precision,
                       "attn": attn, "optimizer": optimizer, "lora_r": lora_r, "lora_targets": lora_targets,
                       "checkpointing": "full" if gradient_checkpointing and not checkpointing else checkpointing}
    if model:
        if module_name or args:
            _fail("--model runs a synthetic step: give either a script / --module, or --model, not both")
        mode = "synthetic"
    else:
        given = [k for k, v in synthetic_flags.items() if v is not None]
        if given:
            _fail(f"--{given[0].replace('_', '-')} is for the synthetic step (with --model); a script's settings are "
                  "read at runtime")
        if module_name:
            mode = "module"
        elif args:
            mode = "script"
            script, args = args[0], args[1:]
            if not os.path.isfile(script):
                _fail(f"{script}: no such file", "usage: ckpt-doctor verify SCRIPT [OPTIONS] -- SCRIPT_ARGS")
        else:
            _fail("nothing to run: give a SCRIPT, --module NAME or --model ID",
                  "e.g. ckpt-doctor verify train.py -- --per_device_train_batch_size 4")

    need = ("torch", "transformers") if mode == "synthetic" else ("torch",)
    missing = _missing(need)
    if missing:
        _fail(f"verify needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed",
              f"install the extra: {INSTALL_HINT}")
    if steps is None:
        steps = 2 if mode == "synthetic" else 1

    tmpdir = None
    est_setup = None
    if mode == "synthetic":
        spec, est_setup = _synthetic_spec(model, synthetic_flags, device, steps)
        tmpdir = tempfile.mkdtemp(prefix="ckpt-doctor-synthetic-")
        spec_path = os.path.join(tmpdir, "setup.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        target = ["--module", "ckpt_doctor.verify.synthetic", spec_path]
        target_info = {"mode": mode, "script": None, "module": None, "args": [], "model": model,
                       "setup": {k: v for k, v in est_setup.items() if k != "model_config"}}
    elif mode == "module":
        target = ["--module", module_name, *args]
        target_info = {"mode": mode, "script": None, "module": module_name, "args": args, "model": None}
    else:
        target = [script, *args]
        target_info = {"mode": mode, "script": script, "module": None, "args": args, "model": None}

    progress = sys.stderr.isatty()
    try:
        first = run_child(target, device=device, steps=steps, timeout=timeout, progress=progress)
        if verbose:
            click.echo(first.output, err=True, nl=False)
        err = _child_error(first, timeout)
        second = None
        toggled_to = None
        if err is None and compare:
            res = first.result or {}
            calls = res.get("checkpoint_calls") or {}
            hfc = ((res.get("model") or {}).get("hf_checkpointing") or {})
            on = (calls.get("reentrant", 0) + calls.get("non_reentrant", 0)) > 0 or (hfc.get("enabled") or 0) > 0
            toggled_to = "off" if on else "on"
            second = run_child(target, device=device, steps=steps, timeout=timeout, checkpointing=toggled_to,
                               progress=progress, label=f" (checkpointing {toggled_to})")
            if verbose:
                click.echo(second.output, err=True, nl=False)
            err2 = _child_error(second, timeout)
            if err2 is not None:
                err = {**err2, "message": f"--compare run with checkpointing {toggled_to}: {err2['message']}"}
    finally:
        if tmpdir:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)

    res = first.result or {}
    # static half
    if mode == "script":
        findings, fnote = _report.static_findings([script])
    elif mode == "module":
        path = _module_file(module_name)
        findings, fnote = _report.static_findings([path]) if path else ([], f"{module_name}: source not found")
    else:
        findings, fnote = [], "synthetic step: no script to check"
    if err is not None:
        if output_format == "json":
            r = _report.build_report(res, target=target_info, findings=findings, findings_note=fnote, estimate=None,
                                     estimate_notes=[], error=err)
            click.echo(json.dumps(r, indent=2, default=str))
        else:
            _print_error(err)
            if findings and err["kind"] in ("script_failed", "no_step", "timeout", "crash"):
                click.echo(f"  check found {len(findings)} finding{'s' if len(findings) != 1 else ''} in the script:",
                           err=True)
                for f in findings[:6]:
                    click.echo(f"    {_report._rel(f['filename'])}:{f['location']['row']}: {f['code']} "
                               f"{_report._short(f['message'], 90)}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR)

    # estimate for what ran
    if est_setup is not None:
        setup, notes = est_setup, []
    else:
        setup, notes = _report.setup_from_runtime(res)
    estimate = None
    if setup is not None:
        estimate, why = _report.run_estimate(setup, cublas_workspaces=res.get("memory_source") == "cuda")
        if why:
            notes.append(why)
    if res.get("memory_source") == "cpu-live-tensors":
        notes.append("CPU run: measured as live tensor bytes rounded like CUDA's allocator; the estimate models CUDA")
    if (res.get("steps_run") or 0) < 2 and estimate is not None:
        notes.append("the estimate is of a steady-state step (optimizer state already allocated); the first step "
                     "creates it during optimizer.step(): --steps 2 measures a steady-state step")
    cmp_ = _report.compare_report(res, second.result or {}, toggled_to) if second is not None else None
    r = _report.build_report(res, target=target_info, findings=findings, findings_note=fnote, estimate=estimate,
                             estimate_notes=notes, compare=cmp_)
    if output_format == "json":
        click.echo(json.dumps(r, indent=2, default=str))
    else:
        click.echo(_report.render_text(r))
    runtime_codes = any(c["runtime"] for c in r["codes"])
    static_bad = any(f.get("severity") in ("error", "warning") for f in findings)
    raise click.exceptions.Exit(EXIT_FINDINGS if runtime_codes or static_bad else EXIT_OK)
