"""What the script's training does, derived from its facts: where checkpointing is turned on, in which
mode, on which libraries' defaults, and what else the model goes through (PEFT, k-bit, DDP, ...).

This is the layer between raw call records and rules: rules ask "is reentrant checkpointing in
effect, and why?" instead of re-reading keyword arguments. Every library default used here is
cited in docs/version-facts.md and on the rule pages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property

from ckpt_doctor.analysis.conditions import ALWAYS, Condition, Literal, together, within
from ckpt_doctor.analysis.config_files import NoFiles, ProjectFiles
from ckpt_doctor.analysis.ds_config import DeepSpeedConfig, read_deepspeed_configs
from ckpt_doctor.analysis.facts import LOADERS, PARAMETERS, AttrAssign, Call, ScriptFacts, own_name
from ckpt_doctor.analysis.library import (
    ACTIVATION_CHECKPOINTING_SINCE,
    HF_ENABLE_METHODS,
    HF_PACKAGES,
    HF_TRAINING_ARGS,
    KBIT_PREPARATION,
    MLLAMA_MODEL_ID,
    MLLAMA_TEXT_ONLY,
    PARTIAL,
    PEFT_MODELS,
    TORCH_CHECKPOINTS,
    TRAINER_OWN_KEYS,
    TRANSFORMERS_EXPLICIT_REENTRANT_SINCE,
    TRANSFORMERS_NON_REENTRANT_DEFAULT,
    TRANSFORMERS_RESIZE_KEEPS_REQUIRES_GRAD_SINCE,
    TRANSFORMERS_TRAINER_EMPTY_IS_NONE_SINCE,
    TRANSFORMERS_TRAINER_PASSES_NONE_SINCE,
    TRL_CHECKPOINTING_DEFAULT_ON,
    TRL_NON_REENTRANT_SINCE,
    is_training_config,
)
from ckpt_doctor.analysis.launchers import launched_value, normalise, with_launched
from ckpt_doctor.analysis.values import MISSING, UNKNOWN, Const, DictVal, Instance, Missing, Namespace, OptionVal, Origin, QualName, Value, constant, truth
from ckpt_doctor.analysis.versions import TargetVersions
from ckpt_doctor.findings import Position, Span


def _project_config(qualname: str | None) -> str | None:
    """``trl.SFTConfig`` for a ``SFTConfig`` imported from the project's own package (``from alignment import
    SFTConfig``): such recipes subclass the TRL config of the same name to add fields.  Only for configs that
    `HfArgumentParser` builds from the command line, where the class name is all there is to go on."""
    if not qualname or "." not in qualname or qualname.startswith(("<local>.", "transformers.", "trl.")):
        return qualname
    name = qualname.rsplit(".", 1)[1]
    if f"transformers.{name}" in HF_TRAINING_ARGS:
        return f"transformers.{name}"
    trl = f"trl.{name}"
    return trl if name.endswith("Config") and is_training_config(trl) else qualname


@dataclass
class Mode:
    """Whether checkpointing at a site is reentrant, and the sentence that explains why."""

    reentrant: bool | None
    reason: str
    torch_warns: bool = False  # torch's "use_reentrant parameter should be passed explicitly" warning


@dataclass
class HFSite:
    """A place that turns Hugging Face checkpointing on (or may)."""

    kind: str  # "model method" | "private method" | "training config" | "kbit preparation" | "command line"
    call: Call | None
    span: Span
    enabled: bool | None  # True on, False off, None: depends on the command line / unknown
    kwargs_name: str | None  # keyword carrying the checkpointing kwargs, if any
    kwargs: Value
    mode: Mode
    config_class: str | None = None
    flag_name: str | None = None  # the keyword that switched it on ("gradient_checkpointing", ...)
    flag_defaulted: bool = False  # on because the library's default is on (TRL)
    condition: Condition = ALWAYS  # the path on which it is on: its branches, and the option that switches it
    resolved: bool = True  # the call is known to be the library's and lies in this file (a fix may rewrite it)
    flag_origin: Origin | None = None  # where the flag's value is written, when not in the call (a launcher's line)
    parsed: dict[str, Value] | None = None  # a command-line site: the fields the parser gives (launcher values merged)

    def argument(self, name: str) -> Value:
        """The value the site's config gets for the field `name`: its keyword, or its parsed field."""
        if self.call is not None:
            return self.call.kwarg(name)
        return (self.parsed or {}).get(name, MISSING)


def _is_model_config(value: Value) -> bool:
    """A transformers model config (`AutoConfig.from_pretrained(...)`, `LlamaConfig(...)`), not a training config."""
    return isinstance(value, Instance) and value.qualname.startswith("transformers.") and "Config" in value.qualname \
        and not is_training_config(value.qualname.rsplit(".from_pretrained", 1)[0])


def on_paths(value: Value, text: str | None, default: bool | None = None) -> list[tuple[Condition, bool | None]]:
    """Where a flag is on: `(condition, state)` pairs. A constant is on or off everywhere; an option is on with
    the option and off without it (`--gradient_checkpointing`); a value that depends on a test is on where the
    test sends it; a value nobody can know (`cfg.gc`) is on when that expression is true."""
    if isinstance(value, Missing):
        return [(ALWAYS, default)]
    if isinstance(value, OptionVal):
        return _option_paths(value.option, None if value.default is None else bool(value.default))
    if isinstance(value, Const):
        option = value.origin.option if value.origin else None
        if option is not None and (isinstance(value.value, bool) or value.value is None) and not value.alternatives:
            return _option_paths(option, None if value.value is None else bool(value.value))
        paths = [(condition, truth(other)) for condition, other in value.alternatives]
        own = ALWAYS
        if len(value.alternatives) == 1 and len(value.alternatives[0][0].literals) == 1:
            (only,) = value.alternatives[0][0].literals
            own = Condition(frozenset({only.negated()}))
        return [(own, truth(value)), *paths]
    if text:
        key = Literal(f"value {text}", True, text, None, None, named=True)
        return [(Condition(frozenset({key})), True)]
    return [(ALWAYS, None)]


