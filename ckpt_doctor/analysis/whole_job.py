"""What a training job holds on the GPU besides its training step: an evaluation that keeps every batch's logits
(CKPT209), and a vLLM engine colocated in the training processes (CKPT405). The rules judge them; the estimate shows
them as phases of the job."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckpt_doctor.analysis.conditions import ALWAYS, Condition, together
from ckpt_doctor.analysis.facts import Call, ScriptFacts
from ckpt_doctor.analysis.library import KBIT_PREPARATION, PEFT_MODELS, is_training_config
from ckpt_doctor.analysis.training import Training, on_paths
from ckpt_doctor.analysis.values import MISSING, UNKNOWN, Const, Instance, Missing, Namespace, OptionVal, Value, constant
from ckpt_doctor.analysis.versions import TargetVersions
from ckpt_doctor.findings import Position, Span

if TYPE_CHECKING:
    from ckpt_doctor.analysis.run_config import RunConfig


# -- evaluation that keeps every batch's logits -------------------------------------------------------
EVAL_TRAINERS = ("transformers.Trainer", "transformers.Seq2SeqTrainer", "trl.SFTTrainer")
EVAL_OVERRIDES = {"prediction_step", "evaluation_loop", "evaluate"}
EVAL_BATCH_DEFAULT = 8  # TrainingArguments.per_device_eval_batch_size (transformers 4.x and 5.25.0)
LM_HEADS = ("ForCausalLM", "ForMaskedLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM", "ForPreTraining", "WithLMHead",
            "ForImageTextToText", "ForVision2Seq")


def eval_trainer(facts: ScriptFacts, call: Call) -> str | None:
    """The library trainer `call` builds (its own subclass counts unless it overrides evaluation), else None."""
    qualname = call.qualname or ""
    func = call.node.func
    written = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    own = facts.classes.get(written) if written else None
    if own is not None and own.methods & EVAL_OVERRIDES:
        return None  # the script's subclass (the facts name it by its library base) evaluates its own way
    if qualname in EVAL_TRAINERS:
        return qualname
    if qualname.startswith("<local>."):
        local = qualname.split(".", 1)[1]
        known = facts.classes.get(local)
        base = facts.library_base(local)
        if base in EVAL_TRAINERS and known is not None and not known.methods & EVAL_OVERRIDES:
            return base
    return None


def _language_model(training: Training, value, trainer: str) -> bool | None:
    """Whether the trained model puts out vocabulary-sized logits: a `...ForCausalLM` / `...ForMaskedLM` / ... load
    (through PEFT wrapping), a model id given to TRL's SFTTrainer; None when it cannot be told."""
    if trainer == "trl.SFTTrainer":
        return True
    for _ in range(4):
        if isinstance(value, Const) and isinstance(value.value, str):
            return None
        if not isinstance(value, Instance):
            break
        qualname = value.qualname
        if qualname in PEFT_MODELS or qualname in KBIT_PREPARATION:
            call = value.call
            value = call.args[0] if call.args else call.kwarg("model")
            continue
        owner = qualname.rsplit(".", 2)[-2] if qualname.count(".") >= 2 else qualname
        return any(marker in owner for marker in LM_HEADS) or (owner.startswith("AutoModelFor") and "LM" in owner)
    loads = training.model_loads
    if not loads:
        return None
    heads = [any(marker in (c.qualname or "") for marker in LM_HEADS) or "AutoModelForCausalLM" in (c.qualname or "") for c in loads]
    return True if all(heads) else None


def training_field(args, name: str):
    """A `TrainingArguments` field as the Trainer will see it: the call's keyword, the command line's option, or
    MISSING (the class default)."""
    if isinstance(args, Instance) and is_training_config(args.qualname):
        return args.call.kwarg(name)
    if isinstance(args, Namespace):
        return args.get(name)
    if isinstance(args, Missing):
        return MISSING
    return UNKNOWN


def _off_paths(value, condition: Condition, off_when) -> Condition | None:
    """The part of `condition` on which the setting `value` leaves accumulation on (`off_when(v)` False): MISSING and
    None leave it on; a constant that turns it off ends it; an option leaves it on on the run without the option;
    a value not known statically may turn it off (None)."""
    if isinstance(value, Missing):
        return condition
    if isinstance(value, OptionVal):
        for path, state in on_paths(value, None):
            if state is False and (joined := together(condition, path)) is not None:
                return joined
        return None
    if not isinstance(value, Const):
        return None
    own = on_paths(value, None)[0][0] if value.alternatives else ALWAYS
    candidates = [(own, value)] + [(c, v) for c, v in value.alternatives if isinstance(v, Const)]
    for path, candidate in candidates:
        if candidate.value is None or not off_when(candidate.value):
            if (joined := together(condition, path)) is not None:
                return joined
    return None


