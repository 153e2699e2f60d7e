"""The analysis layer (issue 9): each failure pattern seen on unseen real code, reduced to a few lines.

Branches that exclude each other, flags that depend on an option, receivers that are the project's own,
names bound to two libraries, versions the project does not declare."""

from __future__ import annotations

import pytest

import json
import textwrap

from ckpt_doctor.analysis import analyze
from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.config import Settings

V4 = {"torch": "2.13", "transformers": "4.46", "peft": "0.13", "trl": "0.12"}


def findings(code: str, targets: dict | None = V4, select=("CKPT1", "CKPT2", "CKPT3"), path: str = "t.py"):
    text = textwrap.dedent(code)
    settings = Settings(target_versions=dict(targets or {}), select=list(select))
    return lint_text(SourceFile(path, text, text.encode()), settings)


def codes(code: str, **kwargs) -> list[tuple[str, int]]:
    return [(f.code, f.span.start.line) for f in findings(code, **kwargs)]


# -- 1. exclusive branches are never combined ------------------------------------------------------

PEFT_OR_FULL = """
import argparse
from peft import get_peft_model, LoraConfig
from transformers import AutoModelForCausalLM
parser = argparse.ArgumentParser()
parser.add_argument("--use_lora", action="store_true")
args = parser.parse_args()
model = AutoModelForCausalLM.from_pretrained("gpt2")
if args.use_lora:
    model = get_peft_model(model, LoraConfig())
{other}
    model.gradient_checkpointing_enable()
"""


def test_peft_in_the_if_and_checkpointing_in_the_else_are_never_one_run():
    assert "CKPT202" not in [c for c, _ in codes(PEFT_OR_FULL.format(other="else:"))]


def test_peft_under_the_option_and_checkpointing_under_its_negation_are_never_one_run():
    assert "CKPT202" not in [c for c, _ in codes(PEFT_OR_FULL.format(other="if not args.use_lora:"))]


def test_the_same_option_on_both_facts_is_one_run_and_the_finding_names_it():
    (finding,) = [f for f in findings(PEFT_OR_FULL.format(other="if args.use_lora:")) if f.code == "CKPT202"]
    assert finding.message.endswith("(only with `--use_lora`)")
    assert finding.condition == [{"test": "args.use_lora", "value": True, "option": "--use_lora"}]


def test_deepspeed_in_one_branch_and_fsdp_checkpointing_in_the_other_are_not_double_checkpointing():
    code = """
    import sys
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
    def main(args, model):
        if args.fsdp:
            apply_activation_checkpointing(model)
        else:
            model.gradient_checkpointing_enable()
    """
    assert "CKPT302" not in [c for c, _ in codes(code)]
    both = code.replace("        else:\n            model.gradient", "        if args.fsdp:\n            model.gradient")
    assert "CKPT302" in [c for c, _ in codes(both)]


def test_equality_tests_on_one_option_exclude_each_other():
    code = """
    import argparse
    from peft import get_peft_model
    parser = argparse.ArgumentParser()
    parser.add_argument("--finetune", default="full")
    args = parser.parse_args()
    if args.finetune == "lora":
        model = get_peft_model(model, cfg)
    elif args.finetune == "full":
        model.gradient_checkpointing_enable()
    """
    assert "CKPT202" not in [c for c, _ in codes(code)]


def test_a_binding_made_under_a_flag_that_defaults_off_is_not_the_default_run_value():
    text = textwrap.dedent("""
    import argparse
    from transformers import AutoModelForCausalLM, TrainingArguments, Trainer
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", action="store_true")
    args = parser.parse_args()
    batch = 4
    if args.big:
        batch = 64
    model = AutoModelForCausalLM.from_pretrained("gpt2")
    Trainer(model=model, args=TrainingArguments("out", per_device_train_batch_size=batch)).train()
    """)
    result = analyze(SourceFile("t.py", text, text.encode()), Settings(target_versions=V4))
    assert result.settings.batch_size.value == 4


