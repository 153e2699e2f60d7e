"""Cases found by running the checker on real training scripts (bench/field): each was a false
positive or a miss, reduced to a few lines."""

from __future__ import annotations

import json
import textwrap

from ckpt_doctor.config import Settings
from ckpt_doctor.check.lint import check_file, lint_text
from ckpt_doctor.analysis.source import SourceFile

NEWEST = {"torch": "2.13", "transformers": "5.24", "peft": "0.21", "trl": "1.16"}


def codes(code: str, targets: dict | None = None, select=("CKPT1", "CKPT2", "CKPT3")) -> list[tuple[str, int]]:
    text = textwrap.dedent(code)
    settings = Settings(target_versions=NEWEST if targets is None else targets, select=list(select))
    return [(f.code, f.span.start.line) for f in lint_text(SourceFile("t.py", text, text.encode()), settings)]


def test_use_cache_restored_in_another_function_is_not_reported():
    assert codes(
        """
        def train(model):
            model.config.use_cache = False
            trainer.train()
        def save(model, out):
            model.save_pretrained(out)
        def main():
            train(model)
            model.config.use_cache = True
            save(model, "out")
        """
    ) == []


def test_peft_adapters_carry_no_config_to_restore():
    assert codes(
        """
        from peft import get_peft_model
        model = get_peft_model(model, lora)
        model.config.use_cache = False
        trainer.train()
        model.save_pretrained("out")
        """
    ) == []


def test_a_merged_peft_model_does_save_its_config():
    assert codes(
        """
        from peft import get_peft_model
        model = get_peft_model(model, lora)
        model.config.use_cache = False
        trainer.train()
        merged = model.merge_and_unload()
        merged.save_pretrained("out")
        """
    ) == [("CKPT204", 7)]


def test_a_method_called_save_model_on_self_is_not_the_library_save():
    assert codes("model.config.use_cache = False\nclass Cb:\n    def on_save(self):\n        self.save_model('x')\n") == []


def test_prepare_model_for_int8_training_makes_inputs_require_grad():
    found = codes(
        """
        from peft import get_peft_model, prepare_model_for_int8_training
        from transformers import AutoModelForCausalLM, TrainingArguments
        model = AutoModelForCausalLM.from_pretrained("bigcode/starcoder", load_in_8bit=True)
        model = prepare_model_for_int8_training(model)
        model = get_peft_model(model, lora)
        args = TrainingArguments(output_dir="o", gradient_checkpointing=True)
        """,
        targets={"transformers": "4.28", "peft": "0.5"},
    )
    assert "CKPT202" not in [code for code, _ in found]


def test_no_kwargs_advice_before_transformers_4_35():
    found = codes(
        "from transformers import TrainingArguments\nargs = TrainingArguments(output_dir='o', gradient_checkpointing=True)\n",
        targets={"transformers": "4.28"},
    )
    assert found == []


def test_use_cache_rule_needs_a_model_with_a_kv_cache():
    clip = """
        from transformers import CLIPTextModel
        text_encoder = CLIPTextModel.from_pretrained("openai/clip-vit-large-patch14")
        text_encoder.gradient_checkpointing_enable()
        loss.backward()
        """
    assert codes(clip, select=["CKPT203"]) == []
    llm = clip.replace("CLIPTextModel", "AutoModelForCausalLM").replace("text_encoder", "model")
    assert codes(llm, select=["CKPT203"]) == [("CKPT203", 4)]


def test_checkpoint_wrapper_without_rng_state_and_lora_dropout():
    found = codes(
        """
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
        config = LoraConfig(r=8, lora_dropout=0.05)
        block = checkpoint_wrapper(block, preserve_rng_state=False)
        """
    )
    assert found == [("CKPT105", 4)]


def test_api_use_caps_the_guessed_version(monkeypatch):
    import ckpt_doctor.analysis.versions as versions

    monkeypatch.setattr(versions, "installed_version", lambda package: None)  # no pins, nothing installed
    script = """
        from transformers import TrainingArguments
        args = TrainingArguments(output_dir="o", evaluation_strategy="steps")
        args.gradient_checkpointing = True
        """
    # on transformers >= 5.23 this assignment is ignored (CKPT206); a script using
    # `evaluation_strategy` cannot run there, so the rule must not judge it by that release. On the 4.x
    # releases it runs on, the Trainer reads the assigned flag: reentrant checkpointing, reported at the config
    assert codes(script, targets={}) == [("CKPT201", 3)]
    assert codes(script, targets={"transformers": "5.24"}) == [("CKPT206", 4)]


def test_notebook_pip_pins_and_continued_magics(tmp_path):
    cells = [
        {"cell_type": "code", "source": ["%pip install --upgrade \\\n", "    transformers==4.44.2 \\\n", "    peft"], "metadata": {}, "outputs": [], "execution_count": None},
        {
            "cell_type": "code",
            "source": "from transformers import TrainingArguments\nargs = TrainingArguments(output_dir='o', gradient_checkpointing=True)\n",
            "metadata": {},
            "outputs": [],
            "execution_count": None,
        },
    ]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    result = check_file(str(path), Settings(select=["CKPT2"], root=tmp_path))
    assert result.error is None
    (finding,) = result.findings
    assert finding.code == "CKPT201" and finding.cell == 1
    assert "transformers 4.44.2 (pinned by %pip install in the notebook)" in finding.message


def test_subclasses_of_library_classes_are_those_classes():
    found = codes(
        """
        from dataclasses import dataclass, field
        import transformers
        from transformers import HfArgumentParser, Seq2SeqTrainer
        @dataclass
        class TrainingArguments(transformers.TrainingArguments):
            model_max_length: int = field(default=512)
        class MyTrainer(Seq2SeqTrainer):
            pass
        args = TrainingArguments(output_dir="o", gradient_checkpointing=True)
        MyTrainer(model=model, args=args).train()
        (training_args,) = HfArgumentParser((TrainingArguments,)).parse_args_into_dataclasses()
        training_args.gradient_checkpointing = True
        """,
        targets={"transformers": "5.24"},
        select=["CKPT205", "CKPT206"],
    )
    assert found == [("CKPT205", 10), ("CKPT206", 13)]


