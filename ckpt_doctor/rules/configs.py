"""Rules on framework configs (LLaMA-Factory, axolotl, torchtune, ms-swift, TRL, accelerate, DeepSpeed).

CKPT5xx exist only for configs: a key the framework ignores or renamed, keys that contradict each other, a
DeepSpeed batch that disagrees with the trainer's, offloading without the checkpointing it needs. The rules of
the other families that have a meaning in a config run on it too (`config_check`): double checkpointing
(CKPT302), ZeRO-3 + PEFT + non-reentrant (CKPT304), and the memory rules (CKPT4xx, through the settings).
"""

from __future__ import annotations

import difflib
from dataclasses import replace
import re
from typing import Iterator

from ckpt_doctor.analysis.config_document import Entry
from ckpt_doctor.analysis.run_config import RunConfig
from ckpt_doctor.analysis.frameworks import key_set, releases_of
from ckpt_doctor.analysis.versions import FRAMEWORK_PACKAGES, TRACKED, Version
from ckpt_doctor.findings import Applicability, FixSpec, Position, ReplaceText, Severity, Span
from ckpt_doctor.rules import Context, Report, config_check, rule
from ckpt_doctor.rules import memory
from ckpt_doctor.rules.adapters import missed_experts, missed_message
from ckpt_doctor.rules.shared import zero3_recompute_fixed, zero3_recompute_note


def _at(entry: Entry | None) -> Span:
    line, column = (entry.line, entry.column) if entry else (1, 1)
    return Span(Position(line, column), Position(line, column + len(entry.key.rsplit(".", 1)[-1]) if entry else column))


def _run(ctx: Context) -> RunConfig:
    return ctx.analysis.run


def _where(fact) -> str:
    """Where a fact of the config comes from: its key's line, else the framework default it rests on."""
    return f"line {fact.entry.line}" if fact.entry is not None else fact.note or "the framework's default"


@rule(
    "CKPT501",
    "config-key-renamed-or-ignored",
    Severity.WARNING,
    fix=Applicability.SAFE,
    summary="a config key the framework ignores or has renamed",
    inputs=("config",),
)
def key_renamed_or_ignored(ctx: Context) -> Iterator[Report]:
    run = _run(ctx)
    reported: set[str] = set()
    for key, name, value, advice, entry in _renamed_in(run):
        reported.add(name)  # judged here, whether reported or not: not an unknown key either
        if _unset(entry) and advice.get("what_happens") != "error":
            continue  # an empty key sets nothing, under either name
        use = advice["use"]
        plugin = re.match(r"add (\S+) to plugins", use)
        if plugin and plugin.group(1) in (run.document.value("plugins") or ()):
            continue  # axolotl reads the key through the plugin the file lists [X1]
        if run.framework.id == "trl" and run.launched_by != "trl":
            continue  # a YAML of TrainingArguments fields that no `trl` command reads: the script's own dataclasses may
        since = advice.get("since")  # "trl 0.27.0": renamed in that release
        certain = _releases_since(ctx, since) if since else True
        if certain is False or (certain is None and _declares(ctx, since)):
            continue  # the releases the project declares (some or all) still read the old name
        if name.startswith("fsdp_config.fsdp_") and run.framework.id == "accelerate" and run.document.value("fsdp_config.fsdp_version") != 2:
            continue  # FSDP1 reads the fsdp_-prefixed keys; only FSDP2 maps them [A3]
        outcome = {"error": "it stops with an error", "ignored": "it ignores the key", "warning": "it warns and maps it"}.get(
            advice.get("what_happens", ""), advice.get("what_happens", ""))
        fix = None
        if not value and ":" not in use and " " not in use and use not in run.document and "." not in name:
            # the key as written, quotes kept; safe where the old name fails or is mapped anyway (not where it was
            # ignored), and where every release the project may run has the new name
            applicability = Applicability.UNSAFE if advice.get("what_happens") == "ignored" or certain is not True else Applicability.SAFE
            fix = _rename(run, entry, use, applicability)
        who = f"{run.framework.name} {since.split(' ', 1)[1]} and later" if since else run.framework.name
        unpinned = "" if certain else f" (the project does not pin {since.split(' ', 1)[0]}: a new install gets these releases)"
        yield Report(_at(entry), f"{who} does not read `{key}`{unpinned}: {outcome} {advice.get('tag', '')}; use `{use}`", fix=fix)
    yield from _unknown_keys(ctx, run, reported)


