"""Launchers: the shell scripts and Makefiles that run a training script give it its options."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ckpt_doctor.analysis import analyze
from ckpt_doctor.analysis.config_files import ProjectFiles
from ckpt_doctor.analysis.launchers import UNKNOWN_VALUE, commands, find_launches
from ckpt_doctor.analysis.source import read_source
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.config import Settings


def write(root: Path, files: dict[str, str]) -> None:
    (root / ".git").mkdir(exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def launches(root: Path, script: str = "train.py"):
    path = str(root / script)
    return find_launches(path, ProjectFiles(path), root)


def check(root: Path, script: str = "train.py", **settings) -> list:
    path = str(root / script)
    return lint_text(read_source(path), Settings(root=root, **settings))


def findings_of(code: str, root: Path, script: str = "train.py") -> list:
    """The findings of one rule on `script`."""
    return [f for f in check(root, script, select=[code]) if f.code == code]


# -- reading shell scripts ------------------------------------------------------------------------------------


def test_commands_join_continuations_and_expand_the_files_own_variables():
    text = """
    #!/bin/bash
    MODEL=meta-llama/Llama-2-7b-hf   # the base
    export BS=4
    OUT=${OUT_DIR:-runs/default}
    torchrun --nproc_per_node 8 train.py \\
        --model $MODEL \\
        # a comment between the options
        --per_device_train_batch_size ${BS} --output_dir $OUT --seed $1 && echo done
    """
    (line, words), (_, echo) = commands(textwrap.dedent(text).lstrip("\n"))
    assert line == 5
    assert words == ["torchrun", "--nproc_per_node", "8", "train.py", "--model", "meta-llama/Llama-2-7b-hf",
                     "--per_device_train_batch_size", "4", "--output_dir", "runs/default", "--seed", "$1"]
    assert echo == ["echo", "done"]


def test_makefile_recipes_expand_make_variables():
    text = "BATCH ?= 2\n\ntrain:\n\t@python train.py --batch_size $(BATCH) --bf16\n"
    assert commands(text, makefile=True) == [(4, ["python", "train.py", "--batch_size", "2", "--bf16"])]


def test_launchers_are_found_in_scripts_folders_and_read_per_launcher(tmp_path):
    write(tmp_path, {
        "train.py": "print('x')\n",
        "scripts/run.sh": """
            deepspeed --include localhost:0,1,2,3 train.py --deepspeed ds.json --gradient_checkpointing \\
                --learning_rate 1e-4 --output_dir <OUTPUT_DIR> "$@"
            """,
        "Makefile": "train:\n\taccelerate launch --num_processes 2 train.py --lr=3e-4\n",
        "other/run.sh": "python other.py --x 1\n",
    })
    found = launches(tmp_path)
    assert [launch.where for launch in found] == ["Makefile:2", f"{tmp_path / 'scripts/run.sh'}:1".replace(str(tmp_path) + "/", "")] or \
        [launch.file.rsplit("/", 1)[-1] for launch in found] == ["Makefile", "run.sh"]
    make, run = found
    assert (make.runner, make.processes, make.value("--lr")) == ("accelerate", 2, 3e-4)
    assert (run.runner, run.processes) == ("deepspeed", 4)
    assert run.value("--gradient_checkpointing", flag=True) is True
    assert run.value("--learning_rate") == 1e-4
    assert run.value("--output-dir") is UNKNOWN_VALUE  # a placeholder, and `-`/`_` spell one option
    assert run.forwards and not make.forwards
    assert run.option_lines["learning_rate"] == 2


def test_a_launcher_of_another_script_of_the_same_name_is_not_taken(tmp_path):
    write(tmp_path, {
        "a/train.py": "print('a')\n",
        "b/train.py": "print('b')\n",
        "scripts/run.sh": "cd b && python b/train.py --seed 1\npython -m a.train --seed 2\n",
    })
    (a,) = launches(tmp_path, "a/train.py")
    assert a.value("--seed") == 2
    (b,) = launches(tmp_path, "b/train.py")
    assert b.value("--seed") == 1


# -- what the analysis makes of them --------------------------------------------------------------------------

HF_SCRIPT = """
from transformers import AutoModelForCausalLM, HfArgumentParser, Trainer, TrainingArguments