def test_a_peft_wrapper_is_not_the_model_load():
    from ckpt_doctor.analysis.facts import extract
    from ckpt_doctor.analysis.training import Training
    from ckpt_doctor.analysis.versions import TargetVersions

    facts = extract("from peft import PeftModel\nfrom transformers import IdeficsForVisionText2Text\n"
                    "m = IdeficsForVisionText2Text.from_pretrained('HuggingFaceM4/idefics-9b')\nm = PeftModel.from_pretrained(m, 'adapter')\n")
    loads = Training(facts, TargetVersions(NEWEST)).model_loads
    assert [c.line for c in loads] == [3]


def _settings(code: str):
    from ckpt_doctor.analysis.facts import extract
    from ckpt_doctor.analysis.settings import read_settings
    from ckpt_doctor.analysis.training import Training
    from ckpt_doctor.analysis.versions import TargetVersions

    return read_settings(Training(extract(textwrap.dedent(code)), TargetVersions(NEWEST)))


def test_training_arguments_from_the_command_line_keep_the_library_batch_default():
    settings = _settings(
        """
        from transformers import HfArgumentParser, Trainer, TrainingArguments
        (training_args,) = HfArgumentParser((TrainingArguments,)).parse_args_into_dataclasses()
        Trainer(model=model, args=training_args).train()
        """
    )
    assert settings.batch_size.value == 8 and not settings.batch_size.stated


def test_the_training_loader_gives_the_batch_size_not_the_eval_loader():
    settings = _settings(
        """
        from torch.utils.data import DataLoader
        eval_dataloader = DataLoader(eval_set, batch_size=32)
        train_dataloader = DataLoader(train_set, shuffle=True, batch_size=16)
        loss.backward()
        """
    )
    assert settings.batch_size.value == 16 and settings.batch_size.line == 4


# --- settings a script keeps outside library calls (field trial, issue 5) ------------------------------------


def _settings_at(path, code: str):
    """The settings `analyze` reads from a script on disk (with the settings files it names)."""
    from ckpt_doctor.analysis import analyze
    from ckpt_doctor.analysis.source import read_source
    from ckpt_doctor.config import Settings

    path.write_text(textwrap.dedent(code))
    return analyze(read_source(str(path)), Settings(target_versions=NEWEST, root=path.parent)).settings


def test_nanogpt_style_module_constants_give_the_micro_batch():
    """`batch_size = global // devices` is the global batch; the per-device one is `micro_batch_size`."""
    settings = _settings(
        """
        global_batch_size = 512
        micro_batch_size = 8
        batch_size = global_batch_size // 4
        block_size = 2048
        def train(model, opt):
            loss = model(x).loss
            loss.backward()
            opt.step()
        """
    )
    assert (settings.batch_size.value, settings.batch_size.line) == (8, 3)
    assert (settings.seq_len.value, settings.seq_len.line) == (2048, 5)


def test_a_fallback_under_if_is_not_a_stated_value():
    settings = _settings(
        """
        def main(args, model):
            if args.block_size is None:
                block_size = 1024
            model(x).loss.backward()
        """
    )
    assert settings.seq_len is None


def test_values_passed_by_name_follow_parameter_defaults_and_dotted_options():
    settings = _settings(
        """
        import argparse
        from transformers import Trainer, TrainingArguments
        def train(model, micro_batch_size: int = 4, cutoff_len: int = 256):
            args = TrainingArguments(per_device_train_batch_size=micro_batch_size)
            tokenize(max_length=cutoff_len)
            Trainer(model=model, args=args).train()
        """
    )
    assert (settings.batch_size.value, settings.batch_size.note) == (4, "parameter default")
    assert settings.seq_len.value == 256
    options = _settings(
        """
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--train.micro_batch_size", type=int, default=8)
        parser.add_argument("--device-batch-size", type=int, default=32)
        loss.backward()
        """
    )
    assert (options.batch_size.value, options.batch_size.note) == (8, "argparse default")


def test_the_training_loader_not_the_evaluation_one():
    settings = _settings(
        """
        from torch.utils.data import DataLoader
        EVAL_BATCH_SIZE = 32
        def get_dataloaders(batch_size: int = 16):
            train = DataLoader(ds, shuffle=True, batch_size=batch_size)
            test = DataLoader(ds, batch_size=EVAL_BATCH_SIZE)
            return train, test
        loss.backward()
        """
    )
    assert settings.batch_size.value == 16


def test_quantization_in_the_branch_a_default_turns_off_is_not_read():
    settings = _settings(
        """
        from dataclasses import dataclass
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig
        @dataclass
        class LoraArguments:
            q_lora: bool = False
        lora_args = LoraArguments()
        model = AutoModelForCausalLM.from_pretrained(
            "gpt2", quantization_config=BitsAndBytesConfig(load_in_4bit=True) if lora_args.q_lora else None)
        """
    )
    assert not settings.load_in_4bit


def test_settings_file_the_parser_reads_is_read_and_named(tmp_path):
    (tmp_path / "args").mkdir()
    (tmp_path / "args" / "sft.json").write_text(json.dumps({
        "model_name_or_path": "Qwen/Qwen2.5-7B", "per_device_train_batch_size": 2, "max_seq_length": 1024,
        "gradient_checkpointing": True, "optim": "paged_adamw_8bit", "bf16": True}))
    settings = _settings_at(tmp_path / "train.py", """
        import argparse
        from dataclasses import dataclass, field
        from transformers import AutoModelForCausalLM, HfArgumentParser, Trainer, TrainingArguments
        @dataclass
        class CustomArguments:
            model_name_or_path: str = field()
            max_seq_length: int = field()
        def main():
            parser = argparse.ArgumentParser()
            parser.add_argument("--train_args_file", type=str, default="args/sft.json")
            args = parser.parse_args()
            parser = HfArgumentParser((CustomArguments, TrainingArguments))
            args, training_args = parser.parse_json_file(json_file=args.train_args_file)
            model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
            tokenizer(max_length=args.max_seq_length)
            Trainer(model=model, args=training_args).train()
        """)
    assert settings.model.value == "Qwen/Qwen2.5-7B" and settings.model.note == "value in args/sft.json"
    assert (settings.batch_size.value, settings.seq_len.value) == (2, 1024)
    assert settings.optimizer.value == "paged-adamw-8bit" and settings.mixed_precision.value == "bf16"
    assert settings.checkpointing.value == "full"
    assert "batch 2 (line 14, value in args/sft.json)" in settings.describe()