@pytest.mark.parametrize("dtype, mixed", [("torch.bfloat16", "bf16"), ("torch.half", "fp16"), ("torch.float32", "no")])
def test_mixed_precision_flags_that_compare_the_scripts_dtype(dtype, mixed):
    # LazarusNLP (holdout5): `fp16=torch_dtype == torch.float16, bf16=torch_dtype == torch.bfloat16`
    text = textwrap.dedent(f"""
    import torch
    from transformers import AutoModelForCausalLM, TrainingArguments, Trainer
    torch_dtype = {dtype}
    model = AutoModelForCausalLM.from_pretrained("gpt2")  # fp32 weights: the flags decide the compute dtype
    args = TrainingArguments("out", fp16=torch_dtype == torch.float16, bf16=torch_dtype == torch.bfloat16)
    Trainer(model=model, args=args).train()
    """)
    result = analyze(SourceFile("t.py", text, text.encode()), Settings(target_versions=V4))
    assert result.settings.mixed_precision.value == mixed


# -- 2. unknown is not off: a flag only the command line sets depends on it -------------------------

def test_kbit_preparation_fed_by_the_command_line_flag_is_reported_with_the_option():
    code = """
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, HfArgumentParser, TrainingArguments
    (training_args,) = HfArgumentParser((TrainingArguments,)).parse_args_into_dataclasses()
    model = AutoModelForCausalLM.from_pretrained("m", quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training_args.gradient_checkpointing)
    """
    (finding,) = [f for f in findings(code) if f.code == "CKPT201"]
    assert finding.span.start.line == 6 and "(only with `--gradient_checkpointing`)" in finding.message


def test_a_click_option_that_defaults_on_reaches_the_training_arguments_through_kwargs():
    code = """
    import click
    from peft import get_peft_model
    from transformers import TrainingArguments, Trainer
    @click.command()
    @click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=True)
    @click.option("--lr", default=1e-4)
    def main(**kwargs):
        train(**kwargs)
    def train(gradient_checkpointing=False, lr=1e-3):
        model = get_peft_model(base, cfg)
        args = TrainingArguments("out", gradient_checkpointing=gradient_checkpointing)
        Trainer(model=model, args=args).train()
    """
    found = [f for f in findings(code) if f.code == "CKPT202"]
    assert [f.span.start.line for f in found] == [12]
    assert "only" not in found[0].message  # on in the default run: no option is needed


def test_a_value_nobody_can_know_is_on_when_it_is_true():
    code = """
    from peft import get_peft_model
    from transformers import TrainingArguments
    model = get_peft_model(base, cfg)
    args = TrainingArguments("out", gradient_checkpointing=cfg.gc)
    """
    (finding,) = [f for f in findings(code) if f.code == "CKPT202"]
    assert "when `cfg.gc` is true" in finding.message


def test_a_sys_argv_test_is_an_option_absent_by_default():
    text = textwrap.dedent("""
    import sys
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("gpt2")
    if "--gc" in sys.argv:
        model.gradient_checkpointing_enable()
    loss.backward()
    """)
    result = analyze(SourceFile("t.py", text, text.encode()), Settings(target_versions=V4))
    (site,) = result.training.hf_sites
    assert site.condition.describe() == "with `--gc`" and site.condition.runs_by_default is False
    assert result.settings.checkpointing.value == "none"


# -- 4. receivers: the project's own method is not Hugging Face's -----------------------------------

def test_a_method_of_the_projects_own_class_gets_no_hugging_face_rule_or_fix():
    code = """
    from peft import get_peft_model
    class Network:
        def gradient_checkpointing_enable(self):
            self.checkpointing = True
    net = Network()
    model = get_peft_model(base, cfg)
    net.gradient_checkpointing_enable()
    """
    assert codes(code, targets={"transformers": "5.24", "torch": "2.13"}, select=("CKPT2",)) == []
    assert codes(code, select=("CKPT2",)) == []


