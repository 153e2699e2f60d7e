"""The training settings a script states (model, batch, sequence, dtype, optimizer, LoRA, ...), each
with the line it came from, or the library default used in its place. Input of the CKPT4xx rules
and of `ckpt-doctor estimate train.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ckpt_doctor.analysis.facts import PARAMETERS, AttrAssign, Call, ScriptFacts, own_checkpointing_keyword
from ckpt_doctor.analysis.whole_job import EVAL_BATCH_DEFAULT, Colocation, logits_kept_in_evaluation, script_colocations, training_field
from ckpt_doctor.analysis.launchers import ENVIRONMENT
from ckpt_doctor.analysis.library import APPLY_AC, CHECKPOINT_WRAPPER, GRPO_CONFIG, TRL_UNTRUNCATED_PROMPT_SINCE, is_training_config
from ckpt_doctor.analysis.training import Training
from ckpt_doctor.analysis.values import MISSING, Const, DictVal, Instance, Missing, QualName, TupleVal, Value, constant, truth

SEQ_LEN_NAMES = ("max_seq_length", "max_length", "block_size", "model_max_length", "max_seq_len", "seq_len", "seq_length", "cutoff_len", "max_len", "context_length", "sequence_length")
# per-device micro-batch first: `batch_size = global_batch_size // devices` is often the global one
BATCH_NAMES = ("per_device_train_batch_size", "micro_batch_size", "micro_train_batch_size", "train_micro_batch_size_per_gpu",
               "device_batch_size", "train_batch_size", "batch_size")
DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16", "float32": "fp32", "fp32": "fp32", "float": "fp32"}
# TrainingArguments(optim=...) and torch / bitsandbytes optimizer classes -> estimate's optimizer names
OPTIM_NAMES = {
    "adamw_torch": "adamw", "adamw_hf": "adamw-loop", "adamw_torch_fused": "adamw-fused", "adamw_apex_fused": "adamw-fused",
    "adamw_bnb_8bit": "adamw-8bit", "adamw_8bit": "adamw-8bit", "paged_adamw_8bit": "paged-adamw-8bit",
    "paged_adamw_32bit": "adamw", "adafactor": "adafactor", "sgd": "sgd", "adamw_torch_8bit": "adamw-8bit",
}
OPTIM_CLASSES = {
    "torch.optim.AdamW": "adamw", "torch.optim.Adam": "adamw", "torch.optim.SGD": "sgd",
    "bitsandbytes.optim.AdamW8bit": "adamw-8bit", "bitsandbytes.optim.Adam8bit": "adamw-8bit",
    "bitsandbytes.optim.PagedAdamW8bit": "paged-adamw-8bit", "transformers.Adafactor": "adafactor",
    "transformers.optimization.Adafactor": "adafactor",
}
ATTN_NAMES = {"eager": "eager", "sdpa": "sdpa", "flash_attention_2": "flash", "flash_attention_3": "flash", "flex_attention": "sdpa"}
# Lightning `precision=` values that set the weights' dtype ("-mixed" ones autocast over fp32 weights: not read)
LIGHTNING_TRUE_PRECISION = {"bf16-true": "bf16", "16-true": "fp16", "32-true": "fp32", "32": "fp32"}
# and those that autocast (Lightning 2.x names, and the 1.x `16` / `"bf16"` that mean the same)
LIGHTNING_MIXED_PRECISION = {"16-mixed": "fp16", "bf16-mixed": "bf16", "16": "fp16", "bf16": "bf16"}


@dataclass
class Setting:
    value: object
    line: int | None = None  # None: not in the script, a default
    note: str = ""  # "argparse default", "TrainingArguments default", ...
    file: str | None = None  # the launcher (or other file) `line` is in, None for the script itself

    @property
    def stated(self) -> bool:
        return self.line is not None

    def describe(self) -> str:
        if self.line is None:
            return f"{self.value} ({self.note or 'default'})"
        if self.file is not None:
            return f"{self.value} ({self.file}:{self.line})"
        return f"{self.value} (line {self.line}{', ' + self.note if self.note else ''})"


@dataclass
class ScriptSettings:
    model: Setting | None = None
    model_load: Call | None = None
    batch_size: Setting = field(default_factory=lambda: Setting(1, None, "assumed"))
    seq_len: Setting | None = None
    dtype: Setting = field(default_factory=lambda: Setting("fp32", None, "torch default"))
    mixed_precision: Setting = field(default_factory=lambda: Setting("no", None, "default"))
    optimizer: Setting = field(default_factory=lambda: Setting("adamw", None, "assumed"))
    attn: Setting = field(default_factory=lambda: Setting("sdpa", None, "transformers default"))
    lora_r: Setting | None = None
    frozen: Setting = field(default_factory=lambda: Setting("none", None, "every parameter trains"))
    freeze_vision_tower: Setting | None = None  # a VLM's vision tower frozen (`model.visual.requires_grad_(False)`)
    lora_targets: Setting | None = None
    lora_config: Call | None = None  # the `LoraConfig(...)` the LoRA settings come from
    lora_target_parameters: bool = False  # `LoraConfig(target_parameters=...)` given: parameters (fused MoE experts) targeted
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    # 4/8-bit: whether the non-quantised parameters (embeddings, norms, head) are cast to fp32 before training
    kbit_upcast: Setting = field(default_factory=lambda: Setting(True, None, "peft prepare_model_for_kbit_training assumed"))
    gradient_accumulation: Setting = field(default_factory=lambda: Setting(1, None, "default"))
    gpus: Setting = field(default_factory=lambda: Setting(1, None, "assumed"))
    zero: Setting = field(default_factory=lambda: Setting(0, None, "none"))
    checkpointing: Setting = field(default_factory=lambda: Setting("none", None, "no checkpointing in the script"))
    deepspeed_16bit: bool = False  # DeepSpeed's 16-bit mode: `dtype` weights with an fp32 master copy
    config_call: Call | None = None  # TrainingArguments / TRL config, where a flag fix goes
    sharding_unknown: str | None = None  # why the spread over GPUs is not known (a launcher's missing accelerate config)
    trained_unknown: str | None = None  # why what the step trains is not known (a PEFT or quantization config built elsewhere)
    fused_loss: Setting | None = None  # a fused / chunked cross-entropy (Liger, cut-cross-entropy): logits never whole
    # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True, set by the script or its launcher (what is reserved, not allocated)
    expandable_segments: Setting = field(default_factory=lambda: Setting(False, None, "torch's default allocator"))
    is_training: bool = False
    # Hugging Face checkpointing that runs torch's reentrant variant on every site of the default run (the mode the
    # rules read: CKPT201); False when any site is non-reentrant or not known to be reentrant
    checkpointing_reentrant: bool = False
    # the job beyond its training step (analysis.whole_job), on the default run: the per-device batch of an evaluation
    # that keeps every batch's logits on the GPU, and the share of each GPU a colocated vLLM holds
    eval_logits_batch: Setting | None = None
    vllm_colocated: Setting | None = None

    def as_flags(self) -> dict[str, object]:
        """The settings under `estimate`'s flag names, as `TrainingSetup` takes them (None: not known)."""
        return {
            "model": self.model.value if self.model else None,
            "batch_size": int(self.batch_size.value),
            "seq_len": int(self.seq_len.value) if self.seq_len else None,
            "dtype": None if self.dtype.value == "auto" else str(self.dtype.value),
            # DeepSpeed's 16-bit mode: 16-bit weights and gradients, an fp32 master copy and fp32 optimizer state,
            # partitioned by ZeRO; no autocast (TrainingSetup.master_weights)
            "mixed_precision": "no" if self.deepspeed_16bit_on else str(self.mixed_precision.value),
            "master_weights": "fp32" if self.deepspeed_16bit_on else "none",
            "attn": str(self.attn.value),
            "optimizer": str(self.optimizer.value),
            "lora_r": int(self.lora_r.value) if self.lora_r else None,
            "lora_targets": tuple(str(self.lora_targets.value).split(",")) if self.lora_targets else None,
            "load_in_4bit": self.load_in_4bit,
            "load_in_8bit": self.load_in_8bit,
            "kbit_upcast": bool(self.kbit_upcast.value),
            "gpus": int(self.gpus.value),
            "zero": int(self.zero.value),
            "gradient_accumulation": int(self.gradient_accumulation.value),
            "checkpointing": str(self.checkpointing.value),
            "frozen": str(self.frozen.value),
            "freeze_vision_tower": bool(self.freeze_vision_tower and self.freeze_vision_tower.value),
            "expandable_segments": bool(self.expandable_segments.value),
            "loss": "fused" if self.liger_loss else "plain",
            "reentrant": self.checkpointing_reentrant,
        }

    @property
    def liger_loss(self) -> bool:
        """The fused loss is Liger's fused linear cross-entropy (`use_liger_kernel`, `enable_liger_kernel`,
        `liger_fused_linear_cross_entropy`), which the estimate models; other fused losses leave it an upper bound."""
        loss = self.fused_loss
        return loss is not None and "liger" in f"{loss.value} {loss.note}".lower()

    @property
    def unmodelled_fused_loss(self) -> bool:
        """A fused or chunked loss the estimate does not model (cut-cross-entropy, TRL's `chunked_nll`): its logits are an
        upper bound, and `--fit` must not propose a fused loss again."""
        return self.fused_loss is not None and not self.liger_loss

    @property
    def deepspeed_16bit_on(self) -> bool:
        """DeepSpeed's 16-bit mode over weights whose dtype is known to be 16-bit ("auto" waits for `complete_for`)."""
        return self.deepspeed_16bit and self.dtype.value in ("bf16", "fp16")

    def describe_stated(self) -> str:
        """The settings the script states, each with its line (what the estimate rests on)."""
        s = self
        parts = [f"model {s.model.describe()}" if s.model else "model ? (not a constant)"]
        mixed = s.mixed_precision if s.mixed_precision.value != "no" and s.dtype.value not in ("bf16", "fp16") else None
        for label, setting in (("batch", s.batch_size), ("sequence", s.seq_len), ("dtype", s.dtype), ("mixed precision", mixed),
                               ("optimizer", s.optimizer), ("checkpointing", s.checkpointing), ("GPUs", s.gpus if s.zero.value else None)):
            if setting is not None and setting.stated:
                parts.append(f"{label} {setting.describe()}")
        if s.lora_r:
            parts.append(f"LoRA r={s.lora_r.value}")
        if s.fused_loss is not None:
            parts.append(f"fused loss `{s.fused_loss.note}` (line {s.fused_loss.line}: "
                         + ("Liger's fused linear cross-entropy)" if s.liger_loss else "the estimate's logits are an upper bound)"))
        if s.expandable_segments.value:
            parts.append(f"expandable segments {s.expandable_segments.describe()}")
        if s.frozen.stated:
            parts.append(f"frozen {s.frozen.describe()}")
        if s.freeze_vision_tower is not None:
            parts.append(f"vision tower frozen {s.freeze_vision_tower.describe()}")
        if s.load_in_4bit or s.load_in_8bit:
            upcast = "fp32 upcast" if s.kbit_upcast.value else "no fp32 upcast"
            parts.append(f"{'4-bit' if s.load_in_4bit else '8-bit'}, {upcast} "
                         + (f"(line {s.kbit_upcast.line}: {s.kbit_upcast.note})" if s.kbit_upcast.stated else f"({s.kbit_upcast.note})"))
        if s.deepspeed_16bit_on:
            parts.append(f"DeepSpeed {s.dtype.value} mode (fp32 master copy and optimizer state, no autocast)")
        if s.zero.value:
            parts.append(f"ZeRO-{s.zero.value} ({s.zero.note})" if s.zero.note else f"ZeRO-{s.zero.value}")
        return ", ".join(parts)

    def describe_assumed(self) -> list[str]:
        """The settings the script does not state, each with the value used in its place and why."""
        s = self
        return [
            f"{label} {setting.describe()}"
            for label, setting in (("batch", s.batch_size), ("sequence", s.seq_len), ("dtype", s.dtype), ("optimizer", s.optimizer),
                                   ("checkpointing", s.checkpointing), ("GPUs", s.gpus if s.zero.value else None))
            if setting is not None and not setting.stated and setting.value != "auto"  # "auto": the checkpoint's, unknown yet
        ]

    def describe(self) -> str:
        """Every setting an estimate rests on: the stated ones with their lines, then the assumed ones."""
        assumed = self.describe_assumed()
        return self.describe_stated() + (f"; assumed where the script does not say: {', '.join(assumed)}" if assumed else "")