def test_yaml_settings_file_without_pyyaml():
    from ckpt_doctor.analysis.config_files import _yaml_mapping

    text = ("# recipe\nmodel_name_or_path: Qwen/Qwen2.5-0.5B\nbf16: true\nper_device_train_batch_size: 4  # per GPU\n"
            "gradient_checkpointing_kwargs:\n  use_reentrant: false\nlora_target_modules:\n  - q_proj\n"
            "learning_rate: 2.0e-05\nrun_name: 'x'\n")
    assert _yaml_mapping(text) == {
        "model_name_or_path": "Qwen/Qwen2.5-0.5B", "bf16": True, "per_device_train_batch_size": 4,
        "gradient_checkpointing_kwargs": {"use_reentrant": False}, "lora_target_modules": {},
        "learning_rate": 2e-05, "run_name": "x"}


def test_a_config_file_loaded_by_the_script_is_read_and_named(tmp_path):
    """`--config` defaulting to a YAML file, `yaml.safe_load(open(...))`, values looked up by key."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.yaml").write_text("model: Qwen/Qwen2.5-0.5B\ntrainer:\n  batch_size: 4\n  max_length: 512\n"
                                                     "lora:\n  target_modules:\n    - q_proj\n")
    settings = _settings_at(tmp_path / "train.py", """
        import argparse
        import yaml
        from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
        parser = argparse.ArgumentParser()
        parser.add_argument("--config", default="configs/train.yaml")
        args = parser.parse_args()
        with open(args.config) as f:
            cfg = yaml.safe_load(f)
        model = AutoModelForCausalLM.from_pretrained(cfg["model"])
        targs = TrainingArguments(per_device_train_batch_size=cfg["trainer"]["batch_size"])
        tokenizer(max_length=cfg["trainer"]["max_length"])
        Trainer(model=model, args=targs).train()
        """)
    assert (settings.model.value, settings.model.note) == ("Qwen/Qwen2.5-0.5B", "value in configs/train.yaml")
    assert (settings.batch_size.value, settings.seq_len.value) == (4, 512)
    assert settings.lora_targets is None  # a YAML list is not read, and not taken as empty


def test_a_projects_own_trl_config_is_the_trl_config():
    """`from alignment import SFTConfig` (a subclass adding fields): TRL's defaults, batch 8 and checkpointing on."""
    settings = _settings(
        """
        from alignment import ScriptArguments, SFTConfig
        from trl import ModelConfig, SFTTrainer, TrlParser
        parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig))
        script_args, training_args, model_args = parser.parse_args_and_config()
        SFTTrainer(model=model_args.model_name_or_path, args=training_args).train()
        """
    )
    assert settings.batch_size.value == 8 and settings.checkpointing.value == "full"


def test_precision_outside_from_pretrained():
    lightning = _settings(
        """
        import lightning as L
        fabric = L.Fabric(devices=1, precision="bf16-true")
        loss.backward()
        """
    )
    assert (lightning.dtype.value, lightning.dtype.line) == ("bf16", 3)
    deepspeed = _settings(
        """
        import argparse
        import deepspeed
        parser = argparse.ArgumentParser()
        parser.add_argument("--dtype", type=str, default="fp16", choices=["fp16", "bf16"])
        loss.backward()
        """
    )
    assert deepspeed.dtype.value == "fp16" and deepspeed.deepspeed_16bit
    flags = deepspeed.as_flags()  # 16-bit weights and gradients, an fp32 master copy partitioned by ZeRO, no autocast
    assert (flags["dtype"], flags["mixed_precision"], flags["master_weights"]) == ("fp16", "no", "fp32")


def test_unknown_model_messages_carry_every_setting_read(tmp_path):
    from conftest import run_subprocess

    (tmp_path / "train.py").write_text(textwrap.dedent("""
        from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
        model = AutoModelForCausalLM.from_pretrained("my-org/private-model")
        Trainer(model=model, args=TrainingArguments(per_device_train_batch_size=4)).train()
        """))
    res = run_subprocess(["estimate", "train.py"], tmp_path)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1
    assert "cannot resolve model 'my-org/private-model'" in res.err
    assert "(settings read from train.py: model my-org/private-model (line 3), batch 4 (line 4); assumed where the script " \
           "does not say:" in res.err and "checkpointing none (no checkpointing in the script)" in res.err


def test_a_function_called_from_one_place_sees_its_arguments():
    """peft examples/sft/train.py: `main(model_args, data_args, training_args)` after the parser built them."""
    code = """
        from transformers import HfArgumentParser
        from trl import SFTConfig
        def main(model_args, training_args):
            training_args.gradient_checkpointing_kwargs = {"use_reentrant": model_args.use_reentrant}
        if __name__ == "__main__":
            model_args, training_args = HfArgumentParser((ModelArguments, SFTConfig)).parse_args_into_dataclasses()
            main(model_args, training_args)
        """
    assert codes(code, select=("CKPT206",)) == [("CKPT206", 5)]
    twice = code.rstrip() + "\n            main(model_args, other_args)\n"
    assert codes(twice, select=("CKPT206",)) == []  # two call sites: the parameter could be either


def test_use_cache_off_at_load_time_is_not_restored_before_push():
    """run_seq2seq_deepspeed.py: `use_cache=False if args.gradient_checkpointing else True`, default True."""
    assert codes(
        """
        import argparse
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, Seq2SeqTrainer
        parser = argparse.ArgumentParser()
        parser.add_argument("--gradient_checkpointing", type=bool, default=True)
        args = parser.parse_args()
        tokenizer = AutoTokenizer.from_pretrained("google/flan-t5-base")
        model = AutoModelForSeq2SeqLM.from_pretrained("google/flan-t5-base", use_cache=False if args.gradient_checkpointing else True)
        trainer = Seq2SeqTrainer(model=model)
        trainer.train()
        tokenizer.save_pretrained("out")
        trainer.push_to_hub()
        """,
        select=("CKPT204",),
    ) == [("CKPT204", 12)]  # the push, not the tokenizer save


