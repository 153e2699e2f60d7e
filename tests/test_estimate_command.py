"""`ckpt-doctor estimate` as a user runs it (click's CliRunner), and its JSON schema."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from ckpt_doctor.estimate.command import estimate

GiB = 1 << 30
HAS_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
PLAN_KEYS = {"name", "peak_bytes", "peak_bytes_nvidia_smi", "fits", "extra_compute_pct", "recommended", "breakdown"}
BREAKDOWN = {"weights", "master_weights", "gradients", "optimizer_state", "activations", "logits_and_loss",
             "temporaries", "cublas_workspaces"}


def run(*args: str):
    return CliRunner().invoke(estimate, list(args), catch_exceptions=False)


def run_json(*args: str) -> dict:
    res = run(*args, "--output-format", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_text_output_has_every_part():
    res = run("--model", "meta-llama/Llama-2-7b-hf", "--batch-size", "1", "--seq-len", "2048", "--gpu-memory", "80GiB")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for part in ("weights", "gradients", "optimizer state", "master weights", "activations", "logits and loss",
                 "temporaries", "cuBLAS workspaces", "CUDA context", "allocator", "max_memory_allocated", "nvidia-smi",
                 "peak at: optimizer", "verdict: fits", "extra compute", "<- recommended", "every_2", "offload"):
        assert part in out, part
    assert "62.82" in out  # the Llama-2-7B fact: optimizer step, 62.8 GiB (64 MiB of it cuBLAS workspaces)
    bar = [line for line in out.splitlines() if line.strip().startswith("[")]
    assert bar and "|" in bar[0] and "W" in bar[0] and "O" in bar[0]


def test_json_schema():
    d = run_json("--model", "meta-llama/Llama-3.2-1B", "--batch-size", "4", "--seq-len", "4096", "--lora-r", "16",
                 "--lora-targets", "q_proj,v_proj", "--gpu", "RTX4090")
    assert d["schema_version"] == 1
    assert d["params"]["total"] > d["params"]["trainable"] > 0
    assert d["setup"]["lora_targets"] == ["q_proj", "v_proj"] and d["setup"]["batch_size"] == 4
    assert set(d["breakdown"]) == BREAKDOWN
    assert sum(d["breakdown"].values()) == d["peak_bytes"]
    assert d["peak_bytes"] < d["peak_bytes_nvidia_smi"] - d["cuda_context_bytes"] <= d["peak_bytes_reserved"]
    assert d["peak_phase"] in d["phases"] and d["peak_bytes"] == max(d["phases"].values())
    assert d["budget"] == {"bytes": 24 * GiB, "source": "--gpu RTX4090"}
    names = [p["name"] for p in d["plans"]]
    assert names[:2] == ["none", "full"] and "every_2" in names and "offload" in names
    for p in d["plans"]:
        assert PLAN_KEYS <= set(p)
        assert set(p["breakdown"]) == BREAKDOWN and sum(p["breakdown"].values()) == p["peak_bytes"]
        assert p["fits"] == (p["peak_bytes_nvidia_smi"] <= 24 * GiB)
    rec = [p["name"] for p in d["plans"] if p["recommended"]]
    assert rec == ([d["recommended"]] if d["recommended"] else [])
    assert d["fits"] == (d["peak_bytes_nvidia_smi"] <= 24 * GiB)
    assert d["method"] == "closed-form" and "trace" not in d


def test_budget_precedence_and_default():
    assert run_json("--model", "gpt2")["budget"]["bytes"] == 24 * GiB
    assert "default" in run_json("--model", "gpt2")["budget"]["source"]
    assert run_json("--model", "gpt2", "--gpu", "A100-80GB")["budget"]["bytes"] == 80 * GiB
    both = run_json("--model", "gpt2", "--gpu", "A100-80GB", "--gpu-memory", "40GiB")
    assert both["budget"] == {"bytes": 40 * GiB, "source": "--gpu-memory 40GiB"}
    assert run_json("--model", "gpt2", "--gpu-memory", "24000MiB")["budget"]["bytes"] == 24000 * 2**20


def test_flags_reach_the_setup():
    d = run_json("--model", "meta-llama/Llama-2-7b-hf", "--dtype", "fp32", "--mixed-precision", "bf16", "--attn", "eager",
                 "--optimizer", "adamw-8bit", "--gpus", "8", "--zero", "3", "--gradient-accumulation", "4",
                 "--checkpointing", "every_2", "--seq-len", "1024", "--batch-size", "2")
    s = d["setup"]
    assert (s["dtype"], s["mixed_precision"], s["attn"], s["optimizer"]) == ("fp32", "bf16", "eager", "adamw-8bit")
    assert (s["gpus"], s["zero"], s["gradient_accumulation"], s["checkpointing"]) == (8, 3, 4, "every_2")
    q = run_json("--model", "meta-llama/Llama-2-7b-hf", "--lora-r", "64", "--load-in-4bit", "--seq-len", "1024")
    assert q["setup"]["load_in_4bit"] and q["params"]["trainable"] < 0.02 * q["params"]["total"]
    assert q["setup"]["kbit_upcast"] is True  # peft's prepare_model_for_kbit_training, unless told otherwise
    n = run_json("--model", "meta-llama/Llama-2-7b-hf", "--lora-r", "64", "--load-in-4bit", "--seq-len", "1024",
                 "--no-kbit-upcast")
    assert n["setup"]["kbit_upcast"] is False and n["peak_bytes"] < q["peak_bytes"]
    assert "no fp32 upcast" in run("--model", "meta-llama/Llama-2-7b-hf", "--load-in-4bit", "--lora-r", "8",
                                   "--no-kbit-upcast").output


def test_sequence_defaults_to_2048_capped_by_the_model():
    assert run_json("--model", "openai-community/gpt2")["setup"]["seq_len"] == 1024
    assert run_json("--model", "meta-llama/Llama-2-7b-hf")["setup"]["seq_len"] == 2048
    assert run_json("--model", "openai-community/gpt2", "--seq-len", "4096")["setup"]["seq_len"] == 4096


def test_does_not_fit_names_the_lightest_plan():
    res = run("--model", "meta-llama/Llama-2-7b-hf", "--lora-r", "16", "--batch-size", "8", "--seq-len", "4096",
              "--gpu", "A100-80GB")
    assert res.exit_code == 0
    assert "does NOT fit" in res.stdout and "lightest plan that fits:" in res.stdout
    res = run("--model", "meta-llama/Llama-2-7b-hf", "--gpu-memory", "8GiB")
    assert "no checkpointing plan fits" in res.stdout and "LoRA" in res.stdout


def test_unknown_model_is_one_line_naming_the_flag():
    res = run("--model", "nobody/does-not-exist-7b")
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "--model" in err and "config.json" in err and "nobody/does-not-exist-7b" in err
    assert res.stdout == ""


@pytest.mark.parametrize(("args", "needle"), [
    ((), "--model"),
    (("--model", "gpt2", "--gpu", "GTX9999"), "--gpu-memory"),
    (("--model", "gpt2", "--gpu-memory", "lots"), "--gpu-memory"),
    (("--model", "gpt2", "--lora-targets", "c_attn"), "--lora-r"),
    (("--model", "gpt2", "--checkpointing", "sometimes"), "checkpointing"),
    (("--model", "./no/such/dir/config.json"), "--model"),
])
def test_usage_errors_exit_2(args, needle):
    res = run(*args)
    assert res.exit_code == 2
    assert needle in res.stderr


SCRIPT = """
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf", torch_dtype=torch.bfloat16)
model = get_peft_model(model, LoraConfig(r=16, target_modules=["q_proj", "v_proj"]))
args = TrainingArguments(output_dir="o", per_device_train_batch_size=2, gradient_checkpointing=True,
                         optim="paged_adamw_8bit", bf16=True)