def _setting(value: Value, note: str = "") -> Setting | None:
    if isinstance(value, Const) and value.value is not None:
        origin = value.origin
        kind = origin.kind if origin and origin.kind not in ("literal", "constant") else ""
        return Setting(value.value, origin.line if origin else None, note or kind, origin.file if origin else None)
    return None


def read_settings(training: Training) -> ScriptSettings:
    facts = training.facts
    out = ScriptSettings()
    configs = [c for c in facts.calls if is_training_config(c.qualname)]
    out.config_call = configs[0] if configs else None
    out.is_training = bool(configs) or training.custom_loop or training.uses_trainer

    # model: a pretrained load before a from-scratch `from_config` fallback, and the default run's load first (`if
    # args.flash_attention_2: ... else: ...` under a flag left off)
    for call in sorted(training.model_loads, key=lambda c: (c.name == "from_config", c.condition.runs_by_default is False)):
        value = call.args[0] if call.args else next(
            (call.kwarg(k) for k in ("pretrained_model_name_or_path", "model_name", "model_id") if k in call.kwargs), call.kwarg("pretrained_model_name_or_path")
        )
        found = _setting(value)
        if found is not None and isinstance(found.value, str):
            out.model, out.model_load = found, call
            break
        if out.model_load is None:
            out.model_load = call
    if out.model is None:
        for call in facts.calls:
            if call.qualname and call.qualname.startswith("trl.") and call.qualname.endswith("Trainer"):
                found = _setting(call.kwarg("model"))
                if found is not None and isinstance(found.value, str):
                    out.model = found
                    break

    load = out.model_load
    transformers_5 = training.transformers_5
    if load is not None:
        for name in ("dtype", "torch_dtype"):
            dtype = _dtype(load.kwarg(name))
            if dtype is not None:
                out.dtype = Setting(dtype, load.line)
                break
        else:
            if transformers_5:
                out.dtype = Setting("auto", None, "transformers 5 loads the checkpoint's dtype")
            else:
                out.dtype = Setting("fp32", None, "transformers 4 loads fp32 by default")
        attn = constant(load.kwarg("attn_implementation"))
        if isinstance(attn, str) and attn in ATTN_NAMES:
            out.attn = Setting(ATTN_NAMES[attn], load.line)
        out.load_in_4bit = truth(load.kwarg("load_in_4bit")) is True
        out.load_in_8bit = truth(load.kwarg("load_in_8bit")) is True
    autocast = _autocast(facts)
    if autocast is not None:
        out.mixed_precision = autocast
    if not out.dtype.stated and (precision := _precision(facts, autocast is not None)):
        out.dtype, out.deepspeed_16bit = precision
    if not out.dtype.stated:
        for config in training.deepspeed_configs:
            for key in ("bf16", "fp16"):
                block = config.data.get(key)
                if isinstance(block, dict) and block.get("enabled") is True:
                    out.dtype = Setting(key, config.line, f"DeepSpeed {key}.enabled in {config.where}, fp32 master weights")
                    out.deepspeed_16bit = True
    for config in training.deepspeed_configs:  # a 16-bit load under DeepSpeed bf16 / fp16: the engine's mode all the same
        for key in ("bf16", "fp16"):
            block = config.data.get(key)
            if out.dtype.stated and isinstance(block, dict) and block.get("enabled") is True:
                out.deepspeed_16bit = True
                if out.dtype.value != key:  # the engine casts the parameters to its dtype
                    out.dtype = Setting(key, config.line, f"DeepSpeed {key}.enabled in {config.where}, fp32 master weights")
    _quantization(facts, out)

    # training arguments
    config = out.config_call
    trl = bool(config and config.qualname and config.qualname.startswith("trl."))
    if config is not None:
        batch = _kwarg_setting(facts, config, "per_device_train_batch_size")
        if batch is None and config.star_kwargs:  # `TrainingArguments(**config)`: the dict's value
            batch = _named_setting(facts, ("per_device_train_batch_size",))
        if batch is None and not isinstance(config.kwarg("per_device_train_batch_size"), Missing):
            # given, but not a value the analysis can follow (`int(spec.batch_size)` of a registry entry): not the default
            batch = Setting(8, None, f"assumed: the script's `per_device_train_batch_size` (line {config.line}) is not a "
                                     f"constant; {config.name} default")
        out.batch_size = batch or Setting(8, None, f"{config.name} default")
        accumulation = _setting(config.kwarg("gradient_accumulation_steps"))
        if accumulation:
            out.gradient_accumulation = accumulation
        if truth(config.kwarg("use_liger_kernel")) is True:
            out.fused_loss = Setting("liger", config.line, "use_liger_kernel")
        for flag, mode in (("bf16", "bf16"), ("fp16", "fp16")):
            if truth(config.kwarg(flag)) is True:
                out.mixed_precision = Setting(mode, config.line)
        if trl and out.mixed_precision.value == "no" and truth(config.kwarg("fp16")) is not True and isinstance(config.kwarg("bf16"), Missing):
            out.mixed_precision = Setting("bf16", None, "TRL default bf16=True")
        optim = constant(config.kwarg("optim"))
        if isinstance(optim, str) and optim in OPTIM_NAMES:
            out.optimizer = Setting(OPTIM_NAMES[optim], config.line)
        else:
            default = "adamw-fused" if transformers_5 else "adamw"
            out.optimizer = Setting(default, None, f"{config.name} default optim")
    elif cli_configs := training.cli_configs():
        # TrainingArguments / a TRL config built by HfArgumentParser from the command line
        namespace = cli_configs[0][0]
        name = str(namespace.config_class).rsplit(".", 1)[-1]
        out.batch_size = _setting(namespace.get("per_device_train_batch_size")) or Setting(
            8, None, f"{name} default, unless the command line says otherwise"
        )
        optim = constant(namespace.get("optim"))  # known when a settings file the parser reads says it
        if isinstance(optim, str) and optim in OPTIM_NAMES:
            out.optimizer = Setting(OPTIM_NAMES[optim], *_where(namespace.get("optim")))
        else:
            default = "adamw-fused" if transformers_5 else "adamw"
            out.optimizer = Setting(default, None, f"{name} default optim")
        for flag in ("bf16", "fp16"):
            if truth(namespace.get(flag)) is True:
                out.mixed_precision = Setting(flag, *_where(namespace.get(flag)))
        accumulation = _setting(namespace.get("gradient_accumulation_steps"))
        if accumulation and _positive_int(accumulation.value):
            out.gradient_accumulation = accumulation
        if truth(namespace.get("use_liger_kernel")) is True:
            out.fused_loss = Setting("liger", *_where(namespace.get("use_liger_kernel")))
    else:
        loaders = [c for c in facts.calls if c.name == "DataLoader" and "batch_size" in c.kwargs and not _evaluation(c)]
        # the training loader: shuffled, or named like one, before any other
        loaders.sort(key=lambda c: (truth(c.kwarg("shuffle")) is not True, "train" not in " ".join(filter(None, c.arg_names)) and "train" not in (c.assigned_to or "")))
        batch = next(filter(None, (_kwarg_setting(facts, c, "batch_size") for c in loaders)), None)
        out.batch_size = batch or _named_setting(facts, BATCH_NAMES) or out.batch_size
    # an optimizer class the script makes, else one a factory is asked for by name, else a class a project function makes
    # (`smart_optimizer`'s `torch.optim.Adam` under `if name == "Adam"`, read without its argument)
    classes = sorted((c for c in facts.calls if c.qualname in OPTIM_CLASSES), key=lambda c: c.via is not None)
    named = next(filter(None, map(_optimizer_factory, facts.calls)), None)
    if classes and (classes[0].via is None or named is None):
        name = OPTIM_CLASSES[classes[0].qualname]
        if name == "adamw" and truth(classes[0].kwarg("fused")) is True:
            name = "adamw-fused"
        out.optimizer = Setting(name, classes[0].line)
    elif named is not None and out.optimizer.note == "assumed":
        out.optimizer = named
    for call in facts.calls_named("Accelerator"):
        if (mixed := constant(call.kwarg("mixed_precision"))) in ("bf16", "fp16"):
            out.mixed_precision = Setting(mixed, call.line)
            break

    # sequence length: the first stated one, in this order of names
    out.seq_len = _seq_len(facts, training.parsed_fields())
    if out.seq_len is None or not out.seq_len.stated:
        out.seq_len = _rl_seq_len(out.config_call, training) or out.seq_len
    if out.seq_len is None and trl:
        out.seq_len = Setting(1024, None, "TRL default max_length")

    if not training.peft_calls:
        out.frozen = _frozen_trunk(facts) or out.frozen
    out.freeze_vision_tower = _frozen_vision_tower(facts)

    # LoRA
    for call in facts.calls_to("peft.LoraConfig"):
        out.lora_config = call
        r = _setting(call.kwarg("r"))
        out.lora_r = r or Setting(8, None, "LoraConfig default")
        targets = call.kwarg("target_modules")
        if isinstance(targets, TupleVal) and all(isinstance(t, Const) and isinstance(t.value, str) for t in targets.items):
            out.lora_targets = Setting(",".join(t.value for t in targets.items), call.line)
        elif isinstance(targets, Const) and isinstance(targets.value, str):
            out.lora_targets = Setting(targets.value, call.line)
        parameters = call.kwarg("target_parameters")
        out.lora_target_parameters = not isinstance(parameters, Missing) and not (isinstance(parameters, Const) and parameters.value is None)
        break
    if out.lora_r is None and facts.calls_to("trl.get_peft_config"):
        # TRL's `get_peft_config(model_args)` builds a LoraConfig from the parsed ModelConfig when `--use_peft` is
        # passed (trl v0.19.0 .. v1.9.0 trainer/utils.py; ModelConfig.lora_r defaults to 16)
        parsed = training.parsed_fields()
        if truth(parsed.get("use_peft", MISSING)) is True:
            out.lora_r = _setting(parsed.get("lora_r", MISSING)) or Setting(16, None, "TRL ModelConfig default lora_r")

    out.trained_unknown = out.trained_unknown or _trained_unknown(training, out)
    out.fused_loss = out.fused_loss or _library_fused_loss(facts)
    out.eval_logits_batch = _eval_logits_batch(training)
    out.vllm_colocated = vllm_setting(script_colocations(training))

    # sharding
    stage = training.zero_stage
    if stage is not None:
        out.zero = Setting(stage[0], stage[1].line, f"DeepSpeed ZeRO-{stage[0]}, {stage[1].where}")
    for call in facts.calls:
        if call.name in ("FullyShardedDataParallel", "FSDP", "fully_shard", "FullyShardedDataParallelPlugin", "FSDPStrategy"):
            out.zero = Setting(3, call.line, "FSDP full shard")
            break
        fsdp = call.kwarg("fsdp") if is_training_config(call.qualname) else None
        if isinstance(fsdp, Const) and fsdp.value and "shard_grad_op" not in str(fsdp.value):
            out.zero = Setting(3, call.line, "FSDP full shard")
            break

    for namespace, line in training.cli_configs():  # `--fsdp "full_shard auto_wrap"` on the launcher's line
        fsdp = namespace.get("fsdp")
        found = _setting(fsdp)
        if found is not None and found.value and "shard_grad_op" not in str(found.value):
            out.zero = Setting(3, found.line, "FSDP full shard", found.file)
    launch = facts.launch
    if launch is not None and launch.processes:
        out.gpus = Setting(launch.processes, launch.line, f"{launch.runner} processes", launch.file)
    if launch is not None and isinstance(launch.runner_options.get("config_file"), str):
        _accelerate_config(out, launch, training.files)
    mixed = launch.runner_options.get("mixed_precision") if launch is not None and launch.runner == "accelerate" else None
    if mixed in ("bf16", "fp16") and out.mixed_precision.value == "no":  # `accelerate launch --mixed_precision bf16`
        out.mixed_precision = Setting(mixed, launch.line, "accelerate launch --mixed_precision", launch.file)

    # checkpointing as the script runs with its defaults: `if args.gradient_checkpointing:
    # model.gradient_checkpointing_enable()` with an argparse default of False is off
    # (and the command line's `--gradient_checkpointing` is off unless passed)
    sites = [s for s in training.hf_sites if s.enabled and s.condition.runs_by_default is not False]
    # torch's wrapper over the model's layers (`apply_activation_checkpointing(model, checkpoint_wrapper_fn=...)`)
    wrapped = [c for c in facts.calls_to(APPLY_AC, CHECKPOINT_WRAPPER) if c.condition.runs_by_default is not False]
    if wrapped and not training.torch_checkpoint_sites and not sites:
        out.checkpointing = Setting("full", wrapped[0].line, f"`{wrapped[0].name}`")
    elif training.torch_checkpoint_sites or sites:
        plan = "full"
        for site in sites:
            kwargs = site.kwargs
            every = constant(kwargs.get("every_n_layers")) if isinstance(kwargs, DictVal) else None
            if site.call is not None:
                every = constant(site.call.kwarg("every_n_layers"), every)
            if isinstance(every, int) and every > 1:
                plan = f"every_{every}"
        line = sites[0].span.start.line if sites else training.torch_checkpoint_sites[0].line
        out.checkpointing = Setting(plan, line)
        out.checkpointing_reentrant = bool(sites) and not training.torch_checkpoint_sites and all(
            s.mode.reentrant is True for s in sites)
    elif flagged := _module_flag(training):
        out.checkpointing = Setting("full", flagged.line, f"`{flagged.target} = True`")
    elif own := _own_model_checkpointing(facts):
        out.checkpointing = own
    elif out.zero.value == 3 and (fsdp_own := _fsdp_config_checkpointing(out.config_call, training)) is not None:
        out.checkpointing = fsdp_own
    if out.load_in_4bit or out.load_in_8bit:
        out.kbit_upcast = _kbit_upcast(training, out)
    _deepspeed_auto_16bit(training, out)
    out.expandable_segments = _expandable_segments(facts) or out.expandable_segments
    if out.sharding_unknown is None and (split := _sequence_parallel(facts)) is not None:
        out.sharding_unknown = split
    return out