def test_use_cache_off_through_a_config_update_is_not_restored_before_saving():
    """The Whisper fine-tuning event (holdout10): `config.update({"use_cache": False})`, then
    `from_pretrained(..., config=config)` and `trainer.save_model()`."""
    assert codes(
        """
        from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, Seq2SeqTrainer
        config = AutoConfig.from_pretrained("openai/whisper-small")
        config.update({"use_cache": False})
        model = AutoModelForSpeechSeq2Seq.from_pretrained("openai/whisper-small", config=config)
        trainer = Seq2SeqTrainer(model=model)
        trainer.train()
        trainer.save_model()
        """,
        select=("CKPT204",),
    ) == [("CKPT204", 8)]


def test_a_full_model_save_on_the_path_without_peft_writes_the_config():
    """qlora (holdout10): PEFT under `if not args.full_finetune:`, a full save under `if args.full_finetune:`."""
    assert codes(
        """
        import argparse
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM
        parser = argparse.ArgumentParser()
        parser.add_argument("--full_finetune", action="store_true")
        args = parser.parse_args()
        model = AutoModelForCausalLM.from_pretrained("huggyllama/llama-7b")
        model.config.use_cache = False
        if not args.full_finetune:
            model = get_peft_model(model, LoraConfig(r=8))
        train(model)
        if args.full_finetune:
            model.save_pretrained("out")
        else:
            model.save_pretrained("adapter")
        """,
        select=("CKPT204",),
    ) == [("CKPT204", 14)]


def test_tests_of_one_option_in_two_functions_through_an_opaque_namespace_are_one_option():
    """qlora (holdout10): `args = argparse.Namespace(**vars(model_args), **vars(training_args))`; PEFT under
    `if not args.full_finetune:` in the loader, the full save under `if args.full_finetune:` in `train()`."""
    found = codes(
        """
        import argparse
        from dataclasses import dataclass, field
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, HfArgumentParser

        @dataclass
        class ModelArguments:
            full_finetune: bool = field(default=False)

        def get_model(args):
            model = AutoModelForCausalLM.from_pretrained("huggyllama/llama-7b")
            model.config.use_cache = False
            if not args.full_finetune:
                model = get_peft_model(model, LoraConfig(r=8))
            return model

        def train():
            (model_args,) = HfArgumentParser((ModelArguments,)).parse_args_into_dataclasses()
            args = argparse.Namespace(**vars(model_args))
            model = get_model(args)
            if args.full_finetune:
                model.save_pretrained("out")
        """,
        select=("CKPT204",),
    )
    assert found == [("CKPT204", 23)]


def test_use_cache_and_peft_saves():
    """georgesung/llm_qlora: the adapters are saved (no config.json); the merged model is a fresh load."""
    trained_then_merged_fresh = """
        from peft import PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM, Trainer
        class QloraTrainer:
            def train(self):
                model = get_peft_model(self.base_model, self.lora_config)
                model.config.use_cache = False
                trainer = Trainer(model=model)
                trainer.train()
                trainer.save_model("adapter")
            def merge_and_save(self):
                model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("gpt2"), "adapter")
                self.merged_model = model.merge_and_unload()
                self.merged_model.save_pretrained("merged")
        """
    assert codes(trained_then_merged_fresh, select=("CKPT204",)) == []
    merged_same = """
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM, Trainer
        model = get_peft_model(AutoModelForCausalLM.from_pretrained("gpt2"), lora_config)
        model.config.use_cache = False
        Trainer(model=model).train()
        merged = model.merge_and_unload()
        merged.save_pretrained("merged")
        """
    assert codes(merged_same, select=("CKPT204",)) == [("CKPT204", 8)]


def test_a_namespace_rebuilt_from_the_parsed_dataclasses_keeps_their_defaults():
    """artidoro/qlora: `args = argparse.Namespace(**vars(model_args), ...)` handed to the loading function."""
    settings = _settings(
        """
        import argparse
        from dataclasses import dataclass, field
        import transformers
        @dataclass
        class ModelArguments:
            model_name_or_path: str = field(default="EleutherAI/pythia-12b")
        def get_model(args):
            return transformers.AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
        def train():
            (model_args, training_args) = transformers.HfArgumentParser((ModelArguments, transformers.TrainingArguments)).parse_args_into_dataclasses()
            args = argparse.Namespace(**vars(model_args), **vars(training_args))
            model = get_model(args)
        """
    )
    assert settings.model.value == "EleutherAI/pythia-12b"


def test_the_private_checkpointing_setter_without_a_function_is_reentrant():
    """InternVL: `model.language_model._set_gradient_checkpointing()` installs torch's `checkpoint` as is [H8]."""
    code = """
        import torch
        def build(model, frozen):
            for p in frozen.parameters():
                p.requires_grad = False
            model.language_model._set_gradient_checkpointing()
            model.vision_model._set_gradient_checkpointing(gradient_checkpointing_func=my_checkpoint)
            model.vision_model._set_gradient_checkpointing(False)
        """
    assert codes(code) == [("CKPT201", 6)]  # not CKPT202: a custom model's inputs may come from its own projector


