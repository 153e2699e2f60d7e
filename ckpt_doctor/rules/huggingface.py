"""CKPT2xx: Hugging Face checkpointing (transformers, PEFT, TRL)."""

from __future__ import annotations

from typing import Iterator

from ckpt_doctor.analysis.facts import AttrAssign, own_name
from ckpt_doctor.findings import Applicability, FixSpec, Related, RenameAttribute, RenameKeywords, RenameMethod, SetDictKey, Severity
from ckpt_doctor.analysis.conditions import Condition, on_path, together
from ckpt_doctor.rules import Context, Report, rule
from ckpt_doctor.rules.shared import insert_after, insert_before, peft_call_on_path, set_keyword, zero3_with_peft
from ckpt_doctor.analysis.library import ACTIVATION_CHECKPOINTING_SINCE, MLLAMA_VISION_UNCHECKPOINTED_SINCE, TRANSFORMERS_NON_REENTRANT_DEFAULT, PEFT_KBIT_KWARGS_SINCE, TRANSFORMERS_KWARGS_SINCE, is_training_config
from ckpt_doctor.analysis.training import HFSite
from ckpt_doctor.analysis.whole_job import logits_kept_in_evaluation
from ckpt_doctor.analysis.values import MISSING, Const, DictVal, Instance, Missing, Namespace, truth

SAVE_METHODS = ("save_pretrained", "push_to_hub", "save_model")
STEP_METHODS = ("backward", "step", "train")


def _kwargs_fix(site: HFSite, applicability: Applicability) -> FixSpec | None:
    """Make the checkpointing kwargs of `site` say `use_reentrant: False`."""
    if site.kind == "private method" or not site.resolved:
        return None  # it takes a function, not kwargs (the fix needs imports); or not known to be the library's method
    if isinstance(site.kwargs, DictVal) and site.kwargs.span is not None:
        return FixSpec(SetDictKey("use_reentrant", "False"), site.kwargs.span, applicability,
                       'Add `"use_reentrant": False` to the checkpointing kwargs')
    if site.call is not None and (isinstance(site.kwargs, Missing) or (isinstance(site.kwargs, Const) and site.kwargs.value is None)):
        return set_keyword(site.call, site.kwargs_name or "gradient_checkpointing_kwargs", '{"use_reentrant": False}', applicability,
                           f'Pass `{site.kwargs_name}={{"use_reentrant": False}}`', replace=True)
    return None


def _kwargs_supported(ctx: Context, site: HFSite) -> bool | None:
    """transformers takes checkpointing kwargs from 4.35, peft's k-bit preparation from 0.6 [H1, P2]; None when the
    project's lowest release is not known, so a fix that adds them might break an older install."""
    transformers = ctx.versions.at_least("transformers", TRANSFORMERS_KWARGS_SINCE)
    if site.kind == "kbit preparation":  # the int8 alias passes **kwargs on; before 4.35 peft passes none [P2]
        peft = ctx.versions.at_least("peft", PEFT_KBIT_KWARGS_SINCE)
        return False if False in (peft, transformers) else peft and transformers
    return transformers


def _enabled_again_later(ctx: Context, site: HFSite) -> bool:
    """Whether checkpointing is turned on again after `site`, on the same path, by something that passes its own
    kwargs: `prepare_model_for_kbit_training` right after `model.gradient_checkpointing_enable()` (or the other way
    round: qlora's `gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})`), or the Trainer,
    which enables it from its arguments when training starts [H5]. Kwargs given at `site` then never take effect."""
    if site.call is None or site.kind not in ("model method", "kbit preparation"):
        return False
    for other in ctx.training.hf_sites:
        if other is site or not other.enabled or together(site.condition, other.condition) is None:
            continue
        if {site.kind, other.kind} == {"model method", "kbit preparation"} and other.call is not None \
                and other.call.scope == site.call.scope and other.call.line > site.call.line:
            return True  # one after the other in the same function: the later call's kwargs are the ones in force
        if other is _trainer_again(ctx, site):
            continue  # reported together, at the visible call
        if other.kind in ("training config", "command line") and ctx.training.uses_trainer and other.mode.reentrant is not None \
                and site.condition.implies(other.condition):
            return True  # (kwargs only the command line gives are unknown: the visible call stays the place to report)
    return False