(training_args,) = HfArgumentParser((TrainingArguments,)).parse_args_into_dataclasses()
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
Trainer(model=model, args=training_args).train()
"""


def test_an_option_the_launcher_passes_is_the_runs_value(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # messages name the launcher as ruff names files: relative to the working folder
    write(tmp_path, {
        "train.py": HF_SCRIPT,
        "requirements.txt": "transformers==4.46.0\n",
        "run.sh": "torchrun --nproc_per_node 8 train.py --per_device_train_batch_size 4 \\\n  --gradient_checkpointing True --bf16\n",
    })
    findings = check(tmp_path)
    (finding,) = [f for f in findings if f.code == "CKPT201"]
    assert "`--gradient_checkpointing` in run.sh:2" in finding.message
    assert "only" not in finding.message  # the launcher sets it: no longer "depends on the option"
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert settings.batch_size.value == 4 and settings.batch_size.describe() == "4 (run.sh:1)"
    assert settings.gpus.value == 8


def test_the_launchers_kwargs_decide_the_mode(tmp_path):
    write(tmp_path, {
        "train.py": HF_SCRIPT,
        "requirements.txt": "transformers==4.46.0\n",
        "run.sh": """python train.py --gradient_checkpointing --gradient_checkpointing_kwargs '{"use_reentrant": false}'\n""",
    })
    assert [f.code for f in check(tmp_path) if f.code == "CKPT201"] == []


def test_a_finding_no_launcher_reaches_is_dropped_and_one_another_reaches_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = """
    import argparse
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.checkpoint import checkpoint

    parser = argparse.ArgumentParser()
    parser.add_argument("--find_unused", action="store_true")
    args = parser.parse_args()
    model = DDP(torch.nn.Linear(2, 2), find_unused_parameters=args.find_unused)
    y = checkpoint(model, torch.ones(2), use_reentrant=True)
    """
    write(tmp_path, {"train.py": script, "run.sh": "torchrun --nproc_per_node 2 train.py\n"})
    assert [f.code for f in check(tmp_path) if f.code == "CKPT301"] == []
    write(tmp_path, {"scripts/debug.sh": "torchrun --nproc_per_node 2 train.py --find_unused\n"})  # farther: not the run's
    (finding,) = [f for f in check(tmp_path) if f.code == "CKPT301"]
    assert finding.message.endswith("(only with `--find_unused`, as scripts/debug.sh:1 runs it)")


def test_a_finding_another_launcher_reaches_must_hold_with_that_launchers_own_files(tmp_path):
    # MiniCPM-V: finetune_ds.sh runs the full fine-tune under ZeRO-3, finetune_lora.sh runs `--use_lora` under ZeRO-2;
    # CKPT304 (ZeRO-3 + PEFT + non-reentrant) needs both, and no launcher runs both
    script = """
        from dataclasses import dataclass, field
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, HfArgumentParser, Trainer, TrainingArguments

        @dataclass
        class LoraArguments:
            use_lora: bool = field(default=False)

        training_args, lora_args = HfArgumentParser((TrainingArguments, LoraArguments)).parse_args_into_dataclasses()
        model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
        if lora_args.use_lora:
            model = get_peft_model(model, LoraConfig(r=8))
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}
        Trainer(model=model, args=training_args).train()
        """
    zero = '{{"zero_optimization": {{"stage": {stage}}}, "train_micro_batch_size_per_gpu": "auto"}}'
    write(tmp_path, {
        "train.py": script,
        "requirements.txt": "transformers==4.46.0\ndeepspeed==0.15.0\n",
        "zero2.json": zero.format(stage=2),
        "zero3.json": zero.format(stage=3),
        "finetune_ds.sh": "torchrun --nproc_per_node 8 train.py --gradient_checkpointing true --deepspeed zero3.json\n",
        "finetune_lora.sh": "torchrun --nproc_per_node 8 train.py --use_lora true --gradient_checkpointing true --deepspeed zero2.json\n",
    })
    assert [f.code for f in check(tmp_path) if f.code == "CKPT304"] == []
    write(tmp_path, {"finetune_lora.sh": "torchrun --nproc_per_node 8 train.py --use_lora true --gradient_checkpointing true --deepspeed zero3.json\n"})
    (finding,) = [f for f in check(tmp_path) if f.code == "CKPT304"]
    assert finding.message.endswith("finetune_lora.sh:1 runs it)")


def test_without_a_launcher_an_option_still_depends_on_the_command_line(tmp_path):
    write(tmp_path, {"train.py": HF_SCRIPT, "requirements.txt": "transformers==4.46.0\n"})
    assert all("CKPT201" != f.code for f in check(tmp_path))  # kwargs the command line may pass are unknown


@pytest.mark.parametrize("value", ["$1", "<BATCH>"])
def test_a_value_the_launcher_does_not_tell_stays_unknown(tmp_path, value):
    write(tmp_path, {"train.py": HF_SCRIPT, "run.sh": f"python train.py --per_device_train_batch_size {value}\n"})
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert not settings.batch_size.stated


def test_sys_argv_settings_file_comes_from_the_launcher(tmp_path):
    script = """
    import os, sys
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((TrainingArguments,))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        (args,) = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    """
    write(tmp_path, {"train.py": script, "configs/run.json": '{"per_device_train_batch_size": 6}',
                     "run.sh": "python train.py configs/run.json\n"})
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert settings.batch_size.value == 6


def test_a_trainer_command_line_of_a_program_the_project_lacks_is_read_from_its_options(tmp_path):
    from ckpt_doctor.analysis import analyze_launcher

    write(tmp_path, {"ds/zero3.json": '{"zero_optimization": {"stage": 3}}', "run.sh": """
        accelerate launch --num_processes 4 missing_train.py \\
            --model_name_or_path Qwen/Qwen2-7B --per_device_train_batch_size 2 --gradient_accumulation_steps 8 \\
            --gradient_checkpointing True --bf16 True --model_max_length 4096 --deepspeed ds/zero3.json
        my-cli sft --per_device_train_batch_size 4 --output_dir out --use_lora True --lora_r 32
        python train.py --per_device_train_batch_size 1 --output_dir out
        """, "train.py": HF_SCRIPT})
    first, second = (a.run for a in analyze_launcher(read_source(str(tmp_path / "run.sh")), Settings(root=tmp_path)))
    read = first.settings()
    assert (read.batch_size.value, read.gradient_accumulation.value, read.seq_len.value, read.gpus.value) == (2, 8, 4096, 4)
    assert (first.checkpointing.value, first.zero_stage.value, read.dtype.value, read.model.value) == (True, 3, "bf16", "Qwen/Qwen2-7B")
    assert (second.launched_by, second.checkpointing.value, second.lora.value, second.lora_r.value) == ("my-cli", False, True, 32)
    assert "the program was not read" in second.checkpointing.note  # off only as far as the options say


def test_fsdp_and_checkpointing_a_launcher_passes_to_parsed_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, {"train.py": HF_SCRIPT})
    assert not [f for f in check(tmp_path) if f.code == "CKPT303"]  # without a launcher FSDP depends on the command line
    write(tmp_path, {"run.sh": 'torchrun --nproc-per-node 8 train.py --gradient_checkpointing True --fsdp="full_shard auto_wrap"\n'})
    (finding,) = [f for f in check(tmp_path) if f.code == "CKPT303"]
    assert "together with `--fsdp` in run.sh:1" in finding.message
    write(tmp_path, {"fsdp.json": '{"activation_checkpointing": true}', "run.sh":
                     'torchrun train.py --gradient_checkpointing True --fsdp "full_shard auto_wrap" --fsdp_config fsdp.json\n'})
    assert not [f for f in check(tmp_path) if f.code == "CKPT303"]  # FSDP's own is on too: not this rule's case


def test_a_sequence_length_field_of_the_projects_own_dataclass_comes_from_the_launcher(tmp_path):
    script = """
    from dataclasses import dataclass, field
    from transformers import HfArgumentParser, TrainingArguments

    @dataclass
    class TrainingConfig:
        block_size: int = field(default=4096)

    config, args = HfArgumentParser((TrainingConfig, TrainingArguments)).parse_args_into_dataclasses()
    dataset = dataset.map(lambda batch: group_texts(batch, config.block_size))
    """
    write(tmp_path, {"train.py": script})
    assert analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.seq_len.value == 4096
    write(tmp_path, {"run.sh": "torchrun train.py --block_size=32768 --per_device_train_batch_size 1\n"})
    seq_len = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.seq_len
    assert seq_len.value == 32768 and seq_len.file.endswith("run.sh")


@pytest.mark.parametrize("name, text, line", [
    ("package.json", '{\n  "name": "x",\n  "scripts": {\n    "lint": "ruff check .",\n'
                     '    "train": "accelerate launch train.py --per_device_train_batch_size 6"\n  }\n}\n', 5),
    ("pyproject.toml", '[project]\nname = "x"\n\n[tool.poe.tasks]\ntrain = "python train.py --per_device_train_batch_size 6"\n', 5),
    ("pyproject.toml", '[tool.pdm.scripts]\ntrain = {cmd = "torchrun train.py --per_device_train_batch_size 6"}\n', 2),
])
def test_the_scripts_of_a_task_file_launch_the_script(tmp_path, name, text, line):
    write(tmp_path, {"train.py": HF_SCRIPT, name: text})
    batch = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.batch_size
    assert (batch.value, batch.line, Path(batch.file).name) == (6, line, name)


def test_a_launcher_outside_the_package_root_but_in_the_checkout_runs_the_script(tmp_path):
    # R1-V's layout: the package root `src/pkg` has its own setup.py; the launchers live in `src/scripts` and name the
    # script from the checkout's root
    write(tmp_path, {
        "src/pkg/setup.py": "from setuptools import setup\nsetup(name='pkg')\n",
        "src/pkg/src/train.py": HF_SCRIPT,
        "src/scripts/run.sh": "accelerate launch src/pkg/src/train.py --per_device_train_batch_size 4\n",
    })
    analysis = analyze(read_source(str(tmp_path / "src/pkg/src/train.py")), Settings(root=tmp_path))
    assert analysis.facts.launch is not None
    assert analysis.facts.launch.value("--per_device_train_batch_size") == 4
    assert analysis.settings.batch_size.value == 4


def test_a_config_class_kept_in_a_sibling_module_is_filled_by_the_launcher_and_its_defaults(tmp_path):
    # Qwen2-VL-Finetune's layout: `from src.params import DPOArguments`, a subclass of TRL's DPOConfig with its own
    # field defaults, filled by HfArgumentParser from a launcher
    write(tmp_path, {
        "src/params.py": """
            from dataclasses import dataclass, field
            from trl import DPOConfig as DPOConfigTRL

            @dataclass
            class DPOArguments(DPOConfigTRL):
                max_seq_length: int = field(default=4096)
                optim: str = field(default="adamw_torch")
            """,
        "src/train/train_dpo.py": """
            from transformers import AutoModelForCausalLM, HfArgumentParser
            from src.params import DPOArguments

            (training_args,) = HfArgumentParser((DPOArguments,)).parse_args_into_dataclasses()
            model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
            """,
        "scripts/finetune_dpo.sh": "deepspeed src/train/train_dpo.py --per_device_train_batch_size 2 --bf16 True\n",
    })
    settings = analyze(read_source(str(tmp_path / "src/train/train_dpo.py")), Settings(root=tmp_path)).settings
    assert settings.batch_size.value == 2
    assert settings.seq_len.value == 4096
    assert settings.seq_len.file.endswith("params.py")  # named where it is written
    assert settings.mixed_precision.value == "bf16"


def test_trl_get_peft_config_is_lora_when_the_launcher_passes_use_peft(tmp_path):
    write(tmp_path, {
        "sft.py": """
            from transformers import AutoModelForCausalLM
            from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config
            from configs.data_arguments import DataConfig

            training_args, model_args, data_args = TrlParser((SFTConfig, ModelConfig, DataConfig)).parse_args_and_config()
            model = AutoModelForCausalLM.from_pretrained("meta-llama/Meta-Llama-3-8B")
            SFTTrainer(model=model, args=training_args, peft_config=get_peft_config(model_args)).train()
            """,
        "scripts/run.sh": "python sft.py --use_peft --lora_r=256 --per_device_train_batch_size=8 --gradient_checkpointing\n",
    })
    settings = analyze(read_source(str(tmp_path / "sft.py")), Settings(root=tmp_path)).settings
    assert settings.lora_r.value == 256
    assert settings.batch_size.value == 8
    findings = check(tmp_path, "sft.py", select=["CKPT201"], target_versions={"transformers": "4.46", "trl": "0.12"})
    assert findings and "`SFTConfig`" in findings[0].message  # a project's `DataConfig` is no TRL config


def test_a_hydra_entry_point_reads_its_primary_config(tmp_path):
    write(tmp_path, {
        "train.py": """
            import hydra
            from torch.utils.data import DataLoader

            @hydra.main(version_base=None, config_path="config", config_name="config")
            def main(config):
                loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True)

            if __name__ == "__main__":
                main()
            """,
        "config/config.yaml": "batch_size: 4\nmax_length: 512\noptimizer: RMSprop\n",
    })
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert (settings.batch_size.value, settings.seq_len.value) == (4, 512)
    assert "config/config.yaml" in settings.batch_size.note


def test_a_grpo_step_is_as_long_as_its_prompt_and_completion(tmp_path):
    write(tmp_path, {
        "train.py": """
            from trl import GRPOConfig, GRPOTrainer
            args = GRPOConfig(output_dir="o", per_device_train_batch_size=4, max_completion_length=700)
            GRPOTrainer(model="Qwen/Qwen2.5-0.5B", args=args, reward_funcs=[reward], train_dataset=ds).train()
            """,
        "requirements.txt": "trl==0.19.0\n",
    })
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert settings.seq_len.value == 512 + 700  # the prompt's default (trl < 0.26) and the stated completion
    assert settings.seq_len.stated


def test_checkpointing_turned_on_for_the_projects_own_model_class_runs_its_checkpoint_calls(tmp_path):
    # BELLE / GaLore: a copied modeling file whose layers call torch's checkpoint themselves, run from a subfolder
    write(tmp_path, {
        "train/src/models/modeling_llama.py": """
            import torch.utils.checkpoint
            from transformers import PreTrainedModel

            class LlamaForCausalLM(PreTrainedModel):
                def forward(self, hidden):
                    for layer in self.layers:
                        hidden = torch.utils.checkpoint.checkpoint(layer, hidden)
                    return hidden
            """,
        "train/src/entry_point/train.py": """
            from peft import LoraConfig, get_peft_model
            from src.models.modeling_llama import LlamaForCausalLM

            model = LlamaForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
            model = get_peft_model(model, LoraConfig(r=8))
            model.gradient_checkpointing_enable()
            """,
    })
    found = findings_of("CKPT101", tmp_path, "train/src/entry_point/train.py")
    assert [f.span.start.line for f in found] == [6]
    assert "modeling_llama.py:7" in found[0].message and found[0].fix is None
    # its layers call torch's checkpoint themselves: Hugging Face's kwargs change nothing there, so no CKPT201
    write(tmp_path, {"requirements.txt": "transformers==4.46.0\n"})
    assert findings_of("CKPT201", tmp_path, "train/src/entry_point/train.py") == []
    # gammachen/p-llm-dialog-element-extraction (holdout19): peft's k-bit preparation turns it on as well, unless told not to
    entry = (tmp_path / "train/src/entry_point/train.py").read_text()
    for prepare, lines in (("prepare_model_for_kbit_training(model)", [5, 7]),
                           ("prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)", [7])):
        write(tmp_path, {"train/src/entry_point/train.py": entry.replace(
            "from peft import LoraConfig", "from peft import prepare_model_for_kbit_training, LoraConfig").replace(
            "model = get_peft_model", f"model = {prepare}\nmodel = get_peft_model")})
        found = findings_of("CKPT101", tmp_path, "train/src/entry_point/train.py")
        assert [f.span.start.line for f in found] == lines, prepare


def test_the_projects_own_checkpointing_switch_on_a_model_its_factory_makes_runs_its_checkpoint_calls(tmp_path):
    # open_lm (holdout6): `model = create_model(args)`, then `if args.grad_checkpointing: model.set_grad_checkpointing()`;
    # the module's layers call torch's checkpoint without `use_reentrant`
    write(tmp_path, {
        "open_lm/model.py": """
            from torch import nn
            from torch.utils.checkpoint import checkpoint

            class Transformer(nn.Module):
                def set_grad_checkpointing(self, enable=True):
                    self.grad_checkpointing = enable

                def forward(self, x):
                    for layer in self.layers:
                        x = checkpoint(layer, x) if self.grad_checkpointing else layer(x)
                    return x

            def create_model(args):
                return Transformer(args)
            """,
        "open_lm/main.py": """
            import argparse
            from open_lm.model import create_model

            parser = argparse.ArgumentParser()
            parser.add_argument("--grad-checkpointing", action="store_true")
            args = parser.parse_args()
            model = create_model(args)
            if args.grad_checkpointing:
                model.set_grad_checkpointing()
            """,
    })
    found = findings_of("CKPT101", tmp_path, "open_lm/main.py")
    assert [f.span.start.line for f in found] == [9]
    assert "open_lm/model.py:10" in found[0].message and "Hugging Face" not in found[0].message
    assert found[0].condition is not None and "--grad-checkpointing" in str(found[0].condition)


MAR_MODELS = """
    from torch import nn
    from torch.utils.checkpoint import checkpoint

    class MAR(nn.Module):
        def __init__(self, depth=12, grad_checkpointing=False):
            super().__init__()
            self.grad_checkpointing = grad_checkpointing

        def forward(self, x):
            for block in self.blocks:
                x = checkpoint(block, x) if self.grad_checkpointing else block(x)
            return x

    def mar_base(**kwargs):
        return MAR(depth=12, **kwargs)

    MODELS = {"mar_base": mar_base}
    """


@pytest.mark.parametrize("readme, reported", [
    ("```\npython main_mar.py --model mar_base\n```\n", False),  # the documented run leaves it off
    # the README tells people to add the flag: a documented run
    ("```\npython main_mar.py --model mar_base\n```\n\nTo save memory, add `--grad_checkpointing` to the arguments.\n", True),
    ("", True),  # no launcher at all: the option decides
])
def test_a_model_asked_to_checkpoint_itself_by_keyword_runs_its_checkpoint_calls(tmp_path, readme, reported):
    # LTH14/mar (holdout11): `mar.__dict__[args.model](..., grad_checkpointing=args.grad_checkpointing)`: an entry of the
    # project's own module, whose blocks call torch's checkpoint without `use_reentrant`
    write(tmp_path, {
        "models/mar.py": MAR_MODELS,
        "README.md": readme,
        "main_mar.py": """
            import argparse
            from models import mar

            parser = argparse.ArgumentParser()
            parser.add_argument("--model", default="mar_base")
            parser.add_argument("--grad_checkpointing", action="store_true")
            args = parser.parse_args()
            model = mar.__dict__[args.model](
                grad_checkpointing=args.grad_checkpointing,
            )
            """,
    })
    found = findings_of("CKPT101", tmp_path, "main_mar.py")
    assert [f.span.start.line for f in found] == ([9] if reported else [])
    if reported:
        assert "`mar.__dict__[...]`" in found[0].message and "models/mar.py:11" in found[0].message
        assert "--grad_checkpointing" in found[0].message


def test_a_registry_entry_turned_on_by_the_projects_own_method_runs_its_checkpoint_calls(tmp_path):
    # HunyuanDiT (holdout11): `HUNYUAN_DIT_MODELS[args.model](...)`, then `model.enable_gradient_checkpointing()`; a
    # keyword that is a constant False asks nothing
    write(tmp_path, {
        "models/dit.py": """
            from torch import nn
            from torch.utils import checkpoint

            class DiT(nn.Module):
                def __init__(self, grad_checkpointing=False, use_checkpoint=False):
                    super().__init__()

                def enable_gradient_checkpointing(self):
                    self.gradient_checkpointing = True

                def forward(self, x):
                    return checkpoint.checkpoint(self.block, x) if self.gradient_checkpointing else self.block(x)

            MODELS = {"DiT-g/2": DiT}
            """,
        "train.py": """
            from models.dit import MODELS

            model = MODELS["x".strip()](grad_checkpointing=False)
            other = MODELS["x".strip()](use_checkpoint=False)
            model.enable_gradient_checkpointing()
            """,
    })
    found = findings_of("CKPT101", tmp_path)
    assert [f.span.start.line for f in found] == [5]
    assert "`model.enable_gradient_checkpointing()`" in found[0].message and "`MODELS[...]`" in found[0].message
    assert "models/dit.py:12" in found[0].message


MODEL_COPY = """
    from transformers.modeling_utils import PreTrainedModel

    class LlamaPreTrainedModel(PreTrainedModel):
        supports_gradient_checkpointing = True

    class LlamaForCausalLM(LlamaPreTrainedModel):
        def forward(self, input_ids, use_cache=None):
            return self.model(input_ids)
    {extra}
    """

COPY_LOOP = """
    import torch
    from scaled_rope.modeling_llama_yarn import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained("NousResearch/Llama-2-7b-hf", torch_dtype=torch.bfloat16)
    optim = torch.optim.AdamW(model.parameters())
    model.gradient_checkpointing_enable()
    for batch in loader:
        model(**batch).loss.backward()
        optim.step()
    """


@pytest.mark.parametrize("built", ["from_pretrained", "constructor"])
@pytest.mark.parametrize("extra, reported", [("", True), ("    def gradient_checkpointing_enable(self):\n            pass", False)])
def test_a_projects_copy_of_a_library_model_class_gets_the_librarys_rules(tmp_path, extra, reported, built):
    # yarn (holdout7): scaled_rope/modeling_llama_yarn.py copies transformers' Llama over `PreTrainedModel`; a
    # hand-written loop enables checkpointing and never turns the KV cache off. A copy that defines the method
    # itself is the project's own. GaLore (holdout) builds its copy from a config: `LlamaForCausalLM(model_config)`.
    loop = COPY_LOOP if built == "from_pretrained" else COPY_LOOP.replace(
        'LlamaForCausalLM.from_pretrained("NousResearch/Llama-2-7b-hf", torch_dtype=torch.bfloat16)', "LlamaForCausalLM(config)")
    write(tmp_path, {"scaled_rope/__init__.py": "", "scaled_rope/modeling_llama_yarn.py": MODEL_COPY.format(extra=extra),
                     "finetune.py": loop, "requirements.txt": "transformers==4.40.0\n"})
    codes = {f.code for f in check(tmp_path, "finetune.py")}
    assert ({"CKPT201", "CKPT203"} <= codes) is reported and (codes & {"CKPT201", "CKPT203"} == set()) is not reported


def test_a_method_inherited_from_a_project_base_class_is_followed(tmp_path):
    # align-anything (holdout8): `SupervisedTrainer(SupervisedTrainerBase)` calls `self.init_engines()`, defined in
    # the base class of another module (re-exported by its package), which turns checkpointing on in a method it calls
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/base/__init__.py": "from pkg.base.supervised import SupervisedTrainerBase\n",
        "pkg/base/supervised.py": """
            import deepspeed

            class SupervisedTrainerBase:
                def init_engines(self):
                    self.init_deepspeed_engines()

                def init_deepspeed_engines(self):
                    self.model, *_ = deepspeed.initialize(model=self.model)
                    if self.cfgs.gradient_checkpointing:
                        self.model.gradient_checkpointing_enable()
            """,
        "pkg/sft.py": """
            from transformers import AutoModelForCausalLM
            from pkg.base import SupervisedTrainerBase

            class SupervisedTrainer(SupervisedTrainerBase):
                def __init__(self, cfgs):
                    self.cfgs = cfgs
                    self.model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.1-8B")
                    self.init_engines()

                def train(self, batch):
                    loss = self.model(**batch).loss
                    self.model.backward(loss)
            """,
        "requirements.txt": "transformers==4.46.0\n",
    })
    (finding,) = [f for f in check(tmp_path, "pkg/sft.py") if f.code == "CKPT201"]
    assert finding.span.start.line == 8 and finding.fix is None  # at `self.init_engines()`; the edit would be elsewhere


@pytest.mark.parametrize("trainer_module, reported", [
    ("class Trainer:\n    def train(self):\n        for batch in self.loader:\n            self.accelerator.backward(self.model(**batch).loss)\n", True),
    ("class Trainer:\n    def train(self):\n        pass\n", False),
    # LOMO: lomo_trainer.py's loop calls `optimizer.fused_backward(loss)`, whose `loss.backward()` is in lomo.py
    ("from .lomo import LOMO\nclass Trainer:\n    def train(self):\n        self.optimizer.fused_backward(self.loss)\n", True),
])
def test_a_hand_written_loop_in_a_sibling_module_needs_the_kv_cache_off(tmp_path, trainer_module, reported):
    # HALOs, LOMO (holdouts): the script loads and checkpoints the model; `trainer.train()` of the project's own
    # trainers.py runs `accelerator.backward(loss)`
    write(tmp_path, {
        "train/__init__.py": "",
        "train/trainers.py": trainer_module,
        "train/lomo.py": "class LOMO:\n    def fused_backward(self, loss):\n        loss.backward()\n",
        "launch.py": """
            from transformers import AutoModelForCausalLM
            from train import trainers

            model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            trainers.Trainer(model).train()
            """,
    })
    assert ("CKPT203" in {f.code for f in check(tmp_path, "launch.py")}) is reported


def test_the_defaults_of_a_project_config_class_the_script_builds_are_its_settings(tmp_path):
    # fms-fsdp: `cfg = config.train_config()` from a package that re-exports the dataclass; helpers read `cfg`
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/config/__init__.py": "from .training import train_config\n",
        "pkg/config/training.py": """
            from dataclasses import dataclass

            @dataclass
            class train_config:
                batch_size: int = 2
                seq_length: int = 4096
                seed: int = 2023
            """,
        "main.py": """
            import fire
            import torch
            from pkg import config

            def main(**kwargs):
                cfg = config.train_config()
                torch.manual_seed(cfg.seed)
                model = build(cfg)
                optimizer = torch.optim.AdamW(model.parameters())
                for batch in loader(cfg):
                    model(batch).sum().backward()
                    optimizer.step()

            if __name__ == "__main__":
                fire.Fire(main)
            """,
    })
    settings = analyze(read_source(str(tmp_path / "main.py")), Settings(root=tmp_path)).settings
    assert (settings.batch_size.value, settings.seq_len.value) == (2, 4096)
    assert settings.batch_size.file.endswith("training.py")


def test_argument_classes_a_star_import_of_a_project_package_brings_take_the_launchers_options(tmp_path):
    # TinyLLaVA (holdout7): `from tinyllava.utils import *`, whose `__init__.py` is `from .arguments import *`;
    # arguments.py subclasses transformers' TrainingArguments; scripts/train/finetune.sh passes the options
    write(tmp_path, {
        "tinyllava/__init__.py": "",
        "tinyllava/utils/__init__.py": "from .arguments import *\nfrom .logging import *\n",
        "tinyllava/utils/logging.py": "def logger_setting(path):\n    pass\n",
        "tinyllava/utils/arguments.py": """
            from dataclasses import dataclass, field
            import transformers

            @dataclass
            class TrainingArguments(transformers.TrainingArguments):
                tune_type_llm: str = field(default="frozen")
            """,
        "tinyllava/train/train.py": """
            import transformers
            from tinyllava.utils import *

            def train():
                parser = transformers.HfArgumentParser((TrainingArguments,))
                (training_arguments,) = parser.parse_args_into_dataclasses()
                logger_setting(training_arguments.output_dir)
                model = transformers.AutoModelForCausalLM.from_pretrained("microsoft/phi-2")
                transformers.Trainer(model=model, args=training_arguments).train()

            if __name__ == "__main__":
                train()
            """,
        "requirements.txt": "transformers==4.40.1\n",
        "scripts/train/finetune.sh": "deepspeed tinyllava/train/train.py --per_device_train_batch_size 8 --gradient_checkpointing True\n",
    })
    settings = analyze(read_source(str(tmp_path / "tinyllava/train/train.py")), Settings(root=tmp_path)).settings
    assert settings.batch_size.value == 8
    assert [f.code for f in check(tmp_path, "tinyllava/train/train.py") if f.code == "CKPT201"] == ["CKPT201"]


def test_the_yaml_file_an_alignment_handbook_parser_reads_from_the_launch_gives_the_settings(tmp_path, monkeypatch):
    # SPIN (holdout7): a copy of the alignment handbook's `H4ArgumentParser(HfArgumentParser)`, whose `parse()` reads
    # the YAML file `sys.argv[1]`; scripts/finetune.sh passes `configs/config.yaml` first, then options
    monkeypatch.chdir(tmp_path)
    write(tmp_path, {
        "setup.py": "from setuptools import setup\nsetup(install_requires=['transformers==4.37.0'])\n",
        "spin/alignment/__init__.py": "from .configs import H4ArgumentParser, SPINConfig\n",
        "spin/alignment/configs.py": """
            import sys
            from dataclasses import dataclass
            import transformers
            from transformers import HfArgumentParser

            class H4ArgumentParser(HfArgumentParser):
                def parse(self):
                    if len(sys.argv) == 2 and sys.argv[1].endswith(".yaml"):
                        return self.parse_yaml_file(sys.argv[1])
                    return self.parse_args_into_dataclasses()

            @dataclass
            class SPINConfig(transformers.TrainingArguments):
                beta: float = 0.1
            """,
        "spin/run_spin.py": """
            from transformers import AutoModelForCausalLM, Trainer
            from alignment import H4ArgumentParser, SPINConfig

            def main():
                parser = H4ArgumentParser((SPINConfig,))
                (training_args,) = parser.parse()
                model = AutoModelForCausalLM.from_pretrained("alignment-handbook/zephyr-7b-sft-full")
                Trainer(model=model, args=training_args).train()

            if __name__ == "__main__":
                main()
            """,
        "configs/config.yaml": "bf16: true\ngradient_checkpointing: true\nper_device_train_batch_size: 8\n",
        "scripts/finetune.sh": "accelerate launch --num_processes=8 spin/run_spin.py configs/config.yaml --num_train_epochs=6\n",
    })
    settings = analyze(read_source(str(tmp_path / "spin/run_spin.py")), Settings(root=tmp_path)).settings
    assert (settings.batch_size.value, settings.mixed_precision.value) == (8, "bf16")
    (finding,) = [f for f in check(tmp_path, "spin/run_spin.py") if f.code == "CKPT201"]
    assert "read from configs/config.yaml" in finding.message
    assert [(r.span.start.line, r.message) for r in finding.related] == [(8, "the Trainer that enables checkpointing at `train()`")]


@pytest.mark.parametrize("shipped", [True, False])
def test_a_trainer_named_otherwise_in_a_launcher_folder_named_otherwise_is_found(tmp_path, shipped):
    # lmms-finetune (holdout4): example_scripts/example_image.sh launches train.py, whose `TrainerWithCustomSampler`
    # (utils.py, not always in the checkout) takes the parsed arguments
    files = {
        "train.py": """
            import transformers
            from utils import TrainerWithCustomSampler

            def train():
                parser = transformers.HfArgumentParser((transformers.TrainingArguments,))
                (training_args,) = parser.parse_args_into_dataclasses()
                model = transformers.AutoModelForCausalLM.from_pretrained("llava-hf/llava-1.5-7b-hf")
                trainer = TrainerWithCustomSampler(model=model, args=training_args)
                trainer.train()

            train()
            """,
        "example_scripts/example_image.sh": "torchrun --nproc_per_node 1 train.py --gradient_checkpointing True --per_device_train_batch_size 2\n",
        "requirements.txt": "transformers==4.45.2\n",
    }
    if shipped:
        files["utils.py"] = "from transformers import Trainer\n\nclass TrainerWithCustomSampler(Trainer):\n    pass\n"
    write(tmp_path, files)
    assert analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.batch_size.value == 2
    (finding,) = [f for f in check(tmp_path) if f.code == "CKPT201"]
    assert [r.span.start.line for r in finding.related] == [8]


def test_a_trainer_class_chosen_by_an_option_is_the_trainer(tmp_path):
    # Video-R1 (holdout9): `trainer_cls = Qwen2VLGRPOTrainer if not training_args.use_vllm else ...; trainer_cls(...)`
    write(tmp_path, {
        "grpo.py": """
            from trl import GRPOConfig, GRPOTrainer, TrlParser
            from trainer import Qwen2VLGRPOTrainer

            def main(training_args):
                trainer_cls = Qwen2VLGRPOTrainer if not training_args.use_vllm else GRPOTrainer
                trainer = trainer_cls(model="Qwen/Qwen2.5-VL-7B-Instruct", args=training_args)
                trainer.train()

            if __name__ == "__main__":
                (training_args,) = TrlParser((GRPOConfig,)).parse_args_and_config()
                main(training_args)
            """,
        "trainer.py": "from trl import GRPOTrainer\n\nclass Qwen2VLGRPOTrainer(GRPOTrainer):\n    pass\n",
        "run.sh": "torchrun --nproc_per_node 8 grpo.py --gradient_checkpointing true\n",
        "requirements.txt": "transformers==4.49.0\ntrl==0.16.0\n",
    })
    (finding,) = [f for f in check(tmp_path, "grpo.py") if f.code == "CKPT201"]
    assert [r.span.start.line for r in finding.related] == [6]


@pytest.mark.parametrize("flag, reported", [("--gradient_checkpointing 1", True), ("", False)])
def test_a_trainer_turns_on_the_checkpointing_of_a_projects_own_model(tmp_path, flag, reported):
    # LongAlign (holdout9): `LlamaForCausalLM.from_pretrained` of the project's modeling_llama.py, whose layers call
    # torch's `checkpoint` without `use_reentrant`, given to a Trainer whose launcher passes --gradient_checkpointing 1
    write(tmp_path, {
        "modeling_llama.py": """
            import torch
            from transformers import PreTrainedModel

            class LlamaForCausalLM(PreTrainedModel):
                def forward(self, x):
                    return torch.utils.checkpoint.checkpoint(self.layer, x)
            """,
        "main.py": """
            import transformers
            from modeling_llama import LlamaForCausalLM

            def train():
                (training_args,) = transformers.HfArgumentParser((transformers.TrainingArguments,)).parse_args_into_dataclasses()
                model = LlamaForCausalLM.from_pretrained("THUDM/LongAlign-7B-64k-base")
                trainer = transformers.Trainer(model=model, args=training_args)
                trainer.train()

            train()
            """,
        "scripts/llama_pack.sh": f"deepspeed main.py --output_dir out {flag}\n",
    })
    found = [f for f in check(tmp_path, "main.py", select=["CKPT101"])]
    assert [f.span.start.line for f in found] == ([7] if reported else [])
    assert not found or "modeling_llama.py:6" in found[0].message


def test_guides_and_readmes_above_the_script_give_its_launch(tmp_path):
    # Video-ChatGPT (holdout9): docs/train_video_chatgpt.md shows the command, with `<placeholders>`; WizardCoder: the
    # README above src/ runs `deepspeed train_wizardcoder.py` from another checkout
    write(tmp_path, {
        "video_chatgpt/train/train.py": "import transformers\n",
        "docs/train_video_chatgpt.md": """
            Train on 8 A100 40GB GPUs:
            ```shell
            torchrun --nproc_per_node=8 video_chatgpt/train/train.py \\
                      --model_name_or_path <path to LLaVA-7B-Lightening-v-1-1 model> \\
                      --per_device_train_batch_size 4 \\
                      --gradient_checkpointing True
            ```
            """,
        "WizardCoder/src/train_wizardcoder.py": "import transformers\n",
        "WizardCoder/README.md": "```bash\ndeepspeed train_wizardcoder.py --model_max_length 2048\n```\n",
        # codealpaca: a `\\` forgotten at the end of a line of the command
        "README.md": "```bash\ntorchrun --nproc_per_node=8 train.py \\\n    --model_name_or_path <ckpt>\n    --fp16 True\n```\n",
        "train.py": "import transformers\n",
    })
    (alpaca,) = launches(tmp_path, "train.py")
    assert alpaca.options == {"model_name_or_path": None, "fp16": "True"}
    (video,) = launches(tmp_path, "video_chatgpt/train/train.py")
    assert video.options == {"model_name_or_path": None, "per_device_train_batch_size": "4", "gradient_checkpointing": "True"}
    (wizard,) = launches(tmp_path, "WizardCoder/src/train_wizardcoder.py")
    assert wizard.options == {"model_max_length": "2048"}
    write(tmp_path, {"train_wizardcoder.py": "import transformers\n"})  # a second file of that name: not this one
    assert launches(tmp_path, "WizardCoder/src/train_wizardcoder.py") == []


def test_the_launcher_the_readme_names_comes_first_and_runs_from_its_own_folder(tmp_path):
    # Yi (holdout9): finetune/README.md says `bash finetune/scripts/run_sft_Yi_6b.sh`, which does
    # `cd "$(dirname "${BASH_SOURCE[0]}")/../sft/"` then `deepspeed main.py`; run_sft_lora_Yi_6b.sh sorts first
    write(tmp_path, {
        "finetune/sft/main.py": "import deepspeed\n",
        "finetune/README.md": "```bash\nbash finetune/scripts/run_sft_Yi_6b.sh\n```\n",
        "finetune/scripts/run_sft_Yi_6b.sh": 'cd "$(dirname "${BASH_SOURCE[0]}")/../sft/"\ndeepspeed main.py --per_device_train_batch_size 1\n',
        "finetune/scripts/run_sft_lora_Yi_6b.sh": "cd ../sft/\ndeepspeed main.py --per_device_train_batch_size 4\n",
    })
    first, second = launches(tmp_path, "finetune/sft/main.py")
    assert (first.file, first.options) == (str(tmp_path / "finetune/scripts/run_sft_Yi_6b.sh"), {"per_device_train_batch_size": "1"})
    assert second.file.endswith("run_sft_lora_Yi_6b.sh")


def test_a_settings_file_the_launcher_writes_with_a_here_document_is_read(tmp_path):
    # Online-RLHF (holdout8): run_loop2.sh writes dpo_config.yaml with `cat <<EOT > dpo_config.yaml` ... `EOT`, then
    # `accelerate launch ... run_dpo.py dpo_config.yaml`; run_dpo.py parses it with the alignment handbook's parser
    write(tmp_path, {
        "requirements.txt": "transformers==4.43.4\ntrl==0.9.6\n",
        "dpo_iteration/run_dpo.py": """
            from alignment import H4ArgumentParser
            from transformers import AutoModelForCausalLM
            from trl import DPOConfig, DPOTrainer

            if __name__ == "__main__":
                parser = H4ArgumentParser((DPOConfig,))
                (training_args,) = parser.parse()
                model = AutoModelForCausalLM.from_pretrained("RLHFlow/LLaMA3-SFT-v2")
                DPOTrainer(model, None, args=training_args).train()
            """,
        "run_loop2.sh": """
            run_iteration() {
                cat <<EOT > dpo_config.yaml
            gradient_checkpointing: true
            per_device_train_batch_size: 3
            EOT
                accelerate launch --config_file ./configs/zero2.yaml dpo_iteration/run_dpo.py dpo_config.yaml
            }
            """,
    })
    firsts = [words[0] for _, words in commands((tmp_path / "run_loop2.sh").read_text())]
    assert "accelerate" in firsts and not any(w.endswith(":") for w in firsts)  # the document's text is no command
    (launch,) = launches(tmp_path, "dpo_iteration/run_dpo.py")
    assert launch.written_files == {"dpo_config.yaml": (2, "gradient_checkpointing: true\nper_device_train_batch_size: 3\n")}
    settings = analyze(read_source(str(tmp_path / "dpo_iteration/run_dpo.py")), Settings(root=tmp_path)).settings
    assert settings.batch_size.value == 3
    (finding,) = [f for f in check(tmp_path, "dpo_iteration/run_dpo.py") if f.code == "CKPT201"]
    assert "read from dpo_config.yaml (written by " in finding.message


def test_a_parser_handed_to_a_sibling_helper_and_options_kept_on_self_take_the_launchers_values(tmp_path):
    # ORPO (holdout4): `args = default_args(parser)` adds the options to the script's parser in src/args.py and
    # parses them; a class keeps them as `self.args` and loads the model under `if self.args.flash_attention_2:`
    write(tmp_path, {
        "src/__init__.py": "",
        "src/args.py": """
            def default_args(parser):
                parser.add_argument("--model_name", default="gpt2", type=str)
                parser.add_argument("--flash_attention_2", action="store_true")
                parser.add_argument("--per_device_train_batch_size", default=2, type=int)
                parser.add_argument("--response_max_length", default=1024, type=int)
                args = parser.parse_args()
                return args
            """,
        "main.py": """
            import argparse
            import torch
            from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
            from src.args import default_args

            class ORPO:
                def __init__(self, args):
                    self.args = args
                    if self.args.flash_attention_2:
                        self.model = AutoModelForCausalLM.from_pretrained(self.args.model_name, torch_dtype=torch.bfloat16,
                                                                          attn_implementation="flash_attention_2")
                    else:
                        self.model = AutoModelForCausalLM.from_pretrained(self.args.model_name, torch_dtype=torch.bfloat16)

                def preprocess(self, examples):
                    return self.tokenizer(examples["text"], max_length=self.args.response_max_length, truncation=True)

                def run(self):
                    arguments = TrainingArguments(output_dir="out", gradient_checkpointing=True,
                                                  per_device_train_batch_size=self.args.per_device_train_batch_size)
                    Trainer(model=self.model, args=arguments).train()

            if __name__ == "__main__":
                parser = argparse.ArgumentParser("ORPO")
                args = default_args(parser)
                ORPO(args=args).run()
            """,
        "run.sh": "accelerate launch main.py --model_name facebook/opt-1.3b --per_device_train_batch_size 4 --response_max_length 2048\n",
    })
    settings = analyze(read_source(str(tmp_path / "main.py")), Settings(root=tmp_path)).settings
    assert (settings.model.value, settings.model.file) == ("facebook/opt-1.3b", str(tmp_path / "run.sh"))
    assert settings.model_load.line == 13  # the default run's load: --flash_attention_2 is off
    assert (settings.batch_size.value, settings.seq_len.value) == (4, 2048)


@pytest.mark.parametrize("parser", ["argparse", "hf"])
def test_an_option_the_launcher_abbreviates_takes_its_value(tmp_path, parser):
    # argparse (and HfArgumentParser) take a unique prefix of an option: DHS-LLM-Workshop's run_deepspeed.sh passes
    # `--max_seq_len 2048` to a dataclass field `max_seq_length`; an ambiguous prefix (`--per_device`) sets nothing
    if parser == "hf":
        parse = """
            @dataclass
            class ScriptArguments:
                max_seq_length: int = field(default=512)
                max_target_length: int = 128

            script_args, training_args = HfArgumentParser((ScriptArguments, TrainingArguments)).parse_args_into_dataclasses()
            """
    else:
        parse = """
            parser = argparse.ArgumentParser()
            parser.add_argument("--max_seq_length", type=int, default=512)
            parser.add_argument("--max_target_length", type=int, default=128)
            parser.add_argument("--per_device_train_batch_size", type=int, default=1)
            parser.add_argument("--per_device_eval_batch_size", type=int, default=1)
            script_args = training_args = parser.parse_args()
            """
    write(tmp_path, {
        "train.py": textwrap.dedent("""
            import argparse
            from dataclasses import dataclass, field
            from transformers import AutoModelForCausalLM, HfArgumentParser, Trainer, TrainingArguments
            """) + textwrap.dedent(parse) + textwrap.dedent("""
            model = AutoModelForCausalLM.from_pretrained("gpt2")
            tokens = tokenizer(texts, max_length=script_args.max_seq_length, truncation=True)
            """),
        "run.sh": "accelerate launch train.py --max_seq_len 2048 --per_device 3\n",
    })
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert (settings.seq_len.value, settings.seq_len.file) == (2048, str(tmp_path / "run.sh"))
    assert settings.batch_size.value != 3
    (tmp_path / "run.sh").write_text("accelerate launch train.py --max_seq 2048\n")  # also the start of max_seq_length_*
    write(tmp_path, {"train.py": (tmp_path / "train.py").read_text().replace("max_target_length", "max_seq_length_eval")})
    assert analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.seq_len.value == 512


def test_a_launcher_run_by_another_takes_its_arguments(tmp_path):
    # Qwen2.5-Coder: dpo_qwen2.5coder_1.5B.sh runs `bash dpo_qwencoder.sh $DATA $MODEL $OUT 4 512 ... 3072`, which
    # sets `MICRO_BATCH_SIZE=${4}` then `${MICRO_BATCH_SIZE:-"1"}`; options parsed by TrlParser into a Namespace
    write(tmp_path, {
        "train.py": """
            import argparse
            from dataclasses import dataclass, field
            import trl
            from transformers import AutoModelForCausalLM

            @dataclass
            class ScriptArguments:
                model_max_length: int = field(default=512)

            parser = trl.TrlParser((ScriptArguments, trl.DPOConfig))
            script_args, dpo_args = parser.parse_args_and_config()
            args = argparse.Namespace(**{**vars(script_args), **vars(dpo_args)})
            model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
            tokens = tokenizer(texts, max_length=args.model_max_length, truncation=True)
            """,
        "scripts/finetune.sh": """
            MODEL=${1}
            MODEL=${MODEL:-"Qwen/Qwen2.5-Coder-1.5B"}
            MICRO_BATCH_SIZE=${2}
            MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-"1"}
            MAX_LENGTH=${3:-1280}
            cd ..
            torchrun --nproc_per_node 8 train.py --model_name_or_path ${MODEL} \\
                --per_device_train_batch_size ${MICRO_BATCH_SIZE} --model_max_length ${MAX_LENGTH}
            """,
        "scripts/run_7b.sh": """
            MAX_LENGTH=3072
            bash finetune.sh Qwen/Qwen2.5-Coder-7B 4 $MAX_LENGTH
            """,
    })
    bound, alone = launches(tmp_path)
    assert bound.options == {"model_name_or_path": "Qwen/Qwen2.5-Coder-7B", "per_device_train_batch_size": "4", "model_max_length": "3072"}
    assert alone.options == {"model_name_or_path": "Qwen/Qwen2.5-Coder-1.5B", "per_device_train_batch_size": "1", "model_max_length": "1280"}
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert (settings.batch_size.value, settings.seq_len.value) == (4, 3072)
    assert settings.model.value == "Qwen/Qwen2.5-Coder-7B"


def test_a_trl_parser_given_its_classes_by_keyword_reads_the_config_file(tmp_path):
    # VRL: `TrlParser(dataclass_types=[MyArguments]).parse_args_and_config()[0]` with `--config GRPO_on_hard_config.yaml`
    write(tmp_path, {
        "train.py": """
            from dataclasses import dataclass
            from transformers import AutoModelForCausalLM
            from trl import GRPOConfig, TrlParser

            @dataclass
            class MyArguments:
                model_name: str
                per_device_train_batch_size: int
                bf16: bool

            training_args = TrlParser(dataclass_types=[MyArguments]).parse_args_and_config()[0]
            model = AutoModelForCausalLM.from_pretrained(training_args.model_name)
            config = GRPOConfig(output_dir="out", bf16=training_args.bf16,
                                per_device_train_batch_size=training_args.per_device_train_batch_size)
            """,
        "cfg.yaml": "model_name: Qwen/Qwen2.5-Math-1.5B\nper_device_train_batch_size: 5\nbf16: true\n",
        "run.sh": "accelerate launch train.py --config cfg.yaml\n",
    })
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert (settings.model.value, settings.batch_size.value, settings.mixed_precision.value) == ("Qwen/Qwen2.5-Math-1.5B", 5, "bf16")


def test_a_command_kept_in_variables_and_run_by_eval_is_a_launch(tmp_path):
    # LESS: warmup_lora_train.sh sources base_training_args.sh (`export header="torchrun ... -m less.train.train"`,
    # `export base_training_args="--bf16 True ..."`) and runs `eval "$header" "$training_args"`; VLM2Vec keeps the
    # command in `cmd="..."`, shows it with `echo $cmd` (no launch) and runs `eval $cmd`, three folders down
    write(tmp_path, {
        "less/__init__.py": "",
        "less/train/__init__.py": "",
        "less/train/train.py": "from transformers import TrainingArguments\n",
        "less/scripts/train/base_training_args.sh": """
            #!/bin/bash
            export header="torchrun --nproc_per_node 1 \\
            -m less.train.train"
            export base_training_args="--do_train True \\
            --max_seq_length 2048 \\
            --per_device_train_batch_size 1"
            """,
        "less/scripts/train/warmup_lora_train.sh": """
            #!/bin/bash
            source less/scripts/train/base_training_args.sh
            model_path=$1
            training_args="$base_training_args --model_name_or_path $model_path"
            eval "$header" "$training_args"
            """,
        "train.py": "from transformers import TrainingArguments\n",
        "experiments/public/train/run.sh": """
            cmd="CUDA_VISIBLE_DEVICES=0,1 torchrun --nproc_per_node=2 train.py --per_device_train_batch_size 128"
            echo $cmd
            eval $cmd
            """,
    })
    (less,) = launches(tmp_path, "less/train/train.py")
    assert (less.line, less.options["max_seq_length"], less.options["per_device_train_batch_size"]) == (5, "2048", "1")
    (vlm,) = launches(tmp_path)
    assert (vlm.file, vlm.line, vlm.processes) == (str(tmp_path / "experiments/public/train/run.sh"), 3, 2)


def test_argparse_options_a_sibling_module_parses_take_the_launchers_values(tmp_path):
    # MOSS-RLHF (holdout8): `opt = parse_args()` from config_rm.py, which builds an argparse parser and returns
    # `parser.parse_args()`; train_rm.sh passes `--batch_size 4 --gradient_checkpoint`
    write(tmp_path, {
        "config_rm.py": """
            import argparse

            def parse_args(*args):
                parser = argparse.ArgumentParser()
                parser.add_argument('--batch_size', type=int, default=8)
                parser.add_argument('--lr', type=float, default=5e-6)
                parser.add_argument('--gradient_checkpoint', action='store_true')
                args = parser.parse_args()
                return args
            """,
        "train_rm.py": """
            import torch
            from transformers import AutoModelForCausalLM
            from config_rm import parse_args

            def main(opt):
                model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
                if opt.gradient_checkpoint:
                    model.gradient_checkpointing_enable()
                loader = torch.utils.data.DataLoader(data, batch_size=opt.batch_size)
                optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr)
                for batch in loader:
                    model(**batch).loss.backward()
                    optimizer.step()

            if __name__ == "__main__":
                opt = parse_args()
                main(opt)
            """,
        "train_rm.sh": "accelerate launch --num_processes 8 train_rm.py --batch_size 4 --gradient_checkpoint\n",
    })
    settings = analyze(read_source(str(tmp_path / "train_rm.py")), Settings(root=tmp_path)).settings
    assert settings.batch_size.value == 4 and settings.batch_size.file.endswith("train_rm.sh")
    assert settings.checkpointing.value == "full"
    (tmp_path / "train_rm.sh").write_text("accelerate launch --num_processes 8 train_rm.py\n")
    settings = analyze(read_source(str(tmp_path / "train_rm.py")), Settings(root=tmp_path)).settings
    assert settings.batch_size.value == 8 and settings.batch_size.file.endswith("config_rm.py")


LOOP_SCRIPT = """
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

