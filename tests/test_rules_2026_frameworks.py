"""Framework configs (issue 12): CKPT601 on axolotl, LLaMA-Factory, ms-swift and TRL configs, whose "all linear"
keys the framework resolves itself into module names that never include transformers 5's fused MoE experts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckpt_doctor.analysis.source import read_source
from ckpt_doctor.check.lint import check_source
from ckpt_doctor.config import Settings

NEWEST = {"torch": "2.13", "transformers": "5.24", "peft": "0.21", "trl": "1.16"}
OLD_PEFT = {**NEWEST, "peft": "0.18"}


def check(tmp_path: Path, name: str, text: str, targets: dict | None = None, select: str = "CKPT601",
          files: dict[str, str] | None = None) -> list:
    (tmp_path / ".git").mkdir(exist_ok=True)
    for other, content in {name: text, **(files or {})}.items():
        (tmp_path / other).write_text(content, encoding="utf-8")
    settings = Settings(root=tmp_path, select=[select], target_versions=NEWEST if targets is None else targets)
    return [f for f in check_source(read_source(tmp_path / name), settings).findings if f.code == select]


# -- CKPT601 on configs ----------------------------------------------------------------------------

_AXOLOTL = """base_model: Qwen/Qwen3-30B-A3B
adapter: lora
lora_r: 16
lora_alpha: 32
lora_dropout: 0.0
lora_target_linear: true
sequence_len: 2048
micro_batch_size: 1
datasets:
  - path: tatsu-lab/alpaca
    type: alpaca
output_dir: ./out
"""


def test_axolotl_target_linear_on_a_fused_moe_is_reported_on_every_peft(tmp_path):
    for targets in (NEWEST, OLD_PEFT, {"torch": "2.13", "transformers": "5.24"}):
        (found,) = check(tmp_path, "qwen3.yaml", _AXOLOTL, targets)
        assert found.span.start.line == 6 and "find_all_linear_names" in found.message
        assert "lora_target_parameters: [\"mlp.experts.gate_up_proj\", \"mlp.experts.down_proj\"]" in found.message
        assert "on every peft release" in found.message


def test_axolotl_clean_look_alikes(tmp_path):
    given = _AXOLOTL + "lora_target_parameters:\n  - mlp.experts.gate_up_proj\n  - mlp.experts.down_proj\n"
    assert check(tmp_path, "a.yaml", given) == []
    dense = _AXOLOTL.replace("Qwen/Qwen3-30B-A3B", "Qwen/Qwen2.5-7B-Instruct")
    assert check(tmp_path, "b.yaml", dense) == []
    unknown = _AXOLOTL.replace("Qwen/Qwen3-30B-A3B", "my-org/my-private-moe")
    assert check(tmp_path, "c.yaml", unknown) == []  # an id the registry cannot describe: not judged
    attention = _AXOLOTL.replace("lora_target_linear: true", "lora_target_modules: [q_proj, k_proj, v_proj, o_proj]")
    assert check(tmp_path, "d.yaml", attention) == []
    full = _AXOLOTL.replace("adapter: lora\n", "")
    assert check(tmp_path, "e.yaml", full) == []  # full fine-tuning trains the experts


def test_axolotl_expert_names_follow_the_declared_peft(tmp_path):
    named = _AXOLOTL.replace("lora_target_linear: true", "lora_target_modules: [q_proj, v_proj, gate_proj, up_proj, down_proj]")
    (found,) = check(tmp_path, "a.yaml", named, OLD_PEFT)
    assert "`gate_proj`, `up_proj`, `down_proj`" in found.message and "peft 0.18" in found.message
    assert check(tmp_path, "a.yaml", named) == []  # peft 0.19+ maps the names to the fused parameters
    both = _AXOLOTL + "lora_target_modules: [gate_proj, up_proj, down_proj]\n"
    assert check(tmp_path, "b.yaml", both) == []  # the named experts are added to the found names, then converted
    assert len(check(tmp_path, "b.yaml", both, OLD_PEFT)) == 1


@pytest.mark.parametrize("pin, reported", [("axolotl==0.13.2", 0), ("axolotl==0.18.0", 1)])
def test_axolotl_releases_that_pin_transformers_4_are_clean(tmp_path, pin, reported):
    (tmp_path / "requirements.txt").write_text(pin + "\n")
    assert len(check(tmp_path, "a.yaml", _AXOLOTL, targets={"torch": "2.13"})) == reported


def test_transformers_4_is_clean(tmp_path):
    assert check(tmp_path, "a.yaml", _AXOLOTL, {**NEWEST, "transformers": "4.57"}) == []


_LLAMAFACTORY = """model_name_or_path: Qwen/Qwen3-30B-A3B
stage: sft
do_train: true
finetuning_type: lora
dataset: alpaca_en_demo
template: qwen3
cutoff_len: 2048
output_dir: saves/qwen3-moe/lora/sft
per_device_train_batch_size: 1
"""


def test_llamafactory_default_target_all_is_reported_at_the_model(tmp_path):
    (found,) = check(tmp_path, "lf.yaml", _LLAMAFACTORY)
    assert found.span.start.line == 1 and "LLaMA-Factory default lora_target: all" in found.message
    assert "find_all_linear_modules" in found.message and "no key for peft's `target_parameters`" in found.message
    (written,) = check(tmp_path, "lf.yaml", _LLAMAFACTORY + "lora_target: all\n")
    assert written.span.start.line == 10


def test_llamafactory_clean_look_alikes(tmp_path):
    assert check(tmp_path, "a.yaml", _LLAMAFACTORY.replace("finetuning_type: lora", "finetuning_type: full")) == []
    assert check(tmp_path, "b.yaml", _LLAMAFACTORY + "lora_target: q_proj,v_proj\n") == []
    named = _LLAMAFACTORY + "lora_target: q_proj,gate_proj,up_proj,down_proj\n"
    assert check(tmp_path, "c.yaml", named) == []  # peft 0.21 converts the names
    assert len(check(tmp_path, "c.yaml", named, OLD_PEFT)) == 1  # LLaMA-Factory 0.9.5 pins peft <= 0.18.1


_SWIFT = """model: Qwen/Qwen3-30B-A3B
tuner_type: lora
dataset:
  - AI-ModelScope/alpaca-gpt4-data-en
