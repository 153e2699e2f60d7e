"""`ckpt-doctor verify`: one real step of a script in a child process, measured and mapped to rules.

The CPU tests run the fixture scripts of tests/verify_fixtures (a plain loop checkpointing the layers with
torch.utils.checkpoint, an HF Trainer script, an accelerate script, each on a tiny random-init Llama built from
tests/verify_fixtures/tiny/config.json) with `--device cpu`, in a copy of the fixture folder, each once per
module.  They need the [verify] extra (torch, transformers, accelerate).  `gpu` tests need CUDA.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run_subprocess
from ckpt_doctor.verify import codes, report

FIXTURES = Path(__file__).parent / "verify_fixtures"

# the keys docs/verify.md promises in `--output-format json`
REQUIRED_KEYS = {
    "schema_version", "target", "status", "error", "device", "steps_run", "step_seconds", "steps",
    "peak_allocated_bytes", "peak_reserved_bytes", "nvml_used_bytes", "memory_source", "params_total",
    "params_trainable", "optimizer", "model", "batch", "checkpoint_calls", "checkpoint_sites", "train_mode",
    "warnings", "findings", "estimate", "estimate_notes", "measured_peak_bytes", "estimate_error_pct", "compare",
    "codes",
}


# --------------------------------------------------------------------------------------------------------
# no torch needed


@pytest.mark.parametrize("message, origin, code", [
    ("torch.utils.checkpoint: the use_reentrant parameter should be passed explicitly. In version 2.5 ...",
     "user", "CKPT101"),
    ("torch.utils.checkpoint: the use_reentrant parameter should be passed explicitly.", "huggingface", "CKPT201"),
    ("None of the inputs have requires_grad=True. Gradients will be None", None, "CKPT202"),
    ("element 0 of tensors does not require grad and does not have a grad_fn", None, "CKPT202"),
    ("`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`.", None, "CKPT203"),
    ("Caching is incompatible with gradient checkpointing in LlamaDecoderLayer. Setting `use_cache=False`.", None,
     "CKPT203"),
    ("Expected to mark a variable ready only once. This error is caused by ...", None, "CKPT301"),
    ("`gradient_checkpointing_enable` is deprecated and will be removed in v6.", None, "CKPT205"),
    ("`gradient_checkpointing` is deprecated and will be removed in v6.", None, "CKPT205"),
    ("Unexpected keyword arguments: attention_mask", None, "CKPT103"),
    ("some unrelated warning", None, None),
])
def test_runtime_messages_map_to_rules(message, origin, code):
    assert codes.code_for(message, origin)[0] == code


def test_every_mapped_code_is_a_rule():
    from ckpt_doctor.rules import get_rule

    for entry in codes.RUNTIME_MESSAGES:
        for code in entry.code.split("|"):
            assert get_rule(code) is not None, code


def test_origin_of_files():
    sp = "/usr/lib/python3.11/site-packages"
    assert codes.origin_of(f"{sp}/transformers/modeling_layers.py") == "huggingface"
    assert codes.origin_of(f"{sp}/peft/peft_model.py") == "huggingface"
    assert codes.origin_of(f"{sp}/torch/utils/checkpoint.py") == "torch"
    assert codes.origin_of("/home/me/train.py") == "user"


def test_runtime_setup_for_the_estimate():
    res = {
        "model": {"config": json.loads((FIXTURES / "tiny" / "config.json").read_text()), "dtype": "fp32",
                  "autocast": {"device": "cuda", "dtype": "bfloat16"}, "attn": "sdpa", "hf_class": "LlamaForCausalLM",
                  "hf_checkpointing": {"layers": 2, "enabled": 1, "plan": "every_2"}},
        "batch": {"batch_size": 4, "seq_len": 128, "forward_calls": 2},
        "optimizer": {"class": "torch.optim.adamw.AdamW", "estimate_name": "adamw"},
        "checkpoint_calls": {"reentrant": 0, "non_reentrant": 1},
    }
    setup, notes = report.setup_from_runtime(res)
    assert setup["mixed_precision"] == "bf16" and setup["dtype"] == "fp32"
    assert (setup["batch_size"], setup["seq_len"], setup["gradient_accumulation"]) == (4, 128, 2)
    assert setup["checkpointing"] == "every_2" and setup["task"] == "causal-lm"
    est, why = report.run_estimate(setup)
    assert why is None and est["peak_bytes"] > 0 and est["setup"]["checkpointing"] == "every_2"
    assert report.error_pct(110, 100) == 10.0 and report.error_pct(None, 100) is None
    assert report.setup_from_runtime({"model": {}})[0] is None


def test_help_is_light():
    """`ckpt-doctor --help`, `verify --help` and `check` never import torch or transformers."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from ckpt_doctor.cli import main\n"
        "r = CliRunner()\n"
        "outs = [r.invoke(main, ['--help']), r.invoke(main, ['verify', '--help']), r.invoke(main, ['check', '--help'])]\n"
        "assert all(o.exit_code == 0 for o in outs), [o.output for o in outs]\n"
        "assert 'verify' in outs[0].output and '--compare' in outs[1].output\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_usage_errors(tmp_path):
    from click.testing import CliRunner

    from ckpt_doctor.cli import main

    r = CliRunner()
    res = r.invoke(main, ["verify"])
    assert res.exit_code == 2 and "nothing to run" in res.output
    res = r.invoke(main, ["verify", str(tmp_path / "missing.py")])
    assert res.exit_code == 2 and "no such file" in res.output
    script = tmp_path / "t.py"
    script.write_text("print(1)\n")
    res = r.invoke(main, ["verify", str(script), "--batch-size", "4"])
    assert res.exit_code == 2 and "synthetic" in res.output