def _stops_from(run: RunConfig, release: str) -> bool:
    """Whether the run sets a key its framework rejects with an error from `release` or earlier (ms-swift 3's
    `train_type`, an error from 4.1.0): a config written for the releases before, which the later ones cannot run."""
    for _, _, value, advice, _ in _renamed_in(run):
        since = (advice.get("since") or "").split(" ", 1)[-1]
        if not value and advice.get("what_happens") == "error" and since and Version.parse(since) <= Version.parse(release):
            return True
    return False


def _renamed_in(run: RunConfig) -> Iterator[tuple[str, str, str, dict, Entry]]:
    """The run's keys its framework renamed (`train_type`, or `key: value` for one value of it): (the table's key, the
    key's name, the value it is renamed for or "", the advice, the entry)."""
    for key, advice in run.framework.renamed.items():
        name, _, value = key.partition(": ")
        entry = run.document.get(name)
        if entry is not None and not (value and str(entry.value) != value):
            yield key, name, value, advice, entry


def _unset(entry: Entry) -> bool:
    return entry.value is None


def _releases_since(ctx: Context, since: str) -> bool | None:
    """Whether every release the project allows of the package in `since` ("trl 0.27.0") is that one or later."""
    package, version = since.split(" ", 1)
    return ctx.versions.at_least(package, version) if package in _READ_VERSIONS else None


def _declares(ctx: Context, since: str) -> bool:
    package = since.split(" ", 1)[0]
    return package in _READ_VERSIONS and ctx.versions.get(package).declared


_READ_VERSIONS = frozenset(TRACKED) | frozenset(FRAMEWORK_PACKAGES)
# the package whose releases decide the keys each table lists
_PACKAGE = {"trl": "trl", "swift": "ms-swift", "llamafactory": "llamafactory", "axolotl": "axolotl", "accelerate": "accelerate"}


def _rename(run: RunConfig, entry: Entry, new: str, applicability: Applicability) -> FixSpec | None:
    """A text edit of the key `entry` to `new`, as it is written (`lora_r`, `"lora_r"`, `--lora_r`)."""
    lines = run.document.text.splitlines()
    if not 0 < entry.line <= len(lines):
        return None
    line, old = lines[entry.line - 1], entry.key
    start = entry.column - 1
    for written in (old, f'"{old}"', f"'{old}'", f"--{old}"):
        if line.startswith(written, start):
            replacement = written.replace(old, new)
            span = Span(Position(entry.line, entry.column), Position(entry.line, entry.column + len(written)))
            return FixSpec(ReplaceText(replacement), span, applicability, f"Rename `{old}` to `{new}`")
    return None


