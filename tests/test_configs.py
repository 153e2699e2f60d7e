"""Framework configs and launch lines as inputs of `check` and `estimate`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ckpt_doctor.analysis.config_document import ConfigError, read_document
from ckpt_doctor.analysis.run_config import read_run
from ckpt_doctor.analysis.source import read_source
from ckpt_doctor.check.fix import apply_fixes
from ckpt_doctor.check.lint import check_source
from ckpt_doctor.config import Settings


def write(folder: Path, files: dict[str, str]) -> None:
    (folder / ".git").mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def check(path: Path, **settings):
    result = check_source(read_source(path), Settings(root=path.parent, **settings))
    assert result.error is None, result.error
    return result.findings


def run_of(text: str, name: str = "config.yaml"):
    return read_run(read_document(textwrap.dedent(text).lstrip("\n"), name))


# -- reading --------------------------------------------------------------------------------------------------


def test_every_key_keeps_its_line_in_yaml_and_json():
    yaml = read_document("a: 1\nfsdp_config:\n  # comment\n  activation_checkpointing: true\nlist: [1, 2]\n", "x.yaml")
    assert [(e.key, e.line, e.column) for e in yaml.entries.values()] == [
        ("a", 1, 1), ("fsdp_config", 2, 1), ("fsdp_config.activation_checkpointing", 4, 3), ("list", 5, 1)]
    assert yaml.value("fsdp_config.activation_checkpointing") is True and yaml.value("list") == [1, 2]
    data = json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"}, indent=2)
    document = read_document(data, "ds.json")
    assert (document.get("zero_optimization.stage").line, document.value("zero_optimization.stage")) == (3, 3)
    assert document.get("train_micro_batch_size_per_gpu").line == 5


@pytest.mark.parametrize("text, name", [("a: [1\n", "x.yaml"), ("{'a': 1}", "x.json"), ("- a\n- b\n", "x.yaml")])
def test_a_file_that_is_no_mapping_is_a_one_line_error(text, name):
    with pytest.raises(ConfigError) as raised:
        read_document(text, name)
    assert "\n" not in str(raised.value)


def test_a_broken_yaml_file_is_reported_by_check_naming_it(tmp_path):
    (tmp_path / "bad.yaml").write_text("stage: sft\nlora_target: [all\n", encoding="utf-8")
    result = check_source(read_source(tmp_path / "bad.yaml"), Settings(root=tmp_path))
    assert result.error.startswith(f"{tmp_path / 'bad.yaml'}: not valid YAML") and "\n" not in result.error


@pytest.mark.parametrize("text, framework", [
    ("stage: sft\nfinetuning_type: lora\n", "llamafactory"),
    ("base_model: x\nmicro_batch_size: 2\n", "axolotl"),
    ("enable_activation_checkpointing: true\nbatch_size: 2\n", "torchtune"),
    ("tuner_type: lora\nmodel: x\n", "swift"),
    ("model_name_or_path: x\nuse_peft: true\nmax_length: 512\n", "trl"),
    ("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\n", "accelerate"),
])
def test_the_framework_is_recognised_from_its_keys(text, framework):
    assert run_of(text).framework.id == framework


def test_any_other_yaml_is_skipped_silently(tmp_path):
    write(tmp_path, {".github/workflows/ci.yaml": "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n",
                     "package.json": '{"name": "x", "scripts": {"build": "tsc"}}'})
    assert check(tmp_path / ".github/workflows/ci.yaml") == [] and check(tmp_path / "package.json") == []


# -- what each framework makes of its keys ----------------------------------------------------------------------


def test_llamafactory_checkpoints_by_default_and_reentrant():
    run = run_of("stage: sft\nfinetuning_type: lora\n")
    assert (run.checkpointing.value, run.reentrant.value, run.lora.value) == (True, True, True)
    assert "[L3]" in run.checkpointing.note and "[L4]" in run.reentrant.note
    off = run_of("stage: sft\ndisable_gradient_checkpointing: true\n")
    assert off.checkpointing.value is False and off.checkpointing.line == 2


def test_defaults_of_the_other_frameworks():
    assert run_of("tuner_type: lora\nmodel: x\n").checkpointing.value is True  # ms-swift [S3]
    assert run_of("base_model: x\nmicro_batch_size: 2\n").checkpointing.value is False  # axolotl [X2]
    axolotl = run_of("base_model: x\ngradient_checkpointing: true\n")
    assert axolotl.reentrant.value is True and "[X3]" in axolotl.reentrant.note
    tune = run_of("enable_activation_checkpointing: true\nbatch_size: 2\n")
    assert (tune.checkpointing.value, tune.reentrant.value) == (True, False)
    trl = run_of("model_name_or_path: x\nuse_peft: true\nmax_length: 512\n")
    assert (trl.checkpointing.value, trl.reentrant.value, trl.seq_len.value) == (True, False, 512)


# -- rules ------------------------------------------------------------------------------------------------------


def test_a_renamed_key_is_flagged_and_renamed_in_place_keeping_comments(tmp_path):
    write(tmp_path, {"sft.yaml": """
        ### method
        stage: sft
        finetuning_type: lora
        "lora_r": 16   # the rank
        per_device_train_batch_size: 2
        """})
    (finding,) = check(tmp_path / "sft.yaml", select=["CKPT501"])
    assert (finding.code, finding.span.start.line) == ("CKPT501", 4) and "`lora_rank`" in finding.message
    fixed = apply_fixes((tmp_path / "sft.yaml").read_text(), [finding.fix])
    assert fixed.splitlines()[3] == '"lora_rank": 16   # the rank' and fixed.splitlines()[0] == "### method"


def test_an_empty_key_is_reported_only_where_the_framework_refuses_unknown_keys(tmp_path):
    write(tmp_path, {"axolotl.yml": """
        base_model: NousResearch/Meta-Llama-3-8B
        adapter: lora
        micro_batch_size: 2
        gradient_checkpointing: true
        debug:
        fsdp:
        fsdp_config:
        """, "set.yml": """
        base_model: NousResearch/Meta-Llama-3-8B
        adapter: lora
        micro_batch_size: 2
        gradient_checkpointing: true
        debug: true
        fsdp:
          - full_shard
        """, "llamafactory.yaml": """
        stage: sft
        finetuning_type: lora
        lora_r:
        per_device_train_batch_size: 2
        """})
    assert check(tmp_path / "axolotl.yml", select=["CKPT501"]) == []
    assert [f.span.start.line for f in check(tmp_path / "set.yml", select=["CKPT501"])] == [5, 6]
    assert [f.span.start.line for f in check(tmp_path / "llamafactory.yaml", select=["CKPT501"])] == [3]


def test_contradicting_llamafactory_keys(tmp_path):
    write(tmp_path, {"sft.yaml": "stage: sft\ndisable_gradient_checkpointing: true\ngradient_checkpointing: true\n"})
    (finding,) = check(tmp_path / "sft.yaml", select=["CKPT502"])
    assert finding.span.start.line == 3 and "[L8]" in finding.message


def test_deepspeed_batch_mismatch_names_both_files(tmp_path):
    write(tmp_path, {"sft.yaml": "stage: sft\nper_device_train_batch_size: 4\ndeepspeed: ds/z2.json\n",
                     "ds/z2.json": '{"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": "auto"}'})
    (finding,) = check(tmp_path / "sft.yaml", select=["CKPT503"])
    assert finding.span.start.line == 3 and "`train_micro_batch_size_per_gpu: 2`" in finding.message and "4 (line 2)" in finding.message
    (tmp_path / "ds/z2.json").write_text('{"train_micro_batch_size_per_gpu": "auto"}', encoding="utf-8")
    assert check(tmp_path / "sft.yaml", select=["CKPT503"]) == []


@pytest.mark.parametrize("text, line", [
    ("base_model: x\nadapter: lora\nactivation_offloading: true\n", 3),
    ("batch_size: 2\nenable_activation_checkpointing: false\nenable_activation_offloading: true\n", 3),
])
def test_offloading_without_checkpointing(tmp_path, text, line):
    write(tmp_path, {"c.yaml": text})
    assert [(f.code, f.span.start.line) for f in check(tmp_path / "c.yaml", select=["CKPT504"])] == [("CKPT504", line)]


def test_zero3_lora_non_reentrant_and_its_reentrant_twin(tmp_path):
    write(tmp_path, {"sft.yaml": "stage: sft\nfinetuning_type: lora\nuse_reentrant_gc: false\ndeepspeed: z3.json\n",
                     "z3.json": '{"zero_optimization": {"stage": 3}}'})
    (finding,) = check(tmp_path / "sft.yaml", select=["CKPT304"])
    assert finding.span.start.line == 3 and "z3.json" in finding.message
    (tmp_path / "sft.yaml").write_text("stage: sft\nfinetuning_type: lora\ndeepspeed: z3.json\n", encoding="utf-8")
    assert check(tmp_path / "sft.yaml", select=["CKPT304"]) == []  # LLaMA-Factory's default is reentrant [L4]


def test_double_checkpointing_in_an_axolotl_fsdp_config(tmp_path):
    write(tmp_path, {"c.yml": "base_model: x\ngradient_checkpointing: true\nfsdp_config:\n  activation_checkpointing: true\n"})
    assert [f.span.start.line for f in check(tmp_path / "c.yml", select=["CKPT302"])] == [2]


def test_noqa_in_a_yaml_file(tmp_path):
    write(tmp_path, {"sft.yaml": "stage: sft\nlora_r: 16  # noqa: CKPT501\n"})
    assert check(tmp_path / "sft.yaml", select=["CKPT501"]) == []


# -- launch lines -----------------------------------------------------------------------------------------------


def test_a_swift_launch_line_is_a_config_whose_keys_are_its_options(tmp_path):
    write(tmp_path, {"train.sh": """
        NPROC_PER_NODE=4 \\
        swift sft \\
            --model Qwen/Qwen2.5-7B-Instruct \\
            --train_type lora \\
            --deepspeed zero3
        """})
    (finding,) = check(tmp_path / "train.sh", select=["CKPT501"])
    assert finding.span.start.line == 4
    fixed = apply_fixes((tmp_path / "train.sh").read_text(), [finding.fix])
    assert "    --tuner_type lora \\" in fixed.splitlines()


@pytest.mark.parametrize("pin, reported", [("ms-swift==3.5.0", []), ("ms-swift>=4.2", [3, 4, 5]), (None, [3, 4, 5])])
def test_a_swift_key_is_judged_on_the_release_the_project_pins(tmp_path, pin, reported):
    write(tmp_path, {"train.sh": """
        swift rlhf \\
            --rlhf_type grpo \\
            --num_infer_workers 2 \\
            --train_type lora \\
            --tensor_parallel_size 2
        """, **({"requirements.txt": pin + "\n"} if pin else {})})
    lines = sorted(f.span.start.line for f in check(tmp_path / "train.sh", select=["CKPT501"]))
    assert lines == reported  # 3.x reads the GRPO options and `train_type`; 4.x none of them


def test_a_llamafactory_launch_reads_the_config_it_names_with_overrides(tmp_path):
    write(tmp_path, {"sft.yaml": "stage: sft\nfinetuning_type: lora\nper_device_train_batch_size: 2\n",
                     "run.sh": "FORCE_TORCHRUN=1 llamafactory-cli train sft.yaml per_device_train_batch_size=8 disable_gradient_checkpointing=true\n"})
    from ckpt_doctor.analysis import analyze_launcher

    (analysis,) = analyze_launcher(read_source(tmp_path / "run.sh"), Settings(root=tmp_path))
    assert analysis.run.batch_size.value == 8 and analysis.run.checkpointing.value is False


def test_a_shell_script_of_no_framework_is_skipped(tmp_path):
    write(tmp_path, {"setup.sh": "set -e\npip install -r requirements.txt\npython train.py --lr 1e-4\n"})
    assert check(tmp_path / "setup.sh") == []


# -- estimate: a config and the script it stands for agree --------------------------------------------------------

CONFIG = """
model_name_or_path: meta-llama/Llama-2-7b-hf
stage: sft
finetuning_type: lora
lora_rank: 16
cutoff_len: 1024
per_device_train_batch_size: 2
bf16: true
disable_gradient_checkpointing: {off}
"""

SCRIPT = """
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf", torch_dtype=torch.bfloat16)
model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear"))
args = TrainingArguments(output_dir="out", per_device_train_batch_size=2, bf16=True, gradient_checkpointing={on},
                         gradient_checkpointing_kwargs={{"use_reentrant": False}})