tokens = tokenizer(texts, truncation=True, max_length=1024)
Trainer(model=model, args=args).train()
"""


def test_settings_are_read_from_the_script_and_flags_override_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    setup = run_json(str(script))["setup"]
    assert (setup["batch_size"], setup["seq_len"], setup["dtype"], setup["optimizer"]) == (2, 1024, "bf16", "paged-adamw-8bit")
    assert (setup["lora_r"], tuple(setup["lora_targets"]), setup["checkpointing"]) == (16, ("q_proj", "v_proj"), "full")
    assert setup["mixed_precision"] == "no"  # bf16=True over bf16 weights keeps no fp32 master copy
    assert run_json(str(script), "--batch-size", "8")["setup"]["batch_size"] == 8


def test_script_without_a_constant_model_says_which_flag_to_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "train.py"
    script.write_text("import sys\nfrom transformers import AutoModelForCausalLM\nm = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n")
    res = run(str(script))
    assert res.exit_code == 2 and "pass --model" in res.output


def test_a_peft_config_built_elsewhere_is_not_taken_for_a_full_fine_tune(tmp_path, monkeypatch):
    # OpenFedLLM (holdout7): `get_peft_model(model, peft_config)` with the config from a sibling module's `get_config()`
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.py").write_text("peft_config = None\ndef get_config():\n    return peft_config\n")
    script = tmp_path / "train.py"
    script.write_text("from peft import get_peft_model\nfrom transformers import AutoModelForCausalLM, Trainer, TrainingArguments\n"
                      "from config import get_config\npeft_config = get_config()\n"
                      'model = get_peft_model(AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf"), peft_config)\n'
                      'Trainer(model=model, args=TrainingArguments("out", per_device_train_batch_size=16)).train()\n')
    res = run(str(script))
    assert res.exit_code == 2 and "what the step trains is not known: `get_peft_model` (line 5)" in res.output
    assert "pass --lora-r" in res.output
    assert run_json(str(script), "--lora-r", "16")["setup"]["lora_r"] == 16
    from ckpt_doctor.check.lint import lint_text
    from ckpt_doctor.analysis.source import read_source
    from ckpt_doctor.config import Settings

    (finding,) = lint_text(read_source(str(script)), Settings(root=tmp_path, select=["CKPT4"], gpu_memory="80GiB"))
    assert finding.code == "CKPT404" and "what the step trains is not known" in finding.message


TINY = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048, "max_position_embeddings": 256,
        "tie_word_embeddings": False}


def test_local_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    d = run_json("--model", str(tmp_path), "--batch-size", "2")
    assert d["setup"]["seq_len"] == 256  # capped by max_position_embeddings
    assert d["params"]["total"] == 2048 * 128 * 2 + 2 * (128 * 128 * 2 + 128 * 64 * 2 + 3 * 128 * 344 + 2 * 128) + 128
    assert run_json("--model", str(tmp_path / "config.json"))["params"] == d["params"]


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch and transformers (the [verify] extra)")
def test_trace_flag(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    d = run_json("--model", str(tmp_path), "--batch-size", "2", "--seq-len", "64", "--trace")
    t = d["trace"]
    assert t["method"].startswith("FakeTensorMode")
    tensors = d["peak_bytes"] - d["breakdown"]["cublas_workspaces"]  # the trace sees tensors only
    assert abs(tensors - t["peak_bytes"]) <= 0.03 * t["peak_bytes"]
    res = run("--model", str(tmp_path), "--seq-len", "64", "--trace")
    assert res.exit_code == 0 and "trace (exact, live tensors)" in res.stdout
    res = run("--model", str(tmp_path), "--seq-len", "64", "--trace", "--load-in-8bit")
    assert res.exit_code == 2 and "8-bit" in res.stderr  # 4-bit bases are traced since stop 26; LLM.int8 ones are not
    res = run("--model", str(tmp_path), "--seq-len", "64", "--trace", "--load-in-4bit")  # nothing trains
    assert res.exit_code == 2 and "--lora-r" in res.stderr
    res = run("--model", str(tmp_path), "--seq-len", "64", "--trace", "--load-in-4bit", "--lora-r", "8")
    assert res.exit_code == 0 and "trace (exact, live tensors)" in res.stdout, res.output


def test_registered_in_the_cli():
    from ckpt_doctor.cli import main

    res = CliRunner().invoke(main, ["estimate", "--model", "gpt2", "--output-format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["model"]["model_type"] == "gpt2"


def test_model_source_says_which_bundled_model_a_name_rule_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    d = run_json("--model", "unsloth/Meta-Llama-3.1-8B-bnb-4bit", "--load-in-4bit", "--lora-r", "16")
    assert d["model"]["name"] == "meta-llama/Llama-3.1-8B"
    assert "same name as unsloth/Meta-Llama-3.1-8B-bnb-4bit" in d["model"]["source"]
    res = run("--model", "/data/models/Qwen2.5-7B-Instruct", "--gpu-memory", "80GiB")
    assert res.exit_code == 0, res.output
    assert "by its folder name" in res.stdout
    res = run("--model", "Qwen/Qwen2.5-7B-Instruct-GGUF")
    assert res.exit_code == 2 and "GGUF" in res.output


# ---------------------------------------------------------------------------------------------------------
# issue 10: a configuration the installed transformers refuses is refused, in one line; --trace never prints a
# traceback


def test_an_attention_transformers_refuses_is_refused_in_one_line():
    res = CliRunner().invoke(estimate, ["--model", "google/gemma-2-2b", "--attn", "sdpa"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "transformers refuses attn_implementation='sdpa' for gemma2" in lines[0]
    assert "--attn eager" in lines[0] and "Traceback" not in res.output
    res = CliRunner().invoke(estimate, ["--model", "google-t5/t5-small", "--attn", "flash"])
    assert res.exit_code == 2 and "flash_attention_2" in res.output
    # no --attn: what transformers picks, eager for Gemma 2 (it cannot dispatch sdpa), sdpa elsewhere
    assert run_json("--model", "google/gemma-2-2b", "--seq-len", "512")["setup"]["attn"] == "eager"
    assert run_json("--model", "meta-llama/Llama-3.2-1B", "--seq-len", "512")["setup"]["attn"] == "sdpa"


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch and transformers (the [verify] extra)")
def test_trace_refusals_and_failures_are_one_line(tmp_path, monkeypatch):
    from ckpt_doctor.estimate import trace as _trace

    (tmp_path / "config.json").write_text(json.dumps(TINY))
    for args, needle in ((["--model", "google/gemma-2-2b", "--attn", "flash"], "runs flash attention as sdpa"),
                         (["--model", "google/gemma-2-2b", "--attn", "sdpa"], "refuses")):
        res = CliRunner().invoke(estimate, [*args, "--seq-len", "64", "--trace"])
        assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, res.output

    def boom(setup, *, meta, autocast_state=None):
        raise RuntimeError("something deep inside transformers\nsecond line")

    monkeypatch.setattr(_trace, "build_model", boom)
    res = CliRunner().invoke(estimate, ["--model", str(tmp_path / "config.json"), "--seq-len", "64", "--trace"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "failed: RuntimeError: something deep inside transformers" in lines[0]
    assert "(llama)" in lines[0]


def test_a_qwen_vl_model_is_estimated_with_its_images_in_the_sequence():
    """Qwen2.5-VL answers (it was CKPT404): one 448 px image per sample by default, 256 of the sequence's tokens; more
    images cost more, a frozen tower trains fewer parameters, and more visual tokens than the sequence is refused."""
    one = run_json("--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--lora-r", "16", "--checkpointing", "full")
    assert one["model"]["model_type"] == "qwen2_5_vl" and one["params"]["total"] > 8_292_166_656  # + the adapters
    assert one["setup"]["images"] == 1 and one["setup"]["image_size"] == 448
    four = run_json("--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--lora-r", "16", "--checkpointing", "full", "--images", "4")
    assert four["peak_bytes"] > one["peak_bytes"]
    frozen = run_json("--model", "Qwen/Qwen2-VL-7B-Instruct", "--freeze-vision-tower")
    assert frozen["params"]["trainable"] == frozen["params"]["total"] - 675_759_104  # tower + merger
    text = run("--model", "Qwen/Qwen2.5-VL-3B-Instruct").output
    assert "1 image(s) of 448 x 448 px per sample (256 of the 2048 tokens)" in text
    res = run("--model", "Qwen/Qwen2.5-VL-3B-Instruct", "--images", "9")
    assert res.exit_code == 2 and "2304 visual tokens, more than the sequence length 2048" in res.output