def _trainer_again(ctx: Context, site: HFSite) -> HFSite | None:
    """The reentrant command-line site (`TrainingArguments` parsed from the command line, which the Trainer enables
    again at `train()`) that runs whenever the script's own call `site` does (`if training_args.gradient_checkpointing:
    model.gradient_checkpointing_enable()`): one finding, at the call the script shows, tells of both."""
    if site.kind != "model method" or not any(c.scope == site.call.scope and c.name.endswith("Trainer") for c in ctx.facts.calls):
        return None  # (a helper's call, or a script without the Trainer in sight of it, stays where it is)
    return next((other for other in _reentrant_sites(ctx) if other.kind == "command line"
                 and _missing_use_reentrant(other) and site.condition.implies(other.condition)), None)


def _missing_use_reentrant(site: HFSite) -> bool:
    return not (isinstance(site.kwargs, DictVal) and not isinstance(site.kwargs.get("use_reentrant"), Missing))


def _site_label(site: HFSite) -> str:
    if site.kind in ("model method", "private method") and site.call is not None:
        return f"`{site.call.receiver}.{site.call.name}()`"
    if site.kind == "training config" and site.call is not None:
        flag = site.flag_name or "gradient_checkpointing"
        how = f"`{flag}=True`" if not site.flag_defaulted else f"its default `{flag}=True`"
        return f"`{site.call.name}` with {how}"
    if site.kind == "kbit preparation" and site.call is not None:
        return f"`{site.call.name}`"
    if site.kind == "config attribute":
        return "`config.gradient_checkpointing = True` (the model's `post_init` calls `gradient_checkpointing_enable()` with no kwargs)"
    config = f"`{(site.config_class or 'TrainingArguments').rsplit('.', 1)[-1]}`"
    if site.flag_origin is not None and site.flag_origin.file is not None:
        return f"{config} with {site.flag_origin.describe()}"
    if site.flag_origin is not None and site.flag_origin.kind.startswith("value in "):
        return f"{config} read from {site.flag_origin.kind.removeprefix('value in ')}"  # a settings file the parser reads
    return f"{config} from the command line"


def _reentrant_sites(ctx: Context) -> list[HFSite]:
    return [s for s in ctx.training.hf_sites if s.enabled and s.mode.reentrant is True]


@rule(
    "CKPT201",
    "checkpointing-kwargs-missing-use-reentrant",
    Severity.WARNING,
    fix=Applicability.SAFE,
    summary="Hugging Face checkpointing that falls back to torch's reentrant default",
)
def kwargs_missing_use_reentrant(ctx: Context) -> Iterator[Report]:
    for site in _reentrant_sites(ctx):
        if site.kind == "kbit preparation" and ctx.training.quantized is False:
            continue  # CKPT207: it does not turn checkpointing on at all
        if not _missing_use_reentrant(site):
            continue  # an explicit choice
        if site.call is not None and any(enable is site.call for enable, *_ in ctx.facts.model_checkpoints):
            continue  # the project's own model calls torch's checkpoint itself, whatever kwargs it is given (CKPT101)
        if _enabled_again_later(ctx, site):
            continue  # what decides is the later call (reported there when it is reentrant)
        if site.call is not None and ctx.training.after_training(site.call):
            continue  # a model loaded again after the training, to evaluate or generate: no step runs with it
        if site.kind == "command line" and any(_trainer_again(ctx, visible) is site for visible in _reentrant_sites(ctx)
                                               if _missing_use_reentrant(visible)):
            continue  # reported at the script's own `gradient_checkpointing_enable()` call
        supported = _kwargs_supported(ctx, site)
        if supported is False:
            continue  # nothing to pass them to: the target release takes no checkpointing kwargs
        # reentrant is the workaround under ZeRO-3 + PEFT (CKPT304); a keyword the lowest release may lack could break
        safe = supported and not zero3_with_peft(ctx, site.condition)
        applicability = Applicability.SAFE if safe else Applicability.UNSAFE
        advice = 'pass `{"use_reentrant": False}`'
        if site.kind == "private method":
            problem = "no `gradient_checkpointing_func` is given"
            advice = ("pass `gradient_checkpointing_func=functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)`, "
                      'or call `gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})`')
        elif isinstance(site.kwargs, DictVal):
            problem = f"`{site.kwargs_name}` has no `use_reentrant`"
        elif site.kind == "kbit preparation":
            problem = "it passes `{}` as checkpointing kwargs"
        elif site.kind == "config attribute":
            problem = "the config attribute takes no checkpointing kwargs"
            advice = ('drop it and call `model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": '
                      'False})` once the model is loaded')
        else:
            problem = f"no `{site.kwargs_name}` is given"
        symptom = (
            'torch warns "the use_reentrant parameter should be passed explicitly" on every call'
            if site.mode.torch_warns
            else "the legacy variant: no keyword arguments, no `torch.autograd.grad`, gradients silently None over frozen inputs"
        )
        again = _trainer_again(ctx, site)
        if again is not None:
            advice += (f"; the Trainer enables it again at `train()` from {_site_label(again)}, with the same default, so "
                       "give it the kwargs too (`--gradient_checkpointing_kwargs '{\"use_reentrant\": false}'`, or "
                       "`training_args.gradient_checkpointing_kwargs = {...}` after parsing)")
        fix = _kwargs_fix(site, applicability)
        yield Report(
            site.span,
            f"{_site_label(site)}: {problem}, so reentrant checkpointing runs ({site.mode.reason}; {symptom}); {advice}",
            fix=fix,
            condition=site.condition,
            related=_enabling_trainer(ctx, site),
        )


