"""What a script's own API use says about the library versions it was written for.

A script that passes `evaluation_strategy=` to `TrainingArguments` cannot run on transformers 5; one
that passes `max_seq_length=` to TRL's `SFTConfig` predates TRL 0.21. When the project states no
versions (no `--target-version`, no pins), these ceilings keep the rules from judging an old
script by the newest release's behaviour. Each ceiling is the newest release checked that still
has the API (docs/version-facts.md, "API eras").
"""

from __future__ import annotations

from ckpt_doctor.analysis.facts import ScriptFacts

TRAINING_ARGS = ("transformers.TrainingArguments", "transformers.Seq2SeqTrainingArguments")


def version_ceilings(facts: ScriptFacts) -> dict[str, tuple[str, str]]:
    """package -> (newest version the script can target, the API use that says so)."""
    ceilings: dict[str, tuple[str, str]] = {}
    for call in facts.calls:
        if call.qualname in TRAINING_ARGS and "evaluation_strategy" in call.kwargs:
            ceilings.setdefault("transformers", ("4.46.3", f"`evaluation_strategy=` at line {call.line} is gone from transformers 4.57"))
        if call.qualname in ("transformers.Trainer", "transformers.Seq2SeqTrainer") and "tokenizer" in call.kwargs:
            ceilings.setdefault("transformers", ("4.57.6", f"`Trainer(tokenizer=...)` at line {call.line} is gone from transformers 5"))
        if call.qualname in ("trl.SFTConfig", "trl.SFTTrainer") and "max_seq_length" in call.kwargs:
            ceilings.setdefault("trl", ("0.20.999", f"`{call.name}(max_seq_length=...)` at line {call.line} is gone from TRL 0.21"))
        if call.qualname in ("trl.SFTTrainer", "trl.DPOTrainer") and "tokenizer" in call.kwargs:
            ceilings.setdefault("trl", ("0.20.999", f"`{call.name}(tokenizer=...)` at line {call.line} is gone from TRL 0.21"))
    if facts.calls_to("peft.prepare_model_for_int8_training"):
        ceilings.setdefault("peft", ("0.7.0", "`prepare_model_for_int8_training` is gone from peft 0.10"))
    if any(name.startswith("trl.commands") for name in facts.imports):
        ceilings.setdefault("trl", ("0.20.999", "`trl.commands` is gone from TRL 0.21"))
    if "trl" in ceilings and "transformers" not in ceilings:
        # every TRL release before 0.21 predates transformers 5
        ceilings["transformers"] = ("4.57.6", f"it targets TRL before 0.21 ({ceilings['trl'][1]}), which predates transformers 5")
    return ceilings