def _option_paths(option: str, default: bool | None) -> list[tuple[Condition, bool | None]]:
    on = Literal(f"option {option}", True, option, option, default)
    return [(Condition(frozenset({on})), True), (Condition(frozenset({on.negated()})), False)]


def _first_on(paths: list[tuple[Condition, bool | None]]) -> tuple[Condition, bool | None]:
    """The path where the flag is on, else where it is unknown, else off."""
    for wanted in (True, None):
        for condition, state in paths:
            if state is wanted:
                return condition, state
    return ALWAYS, False


class Training:
    def __init__(self, facts: ScriptFacts, versions: TargetVersions, files: ProjectFiles | None = None) -> None:
        self.facts = facts
        self.versions = versions
        self.files = files or NoFiles()

    # -- versions -----------------------------------------------------------------------------
    @property
    def transformers_5(self) -> bool | None:
        """Whether the project runs transformers 5 or later; None when its release is not known."""
        return self.versions.at_least("transformers", TRANSFORMERS_NON_REENTRANT_DEFAULT)

    def hf_default_mode(self) -> Mode:
        """The mode of `gradient_checkpointing_enable()` with no kwargs [H1]. When the release is not known, the
        reentrant default of transformers 4 is the one a finding must warn of, saying that 5.0 changed it."""
        target = self.versions.get("transformers").describe("transformers")
        five = self.transformers_5
        if five:
            return Mode(False, f"{target} defaults to use_reentrant=False")
        if five is None and self.versions.get("transformers").declared:
            return Mode(True, f"{target} allows 4.x releases, which default to use_reentrant=True (5.0 made it False)")
        if five is None:
            return Mode(True, "transformers 4.x defaults to use_reentrant=True (5.0 made it False), and the project does not "
                              "declare which release it runs")
        if self.versions.at_least("transformers", TRANSFORMERS_EXPLICIT_REENTRANT_SINCE) is not False:
            return Mode(True, f"{target} defaults to use_reentrant=True")
        return Mode(True, f"{target} passes no use_reentrant, so torch's reentrant default applies", torch_warns=True)

    def mode_of_kwargs(self, kwargs: Value) -> Mode:
        if isinstance(kwargs, Missing) or (isinstance(kwargs, Const) and kwargs.value is None):
            return self.hf_default_mode()
        if isinstance(kwargs, DictVal):
            value = kwargs.get("use_reentrant")
            if isinstance(value, Const):
                return Mode(bool(value.value), f"use_reentrant={value.value!r}")
            if isinstance(value, Missing):
                return Mode(True, "the checkpointing kwargs lack use_reentrant, so torch's reentrant default applies", torch_warns=True)
        return Mode(None, "the checkpointing kwargs are not known statically")

    def trainer_mode(self, kwargs: Value, trl: bool) -> Mode:
        """The mode the Trainer (or a TRL trainer) ends up with for these config kwargs [H5, R2]."""
        at_least = self.versions.at_least
        if trl and at_least("trl", TRL_NON_REENTRANT_SINCE) and not self.transformers_5:
            if isinstance(kwargs, Missing) or (isinstance(kwargs, Const) and kwargs.value is None) or (
                isinstance(kwargs, DictVal) and isinstance(kwargs.get("use_reentrant"), Missing)
            ):
                return Mode(False, f"{self.versions.get('trl').describe('trl')} sets use_reentrant=False when the kwargs omit it")
        missing = isinstance(kwargs, Missing) or (isinstance(kwargs, Const) and kwargs.value is None)
        if missing and at_least("transformers", TRANSFORMERS_TRAINER_PASSES_NONE_SINCE) is False:
            target = self.versions.get("transformers").describe("transformers")
            return Mode(True, f"the {target} Trainer passes {{}} as checkpointing kwargs, so torch's reentrant default applies", torch_warns=True)
        if (
            at_least("transformers", TRANSFORMERS_TRAINER_EMPTY_IS_NONE_SINCE)
            and isinstance(kwargs, DictVal)
            and kwargs.complete
            and not set(kwargs.items) - TRAINER_OWN_KEYS
        ):
            return self.hf_default_mode()
        return self.mode_of_kwargs(kwargs)

    # -- torch.utils.checkpoint ----------------------------------------------------------------
    @cached_property
    def torch_checkpoint_sites(self) -> list[Call]:
        """Direct calls and `functools.partial(checkpoint, ...)` wrappers; calls through a partial
        are represented by the partial itself (that is where `use_reentrant` belongs)."""
        sites = []
        for call in self.facts.calls:
            if call.qualname in TORCH_CHECKPOINTS and call.via_partial is None:
                sites.append(call)
            elif call.qualname == PARTIAL and call.args and _names(call.args[0], TORCH_CHECKPOINTS):
                sites.append(call)
        return sites

    @staticmethod
    def torch_mode(call: Call) -> Mode:
        value = call.kwarg("use_reentrant")
        if isinstance(value, Missing):
            return Mode(True, "no use_reentrant is passed, so torch defaults to the reentrant variant")
        if isinstance(value, Const) and value.value is not None:
            return Mode(bool(value.value), f"use_reentrant={value.value!r}")
        if isinstance(value, Const):
            return Mode(True, "use_reentrant=None, so torch defaults to the reentrant variant")
        return Mode(None, "use_reentrant is not known statically")

    # -- Hugging Face checkpointing -------------------------------------------------------------
    @cached_property
    def hf_sites(self) -> list[HFSite]:
        sites: list[HFSite] = []
        for call in self.facts.method_calls(*HF_ENABLE_METHODS):
            library = self.receiver_is_library(call)
            if library is False:
                continue  # the project's own method of that name
            if self._kept_in_eval(call):
                continue  # a reference model: the layers checkpoint only `if self.training`
            kwargs_name = "activation_checkpointing_kwargs" if call.name.startswith("activation") else "gradient_checkpointing_kwargs"
            kwargs = call.kwarg(kwargs_name)
            if isinstance(kwargs, Missing) and call.args:
                kwargs = call.args[0]
            sites.append(HFSite("model method", call, call.span, True, kwargs_name, kwargs, self.mode_of_kwargs(kwargs),
                                condition=call.condition, resolved=library is True and call.via is None))
        for call in self.facts.method_calls("_set_gradient_checkpointing"):
            site = self._private_site(call)
            if site is not None:
                sites.append(site)
        for call in self.facts.calls:
            if is_training_config(call.qualname):
                sites.append(self._config_site(call))
            elif call.qualname in KBIT_PREPARATION:
                sites.append(self._kbit_site(call))
        for assign in self.facts.attr_assigns:
            if assign.attr == "gradient_checkpointing" and _is_model_config(assign.base_value):
                # `config.gradient_checkpointing = True` before `from_pretrained(..., config=config)`: the model's
                # `post_init` calls `gradient_checkpointing_enable()` with no kwargs and drops the attribute [H11]
                condition, enabled = _first_on(on_paths(assign.value, None))
                joined = assign.condition & condition
                sites.append(HFSite("config attribute", None, assign.span, enabled if joined is not None else False,
                                    None, MISSING, self.hf_default_mode(), condition=joined or assign.condition, resolved=False))
        for namespace, line in self.cli_configs() if self._trainers_take_arguments else ():
            flag = namespace.get("gradient_checkpointing")  # an option, or the value a settings file the parser reads gives
            default = self._trl_default(namespace.config_class)
            if isinstance(flag, OptionVal) and default is not None:
                flag = OptionVal(flag.option, flag.line, default)
            condition, enabled = _first_on(on_paths(flag, None))
            for kwargs_condition, kwargs, span in self._command_line_kwargs(line, namespace):
                sites.append(
                    HFSite(
                        "command line",
                        None,
                        span,
                        enabled,
                        "gradient_checkpointing_kwargs",
                        kwargs,
                        Mode(None, "set on the command line") if kwargs is UNKNOWN else self.mode_of_kwargs(kwargs),
                        config_class=namespace.config_class,
                        flag_defaulted=True,
                        condition=within(condition, kwargs_condition),
                        flag_origin=flag.origin if isinstance(flag, Const) else None,
                        parsed=namespace.fields,
                    )
                )
        return sites

    @property
    def _trainers_take_arguments(self) -> bool:
        """Whether a Trainer that enables checkpointing from its parsed arguments may run: False when every
        `...Trainer(...)` the script builds is the project's own class extending no library class (LOMO's
        `LOMOTrainer`), or when it builds none and runs its own step (`loss.backward()`: Finetune_llama2_Megatron's
        `if training_args.gradient_checkpointing: model.gradient_checkpointing_enable()`), so
        `training_args.gradient_checkpointing` is a value the script reads, not a switch."""
        trainers = [c for c in self.facts.calls if c.name.endswith("Trainer")]
        if not trainers:  # one a project module builds may take them, unless the script runs its own step
            return not any(c.is_backward for c in self.facts.calls)
        own = [self.facts.classes.get(own_name(c.qualname)) for c in trainers if c.qualname]
        return len(own) < len(trainers) or any(info is None or info.library_base for info in own)

    def _command_line_kwargs(self, line: int, namespace: Namespace) -> list[tuple[Condition, Value, Span]]:
        """The checkpointing kwargs of arguments parsed from the command line at `line`, with the path each holds on
        and where they are given: those assigned after parsing (`training_args.gradient_checkpointing_kwargs = {...}`
        in the branches of an `if`) [H3], else the settings file's or the launcher's (reported at the parser)."""
        # (on the object this parser made, which no code can touch before the parse, wherever its text lies: a
        # `main(training_args)` defined above the `__main__` block that parses)
        assigned = [(a.condition, a.value, a.span) for a in self.facts.attr_assigns
                    if a.attr in ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")
                    and isinstance(a.base_value, Namespace) and a.base_value.kind == "command line"
                    and (a.base_value.line == line or (not a.base_value.line and a.line > line))]
        given = namespace.fields.get("gradient_checkpointing_kwargs")
        kwargs = self._launched_kwargs()
        if isinstance(given, DictVal) and not isinstance(kwargs, DictVal):
            kwargs = given  # `gradient_checkpointing_kwargs: {use_reentrant: false}` in the YAML the parser reads
        return assigned or [(ALWAYS, kwargs, Span(Position(line, 1), Position(line, 1)))]

    def _launched_kwargs(self) -> Value:
        """`--gradient_checkpointing_kwargs '{"use_reentrant": false}'` on the launcher's line: the dict; MISSING when
        the launcher passes none; UNKNOWN without a launcher (the command line may pass them)."""
        launch = self.facts.launch
        if launch is None:
            return UNKNOWN
        for name in ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"):
            value = launched_value(launch, [f"--{name}"])
            if value is None:
                continue
            try:
                data = json.loads(str(constant(value)))
            except ValueError:
                return UNKNOWN
            return DictVal({k: Const(v, value.origin) for k, v in data.items()}, launch.line) if isinstance(data, dict) else UNKNOWN
        return MISSING

    def _kept_in_eval(self, call: Call) -> bool:
        """Whether the model `call` turns checkpointing on for is a frozen one (a DPO reference model): put in eval mode
        after it (`reference_model.eval()`, in the same function), never back in training mode, and no optimizer takes
        its parameters. Hugging Face layers checkpoint only in training mode. (A model trained in eval mode by mistake
        is CKPT208's.)"""
        same = [c for c in self.facts.calls if c.receiver == call.receiver and c.is_method]
        return (any(c.name == "eval" and c.scope == call.scope and c.line > call.line for c in same)
                and not any(c.name in ("train", "parameters", "named_parameters") for c in same))

    def receiver_is_library(self, call: Call) -> bool | None:
        """Whether `x` in `x.method()` is a transformers / PEFT / TRL object: True when it is known to be one,
        False when it is the script's own (its class, not a library subclass, defines `method`), None when it
        plausibly is (a parameter, an object from a helper we cannot see)."""
        value = call.receiver_value
        if isinstance(value, Instance):
            qualname = value.qualname
            if qualname.startswith(HF_PACKAGES):
                return True
            if qualname.startswith("<local>."):
                local = qualname.split(".", 1)[1].split("(", 1)[0]
                if self.facts.library_base(local):
                    return True
                if local in self.facts.classes:
                    return False
            own = self.facts.classes.get(qualname.rsplit(".", 1)[0] if qualname.endswith(LOADERS) else qualname)
            if own is not None and (own.library_base or "").startswith(HF_PACKAGES):
                # a project's copy of a library model (`class LlamaForCausalLM(LlamaPreTrainedModel)` over
                # `PreTrainedModel`): the library's method, unless the copy defines its own
                return call.name not in own.methods
        if call.receiver == "self":
            owner = self.facts.enclosing_class(call.scope)
            if owner is not None:
                return True if owner.library_base else (False if call.name in owner.methods else None)
        if self.facts.own_method(call.name):
            return False
        return None

    def _private_site(self, call: Call) -> HFSite | None:
        """`model.language_model._set_gradient_checkpointing()` (InternVL): the private setter behind
        `gradient_checkpointing_enable` (4.35+), whose default function is torch's `checkpoint` as is [H8]."""
        if call.receiver in (None, "self") or "value" in call.kwargs or self.receiver_is_library(call) is False:
            return None  # the script's own override, or the pre-4.35 `(module, value)` form
        enable = call.args[0] if call.args else call.kwarg("enable")
        if truth(enable) is False:
            return None
        func = call.kwarg("gradient_checkpointing_func")
        if isinstance(func, Missing) and len(call.args) > 1:
            func = call.args[1]
        if isinstance(func, Missing):
            mode = Mode(True, "it installs torch's `checkpoint` without `use_reentrant`, so torch defaults to the reentrant variant",
                        torch_warns=True)
        else:
            mode = Mode(None, "a checkpointing function of the script's own")
        return HFSite("private method", call, call.span, True, "gradient_checkpointing_func", func, mode, condition=call.condition)

    def _kbit_site(self, call: Call) -> HFSite:
        """peft's `prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)` [P2]."""
        enabled = call.kwarg("use_gradient_checkpointing")
        text = call.kwarg_names.get("use_gradient_checkpointing")
        if isinstance(enabled, Missing) and len(call.args) > 1:
            enabled, text = call.args[1], call.arg_names[1] if len(call.arg_names) > 1 else None
        condition, on = _first_on(on_paths(enabled, text, default=True))
        if on and self.quantized is False:
            on = False  # peft only enables checkpointing for quantized models [P2]
        elif on and (quantized := self._quantized_path()) is not None:
            condition = condition & quantized  # ... so on the path that quantizes (`load_in_8bit=args.use_8bit`)
        kwargs = call.kwarg("gradient_checkpointing_kwargs")
        if isinstance(kwargs, Missing) or (isinstance(kwargs, Const) and kwargs.value is None):
            # peft passes `{}` (peft/utils/other.py, prepare_model_for_kbit_training)
            mode = Mode(True, f"{call.name} passes {{}} as checkpointing kwargs, so torch's reentrant default applies", torch_warns=True)
        else:
            mode = self.mode_of_kwargs(kwargs)
        joined = call.condition & condition
        return HFSite("kbit preparation", call, call.span, on if joined is not None else False, "gradient_checkpointing_kwargs",
                      kwargs, mode, condition=joined or call.condition, flag_name="use_gradient_checkpointing", resolved=call.via is None)

    def _config_site(self, call: Call) -> HFSite:
        flag_name = None
        condition, enabled = ALWAYS, None
        defaulted = False
        for name in ("activation_checkpointing", "gradient_checkpointing"):
            value = call.kwarg(name)
            if not isinstance(value, Missing):
                flag_name = name
                condition, enabled = _first_on(on_paths(value, call.kwarg_names.get(name)))
                break
        else:
            enabled = self._trl_default(call.qualname) if not call.star_kwargs else None
            defaulted = True
        for assign in self._assigns_after(call, self._flag_names_read_after_init()):
            # `training_args.gradient_checkpointing = True` after the config was built, in an `if` or not
            assigned_condition, assigned = _first_on(on_paths(assign.value, None))
            joined = assign.condition & assigned_condition
            if assigned is not False and joined is not None:
                flag_name, condition, enabled, defaulted = assign.attr, joined, assigned, False
            elif not assign.condition.literals:
                flag_name, condition, enabled, defaulted = assign.attr, ALWAYS, False, False
        kwargs_name = "gradient_checkpointing_kwargs"
        kwargs: Value = MISSING
        for name in ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"):
            value = call.kwarg(name)
            if not isinstance(value, Missing):
                kwargs_name, kwargs = name, value
                break
        if flag_name == "activation_checkpointing" or kwargs_name == "activation_checkpointing_kwargs":
            kwargs_name = "activation_checkpointing_kwargs"
        kwargs = self._assigned_after(call, kwargs_name, kwargs)
        mode = self.trainer_mode(kwargs, trl=bool(call.qualname and call.qualname.startswith("trl.")))
        joined = call.condition & condition
        return HFSite("training config", call, call.span, enabled if joined is not None else False, kwargs_name, kwargs, mode,
                      call.qualname, flag_name, defaulted, condition=joined or call.condition, resolved=call.via is None)

    def _assigned_after(self, call: Call, kwargs_name: str, kwargs: Value) -> Value:
        """`training_args.gradient_checkpointing_kwargs = {"use_reentrant": True}` after the config was built: the
        Trainer reads the attribute, so the assigned dict is what it passes (before 5.23 for the old name) [H3]."""
        for assign in self._assigns_after(call, (kwargs_name,)):
            kwargs = assign.value
        return kwargs

    def _flag_names_read_after_init(self) -> tuple[str, ...]:
        """The attribute the Trainer reads the flag from, on the releases the project allows: `gradient_checkpointing`
        before 5.23, `activation_checkpointing` since (the old name is then resolved once, in `__post_init__`) [H3]."""
        since = self.versions.at_least("transformers", ACTIVATION_CHECKPOINTING_SINCE)
        return ("gradient_checkpointing",) if since is False else ("activation_checkpointing",) if since else (
            "gradient_checkpointing", "activation_checkpointing")

    def _assigns_after(self, call: Call, attrs: tuple[str, ...]) -> list[AttrAssign]:
        """`training_args.<attr> = ...` after `call` built the config assigned to `training_args`, in order: on the same
        name below it, or on the object itself wherever the code lies (`def main(args): args.<attr> = ...` above)."""
        targets = {f"{call.assigned_to}.{attr}" for attr in attrs} if call.assigned_to else set()
        return [a for a in self.facts.attr_assigns if a.attr in attrs and (
            (a.target in targets and a.line > call.line) or (isinstance(a.base_value, Instance) and a.base_value.call is call))]

    def _trl_default(self, qualname: str | None) -> bool | None:
        if qualname and qualname.startswith("trl."):
            return self.versions.at_least("trl", TRL_CHECKPOINTING_DEFAULT_ON)
        return False if qualname in HF_TRAINING_ARGS else None

    def cli_configs(self) -> list[tuple[Namespace, int]]:
        """TrainingArguments / TRL configs that `HfArgumentParser` / `TrlParser` build from the command
        line, with the field defaults of a local subclass (`per_device_train_batch_size: int = 1`)."""
        return [(Namespace(fields, kind="command line", config_class=name), line)
                for name, fields, line in self._parsed_dataclasses if is_training_config(name)]

    def parsed_fields(self) -> dict[str, Value]:
        """Every field the script's argument parsers fill, of its own dataclasses too (`block_size`), with the
        values its launcher passes; the first parser's value wins."""
        out: dict[str, Value] = {}
        for _, fields, _ in self._parsed_dataclasses:
            for key, value in fields.items():
                out.setdefault(key, value)
        return out

    @cached_property
    def _parsed_dataclasses(self) -> list[tuple[str | None, dict, int]]:
        """(class name, its fields as parsed, the parser's line) for every dataclass an argument parser fills."""
        found = []
        launch = self.facts.launch
        for parser in self.facts.argument_parsers():
            classes = parser.args[0] if parser.args else parser.kwarg("dataclass_types")
            items = getattr(classes, "items", [classes])
            own = self.facts.own_fields(getattr(item, "name", None) for item in items)
            for item in items:
                name = getattr(item, "name", None)
                fields: dict = {}
                key = own_name(name) if isinstance(name, str) else None
                if key is not None and (name.startswith("<local>.") or key in self.facts.classes):
                    fields = dict(self.facts.dataclass_fields.get(key, {}))
                    name = self.facts.library_base(key) or name
                name = name if is_training_config(name) else _project_config(name)
                for _, _, values in self.facts.settings_files:  # `parser.parse_json_file("args.json")`
                    fields.update(values)
                found.append((name, with_launched(launch, fields, own, library=True), parser.line))
        return found

    @property
    def checkpointing_on(self) -> bool:
        return bool(self.torch_checkpoint_sites) or any(s.enabled for s in self.hf_sites)

    @property
    def checkpointing_maybe_on(self) -> bool:
        return self.checkpointing_on or any(s.enabled is None for s in self.hf_sites)

    # -- torch.compile ---------------------------------------------------------------------------
    @property
    def compiling_sites(self) -> list[CompileSite]:
        """The compile sites of the project's runs: all but an `--torch_compile` nothing of the project sets."""
        return [s for s in self.compile_sites if not s.unmentioned]

    @cached_property
    def compile_sites(self) -> list[CompileSite]:
        """Every place the script compiles, or may compile, the model: `torch.compile(...)` (also as a decorator),
        `module.compile(...)`, `torch._dynamo.optimize(...)`, the Trainer's `torch_compile*` arguments (given in the
        call, or on the command line), accelerate's dynamo settings, and a launcher's `--dynamo_backend`."""
        sites: list[CompileSite] = []
        for call in self.facts.calls:
            qualname = call.qualname or ""
            if qualname in ("torch.compile", "torch._dynamo.optimize"):
                mode = call.kwarg("mode")
                sites.append(CompileSite("torch.compile", call, call.span, mode, "mode", _cudagraphs(mode, call.kwarg("options")),
                                         call.condition))
            elif call.qualname is None and call.method == "compile" and call.receiver and not isinstance(call.receiver_value, QualName) \
                    and self.receiver_is_library(call) is not False:
                mode = call.kwarg("mode")  # nn.Module.compile(**kwargs) passes them to torch.compile
                sites.append(CompileSite("module method", call, call.span, mode, "mode", _cudagraphs(mode, call.kwarg("options")),
                                         call.condition))
            elif is_training_config(call.qualname):
                sites.extend(self._config_compile(call))
            elif call.name in ("Accelerator", "TorchDynamoPlugin") and qualname.startswith("accelerate"):
                backend = call.kwarg("dynamo_backend") if call.name == "Accelerator" else call.kwarg("backend")
                plugin = call.kwarg("dynamo_plugin")
                mode = call.kwarg("mode") if call.name == "TorchDynamoPlugin" else MISSING
                if isinstance(plugin, Instance) and plugin.qualname.endswith("TorchDynamoPlugin"):
                    continue  # the plugin's own call is a site
                given = [v for v in (backend, plugin) if not isinstance(v, Missing)]
                if call.name == "Accelerator" and not given:
                    continue
                off = all(isinstance(v, Const) and str(v.value).lower() in ("no", "none") for v in given) and given
                if not off:
                    sites.append(CompileSite("accelerate", call, call.span, mode, "mode" if call.name == "TorchDynamoPlugin" else None,
                                             _cudagraphs(mode), call.condition))
        parsed = self.cli_configs()
        for namespace, line in parsed:
            flag = namespace.get("torch_compile")
            mode = namespace.get("torch_compile_mode")
            span = Span(Position(line, 1), Position(line, 1))
            if isinstance(mode, Const) and mode.value is not None:
                sites.append(CompileSite("training config", None, span, mode, None, _cudagraphs(mode)))
                continue
            unmentioned = not {"torch_compile", "torch_compile_mode", "torch_compile_backend"} & set(namespace.fields)
            for condition, state in on_paths(flag, None):
                if state is not False:
                    sites.append(CompileSite("training config", None, span, MISSING, None, None, condition, unmentioned))
        launch = self.facts.launch
        if launch is not None:
            options = {normalise(str(k)): v for k, v in {**launch.runner_options, **launch.options}.items()}
            # the Trainer's own options reach it through the parser read above: a site there already
            trainer_options = () if parsed else ("torch_compile", "torch_compile_backend", "torch_compile_mode")
            for option in ("dynamo_backend", *trainer_options, "dynamo_mode"):
                if option in options and str(options[option]).lower() not in ("no", "false", "none"):
                    mode = options.get("torch_compile_mode", options.get("dynamo_mode"))
                    value = Const(mode) if isinstance(mode, str) else MISSING
                    sites.append(CompileSite("launcher", None, Span(Position(launch.line, 1), Position(launch.line, 1)), value, None,
                                             _cudagraphs(value) if isinstance(mode, str) else None))
                    break
        for number, text in enumerate(self.facts.lines, start=1):
            if _DECORATOR.match(text) and "(" not in text:  # `@torch.compile` bare: no call in the facts
                sites.append(CompileSite("decorator", None, Span(Position(number, 1), Position(number, len(text) + 1)), MISSING, None, False))
        return sites

    def _config_compile(self, call: Call) -> list[CompileSite]:
        """`TrainingArguments(torch_compile=True, torch_compile_mode=...)`: a mode or backend turns compiling on by
        itself (transformers `TrainingArguments.__post_init__`)."""
        mode = call.kwarg("torch_compile_mode")
        backend = call.kwarg("torch_compile_backend")
        for value in (mode, backend):
            if not isinstance(value, Missing) and not (isinstance(value, Const) and value.value is None):
                return [CompileSite("training config", call, call.span, mode, "torch_compile_mode", _cudagraphs(mode), call.condition)]
        flag = call.kwarg("torch_compile")
        if isinstance(flag, Missing):
            return [CompileSite("training config", call, call.span, MISSING, None, None, call.condition)] if call.star_kwargs else []
        found = []
        for condition, state in on_paths(flag, call.kwarg_names.get("torch_compile")):
            joined = together(call.condition, condition)
            if state is not False and joined is not None:
                found.append(CompileSite("training config", call, call.span, MISSING, "torch_compile_mode", False, joined))
        return found

    # -- models, PEFT, quantization ------------------------------------------------------------
    @cached_property
    def model_loads(self) -> list[Call]:
        return [c for c in self.facts.calls if c.name in ("from_pretrained", "from_config") and _is_model_class(c)]

    @cached_property
    def mllama_loads(self) -> list[Call]:
        """Loads of Llama 3.2 Vision with its vision tower [H10]: a transformers `Mllama*` class other than the text-only
        ones, or an `Auto*` class (not a causal-LM one, which loads the text model alone) given a `Llama-3.2-*-Vision` id."""
        found = []
        for call in self.model_loads:
            qualname = call.qualname or ""
            owner = qualname.rsplit(".", 2)[-2] if qualname.count(".") >= 2 else ""
            if not qualname.startswith("transformers."):
                continue
            if owner.startswith("Mllama") and owner not in MLLAMA_TEXT_ONLY:
                found.append(call)
            elif owner.startswith("Auto") and not owner.endswith("ForCausalLM"):
                model_id = call.args[0] if call.args else call.kwarg("pretrained_model_name_or_path")
                if isinstance(model_id, Const) and isinstance(model_id.value, str) and re.search(MLLAMA_MODEL_ID, model_id.value):
                    found.append(call)
        return found

    @cached_property
    def vision_freezes(self) -> list[Call | AttrAssign]:
        """Where the script freezes a vision tower: `model.vision_model.requires_grad_(False)`, or
        `p.requires_grad = False` in `for p in model.model.vision_model.parameters():`."""
        found: list[Call | AttrAssign] = []
        for call in self.facts.method_calls("requires_grad_"):
            off = (call.args and truth(call.args[0]) is False) or truth(call.kwarg("requires_grad")) is False
            if off and "vision" in (call.receiver or "").lower():
                found.append(call)
        for assign in self.facts.assigns_to("requires_grad"):
            base = assign.base_value
            if isinstance(base, Instance) and base.qualname == PARAMETERS and truth(assign.value) is False \
                    and "vision" in (base.call.receiver or "").lower():
                found.append(assign)
        return found

    @cached_property
    def peft_calls(self) -> list[Call]:
        return self.facts.calls_to(*PEFT_MODELS)

    @cached_property
    def kbit_calls(self) -> list[Call]:
        return self.facts.calls_to(*KBIT_PREPARATION)

    @cached_property
    def input_grad_calls(self) -> list[Call]:
        """What makes the embedding output require grad: `enable_input_require_grads()`, or the same done by hand
        (`model.text_model.embeddings.requires_grad_(True)`, `get_input_embeddings().requires_grad_()`, a forward hook
        named like peft's `make_inputs_require_grad`)."""
        calls = self.facts.method_calls("enable_input_require_grads")
        for call in self.facts.method_calls("requires_grad_"):
            on = truth(call.args[0]) if call.args else truth(call.kwarg("requires_grad")) if "requires_grad" in call.kwargs else True
            if on and "embed" in (call.receiver or "").lower():
                calls.append(call)
        # (on any receiver: `model.get_input_embeddings().register_forward_hook(make_inputs_require_grad)` has no name)
        calls += [c for c in self.facts.calls if c.name == "register_forward_hook" and c.is_method
                  and "require" in " ".join(filter(None, c.arg_names)).lower()]
        if self.versions.at_least("transformers", TRANSFORMERS_RESIZE_KEEPS_REQUIRES_GRAD_SINCE) is not True:
            # an embedding resized after the PEFT wrap is a new one that trains, so the layers' inputs require grad [H12]
            wraps = self.peft_calls
            calls += [c for c in self.facts.method_calls("resize_token_embeddings")
                      if any(w.scope == c.scope and w.line < c.line for w in wraps)]
        return calls

    @property
    def quantized(self) -> bool | None:
        """True when a model load asks for 4/8-bit weights (on some path: `load_in_8bit=args.load_in_8bit` asks for
        them with `--load_in_8bit`), None when it cannot be told."""
        return self._asks_for_kbit(default_run=False)

    def quantized_by_default(self) -> bool | None:
        """`quantized` for the default run alone (the options its launcher passes, the script's defaults): False when
        no model load asks for 4/8-bit weights there (`load_in_4bit=args.bits == 4` launched with `--bits 16`)."""
        return self._asks_for_kbit(default_run=True)

    def _asks_for_kbit(self, default_run: bool) -> bool | None:
        def here(condition: Condition) -> bool:
            return not default_run or condition.runs_by_default is not False

        if any(here(c.condition) for c in self.facts.calls_to(
                "transformers.BitsAndBytesConfig", "transformers.GPTQConfig", "transformers.AwqConfig")):
            return True
        loads = [c for c in self.model_loads if here(c.condition)]
        unknown = not loads
        for call in loads:
            for name in ("load_in_4bit", "load_in_8bit"):
                states = [state for condition, state in on_paths(call.kwarg(name), call.kwarg_names.get(name), default=False)
                          if here(condition)]
                if True in states:
                    return True
                unknown = unknown or None in states or not states
            quant = call.kwarg("quantization_config")
            if isinstance(quant, Instance):
                return True
            if not isinstance(quant, Missing) and not (isinstance(quant, Const) and quant.value is None):
                unknown = True
        return None if unknown else False

    def _quantized_path(self) -> Condition | None:
        """The one path on which the script's model loads ask for 4/8-bit weights, when that depends on an option
        (`load_in_8bit=args.use_8bit`: with `--use_8bit`); None when they always do, never do, or on several paths."""
        if self.facts.calls_to("transformers.BitsAndBytesConfig", "transformers.GPTQConfig", "transformers.AwqConfig"):
            return None
        paths = [condition for call in self.model_loads for name in ("load_in_4bit", "load_in_8bit")
                 for condition, state in on_paths(call.kwarg(name), call.kwarg_names.get(name), default=False) if state is True]
        return paths[0] if len(paths) == 1 and paths[0].literals else None

    @cached_property
    def deepspeed_configs(self) -> list[DeepSpeedConfig]:
        return read_deepspeed_configs(self.facts, self.files)

    @property
    def zero_stage(self) -> tuple[int, DeepSpeedConfig] | None:
        for config in self.deepspeed_configs:
            if config.zero_stage is not None:
                return config.zero_stage, config
        return None

    @property
    def custom_loop(self) -> bool:
        """A hand-written loop: the script calls `.backward()` itself (or accelerate's), or a project module it imports
        does."""
        return self.facts.loop_module is not None or bool(self.backward_calls)

    @property
    def backward_calls(self) -> list[Call]:
        """The script's own `.backward()` calls (`loss.backward()`, `accelerator.backward(loss)`)."""
        return [c for c in self.facts.calls if c.is_backward]

    def after_training(self, call: Call) -> bool:
        """Whether `call` comes after the training of its function: a Trainer's `.train()` or a `.backward()` runs
        earlier in the same function and none after it (a model loaded again to evaluate or generate)."""
        trainers = {c.assigned_to for c in self.facts.calls if c.assigned_to and self.is_trainer(c)}
        steps = [c.line for c in self.facts.calls if c.scope == call.scope and c.via is None and c.is_method
                 and (c.name == "backward" or (c.name == "train" and c.receiver in trainers))]
        return bool(steps) and max(steps) < call.line

    @property
    def enabled_model_methods(self) -> list[HFSite]:
        """The Hugging Face checkpointing the script turns on with a method of the model
        (`model.gradient_checkpointing_enable()`), on some path."""
        return [s for s in self.hf_sites if s.kind == "model method" and s.enabled]

    @property
    def uses_trainer(self) -> bool:
        """Whether the script builds a transformers / TRL Trainer (or a project subclass of one)."""
        return any(self.is_trainer(c) for c in self.facts.calls)

    def is_trainer(self, call: Call) -> bool:
        """Whether `call` builds a transformers / TRL Trainer, or a project subclass of one (`LLaVATrainer(...)`)."""
        if not call.names_a_trainer:
            return False
        library = call.qualname if call.qualname.startswith(HF_PACKAGES) else self.facts.library_base(own_name(call.qualname))
        return bool(library) and library.startswith(("transformers.", "trl.")) and library.endswith("Trainer")


