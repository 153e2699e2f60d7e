"""Host memory of the offloading plans (`ckpt_doctor/estimate/host.py`): the `offload` checkpointing plan and
DeepSpeed's offload_optimizer / offload_param, pinned and pageable, per node; read from a script's DeepSpeed config."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ckpt_doctor.estimate.command import estimate
from ckpt_doctor.estimate.host import Offload, activation_offload_bytes, host_memory
from ckpt_doctor.estimate.memory import TrainingSetup
from ckpt_doctor.estimate.registry import resolve

GiB = 1 << 30
P = 6_738_415_616  # Llama-2-7B


def setup(**kw) -> TrainingSetup:
    return TrainingSetup(arch=resolve("meta-llama/Llama-2-7b-hf"), **kw)


def test_activation_offload_is_the_saved_layer_inputs_pageable():
    s = setup(batch_size=2, seq_len=4096)
    assert activation_offload_bytes(s) == 32 * 2 * 4096 * 4096 * 2
    (term,) = host_memory(s, P, P)["offload"].terms
    assert term.pinned is False
    assert set(host_memory(s, P, P)) == {"offload"}  # no DeepSpeed offload asked


def test_zero2_offload_optimizer_split():
    s = setup(gpus=4, zero=2)
    ds = host_memory(s, P, P, Offload(optimizer=True, optimizer_pin=True))["deepspeed"]
    n = -(-P // 4)
    assert ds.processes_per_node == 4
    assert ds.pinned_bytes == 10 * n * 4 and ds.pageable_bytes == 8 * n * 4  # master + grads + 16-bit copy / Adam moments
    unpinned = host_memory(s, P, P, Offload(optimizer=True, optimizer_pin=False))["deepspeed"]
    assert unpinned.pinned_bytes == 0 and unpinned.pageable_bytes == 18 * n * 4


def test_zero3_offload_both_matches_deepspeed_estimator_without_its_buffer():
    s = setup(gpus=8, zero=3)
    ds = host_memory(s, P, P, Offload(optimizer=True, param=True), deepspeed_pins_by_default=True)["deepspeed"]
    total = ds.pinned_bytes + ds.pageable_bytes
    # deepspeed 0.19.5 estimate_zero3_model_states_mem_needs (zero_init, one node): P * 18 * 1.5
    assert abs(total * 1.5 - P * 18 * 1.5) < 8 * 18 * 1.5
    assert ds.pinned_bytes == (4 + 2) * -(-P // 8) * 8  # gradients + 16-bit parameter partitions
    assert any("offload_optimizer.pin_memory is not stated" in n for n in ds.notes)


def test_pin_default_follows_the_deepspeed_release():
    s = setup(gpus=2, zero=2)
    old = host_memory(s, P, P, Offload(optimizer=True), deepspeed_pins_by_default=False)["deepspeed"]
    assert old.pinned_bytes == 0
    new = host_memory(s, P, P, Offload(optimizer=True), deepspeed_pins_by_default=True)["deepspeed"]
    assert new.pinned_bytes > 0


def test_lora_offloads_only_trainable_and_gpus_per_node():
    s = setup(gpus=16, zero=2)
    trainable = 4_194_304
    ds = host_memory(s, P, trainable, Offload(optimizer=True, optimizer_pin=True), gpus_per_node=8)["deepspeed"]
    assert ds.processes_per_node == 8
    assert ds.pinned_bytes + ds.pageable_bytes == 18 * -(-trainable // 16) * 8
    param_stage2 = host_memory(s, P, P, Offload(param=True))["deepspeed"]
    assert param_stage2.terms == [] and any("ZeRO-3 only" in n for n in param_stage2.notes)


def test_cli_flags_and_json():
    res = CliRunner().invoke(estimate, ["--model", "meta-llama/Llama-2-7b-hf", "--gpus", "4", "--zero", "2",
                                       "--offload-optimizer", "cpu", "--no-pin-memory", "--output-format", "json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    host = json.loads(res.stdout)["host_memory"]
    assert set(host) == {"offload", "deepspeed"}
    assert host["deepspeed"]["pinned_bytes_per_node"] == 0 and host["deepspeed"]["pageable_bytes_per_node"] > 100 * GiB
    text = CliRunner().invoke(estimate, ["--model", "meta-llama/Llama-2-7b-hf"], catch_exceptions=False).stdout
    assert "host memory per node" in text and "checkpointing plan `offload`" in text and "DeepSpeed offload" not in text


def test_script_deepspeed_config_is_read(tmp_path: Path):
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {
        "stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": False}, "offload_param": {"device": "cpu", "pin_memory": True}}}))
    (tmp_path / "requirements.txt").write_text("deepspeed==0.19.4\n")
    script = tmp_path / "train.py"
    script.write_text("from transformers import AutoModelForCausalLM, TrainingArguments\n"
                      "model = AutoModelForCausalLM.from_pretrained('meta-llama/Llama-2-7b-hf')\n"
                      "args = TrainingArguments('out', deepspeed='ds.json', bf16=True)\n")
    res = CliRunner().invoke(estimate, [str(script), "--gpus", "8", "--output-format", "json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ds = json.loads(res.stdout)["host_memory"]["deepspeed"]
    pinned = {t["name"]: t["pinned"] for t in ds["terms"]}
    assert pinned["16-bit parameter partitions (ZeRO-3 offload_param)"] is True
    assert pinned["fp32 gradients (ZeRO-3 offload_optimizer)"] is False
    assert any("ds.json" in n for n in ds["notes"])
    nvme = tmp_path / "ds.json"
    nvme.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme"}}}))
    res = CliRunner().invoke(estimate, [str(script), "--gpus", "8", "--output-format", "json"], catch_exceptions=False)
    assert "deepspeed" not in json.loads(res.stdout)["host_memory"]


def test_unstated_pin_follows_the_projects_deepspeed_pin(tmp_path: Path):
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    script = tmp_path / "train.py"
    script.write_text("from transformers import AutoModelForCausalLM, TrainingArguments\n"
                      "model = AutoModelForCausalLM.from_pretrained('meta-llama/Llama-2-7b-hf')\n"
                      "args = TrainingArguments('out', deepspeed='ds.json', bf16=True)\n")
    for pin, pinned in (("0.19.4", False), ("0.19.5", True)):
        (tmp_path / "requirements.txt").write_text(f"deepspeed=={pin}\n")
        res = CliRunner().invoke(estimate, [str(script), "--gpus", "2", "--output-format", "json"], catch_exceptions=False)
        ds = json.loads(res.stdout)["host_memory"]["deepspeed"]
        assert (ds["pinned_bytes_per_node"] > 0) is pinned, pin