def _evaluates(facts: ScriptFacts, call: Call, args, condition: Condition) -> tuple[Condition, str] | None:
    """The path on which the trainer built at `call` evaluates, and what makes it: an `eval_strategy` other than
    "no", or an explicit `trainer.evaluate()`."""
    for name in ("eval_strategy", "evaluation_strategy"):
        value = training_field(args, name)
        if isinstance(value, Missing):
            continue
        if isinstance(value, OptionVal):
            for path, state in on_paths(value, None):
                if state is True and (joined := together(condition, path)) is not None:
                    return joined, f"`{value.option}`"
            continue
        text = str(constant(value, getattr(value, "name", "")) or "").lower()
        if text and not text.endswith("no"):
            return condition, f"`{name}={constant(value, getattr(value, 'name', ''))!r}`"
    trainer_name = call.assigned_to
    for evaluation in facts.method_calls("evaluate"):
        receiver = evaluation.receiver_value
        same = (isinstance(receiver, Instance) and receiver.call is call) or (trainer_name and evaluation.receiver == trainer_name)
        if same:
            joined = together(condition, evaluation.condition)
            if joined is not None:
                return joined, f"`{evaluation.receiver}.evaluate()` at line {evaluation.line}"
    return None


@dataclass
class KeptLogits:
    """A Trainer whose evaluation keeps every batch's logits on the GPU: the call that builds it, the path on which
    it evaluates so, what makes it evaluate, and its training arguments (a value, or the command line's namespace)."""

    call: Call
    condition: Condition
    why: str  # "`eval_strategy='steps'`", "`trainer.evaluate()` at line 80"
    args: Value