def test_every_rule_runs_after_one_rule_module_was_imported_on_its_own():
    """`estimate` imports `rules.memory` alone; `check` in the same process must still see every rule."""
    import subprocess
    import sys

    code = ("from ckpt_doctor.estimate.command import configured_budget\n"
            "configured_budget()\n"
            "import ckpt_doctor.rules.memory  # one rule module on its own\n"
            "from ckpt_doctor.rules import all_rules\n"
            "print(sorted({r.code[:5] for r in all_rules()}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "['CKPT0', 'CKPT1', 'CKPT2', 'CKPT3', 'CKPT4', 'CKPT5', 'CKPT6']"  # CKPT001 too



def test_gradient_checkpointing_set_on_a_model_config_is_hugging_face_checkpointing():
    # LOMO (holdout4): `config.gradient_checkpointing = True` before `from_pretrained(..., config=config)`: the model's
    # post_init calls gradient_checkpointing_enable() with no kwargs, reentrant on transformers 4
    code = """
        from transformers import AutoConfig, AutoModelForCausalLM
        config = AutoConfig.from_pretrained("gpt2")
        config.gradient_checkpointing = True
        model = AutoModelForCausalLM.from_pretrained("gpt2", config=config)
        """
    assert codes(code, {**NEWEST, "transformers": "4.46"}, select=("CKPT201",)) == [("CKPT201", 4)]
    assert codes(code.replace("True", "False"), {**NEWEST, "transformers": "4.46"}, select=("CKPT201",)) == []


def test_arguments_only_the_projects_own_trainer_reads_switch_nothing(tmp_path):
    # LOMO's `LOMOTrainer` is a plain class of a sibling module: `training_args.gradient_checkpointing` parsed from
    # the command line is a value it reads, not the Trainer's switch
    (tmp_path / ".git").mkdir()
    (tmp_path / "my_trainer.py").write_text("class MyTrainer:\n    def __init__(self, model, training_args):\n        self.model = model\n")
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        from transformers import HfArgumentParser, TrainingArguments
        from my_trainer import MyTrainer
        (training_args,) = HfArgumentParser((TrainingArguments,)).parse_args_into_dataclasses()
        MyTrainer(model, training_args=training_args)
        """))
    (tmp_path / "run.sh").write_text("python train.py --gradient_checkpointing --output_dir o\n")
    found = check_file(str(tmp_path / "train.py"), Settings(root=tmp_path, target_versions={**NEWEST, "transformers": "4.46"}))
    assert [f.code for f in found.findings if f.code == "CKPT201"] == []
    (tmp_path / "my_trainer.py").write_text("from transformers import Trainer\nclass MyTrainer(Trainer):\n    pass\n")
    found = check_file(str(tmp_path / "train.py"), Settings(root=tmp_path, target_versions={**NEWEST, "transformers": "4.46"}))
    assert [f.code for f in found.findings if f.code == "CKPT201"] == ["CKPT201"]


def test_use_cache_rule_follows_the_model_through_accelerate_prepare():
    """holdout4 EasyContext: `model, optim, sched = accelerator.prepare(model, optim, sched)` keeps the causal LM;
    the finding stands, but the fix does not write `.config` on what may be a DDP module or a DeepSpeed engine."""
    code = textwrap.dedent("""
        import torch
        from accelerate import Accelerator
        from transformers import AutoModelForCausalLM
        accelerator = Accelerator()
        model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-0.5B")
        optim = torch.optim.AdamW(model.parameters())
        model, optim = accelerator.prepare(model, optim)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        accelerator.backward(model(**batch).loss)
        loss.backward()
        """)
    found = lint_text(SourceFile("train.py", code, code.encode()), Settings(select=["CKPT203"]))
    assert [(f.code, f.span.start.line) for f in found] == [("CKPT203", 9)]
    assert found[0].fix is None
    unwrapped = code.replace("model, optim = accelerator.prepare(model, optim)", "optim = accelerator.prepare(optim)")
    found = lint_text(SourceFile("train.py", unwrapped, unwrapped.encode()), Settings(select=["CKPT203"]))
    assert [f.fix is not None for f in found] == [True]


def test_a_settings_file_named_by_the_last_launcher_word_sets_library_fields_of_a_subclass(tmp_path):
    # LOMO (holdout4): `if sys.argv[-1].endswith(".yaml"): parse_yaml_file(sys.argv[-1])` with `deepspeed train.py
    # config/args.yaml`; `gradient_checkpointing` is a field of the library's TrainingArguments, not of the subclass
    (tmp_path / ".git").mkdir()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "args.yaml").write_text("gradient_checkpointing: true\nper_device_train_batch_size: 16\n")
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import os, sys
        from dataclasses import dataclass, field
        from transformers import AutoConfig, AutoModelForCausalLM, HfArgumentParser, Seq2SeqTrainingArguments

        @dataclass
        class MyTrainingArguments(Seq2SeqTrainingArguments):
            clip_grad_norm: float = field(default=None)

        parser = HfArgumentParser((MyTrainingArguments,))
        if sys.argv[-1].endswith(".yaml"):
            (training_args,) = parser.parse_yaml_file(yaml_file=os.path.abspath(sys.argv[-1]))
        else:
            (training_args,) = parser.parse_args_into_dataclasses()
        config = AutoConfig.from_pretrained("gpt2")
        config.gradient_checkpointing = training_args.gradient_checkpointing
        model = AutoModelForCausalLM.from_pretrained("gpt2", config=config)

        class LOMOTrainer:  # the project's own loop: the parsed arguments are values it reads
            def __init__(self, model, training_args):
                self.model = model

        LOMOTrainer(model, training_args)
        """))
    settings = Settings(root=tmp_path, target_versions={**NEWEST, "transformers": "4.46"}, select=["CKPT201"])
    found = check_file(str(tmp_path / "train.py"), settings).findings  # no launcher: it depends on the option
    assert [f.code for f in found] == ["CKPT201"] and "--gradient_checkpointing" in str(found[0].condition)
    (tmp_path / "run.sh").write_text("deepspeed --master_port 29500 train.py config/args.yaml\n")
    found = check_file(str(tmp_path / "train.py"), settings).findings
    assert [(f.code, f.span.start.line) for f in found] == [("CKPT201", 16)]
    assert "takes no checkpointing kwargs" in found[0].message and not found[0].condition  # the launch decides it


def test_a_truth_test_and_a_comparison_with_false_on_the_same_option_are_exclusive():
    # davidnvq/grpo (holdout7): checkpointing under `if cfg.gradient_checkpoint:`, DDP's
    # `find_unused_parameters=True if cfg.gradient_checkpoint is False else False`: no run has both
    script = """
        import argparse
        from torch.nn.parallel import DistributedDataParallel as DDP
        from transformers import AutoModelForCausalLM
        parser = argparse.ArgumentParser()
        parser.add_argument("--gradient_checkpoint", type=bool, default=True)
        cfg = parser.parse_args()
        model = AutoModelForCausalLM.from_pretrained("gpt2")
        if cfg.gradient_checkpoint:
            model.gradient_checkpointing_enable()
        model = DDP(model, find_unused_parameters=True if cfg.gradient_checkpoint {test} else False)
        """
    targets = {"transformers": "4.46", "torch": "2.5"}
    assert ("CKPT301", 10) not in codes(script.format(test="is False"), targets=targets)
    assert ("CKPT301", 10) not in codes(script.format(test="== None"), targets=targets)
    assert ("CKPT301", 10) in codes(script.format(test="is True"), targets=targets)  # the same runs: reported


