"""`ckpt-doctor estimate SCRIPT` shows the phases of the job beyond the training step that the script sets up: an
evaluation that keeps every batch's logits, and vLLM colocated in the training processes."""

from __future__ import annotations

import json
import textwrap

from click.testing import CliRunner

from ckpt_doctor.estimate.command import estimate

GiB = 1 << 30
LLAMA_VOCAB = 128256  # meta-llama/Llama-3.2-1B, bundled

EVAL = """
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B", torch_dtype="bfloat16")
args = TrainingArguments("out", eval_strategy="steps", bf16=True, per_device_train_batch_size=2{extra})
trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test, compute_metrics=metrics{kwargs})
trainer.train()
"""
GRPO = """
from trl import GRPOConfig, GRPOTrainer

args = GRPOConfig(output_dir="out", use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization={u}, bf16=True)
trainer = GRPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", reward_funcs=reward, args=args, train_dataset=data)
trainer.train()
"""


def job(tmp_path, code: str, *flags: str) -> tuple[list[dict], dict]:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    res = CliRunner().invoke(estimate, [str(script), "--gpu-memory", "80GiB", "--output-format", "json", *flags],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    return out["job"], out


def test_an_evaluation_that_keeps_the_logits_is_a_phase(tmp_path):
    (phase,), out = job(tmp_path, EVAL.format(extra="", kwargs=""), "--seq-len", "1024")
    assert phase["name"] == "evaluation" and phase["fits"] is None
    per_batch = 8 * 1024 * LLAMA_VOCAB * 2  # the default eval batch of 8, bf16 logits
    breakdown = out["breakdown"]
    resident = sum(breakdown[k] for k in ("weights", "master_weights", "optimizer_state", "cublas_workspaces"))
    assert phase["bytes"] == resident + out["cuda_context_bytes"] + per_batch
    batches = (80 * GiB - phase["bytes"]) // (2 * per_batch)
    assert f"after about {batches} evaluation batches ({batches * 8} samples)" in phase["what"]
    assert "the TrainingArguments default" in phase["what"]


def test_the_eval_batch_the_script_gives_is_used(tmp_path):
    (phase,), _ = job(tmp_path, EVAL.format(extra=", per_device_eval_batch_size=2", kwargs=""), "--seq-len", "1024")
    assert "each batch adds 0.49 GiB (2 x 1024 tokens" in phase["what"]


def test_no_evaluation_phase_when_the_logits_are_reduced_or_moved(tmp_path):
    for extra, kwargs in (("", ", preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1)"),
                          (", eval_accumulation_steps=4", ""), (", prediction_loss_only=True", "")):
        phases, _ = job(tmp_path, EVAL.format(extra=extra, kwargs=kwargs))
        assert phases == [], (extra, kwargs)


def test_vllm_colocated_is_a_phase_judged_against_the_card(tmp_path):
    (phase,), out = job(tmp_path, GRPO.format(u=0.6))
    assert phase["name"] == "vLLM colocated"
    assert phase["bytes"] == out["peak_bytes_nvidia_smi"] + int(0.6 * 80 * GiB)
    assert phase["fits"] is (phase["bytes"] <= 80 * GiB)
    assert "`vllm_gpu_memory_utilization` at line 4" in phase["what"]
    (small,), _ = job(tmp_path, GRPO.format(u=0.05))
    assert small["bytes"] < phase["bytes"] and small["fits"] is True


def test_a_trl_config_colocating_vllm_is_a_phase(tmp_path):
    config = tmp_path / "grpo.yaml"
    config.write_text("model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct\nuse_vllm: true\nvllm_mode: colocate\n"
                      "vllm_gpu_memory_utilization: 0.5\nper_device_train_batch_size: 4\nbf16: true\n", encoding="utf-8")
    launcher = tmp_path / "run.sh"
    launcher.write_text("trl grpo --config grpo.yaml\n", encoding="utf-8")
    res = CliRunner().invoke(estimate, [str(launcher), "--gpu-memory", "80GiB", "--output-format", "json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (phase,) = json.loads(res.stdout)["job"]
    assert phase["name"] == "vLLM colocated" and phase["bytes"] > int(0.5 * 80 * GiB)


def test_text_output_names_the_phases(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(GRPO.format(u=0.6)), encoding="utf-8")
    res = CliRunner().invoke(estimate, [str(script), "--gpu-memory", "80GiB"], catch_exceptions=False)
    assert "the job beyond the step:" in res.stdout and "vLLM colocated: vLLM runs in the training processes" in res.stdout