_SEQUENCE_PARALLEL = re.compile(r"(seq(uence)?|context)_parallel|ring_attn|ring_attention|ulysses", re.IGNORECASE)


def _sequence_parallel(facts: ScriptFacts) -> str | None:
    """Why the tokens of a sequence are spread over GPUs: a sequence / context parallel set-up the script calls in its
    default run (EasyContext's `apply_seq_parallel_monkey_patch`, ring or Ulysses attention), so no GPU holds the whole
    sequence the estimate would count."""
    for call in facts.calls:
        name = call.qualname or call.name
        if name and _SEQUENCE_PARALLEL.search(name) and call.condition.runs_by_default is not False:
            return f"the sequence is split over the GPUs (`{call.name}`, line {call.line}): the tokens each GPU holds are not known"
    return None


_EXPANDABLE = re.compile(r"expandable_segments\s*:\s*true", re.IGNORECASE)
_ALLOCATOR_SETTINGS = re.compile(rf"({'|'.join(ENVIRONMENT)}|_set_allocator_settings)\b")


def _expandable_segments(facts: ScriptFacts) -> Setting | None:
    """`expandable_segments:True` in the allocator's configuration: in the environment the launcher runs the script
    with, or set by the script itself (`os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"` before
    CUDA is first used, `torch.cuda.memory._set_allocator_settings("expandable_segments:True")`)."""
    launch = facts.launch
    if launch is not None:
        for name in ENVIRONMENT:
            if _EXPANDABLE.search(launch.env.get(name, "")):
                return Setting(True, launch.line, name, launch.file)
    for number, text in enumerate(facts.lines, 1):
        said = _ALLOCATOR_SETTINGS.search(text)
        if said and _EXPANDABLE.search(text) and not text.lstrip().startswith("#"):
            return Setting(True, number, said.group(1))
    return None