def _enabling_trainer(ctx: Context, site: HFSite) -> list[Related]:
    """For arguments parsed from the command line: the Trainer of this file that takes them and turns checkpointing on
    at `train()`, the second place the finding is about."""
    if site.kind != "command line":
        return []
    found = on_path(site.condition, ctx.facts.calls, lambda c: c.via is None and ctx.training.is_trainer(c))
    # else a `...Trainer...(...)` of a module the project does not ship readable (`TrainerWithCustomSampler` of a utils.py)
    found = found or on_path(site.condition, ctx.facts.calls, lambda c: c.via is None and c.names_a_trainer and "args" in c.kwargs
                             and own_name(c.qualname) not in ctx.facts.classes)
    return [Related(found[0].span, "the Trainer that enables checkpointing at `train()`")] if found else []


@rule(
    "CKPT202",
    "reentrant-checkpointing-frozen-inputs",
    Severity.ERROR,
    fix=Applicability.SAFE,
    summary="reentrant checkpointing over frozen inputs (PEFT/LoRA) without `enable_input_require_grads()`",
)
def reentrant_frozen_inputs(ctx: Context) -> Iterator[Report]:
    training = ctx.training
    peft_lines = [c.line for c in training.peft_calls]
    for site in _reentrant_sites(ctx):
        if site.kind == "private method":
            continue  # custom (multimodal) models: their layers' inputs may come from a trainable projector
        checkpointed = (site.call.receiver,) if site.kind == "model method" and site.call and site.call.receiver else ()
        found = _frozen_evidence(ctx, site.condition, checkpointed)
        if found is None or _inputs_made_to_require_grad(ctx, site, peft_lines) or _input_grads_on_path(ctx, found[1]):
            continue
        frozen, condition = found
        yield Report(
            site.span,
            f"{_site_label(site)} runs reentrant checkpointing ({site.mode.reason}) over {frozen}, and nothing calls "
            "`enable_input_require_grads()`: torch warns \"None of the inputs have requires_grad=True. Gradients will "
            "be None\" and the adapters silently never train",
            fix=_input_grads_fix(ctx, site),
            condition=condition,
        )
    for call in training.torch_checkpoint_sites:
        if training.torch_mode(call).reentrant is not True or training.hf_sites:
            continue
        found = _frozen_evidence(ctx, call.condition) if on_path(call.condition, training.peft_calls) else None
        if found is None or _input_grads_on_path(ctx, found[1]):
            continue
        yield Report(
            call.span,
            f"reentrant `{call.name}` over {found[0]}: when no input of the checkpointed block requires grad, torch "
            "warns \"None of the inputs have requires_grad=True. Gradients will be None\" and the block's trainable "
            "parameters get no gradient; use `use_reentrant=False`",
            fix=set_keyword(call, "use_reentrant", "False", Applicability.SAFE, "Add `use_reentrant=False`", replace=True),
            condition=found[1],
        )


def _input_grads_on_path(ctx: Context, condition: Condition) -> bool:
    """Whether something may make the inputs require grad on this path: `enable_input_require_grads()`, or peft's
    k-bit preparation, which does it itself for reentrant kwargs [P2]."""
    training = ctx.training
    return bool(on_path(condition, training.input_grad_calls)
                or on_path(condition, training.hf_sites, lambda site: site.kind == "kbit preparation" and bool(site.enabled)))