def test_an_unresolved_receiver_is_reported_but_gets_no_fix():
    code = """
    from peft import get_peft_model
    def train(model):
        model = get_peft_model(model, cfg)
        model.base_model.gradient_checkpointing_enable()
    """
    found = {f.code: f for f in findings(code)}
    assert found["CKPT201"].fix is None  # `gradient_checkpointing_kwargs` may not be a keyword of that method
    assert "model.enable_input_require_grads()" in found["CKPT202"].fix.message  # on what get_peft_model returned


def test_a_loaded_model_is_resolved_and_gets_its_fix():
    code = """
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("gpt2")
    model.gradient_checkpointing_enable()
    model = get_peft_model(model, cfg)
    """
    (finding,) = [f for f in findings(code) if f.code == "CKPT201"]
    assert finding.fix is not None


def test_checkpoint_from_deepspeed_or_torch_gets_no_torch_fix():
    code = """
    try:
        from deepspeed.runtime.activation_checkpointing.checkpointing import checkpoint
    except ImportError:
        from torch.utils.checkpoint import checkpoint
    def forward(blocks, x):
        for block in blocks:
            x = checkpoint(block, x)
        return x
    """
    (finding,) = findings(code)
    assert finding.code == "CKPT101" and finding.fix is None


def test_a_legacy_8bit_load_behind_an_option_may_be_quantized():
    # and peft's preparation checkpoints only then: only quantized models get checkpointing [P2] (Whisper-Finetune,
    # holdout4, quantizes only with `--use_8bit`)
    code = """
    import argparse
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM
    parser = argparse.ArgumentParser()
    parser.add_argument("--load_in_8bit", action="store_true")
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained("m", load_in_8bit=args.load_in_8bit)
    model = prepare_model_for_kbit_training(model)
    """
    assert "CKPT207" not in [c for c, _ in codes(code)]
    text = textwrap.dedent(code)
    assert analyze(SourceFile("t.py", text, text.encode()), Settings()).settings.checkpointing.value == "none"
    (finding,) = [f for f in findings(code) if f.code == "CKPT201"]
    assert "--load_in_8bit" in str(finding.condition)


@pytest.mark.parametrize("signature, reported", [
    ("model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=None", True),
    ("model, use_gradient_checkpointing=True", False),  # an older copy: its keywords are not peft 0.6's
])
def test_a_copy_of_peft_kbit_preparation_kept_in_the_script_is_peft_s(signature, reported):
    # Controllable_Summarization (holdout): the script defines its own `prepare_model_for_kbit_training`, copied
    # from peft, and calls it without `gradient_checkpointing_kwargs`
    code = f"""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    def prepare_model_for_kbit_training({signature}):
        if use_gradient_checkpointing:
            model.gradient_checkpointing_enable(**{{}})
        return model

    model = AutoModelForCausalLM.from_pretrained("m", quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    model = prepare_model_for_kbit_training(model)
    """
    found = [f for f in findings(code) if f.code == "CKPT201" and f.span.start.line == 10]
    assert bool(found) is reported
    if reported:
        assert "gradient_checkpointing_kwargs" in found[0].fix.introduced_names()


def test_the_layers_flag_set_by_hand_is_checkpointing_on():
    # MOSS (holdout3): `model.transformer.gradient_checkpointing = True`, the flag its remote-code layers read
    code = """
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("fnlp/moss-moon-003-base", trust_remote_code=True)
    model.transformer.gradient_checkpointing = True
    """
    text = textwrap.dedent(code)
    settings = analyze(SourceFile("t.py", text, text.encode()), Settings()).settings
    assert (settings.checkpointing.value, settings.checkpointing.line) == ("full", 4)


@pytest.mark.parametrize("kwargs, reported", [('gradient_checkpointing_kwargs={"use_reentrant": False}', []), ("", [11])])
def test_kbit_preparation_then_the_scripts_own_enable_call_the_later_one_decides(kwargs, reported):
    # jondurbin/qlora (holdout10): peft's preparation passes `{}`, then the script enables checkpointing again itself
    code = f"""
    import argparse
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    parser = argparse.ArgumentParser()
    parser.add_argument("--gradient_checkpointing", action="store_true")
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained("m", quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable({kwargs})
    """
    assert [line for code_, line in codes(code) if code_ == "CKPT201"] == reported