# --------------------------------------------------------------------------------------------------------
# real runs on the CPU (the [verify] extra)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("verify") / "project"
    shutil.copytree(FIXTURES, d)
    (d / ".git").mkdir()  # keeps check's config search inside the copy
    return d


def _verify(work: Path, *args, timeout: float = 180):
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return run_subprocess(["verify", *args], work, env=env, timeout=timeout)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json(res) -> dict:
    assert res.out.strip(), res.err
    return json.loads(res.out)


@pytest.fixture(scope="module")
def plain(work):
    """The plain loop, through the CLI in-process in a fresh interpreter that reports what the parent imported."""
    before = _digest(work / "plain_loop.py")
    code = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from ckpt_doctor.cli import main\n"
        "r = CliRunner().invoke(main, ['verify', 'plain_loop.py', '--device', 'cpu', '--output-format', 'json',\n"
        "                              '--', '--steps', '5'])\n"
        "print(json.dumps({'exit': r.exit_code, 'report': json.loads(r.stdout),\n"
        "                  'parent_imported': [m for m in ('torch', 'transformers') if m in sys.modules]}))\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    out["seconds"] = time.perf_counter() - t0
    out["unchanged"] = _digest(work / "plain_loop.py") == before
    return out


def test_plain_loop_one_step_checkpoint_modes_and_warnings(plain):
    r = plain["report"]
    assert plain["exit"] == 1  # CKPT101 seen at runtime
    assert plain["parent_imported"] == []  # the parent never imported torch or transformers
    assert plain["unchanged"]
    assert r["status"] == "ok" and r["steps_run"] == 1 and r["device"] == "cpu"
    assert r["checkpoint_calls"]["reentrant"] == 1 and r["checkpoint_calls"]["non_reentrant"] == 1
    assert r["checkpoint_calls"]["implicit_use_reentrant"] == 1
    sites = {(s["mode"], s["line"]) for s in r["checkpoint_sites"]}
    assert sites == {("non_reentrant", 24), ("reentrant", 26)}  # the script's own lines
    w = [w for w in r["warnings"] if w["code"] == "CKPT101"]
    assert w and w[0]["category"] == "UserWarning" and w[0]["user_site"].endswith("plain_loop.py:26")
    assert [c for c in r["codes"] if c["code"] == "CKPT101"][0]["verdict"] == "confirmed at runtime"
    assert "CKPT101" in [f["code"] for f in r["findings"]]
    assert r["train_mode"] is True
    assert r["params_total"] == r["params_trainable"] > 100_000
    assert r["batch"]["batch_size"] == 2 and r["batch"]["seq_len"] == 32
    assert r["optimizer"]["estimate_name"] == "adamw-loop"
    assert r["memory_source"] == "cpu-live-tensors" and r["peak_allocated_bytes"] > 0
    assert r["peak_reserved_bytes"] is None and r["nvml_used_bytes"] is None
    assert r["estimate"]["setup"]["checkpointing"] == "full"
    assert abs(r["estimate_error_pct"]) < 25


