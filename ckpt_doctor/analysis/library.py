"""What ckpt-doctor knows of the libraries: their names, their defaults, and the releases where they changed.

Every version boundary here is verified in `docs/version-facts.md`; the tag in brackets names its section
(`[H1]` is "gradient_checkpointing_enable() with no kwargs: which variant"). Rules and the analysis read
these names instead of spelling versions themselves, so a fact is corrected in one place.
"""

from __future__ import annotations

# -- torch -------------------------------------------------------------------------------------
CHECKPOINT = "torch.utils.checkpoint.checkpoint"
CHECKPOINT_SEQUENTIAL = "torch.utils.checkpoint.checkpoint_sequential"
TORCH_CHECKPOINTS = (CHECKPOINT, CHECKPOINT_SEQUENTIAL)
DEEPSPEED_CHECKPOINTS = ("deepspeed.checkpointing.checkpoint", "deepspeed.runtime.activation_checkpointing.checkpointing.checkpoint")
CHECKPOINT_WRAPPER = "torch.distributed.algorithms._checkpoint.checkpoint_wrapper.checkpoint_wrapper"
APPLY_AC = "torch.distributed.algorithms._checkpoint.checkpoint_wrapper.apply_activation_checkpointing"
DDP = "torch.nn.parallel.DistributedDataParallel"
AUTOGRAD_FUNCTION = ("torch.autograd.Function", "torch.autograd.function.Function")
PARTIAL = "functools.partial"
CREATE_SAC = "torch.utils.checkpoint.create_selective_checkpoint_contexts"
FULLY_SHARD = ("torch.distributed.fsdp.fully_shard", "torch.distributed._composable.fsdp.fully_shard")  # FSDP2

# -- transformers ------------------------------------------------------------------------------
HF_ENABLE_METHODS = ("gradient_checkpointing_enable", "activation_checkpointing_enable")
# PEFT calls whose result is the model they are given, wrapped
PEFT_WRAPPERS = ("peft.get_peft_model", "peft.prepare_model_for_kbit_training", "peft.prepare_model_for_int8_training")
HF_TRAINING_ARGS = ("transformers.TrainingArguments", "transformers.Seq2SeqTrainingArguments")
TRANSFORMERS_KWARGS_SINCE = "4.35"  # gradient_checkpointing_kwargs exists [H1]
TRANSFORMERS_EXPLICIT_REENTRANT_SINCE = "4.38"  # model default {"use_reentrant": True}: no torch warning [H1]
TRANSFORMERS_TRAINER_PASSES_NONE_SINCE = "4.45"  # Trainer stops turning None into {} [H5]
TRANSFORMERS_NON_REENTRANT_DEFAULT = "5.0"  # model default {"use_reentrant": False}; input grads for text models [H1, H2]
TRANSFORMERS_TRAINER_EMPTY_IS_NONE_SINCE = "5.16"  # Trainer pops every_n_layers/offload, passes `kwargs or None` [H5]
ACTIVATION_CHECKPOINTING_SINCE = "5.23"  # `activation_checkpointing*`; `gradient_checkpointing*` deprecated aliases [H3]
TRAINER_OWN_KEYS = {"every_n_layers", "offload"}
# Llama 3.2 Vision (Mllama, transformers >= 4.45): from 4.55.0 `MllamaVisionEncoder.forward` calls its layers directly
# (plain `nn.Module`s, no `_gradient_checkpointing_func`), so Hugging Face checkpointing never reaches the vision
# encoder; 4.45.0 - 4.54.1 checkpointed it [H10]. Classes that carry the vision tower, and the Hub ids of the models.
MLLAMA_VISION_UNCHECKPOINTED_SINCE = "4.55"
MLLAMA_TEXT_ONLY = ("MllamaForCausalLM", "MllamaTextModel")
MLLAMA_MODEL_ID = r"(?i)llama-3\.2-\d+b-vision|llama-guard-3-11b-vision"
# `resize_token_embeddings` keeps the embedding's `requires_grad` (huggingface/transformers#26865); before, the new
# `nn.Embedding` it installs always requires grad [H12]
TRANSFORMERS_RESIZE_KEEPS_REQUIRES_GRAD_SINCE = "4.36"
# Defaults of `TrainingArguments` fields that do not depend on the release [H3, H7]; a field the command
# line sets (`HfArgumentParser`) and nothing else names has this value unless the option is passed.
TRAINING_ARGS_DEFAULTS = {"gradient_checkpointing": False, "per_device_train_batch_size": 8}