def _frozen_evidence(ctx: Context, condition: Condition, checkpointed: tuple[str, ...] = ()) -> tuple[str, Condition] | None:
    """What freezes the inputs of checkpointed layers on the path `condition`, and the path with it; freezing all of
    a `checkpointed` model (its receiver) is not such a thing, nor freezing another model (`text_encoder_two` says
    nothing of `text_encoder_one`)."""
    if found := peft_call_on_path(ctx, condition):
        return "a PEFT model's frozen base", found[1]
    trained = {name.split(".", 1)[0] for name in checkpointed} or _trained_model_names(ctx)

    def freezes_inputs(call) -> bool:
        frozen = (call.args and truth(call.args[0]) is False) or truth(call.kwarg("requires_grad")) is False
        receiver = call.receiver or ""
        # the whole checkpointed model frozen has nothing to train, so no gradient is lost; a part after the embeddings
        # (`encoder.layers[-1]`, `final_layer_norm`, the head) leaves the embeddings training, so the layers' inputs
        # still require grad (kohya sd-scripts freezes the last CLIP layer of a text encoder it trains)
        parts = receiver.split(".")
        trunk = len(parts) <= 2 and "[" not in receiver and not parts[-1].endswith(("norm", "head", "layer"))
        return bool(frozen) and receiver not in checkpointed and ("embed" in receiver or (parts[0] in trained and trunk))

    found = on_path(condition, ctx.facts.method_calls("requires_grad_"), freezes_inputs) or on_path(
        condition, ctx.facts.assigns_to("requires_grad"), lambda assign: truth(assign.value) is False)
    return (f"parameters frozen at line {found[0].line}", found[1]) if found else None


def _trained_model_names(ctx: Context) -> set[str]:
    """Names of the model being trained: receivers of the checkpointing calls, `Trainer(model=...)`."""
    names = {s.call.receiver_root() for s in ctx.training.hf_sites if s.kind == "model method" and s.call is not None}
    for call in ctx.facts.calls:
        if call.name.endswith("Trainer") and "model" in call.kwarg_names:
            names.add(call.kwarg_names["model"].split(".", 1)[0])
    return {n for n in names if n}


def _inputs_made_to_require_grad(ctx: Context, site: HFSite, peft_lines: list[int]) -> bool:
    """Whether a library makes the embedding output require grad for this site by itself."""
    training = ctx.training
    if site.kind == "kbit preparation":
        return True  # peft calls enable_input_require_grads() when the kwargs are reentrant
    if training.transformers_5 and site.kind in ("model method", "training config") and not _non_text_model(training):
        return True  # activation_checkpointing_enable() calls enable_input_require_grads() for text models [H2]
    if any((c.qualname or "").startswith("trl.") and c.name.endswith("Trainer") for c in ctx.facts.calls):
        return True  # TRL's trainers make the inputs require grad for reentrant checkpointing [R4]
    if site.kind == "command line":
        return True
    if site.kind == "model method" and any(line > site.call.line for line in peft_lines):
        return True  # get_peft_model() after checkpointing was enabled prepares the inputs itself
    return False


# Model classes whose main input is not `input_ids` (pixel_values, input_features, input_values)
_NON_TEXT_CLASSES = ("ForImageClassification", "ForObjectDetection", "ForSemanticSegmentation", "ForVideoClassification",
                     "ForAudioClassification", "ForSpeechSeq2Seq", "ForCTC", "ViTModel", "CLIPVisionModel", "WhisperModel",
                     "ForDepthEstimation", "ForImageSegmentation", "ForUniversalSegmentation", "ForMaskedImageModeling")


def _non_text_model(training) -> bool:
    return any(any(part in (c.qualname or "") for part in _NON_TEXT_CLASSES) for c in training.model_loads)


def _input_grads_fix(ctx: Context, site: HFSite) -> FixSpec | None:
    if site.kind == "model method" and site.call is not None and site.call.receiver and site.resolved:
        return insert_after(site.call.statement, f"{site.call.receiver}.enable_input_require_grads()", Applicability.SAFE,
                            f"Insert `{site.call.receiver}.enable_input_require_grads()`")
    peft = ctx.training.facts.calls_to("peft.get_peft_model")
    if peft and peft[0].arg_names and peft[0].arg_names[0]:
        name = peft[0].arg_names[0]
        return insert_after(peft[0].statement, f"{name}.enable_input_require_grads()", Applicability.SAFE,
                            f"Insert `{name}.enable_input_require_grads()`")
    return None