def test_json_schema_keys(plain):
    r = plain["report"]
    assert REQUIRED_KEYS <= set(r)
    assert set(r["checkpoint_calls"]) >= {"reentrant", "non_reentrant"}
    for w in r["warnings"]:
        assert {"code", "category", "message"} <= set(w)
    for f in r["findings"]:  # as `check --output-format json`
        assert {"code", "filename", "location", "end_location", "message", "severity", "fix", "url"} <= set(f)
    assert isinstance(r["step_seconds"], float) and r["step_seconds"] >= 0
    assert {"peak_bytes", "peak_bytes_reserved", "phases", "breakdown", "setup"} <= set(r["estimate"])


def test_hf_trainer_script(work, tmp_path):
    before = _digest(work / "hf_trainer.py")
    res = _verify(work, "hf_trainer.py", "--device", "cpu", "--output-format", "json", "--", str(tmp_path / "out"))
    r = _json(res)
    assert res.code in (0, 1), res.err
    assert r["steps_run"] == 1
    assert r["checkpoint_calls"] == {"reentrant": 0, "non_reentrant": 2, "implicit_use_reentrant": 0, "bypassed": 0}
    assert {s["origin"] for s in r["checkpoint_sites"]} == {"huggingface"}
    assert r["model"]["hf_checkpointing"] == {"layers": 2, "enabled": 2, "plan": "full"}
    assert r["batch"]["batch_size"] == 4 and r["batch"]["seq_len"] == 32
    assert r["train_mode"] is True
    # TrainingArguments(gradient_checkpointing=True): transformers' FutureWarning is CKPT205, as check says
    assert any(w["code"] == "CKPT205" and w["category"] == "FutureWarning" for w in r["warnings"])
    assert _digest(work / "hf_trainer.py") == before


def test_accelerate_script_maps_use_cache_and_deprecation(work):
    res = _verify(work, "accelerate_loop.py", "--device", "cpu", "--steps", "2", "--output-format", "json")
    r = _json(res)
    assert res.code == 1, res.err
    assert r["steps_run"] == 2 and len(r["steps"]) == 2
    assert r["checkpoint_calls"]["non_reentrant"] == 4 and r["checkpoint_calls"]["reentrant"] == 0
    got = {w["code"]: w for w in r["warnings"] if w["code"]}
    assert got["CKPT203"]["category"] == "log:WARNING"
    assert got["CKPT205"]["category"] == "FutureWarning"
    verdicts = {c["code"]: c["verdict"] for c in r["codes"]}
    assert verdicts["CKPT203"] == verdicts["CKPT205"] == "confirmed at runtime"
    assert abs(r["estimate_error_pct"]) < 10  # a steady-state step on the live-bytes CPU measure