@dataclass
class CompileSite:
    """A place that compiles (part of) the model with `torch.compile`, or asks a library to: the call, the compile
    mode it passes (a constant, or None when it is not known / not given), and the path on which it compiles."""

    kind: str  # "torch.compile" | "module method" | "training config" | "accelerate" | "launcher" | "decorator"
    call: Call | None
    span: Span
    mode: Value  # the `mode` / `torch_compile_mode` / `dynamo_mode` value; MISSING when not given
    mode_keyword: str | None  # the keyword that carries it ("mode", "torch_compile_mode")
    cudagraphs: bool | None  # True: the mode records CUDA graphs; False: it does not; None: not known
    condition: Condition = ALWAYS
    # the Trainer's `--torch_compile`, which nothing of the project sets (no config, launcher or own default): the run
    # compiles only for a user who adds it, so a finding that needs a compile does not stand on it
    unmentioned: bool = False

    @property
    def where(self) -> str:
        return f"line {self.span.start.line}" if self.call is None or self.call.via is None else f"line {self.span.start.line} (in {self.call.via})"

    @property
    def what(self) -> str:
        """How a message names the compile: `torch.compile`, or the setting that asks for it."""
        return {"training config": "the Trainer's `torch_compile`", "accelerate": "accelerate's dynamo backend",
                "launcher": "the launcher's dynamo backend"}.get(self.kind, "`torch.compile`")