def _deepspeed_auto_16bit(training: Training, out: ScriptSettings) -> None:
    """A DeepSpeed config with `"bf16": {"enabled": "auto"}` under a Trainer with `bf16=True`: the Trainer fills it in
    (transformers `HfTrainerDeepSpeedConfig.trainer_config_process`: `fill_match("bf16.enabled", args.bf16 ...)`), so the
    step runs DeepSpeed's 16-bit mode, not autocast."""
    mode = out.mixed_precision.value if out.mixed_precision.value in ("bf16", "fp16") else None
    if out.deepspeed_16bit or mode is None:
        return
    for config in training.deepspeed_configs:
        block = config.data.get(mode)
        if isinstance(block, dict) and block.get("enabled") in (True, "auto"):
            out.deepspeed_16bit = True
            if out.dtype.value != mode:  # the engine casts the parameters to its dtype
                note = f"DeepSpeed {mode}.enabled {block.get('enabled')!r} in {config.where} with the Trainer's {mode}, fp32 master weights"
                out.dtype = Setting(mode, config.line, note)
            return


TRL_NO_KBIT_UPCAST_SINCE = "0.26"
"""trl v0.26.0 `SFTTrainer.__init__` calls `get_peft_model` directly; before, `prepare_peft_model` (trl/models/utils.py,
v0.23.0 .. v0.24.x; `SFTTrainer._prepare_peft_model` in v0.19.0) called peft's `prepare_model_for_kbit_training` for a
4/8-bit model that is not sharded (FSDP / ZeRO-3 load it on cpu/meta), and v0.25's own copy still cast the norms to fp32
(which makes the residual stream fp32 all the same)."""


