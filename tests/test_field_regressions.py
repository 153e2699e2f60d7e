"""Cases found by running the checker on real training scripts (bench/field): each was a false
positive or a miss, reduced to a few lines."""

from __future__ import annotations

import json
import textwrap

from ckpt_doctor.config import Settings
from ckpt_doctor.lint import check_file, lint_text
from ckpt_doctor.source import SourceFile

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
    import ckpt_doctor.versions as versions

    monkeypatch.setattr(versions, "_installed", lambda package: None)  # no pins, nothing installed
    script = """
        from transformers import TrainingArguments
        args = TrainingArguments(output_dir="o", evaluation_strategy="steps")
        args.gradient_checkpointing = True
        """
    # on transformers >= 5.23 this assignment is ignored (CKPT206); a script using
    # `evaluation_strategy` cannot run there, so the rule must not judge it by that release
    assert codes(script, targets={}) == []
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
    from ckpt_doctor.facts import extract
    from ckpt_doctor.training import Training
    from ckpt_doctor.versions import TargetVersions

    facts = extract("from peft import PeftModel\nfrom transformers import IdeficsForVisionText2Text\n"
                    "m = IdeficsForVisionText2Text.from_pretrained('HuggingFaceM4/idefics-9b')\nm = PeftModel.from_pretrained(m, 'adapter')\n")
    loads = Training(facts, TargetVersions(NEWEST)).model_loads
    assert [c.line for c in loads] == [3]


def _settings(code: str):
    from ckpt_doctor.facts import extract
    from ckpt_doctor.settings import read_settings
    from ckpt_doctor.training import Training
    from ckpt_doctor.versions import TargetVersions

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