REFERENCE_MODEL = """
from transformers import AutoModelForCausalLM
policy = AutoModelForCausalLM.from_pretrained("m")
reference = AutoModelForCausalLM.from_pretrained("m")
reference.gradient_checkpointing_enable()
reference.eval()
{again}
policy.gradient_checkpointing_enable()
loss = policy(**batch).loss
loss.backward()
"""


def test_a_model_kept_in_eval_mode_after_enabling_never_checkpoints():
    # HALOs (holdout): the reference model gets checkpointing, then `.eval()`; HF layers checkpoint only `if
    # self.training`, so only the policy's call runs reentrant checkpointing
    v4 = {"transformers": "4.46", "torch": "2.5"}
    assert [c for c in codes(REFERENCE_MODEL.format(again=""), v4) if c[0] == "CKPT201"] == [("CKPT201", 8)]
    assert [c for c in codes(REFERENCE_MODEL.format(again="reference.train()"), v4) if c[0] == "CKPT201"] == [("CKPT201", 5), ("CKPT201", 8)]


def test_a_forward_hook_on_the_input_embeddings_makes_the_inputs_require_grad():
    # mPLUG-Owl (holdout8): `model.language_model.get_input_embeddings().register_forward_hook(make_inputs_require_grad)`
    # on the LoRA path, then the Trainer's reentrant checkpointing (transformers 4.28)
    code = """
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments
    model = get_peft_model(model, config)
    {hook}
    Trainer(model=model, args=TrainingArguments(output_dir="o", gradient_checkpointing=True)).train()
    """
    hook = "model.language_model.get_input_embeddings().register_forward_hook(make_inputs_require_grad)"
    v4 = {"transformers": "4.28.1", "torch": "1.13", "peft": "0.3"}
    assert "CKPT202" in [c for c, _ in codes(code.format(hook=""), v4)]
    assert "CKPT202" not in [c for c, _ in codes(code.format(hook=hook), v4)]


def test_checkpointing_under_a_lora_switch_off_never_meets_peft_wrapping_under_one_on():
    # align-anything (holdout8): the loader wraps with PEFT `if lora_cfgs.use_lora:`; the trainer re-enables
    # checkpointing `if ... and not self.lora_enabled:` (the same option under another name)
    code = """
    from peft import get_peft_model
    if cfgs.lora_cfgs.use_lora:
        model = get_peft_model(model, config)
    if cfgs.gradient_checkpointing and not {switch}:
        model.gradient_checkpointing_enable()
    loss = model(**batch).loss
    loss.backward()
    """
    v4 = {"transformers": "4.50", "torch": "2.5", "peft": "0.15"}
    assert "CKPT202" not in [c for c, _ in codes(code.format(switch="self.lora_enabled"), v4)]
    assert "CKPT202" in [c for c, _ in codes(code.format(switch="self.bf16"), v4)]


def test_checkpointing_through_the_config_in_a_hand_written_loop_needs_the_kv_cache_off():
    # LOMO (holdout4): `config.gradient_checkpointing = ...` then `from_pretrained(..., config=config)`; the loop
    # never turns the KV cache off
    code = """
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained("m")
    config.gradient_checkpointing = True
    model = AutoModelForCausalLM.from_pretrained("m", config=config)
    {off}
    loss = model(**batch).loss
    loss.backward()
    """
    assert ("CKPT203", 4) in codes(code.format(off=""))
    assert "CKPT203" not in [c for c, _ in codes(code.format(off="model.config.use_cache = False"))]


def test_checkpointing_kwargs_assigned_to_the_config_in_a_function_above_its_creation():
    # the `TrainingArguments(...)` object handed to a `main(args)` defined above, which sets its kwargs
    code = """
    from transformers import Trainer, TrainingArguments

    def main(args):
        args.gradient_checkpointing_kwargs = {"use_reentrant": False}
        Trainer(model=model, args=args).train()

    if __name__ == "__main__":
        main(TrainingArguments("out", gradient_checkpointing=True))
    """
    v4 = {"transformers": "4.46", "torch": "2.5"}
    assert "CKPT201" not in [c for c, _ in codes(code, v4)]
    assert "CKPT201" in [c for c, _ in codes(code.replace("    args.gradient_checkpointing_kwargs", "    other.gradient_checkpointing_kwargs"), v4)]


def test_freezing_a_part_after_the_embeddings_leaves_the_inputs_requiring_grad():
    # kohya-ss/sd-scripts sdxl_train.py (rules2026 round 6): the text encoder trains (reentrant checkpointing,
    # transformers 4.36) with its last layer and final norm frozen; its embeddings still train, so the checkpointed
    # layers' inputs require grad
    code = """
    from transformers import CLIPTextModel
    text_encoder = CLIPTextModel.from_pretrained("openai/clip-vit-large-patch14")
    text_encoder.gradient_checkpointing_enable()
    text_encoder.requires_grad_(True)
    {freeze}
    loss = text_encoder(ids).last_hidden_state.mean()
    loss.backward()
    """
    v4 = {"transformers": "4.36.2", "torch": "2.1.2"}
    for part in ("text_encoder.text_model.encoder.layers[-1]", "text_encoder.text_model.final_layer_norm"):
        assert "CKPT202" not in [c for c, _ in codes(code.format(freeze=f"{part}.requires_grad_(False)"), v4)], part
    for whole in ("text_encoder.text_model", "text_encoder.text_model.embeddings"):
        assert "CKPT202" in [c for c, _ in codes(code.format(freeze=f"{whole}.requires_grad_(False)"), v4)], whole