Trainer(model=model, args=args, train_dataset=None, max_seq_length=1024).train()
"""


def _peak(path: Path, seq_len: int | None = None) -> float:
    command = [sys.executable, "-m", "ckpt_doctor", "estimate", str(path), "--output-format", "json", "--gpu-memory", "80GiB"]
    if seq_len:
        command += ["--seq-len", str(seq_len)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=path.parent, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["peak_bytes"]


@pytest.mark.parametrize("checkpointing", [True, False])
def test_estimate_of_a_config_agrees_with_the_equivalent_script(tmp_path, checkpointing):
    write(tmp_path, {"sft.yaml": CONFIG.format(off=str(not checkpointing).lower()),
                     "train.py": SCRIPT.format(on=checkpointing)})
    config, script = _peak(tmp_path / "sft.yaml"), _peak(tmp_path / "train.py", seq_len=1024)
    assert abs(config - script) <= 0.01 * script


def test_files_of_other_tools_are_skipped_even_when_broken_or_big(tmp_path):
    write(tmp_path, {"chart/templates/deploy.yaml": "metadata:\n  name: {{ .Values.name }}\n  labels: {{- include \"x\" . }}\n",
                     "data.json": "[" + ",".join(["1"] * 600_000) + "]"})
    from ckpt_doctor.check.lint import check_file

    for name in ("chart/templates/deploy.yaml", "data.json"):
        result = check_file(str(tmp_path / name), Settings(root=tmp_path))
        assert (result.error, result.findings) == (None, [])


def test_a_launcher_without_a_suffix_is_read_by_its_shebang(tmp_path):
    write(tmp_path, {"train": "#!/usr/bin/env bash\nswift sft --model Qwen/Qwen2.5-7B-Instruct --train_type lora\n"})
    assert [f.code for f in check(tmp_path / "train", select=["CKPT501"])] == ["CKPT501"]


def test_a_key_written_twice_reads_as_pyyaml_does_and_is_flagged(tmp_path):
    write(tmp_path, {"c.yml": "base_model: x\nsequence_len: 1024\nmicro_batch_size: 2\nsequence_len: 4096\n"})
    assert run_of((tmp_path / "c.yml").read_text(), "c.yml").seq_len.value == 4096  # the last one wins
    (finding,) = check(tmp_path / "c.yml", select=["CKPT502"])
    assert finding.span.start.line == 4 and "lines 2, 4" in finding.message


def test_the_files_a_launch_line_names_join_the_cache_key(tmp_path):
    write(tmp_path, {"sft.yaml": "stage: sft\nfinetuning_type: lora\ndeepspeed: z3.json\n", "z3.json": '{"zero_optimization": {"stage": 3}}',
                     "fsdp.yaml": "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\n",
                     "run.sh": "accelerate launch --config_file fsdp.yaml src/train.py sft.yaml\n"})
    result = check_source(read_source(tmp_path / "run.sh"), Settings(root=tmp_path))
    assert {Path(p).name for p in result.dependencies} >= {"sft.yaml", "z3.json", "fsdp.yaml"}


def test_a_fused_loss_makes_the_estimate_an_upper_bound_and_an_unsloth_model_is_not_estimated(tmp_path):
    write(tmp_path, {"sft.yaml": """
        model_name_or_path: Qwen/Qwen2.5-7B
        stage: sft
        finetuning_type: full
        per_device_train_batch_size: 8
        cutoff_len: 8192
        enable_liger_kernel: true
        """, "train.py": """
        from unsloth import FastLanguageModel
        from trl import SFTConfig, SFTTrainer

        model, tokenizer = FastLanguageModel.from_pretrained("unsloth/llama-3-8b", max_seq_length=8192)
        SFTTrainer(model=model, args=SFTConfig(per_device_train_batch_size=8)).train()
        """})
    assert check(tmp_path / "sft.yaml", select=["CKPT4"], gpu_memory="24GiB") == []  # an upper bound: no verdict
    (note,) = check(tmp_path / "train.py", select=["CKPT4"], gpu_memory="24GiB")
    assert note.code == "CKPT404" and "loaded by Unsloth" in note.message
    write(tmp_path, {"sft.yaml": (tmp_path / "sft.yaml").read_text().replace("enable_liger_kernel: true", "")})
    assert "CKPT402" in [f.code for f in check(tmp_path / "sft.yaml", select=["CKPT4"], gpu_memory="24GiB")]


def test_a_swift_line_with_fewer_processes_than_gpus_is_not_estimated_per_gpu(tmp_path):
    write(tmp_path, {"train.sh": """
        CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \\
        NPROC_PER_NODE=4 \\
        swift sft --model Qwen/Qwen2.5-7B --tuner_type full --per_device_train_batch_size 16 --max_length 4096
        """})
    (note,) = check(tmp_path / "train.sh", select=["CKPT4"], gpu_memory="80GiB")
    assert note.code == "CKPT404" and "spreads its model over 2 GPUs" in note.message


@pytest.mark.parametrize("text, fused", [
    ("model_name_or_path: x\nuse_peft: true\ndataset_name: d\nloss_type: sigmoid\n", None),  # DPO's loss, not a kernel
    ("model_name_or_path: x\nuse_peft: true\ndataset_name: d\nloss_type: chunked_nll\n", "loss_type"),
    ("base_model: x\nmicro_batch_size: 2\ncut_cross_entropy: true\n", None),  # read only through its plugin [X1]
    ("base_model: x\nmicro_batch_size: 2\nplugins:\n  - axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin\n"
     "cut_cross_entropy: true\n", "cut_cross_entropy"),
])
def test_a_fused_loss_is_a_switch_that_is_on_or_a_chunked_loss_by_name(text, fused):
    found = run_of(text).fused_loss
    assert (found.note if found else None) == fused


def test_framework_qlora_says_whether_the_rest_is_cast_to_fp32():
    """axolotl casts norms and embeddings back to torch_dtype after prepare_model_for_kbit_training (v0.4.0 .. v0.18.0
    loaders/model.py); LLaMA-Factory never calls it and upcasts the norms only with `upcast_layernorm`."""
    axolotl = run_of("base_model: x\nadapter: qlora\nload_in_4bit: true\n").settings()
    assert axolotl.load_in_4bit and axolotl.kbit_upcast.value is False and axolotl.as_flags()["kbit_upcast"] is False
    factory = run_of("stage: sft\nfinetuning_type: lora\nquantization_bit: 4\n").settings()
    assert factory.load_in_4bit and factory.kbit_upcast.value is False
    upcast = run_of("stage: sft\nfinetuning_type: lora\nquantization_bit: 4\nupcast_layernorm: true\n").settings()
    assert upcast.kbit_upcast.value is True and upcast.kbit_upcast.line == 4


def test_framework_configs_under_deepspeed_16bit_keep_an_fp32_master_copy(tmp_path):
    """`bf16: true` with a DeepSpeed JSON whose bf16 is "auto": the Trainer turns it on, so the step runs DeepSpeed's
    16-bit mode (bf16 weights, fp32 master copy partitioned by ZeRO), not pure bf16."""
    write(tmp_path, {"ds.json": '{"bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 3}}',
                     "config.yaml": "stage: sft\nfinetuning_type: full\nbf16: true\ndeepspeed: ds.json\n"})
    settings = read_run(read_document((tmp_path / "config.yaml").read_text(), str(tmp_path / "config.yaml"))).settings()
    flags = settings.as_flags()
    assert (flags["dtype"], flags["mixed_precision"], flags["master_weights"], flags["zero"]) == ("bf16", "no", "fp32", 3)
    assert "DeepSpeed bf16 mode" in settings.describe()
    plain = run_of("stage: sft\nfinetuning_type: full\nbf16: true\n").settings().as_flags()
    assert plain["master_weights"] == "none"  # no DeepSpeed: pure bf16