torch_dtype: bfloat16
max_length: 2048
output_dir: output
"""


def test_swift_default_all_linear_is_reported(tmp_path):
    (found,) = check(tmp_path, "swift.yaml", _SWIFT)
    assert found.span.start.line == 1 and "find_all_linears" in found.message and "target_parameters: [" in found.message
    (written,) = check(tmp_path, "swift.yaml", _SWIFT + "target_modules: [all-linear]\n")
    assert written.span.start.line == 8


def test_swift_command_line(tmp_path):
    line = ("swift sft \\\n    --model Qwen/Qwen3-30B-A3B \\\n    --tuner_type lora \\\n    --target_modules all-linear \\\n"
            "    --dataset AI-ModelScope/alpaca-gpt4-data-en \\\n    --output_dir output\n")
    (found,) = check(tmp_path, "train.sh", line)
    assert found.span.start.line == 4
    given = line.replace("--output_dir", "--target_parameters mlp.experts.gate_up_proj mlp.experts.down_proj \\\n    --output_dir")
    assert check(tmp_path, "train.sh", given) == []


def test_swift_clean_look_alikes(tmp_path):
    assert check(tmp_path, "a.yaml", _SWIFT + "target_parameters: [mlp.experts.gate_up_proj, mlp.experts.down_proj]\n") == []
    assert check(tmp_path, "b.yaml", _SWIFT + "target_regex: '.*(q_proj|k_proj)'\n") == []
    assert check(tmp_path, "c.yaml", _SWIFT.replace("tuner_type: lora", "tuner_type: full")) == []
    assert check(tmp_path, "d.yaml", _SWIFT.replace("Qwen/Qwen3-30B-A3B", "Qwen/Qwen2.5-7B-Instruct")) == []


_TRL = """model_name_or_path: Qwen/Qwen3-30B-A3B
dataset_name: trl-lib/Capybara
use_peft: true
lora_target_modules: all-linear
per_device_train_batch_size: 1
max_length: 2048
output_dir: out
"""


def test_trl_cli_config_follows_peft_as_a_script_does(tmp_path):
    files = {"train.sh": "trl sft --config trl.yaml\n"}
    (found,) = check(tmp_path, "train.sh", "trl sft --config trl.yaml\n", OLD_PEFT, files={"trl.yaml": _TRL})
    assert "lora_target_parameters: [" in found.message and "peft 0.18" in found.message
    assert check(tmp_path, "train.sh", "trl sft --config trl.yaml\n", files={"trl.yaml": _TRL}) == []  # peft 0.21
    assert check(tmp_path, "trl.yaml", _TRL, OLD_PEFT, files=files) == []  # no `trl` line reads it: the script's own LoraConfig


# -- CKPT107 on configs ----------------------------------------------------------------------------

_COMPILING = """base_model: Qwen/Qwen3-8B
adapter: lora
lora_r: 16
lora_target_linear: true
sequence_len: 2048
micro_batch_size: 1
torch_compile: true
torch_compile_mode: {mode}
gradient_checkpointing: {gc}
datasets:
  - path: tatsu-lab/alpaca
    type: alpaca
output_dir: ./out
"""


@pytest.mark.parametrize(("mode", "gc", "expected"), [
    ("max-autotune", "true", [8]), ("reduce-overhead", "true", [8]),
    ("default", "true", []), ("max-autotune", "false", []),
])
def test_a_config_compiling_with_cuda_graphs_over_checkpointed_layers(tmp_path, mode, gc, expected):
    found = check(tmp_path, "qwen3.yaml", _COMPILING.format(mode=mode, gc=gc), select="CKPT107")
    assert [f.span.start.line for f in found] == expected
    assert all("`torch_compile_mode: default`" in f.message for f in found)  # the only cuda-graph-free mode axolotl accepts


def test_a_compile_mode_without_torch_compile_compiles_nothing(tmp_path):
    text = _COMPILING.format(mode="max-autotune", gc="true").replace("torch_compile: true\n", "")
    assert check(tmp_path, "qwen3.yaml", text, select="CKPT107") == []