def _unknown_keys(ctx: Context, run: RunConfig, reported: set[str]) -> Iterator[Report]:
    """Keys no release of the framework the project may run reads (checked against the keys its sources declare)."""
    found = _key_set(ctx, run)
    if found is None:
        return
    keys, note = found
    document = run.document
    plugins = [str(p) for p in (document.value("plugins") or []) if isinstance(p, str)]
    nested = ("fsdp_config",) if run.framework.id == "axolotl" else ()
    for key, entry in document.entries.items():
        top = key.split(".", 1)[0]
        if _unset(entry) and (key in keys.deprecated or keys.unknown != "error"):
            continue  # an empty key (`fsdp:`, `debug: null`) sets nothing; only a parser that refuses unknown keys minds it
        if key in keys.deprecated and key not in reported:
            said = keys.deprecated[key]
            yield Report(_at(entry), f"{run.framework.name} {note} deprecates `{key}`: \"{said['message'].strip()}\" ({said['source']})")
            continue
        if key in reported or ("." in key and top not in nested) or keys.reads(key, plugins):
            continue
        if key.startswith("fsdp_config.fsdp_") and keys.reads("fsdp_config." + key.split(".", 1)[1][5:], plugins):
            continue  # axolotl strips the old prefix, with a deprecation warning [X6]
        if run.framework.id == "swift" and sum(k.startswith(key) for k in keys.keys) == 1:
            continue  # argparse takes a unique prefix of an option (`lora_r` is `lora_rank`) [S1]
        if run.framework.id == "llamafactory" and key in ("ALLOW_EXTRA_ARGS",):
            continue
        close = difflib.get_close_matches(key, sorted(keys.keys), n=1, cutoff=0.75)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        outcome = "it stops with an error" if keys.unknown == "error" else "it ignores the key"
        yield Report(_at(entry), f"{run.framework.name} {note} has no key `{key}`: {outcome}{hint}")


def _key_set(ctx: Context, run: RunConfig):
    """(the keys of the releases the project may run, how to say which) for the framework whose keys are listed."""
    framework_id = run.framework.id
    if framework_id == "trl":
        if run.launched_by != "trl" or run.command not in ("sft", "dpo", "grpo"):
            return None  # the script that reads the YAML may have dataclasses of its own
        table = f"trl_{run.command}"
    elif framework_id == "swift":
        table = "swift_rlhf" if run.command == "rlhf" or "rlhf_type" in run.document else "swift"
    elif framework_id in ("llamafactory", "axolotl", "accelerate"):
        table = framework_id
    else:
        return None
    target = ctx.versions.get(_PACKAGE[framework_id])
    if target.declared:
        releases = sorted(releases_of(table), key=lambda r: Version.parse(r.lstrip("v")))
        allowed = [r for r in releases if (target.low is None or Version.parse(r.lstrip("v")) >= target.low)
                   and (target.high is None or Version.parse(r.lstrip("v")) <= target.high)]
        joined = ", "
        if allowed:
            found = key_set(table, allowed)
        else:  # a pin between the releases read may read the keys of either neighbour
            below = [r for r in releases if target.high is not None and Version.parse(r.lstrip("v")) <= target.high][-1:]
            above = [r for r in releases if target.low is not None and Version.parse(r.lstrip("v")) >= target.low][:1]
            found, joined = key_set(table, below + above or None, any_of=True), " or "
        return (found, f"({joined.join(found.releases)}, as {target.describe(_PACKAGE[framework_id])} allows)") if found else None
    found = key_set(table)
    return (found, f"{found.releases[0]} (the newest; the project does not pin it)") if found else None