# -- 5. use_reentrant=True through Hugging Face ------------------------------------------------------

def test_explicit_reentrant_kwargs_to_the_training_arguments_are_reported():
    code = """
    from transformers import TrainingArguments
    args = TrainingArguments("out", gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True})
    """
    assert ("CKPT102", 3) in codes(code)


def test_reentrant_kwargs_assigned_after_parsing_reach_the_frozen_input_rule():
    code = """
    from peft import get_peft_model
    from transformers import TrainingArguments, Trainer
    model = get_peft_model(base, cfg)
    args = TrainingArguments("out", gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
    args.gradient_checkpointing_kwargs = {"use_reentrant": True}
    Trainer(model=model, args=args).train()
    """
    found = codes(code, targets={"transformers": "5.24", "torch": "2.13"})
    assert ("CKPT102", 5) in found  # the Trainer reads the assigned dict


# -- 6/7. versions: an unknown release is said, and a rename is never forced on it ------------------

def test_an_undeclared_transformers_still_gets_the_reentrant_warning_and_says_so(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("from transformers import TrainingArguments\nTrainingArguments('o', gradient_checkpointing=True)\n")
    (tmp_path / ".git").mkdir()
    text = script.read_text()
    settings = Settings(root=tmp_path)
    found = lint_text(SourceFile(str(script), text, text.encode()), settings)
    (finding,) = [f for f in found if f.code == "CKPT201"]
    assert "5.0" in finding.message and "does not declare" in finding.message
    assert str(finding.fix.applicability) == "unsafe"  # the kwargs may not exist on the release the project runs


def test_the_deprecated_name_is_renamed_safely_only_where_the_project_declares_5_23(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("from transformers import AutoModel\nm = AutoModel.from_pretrained('x')\nm.gradient_checkpointing_enable()\n")
    (tmp_path / ".git").mkdir()
    text = script.read_text()
    undeclared = lint_text(SourceFile(str(script), text, text.encode()), Settings(root=tmp_path))
    assert "CKPT205" not in [f.code for f in undeclared]
    (tmp_path / "requirements.txt").write_text("transformers>=5.23\n")
    from ckpt_doctor.analysis.versions import clear_caches

    clear_caches()
    declared = lint_text(SourceFile(str(script), text, text.encode()), Settings(root=tmp_path))
    (finding,) = [f for f in declared if f.code == "CKPT205"]
    assert str(finding.fix.applicability) == "safe"


# -- and the smaller ones ---------------------------------------------------------------------------

def test_autograd_grad_inside_a_custom_autograd_function_backward_is_not_the_step():
    code = """
    import torch
    from torch.utils.checkpoint import checkpoint
    class Clamp(torch.autograd.Function):
        @staticmethod
        def backward(ctx, g):
            return torch.autograd.grad(ctx.y, ctx.x, g)
    def forward(block, x):
        return checkpoint(block, x, use_reentrant=True)
    """
    assert "CKPT104" not in [c for c, _ in codes(code)]


def test_trl_tokenizer_is_seen_on_any_trainer_call_not_only_the_last(tmp_path):
    from ckpt_doctor.analysis.api_era import version_ceilings
    from ckpt_doctor.analysis.facts import extract

    facts = extract("from trl import SFTTrainer\nfrom peft import prepare_model_for_int8_training\n"
                    "SFTTrainer(model=m, tokenizer=t)\nprint(1)\n")
    assert version_ceilings(facts)["trl"][0] == "0.20.999"


def test_json_output_carries_the_condition(tmp_path):
    from ckpt_doctor.check.report import json_objects
    from ckpt_doctor.check.runner import RunResult

    found = [f for f in findings(PEFT_OR_FULL.format(other="if args.use_lora:")) if f.code == "CKPT202"]
    from ckpt_doctor.check.lint import FileResult

    objects = json_objects(RunResult(files=[FileResult("t.py", found)]))
    assert json.loads(json.dumps(objects))[0]["condition"][0]["option"] == "--use_lora"


# -- 3. the project's own modules are followed ------------------------------------------------------

UTILS = """
from transformers import AutoModelForCausalLM
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

def load_model(name):
    return AutoModelForCausalLM.from_pretrained(name, load_in_8bit=True)

def apply_fsdp_checkpointing(model):
    _wrap(model)

def _wrap(module):
    apply_activation_checkpointing(module)
"""


def _project(tmp_path, train: str, utils: str = UTILS):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "utils.py").write_text(textwrap.dedent(utils))
    script = tmp_path / "pkg" / "train.py"
    script.write_text(textwrap.dedent(train))
    return script


def _check(script, **settings) -> list:
    text = script.read_text()
    return lint_text(SourceFile(str(script), text, text.encode()), Settings(target_versions=V4, root=script.parent.parent, **settings))


def test_a_sibling_helper_that_wraps_layers_after_hugging_face_checkpointing_is_double_checkpointing(tmp_path):
    script = _project(tmp_path, """
    from .utils import load_model, apply_fsdp_checkpointing
    model = load_model("gpt2")
    model.gradient_checkpointing_enable()
    apply_fsdp_checkpointing(model)
    """)
    (finding,) = [f for f in _check(script) if f.code == "CKPT302"]
    assert finding.span.start.line == 4 and "utils.py:12" in finding.message


def test_a_model_a_sibling_helper_loads_is_known_by_its_class_and_its_quantisation(tmp_path):
    script = _project(tmp_path, """
    from peft import prepare_model_for_kbit_training
    from utils import load_model
    model = load_model("gpt2")
    model.gradient_checkpointing_enable()
    model = prepare_model_for_kbit_training(model)
    for batch in data:
        model(**batch).loss.backward()
    """)
    found = {f.code: f for f in _check(script)}
    assert "CKPT207" not in found  # loaded in 8 bit over there
    assert "CKPT203" in found and found["CKPT203"].fix is not None  # a causal LM (KV cache), resolved: fixable here


def test_calls_made_in_a_sibling_module_get_no_fix_here(tmp_path):
    script = _project(tmp_path, """
    from .utils import enable
    enable(model)
    """, utils="""
    from torch.utils.checkpoint import checkpoint
    def enable(model):
        model.forward = lambda x: checkpoint(model.block, x)
    """)
    (finding,) = [f for f in _check(script) if f.code == "CKPT101"]
    assert finding.span.start.line == 3 and finding.fix is None


def test_the_modules_read_are_dependencies_of_the_script(tmp_path):
    from ckpt_doctor.analysis.source import read_source

    script = _project(tmp_path, "from .utils import load_model\nmodel = load_model('gpt2')\n")
    result = analyze(read_source(str(script)), Settings(root=tmp_path))
    assert str(tmp_path / "pkg" / "utils.py") in result.dependencies


# -- 8. frozen parameters reach the estimate ---------------------------------------------------------

def _read(code: str):
    text = textwrap.dedent(code)
    return analyze(SourceFile("t.py", text, text.encode()), Settings(target_versions=V4)).settings


def test_a_backbone_frozen_by_a_parameters_loop_is_a_frozen_trunk():
    settings = _read("""
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased")
    for name, param in model.bert.named_parameters():
        param.requires_grad = False
    """)
    assert settings.frozen.value == "trunk" and settings.frozen.line == 5
    assert settings.as_flags()["frozen"] == "trunk"


def test_a_whole_model_frozen_but_its_head_is_a_frozen_trunk_and_embeddings_alone_are_not():
    assert _read("model.requires_grad_(False)\nmodel.classifier.requires_grad_(True)\n").frozen.value == "trunk"
    assert _read("model.bert.embeddings.requires_grad_(False)\n").frozen.value == "none"
    assert _read("if args.freeze:\n    model.vit.requires_grad_(False)\n").frozen.value == "trunk"  # default unknown: read


def test_a_frozen_vision_tower_is_its_own_setting_not_a_frozen_trunk():
    settings = _read("""
    from transformers import Qwen2_5_VLForConditionalGeneration
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct")
    for p in model.visual.parameters():
        p.requires_grad = False
    """)
    assert settings.frozen.value == "none"
    assert settings.freeze_vision_tower.value is True and settings.freeze_vision_tower.line == 5
    assert settings.as_flags()["freeze_vision_tower"] is True
    assert _read("model.model.visual.requires_grad_(False)\n").as_flags()["freeze_vision_tower"] is True
    assert _read("model.bert.requires_grad_(False)\n").as_flags()["freeze_vision_tower"] is False


def test_kwargs_given_to_a_call_that_k_bit_preparation_repeats_right_after_are_not_the_ones_that_count():
    code = """
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    model = AutoModelForCausalLM.from_pretrained("m", quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    model.gradient_checkpointing_enable()
    model = prepare_model_for_kbit_training(model)
    """
    assert [line for code_, line in codes(code) if code_ == "CKPT201"] == [6]  # peft's `{}` decides, not line 5


def test_python_3_12_syntax_is_analysed_on_an_older_interpreter():
    code = """
    type Batch = dict[str, list[int]]
    def train[T](model: T) -> T:
        model.gradient_checkpointing_enable()
        return model
    """
    assert codes(code) == [("CKPT201", 4)]


def test_a_dtype_option_handed_to_autocast_is_the_mixed_precision_not_the_weights(tmp_path):
    from ckpt_doctor.analysis import analyze
    from ckpt_doctor.analysis.source import read_source
    from ckpt_doctor.config import Settings

    script = tmp_path / "train.py"
    script.write_text(
        "import argparse, torch\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--dtype', type=str, default='bfloat16')\n"
        "args = parser.parse_args()\n"
        "dtype = torch.bfloat16 if args.dtype == 'bfloat16' else torch.float16\n"
        "ctx = torch.cuda.amp.autocast(dtype=dtype)\n"
        "loss.backward()\n",
        encoding="utf-8",
    )
    settings = analyze(read_source(str(script)), Settings(root=tmp_path)).settings
    assert (settings.dtype.value, settings.mixed_precision.value) == ("fp32", "bf16")
    script.write_text(script.read_text().replace("ctx = torch.cuda.amp.autocast(dtype=dtype)\n", ""), encoding="utf-8")
    settings = analyze(read_source(str(script)), Settings(root=tmp_path)).settings
    assert settings.dtype.value == "bf16"  # no autocast: the option is the weights' dtype, as DeepSpeed scripts use it


# -- 9. QLoRA: whether the non-quantised parameters are cast to fp32 (issue 10) ----------------------------------

QLORA = """
import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-70b-hf", torch_dtype=torch.bfloat16,
                                             quantization_config=BitsAndBytesConfig(load_in_4bit=True))
PREPARE
model = get_peft_model(model, LoraConfig(r=16, target_modules=["q_proj", "v_proj"]))
"""
QLORA_TRL = """
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from trl import SFTConfig, SFTTrainer
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-70b-hf", torch_dtype=torch.bfloat16,
                                             quantization_config=BitsAndBytesConfig(load_in_4bit=True))
trainer = SFTTrainer(model=model, args=SFTConfig(output_dir="o"), peft_config=LoraConfig(r=16))
"""


def _read_at(code: str, targets: dict):
    text = textwrap.dedent(code)
    return analyze(SourceFile("t.py", text, text.encode()), Settings(target_versions=targets)).settings


def test_k_bit_preparation_on_the_path_upcasts_and_its_absence_does_not():
    prepared = _read(QLORA.replace("PREPARE", "model = prepare_model_for_kbit_training(model)"))
    assert prepared.kbit_upcast.value is True and prepared.kbit_upcast.line == 7
    assert prepared.as_flags()["kbit_upcast"] is True and "4-bit, fp32 upcast (line 7" in prepared.describe()
    bare = _read(QLORA.replace("PREPARE", ""))
    assert bare.kbit_upcast.value is False and bare.as_flags()["kbit_upcast"] is False
    assert "4-bit, no fp32 upcast" in bare.describe()
    off = _read(QLORA.replace("PREPARE", "if False:\n    model = prepare_model_for_kbit_training(model)"))
    assert off.kbit_upcast.value is False  # a call that never runs prepares nothing


def test_reentrant_checkpointing_is_a_setting_the_estimate_reads():
    """peft's preparation passes `{}` (torch's reentrant default), explicit kwargs say which; any site not known to be
    reentrant leaves the estimate's non-reentrant assumption (an 8-bit base keeps more under it)."""
    kbit = _read(QLORA.replace("PREPARE", "model = prepare_model_for_kbit_training(model)"))
    assert kbit.checkpointing.value == "full" and kbit.as_flags()["reentrant"] is True
    explicit = _read(QLORA.replace("PREPARE", 'model = prepare_model_for_kbit_training(model, '
                                              'gradient_checkpointing_kwargs={"use_reentrant": False})'))
    assert explicit.checkpointing.value == "full" and explicit.as_flags()["reentrant"] is False
    assert _read(QLORA.replace("PREPARE", "")).as_flags()["reentrant"] is False  # no checkpointing at all


def test_trl_sft_trainer_upcasts_a_quantized_model_before_0_26_only():
    old = _read_at(QLORA_TRL, {"transformers": "4.56", "trl": "0.24"}).kbit_upcast
    assert old.value is True and "calls prepare_model_for_kbit_training" in old.note
    new = _read_at(QLORA_TRL, {"transformers": "4.56", "trl": "0.26"}).kbit_upcast
    assert new.value is False and "without prepare_model_for_kbit_training" in new.note
    unknown = _read_at(QLORA_TRL, {"transformers": "4.56"}).kbit_upcast  # the larger estimate, saying why
    assert unknown.value is True and "before trl 0.26" in unknown.note


@pytest.mark.parametrize(("code", "expected"), [
    ("with torch.cuda.amp.autocast():\n    loss = model(x)", "fp16"),  # autocast's default dtype on CUDA
    ("ctx = torch.amp.autocast(device_type='cuda')\n", "fp16"),
    ("ctx = torch.autocast('cpu')\n", "no"),  # CPU autocast: not a GPU step's precision
    ("ctx = torch.cuda.amp.autocast(enabled=False)\n", "no"),
    ("trainer = L.Trainer(precision='bf16-mixed')\n", "bf16"),
    ("trainer = L.Trainer(precision=16)\n", "fp16"),
    ("trainer = L.Trainer(precision='bf16-true')\n", "no"),  # bf16 weights, no autocast
])
def test_mixed_precision_from_autocast_defaults_and_lightning(code, expected):
    from ckpt_doctor.analysis import analyze
    from ckpt_doctor.analysis.source import SourceFile
    from ckpt_doctor.config import Settings

    text = "import torch\nimport lightning as L\n" + code + "\n"
    settings = analyze(SourceFile("t.py", text, text.encode()), Settings()).settings
    assert settings.mixed_precision.value == expected


def test_a_batch_size_given_but_not_readable_is_assumed_not_the_default():
    # BTGenTP (holdout20): `per_device_train_batch_size=int(spec.batch_size)` of a registry entry the analysis cannot read
    code = textwrap.dedent("""
        from transformers import TrainingArguments
        args = TrainingArguments("out", per_device_train_batch_size=int(spec.batch_size))
    """)
    batch = analyze(SourceFile("t.py", code, code.encode()), Settings()).settings.batch_size
    assert batch.note.startswith("assumed") and not batch.stated
    code = code.replace("per_device_train_batch_size=int(spec.batch_size)", "learning_rate=1e-4")
    assert analyze(SourceFile("t.py", code, code.encode()), Settings()).settings.batch_size.note == "TrainingArguments default"