accelerator = Accelerator({kwargs})
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
optimizer = torch.optim.AdamW(model.parameters())
model, optimizer = accelerator.prepare(model, optimizer)
for batch in loader:
    accelerator.backward(model(**batch).loss)
"""


@pytest.mark.parametrize("kwargs, line, expected", [
    ("", "accelerate launch --config_file acc.yaml train.py", "bf16"),  # the config's mixed_precision
    ("", "accelerate launch --config_file acc.yaml --mixed_precision fp16 train.py", "fp16"),  # the line's wins
    ("mixed_precision='fp16'", "accelerate launch --config_file acc.yaml train.py", "fp16"),  # the script's wins
])
def test_accelerates_mixed_precision_comes_from_its_config_file_or_launch_line(tmp_path, kwargs, line, expected):
    # MOSS-RLHF, MFTCoder (holdouts): `accelerate launch --config_file accelerate_config.yaml` with `mixed_precision: bf16`
    write(tmp_path, {"train.py": LOOP_SCRIPT.format(kwargs=kwargs), "acc.yaml": "distributed_type: MULTI_GPU\nmixed_precision: bf16\nnum_processes: 4\n",
                     "run.sh": line + "\n"})
    assert analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.mixed_precision.value == expected


def test_a_launch_run_from_above_the_checkout_and_torchs_wrapper_checkpointing(tmp_path):
    # open_flamingo (holdout8): `srun python open_flamingo/open_flamingo/train/train.py ... --gradient_checkpointing`,
    # run from the folder above the checkout; the script wraps the layers with `apply_activation_checkpointing`
    write(tmp_path, {
        "open_flamingo/train/train.py": """
            import argparse
            import torch
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

            parser = argparse.ArgumentParser()
            parser.add_argument("--batch_size", type=int, default=128)
            parser.add_argument("--gradient_checkpointing", action="store_true")
            args = parser.parse_args()
            model = build()
            if args.gradient_checkpointing:
                apply_activation_checkpointing(model)
            loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size)
            for batch in loader:
                model(batch).sum().backward()
            """,
        "open_flamingo/scripts/run_train.sh": "srun --cpu_bind=v python open_flamingo/open_flamingo/train/train.py --batch_size 64 --gradient_checkpointing\n",
    })
    settings = analyze(read_source(str(tmp_path / "open_flamingo/train/train.py")), Settings(root=tmp_path)).settings
    assert (settings.batch_size.value, settings.checkpointing.value) == (64, "full")
    assert "apply_activation_checkpointing" in settings.checkpointing.note


def test_kwargs_assigned_in_a_function_defined_above_the_parse_count(tmp_path):
    # DHS-LLM-Workshop (holdout2): `def main(model_args, data_args, training_args)` sets
    # `training_args.gradient_checkpointing_kwargs = {"use_reentrant": model_args.use_reentrant}`; the parse is in
    # the `__main__` block below it; run_deepspeed.sh passes `--use_reentrant False`
    write(tmp_path, {
        "requirements.txt": "transformers==4.40.0\n",
        "train.py": """
            from dataclasses import dataclass, field
            from transformers import AutoModelForCausalLM, HfArgumentParser, Trainer, TrainingArguments

            @dataclass
            class ModelArguments:
                use_reentrant: bool = field(default=True)

            def main(model_args, training_args):
                model = AutoModelForCausalLM.from_pretrained("m")
                if training_args.gradient_checkpointing:
                    training_args.gradient_checkpointing_kwargs = {"use_reentrant": model_args.use_reentrant}
                Trainer(model=model, args=training_args).train()

            if __name__ == "__main__":
                parser = HfArgumentParser((ModelArguments, TrainingArguments))
                model_args, training_args = parser.parse_args_into_dataclasses()
                main(model_args, training_args)
            """,
        "run.sh": "torchrun train.py --gradient_checkpointing True --use_reentrant {value}\n",
    })
    run = (tmp_path / "run.sh").read_text()
    (tmp_path / "run.sh").write_text(run.format(value="False"))
    assert "CKPT201" not in {f.code for f in check(tmp_path)}
    (tmp_path / "run.sh").write_text(run.format(value="True"))
    assert "CKPT102" in {f.code for f in check(tmp_path)}  # the explicit reentrant choice, at the assignment


PARSED_ARGS = """
    from transformers import AutoModelForCausalLM, HfArgumentParser, Trainer, TrainingArguments
    parser = HfArgumentParser((TrainingArguments,))
    (training_args,) = parser.parse_args_into_dataclasses()
    model = AutoModelForCausalLM.from_pretrained("gpt2")
    {explicit}
    trainer = Trainer(
        model=model,
        args=training_args,
    )
    trainer.train()