def test_text_report_fits_one_screen(plain):
    out = report.render_text(plain["report"])  # what `verify` prints without --output-format json
    for part in ("check (", "runtime:", "checkpointing  ran: 2 calls, 1 reentrant", "estimate (for what ran",
                 "warnings at runtime", "CKPT101 (confirmed at runtime)", "what to change"):
        assert part in out, part
    assert len(out.splitlines()) <= 40


def test_script_failing_before_its_first_step(work):
    res = _verify(work, "crash_before_step.py", "--device", "cpu")
    assert res.code == 2
    assert "failed before its first optimizer step" in res.err
    assert "RuntimeError: element 0 of tensors does not require grad" in res.err
    assert "crash_before_step.py\", line 13" in res.err  # the script's own frame in the traceback tail
    assert "CKPT202" in res.err
    res = _verify(work, "crash_before_step.py", "--device", "cpu", "--output-format", "json")
    r = _json(res)
    assert res.code == 2 and r["status"] == "error" and r["steps_run"] == 0
    assert r["error"]["kind"] == "script_failed" and r["error"]["code"] == "CKPT202"
    assert r["error"]["traceback_tail"][-1].startswith("RuntimeError")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie waiting for init counts as gone
    except FileNotFoundError:
        return True


def test_timeout_kills_the_process_group(work, tmp_path):
    pids = tmp_path / "pids"
    t0 = time.perf_counter()
    res = _verify(work, "hang.py", "--device", "cpu", "--timeout", "6", "--", str(pids))
    assert time.perf_counter() - t0 < 30
    assert res.code == 2 and "timed out after 6 s" in res.err
    pid, pgid, grandchild = map(int, pids.read_text().split())
    assert pid == pgid  # the script led its own process group
    assert _gone(pid) and _gone(grandchild)
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # give init a moment to reap
            os.killpg(pgid, 0)
            if all(_gone(p) for p in (pid, grandchild)):
                raise ProcessLookupError
            time.sleep(0.1)


def test_module_form_and_compare(work):
    """`--module` runs like `python -m`; --compare runs the step again with the checkpoint calls bypassed."""
    res = _verify(work, "--module", "plain_loop", "--device", "cpu", "--compare", "--steps", "2",
                  "--output-format", "json")
    r = _json(res)
    assert res.code == 1, res.err
    assert r["target"]["module"] == "plain_loop" and r["steps_run"] == 2
    assert "CKPT101" in [f["code"] for f in r["findings"]]  # the module's file was checked
    c = r["compare"]
    assert c["toggled_to"] == "off" and c["toggle"]["applied"] is True
    assert c["as_written"]["checkpoint_calls"]["reentrant"] == 2  # one per step
    assert c["toggled"]["checkpoint_calls"] == {"reentrant": 0, "non_reentrant": 0}
    assert c["as_written"]["checkpointing"] and not c["toggled"]["checkpointing"]
    assert c["memory_saved_bytes"] is not None and c["time_added_pct"] is not None


def test_no_cuda_is_an_early_clear_error(work):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = _verify(work, "plain_loop.py")
    assert res.code == 2
    assert "no CUDA device" in res.err and "looked for:" in res.err and "--device cpu" in res.err