def _kbit_upcast(training: Training, out: ScriptSettings) -> Setting:
    """Whether a 4/8-bit model's other parameters become fp32 before training: peft's `prepare_model_for_kbit_training`
    casts every fp16/bf16 parameter that is not a `Params4bit` to fp32 (peft v0.4.0 .. v0.21.2 src/peft/utils/other.py),
    called by the script, or by a TRL trainer given a `peft_config`; a 4-bit load with PEFT and no such call keeps them
    in the load's dtype."""
    for call in training.kbit_calls:
        if call.runs_by_default is not False:
            return Setting(True, call.line, "prepare_model_for_kbit_training casts the rest to fp32")
    for call in training.facts.calls:
        qualname = call.qualname or ""
        if not (qualname.startswith("trl.") and qualname.endswith("Trainer")):
            continue
        peft_config = call.kwarg("peft_config")
        if isinstance(peft_config, Missing) or (isinstance(peft_config, Const) and peft_config.value is None):
            continue
        trl = training.versions.get("trl").describe("trl")
        if out.zero.value == 3:
            return Setting(False, call.line, f"{call.name} skips the kbit preparation of a sharded (FSDP / ZeRO-3) model")
        if qualname != "trl.SFTTrainer":
            return Setting(True, call.line, f"{call.name} with peft_config: kbit preparation assumed")
        since = training.versions.at_least("trl", TRL_NO_KBIT_UPCAST_SINCE)
        if since:
            return Setting(False, call.line, f"{trl}: SFTTrainer applies PEFT without prepare_model_for_kbit_training")
        if since is False:
            return Setting(True, call.line, f"{trl}: SFTTrainer calls prepare_model_for_kbit_training")
        return Setting(True, call.line, f"SFTTrainer calls prepare_model_for_kbit_training before trl {TRL_NO_KBIT_UPCAST_SINCE} "
                                        f"(not from it); {trl}")
    if training.peft_calls or out.lora_r is not None:
        line = out.model_load.line if out.model_load is not None else None
        return Setting(False, line, "PEFT without prepare_model_for_kbit_training: the rest stays in the load's dtype")
    return out.kbit_upcast


def _fsdp_config_checkpointing(config: Call | None, training: Training) -> Setting | None:
    """FSDP's own checkpointing of every wrapped layer, set in the Trainer's `fsdp_config` (a dict in the call, or
    the JSON file the call or the launcher names): `{"activation_checkpointing": true}`."""
    candidates = [config.kwarg("fsdp_config")] if config is not None else []
    candidates += [namespace.get("fsdp_config") for namespace, _ in training.cli_configs()]
    for value in candidates:
        if isinstance(value, DictVal):
            on = truth(value.items.get("activation_checkpointing", MISSING))
            line = config.line if config is not None else None
        elif isinstance(value, Const) and isinstance(value.value, str):
            data = training.files.settings(value.value)
            on = bool(data.get("activation_checkpointing")) if isinstance(data, dict) else None
            line = value.origin.line if value.origin else None
        else:
            continue
        if on:
            return Setting("full", line, "fsdp_config activation_checkpointing", value.origin.file if isinstance(value, Const) and value.origin else None)
    return None


# the output layers a heads-only fine-tune keeps training
HEAD_WORDS = ("head", "classifier", "score", "fc", "cls")


# the attribute a vision-language model keeps its vision tower under (transformers: Qwen2-VL / Qwen2.5-VL `visual`,
# LLaVA-style `vision_tower`, Gemma 3 / Idefics `vision_model`); freezing it is not a heads-only fine-tune
VISION_TOWERS = ("visual", "vision_tower", "vision_model")


def _frozen_vision_tower(facts: ScriptFacts) -> Setting | None:
    """A VLM's vision tower frozen in the default run (`model.visual.requires_grad_(False)`, or `for p in
    model.visual.parameters(): p.requires_grad = False`; `model.model.visual` alike)."""
    frozen, _ = _requires_grad_changes(facts)
    for module, line in frozen:
        if module.split(".")[-1] in VISION_TOWERS:
            return Setting(True, line, f"`{module}` frozen")
    return None


def _frozen_trunk(facts: ScriptFacts) -> Setting | None:
    """A heads-only fine-tune in the default run: the backbone frozen (`model.bert.requires_grad_(False)`, or
    `for p in model.vit.parameters(): p.requires_grad = False`), or the whole model frozen and a head unfrozen.
    A frozen vision tower is not a backbone (`_frozen_vision_tower`)."""
    frozen, unfrozen = _requires_grad_changes(facts)
    for module, line in frozen:
        parts = module.split(".")
        if parts[-1] in VISION_TOWERS:
            continue
        if len(parts) == 2 and not any(w in parts[1].lower() for w in HEAD_WORDS + ("embed",)):
            return Setting("trunk", line, f"`{module}` frozen")  # `model.bert`: the backbone
        if len(parts) == 1 and any(u.startswith(f"{module}.") and any(w in u.lower() for w in HEAD_WORDS) for u in unfrozen):
            return Setting("trunk", line, f"`{module}` frozen but its head")
    return None


def _requires_grad_changes(facts: ScriptFacts) -> tuple[list[tuple[str, int]], list[str]]:
    """The modules the default run freezes (with the line) and unfreezes: `requires_grad_(...)` calls and
    `p.requires_grad = ...` over a module's `.parameters()`."""
    frozen: list[tuple[str, int]] = []  # (module, line)
    unfrozen: list[str] = []
    for call in facts.method_calls("requires_grad_"):
        if call.runs_by_default is False or not call.receiver:
            continue
        on = truth(call.args[0]) if call.args else truth(call.kwarg("requires_grad")) if "requires_grad" in call.kwargs else True
        if on is False:
            frozen.append((call.receiver, call.line))
        elif on:
            unfrozen.append(call.receiver)
    for assign in facts.assigns_to("requires_grad"):
        base = assign.base_value
        if isinstance(base, Instance) and base.qualname == PARAMETERS and base.call.receiver and assign.condition.runs_by_default is not False:
            on = truth(assign.value)
            if on is False:
                frozen.append((base.call.receiver, assign.line))
            elif on:
                unfrozen.append(base.call.receiver)
    return frozen, unfrozen