@rule(
    "CKPT502",
    "config-keys-contradict",
    Severity.WARNING,
    summary="config keys that contradict each other",
    inputs=("config",),
)
def keys_contradict(ctx: Context) -> Iterator[Report]:
    run = _run(ctx)
    document = run.document
    if run.framework.id == "llamafactory":
        gc = document.get("gradient_checkpointing")
        if gc is not None and gc.value is True:
            if document.value("disable_gradient_checkpointing") is True:
                yield Report(_at(gc), "`gradient_checkpointing: true` with `disable_gradient_checkpointing: true`: the Trainer turns "
                             "checkpointing on anyway [L8]; LLaMA-Factory's switch is `disable_gradient_checkpointing` alone")
            elif document.value("use_reentrant_gc") is False and "gradient_checkpointing_kwargs" not in document:
                yield Report(_at(gc), "`gradient_checkpointing: true` makes the Trainer enable checkpointing again without kwargs, which "
                             "LLaMA-Factory's patched method makes reentrant, undoing `use_reentrant_gc: false` [L8]; drop "
                             "`gradient_checkpointing` (checkpointing is on by default [L3])")
    if run.framework.id == "torchtune":
        mode = document.get("ac_mode")
        if mode is not None and document.value("enable_activation_checkpointing") is True:
            yield Report(_at(mode), "`ac_mode` with `enable_activation_checkpointing: true`: the recipe then applies neither, and no "
                         "layer is checkpointed [U4]; keep one of them")
    if run.framework.id == "swift" and run.checkpointing.entry and run.checkpointing.value and run.fsdp_checkpointing.value:
        yield Report(_at(run.checkpointing.entry), "`gradient_checkpointing` with `fsdp_config.activation_checkpointing`: ms-swift "
                     "turns its own checkpointing off and keeps FSDP's [S4]; set `gradient_checkpointing: false`")
    for key, lines in document.duplicates:
        yield Report(_at(document.get(key)), f"`{key}` is written {len(lines)} times (lines {', '.join(map(str, lines))}): "
                     f"{run.framework.name} reads YAML with PyYAML, where the last one wins; keep one")
    for a, b in (("load_in_4bit", "load_in_8bit"), ("bf16.enabled", "fp16.enabled"), ("bf16", "fp16")):
        if document.value(a) is True and document.value(b) is True:
            yield Report(_at(document.get(b)), f"`{a}` and `{b}` are both on: {run.framework.name} refuses the pair; keep one")


@rule(
    "CKPT503",
    "deepspeed-batch-mismatch",
    Severity.ERROR,
    summary="a DeepSpeed micro-batch or accumulation that disagrees with the trainer's",
    inputs=("config",),
)
def deepspeed_batch_mismatch(ctx: Context) -> Iterator[Report]:
    run = _run(ctx)
    deepspeed = run.deepspeed
    if deepspeed is None or run.framework.id not in ("llamafactory", "trl", "swift", "axolotl"):
        return
    pairs = (("train_micro_batch_size_per_gpu", run.batch_size), ("gradient_accumulation_steps", run.grad_accum))
    for key, fact in pairs:
        entry = deepspeed.get(key)
        if entry is None or entry.value == "auto" or fact is None or not isinstance(entry.value, int) or entry.value == fact.value:
            continue
        said = f"line {fact.line}" if fact.line else fact.note
        yield Report(_at(run.deepspeed_entry), f"{run.deepspeed_entry.value} sets `{key}: {entry.value}` (line {entry.line}) but the trainer's is "
                     f"{fact.value} ({said}): transformers raises \"Please correct the following DeepSpeed config values that "
                     f"mismatch TrainingArguments values\" when training starts [D9]; set it to \"auto\"")


@rule(
    "CKPT504",
    "offloading-without-checkpointing",
    Severity.ERROR,
    summary="activation offloading without the checkpointing it needs",
    inputs=("config",),
)
def offloading_without_checkpointing(ctx: Context) -> Iterator[Report]:
    run = _run(ctx)
    document = run.document
    if run.framework.id == "axolotl":
        offload = document.get("activation_offloading")
        if offload is not None and offload.value and not run.checkpointing.value:
            yield Report(_at(offload), "`activation_offloading` without `gradient_checkpointing`: axolotl refuses the config "
                         "(\"activation_offloading requires gradient_checkpointing\") [X4]; add `gradient_checkpointing: true`")
    if run.framework.id == "torchtune":
        offload = document.get("enable_activation_offloading")
        if offload is not None and offload.value is True and not run.checkpointing.value:
            yield Report(_at(offload), "`enable_activation_offloading: true` without `enable_activation_checkpointing: true`: the "
                         "recipe raises RuntimeError [U3]; turn checkpointing on too")