@rule(
    "CKPT203",
    "use-cache-with-checkpointing",
    Severity.WARNING,
    fix=Applicability.SAFE,
    summary="custom training loop with checkpointing on and `use_cache` left on",
)
def use_cache_with_checkpointing(ctx: Context) -> Iterator[Report]:
    training = ctx.training
    if not training.custom_loop or training.uses_trainer:
        return
    if any(truth(a.value) is False for a in ctx.facts.assigns_to("use_cache")):
        return
    if any(truth(c.kwarg("use_cache")) is False for c in ctx.facts.calls):
        return
    for site in training.hf_sites:
        if not site.enabled:
            continue
        if site.kind == "config attribute":
            load = _load_with_config(ctx, site)  # `config.gradient_checkpointing = True`, then `from_pretrained(config=config)`
            receiver, model, statement = (load.assigned_to, Instance(load.qualname, load), load.statement) if load else (None, None, None)
        elif site.call is None or site.kind not in ("model method", "kbit preparation") or not (site.resolved or site.call.via):
            continue  # (a call a project function makes for the script is reported at the script's call, without a fix)
        elif site.kind == "model method":
            receiver, model, statement = site.call.receiver, site.call.receiver_value, site.call.statement
        else:
            receiver, model = site.call.arg_names[0] if site.call.arg_names else None, site.call.args[0] if site.call.args else None
            statement = site.call.statement
        if not receiver or not _generates(model):
            continue  # only models with a KV cache (causal / seq2seq LMs) and a name to fix
        if ctx.facts.loop_module is None and not on_path(site.condition, training.backward_calls):
            continue  # the hand-written step never runs with this checkpointing
        yield Report(
            site.span,
            f"checkpointing is on in a hand-written loop{f' ({site.call.via})' if site.call and site.call.via else ''} but "
            f"`{receiver}.config.use_cache` is not turned off: transformers "
            "warns \"`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`\", and "
            "remote-code models that do not switch it off themselves keep a KV cache nobody reads",
            # `accelerator.prepare` may hand back a DDP module or a DeepSpeed engine, whose `.config` is not the model's
            fix=None if model.wrapped_by or not site.resolved else insert_after(
                statement, f"{receiver}.config.use_cache = False", Applicability.SAFE, f"Insert `{receiver}.config.use_cache = False`"),
            condition=site.condition,
        )
        return


def _load_with_config(ctx: Context, site: HFSite):
    """The model load (`model = AutoModelForCausalLM.from_pretrained(..., config=config)`) that takes the config whose
    `gradient_checkpointing` the site `config.gradient_checkpointing = True` sets; None when there is none."""
    assign = next((a for a in ctx.facts.attr_assigns if a.span == site.span and a.via is None), None)
    config = assign.target.rsplit(".", 1)[0] if assign else None
    return next((load for load in ctx.training.model_loads
                 if config and load.kwarg_names.get("config") == config and load.assigned_to and load.via is None), None)


def _generates(model: object) -> bool:
    """Whether `model` was loaded (`AutoModelForCausalLM.from_pretrained(...)`) or built (`LlamaForCausalLM(config)`)
    as a model class with a KV cache (causal or seq2seq LM)."""
    if not isinstance(model, Instance):
        return False
    parts = model.qualname.split(".")
    owner = parts[-1] if parts[-1][:1].isupper() else parts[-2] if len(parts) > 2 else ""
    return owner.endswith(("ForCausalLM", "LMHeadModel", "ForSeq2SeqLM", "ForConditionalGeneration", "ForSpeechSeq2Seq", "ForVision2Seq", "ForImageTextToText"))


@rule(
    "CKPT204",
    "use-cache-not-restored-before-save",
    Severity.INFO,
    fix=Applicability.UNSAFE,
    summary="`config.use_cache = False` never restored before saving",
)
def use_cache_not_restored(ctx: Context) -> Iterator[Report]:
    assigns = ctx.facts.assigns_to("use_cache")
    # (line, the config object, scope): `model.config.use_cache = False`, or `from_pretrained(..., use_cache=False)`
    turned_off = [(a.line, a.target.rsplit(".", 1)[0], a.scope) for a in assigns
                  if truth(a.value) is False and a.target.endswith("config.use_cache")]
    turned_off += [(load.line, f"{load.assigned_to}.config", load.scope) for load in ctx.training.model_loads
                   if truth(load.kwarg("use_cache")) is False and load.assigned_to]
    # `config.update({"use_cache": False})` on the config a load then takes (`from_pretrained(..., config=config)`)
    turned_off += [(update.line, f"{load.assigned_to}.config", load.scope) for update in ctx.facts.method_calls("update")
                   if _turns_cache_off(update) for load in ctx.training.model_loads
                   if load.assigned_to and load.kwarg_names.get("config") == update.receiver]
    if not turned_off or any(truth(a.value) is True for a in assigns):
        return  # never turned off, or turned back on somewhere (the order across functions is not known)
    # A PEFT model saves its adapters only, no config.json; `merged = model.merge_and_unload()` saves it all,
    # when `model` is the one turned off: same name, same function (or one turned off at module level).
    merged = {
        c.assigned_to for c in ctx.facts.method_calls("merge_and_unload")
        if c.assigned_to and any(cfg.split(".", 1)[0] == c.receiver_root() and scope in (c.scope, "<module>")
                                 for _, cfg, scope in turned_off)
    }
    saves = [
        save for save in ctx.facts.method_calls(*SAVE_METHODS)
        if save.receiver != "self"  # a method of the script's own class, not the library's save
        and not any(word in (save.receiver or "").lower() for word in ("tokenizer", "processor", "feature_extractor"))  # no model config
        and not (peft_call_on_path(ctx, save.condition) and save.receiver not in merged)  # `if args.full_finetune:` saves all
    ]
    for save in saves:  # each one writes the config; the fix goes before the last (a save inside the loop would
        line, model_config, _ = max(turned_off)  # turn the cache back on for the rest of training)
        if save.receiver in merged:
            model_config = f"{save.receiver}.config"
        last = save is max(saves, key=lambda s: s.line)
        yield Report(
            save.span,
            f"`{save.receiver}.{save.name}()` saves the config with `use_cache=False` (set at line {line}): "
            "generation with the saved model runs without its KV cache, much slower, until someone notices",
            fix=None if save.via or not last else insert_before(save.statement, f"{model_config}.use_cache = True", Applicability.UNSAFE,
                                                                f"Insert `{model_config}.use_cache = True` before saving"),
            condition=save.condition,
        )