# torch._inductor.list_mode_options() (torch 2.13 `torch/_inductor/__init__.py`): the modes that set
# "triton.cudagraphs": True; "max-autotune-no-cudagraphs", "default" and "lite" do not [T10]
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
_DECORATOR = re.compile(r"^\s*@\s*(?:torch\.)?compile\b")


def _cudagraphs(mode: Value, options: Value = MISSING) -> bool | None:
    if isinstance(options, DictVal):
        flag = options.get("triton.cudagraphs")
        if isinstance(flag, Const):
            return bool(flag.value)
    if isinstance(mode, Missing) or (isinstance(mode, Const) and mode.value is None):
        return False if isinstance(options, (Missing, DictVal)) else None
    if isinstance(mode, Const) and isinstance(mode.value, str):
        return mode.value in CUDAGRAPH_MODES
    return None


def _names(value: Value, qualnames: tuple[str, ...]) -> bool:
    return getattr(value, "name", None) in qualnames


def _is_model_class(call: Call) -> bool:
    """`AutoModelForCausalLM.from_pretrained`, `LlamaForCausalLM.from_config`, `IdeficsForVisionText2Text...`;
    not a PEFT wrapper (`PeftModel.from_pretrained` loads adapters onto a model loaded before)."""
    qualname = call.qualname or ""
    if qualname.startswith("peft."):
        return False
    owner = qualname.rsplit(".", 2)[-2] if qualname.count(".") >= 1 else ""
    return owner.startswith("Auto") and "Model" in owner or "For" in owner or owner.endswith(("Model", "LMHeadModel"))