# ms-swift derives `vit_gradient_checkpointing` from `freeze_vit` from 4.1.1 to 4.5.2, the newest release [S7]
SWIFT_VIT_DEFAULT_RELEASES = "4.1.1 .. 4.5.2"
# a multimodal model, as its id or ms-swift's `model_type` names it (ms-swift itself asks its model registry)
_VLM_NAME = re.compile(r"(?i)((?<![a-z])vl(?![a-z])|llava|internvl|minicpm-?[vo]|ovis|omni|vision|cogvlm|paligemma|idefics|"
                       r"pixtral|mllama|glm-?4\.?\d*v|gemma-?3-(?:4|12|27)b)")
_VIT_KEYS = ("freeze_vit", "freeze_aligner", "vit_lr", "aligner_lr")


@rule(
    "CKPT505",
    "swift-vit-checkpointing-off",
    Severity.WARNING,
    summary="ms-swift turns checkpointing off for a frozen vision tower whose activations are still kept",
    inputs=("config",),
)
def swift_vit_checkpointing_off(ctx: Context) -> Iterator[Report]:
    run = _run(ctx)
    document = run.document
    if run.framework.id != "swift" or run.launched_by == "megatron" or "vit_gradient_checkpointing" in document:
        return
    if not run.checkpointing.value:
        return  # the parent's input-gradient hooks are installed only with checkpointing on [S7]
    freeze = document.get("freeze_vit")
    if freeze is not None and str(freeze.value).lower() not in ("true", "1"):
        return  # a trained tower: vit_gradient_checkpointing = not freeze_vit = True
    names = " ".join(str(document.value(k) or "") for k in ("model", "model_type"))
    if not (_VLM_NAME.search(names) or any(k in document for k in _VIT_KEYS)):
        return  # not a multimodal model as far as the config tells
    if ctx.versions.at_least("transformers", "5.0") is False:
        return  # transformers 4 hooks the text embeddings only (not read here: not judged)
    if _stops_from(run, "4.1.1"):
        return  # written for an older ms-swift: the affected releases stop on one of its keys (CKPT501)
    swift = ctx.versions.get("ms-swift")
    if swift.declared and (ctx.versions.at_least("ms-swift", "4.1.1") is False
                           or (swift.low is not None and swift.low > Version.parse("4.5.2"))):
        return  # the project pins a release that does not derive it this way [S7]
    where = freeze or document.get("model") or document.get("gradient_checkpointing")
    said = "`freeze_vit: true`" if freeze is not None else "`freeze_vit` (default true)"
    yield Report(_at(where), f"ms-swift {SWIFT_VIT_DEFAULT_RELEASES} derives `vit_gradient_checkpointing` from {said} as false "
                 "and turns the vision tower's checkpointing off; but with `gradient_checkpointing` on, the model's "
                 "`enable_input_require_grads()` hooks the tower's patch embedding too (transformers 5), so the frozen tower "
                 "still keeps every activation for backward: ms-swift's fix measured 68 GiB against 98 GiB (modelscope/ms-swift#9945, "
                 "after 4.5.2) [S7]; add `vit_gradient_checkpointing: true` (`--vit_gradient_checkpointing true`)")


@config_check("CKPT302")
def double_checkpointing(ctx: Context) -> Iterator[Report]:
    run = _run(ctx)
    if run.checkpointing.value and run.fsdp_checkpointing.value and run.framework.id == "axolotl":
        yield Report(_at(run.checkpointing.entry or run.fsdp_checkpointing.entry),
                     "`gradient_checkpointing` with FSDP's `activation_checkpointing`: every layer is checkpointed twice, once by the "
                     "model and once by FSDP's wrapper; keep FSDP's and set `gradient_checkpointing: false`")


# axolotl's schema allows only default | reduce-overhead | max-autotune (v0.18.0 `utils/schemas/config.py`)
_NO_CUDAGRAPHS_MODE = {"axolotl": "`torch_compile_mode: default`",
                       None: "`torch_compile_mode: max-autotune-no-cudagraphs` (or `default`)"}