def _trained_unknown(training: Training, out: ScriptSettings) -> str | None:
    """Why the weights the step trains and stores are not known: the default run wraps the model with
    `get_peft_model(model, peft_config)` whose config this file does not build (a sibling module's `get_config()`), or
    loads it with a `quantization_config` built there. An estimate would count a full fine-tune of 16-bit weights."""
    if out.lora_r is None:
        wrapped = next((c for c in training.facts.calls_to("peft.get_peft_model") if c.condition.runs_by_default is not False), None)
        if wrapped is not None:
            return f"`get_peft_model` (line {wrapped.line}) is given a PEFT config this file does not build"
    load = out.model_load
    quantization = load.kwarg("quantization_config") if load is not None else MISSING
    if not (out.load_in_4bit or out.load_in_8bit or isinstance(quantization, (Missing, Instance))
            or (isinstance(quantization, Const) and quantization.value is None) or training.facts.calls_to("transformers.BitsAndBytesConfig")):
        return f"the `quantization_config` of the load at line {load.line} is built where this file cannot read it"
    return None


def _module_flag(training: Training) -> AttrAssign | None:
    """`model.transformer.gradient_checkpointing = True` on a model the script loads: the flag its layers' forward
    reads, set by hand (remote-code models of the 4.2x era, MOSS, run torch's `checkpoint` on it)."""
    loaded = {load.assigned_to for load in training.model_loads if load.assigned_to}
    return next((a for a in training.facts.attr_assigns
                 if a.attr == "gradient_checkpointing" and truth(a.value) is True and a.target.count(".") >= 2
                 and a.target.split(".", 1)[0] in loaded and a.condition.runs_by_default is not False), None)


# optimizer names a factory of the project or of a vision library takes (`smart_optimizer(model, opt.optimizer, ...)` with
# `--optimizer SGD`, timm's `create_optimizer_v2(model, opt="sgd")`)
FACTORY_OPTIMIZERS = {**OPTIM_NAMES, "adam": "adamw", "adamw": "adamw", "fusedadam": "adamw-fused", "adamw8bit": "adamw-8bit"}


def _optimizer_factory(call: Call) -> Setting | None:
    """The optimizer a factory is asked for by name: a call named like one (`smart_optimizer`, `create_optimizer`,
    `build_optimizer`) given a string that names an optimizer."""
    if "optim" not in call.name.lower() or call.qualname in OPTIM_CLASSES:
        return None
    for value in [*call.args, *call.kwargs.values()]:
        name = constant(value)
        if isinstance(name, str) and name.lower() in FACTORY_OPTIMIZERS:
            return Setting(FACTORY_OPTIMIZERS[name.lower()], *_where(value))
    return None


def _own_model_checkpointing(facts: ScriptFacts) -> Setting | None:
    """A model of the project's own made to checkpoint itself in the default run (`model.enable_gradient_checkpointing()`,
    `MAR(grad_checkpointing=args.grad_checkpointing)` or `model.gradient_checkpointing = args.gradient_checkpointing`
    with the option given)."""
    for enable, load, _, _ in facts.model_checkpoints:
        if enable.condition.runs_by_default is False or load.condition.runs_by_default is False:
            continue
        if isinstance(enable, AttrAssign):
            if truth(enable.value) is True:
                return Setting("full", enable.line, f"`{enable.target} = True` on the project's model")
        elif not enable.names_a_trainer:
            keyword = own_checkpointing_keyword(enable) if enable is load else None
            if keyword is None or truth(load.kwargs[keyword]) is True:
                return Setting("full", enable.line, f"the project's model, by `{keyword or enable.name}`")
    return None


def _dtype(value: Value) -> str | None:
    if isinstance(value, QualName):
        return DTYPES.get(value.name.rsplit(".", 1)[-1])
    if isinstance(value, Const) and isinstance(value.value, str):
        return "auto" if value.value == "auto" else DTYPES.get(value.value)
    if isinstance(value, Instance):
        return None
    return None


def _seq_len(facts: ScriptFacts, parsed: dict[str, Value]) -> Setting | None:
    """The first stated sequence length, by name: in a call of the script, else a field an argument parser fills
    (with what the launcher passes), else in a call of a project function it runs (which reads the fields' defaults,
    not the launcher's values), else bound outside any call."""

    def in_calls(calls: list[Call]) -> Setting | None:
        for name in SEQ_LEN_NAMES:
            for call in calls:
                found = _kwarg_setting(facts, call, name) if name in call.kwargs else None
                if found is not None and _positive_int(found.value):
                    return found
        return None

    def in_fields() -> Setting | None:
        for name in SEQ_LEN_NAMES:
            found = _setting(parsed[name]) if name in parsed else None
            if found is not None and _positive_int(found.value):
                if _declared_unread(facts, name):  # read elsewhere, or by nothing: a reading, not a stated size
                    where = f"{found.file}:{found.line}" if found.file else f"line {found.line}"
                    return Setting(found.value, None, f"assumed: `--{name}` ({where}), which this file declares but never reads", found.file)
                return found
        return None

    return (in_calls([c for c in facts.calls if c.via is None]) or in_fields()
            or in_calls([c for c in facts.calls if c.via is not None]) or _named_setting(facts, SEQ_LEN_NAMES))


def _declared_unread(facts: ScriptFacts, name: str) -> bool:
    """A field the script's own dataclass declares (`block_size: Optional[int] = field(...)`) that nothing in the
    script reads: a launcher may pass it, but whether anything uses it is not known here (malaya's `--block_size 24576`
    over a pre-packed dataset sets nothing; Mantis' `--max_seq_len` is read by its data module). A library's field
    (never declared here) or one a project module declares is left alone: their code reads it."""
    mentions = [line for line in facts.lines if re.search(rf"\b{re.escape(name)}\b", line)]
    return len(mentions) == 1 and re.match(rf"\s*{re.escape(name)}\s*:", mentions[0]) is not None


def _rl_seq_len(config: Call | None, training: Training) -> Setting | None:
    """A GRPO step's sequence: the prompt and the completion it generates, `max_prompt_length + max_completion_length`
    (trl v0.14.0 .. v0.25.x `GRPOConfig` defaults 512 and 256; from v0.26.0 the prompt is no longer truncated, so
    its length is known only where it is stated)."""
    if config is not None and config.qualname == GRPO_CONFIG:
        get, where = (lambda name: config.kwarg(name)), config.line
    else:
        namespace = next((n for n, _ in training.cli_configs() if n.config_class == GRPO_CONFIG), None)
        if namespace is None:
            return None
        get, where = namespace.get, None
    prompt, completion = _setting(get("max_prompt_length")), _setting(get("max_completion_length"))
    if prompt is None and training.versions.at_least("trl", TRL_UNTRUNCATED_PROMPT_SINCE) is not True:
        prompt = Setting(512, None, "GRPOConfig default max_prompt_length (trl < 0.26; later releases do not truncate)")
    completion = completion or Setting(256, None, "GRPOConfig default max_completion_length")
    if prompt is None or not (_positive_int(prompt.value) and _positive_int(completion.value)):
        return None
    stated = prompt.stated or completion.stated
    return Setting(prompt.value + completion.value, (prompt.line or completion.line or where) if stated else None,
                   f"max_prompt_length {prompt.value} + max_completion_length {completion.value}", prompt.file or completion.file)