def test_use_cache_in_a_loop_whose_checkpointing_a_project_function_turns_on(tmp_path):
    # yohankhan/att2 (holdout17): `model = init_for_training(build_from_yaml(...))`, the project module calls
    # `model.gradient_checkpointing_enable()` on the `AutoModelForCausalLM.from_config` model, then an accelerate loop
    (tmp_path / ".git").mkdir()
    (tmp_path / "build.py").write_text(textwrap.dedent("""
        from transformers import AutoConfig, AutoModelForCausalLM
        def build(path):
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
        def init_for_training(model):
            model.gradient_checkpointing_enable()
            return model
        """))
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        from build import build, init_for_training
        model = build("cfg")
        model = init_for_training(model)
        for batch in loader:
            model(**batch).loss.backward()
        """))
    found = check_file(str(script), Settings(root=tmp_path, select=["CKPT203"])).findings
    assert [(f.code, f.span.start.line, f.fix) for f in found] == [("CKPT203", 4, None)]
    assert "build.py:6)" in found[0].message


def test_a_sequence_split_over_gpus_is_not_estimated_whole():
    # EvolvingLMMs-Lab/LongVA text_extend_train.py (holdout17): EasyContext's zigzag ring attention over the GPUs; a
    # 224000-token sequence counted on one GPU gave a false CKPT402
    code = """
    import torch
    from transformers import AutoModelForCausalLM
    from easy_context import apply_seq_parallel_monkey_patch, prepare_seq_parallel_inputs
    model = AutoModelForCausalLM.from_pretrained("meta-llama/Meta-Llama-3-8B", torch_dtype=torch.bfloat16)
    {patch}
    model.gradient_checkpointing_enable()
    batch = tokenizer(text, truncation=True, max_length=131072, return_tensors="pt")
    model(**batch).loss.backward()
    """
    def memory_codes(text: str) -> list[str]:
        text = textwrap.dedent(text)
        settings = Settings(target_versions=NEWEST, select=["CKPT4"], gpu_memory="80GiB")
        return [f.code for f in lint_text(SourceFile("t.py", text, text.encode()), settings)]

    assert memory_codes(code.format(patch='apply_seq_parallel_monkey_patch("zigzag_ring_attn", "llama")')) == ["CKPT404"]
    assert memory_codes(code.format(patch="")) == ["CKPT406"]  # estimated whole: 131072 tokens on one GPU


def test_kbit_preparation_on_the_unquantized_run_a_launcher_makes(tmp_path):
    # lyogavin/Anima (holdout17), the artidoro/qlora pattern: `load_in_4bit=args.bits == 4` with a dataclass default of
    # 4, `prepare_model_for_kbit_training` unless `--full_finetune`, and a launcher that passes `--bits 16`
    (tmp_path / ".git").mkdir()
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass, field
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, HfArgumentParser
        @dataclass
        class Args:
            bits: int = field(default=4)
            full_finetune: bool = field(default=False)
        (args,) = HfArgumentParser((Args,)).parse_args_into_dataclasses()
        model = AutoModelForCausalLM.from_pretrained("m", load_in_4bit=args.bits == 4, load_in_8bit=args.bits == 8)
        if not args.full_finetune:
            model = prepare_model_for_kbit_training(model)
        """))

    def found(launcher: str | None) -> list[tuple[str, int]]:
        if launcher is not None:
            (tmp_path / "run.sh").write_text(launcher)
        return [(f.code, f.span.start.line) for f in check_file(str(tmp_path / "train.py"), Settings(root=tmp_path, select=["CKPT207"])).findings]

    assert found(None) == []  # the script's own default: 4 bits
    assert found("python train.py --bits 16\n") == [("CKPT207", 12)]
    assert found("python train.py --bits 8\n") == []


def test_an_option_assigned_after_parsing_is_what_the_script_reads():
    # tohtana/ds_repro_2746: `args.gradient_checkpointing = False` (following peft#168) before the arguments are built,
    # although the argparse default says True
    code = """
    import argparse
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainer, Seq2SeqTrainingArguments

    def training_function(args):
        {assign}
        model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained("google/flan-t5-base"), PrefixTuningConfig(task_type="SEQ_2_SEQ_LM"))
        training_args = Seq2SeqTrainingArguments(output_dir="out", gradient_checkpointing=args.gradient_checkpointing)
        Seq2SeqTrainer(model=model, args=training_args).train()

    def main():
        parser = argparse.ArgumentParser()
        parser.add_argument("--gradient_checkpointing", type=bool, default=True)
        args, _ = parser.parse_known_args()
        training_function(args)
    """
    v4 = {"transformers": "4.46", "torch": "2.5", "peft": "0.13"}
    assert "CKPT202" in [c for c, _ in codes(code.format(assign="pass"), v4)]
    assert codes(code.format(assign="args.gradient_checkpointing = False"), v4) == []
    # an assignment to another object's attribute, or to a local of another function, is not the option
    assert "CKPT202" in [c for c, _ in codes(code.format(assign="other.gradient_checkpointing = False"), v4)]


def test_an_option_assigned_on_one_path_only_is_still_the_option_on_the_other():
    code = """
    import argparse
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    parser = argparse.ArgumentParser()
    parser.add_argument("--gradient_checkpointing", type=bool, default=True)
    parser.add_argument("--prefix_tuning", action="store_true")
    args = parser.parse_args()
    if args.prefix_tuning:
        args.gradient_checkpointing = False
    model = get_peft_model(AutoModelForCausalLM.from_pretrained("gpt2"), LoraConfig(r=8))
    Trainer(model=model, args=TrainingArguments("out", gradient_checkpointing=args.gradient_checkpointing)).train()
    """
    v4 = {"transformers": "4.46", "torch": "2.5", "peft": "0.13"}
    assert "CKPT202" in [c for c, _ in codes(code, v4)]  # the default run (no --prefix_tuning) checkpoints


def test_a_model_loaded_again_after_training_runs_no_step():
    """holdout21 (pipernowelliton31-dotcom/qwen2vl-repope-hallucination-qlora scripts/run_qlora.py): after
    `trainer.train()` the smoke run loads the base again through the project's loader, which calls
    `prepare_model_for_kbit_training`, only to reload the adapter and generate. No step runs with that checkpointing."""
    code = """
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments

    def load():
        model = AutoModelForCausalLM.from_pretrained("gpt2", quantization_config=BitsAndBytesConfig(load_in_4bit=True))
        return prepare_model_for_kbit_training(model)

    def main():
        model = load()
        trainer = Trainer(model=model, args=TrainingArguments("out", gradient_checkpointing=True,
                          gradient_checkpointing_kwargs={"use_reentrant": False}))
        trainer.train()
        {after}

    main()
    """
    v4 = {"transformers": "4.46", "torch": "2.5", "peft": "0.13"}
    assert [c for c, _ in codes(code.replace("{after}", "base = load()"), v4)] == []
    # without the Trainer's kwargs, the load before the training is reported, the one after it is not
    plain = code.replace(""",
                          gradient_checkpointing_kwargs={"use_reentrant": False})""", ")")
    assert [(c, line) for c, line in codes(plain.replace("{after}", "base = load()"), v4) if c == "CKPT201"] == \
        [(c, line) for c, line in codes(plain.replace("{after}", "pass"), v4) if c == "CKPT201"] != []