def test_bench_script_cpu_path(tmp_path):
    """bench/gpu_verify.sh's argument handling and JSON writing: the synthetic step on the tiny config, CPU."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "gpu_verify_cpu.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DEVICE": "cpu", "SKIP_INSTALL": "1", "PYTHON": sys.executable,
           "MODELS": str(FIXTURES / "tiny" / "config.json"), "BATCHES": "2", "CKPTS": "none full", "SEQ": "32",
           "DTYPE": "fp32", "RESULT": str(out), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["bash", str(REPO_ROOT / "bench" / "gpu_verify.sh")], capture_output=True, text=True,
                          env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["gpu"] == "cpu" and doc["summary"]["runs"] == 2
    rows = {r["checkpointing"]: r for r in doc["rows"]}
    assert set(rows) == {"none", "full"}
    for r in rows.values():
        assert r["exit_code"] == 0 and r["steps_run"] == 2 and r["seq_len"] == 32 and r["batch_size"] == 2
        assert r["measured_peak_allocated_bytes"] > 0 and r["estimated_peak_bytes"] > 0
        assert abs(r["estimate_error_pct"]) < 5  # steady state, live CPU bytes vs the closed form
    assert rows["full"]["checkpoint_calls"]["non_reentrant"] == 4  # 2 layers x 2 steps
    assert rows["none"]["checkpoint_calls"]["non_reentrant"] == 0


def test_bench_script_records_the_optimizer_lora_and_allocator_of_each_run(tmp_path):
    """The calibration matrix's other dimensions (issue 10): each row says which optimizer, LoRA rank and allocator
    setting it ran with, so the offline comparisons rebuild the same setup."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "gpu_verify_cpu.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DEVICE": "cpu", "SKIP_INSTALL": "1", "PYTHON": sys.executable,
           "MODELS": str(FIXTURES / "tiny" / "config.json"), "BATCHES": "2", "CKPTS": "full", "SEQ": "32", "DTYPE": "fp32",
           "OPTIMIZERS": "adamw-fused", "ALLOCS": "default expandable", "RESULT": str(out), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["bash", str(REPO_ROOT / "bench" / "gpu_verify.sh")], capture_output=True, text=True,
                          env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["optimizer"], r["lora_r"], r["allocator"]) for r in rows] == [("adamw-fused", None, "default"),
                                                                           ("adamw-fused", None, "expandable")]
    assert all(r["exit_code"] == 0 and r["measured_peak_allocated_bytes"] > 0 for r in rows)


# --------------------------------------------------------------------------------------------------------
# on a GPU


@pytest.fixture
def cuda():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch


@pytest.mark.gpu
def test_gpu_plain_loop_measures_cuda_memory(cuda, work):
    res = _verify(work, "plain_loop.py", "--output-format", "json", "--steps", "2")
    r = _json(res)
    assert res.code == 1, res.err
    assert r["memory_source"] == "cuda" and r["device"].startswith("cuda:")
    assert r["peak_allocated_bytes"] > 0 and r["peak_reserved_bytes"] >= r["peak_allocated_bytes"]
    assert r["nvml_used_bytes"] is None or r["nvml_used_bytes"] >= r["peak_reserved_bytes"]
    assert r["checkpoint_calls"]["reentrant"] == 2 and r["checkpoint_calls"]["non_reentrant"] == 2


@pytest.mark.gpu
def test_gpu_synthetic_step_close_to_the_estimate(cuda, work):
    res = _verify(work, "--model", str(FIXTURES / "tiny" / "config.json"), "--batch-size", "4", "--seq-len", "128",
                  "--output-format", "json")
    r = _json(res)
    assert res.code == 0, res.err
    assert r["memory_source"] == "cuda" and r["steps_run"] == 2
    assert r["estimate_error_pct"] is not None and abs(r["estimate_error_pct"]) < 25


def test_eval_mode_step_is_reported(work):
    """CKPT208 proved at runtime: the HF flags are on, the step runs in eval mode, no checkpoint call."""
    res = _verify(work, "eval_mode.py", "--device", "cpu", "--output-format", "json")
    r = _json(res)
    assert res.code == 1, res.err
    assert r["train_mode"] is False and r["steps_run"] == 1
    assert r["checkpoint_calls"]["reentrant"] == r["checkpoint_calls"]["non_reentrant"] == 0
    assert r["model"]["hf_checkpointing"]["enabled"] == 2
    assert [w["code"] for w in r["warnings"]] == ["CKPT208"]
    assert {c["code"]: c["verdict"] for c in r["codes"]}["CKPT208"] == "confirmed at runtime"
    assert r["estimate"]["setup"]["checkpointing"] == "none"  # the estimate is for what ran