"""


def _parsed_trainer(root: Path, explicit: str) -> list:
    write(root, {
        "train.py": PARSED_ARGS.format(explicit=explicit),
        "requirements.txt": "transformers==4.46.0\n",
        "run.sh": "python train.py --gradient_checkpointing --output_dir out\n",
    })
    return [f for f in check(root) if f.code == "CKPT201"]


def test_reentrant_trainer_from_parsed_arguments_is_reported_at_the_parser(tmp_path):
    assert [f.span.start.line for f in _parsed_trainer(tmp_path, "")] == [2]


def test_an_explicit_enable_on_another_path_than_the_trainers_is_its_own_finding(tmp_path):
    found = _parsed_trainer(tmp_path, "if training_args.seed == 1: model.gradient_checkpointing_enable()")
    assert sorted(f.span.start.line for f in found) == [2, 5]


def test_an_explicit_enable_before_a_parsed_trainer_carries_both(tmp_path):
    # holdout3 (BELLE): `if training_args.gradient_checkpointing: model.gradient_checkpointing_enable()` and the
    # Trainer's own call from the same arguments: one finding, at the script's call, naming the Trainer's too
    found = _parsed_trainer(tmp_path, "if training_args.gradient_checkpointing: model.gradient_checkpointing_enable()")
    assert [f.span.start.line for f in found] == [5]
    assert "the Trainer enables it again at `train()`" in found[0].message
    assert "run.sh:1" in found[0].message


def test_a_launcher_in_a_scripts_folder_runs_the_bare_name_of_the_folder_above(tmp_path):
    # Mantis (holdout4): `mantis/train/scripts/train_qwen2_vl.sh` runs `accelerate launch train_qwen2_vl.py ...` from
    # `mantis/train/`, where the script lies
    write(tmp_path, {
        "pkg/train/train.py": "print()\n",
        "pkg/train/scripts/run.sh": "accelerate launch --num_processes=2 train.py --gradient_checkpointing True\n",
        "other/train.py": "print()\n",
    })
    found = launches(tmp_path, "pkg/train/train.py")
    assert [(Path(l.file).name, l.options.get("gradient_checkpointing")) for l in found] == [("run.sh", "True")]
    assert launches(tmp_path, "other/train.py") == []  # not in a folder above the launcher
    write(tmp_path, {"pkg/train/scripts/train.py": "print()\n"})  # a `train.py` beside the launcher is the one it runs
    assert launches(tmp_path, "pkg/train/train.py") == []


def test_the_command_a_readme_shows_after_cd_is_a_launch_and_its_pip_pins_are_the_versions(tmp_path, monkeypatch):
    # FlagEmbedding LLARA (holdout6): the README's ```shell block `cd ./pretrain` then `torchrun ... run.py --...`,
    # and `pip install transformers==4.41.0` under "Environment"; the folder has no requirements file
    monkeypatch.chdir(tmp_path)
    fence = "```"
    write(tmp_path, {
        "setup.py": "from setuptools import setup\nsetup(install_requires=['transformers>=4.44.2,<6'])\n",
        "research/llara/pretrain/run.py": HF_SCRIPT,
        "research/llara/finetune/run.py": HF_SCRIPT,
        "research/llara/README.md": f"""
            # LLARA
            {fence}bash
            pip install transformers==4.41.0 deepspeed
            {fence}
            Pretrain:
            {fence}shell
            cd ./pretrain
            torchrun --nproc_per_node 8 \\
            run.py \\
            --per_device_train_batch_size 2 \\
            --gradient_checkpointing
            {fence}
            Fine-tune:
            {fence}shell
            cd ./finetune
            $ torchrun --nproc_per_node 4 run.py --per_device_train_batch_size 3
            {fence}
            python run.py --per_device_train_batch_size 99
            """,
    })
    pretrain = analyze(read_source(str(tmp_path / "research/llara/pretrain/run.py")), Settings(root=tmp_path))
    assert pretrain.settings.batch_size.describe() == "2 (research/llara/README.md:10)"  # the line of the option
    assert pretrain.settings.gpus.value == 8
    assert str(pretrain.versions.get("transformers").version) == "4.41.0"
    finetune = analyze(read_source(str(tmp_path / "research/llara/finetune/run.py")), Settings(root=tmp_path))
    assert finetune.settings.batch_size.value == 3  # the next block's `cd` starts from the README's folder; prose is no command
    (finding,) = [f for f in check(tmp_path, "research/llara/pretrain/run.py") if f.code == "CKPT201"]
    assert "research/llara/README.md:11" in finding.message and "4.41.0 (pinned in research/llara/README.md)" in finding.message


def test_an_unknown_substitution_stays_one_word_of_the_command():
    # openthaigpt (holdout): `accelerate launch --num_processes $(( 4 * $COUNT_NODE )) --multi_gpu ... train.py`
    text = "accelerate launch --num_processes $(( 4 * $COUNT_NODE )) --multi_gpu train.py --bf16 True\n" \
           "torchrun --nproc_per_node $(nvidia-smi -L | wc -l) run.py --x 1\n"
    (first, second) = [words for _, words in commands(text)]
    assert first[4:7] == ["--multi_gpu", "train.py", "--bf16"] and first[3].startswith("$((")
    assert second[3:] == ["run.py", "--x", "1"]


def test_a_readme_command_yields_to_the_projects_own_launcher(tmp_path):
    write(tmp_path, {
        "train.py": HF_SCRIPT,
        "README.md": "```\npython train.py --per_device_train_batch_size 2\n```\n",
        "run.sh": "python train.py --per_device_train_batch_size 5\n",
    })
    assert [Path(l.file).name for l in launches(tmp_path)] == ["run.sh", "README.md"]
    assert analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.batch_size.value == 5


def test_a_wrapper_that_imports_and_calls_the_scripts_entry_point_is_its_launch(tmp_path):
    # LLaVA-NeXT (holdout7): scripts/train/*.sh run `llava/train/train_mem.py`, which is
    # `from llava.train.train import train` + `train()`; the options are train.py's
    write(tmp_path, {
        "llava/train/train.py": HF_SCRIPT,
        "llava/train/train_mem.py": "from llava.train.train import train\n\nif __name__ == '__main__':\n    train()\n",
        "llava/train/train_xformers.py": "from .train import (\n    train,\n)\ntrain(attn_implementation='sdpa')\n",
        "llava/train/merge.py": "from llava.train.train import train\nprint(train)\n",  # imports, never calls: no wrapper
        "scripts/train/a.sh": "torchrun --nproc_per_node 4 llava/train/train_mem.py --per_device_train_batch_size 3\n",
        "scripts/train/b.sh": "python -m llava.train.train_xformers --per_device_train_batch_size 5\n",
        "scripts/train/c.sh": "python llava/train/merge.py --per_device_train_batch_size 7\n",
    })
    found = launches(tmp_path, "llava/train/train.py")
    assert [(Path(l.file).name, l.options["per_device_train_batch_size"]) for l in found] == [("a.sh", "3"), ("b.sh", "5")]
    assert analyze(read_source(str(tmp_path / "llava/train/train.py")), Settings(root=tmp_path)).settings.batch_size.value == 3


def test_arguments_parsed_in_a_sibling_module_take_the_launchers_options(tmp_path):
    # sophus1004/Portfolio (holdout6): `args = parse_args()` from `arguments.py`, which returns
    # `HfArgumentParser((...)).parse_args_into_dataclasses()`; the script indexes the tuple
    write(tmp_path, {
        "trainer/arguments.py": """
            from dataclasses import dataclass, field
            from transformers import HfArgumentParser

            @dataclass
            class ModeArguments:
                use_lora: bool = field(default=True)
                gradient_checkpointing: bool = field(default=False)

            @dataclass
            class TrainArguments:
                per_device_train_batch_size: int = field(default=8)

            def parse_args():
                parser = HfArgumentParser((ModeArguments, TrainArguments))
                return parser.parse_args_into_dataclasses()
            """,
        "trainer/train.py": """
            from arguments import parse_args
            from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

            args = parse_args()
            mode_args, train_args = args[0], args[1]
            training_args = TrainingArguments(output_dir="o", per_device_train_batch_size=train_args.per_device_train_batch_size)
            model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
            if mode_args.gradient_checkpointing is True:
                training_args.gradient_checkpointing = True
            Trainer(model=model, args=training_args).train()
            """,
        "requirements.txt": "transformers==4.46.1\n",
        "run.sh": "python trainer/train.py --gradient_checkpointing True --per_device_train_batch_size 1\n",
    })
    settings = analyze(read_source(str(tmp_path / "trainer/train.py")), Settings(root=tmp_path)).settings
    assert settings.batch_size.value == 1
    assert settings.checkpointing.value == "full"  # the flag assigned after the arguments were built, on 4.x
    assert [f.code for f in check(tmp_path, "trainer/train.py") if f.code == "CKPT201"] == ["CKPT201"]
    # on 5.23+ the Trainer reads `activation_checkpointing`: the old attribute assigned late turns nothing on
    later = analyze(read_source(str(tmp_path / "trainer/train.py")), Settings(root=tmp_path, target_versions={"transformers": "5.24"}))
    assert later.settings.checkpointing.value == "none"


def test_a_trainer_subclass_of_a_star_imported_trainer_takes_the_parsed_arguments(tmp_path):
    # FlagEmbedding: `from transformers.trainer import *` then `class BiTrainer(Trainer)` in a sibling module
    write(tmp_path, {
        "trainer.py": "from transformers.trainer import *\n\n\nclass BiTrainer(Trainer):\n    pass\n",
        "run.py": HF_SCRIPT.replace("Trainer, TrainingArguments", "TrainingArguments").replace(
            "from transformers", "from trainer import BiTrainer as Trainer\nfrom transformers"),
        "requirements.txt": "transformers==4.46.0\n",
        "run.sh": "python run.py --gradient_checkpointing\n",
    })
    assert [f.code for f in check(tmp_path, "run.py") if f.code == "CKPT201"] == ["CKPT201"]


def test_a_quoted_multi_line_variable_and_bash_c_under_srun_are_read_as_the_launch(tmp_path):
    # InternLM-XComposer: `DISTRIBUTED_ARGS="` over several lines, then `torchrun $DISTRIBUTED_ARGS finetune.py ...`;
    # gritlm: `srun ... bash -c "$LAUNCHER $CMD"` with `accelerate launch --rdzv_conf rdzv_backend=c10d` (a value)
    write(tmp_path, {
        "finetune/finetune.py": "print()\n",
        "finetune/finetune.sh": (
            'DISTRIBUTED_ARGS="\n    --nproc_per_node 8 \\\n    --nnodes 1\n"\n'
            "torchrun $DISTRIBUTED_ARGS finetune.py --per_device_train_batch_size 1\n"
        ),
        "gritlm/training/run.py": "print()\n",
        "scripts/training/train.sh": (
            'LAUNCHER="accelerate launch \\\n    --rdzv_conf rdzv_backend=c10d \\\n    --tee 3 \\\n    "\n'
            'export CMD=" \\\n    -m training.run \\\n    --per_device_train_batch_size 32 \\\n    --gradient_checkpointing\n    "\n'
            "cd gritlm\n"
            'srun --jobid $SLURM_JOB_ID bash -c "$LAUNCHER $CMD" 2>&1\n'
        ),
    })
    (torchrun,) = launches(tmp_path, "finetune/finetune.py")
    assert (torchrun.processes, torchrun.options) == (8, {"per_device_train_batch_size": "1"})
    (accelerate,) = launches(tmp_path, "gritlm/training/run.py")
    assert accelerate.runner == "accelerate" and accelerate.options["per_device_train_batch_size"] == "32"
    assert accelerate.options["gradient_checkpointing"] is True


def test_another_script_run_from_the_scripts_folder_is_not_its_launch(tmp_path):
    # InternLM-XComposer's finetune/README.md runs `python3 merge_peft_adapter.py` beside finetune.py
    write(tmp_path, {
        "finetune/finetune.py": "print()\n",
        "finetune/merge_peft_adapter.py": "print()\n",
        "finetune/README.md": "After finetune.py:\n```\npython3 merge_peft_adapter.py --base_model_name=x\n```\n",
    })
    assert launches(tmp_path, "finetune/finetune.py") == []


def test_a_launcher_that_forwards_its_arguments_gets_those_its_caller_gives(tmp_path):
    # HunyuanDiT (holdout11): train.sh runs `sh $(dirname "$0")/run_g.sh --batch-size 1 --gradient-checkpointing`, and
    # run_g.sh runs `deepspeed hydit/train_deepspeed.py ${params} "$@"`
    write(tmp_path, {
        "hydit/train_deepspeed.py": "import argparse\n",
        "hydit/run_g.sh": """
            params=" --qk-norm --model DiT-g/2 "
            deepspeed hydit/train_deepspeed.py ${params} "$@"
            """,
        "hydit/train.sh": """
            batch_size=1
            sh $(dirname "$0")/run_g.sh \\
                --batch-size ${batch_size} \\
                --gradient-checkpointing \\
                "$@"
            """,
    })
    found = launches(tmp_path, "hydit/train_deepspeed.py")
    given = next(l for l in found if "gradient_checkpointing" in l.options)
    assert (given.options["batch_size"], given.options["model"], given.options["gradient_checkpointing"]) == ("1", "DiT-g/2", True)
    assert any(l.forwards and "batch_size" not in l.options for l in found)  # run as it is, it passes on what it is given


def test_a_flag_set_by_hand_on_a_projects_model_is_its_checkpointing(tmp_path):
    # Open-Sora-Plan (holdout11): `model = Diffusion_models[args.model](...)`, then
    # `model.gradient_checkpointing = args.gradient_checkpointing`; its module's blocks call torch's checkpoint
    write(tmp_path, {
        "models/dit.py": """
            import torch
            from torch import nn

            class DiT(nn.Module):
                def forward(self, x):
                    if self.gradient_checkpointing:
                        return torch.utils.checkpoint.checkpoint(self.block, x{reentrant})
                    return self.block(x)

            Diffusion_models = {{"DiT": DiT}}
            """,
        "train.py": """
            import argparse
            from models.dit import Diffusion_models

            parser = argparse.ArgumentParser()
            parser.add_argument("--model", default="DiT")
            parser.add_argument("--gradient_checkpointing", action="store_true")
            args = parser.parse_args()
            model = Diffusion_models[args.model]()
            model.gradient_checkpointing = args.gradient_checkpointing
            """,
        "run.sh": "accelerate launch train.py --gradient_checkpointing\n",
    })
    dit = (tmp_path / "models/dit.py").read_text()
    for reentrant, reported in ((", use_reentrant=False", False), ("", True)):
        (tmp_path / "models/dit.py").write_text(dit.format(reentrant=reentrant))
        analysis = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path))
        assert analysis.settings.checkpointing.value == "full"
        found = findings_of("CKPT101", tmp_path)
        assert [f.span.start.line for f in found] == ([9] if reported else [])
    (tmp_path / "run.sh").write_text("accelerate launch train.py\n")
    assert analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.checkpointing.value == "none"


def test_an_optimizer_a_factory_is_asked_for_by_name(tmp_path):
    # yolov9 (holdout11): `smart_optimizer(model, opt.optimizer, ...)` with `--optimizer` defaulting to "SGD"; the
    # factory's own `torch.optim.Adam(...)` under `if name == "Adam"` is not the one this run makes
    write(tmp_path, {
        "utils/torch_utils.py": """
            import torch

            def smart_optimizer(model, name="Adam", lr=0.001):
                if name == "Adam":
                    return torch.optim.Adam(model.parameters(), lr=lr)
                return torch.optim.SGD(model.parameters(), lr=lr)
            """,
        "train.py": """
            import argparse
            from utils.torch_utils import smart_optimizer

            parser = argparse.ArgumentParser()
            parser.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="SGD")
            opt = parser.parse_args()
            optimizer = smart_optimizer(model, opt.optimizer, 0.01)
            for batch in loader:
                model(batch).backward()
            """,
    })
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert (settings.optimizer.value, settings.optimizer.line) == ("sgd", 5)


def test_a_model_a_classmethod_of_the_projects_class_makes_runs_its_checkpoint_calls(tmp_path):
    # LinB203/FSDP-Training (holdout12): `model = Transformer.from_model_args(config)`, then
    # `model.gradient_checkpointing = args.gradient_checkpointing`, run.sh passing the flag
    write(tmp_path, {
        "models/model.py": """
            import torch.utils.checkpoint as cp
            from torch import nn

            class Transformer(nn.Module):
                @classmethod
                def from_model_args(cls, args):
                    return cls()

                def forward(self, h):
                    for layer in self.layers:
                        h = cp.checkpoint(layer, h) if self.gradient_checkpointing else layer(h)
                    return h
            """,
        "train.py": """
            import argparse
            from models.model import Transformer

            parser = argparse.ArgumentParser()
            parser.add_argument("--gradient_checkpointing", action="store_true", default=False)
            args = parser.parse_args()
            model = Transformer.from_model_args(None)
            model.gradient_checkpointing = args.gradient_checkpointing
            """,
        "run.sh": "torchrun --nproc_per_node 8 train.py --gradient_checkpointing\n",
    })
    found = findings_of("CKPT101", tmp_path)
    assert [f.span.start.line for f in found] == [8]
    assert "own `Transformer`" in found[0].message and "models/model.py:11" in found[0].message


def test_a_launched_sequence_length_wins_over_the_default_a_project_function_reads(tmp_path):
    # multi_token (holdout12): the README passes `--model_max_length 2048` to the script's HfArgumentParser; the project
    # function it calls reads `training_args.model_max_length` as the dataclass default (512)
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/training.py": """
            from dataclasses import dataclass, field
            import transformers

            @dataclass
            class TrainingArguments(transformers.TrainingArguments):
                model_max_length: int = field(default=512)

            def train_for_modalities(training_args):
                tokenizer = transformers.AutoTokenizer.from_pretrained("x", model_max_length=training_args.model_max_length)
                trainer = transformers.Trainer(args=training_args)
                trainer.train()
            """,
        "train.py": """
            import transformers
            from pkg.training import TrainingArguments, train_for_modalities

            parser = transformers.HfArgumentParser((TrainingArguments,))
            (training_args,) = parser.parse_args_into_dataclasses()
            train_for_modalities(training_args)
            """,
        "README.md": "```\ndeepspeed train.py --per_device_train_batch_size 1 --model_max_length 2048\n```\n",
    })
    seq = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.seq_len
    assert seq.value == 2048 and seq.file.endswith("README.md")


def test_a_unet_whose_blocks_live_in_a_module_beside_it_runs_their_checkpoint_calls(tmp_path):
    # hallo (holdout13): `UNet3DConditionModel.from_pretrained_2d(...)`, then `denoising_unet.enable_gradient_checkpointing()`;
    # the class's module imports its blocks from `unet_3d_blocks.py`, which calls torch's checkpoint
    write(tmp_path, {
        "hallo/__init__.py": "",
        "hallo/models/__init__.py": "",
        "hallo/models/unet_3d_blocks.py": """
            import torch

            class CrossAttnDownBlock3D(torch.nn.Module):
                def forward(self, x):
                    if self.gradient_checkpointing:
                        return torch.utils.checkpoint.checkpoint(self.resnet, x)
                    return self.resnet(x)
            """,
        "hallo/models/unet_3d.py": """
            from torch import nn
            from .unet_3d_blocks import CrossAttnDownBlock3D

            class UNet3DConditionModel(nn.Module):
                @classmethod
                def from_pretrained_2d(cls, path):
                    return cls()
            """,
        "scripts/train_stage2.py": """
            from hallo.models.unet_3d import UNet3DConditionModel

            denoising_unet = UNet3DConditionModel.from_pretrained_2d("pretrained/unet")
            denoising_unet.enable_gradient_checkpointing()
            """,
    })
    found = findings_of("CKPT101", tmp_path, "scripts/train_stage2.py")
    assert [f.span.start.line for f in found] == [4]
    assert "`UNet3DConditionModel`" in found[0].message and "hallo/models/unet_3d_blocks.py:6" in found[0].message


def test_a_yaml_config_read_with_omegaconf_gives_its_values_through_attributes(tmp_path):
    # Moore-AnimateAnyone (holdout13): `config = OmegaConf.load(args.config)` when `args.config[-5:] == ".yaml"`, the
    # README passing `--config configs/train/stage1.yaml`; `cfg.solver.gradient_checkpointing` is the file's False
    write(tmp_path, {
        "configs/train/stage1.yaml": "data:\n  train_bs: 4\nsolver:\n  gradient_checkpointing: {flag}\n",
        "train.py": """
            import argparse
            from omegaconf import OmegaConf
            from transformers import AutoModelForCausalLM

            def main(cfg):
                model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
                if cfg.solver.gradient_checkpointing:
                    model.gradient_checkpointing_enable()
                loader = torch.utils.data.DataLoader(data, batch_size=cfg.data.train_bs, shuffle=True)

            if __name__ == "__main__":
                parser = argparse.ArgumentParser()
                parser.add_argument("--config", type=str, default="./configs/training/stage1.yaml")
                args = parser.parse_args()
                if args.config[-5:] == ".yaml":
                    config = OmegaConf.load(args.config)
                else:
                    raise ValueError("Do not support this format config file")
                main(config)
            """,
        "README.md": "```\naccelerate launch train.py --config configs/train/stage1.yaml\n```\n",
    })
    text = (tmp_path / "configs/train/stage1.yaml").read_text()
    for flag, plan in (("False", "none"), ("True", "full")):
        (tmp_path / "configs/train/stage1.yaml").write_text(text.format(flag=flag))
        settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
        assert (settings.checkpointing.value, settings.batch_size.value) == (plan, 4)


def test_a_field_the_script_declares_but_never_reads_is_an_assumed_sequence_length(tmp_path):
    # malaya (holdout14): the launcher passes `--block_size 24576`, the script's own dataclass declares `block_size`,
    # and nothing in it reads it (the dataset is pre-packed; Mantis' data module reads its `--max_seq_len`): a reading,
    # but an assumed one, so no error-level CKPT402 rests on it
    write(tmp_path, {
        "train.py": """
            from dataclasses import dataclass, field
            from typing import Optional
            from transformers import HfArgumentParser, TrainingArguments

            @dataclass
            class DataArguments:
                block_size: Optional[int] = field(default=None)
                train_file: Optional[str] = field(default=None)

            parser = HfArgumentParser((DataArguments, TrainingArguments))
            data_args, training_args = parser.parse_args_into_dataclasses()
            {use}
            """,
        "run.sh": "torchrun train.py --block_size 24576 --per_device_train_batch_size 3 --output_dir out\n",
    })
    script = (tmp_path / "train.py").read_text()
    for use, stated in (("", False), ("print(data_args.block_size)", True)):
        (tmp_path / "train.py").write_text(script.replace("{use}", use))
        found = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings.seq_len
        assert (found.value, found.stated) == (24576, stated)
        assert stated or "declares but never reads" in found.note


@pytest.mark.parametrize("pin, reported", [("torch==2.0.1", False), ("torch==2.1.0", True), ("torch>=2.0", True), ("", True)])
def test_an_unset_use_reentrant_is_reported_where_torch_warns_about_it(tmp_path, pin, reported):
    # CKPT101 applies from torch 2.1 (the warning, pytorch/pytorch#100551); Moore-AnimateAnyone (holdout13) pins 2.0.1,
    # where a project UNet's `checkpoint(...)` without it runs the reentrant default without a word
    write(tmp_path, {
        "requirements.txt": pin + "\n",
        "train.py": """
            from torch.utils.checkpoint import checkpoint

            def block_forward(block, x):
                return checkpoint(block, x)
            """,
    })
    found = findings_of("CKPT101", tmp_path)
    assert [f.span.start.line for f in found] == ([4] if reported else [])


def test_parsed_arguments_are_no_trainer_switch_in_a_script_that_runs_its_own_step(tmp_path):
    # Finetune_llama2_Megatron (holdout15): TrainingArguments parsed from start.sh's `--gradient_checkpointing`, but no
    # Trainer: the script's own `if training_args.gradient_checkpointing: model.gradient_checkpointing_enable()` and loop
    write(tmp_path, {
        "train.py": """
            from transformers import AutoModelForCausalLM, HfArgumentParser, TrainingArguments

            parser = HfArgumentParser((TrainingArguments,))
            (training_args,) = parser.parse_args_into_dataclasses()
            model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
            if training_args.gradient_checkpointing:
                model.gradient_checkpointing_enable()
            model.train()
            for batch in loader:
                model(**batch).loss.backward()
            """,
        "start.sh": "torchrun train.py --output_dir out --gradient_checkpointing\n",
        "requirements.txt": "transformers==4.40.0\n",
    })
    found = findings_of("CKPT201", tmp_path)
    assert [f.span.start.line for f in found] == [7]  # the script's own call, not the parser at line 4


PEFT_TRAINER = """
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

