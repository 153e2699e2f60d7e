"""A framework config read as the training run it describes: checkpointing (on, reentrant, offloaded), LoRA,
quantization, ZeRO / FSDP, batch, sequence, dtype, optimizer and model, each with the key it comes from or the
framework's default (with its tag in `docs/framework-facts.md`).

The same `ScriptSettings` a script's analysis gives come out of it, so `estimate` and the memory rules treat a
config and the script it stands for alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ckpt_doctor.analysis.config_document import ConfigError, Document, Entry, read_document
from ckpt_doctor.analysis.config_files import MAX_BYTES, bounded_text, locate
from ckpt_doctor.analysis.frameworks import Framework, framework, recognise
from ckpt_doctor.analysis.launchers import AUTO, FrameworkLaunch
from ckpt_doctor.analysis.settings import DTYPES, OPTIM_NAMES, ScriptSettings, Setting


@dataclass
class Fact:
    """One setting of the run: its value, and the key that states it (None: the framework's default)."""

    value: object
    entry: Entry | None = None
    note: str = ""  # for a default: "LLaMA-Factory default [L3]"
    file: str | None = None  # another file the key is in (the DeepSpeed JSON a config names)

    @property
    def line(self) -> int | None:
        return self.entry.line if self.entry else None

    def setting(self) -> Setting:
        return Setting(self.value, self.line, self.note, self.file)


@dataclass
class RunConfig:
    framework: Framework
    document: Document
    checkpointing: Fact = field(default_factory=lambda: Fact(False))
    reentrant: Fact = field(default_factory=lambda: Fact(None))  # True / False / None: not known
    offload_activations: Fact = field(default_factory=lambda: Fact(False))
    lora: Fact = field(default_factory=lambda: Fact(False))
    lora_r: Fact | None = None
    lora_targets: Fact | None = None  # "all-linear", or module names
    lora_targets_key: str = "target_modules"  # the framework's key for the target modules
    lora_named: tuple[str, ...] = ()  # module names given beside "all-linear" (axolotl's `lora_target_modules` with `lora_target_linear`)
    # the framework's function that replaces "all" / "all-linear" by the names of the `nn.Linear` modules it finds in the
    # model, so that peft gets a list of names (None: the string reaches peft, which resolves it itself)
    lora_linear_names_by: str | None = None
    lora_target_parameters: Fact | None = None  # the parameters the config targets (fused MoE experts), None when not given
    lora_parameters_key: str | None = None  # the framework's key for peft's `target_parameters`, None when it has none
    quantization: Fact = field(default_factory=lambda: Fact(None))  # 4 / 8 / None
    kbit_upcast: Fact | None = None  # 4/8-bit: the framework casts embeddings / norms / head to fp32 (None: peft's default)
    zero_stage: Fact = field(default_factory=lambda: Fact(0))
    launched_by: str | None = None  # the command of a launch line (`trl`, `swift`, `accelerate`), None for a file alone
    command: str | None = None  # its subcommand: `sft`, `dpo`, `rlhf`, ...
    missing: list[str] = field(default_factory=list)  # files the config or line names that are not there
    read: list[str] = field(default_factory=list)  # other files the run was read from (the check's cache key holds them)
    deepspeed: Document | None = None  # the DeepSpeed JSON the config names, read
    deepspeed_entry: Entry | None = None  # the key naming it
    fsdp: Fact = field(default_factory=lambda: Fact(False))
    fsdp_checkpointing: Fact = field(default_factory=lambda: Fact(False))
    batch_size: Fact | None = None
    grad_accum: Fact | None = None
    seq_len: Fact | None = None
    dtype: Fact | None = None
    optimizer: Fact | None = None
    model: Fact | None = None
    gpus: Fact | None = None
    fused_loss: Fact | None = None  # a fused / chunked cross-entropy the config turns on (the keys of setting "loss_kernel")
    # `torch_compile: true` with its `torch_compile_mode` (the Trainer's own keys, which axolotl and TRL pass on), None
    # when the config does not compile
    compile_mode: Fact | None = None
    spread: str | None = None  # how the step is spread over GPUs in a way the estimate does not model

    def stated(self, key: str, default: object = None, note: str = "") -> Fact:
        """The value of `key` in the config, else the framework's default for it."""
        entry = self.document.get(key)
        if entry is not None:
            return Fact(entry.value, entry)
        fallback = self.framework.default(key) if default is None else default
        return Fact(fallback, None, note or f"{self.framework.name} default {self.framework.tag(key)}".strip())

    @property
    def sharding_known(self) -> bool:
        """Whether the config says how the step is spread over GPUs: TRL's configs leave it to accelerate's config,
        and a DeepSpeed / accelerate file that is named but not there leaves it open."""
        if self.missing:
            return False
        return bool(self.zero_stage.value or self.fsdp.value or self.launched_by or self.framework.id != "trl")

    def settings(self) -> ScriptSettings:
        """The run as `estimate` and the memory rules take it."""
        out = ScriptSettings(is_training=True)
        if self.model and self.model.value:
            out.model = self.model.setting()
        for name in ("batch_size", "seq_len"):
            fact = getattr(self, name)
            if fact is not None and isinstance(fact.value, int) and not isinstance(fact.value, bool) and fact.value > 0:
                setattr(out, name, fact.setting())
        if self.grad_accum is not None and isinstance(self.grad_accum.value, int) and self.grad_accum.value > 0:
            out.gradient_accumulation = self.grad_accum.setting()
        if self.dtype is not None and self.dtype.value in ("bf16", "fp16", "fp32", "auto"):
            out.dtype = self.dtype.setting()
        if self.optimizer is not None and self.optimizer.value:
            name = str(self.optimizer.value)
            out.optimizer = Setting(OPTIM_NAMES.get(name, name), self.optimizer.line, self.optimizer.note)
        if self.lora.value:
            rank = self.lora_r if self.lora_r is not None and isinstance(self.lora_r.value, int) else Fact(8, None, "PEFT default rank")
            out.lora_r = rank.setting()
            targets = self.lora_targets.value if self.lora_targets is not None else None
            if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
                targets = ",".join(targets)
            if isinstance(targets, str) and targets:
                out.lora_targets = Setting("all-linear" if targets in ("all", "all-linear") else targets, self.lora_targets.line,
                                           self.lora_targets.note)
        if self.quantization.value in (4, 8):
            out.load_in_4bit, out.load_in_8bit = self.quantization.value == 4, self.quantization.value == 8
            if self.kbit_upcast is not None:
                out.kbit_upcast = self.kbit_upcast.setting()
        if (self.deepspeed is not None or self.zero_stage.value) and out.dtype.value in ("bf16", "fp16", "auto"):
            # DeepSpeed bf16 / fp16 (the Trainer fills the JSON's "auto" from its own flag): 16-bit weights, an fp32
            # master copy and fp32 optimizer state partitioned by ZeRO (TrainingSetup.master_weights)
            out.deepspeed_16bit = True
        if self.zero_stage.value:
            out.zero = Setting(int(self.zero_stage.value), self.zero_stage.line, f"DeepSpeed ZeRO-{self.zero_stage.value}",
                               self.zero_stage.file)
        elif self.fsdp.value:
            out.zero = Setting(3, self.fsdp.line, "FSDP full shard")
        if self.gpus is not None and isinstance(self.gpus.value, int) and self.gpus.value > 0:
            out.gpus = self.gpus.setting()
        if self.checkpointing.value:
            out.checkpointing = Setting("full", self.checkpointing.line, self.checkpointing.note)
        if self.fused_loss is not None:
            out.fused_loss = Setting(str(self.fused_loss.value), self.fused_loss.line, self.fused_loss.note, self.fused_loss.file)
        out.sharding_unknown = self.spread
        return out


def read_run(document: Document, files_from: str | None = None) -> RunConfig | None:
    """The run `document` describes; None when it is no framework's config. `files_from`: the path other files the
    config names are found from (the config's own, by default)."""
    found = recognise(document)
    if found is None:
        return None
    run = RunConfig(found, document)
    READERS[found.id](run, files_from or document.path)
    _fused_loss(run)
    _compile(run)
    return run


def _compile(run: RunConfig) -> None:
    """`torch_compile: true` and its mode: the `TrainingArguments` fields, which the Trainer hands to `torch.compile`
    (axolotl v0.18.0 `core/builders/base.py` `_configure_torch_compile` passes both on)."""
    if run.document.value("torch_compile") is True:
        run.compile_mode = run.stated("torch_compile_mode", None, "TrainingArguments default mode")


def _fused_loss(run: RunConfig) -> None:
    """A key that turns on a fused or chunked cross-entropy (`use_liger_kernel: true`, axolotl's cut-cross-entropy with
    its plugin, torchtune's chunked loss component, TRL's `loss_type: chunked_nll`)."""
    plugins = " ".join(str(p) for p in (run.document.value("plugins") or []) if isinstance(p, str))
    for key, meaning in run.framework.table["keys"].items():
        entry = run.document.get(key)
        if meaning.get("setting") != "loss_kernel" or entry is None:
            continue
        value = entry.value
        # a switch that is on, or a named loss that is chunked (`chunked_nll`, `CEWithChunkedOutputLoss`,
        # `LinearCrossEntropyLoss`); any other name (`nll`, DPO's `sigmoid`) is a plain loss
        if not (value is True or (isinstance(value, str) and re.search(r"chunk|linearcrossentropy", value, re.IGNORECASE))):
            continue
        if "only read when plugins lists" in str(meaning.get("values", {}).get("*", "")) and key.split("_")[0] not in plugins:
            continue  # axolotl reads the key through its plugin [X1]
        run.fused_loss = Fact(value, entry, key)
        return


def read_launched(launched: FrameworkLaunch, launcher: str, text: str) -> RunConfig | None:
    """The run a framework launch line describes: the config it names, with the options the line passes over it,
    and the accelerate config or flags it launches with. Every key stands at the launcher's line that gives it (the
    config's keys at the line naming the config). None when the line names a file no framework reads."""
    document = Document(launcher, text)
    launch = launched.launch
    inner = _named_document(launcher, launched.config)
    for key, entry in (inner.entries.items() if inner else ()):
        document.entries[key] = Entry(key, entry.value, launch.line, 1)
    lines = text.splitlines()
    for key in launch.options:
        line = launch.option_lines.get(key, launch.line)
        column = lines[line - 1].find(launch.written.get(key, key)) + 1 if 0 < line <= len(lines) else 1
        document.entries[key] = Entry(key, launch.value(key), line, max(column, 1))
    found = recognise(inner) if launched.framework == AUTO and inner is not None else None
    if launched.framework == AUTO and found is None:
        return None
    run = RunConfig(found or framework(launched.framework), document, launched_by=launch.runner, command=launch.runner_options.get("command"))
    run.read += [inner.path] if inner else []
    READERS[run.framework.id](run, inner.path if inner else launcher)
    _fused_loss(run)
    _launched_with(run, launch, launcher)
    return run


def _named_document(base: str, name: str | None) -> Document | None:
    """The YAML / JSON file `name` (relative to `base`'s folder or its parents), None when it is not there or not
    readable as one."""
    found = locate(base, name) if name else None
    text = bounded_text(found, MAX_BYTES) if found is not None else None
    if text is None:
        return None
    try:
        return read_document(text, str(found))
    except ConfigError:
        return None


def _launched_with(run: RunConfig, launch, launcher: str) -> None:
    """What the launcher adds: its processes, and accelerate's config file or flags (FSDP and its checkpointing,
    ZeRO, mixed precision)."""
    options = launch.runner_options
    accelerate = _named_document(launcher, options.get("config_file")) if isinstance(options.get("config_file"), str) else None
    if accelerate is None and isinstance(options.get("config_file"), str):
        run.missing.append(options["config_file"])
    if accelerate is not None:
        settings = accelerate_run(accelerate)
        run.read += settings.read
        entry = Entry("config_file", options["config_file"], launch.line, 1)
        note = f"in {options['config_file']}"
        if settings.fsdp.value:
            run.fsdp = Fact(True, entry, f"FSDP {note}")
            run.fsdp_checkpointing = Fact(bool(settings.fsdp_checkpointing.value), entry, f"fsdp_activation_checkpointing {note}")
        if settings.zero_stage.value and not run.zero_stage.value:
            run.zero_stage = Fact(settings.zero_stage.value, entry, f"zero_stage {note}")
        if settings.gpus is not None and launch.processes is None:
            run.gpus = Fact(settings.gpus.value, entry, f"num_processes {note}")
        if settings.dtype is not None and run.dtype is None:
            run.dtype = Fact(settings.dtype.value, entry, f"mixed_precision {note}")
    if launch.processes:
        run.gpus = Fact(launch.processes, Entry("processes", launch.processes, launch.line, 1))
    if options.get("gpus_per_process", 1) > 1:
        run.spread = (f"each of the {launch.processes} processes spreads its model over {options['gpus_per_process']} GPUs "
                      f"(device_map model parallelism, fewer processes than visible GPUs at {launch.where}) [S8]")


def accelerate_run(document: Document) -> RunConfig:
    """An accelerate config file as the run it launches: ZeRO stage (with the DeepSpeed JSON it names), FSDP and its
    checkpointing, processes and mixed precision; `read` holds the file and the JSON."""
    run = RunConfig(framework("accelerate"), document)
    _accelerate(run, document.path)
    run.read.insert(0, document.path)
    return run


# -- one reader per framework -----------------------------------------------------------------------------------


def _llamafactory(run: RunConfig, path: str) -> None:
    disabled = run.stated("disable_gradient_checkpointing", False)
    run.checkpointing = Fact(not disabled.value, disabled.entry, "LLaMA-Factory default: on [L3]" if disabled.entry is None else "")
    run.reentrant = run.stated("use_reentrant_gc", True, "LLaMA-Factory default use_reentrant_gc: true [L4]")
    trainer_flag = run.document.get("gradient_checkpointing")
    if trainer_flag is not None and trainer_flag.value is True and "gradient_checkpointing_kwargs" not in run.document:
        # the Trainer enables it again with no kwargs: reentrant through LLaMA-Factory's patch, on whatever `disable_...` says
        run.checkpointing = Fact(True, trainer_flag)
        run.reentrant = Fact(True, trainer_flag, "`gradient_checkpointing: true` makes the Trainer re-enable it reentrant [L8]")
    unsloth = run.stated("use_unsloth_gc", False)
    run.offload_activations = unsloth
    method = run.stated("finetuning_type", "lora", "LLaMA-Factory default finetuning_type: lora [L7]")
    run.lora = Fact(method.value in ("lora", "oft"), method.entry, method.note)
    run.lora_r = run.stated("lora_rank", 8, "LLaMA-Factory default lora_rank [L7]")
    run.lora_targets = run.stated("lora_target", "all", "LLaMA-Factory default lora_target: all [L7]")
    run.lora_targets_key = "lora_target"
    if _names(run.lora_targets.value) == ("all",):
        run.lora_linear_names_by = "LLaMA-Factory's `find_all_linear_modules` [L11]"  # no key for target_parameters [L11]
    bits = run.document.get("quantization_bit")
    run.quantization = Fact(bits.value if bits else None, bits)
    # LLaMA-Factory never calls peft's prepare_model_for_kbit_training; `upcast_layernorm` (default false) casts the norms
    # to fp32, which makes the residual stream fp32 too (v0.9.5 model/model_utils/checkpointing.py prepare_model_for_training)
    upcast = run.stated("upcast_layernorm", False, "LLaMA-Factory default upcast_layernorm: false")
    run.kbit_upcast = Fact(bool(upcast.value), upcast.entry, "upcast_layernorm" if upcast.entry else upcast.note)
    _trainer_fields(run, path, seq_key="cutoff_len", seq_default=2048, seq_note="LLaMA-Factory default cutoff_len [L6]")
    if run.document.value("pure_bf16") is True:
        run.dtype = Fact("bf16", run.document.get("pure_bf16"))
    for key in ("use_badam", "use_galore", "use_apollo", "use_muon", "use_adam_mini"):  # optimizers of its own [L7]
        if run.document.value(key) is True:
            run.optimizer = Fact(key.removeprefix("use_"), run.document.get(key))


def _axolotl(run: RunConfig, path: str) -> None:
    gc = run.stated("gradient_checkpointing", False, "axolotl default [X2]")
    run.checkpointing = Fact(bool(gc.value), gc.entry, gc.note)
    if not _explicit_reentrant(run) and gc.value:
        rl = run.document.get("rl") or run.document.get("unfrozen_parameters")
        run.reentrant = Fact(rl is None, gc.entry, "axolotl default for SFT: use_reentrant true [X3]" if rl is None else "axolotl: non-reentrant for RL [X3]")
    offload = run.document.get("activation_offloading")
    run.offload_activations = Fact(bool(offload.value) if offload else gc.value in ("offload", "offload_disk"), offload or gc.entry)
    adapter = run.document.get("adapter")
    run.lora = Fact(bool(adapter and adapter.value in ("lora", "qlora")), adapter)
    run.lora_r = run.stated("lora_r")
    linear = run.document.get("lora_target_linear")
    run.lora_targets = Fact("all-linear", linear) if linear is not None and linear.value else run.stated("lora_target_modules")
    run.lora_targets_key = "lora_target_modules"
    if linear is not None and linear.value:
        run.lora_linear_names_by = "axolotl's `find_all_linear_names` [X8]"
        run.lora_named = _names(run.document.value("lora_target_modules"))
    run.lora_target_parameters, run.lora_parameters_key = _given(run, "lora_target_parameters"), "lora_target_parameters"
    for bits, key in ((4, "load_in_4bit"), (8, "load_in_8bit")):
        if run.document.value(key) is True:
            run.quantization = Fact(bits, run.document.get(key))
    # for a LoRA / QLoRA adapter axolotl converts norms and embeddings back to torch_dtype after
    # prepare_model_for_kbit_training (v0.4.0 .. v0.18.0: `needs_fa2_dtype` / `should_convert`, loaders/model.py
    # _convert_embedding_modules_dtype), and skips the preparation under FSDP QLoRA and ZeRO-3
    run.kbit_upcast = Fact(False, adapter, "axolotl casts norms and embeddings back to torch_dtype")
    run.batch_size = run.stated("micro_batch_size", 1, "axolotl default micro_batch_size [X5]")
    run.grad_accum = run.stated("gradient_accumulation_steps", 1, "axolotl default [X5]")
    run.seq_len = run.stated("sequence_len", 512, "axolotl default sequence_len [X5]")
    bf16 = run.document.get("bf16")
    if run.document.value("bfloat16") is True:
        run.dtype = Fact("bf16", run.document.get("bfloat16"))
    elif bf16 is not None and bf16.value in (True, "auto", "full"):
        run.dtype = Fact("bf16", bf16)
    run.optimizer = run.stated("optimizer", "adamw_torch_fused", "axolotl default optimizer [X6]")
    run.model = run.stated("base_model")
    _deepspeed(run, path, "deepspeed")
    fsdp = run.document.get("fsdp_config") or run.document.get("fsdp")
    if fsdp is not None:
        run.fsdp = Fact(True, fsdp)
        ac = run.document.get("fsdp_config.activation_checkpointing") or run.document.get("fsdp_config.fsdp_activation_checkpointing")
        if ac is not None:
            run.fsdp_checkpointing = Fact(bool(ac.value), ac)


def _torchtune(run: RunConfig, path: str) -> None:
    run.checkpointing = run.stated("enable_activation_checkpointing", False, "torchtune default [U2]")
    if run.checkpointing.value:
        run.reentrant = Fact(False, run.checkpointing.entry, "torchtune checkpoints non-reentrant [U2]")
    run.offload_activations = run.stated("enable_activation_offloading", False, "torchtune default [U3]")
    component = str(run.document.value("model._component_") or "")
    run.lora = Fact("lora_" in component, run.document.get("model._component_"))
    run.lora_r = run.stated("model.lora_rank")
    if "qlora_" in component:
        run.quantization = Fact(4, run.document.get("model._component_"))
    run.batch_size = run.stated("batch_size")
    run.grad_accum = run.stated("gradient_accumulation_steps")
    run.seq_len = run.stated("tokenizer.max_seq_len")
    dtype = run.document.get("dtype")
    if dtype is not None:
        run.dtype = Fact(DTYPES.get(str(dtype.value), str(dtype.value)), dtype)
    optimizer = str(run.document.value("optimizer._component_") or "")
    if optimizer:
        name = optimizer.rsplit(".", 1)[-1]
        known = {"AdamW": "adamw_torch", "Adam": "adamw_torch", "AdamW8bit": "adamw_8bit", "PagedAdamW8bit": "paged_adamw_8bit", "SGD": "sgd"}
        in_backward = run.document.value("optimizer_in_bwd") is True  # steps inside the backward: no full gradient set [U6]
        run.optimizer = Fact("optimizer_in_bwd" if in_backward else known.get(name, name), run.document.get("optimizer._component_"))


def _swift(run: RunConfig, path: str) -> None:
    gc = run.stated("gradient_checkpointing", True, "ms-swift default: on [S3]")
    run.checkpointing = Fact(bool(gc.value), gc.entry, gc.note)
    _explicit_reentrant(run)
    tuner = run.document.get("tuner_type") or run.document.get("train_type")
    run.lora = Fact(tuner is None or tuner.value in ("lora", "qlora", "dora"), tuner, "ms-swift default tuner_type: lora [S2]")
    run.lora_r = run.stated("lora_rank", 8, "ms-swift default lora_rank [S5]")
    run.lora_targets = run.stated("target_modules", ["all-linear"], "ms-swift default target_modules [S5]")
    if "target_regex" in run.document:
        run.lora_targets = None  # a regular expression over module names: what it reaches is not read
    elif "all-linear" in _names(run.lora_targets.value):
        run.lora_linear_names_by = "ms-swift's `find_all_linears` [S9]"  # a text model; a multimodal one gets a regex [S9]
        run.lora_named = tuple(n for n in _names(run.lora_targets.value) if n != "all-linear")
    run.lora_target_parameters, run.lora_parameters_key = _given(run, "target_parameters"), "target_parameters"
    bits = run.document.get("quant_bits")
    run.quantization = Fact(bits.value if bits else None, bits)
    run.batch_size = run.stated("per_device_train_batch_size", 1, "ms-swift default [S5]")
    run.grad_accum = run.stated("gradient_accumulation_steps")
    run.seq_len = run.stated("max_length")
    dtype = run.document.get("torch_dtype")
    run.dtype = Fact(DTYPES.get(str(dtype.value), str(dtype.value)), dtype) if dtype else Fact("auto", None, "ms-swift: the model's dtype [S5]")
    run.optimizer = run.stated("optim", "adamw_torch", "transformers default optim")
    run.model = run.stated("model")
    preset = run.document.get("deepspeed")
    if preset is not None and str(preset.value) in _SWIFT_ZERO_PRESETS:  # `--deepspeed zero3`: swift's own JSON [S5]
        run.zero_stage = Fact(_SWIFT_ZERO_PRESETS[str(preset.value)], preset)
    _deepspeed(run, path, "deepspeed")
    fsdp = run.document.get("fsdp")
    if fsdp is not None and fsdp.value:
        run.fsdp = Fact(True, fsdp)
        ac = run.document.get("fsdp_config.activation_checkpointing")
        if ac is not None:
            run.fsdp_checkpointing = Fact(bool(ac.value), ac)


_SWIFT_ZERO_PRESETS = {"zero0": 0, "zero1": 1, "zero2": 2, "zero3": 3, "zero2_offload": 2, "zero3_offload": 3}


def _trl(run: RunConfig, path: str) -> None:
    gc = run.stated("gradient_checkpointing", True, "TRL default: on [C2]")
    run.checkpointing = Fact(bool(gc.value), gc.entry, gc.note)
    if not _explicit_reentrant(run):
        run.reentrant = Fact(False, None, "TRL sets use_reentrant: false [C2]")
    peft = run.document.get("use_peft")
    run.lora = Fact(bool(peft and peft.value), peft)
    run.lora_r = run.stated("lora_r", 16, "TRL default lora_r [C4]")
    run.lora_targets = run.stated("lora_target_modules")  # given to `LoraConfig` as written [C4]
    run.lora_targets_key = "lora_target_modules"
    run.lora_target_parameters, run.lora_parameters_key = _given(run, "lora_target_parameters"), "lora_target_parameters"
    for bits, key in ((4, "load_in_4bit"), (8, "load_in_8bit")):
        if run.document.value(key) is True:
            run.quantization = Fact(bits, run.document.get(key))
    _trainer_fields(run, path, seq_key="max_length", seq_default=1024, seq_note="TRL default max_length [C3]")
    if run.seq_len is not None and run.seq_len.entry is None and "max_seq_length" in run.document:
        run.seq_len = run.stated("max_seq_length")  # the name before trl 0.20 [C3]
    prompt, completion = run.document.get("max_prompt_length"), run.document.get("max_completion_length")
    if prompt is not None and completion is not None and isinstance(prompt.value, int) and isinstance(completion.value, int):
        run.seq_len = Fact(prompt.value + completion.value, completion, "max_prompt_length + max_completion_length")  # GRPO, ...
    if run.dtype is None and run.document.value("fp16") is not True:
        run.dtype = Fact("bf16", None, "TRL default bf16: not fp16 [C3]")
    dtype = run.document.get("dtype") or run.document.get("torch_dtype")
    if dtype is not None and str(dtype.value) in DTYPES:
        run.dtype = Fact(DTYPES[str(dtype.value)], dtype)


# a program's own names of the sequence length and of LoRA, the ones Trainer scripts use most
_SEQUENCE_OPTIONS = ("model_max_length", "max_seq_length", "max_length", "cutoff_len", "max_len", "seq_length")
_LORA_OPTIONS = ("use_lora", "lora_enable", "use_peft", "lora")


def _trainer(run: RunConfig, path: str) -> None:
    """A launch of a program the project does not hold (or a console command) with `TrainingArguments` options,
    read as `HfArgumentParser` reads them; what the program sets itself is not known."""
    gc = run.stated("gradient_checkpointing", note="TrainingArguments default: off [H7]; the program was not read")
    run.checkpointing = Fact(bool(gc.value), gc.entry, gc.note)
    _explicit_reentrant(run)  # else unknown, as RunConfig starts
    seq_key = next((key for key in _SEQUENCE_OPTIONS if key in run.document), _SEQUENCE_OPTIONS[0])
    _trainer_fields(run, path, seq_key=seq_key, seq_default=None, seq_note="")
    lora = next((run.document.get(key) for key in _LORA_OPTIONS if key in run.document), None)
    if lora is not None and lora.value is True:
        run.lora = Fact(True, lora)
        run.lora_r = next((run.stated(key) for key in ("lora_r", "lora_rank") if key in run.document), None)


def _accelerate(run: RunConfig, path: str) -> None:
    kind = run.document.get("distributed_type")
    if kind is not None and kind.value == "DEEPSPEED":
        stage = run.document.get("deepspeed_config.zero_stage")
        named = run.document.get("deepspeed_config.deepspeed_config_file")
        if named is not None:
            _deepspeed(run, path, "deepspeed_config.deepspeed_config_file")
        elif stage is not None:
            run.zero_stage = Fact(stage.value, stage)
        else:
            run.zero_stage = Fact(2, kind, "accelerate's default zero_stage [A2]")
    if kind is not None and kind.value == "FSDP":
        run.fsdp = Fact(True, kind)
        ac = run.document.get("fsdp_config.fsdp_activation_checkpointing")
        run.fsdp_checkpointing = Fact(bool(ac.value) if ac else False, ac)
    processes = run.document.get("num_processes")
    if processes is not None and isinstance(processes.value, int) and processes.value > 0:
        run.gpus = Fact(processes.value, processes)
    precision = run.document.get("mixed_precision")
    if precision is not None and precision.value in ("bf16", "fp16"):
        run.dtype = Fact(precision.value, precision)


def _deepspeed_json(run: RunConfig, path: str) -> None:
    stage = run.document.get("zero_optimization.stage")
    run.zero_stage = Fact(stage.value if stage else 0, stage)
    for name, key in (("batch_size", "train_micro_batch_size_per_gpu"), ("grad_accum", "gradient_accumulation_steps")):
        entry = run.document.get(key)
        if entry is not None and isinstance(entry.value, int):
            setattr(run, name, Fact(entry.value, entry))
    for key, dtype in (("bf16.enabled", "bf16"), ("fp16.enabled", "fp16")):
        if run.document.value(key) is True:
            run.dtype = Fact(dtype, run.document.get(key))


def _names(value: object) -> tuple[str, ...]:
    """Module names as a config gives them: a list, or one string of comma-separated names (LLaMA-Factory)."""
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else []
    return tuple(str(item).strip() for item in items if str(item).strip())


def _given(run: RunConfig, key: str) -> Fact | None:
    """The key when the config sets it to something (not empty, not null)."""
    entry = run.document.get(key)
    return Fact(entry.value, entry) if entry is not None and entry.value not in (None, "", []) else None


def _explicit_reentrant(run: RunConfig) -> bool:
    """`gradient_checkpointing_kwargs: {use_reentrant: ...}` in the file: the run's mode, whatever the default."""
    explicit = run.document.get("gradient_checkpointing_kwargs.use_reentrant")
    if explicit is not None:
        run.reentrant = Fact(explicit.value, explicit)
    return explicit is not None


def _trainer_fields(run: RunConfig, path: str, seq_key: str, seq_default: int, seq_note: str) -> None:
    """The `TrainingArguments` fields LLaMA-Factory, TRL and alignment-handbook configs share."""
    run.batch_size = run.stated("per_device_train_batch_size", 8, "TrainingArguments default")
    run.grad_accum = run.stated("gradient_accumulation_steps", 1, "TrainingArguments default")
    run.seq_len = run.stated(seq_key, seq_default, seq_note)
    for key, dtype in (("bf16", "bf16"), ("fp16", "fp16")):
        if run.document.value(key) is True:
            run.dtype = Fact(dtype, run.document.get(key))
    run.optimizer = run.stated("optim", "adamw_torch", "TrainingArguments default optim")
    run.model = run.stated("model_name_or_path")
    _deepspeed(run, path, "deepspeed")
    fsdp = run.document.get("fsdp")
    if fsdp is not None and fsdp.value:
        run.fsdp = Fact(True, fsdp)


def _deepspeed(run: RunConfig, path: str, key: str) -> None:
    """The DeepSpeed JSON the config names under `key`: its ZeRO stage and batch keys join the run."""
    entry = run.document.get(key)
    if entry is None or not isinstance(entry.value, str) or not entry.value.endswith(".json"):
        return
    run.deepspeed_entry = entry
    run.deepspeed = _named_document(path, entry.value)
    run.read += [run.deepspeed.path] if run.deepspeed else []
    if run.deepspeed is None:
        stage = re.search(r"(?:zero|z|stage)[_-]?([0-3])(?!\d)", entry.value.rsplit("/", 1)[-1].lower())
        if stage:  # a file of the framework's own (axolotl's deepspeed_configs/zero3_bf16.json): its name says the stage
            run.zero_stage = Fact(int(stage.group(1)), entry, f"ZeRO-{stage.group(1)} by the name {entry.value}")
        else:
            run.missing.append(entry.value)
        return
    stage = run.deepspeed.get("zero_optimization.stage")
    if isinstance(stage.value if stage else None, int):
        run.zero_stage = Fact(stage.value, entry, f"zero_optimization.stage in {entry.value}")


READERS = {
    "llamafactory": _llamafactory, "axolotl": _axolotl, "torchtune": _torchtune, "swift": _swift, "trl": _trl,
    "accelerate": _accelerate, "deepspeed": _deepspeed_json, "trainer": _trainer,
}