@config_check("CKPT107")
def compile_cudagraphs_with_checkpointing(ctx: Context) -> Iterator[Report]:
    run = _run(ctx)
    mode = run.compile_mode.value if run.compile_mode is not None else None
    if run.checkpointing.value and mode in ("reduce-overhead", "max-autotune"):
        yield Report(_at(run.compile_mode.entry), f"`torch_compile_mode: {mode}` records CUDA graphs (CUDA graph trees), and "
                     f"checkpointing is on ({_where(run.checkpointing)}): where a compiled region runs inside a checkpointed "
                     "one the recomputation changes which tensors are alive, and torch fails with \"accessing tensor output "
                     f"of CUDAGraphs that has been overwritten by a subsequent run\"; use {_NO_CUDAGRAPHS_MODE.get(run.framework.id, _NO_CUDAGRAPHS_MODE[None])}")


@config_check("CKPT304")
def zero3_peft_non_reentrant(ctx: Context) -> Iterator[Report]:
    run = _run(ctx)
    if run.checkpointing.value and run.lora.value and run.zero_stage.value == 3 and run.reentrant.value is False \
            and run.framework.id in ("llamafactory", "axolotl") and not zero3_recompute_fixed(ctx):
        where = run.reentrant.entry or run.checkpointing.entry
        yield Report(_at(where), f"non-reentrant checkpointing ({run.reentrant.note or 'set here'}) with LoRA under DeepSpeed ZeRO-3 "
                     f"({run.zero_stage.note or 'line ' + str(run.zero_stage.line)}): the recomputation sees ZeRO-3's partitioned "
                     "(empty) frozen parameters and fails with \"CheckpointError ... shape [0]\"; use reentrant checkpointing here, "
                     + zero3_recompute_note(ctx))


@config_check("CKPT601")
def lora_misses_moe_experts(ctx: Context) -> Iterator[Report]:
    run = _run(ctx)
    if not run.lora.value or run.lora_targets is None or run.lora_target_parameters is not None or run.launched_by == "megatron":
        return  # no LoRA, targets not known (a regex), the parameters targeted explicitly, or Megatron's own modules
    if run.framework.id == "trl" and run.launched_by != "trl":
        return  # a YAML of `TrainingArguments` fields that no `trl` command reads: the script builds its own LoraConfig
    value = run.lora_targets.value
    names = [str(n).strip() for n in (value if isinstance(value, list) else str(value).split(","))] + list(run.lora_named)
    missed = missed_experts(ctx, names, run.lora_linear_names_by)
    if missed is None:
        return
    entry = run.lora_targets.entry or run.model.entry  # a default target list: the model it meets
    if missed.expanded_by is not None:
        said = "true" if run.framework.id == "axolotl" else "all" if run.framework.id == "llamafactory" else "all-linear"
        key = run.lora_targets.entry.key if run.lora_targets.entry else run.lora_targets_key
        missed = replace(missed, asked=f"`{key}: {said}`" + ("" if run.lora_targets.entry else f" ({run.lora_targets.note})"))
    yield Report(_at(entry), f"{run.framework.name}: " + missed_message(ctx, run.model.value, missed, run.lora_parameters_key,
                                                                        run.lora_targets_key, run.framework.name))


def _when_sharding_known(check):
    """A memory rule on a config, where the config says how the step is spread over GPUs (else the verdict would rest
    on one GPU the run may not use)."""
    def on_config(ctx: Context) -> Iterator[Report]:
        return check(ctx) if _run(ctx).sharding_known else iter(())

    return on_config


# through the settings: a config describes a run as a script does
for code, check in (("CKPT401", memory.oom_without_checkpointing), ("CKPT402", memory.oom_even_with_checkpointing),
                    ("CKPT403", memory.checkpointing_not_needed)):
    config_check(code)(_when_sharding_known(check))
config_check("CKPT404")(memory.memory_not_estimated)
config_check("CKPT405")(_when_sharding_known(memory.vllm_colocate_leaves_no_room))
config_check("CKPT406")(_when_sharding_known(memory.large_vocabulary_logits))