model = get_peft_model(AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-3B"), LoraConfig(r=16))
args = TrainingArguments("out", gradient_checkpointing=True{find_unused})
Trainer(model=model, args=args, train_dataset=ds).train()
"""


@pytest.mark.parametrize("launcher,reported", [
    ("torchrun --nproc_per_node 2 train.py\n", True),
    ("python train.py\n", False),  # one process: no DDP
    ("deepspeed --num_gpus 2 train.py --deepspeed ds.json\n", False),  # DeepSpeed's engine, not DDP
])
def test_the_trainer_gives_ddp_find_unused_parameters_for_a_peft_model(tmp_path, launcher, reported):
    # transformers' Trainer: a PeftModel is no PreTrainedModel, so `ddp_find_unused_parameters=None` becomes
    # `find_unused_parameters=True` [H7]; with reentrant checkpointing DDP fails [T7] (trl#921, accelerate#3536)
    write(tmp_path, {"train.py": PEFT_TRAINER.format(find_unused=""), "run.sh": launcher,
                     "requirements.txt": "transformers==4.41.2\npeft==0.11.1\ntorch==2.3.1\n", "ds.json": "{}"})
    found = findings_of("CKPT301", tmp_path)
    assert bool(found) is reported
    if reported:
        assert "the Trainer gives DDP (2 processes) for a PEFT model" in found[0].message
    write(tmp_path, {"train.py": PEFT_TRAINER.format(find_unused=", ddp_find_unused_parameters=False")})
    assert findings_of("CKPT301", tmp_path) == []


def test_a_launcher_on_more_gpus_is_a_run_of_its_own_for_the_distributed_rules(tmp_path):
    # guc1/Meaning-in-Temperatures: one sbatch runs the script with `python`, another with `accelerate launch` on the
    # two GPUs its job requests (no process count: accelerate starts one per visible GPU)
    write(tmp_path, {"train.py": PEFT_TRAINER.format(find_unused=""),
                     "requirements.txt": "transformers==4.41.2\npeft==0.11.1\ntorch==2.3.1\n",
                     "run_1gpu.sbatch": "#!/bin/bash\n#SBATCH --gpus=1\npython train.py\n",
                     "run_2gpu.sbatch": "#!/bin/bash\n#SBATCH --gpus=2\naccelerate launch train.py\n"})
    (found,) = findings_of("CKPT301", tmp_path)
    assert found.message.endswith("run_2gpu.sbatch:3 runs it)") and "(only as " in found.message
    write(tmp_path, {"run_2gpu.sbatch": "#!/bin/bash\n#SBATCH --gpus=1\naccelerate launch train.py\n"})
    assert findings_of("CKPT301", tmp_path) == []


@pytest.mark.parametrize("text,gpus", [("#SBATCH --gpus=2\n", 2), ("#SBATCH --gres=gpu:a100:4\n#SBATCH -N 1\n", 4),
                                       ("#SBATCH --gpus-per-node=8\n#SBATCH --nodes=2\n", 8),
                                       ("#SBATCH --gpus=8\n#SBATCH --nodes=2\n", None), ("echo hi\n", None)])
def test_the_gpus_a_slurm_job_requests(text, gpus):
    from ckpt_doctor.analysis.launchers import job_gpus

    assert job_gpus(text) == gpus


def test_the_trainers_enable_at_train_decides_the_mode_of_an_earlier_call(tmp_path):
    # guc1 (holdout19): `prepare_model_for_kbit_training(base)` turns reentrant checkpointing on, then the Trainer turns
    # it on again at `train()` with its own kwargs; the last one is the mode the DDP step runs with
    script = PEFT_TRAINER.replace("model = get_peft_model(", "model = get_peft_model(prepare_model_for_kbit_training(").replace(
        ', LoraConfig(r=16))', '), LoraConfig(r=16))').replace("from peft import", "from peft import prepare_model_for_kbit_training,")
    files = {"run.sh": "torchrun --nproc_per_node 2 train.py\n", "requirements.txt": "transformers==4.41.2\npeft==0.11.1\ntorch==2.3.1\n"}
    write(tmp_path, {**files, "train.py": script.format(find_unused="")})
    assert [f.span.start.line for f in findings_of("CKPT301", tmp_path)] == [5]  # the Trainer's arguments only
    kwargs = ', gradient_checkpointing_kwargs={"use_reentrant": False}'
    write(tmp_path, {"train.py": script.format(find_unused=kwargs)})
    assert findings_of("CKPT301", tmp_path) == []


@pytest.mark.parametrize("read", ["json.loads(f.read())", "json.load(f)", "json.loads(Path(args.config).read_text())",
                                  "yaml.safe_load(f.read())"])
def test_a_json_config_read_as_text_gives_its_values(tmp_path, read):
    # sarelWeinberger/qwen-hebrew-finetuning (holdout20): `with open(args.config) as f: config = json.loads(f.read())`
    write(tmp_path, {
        "cpt_config.json": '{"model_name_or_path": "meta-llama/Llama-3.2-1B", "per_device_train_batch_size": 2, "max_seq_length": 4096}',
        "train.py": f"""
            import argparse, json, yaml
            from pathlib import Path
            from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

            parser = argparse.ArgumentParser()
            parser.add_argument("--config", type=str, default="cpt_config.json")
            args = parser.parse_args()
            with open(args.config, "r", encoding="utf8") as f:
                config = {read}
            model = AutoModelForCausalLM.from_pretrained(config["model_name_or_path"])
            targs = TrainingArguments("out", per_device_train_batch_size=config["per_device_train_batch_size"])
            ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=config["max_seq_length"]))
            Trainer(model=model, args=targs, train_dataset=ds).train()
            """,
    })
    settings = analyze(read_source(str(tmp_path / "train.py")), Settings(root=tmp_path)).settings
    assert (settings.model.value, settings.batch_size.value, settings.seq_len.value) == ("meta-llama/Llama-3.2-1B", 2, 4096)


def test_a_module_read_first_as_an_import_of_an_import_still_follows_its_own_imports(tmp_path):
    # HaiderDawoodKhan/LLM-Alignment (holdout16): `train_helpers` imports `model.policy`, so `model.policy` was read first
    # at the deepest level (no imports followed) and that reading was reused for the script's own call of
    # `build_policy_model`, whose `enable_grad_checkpointing_for_peft` (in `model/lora.py`) turns checkpointing on
    write(tmp_path, {
        "model/__init__.py": "",
        "model/lora.py": """
            def enable_grad_checkpointing_for_peft(model):
                model.gradient_checkpointing_enable()
            """,
        "model/policy.py": """
            from transformers import AutoModelForCausalLM
            from model.lora import enable_grad_checkpointing_for_peft

            def build_policy_model(name):
                model = AutoModelForCausalLM.from_pretrained(name)
                enable_grad_checkpointing_for_peft(model)
                return model
            """,
        "train_helpers.py": """
            from transformers import AutoTokenizer
            from model.policy import build_policy_model

            def build_reference(name):
                AutoTokenizer.from_pretrained(name)
                return build_policy_model(name)
            """,
        "train.py": """
            import torch
            from train_helpers import build_reference
            from model.policy import build_policy_model

            reference = build_reference("gpt2")
            model = build_policy_model("gpt2")
            optimizer = torch.optim.AdamW(model.parameters())
            for batch in loader:
                loss = model(**batch).loss
                loss.backward()
                optimizer.step()
            """,
    })
    found = findings_of("CKPT203", tmp_path)
    assert [f.span.start.line for f in found] == [6] and "model/lora.py:2" in found[0].message