def test_a_deepspeed_block_a_project_model_reads_is_used(tmp_path):
    """holdout21 (eth-easl/fmengine cli/train.py): the script pops the `activation_checkpointing` block and passes it
    to the project's `get_model`, whose pipeline layers call `deepspeed.checkpointing.checkpoint`: the block is used."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "model.py").write_text(textwrap.dedent("""
        import deepspeed
        import torch

        class Block(torch.nn.Module):
            def forward(self, x):
                return deepspeed.checkpointing.checkpoint(self.mlp, x)

        def get_model(config, ac_config):
            return torch.nn.Sequential(*[Block() for _ in range(4)])
        """))
    script = textwrap.dedent("""
        import deepspeed
        from pkg.model import get_model

        ds_config = {"train_micro_batch_size_per_gpu": 1, "activation_checkpointing": {"partition_activations": True}}
        ac = ds_config.pop("activation_checkpointing", None)
        model = get_model(None, ac)
        engine, *_ = deepspeed.initialize(model=model, config=ds_config)
        for batch in range(10):
            loss = engine(batch)
            engine.backward(loss)
            engine.step()
        """)
    (tmp_path / "train.py").write_text(script)
    settings = Settings(select=["CKPT305"], root=tmp_path)
    assert check_file(str(tmp_path / "train.py"), settings).findings == []
    (tmp_path / "pkg" / "model.py").write_text("import torch\n\ndef get_model(config, ac_config):\n    return torch.nn.Linear(4, 4)\n")
    assert [f.code for f in check_file(str(tmp_path / "train.py"), settings).findings] == ["CKPT305"]


def test_quantization_on_branches_neither_known_to_run_is_unknown_not_both():
    # holdout22 (tachyon-beep/mixtral-trainer): `if precision == INT8: 8-bit elif precision == INT4: 4-bit` on a value
    # set elsewhere made both flags true, and the estimate raised (an internal error)
    from ckpt_doctor.analysis import analyze
    from ckpt_doctor.rules import Context

    text = textwrap.dedent("""
        import torch
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments

        if config.precision == Precision.INT8:
            quantization = BitsAndBytesConfig(load_in_8bit=True)
        elif config.precision == Precision.INT4:
            quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained("mistralai/Mistral-7B-v0.1", quantization_config=quantization)
        Trainer(model=model, args=TrainingArguments("out", gradient_checkpointing=True)).train()
        """)
    settings = Settings(target_versions=NEWEST, gpu_memory="80GiB")
    found = lint_text(SourceFile("t.py", text, text.encode()), settings)
    assert [f.code for f in found if f.code.startswith("CKPT40")] == ["CKPT404"]
    read = Context(analyze(SourceFile("t.py", text, text.encode()), settings), settings).analysis.settings
    assert not (read.load_in_4bit or read.load_in_8bit) and "quantization depends" in read.trained_unknown
    # one of them on the default run decides it
    default_run = text.replace("if config.precision == Precision.INT8:", "if False:")
    read = Context(analyze(SourceFile("t.py", default_run, default_run.encode()), settings), settings).analysis.settings
    assert read.load_in_4bit and not read.load_in_8bit and read.trained_unknown is None


def test_an_embedding_resized_after_the_peft_wrap_trains_before_transformers_4_36():
    # holdout22 (MihailoMilenkovic/llm-chat-finetuning): before 4.36 `resize_token_embeddings` installs a new
    # `nn.Embedding` that requires grad, so the checkpointed layers' inputs require grad and the adapters train [H12]
    code = """
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

        model = AutoModelForCausalLM.from_pretrained("bigscience/bloom-1b1")
        model = get_peft_model(model, LoraConfig(r=8))
        model.resize_token_embeddings(len(tokenizer))
        args = TrainingArguments("out", gradient_checkpointing=True)
        Trainer(model=model, args=args).train()
        """
    old = {"torch": "2.1", "transformers": "4.33", "peft": "0.5"}
    assert ("CKPT202", 8) not in codes(code, targets=old)
    assert ("CKPT202", 8) in codes(code, targets={**old, "transformers": "4.40"})
    lines = code.splitlines()
    lines[5], lines[6] = lines[6], lines[5]  # resized before the wrap: the wrap freezes the new embedding
    assert ("CKPT202", 8) in codes("\n".join(lines), targets=old)


def test_a_fused_loss_the_script_turns_on_itself_is_read():
    # holdout22 (Scicom small-ablation): `LigerFusedLinearCrossEntropyLoss()(lm_head.weight, hidden, labels)` in the
    # script's own forward; the estimate counted whole fp32 logits and reported an out-of-memory error
    from ckpt_doctor.analysis import analyze
    from ckpt_doctor.config import Settings as Config

    def fused(body: str):
        text = "from transformers import AutoModelForCausalLM\n" + textwrap.dedent(body) + \
            '\nmodel = AutoModelForCausalLM.from_pretrained("Qwen/Qwen3-8B")\n'
        read = analyze(SourceFile("t.py", text, text.encode()), Config(target_versions=NEWEST)).settings
        return read.fused_loss.value if read.fused_loss else None

    assert fused("from liger_kernel.transformers import apply_liger_kernel_to_qwen3\napply_liger_kernel_to_qwen3()\n") == "liger"
    assert fused("from liger_kernel.transformers import apply_liger_kernel_to_qwen3\n"
                 "apply_liger_kernel_to_qwen3(fused_linear_cross_entropy=False)\n") is None
    assert fused("from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss\n"
                 "loss_fn = LigerFusedLinearCrossEntropyLoss(reduction='sum')\n") == "liger"
    assert fused("from liger_kernel.transformers import AutoLigerKernelForCausalLM\n"
                 "m = AutoLigerKernelForCausalLM.from_pretrained('Qwen/Qwen3-8B')\n") == "liger"
    assert fused("from cut_cross_entropy.transformers import cce_patch\n") == "cut-cross-entropy"
    assert fused("import torch\n") is None