def logits_kept_in_evaluation(training: Training) -> list[KeptLogits]:
    """The Trainers given `compute_metrics` that evaluate a language model and keep its logits: no
    `preprocess_logits_for_metrics`, `eval_accumulation_steps`, `batch_eval_metrics`, `prediction_loss_only` or
    `predict_with_generate` on the path (transformers 5.25.0 `Trainer.evaluation_loop`: `all_preds.add(logits)`)."""
    kept = []
    for call in training.facts.calls:
        trainer = eval_trainer(training.facts, call)
        if trainer is None or call.via:
            continue
        if "compute_metrics" not in call.kwargs:
            continue  # not given (or in `**kwargs`, not known)
        metrics = call.kwargs["compute_metrics"]
        if isinstance(metrics, Const) and metrics.value is None and not metrics.alternatives:
            continue
        condition = call.condition
        if isinstance(metrics, Const):  # `compute_metrics=fn if args.metrics else None`
            found = [path for path, state in on_paths(metrics, None) if state is not False]
            condition = next((j for p in found if (j := together(condition, p)) is not None), None)
            if condition is None:
                continue
        preprocess = call.kwarg("preprocess_logits_for_metrics")
        if not isinstance(preprocess, Missing) and not (isinstance(preprocess, Const) and preprocess.value is None and not preprocess.alternatives):
            continue  # given (on some path: `fn if training_args.do_eval else None` goes with the same test on compute_metrics)
        args = call.kwarg("args")
        if isinstance(args, Missing) and len(call.args) > 1:
            args = call.args[1]
        model = call.kwarg("model")
        if isinstance(model, Missing) and call.args:
            model = call.args[0]
        if _language_model(training, model, trainer) is not True:
            continue
        for name, off_when in (("eval_accumulation_steps", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
                               ("batch_eval_metrics", bool), ("prediction_loss_only", bool), ("predict_with_generate", bool)):
            if condition is None:
                break
            if name == "predict_with_generate" and "Seq2Seq" not in str(getattr(args, "qualname", None) or getattr(args, "config_class", None)):
                continue  # a field of `Seq2SeqTrainingArguments` only
            condition = _off_paths(training_field(args, name), condition, off_when)
        if condition is None:
            continue
        evaluates = _evaluates(training.facts, call, args, condition)
        if evaluates is None:
            continue
        condition, why = evaluates
        kept.append(KeptLogits(call, condition, why, args))
    return kept


# -- vLLM colocated with training (TRL GRPO / RLOO) ---------------------------------------------------
VLLM_CONFIGS = ("trl.GRPOConfig", "trl.RLOOConfig")
VLLM_UTILIZATION_DEFAULT = 0.3  # GRPOConfig / RLOOConfig `vllm_gpu_memory_utilization`, trl 0.18 .. 1.9 [R5]
# keys that put vLLM elsewhere when no `vllm_mode` is given: a device of its own (trl 0.14 .. 0.17), a server [R5]
VLLM_ELSEWHERE = ("vllm_device", "vllm_server_host", "vllm_server_base_url")
TRL_COLOCATE_DEFAULT_SINCE = "1.0"  # `vllm_mode` defaults to "colocate" (before: "server") [R5]


@dataclass
class Colocation:
    """vLLM in the training processes, holding `utilization` of each GPU for the whole run."""

    span: Span
    utilization: float
    said: str  # where the utilization comes from: "line 5", "the GRPOConfig default 0.3"
    mode: str  # why vLLM is colocated: "`vllm_mode=\"colocate\"`", "the default of trl >= 1.0"
    condition: Condition = ALWAYS  # the path on which it is so


def _colocated_by_default(versions: TargetVersions) -> str | None:
    """Why vLLM is colocated when no `vllm_mode` is given: the default of trl >= 1.0, only where the project declares
    such a release (before 1.0 the default is "server": an error never rests on a trl release nobody declared)."""
    if versions.at_least("trl", TRL_COLOCATE_DEFAULT_SINCE) is not True:
        return None
    return f"`vllm_mode` defaults to \"colocate\" from trl {TRL_COLOCATE_DEFAULT_SINCE}"


def script_colocations(training: Training) -> list[Colocation]:
    """Where the script's TRL config colocates vLLM with training on the default run or an option's, with the share of
    each GPU it holds."""
    found = []
    sources = [(c.kwarg, c.keyword_spans.get("vllm_gpu_memory_utilization", c.span), c.condition, c.qualname, c.kwarg_names)
               for c in training.facts.calls if c.qualname in VLLM_CONFIGS and not c.via]
    for namespace, line in training.cli_configs():
        if namespace.config_class in VLLM_CONFIGS:
            sources.append((namespace.get, Span(Position(line, 1), Position(line, 1)), ALWAYS, namespace.config_class, {}))
    for get, span, condition, config, names in sources:
        def on(name: str, default: bool | None):
            """The path on which the flag `name` is on (or off when `default` is what is asked for)."""
            value = get(name)
            if isinstance(value, Missing):
                return condition if default else None
            for path, state in on_paths(value, names.get(name)):
                if state is True and (joined := together(condition, path)) is not None:
                    return joined
            return None

        path = on("use_vllm", False)
        if path is None:
            continue
        if any(isinstance(get(key), Const) and get(key).value is not None for key in VLLM_ELSEWHERE):
            continue  # vLLM on a device or server of its own (`vllm_device`: trl < 0.18)
        mode = get("vllm_mode")
        if isinstance(mode, Missing):
            why = _colocated_by_default(training.versions)
            if why is None:
                continue
        elif isinstance(mode, Const) and mode.value == "colocate":
            why = "`vllm_mode=\"colocate\"`"
        else:
            continue  # a server on other GPUs, or not known
        sleep = get("vllm_enable_sleep_mode")
        if not isinstance(sleep, Missing):
            if isinstance(sleep, OptionVal):
                paths = [p for p, state in on_paths(sleep, None) if state is False]
                path = next((j for p in paths if (j := together(path, p)) is not None), None)
            elif not (isinstance(sleep, Const) and sleep.value is False):
                path = None  # on, or not known: vLLM may release its memory during the step
            if path is None:
                continue
        utilization = get("vllm_gpu_memory_utilization")
        if isinstance(utilization, Missing):
            found.append(Colocation(span, VLLM_UTILIZATION_DEFAULT, f"the {config.rsplit('.', 1)[-1]} default", why, path))
        elif isinstance(utilization, Const) and isinstance(utilization.value, (int, float)) and not isinstance(utilization.value, bool):
            origin = utilization.origin.describe() if utilization.origin else "the script"
            found.append(Colocation(span, float(utilization.value), origin, why, path))
    return found


def config_colocations(run: RunConfig, versions: TargetVersions) -> list[Colocation]:
    """The same for a TRL config (`trl grpo --config x.yaml`)."""
    document = run.document
    if run.framework.id != "trl" or document.value("use_vllm") is not True:
        return []
    mode = document.get("vllm_mode")
    if mode is None and any(key in document for key in VLLM_ELSEWHERE):
        return []  # vLLM on a device or server of its own (`vllm_device`: trl < 0.18)
    if mode is None:
        why = _colocated_by_default(versions)
        if why is None:
            return []
    elif mode.value == "colocate":
        why = "`vllm_mode: colocate`" + ("" if run.launched_by else f" (line {mode.line})")
    else:
        return []
    if document.get("vllm_enable_sleep_mode") is not None and document.value("vllm_enable_sleep_mode") is not False:
        return []
    entry = document.get("vllm_gpu_memory_utilization")
    use = document.get("use_vllm")
    at = entry or use
    span = Span(Position(at.line, at.column), Position(at.line, at.column + len(at.key.rsplit(".", 1)[-1])))
    if entry is not None:
        if not isinstance(entry.value, (int, float)) or isinstance(entry.value, bool):
            return []
        return [Colocation(span, float(entry.value), "as the config sets it" if run.launched_by else f"line {entry.line}", why)]
    if run.command not in ("grpo", "rloo"):
        return []  # another trainer's default (online DPO: 0.55) may apply
    return [Colocation(span, VLLM_UTILIZATION_DEFAULT, f"the `trl {run.command}` default", why)]