# -- peft --------------------------------------------------------------------------------------
KBIT_PREPARATION = ("peft.prepare_model_for_kbit_training", "peft.prepare_model_for_int8_training")  # int8: peft <= 0.9
PEFT_KBIT_KWARGS_SINCE = "0.6"  # prepare_model_for_kbit_training(gradient_checkpointing_kwargs=...) [P2]
# transformers 5 keeps the experts of MoE models as fused 3-D parameters (`mlp.experts.gate_up_proj`, `down_proj`),
# no `nn.Linear` per expert; peft reaches them only through `target_parameters` (peft >= 0.17), and from peft 0.19
# maps a list of the transformers-4 expert names to them itself for the model types it knows [P3]
TRANSFORMERS_FUSED_EXPERTS_SINCE = "5.0"
PEFT_TARGET_PARAMETERS_SINCE = "0.17"
PEFT_MOE_TARGETS_CONVERTED_SINCE = "0.19"
# model_type -> the expert projections' names in transformers 4 (what `target_modules` names to train the experts) [P3]
MOE_EXPERT_NAMES_V4 = {"mixtral": ("w1", "w2", "w3"), "qwen3_moe": ("gate_proj", "up_proj", "down_proj")}
PEFT_MODELS = ("peft.get_peft_model", "peft.PeftModel.from_pretrained", "peft.PeftModelForCausalLM")

# -- trl ---------------------------------------------------------------------------------------
TRL_NON_TRAINING_CONFIGS = ("trl.ModelConfig", "trl.ScriptArguments")
# TRL's trainer configs, the `TrainingArguments` subclasses of trl v0.9.6 .. v1.9.0 (`class XConfig(TrainingArguments)`,
# or of one of these, in trl/); a project's `DataConfig` is none of them
TRL_TRAINING_CONFIGS = frozenset({
    "A2POConfig", "AsyncGRPOConfig", "BCOConfig", "CPOConfig", "DPOConfig", "DPPOConfig", "DistillationConfig",
    "GFPOConfig", "GKDConfig", "GMPOConfig", "GOLDConfig", "GRPOConfig", "GRPOWithReplayBufferConfig", "IWOPDConfig",
    "IterativeSFTConfig", "KTOConfig", "MiniLLMConfig", "NashMDConfig", "ORPOConfig", "OnPolicyConfig",
    "OnlineDPOConfig", "PAPOConfig", "PPOConfig", "PPOv2Config", "PRMConfig", "RLOOConfig", "RewardConfig",
    "SDFTConfig", "SDPOConfig", "SFTConfig", "SSDConfig", "SelfDistillationConfig", "ServerDistillationConfig",
    "TPOConfig", "XPOConfig",
})
TRL_CHECKPOINTING_DEFAULT_ON = "0.22"  # configs default gradient_checkpointing=True [R1]
TRL_NON_REENTRANT_SINCE = "0.28"  # trainers setdefault use_reentrant=False on transformers < 5; force True under ZeRO-3 + PEFT [R2]
GRPO_CONFIG = "trl.GRPOConfig"
TRL_UNTRUNCATED_PROMPT_SINCE = "0.26"  # GRPOConfig.max_prompt_length deprecated, prompts no longer truncated [R7]
TRL_PEFT_TRAINERS = ("trl.SFTTrainer", "trl.DPOTrainer", "trl.GRPOTrainer", "trl.KTOTrainer", "trl.RewardTrainer")

# -- deepspeed ---------------------------------------------------------------------------------
# ZeRO-3 keeps frozen parameters gathered through a checkpoint recompute: non-reentrant checkpointing of a
# PEFT model no longer fails with "CheckpointError ... shape [0]" (deepspeedai/DeepSpeed#8148, first in 0.19.3) [A4]
DEEPSPEED_Z3_FROZEN_RECOMPUTE_SINCE = "0.19.3"

# The first release with each name a fix may write into a script [section of docs/version-facts.md]. A safe
# fix that writes one is safe only where the project's lowest allowed release has it; elsewhere it is unsafe.
# (torch's `use_reentrant`, torch >= 1.11, is older than any torch the transformers releases checked here run on.)
FIX_NAMES_SINCE = {
    "gradient_checkpointing_kwargs": ("transformers", TRANSFORMERS_KWARGS_SINCE),  # [H1]
    "activation_checkpointing": ("transformers", ACTIVATION_CHECKPOINTING_SINCE),  # [H3]
    "activation_checkpointing_kwargs": ("transformers", ACTIVATION_CHECKPOINTING_SINCE),
    "activation_checkpointing_enable": ("transformers", ACTIVATION_CHECKPOINTING_SINCE),
    "activation_checkpointing_disable": ("transformers", ACTIVATION_CHECKPOINTING_SINCE),
    "enable_input_require_grads": ("transformers", "4.34.1"),  # present in 4.34.1, the oldest release checked [H2]
}

# Packages whose public names are their top-level names: `from transformers.training_args import
# TrainingArguments` and `from transformers import TrainingArguments` name the same class.
FLAT_PACKAGES = {"transformers", "peft", "trl", "accelerate"}
HF_PACKAGES = ("transformers.", "peft.", "trl.")


def is_training_config(qualname: str | None) -> bool:
    """`TrainingArguments`, `Seq2SeqTrainingArguments`, or a TRL trainer config (`SFTConfig`, `GRPOConfig`)."""
    if not qualname:
        return False
    if qualname in HF_TRAINING_ARGS:
        return True
    return qualname.startswith("trl.") and qualname.rsplit(".", 1)[-1] in TRL_TRAINING_CONFIGS


def command_line_default(config_class: str | None, field: str) -> object:
    """The default of `field` when only the command line could set it; None when it depends on the release."""
    if config_class in HF_TRAINING_ARGS:
        return TRAINING_ARGS_DEFAULTS.get(field)
    return None