def _turns_cache_off(update) -> bool:
    given = update.args[0] if update.args else None
    return (isinstance(given, DictVal) and truth(given.items.get("use_cache", MISSING)) is False) or truth(update.kwarg("use_cache")) is False


@rule(
    "CKPT205",
    "deprecated-gradient-checkpointing-name",
    Severity.INFO,
    fix=Applicability.SAFE,
    summary="deprecated `gradient_checkpointing*` names where `activation_checkpointing*` exists",
)
def deprecated_name(ctx: Context) -> Iterator[Report]:
    declared = ctx.versions.get("transformers")
    described = declared.describe("transformers")
    if ctx.versions.at_least("transformers", ACTIVATION_CHECKPOINTING_SINCE):
        target = described
    elif declared.declared and (declared.high is None or declared.high.at_least(ACTIVATION_CHECKPOINTING_SINCE)):
        target = f"transformers >= {ACTIVATION_CHECKPOINTING_SINCE}, which {described} allows"
    else:
        return  # the project runs no release with the new names, or does not say which it runs
    # A rename is right only where every release the project runs has the new names (the fix gate in `run_rules`
    # makes it unsafe otherwise), and only where the project itself declares them.
    applicability = Applicability.SAFE if declared.declared else Applicability.UNSAFE
    for call in ctx.facts.method_calls("gradient_checkpointing_enable", "gradient_checkpointing_disable"):
        library = ctx.training.receiver_is_library(call)
        if library is False:
            continue  # the project's own method of that name
        new = call.name.replace("gradient_", "activation_")
        yield Report(
            call.span,
            f"`{call.name}` is a deprecated alias of `{new}` on {target} (FutureWarning, removed in v6)",
            fix=FixSpec(RenameMethod(call.name, new, (("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),)), call.span,
                        applicability, f"Rename to `{new}`") if library and not call.via else None,
            condition=call.condition,
        )
    for call in ctx.facts.calls:
        if not is_training_config(call.qualname):
            continue
        old_names = [k for k in ("gradient_checkpointing", "gradient_checkpointing_kwargs") if k in call.keyword_spans]
        clashes = [k.replace("gradient_", "activation_") for k in old_names if k.replace("gradient_", "activation_") in call.kwargs]
        if old_names and not clashes:
            renames = tuple((k, k.replace("gradient_", "activation_")) for k in old_names)
            yield Report(
                call.keyword_spans[old_names[0]],
                f"`{'`, `'.join(old_names)}` on `{call.name}` is a deprecated alias on {target}: it is copied to "
                "`activation_checkpointing*` once, in `__post_init__`, and will be removed in v6",
                fix=None if call.via else FixSpec(RenameKeywords(renames), call.span, applicability, "Rename to `activation_checkpointing*`"),
                condition=call.condition,
            )


@rule(
    "CKPT206",
    "training-args-checkpointing-set-after-init",
    Severity.ERROR,
    fix=Applicability.UNSAFE,
    summary="`args.gradient_checkpointing = ...` after the training arguments were built",
)
def set_after_init(ctx: Context) -> Iterator[Report]:
    if not ctx.versions.at_least("transformers", ACTIVATION_CHECKPOINTING_SINCE):
        return
    target = ctx.versions.get("transformers").describe("transformers")
    for assign in ctx.facts.attr_assigns:
        if assign.attr not in ("gradient_checkpointing", "gradient_checkpointing_kwargs") or not _is_training_args(assign):
            continue
        new = assign.attr.replace("gradient_", "activation_")
        trl = _config_class(assign).startswith("trl.")
        yield Report(
            assign.span,
            f"`{assign.target} = ...` after the arguments were built does nothing on {target}: "
            f"`{assign.attr}` is a deprecated alias resolved once in `TrainingArguments.__post_init__`, and the Trainer reads "
            f"`{new}`; assign `{new}` instead",
            # TRL trainers also read the old name, which only the constructor keeps in step [H3]
            fix=None if assign.via else FixSpec(RenameAttribute(assign.attr, new), assign.span,
                                                Applicability.DISPLAY_ONLY if trl else Applicability.UNSAFE,
                                                f"Pass `{new}` to the config's constructor" if trl else f"Assign `{new}` instead"),
        )


def _config_class(assign: AttrAssign) -> str:
    base = assign.base_value
    if isinstance(base, Instance):
        return base.qualname
    if isinstance(base, Namespace):
        return base.config_class or ""
    return ""


def _is_training_args(assign: AttrAssign) -> bool:
    return is_training_config(_config_class(assign))


@rule(
    "CKPT207",
    "kbit-preparation-on-unquantized-model",
    Severity.WARNING,
    summary="`prepare_model_for_kbit_training` on a model that is not quantized",
)
def kbit_on_unquantized(ctx: Context) -> Iterator[Report]:
    as_run = ""
    if ctx.training.quantized is not False:
        # quantized only with other options than those the launcher passes (`--bits 16` to `load_in_4bit=args.bits == 4`);
        # a flag the launcher leaves out (`load_in_8bit=args.load_in_8bit`) is how the user asks for it, not a run
        launch = ctx.facts.launch
        if launch is None or not _launched_unquantized(ctx) or ctx.training.quantized_by_default() is not False:
            return
        as_run = f" in the run {launch.where} launches"
    loads = ", ".join(str(c.line) for c in ctx.training.model_loads)
    for call in ctx.training.kbit_calls:
        if as_run and call.runs_by_default is not True:
            continue  # (under the same test as the quantization: `if load_in_8bit or load_in_4bit:`)
        yield Report(
            call.span,
            f"`prepare_model_for_kbit_training` on a model loaded without 4/8-bit quantization{as_run} (line {loads}): it upcasts "
            "every fp16/bf16 weight to fp32, doubling weight memory, and does not turn checkpointing on for an "
            "unquantized model; drop it, or load the model with a `BitsAndBytesConfig`",
        )


def _launched_unquantized(ctx: Context) -> bool:
    """Whether a model load's 4/8-bit switch is a value the launcher passes (its origin is the launch line)."""
    for call in ctx.training.model_loads:
        for name in ("load_in_4bit", "load_in_8bit"):
            value = call.kwarg(name)
            if isinstance(value, Const) and value.origin is not None and value.origin.kind == "launch line":
                return True
    return False


@rule(
    "CKPT208",
    "checkpointing-in-eval-mode",
    Severity.WARNING,
    summary="checkpointing on, but the training step runs with the model in `eval()` mode",
)
def checkpointing_in_eval_mode(ctx: Context) -> Iterator[Report]:
    training = ctx.training
    sites = training.enabled_model_methods
    if training.uses_trainer or not sites or not training.backward_calls:
        return  # (a loop in a module of the project may call `.train()` itself)
    calls = ctx.facts.calls
    trains = [c for c in calls if c.name == "train" and c.receiver and (not c.args or truth(c.args[0]) is not False)]
    if not trains and training.model_loads and any(c.name == "from_pretrained" for c in training.model_loads):
        step = training.backward_calls[0]
        yield Report(
            sites[0].span,
            f"checkpointing is on, but nothing calls `.train()`: `from_pretrained` returns the model in eval mode, so the "
            f"step at line {step.line} runs with `self.training` False, transformers skips checkpointing (no memory "
            "saved) and dropout is off; call `model.train()` before the loop",
        )
        return
    checkpointed = {s.call.receiver_root() for s in sites if s.call}
    for evaluation in ctx.facts.method_calls("eval"):
        if evaluation.args or evaluation.kwargs or evaluation.receiver_root() not in checkpointed:
            continue  # another module's eval mode says nothing of the checkpointed one's
        if not on_path(evaluation.condition, sites):
            continue  # `else: model.eval()` of `if args.gradient_checkpointing:`
        later = sorted((c for c in calls if c.scope == evaluation.scope and c.line > evaluation.line), key=lambda c: c.line)
        for call in later:
            if call in trains:
                break
            if call.name == "backward" or (call.name == "step" and call.receiver and "optim" in call.receiver):
                yield Report(
                    evaluation.span,
                    f"`{evaluation.receiver}.eval()` and the training step at line {call.line} runs in eval mode: "
                    "transformers only checkpoints when `self.training` is True, so checkpointing saves no memory "
                    "(and dropout is off); call `.train()` before the loop",
                )
                return


# -- evaluation that keeps every batch's logits -------------------------------------------------------
@rule(
    "CKPT209",
    "eval-accumulates-logits",
    Severity.WARNING,
    summary="the Trainer keeps every evaluation batch's vocabulary logits on the GPU for `compute_metrics`",
)
def eval_accumulates_logits(ctx: Context) -> Iterator[Report]:
    for kept in logits_kept_in_evaluation(ctx.training):
        yield Report(
            kept.call.span,
            f"`{kept.call.name}` with `compute_metrics` evaluates ({kept.why}) without `preprocess_logits_for_metrics` or "
            "`eval_accumulation_steps`: its evaluation loop keeps every batch's logits (batch x sequence x vocabulary, "
            "in the model's dtype) on the GPU until the last batch, then hands them to `compute_metrics` at once, so a "
            "language model runs out of memory in evaluation after training fitted; pass "
            "`preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1)` (or what the metric needs), or set "
            "`eval_accumulation_steps` to move them to the CPU every few batches",
            condition=kept.condition,
        )


# -- a vision tower the model's own checkpointing never reaches -----------------------------------------
def _own_layer_checkpointing(ctx: Context, condition: Condition) -> bool:
    """Whether the script checkpoints layers itself on this path (`torch.utils.checkpoint`, `checkpoint_wrapper`,
    `apply_activation_checkpointing`): which layers it wraps is not known, so they may be the vision layers."""
    from ckpt_doctor.rules.distributed import external_checkpointing_calls

    return on_path(condition, [*ctx.training.torch_checkpoint_sites, *external_checkpointing_calls(ctx)]) is not None


@rule(
    "CKPT210",
    "mllama-vision-encoder-not-checkpointed",
    Severity.WARNING,
    summary="Llama 3.2 Vision (Mllama) trained with checkpointing on: transformers >= 4.55 never checkpoints its vision encoder",
)
def mllama_vision_not_checkpointed(ctx: Context) -> Iterator[Report]:
    training = ctx.training
    if ctx.versions.at_least("transformers", MLLAMA_VISION_UNCHECKPOINTED_SINCE) is False:
        return  # 4.45 - 4.54 checkpoint the vision encoder layers [H10]
    five = ctx.versions.at_least("transformers", TRANSFORMERS_NON_REENTRANT_DEFAULT)
    for load in training.mllama_loads:
        found = on_path(load.condition, training.hf_sites, lambda site: site.enabled is not False)
        if found is None:
            continue
        site, condition = found
        if _own_layer_checkpointing(ctx, condition):
            continue
        frozen = on_path(condition, training.vision_freezes)
        if frozen is not None and five is False:
            continue  # transformers 4.x: a frozen tower whose input needs no grad records nothing [H2]
        target = ctx.versions.get("transformers").describe("transformers")
        if frozen is not None:
            tower = (f"the vision tower is frozen (line {frozen[0].line}), but on transformers 5 checkpointing makes its "
                     "patch embedding's output require grad (`enable_input_require_grads()` hooks every sub-model's input "
                     "embeddings), so the frozen tower records its activations all the same")
            tower += "" if five else " (the project may run transformers 4, where a frozen tower records none)"
            condition = frozen[1]
        else:
            tower = "the vision tower trains (or the script does not freeze it)"
        yield Report(
            site.span,
            f"`{(load.qualname or '').rsplit('.', 2)[-2]}` (Llama 3.2 "
            f"Vision, line {load.line}) with checkpointing on ({_site_label(site)}): from transformers 4.55 "
            "`MllamaVisionEncoder.forward` calls its layers directly and `MllamaVisionEncoderLayer` is a plain `nn.Module`, "
            "so checkpointing sets the encoder's `gradient_checkpointing` flag and nothing reads it; only the text layers "
            f"are checkpointed. {tower[0].upper()}{tower[1:]}: every vision layer (32 local + 8 global in the 11B/90B "
            "models) keeps its activations for every image tile, as without checkpointing (unslothai/unsloth-zoo#264: "
            f"\"Llama vision is going out of memory where it used to work fine\"). This rests on {target}; checkpoint the "
            "vision layers yourself (wrap each `layer.forward` of `vision_model.transformer.layers` and "
            "`vision_model.global_transformer.layers` in `torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`)",
            condition=condition,
        )
        return