def _kwarg_setting(facts: ScriptFacts, call: Call, name: str) -> Setting | None:
    """``call``'s keyword ``name``; a value we cannot follow (``cutoff_len=cutoff_len``, a parameter) by the
    name it is passed as."""
    found = _setting(call.kwarg(name))
    if found is None and name in call.kwarg_names:
        found = _named_setting(facts, (call.kwarg_names[name].rsplit(".", 1)[-1],))
    return found


_AUTOCAST = ("torch.autocast", "torch.amp.autocast", "torch.cuda.amp.autocast", "torch.cpu.amp.autocast")


# what the script itself calls to compute its loss without the whole logits (liger-kernel ead96b6,
# `transformers/monkey_patch.py`: every `apply_liger_kernel_to_<model>` takes `fused_linear_cross_entropy: bool = True`;
# `AutoLigerKernelForCausalLM` applies it with its defaults)
LIGER_PATCH = "liger_kernel.transformers.apply_liger_kernel_to_"
LIGER_AUTO_MODEL = "liger_kernel.transformers.AutoLigerKernelForCausalLM"
LIGER_LOSS = "LigerFusedLinearCrossEntropyLoss"
CUT_CROSS_ENTROPY = "cut_cross_entropy"  # Apple's cut cross-entropy (not modelled: the estimate's logits stay an upper bound)


def _library_fused_loss(facts: ScriptFacts) -> Setting | None:
    """Liger's fused linear cross-entropy as the script turns it on by itself: a patch `apply_liger_kernel_to_llama()`
    (its `fused_linear_cross_entropy` not False), a model `AutoLigerKernelForCausalLM.from_pretrained(...)`, or its own
    loss `LigerFusedLinearCrossEntropyLoss()` over the head's weight; else Apple's cut cross-entropy imported."""
    for call in facts.calls:
        name = call.qualname or ""
        if name.startswith(LIGER_PATCH) and call.runs_by_default is not False:
            fused = call.kwarg("fused_linear_cross_entropy")
            if isinstance(fused, Missing) or truth(fused) is True:
                return Setting("liger", call.line, f"`{call.name}()`: fused_linear_cross_entropy")
        elif (name.startswith(LIGER_AUTO_MODEL) or name.endswith(LIGER_LOSS)) and call.runs_by_default is not False:
            return Setting("liger", call.line, f"`{call.name}`" if name.endswith(LIGER_LOSS) else "`AutoLigerKernelForCausalLM`")
    imported = next((line for module, line in facts.imports.items() if module.split(".", 1)[0] == CUT_CROSS_ENTROPY), None)
    if imported is not None:
        return Setting("cut-cross-entropy", imported, "imports cut_cross_entropy")
    return None


def _eval_logits_batch(training: Training) -> Setting | None:
    """The per-device evaluation batch of a Trainer that keeps every batch's logits, on the default run."""
    for kept in logits_kept_in_evaluation(training):
        if kept.condition.runs_by_default is False:
            continue
        trainer = f"`{kept.call.name}` at line {kept.call.line}, {kept.why}"
        given = _setting(training_field(kept.args, "per_device_eval_batch_size"))
        if given is None:
            return Setting(EVAL_BATCH_DEFAULT, None, f"{trainer}; per_device_eval_batch_size: the TrainingArguments default")
        return Setting(given.value, None, f"{trainer}; per_device_eval_batch_size: {given.describe()}")
    return None


def vllm_setting(colocations: list[Colocation]) -> Setting | None:
    """The share of each GPU vLLM holds in the training processes, on the default run."""
    found = next((c for c in colocations if c.condition.runs_by_default is not False), None)
    if found is None:
        return None
    said = f"`vllm_gpu_memory_utilization` at {found.said}" if found.said.startswith("line") else found.said
    return Setting(found.utilization, None, f"{said}, {found.mode}")


def _quantization(facts: ScriptFacts, out: ScriptSettings) -> None:
    """4-bit or 8-bit from the `BitsAndBytesConfig(...)` calls that may run by default (`if args.use_qlora:` with its
    default off does not). Calls of both kinds on branches neither of which is known to run (`if precision == INT8:
    ... elif precision == INT4:` on a value set elsewhere) leave the quantization unknown, not both."""
    bits = {}
    for call in facts.calls_to("transformers.BitsAndBytesConfig"):
        if call.runs_by_default is False:
            continue
        for flag in ("load_in_4bit", "load_in_8bit"):
            if truth(call.kwarg(flag)) is True:
                bits.setdefault(flag, []).append(call)
    if len(bits) == 2:
        chosen = [flag for flag, calls in bits.items() if any(c.runs_by_default is True for c in calls)]
        if len(chosen) != 1:
            lines = " and ".join(f"{flag} at {calls[0].via or f'line {calls[0].line}'}" for flag, calls in bits.items())
            out.trained_unknown = out.trained_unknown or f"the quantization depends on which branch runs ({lines})"
            return
        bits = {chosen[0]: bits[chosen[0]]}
    out.load_in_4bit = out.load_in_4bit or "load_in_4bit" in bits
    out.load_in_8bit = out.load_in_8bit or "load_in_8bit" in bits


def _autocast(facts: ScriptFacts) -> Setting | None:
    """The 16-bit dtype a script's `autocast(dtype=...)` runs the forward in (over fp32 weights): a dtype given in
    the call, else the option or constant named `dtype` the script hands to it, else autocast's own default on CUDA
    (float16: torch 2.13.0 `torch/amp/autocast_mode.py`, `torch.get_autocast_dtype("cuda")`;
    `torch.cuda.amp.autocast(dtype=torch.float16)`); or Lightning's mixed `precision=` ("bf16-mixed", 16)."""
    for call in facts.calls_to(*_AUTOCAST):
        if truth(call.kwarg("enabled")) is False:
            continue
        given = call.kwarg("dtype")
        dtype = _dtype(given)
        if dtype is None and not isinstance(given, Missing):
            value = _named_value(facts, "dtype")[1]
            found = _setting(value) if value is not None else None
            dtype = DTYPES.get(str(found.value)) if found is not None else None
            if dtype in ("bf16", "fp16"):
                return Setting(dtype, found.line, f"autocast ({found.note or 'constant'} of dtype)")
        if dtype in ("bf16", "fp16"):
            return Setting(dtype, call.line, "autocast")
        device = call.args[0] if call.args and call.qualname != "torch.cuda.amp.autocast" else call.kwarg("device_type")
        if isinstance(given, Missing) and constant(device, "cuda") in ("cuda", None):
            return Setting("fp16", call.line, "autocast's default dtype on CUDA")
    for call in facts.calls:
        if call.name in ("Fabric", "Trainer") and (call.qualname or "").startswith(("lightning", "pytorch_lightning")):
            found = _setting(call.kwarg("precision"))
            if found is not None and str(found.value) in LIGHTNING_MIXED_PRECISION:
                return Setting(LIGHTNING_MIXED_PRECISION[str(found.value)], found.line, f"Lightning precision={found.value!r}")
    return None


def _named_value(facts: ScriptFacts, name: str) -> tuple[str, Value | None]:
    """(destination, value) of the option whose destination ends in `name` (`args.dtype`, `ds.dtype`; the last one
    declared), else of the script's constant of that name."""
    found = [(dest, value) for dest, value in facts.argparse_defaults.items() if dest.rsplit(".", 1)[-1] == name]
    return found[-1] if found else (name, facts.named_constants.get(name))


def _precision(facts: ScriptFacts, autocast: bool = False) -> tuple[Setting, bool] | None:
    """The weights' dtype a script sets outside `from_pretrained`, and whether DeepSpeed keeps an fp32 master
    copy of them: Lightning's `precision="bf16-true"`, or an option / constant named `dtype` / `param_dtype`
    ("bf16"), which DeepSpeed scripts hand to their config (not when the script autocasts: then `dtype` is the
    autocast's)."""
    for call in facts.calls:
        if call.name in ("Fabric", "Trainer") and (call.qualname or "").startswith(("lightning", "pytorch_lightning")):
            found = _setting(call.kwarg("precision"))
            if found is not None and str(found.value) in LIGHTNING_TRUE_PRECISION:
                return Setting(LIGHTNING_TRUE_PRECISION[str(found.value)], found.line, f"Lightning precision={found.value!r}"), False
    deepspeed = any(m == "deepspeed" or m.startswith("deepspeed.") for m in facts.imports)
    for name in ("param_dtype",) if autocast else ("dtype", "param_dtype"):
        dest, value = _named_value(facts, name)
        found = _setting(value) if value is not None else None
        if found is not None and str(found.value) in DTYPES:
            dtype = DTYPES[str(found.value)]
            if deepspeed or dest.startswith("ds."):
                return Setting(dtype, found.line, f"DeepSpeed {dtype} ({found.note or 'constant'} of {name}), fp32 master weights"), True
            return Setting(dtype, found.line, found.note), False
    return None


def _accelerate_config(out: ScriptSettings, launch, files) -> None:
    """`accelerate launch --config_file x.yaml train.py`: the processes, ZeRO stage or FSDP the file sets (read as a
    config of its own is); a file that is not there, or a DeepSpeed JSON it names that is not, leaves the sharding
    unknown."""
    from ckpt_doctor.analysis.config_document import ConfigError, read_document
    from ckpt_doctor.analysis.run_config import accelerate_run

    name = launch.runner_options["config_file"]
    text, path = files.settings_text(name)
    try:
        run = accelerate_run(read_document(text, str(path))) if text is not None else None
    except ConfigError:
        run = None
    if run is None:
        out.sharding_unknown = f"{name} (named at {launch.where}) is not there"
        return
    files.read.extend(run.read[1:])
    if run.missing and not out.zero.value:
        out.sharding_unknown = f"{name} leaves the ZeRO stage to {run.missing[0]}, which is not there"
    elif run.zero_stage.value and not out.zero.value:
        where = run.zero_stage.note or "zero_stage"
        out.zero = Setting(int(run.zero_stage.value), launch.line, f"DeepSpeed ZeRO-{run.zero_stage.value} ({where} in {name})", launch.file)
    elif run.fsdp.value and not out.zero.value:
        out.zero = Setting(3, launch.line, f"FSDP in {name}", launch.file)
    if run.gpus is not None and not launch.processes:
        out.gpus = Setting(run.gpus.value, launch.line, f"num_processes in {name}", launch.file)
    if run.dtype is not None and out.mixed_precision.value == "no" and "mixed_precision" not in launch.runner_options:
        # what the script does not say itself: accelerate hands the config's `mixed_precision` to its Accelerator
        out.mixed_precision = Setting(run.dtype.value, launch.line, f"mixed_precision in {name}", launch.file)


def _where(value: Value) -> tuple[int | None, str, str | None]:
    """(line, note, file) of a constant's origin, as `Setting` takes them."""
    found = _setting(value)
    return (found.line, found.note, found.file) if found else (None, "", None)


def _evaluation(loader: Call) -> bool:
    """A test / eval / validation loader, by the words of the names around it (`EVAL_BATCH_SIZE`, `val_loader`)."""
    names = " ".join(filter(None, [*loader.arg_names, loader.assigned_to, loader.kwarg_names.get("batch_size")])).lower()
    return any(word.startswith(("test", "eval", "val")) for word in re.split(r"[^a-z]+", names))


def _named_setting(facts: ScriptFacts, names: tuple[str, ...]) -> Setting | None:
    """A positive integer the script binds to one of ``names`` (in that order) outside any library call: an
    argparse option (also ``--train.micro_batch_size``), a constant, a parameter default, a config dict value."""
    options = {dest.rsplit(".", 1)[-1]: value for dest, value in facts.argparse_defaults.items()}
    # the defaults of the project's own config classes the script builds (`cfg = config.train_config()`), which its
    # helpers read (`get_data_loader(cfg)`)
    project = {k: v for name, fields in facts.dataclass_fields.items() if "." in name for k, v in fields.items()}
    for name in names:
        for table in (options, facts.named_constants, project):
            found = _setting(table[name]) if name in table else None
            if found is not None and _positive_int(found.value):
                return found
    return None


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


ASSUMED_SHARDING_GPUS = 8
DEFAULT_SEQ_LEN = 2048


def complete_for(settings: ScriptSettings, arch) -> ScriptSettings:
    """Fill in, from the model's architecture, what the script leaves to the library or to us."""
    if settings.dtype.value == "auto":
        dtype = str(getattr(arch, "torch_dtype", None) or "float32")
        settings.dtype = Setting(DTYPES.get(dtype, "fp32"), None, "the checkpoint's dtype (transformers 5 loads dtype='auto')")
    if settings.attn.line is None:  # not stated: transformers picks sdpa, or eager where it refuses sdpa (Gemma 2)
        from ckpt_doctor.estimate.arch import default_attn

        if default_attn(arch) != settings.attn.value:
            settings.attn = Setting(default_attn(arch), None, f"transformers falls back to eager: {arch.model_type} refuses sdpa")
    if settings.dtype.value != "fp32" and settings.mixed_precision.value != "no":
        # autocast over weights that are already 16-bit keeps no fp32 master copy
        settings.mixed_precision = Setting("no", settings.mixed_precision.line, "weights already 16-bit")
    if settings.zero.value and not settings.gpus.stated:
        # sharded over an unknown number of GPUs: judge it by the most favourable common case
        settings.gpus = Setting(ASSUMED_SHARDING_GPUS, None, "assumed: one node of 8 GPUs for ZeRO/FSDP sharding")
    if settings.seq_len is None:
        cap = arch.max_position_embeddings or DEFAULT_SEQ_LEN
        settings.seq_len = Setting(min(DEFAULT_SEQ_LEN, cap), None, f"assumed: {DEFAULT_SEQ_LEN} capped by max_position_embeddings")
    return settings
