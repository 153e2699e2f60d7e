"""CKPT1xx: direct use of `torch.utils.checkpoint`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ckpt_doctor.analysis.facts import AttrAssign, Call, is_checkpointing_switch, own_checkpointing_keyword
from ckpt_doctor.analysis.training import on_paths
from ckpt_doctor.findings import Applicability, Severity, Span
from ckpt_doctor.analysis.library import AUTOGRAD_FUNCTION, DDP, HF_ENABLE_METHODS, KBIT_PREPARATION, TORCH_CHECKPOINTS, is_training_config
from ckpt_doctor.analysis.selective import op_collections
from ckpt_doctor.analysis.graph_breaks import CheckpointedBody, checkpointed_bodies
from ckpt_doctor.analysis.conditions import Condition, on_path, together
from ckpt_doctor.rules import Context, Report, rule
from ckpt_doctor.rules.shared import launched_ddp_processes, set_keyword, zero3_with_peft
from ckpt_doctor.analysis.values import Const, DictVal, Missing, QualName, Value, constant, truth

# torch warns about a `checkpoint` call without `use_reentrant` since 2.1 (pytorch/pytorch#100551; rules/CKPT101.md)
USE_REENTRANT_WARNING_SINCE = "2.1"
# Keywords `torch.utils.checkpoint.checkpoint` itself takes (torch 2.13, torch/utils/checkpoint.py);
# any other keyword is meant for the wrapped function.
CHECKPOINT_KEYWORDS = {"use_reentrant", "context_fn", "determinism_check", "debug", "early_stop", "preserve_rng_state"}
NON_REENTRANT_ONLY = {"context_fn", "debug"}
CHECKPOINT_WRAPPER = "torch.distributed.algorithms._checkpoint.checkpoint_wrapper.checkpoint_wrapper"
DROPOUT_KEYWORDS = {"dropout", "p", "hidden_dropout_prob", "attention_dropout", "attention_probs_dropout_prob", "resid_pdrop", "attn_pdrop", "embd_pdrop", "lora_dropout", "hidden_dropout", "dropout_rate", "classifier_dropout"}


def _label(call: Call) -> str:
    if call.name == "partial":
        return "`functools.partial(checkpoint, ...)`"
    return f"`{call.name}`"


@rule(
    "CKPT101",
    "checkpoint-use-reentrant-unset",
    Severity.WARNING,
    fix=Applicability.SAFE,
    summary="`torch.utils.checkpoint` called without an explicit `use_reentrant`",
)
def use_reentrant_unset(ctx: Context) -> Iterator[Report]:
    if ctx.versions.at_least("torch", USE_REENTRANT_WARNING_SINCE) is False:
        return  # torch 2.0 and older: the reentrant default, without a word
    unsafe = zero3_with_peft(ctx)
    for call in ctx.training.torch_checkpoint_sites:
        if not isinstance(call.kwarg("use_reentrant"), Missing):
            continue
        yield Report(
            call.span,
            f"{_label(call)} without `use_reentrant`: torch warns \"the use_reentrant parameter should be passed "
            "explicitly\" on every call and falls back to the reentrant variant; pass `use_reentrant=False`",
            fix=set_keyword(
                call,
                "use_reentrant",
                "False",
                Applicability.UNSAFE if unsafe else Applicability.SAFE,
                "Add `use_reentrant=False`",
            ),
        )
    # a Trainer given the model (its arguments turn checkpointing on), the script's own enable call, the model's own
    # keyword, or its flag set by hand
    enabled_by_hand = {id(load) for enable, load, _, _ in ctx.facts.model_checkpoints if not _by_trainer(enable)}
    for enable, load, module, call in ctx.facts.model_checkpoints:
        if not isinstance(call.kwarg("use_reentrant"), Missing):
            continue
        condition = together(enable.condition, load.condition)
        keyword = own_checkpointing_keyword(enable) if enable is load else None
        if isinstance(enable, AttrAssign):  # `model.gradient_checkpointing = args.gradient_checkpointing`
            on = [path for path, state in on_paths(enable.value, None) if state is not False]
            condition = together(condition, on[0]) if on else None
            who, span = f"`{enable.target} = ...`", enable.span
        elif keyword is not None:  # the model's own switch: on where its value is (`grad_checkpointing=args.grad_checkpointing`)
            on = [path for path, state in on_paths(load.kwargs[keyword], load.kwarg_names.get(keyword)) if state is not False]
            condition = together(condition, on[0]) if on else None
            who, span = f"`{keyword}=`", enable.keyword_spans.get(keyword, enable.span)
        elif enable.names_a_trainer:
            if id(load) in enabled_by_hand:
                continue  # reported where the script turns it on itself
            sites = [s for s in ctx.training.hf_sites if s.enabled and s.kind in ("command line", "training config")]
            condition = next(filter(None, (together(condition, s.condition) for s in sites)), None)
            who, span = f"`{enable.name}(...)` (at `train()`)", enable.span
        elif enable.qualname in KBIT_PREPARATION:  # `prepare_model_for_kbit_training(model)` calls the enable method
            who, span = f"`{enable.name}(...)`", enable.span
        else:
            who, span = f"`{enable.receiver}.{enable.name}()`", enable.span
        if condition is None:
            continue
        hf = isinstance(enable, Call) and (enable.name in HF_ENABLE_METHODS or enable.qualname in KBIT_PREPARATION)
        yield Report(
            span,
            f"{who} turns on the checkpointing of the project's own `{_model_name(load.qualname)}` (made at line "
            f"{load.line}), whose code calls `torch.utils.checkpoint.checkpoint` without `use_reentrant` "
            f"({module}:{call.line}): torch warns \"the use_reentrant parameter should be passed explicitly\" on every "
            f"call and falls back to the reentrant variant{', whatever kwargs Hugging Face is given' if hf else ''}; "
            "pass `use_reentrant=False` there",
            condition=condition,
        )


def _by_trainer(enable: "Call | AttrAssign") -> bool:
    return isinstance(enable, Call) and enable.names_a_trainer


def _model_name(qualname: str) -> str:
    """`LlamaForCausalLM` of `src.modeling.LlamaForCausalLM.from_pretrained` (a classmethod's class); `mar.__dict__[...]`
    or `HUNYUAN_DIT_MODELS[...]` for an entry of a registry."""
    if qualname.endswith("[]"):
        parts = qualname[:-2].split(".")
        return ".".join(parts[-2:] if parts[-1] == "__dict__" else parts[-1:]) + "[...]"
    parts = qualname.split(".")
    if len(parts) > 1 and parts[-1][:1].islower() and parts[-2][:1].isupper():
        parts.pop()
    return parts[-1]


@rule(
    "CKPT102",
    "checkpoint-reentrant-explicit",
    Severity.INFO,
    fix=Applicability.UNSAFE,
    summary="`use_reentrant=True` where the non-reentrant variant works",
)
def reentrant_explicit(ctx: Context) -> Iterator[Report]:
    for call in ctx.training.torch_checkpoint_sites:
        value = call.kwarg("use_reentrant")
        if isinstance(value, Const) and value.value is True and not zero3_with_peft(ctx, call.condition):  # CKPT304's workaround
            yield Report(
                call.keyword_spans.get("use_reentrant", call.span),
                f"{_label(call)} with `use_reentrant=True`: the reentrant variant is legacy (no `torch.autograd.grad`, "
                "no keyword arguments, gradients silently None when no input requires grad); prefer `use_reentrant=False`",
                fix=set_keyword(call, "use_reentrant", "False", Applicability.UNSAFE, "Set `use_reentrant=False`", replace=True),
                condition=call.condition,
            )
    for site in ctx.training.hf_sites:  # `gradient_checkpointing_kwargs={"use_reentrant": True}`, also assigned later
        value = site.kwargs.get("use_reentrant") if isinstance(site.kwargs, DictVal) and site.enabled else None
        if isinstance(value, Const) and value.value is True and not zero3_with_peft(ctx, site.condition):
            yield Report(
                site.span,
                f"`{site.kwargs_name}` with `\"use_reentrant\": True` (line {value.origin.line if value.origin else site.span.start.line}): "
                "Hugging Face checkpointing runs the legacy reentrant variant (no `torch.autograd.grad`, no keyword "
                "arguments, gradients silently None when no input requires grad); prefer `False`",
                condition=site.condition,
            )


@rule(
    "CKPT103",
    "reentrant-checkpoint-with-kwargs",
    Severity.ERROR,
    fix=Applicability.UNSAFE,
    summary="reentrant checkpoint given keyword arguments for the wrapped function",
)
def reentrant_with_kwargs(ctx: Context) -> Iterator[Report]:
    for call in ctx.training.torch_checkpoint_sites:
        if call.name == "partial" or ctx.training.torch_mode(call).reentrant is not True:
            continue
        extra = sorted(k for k in call.kwargs if k not in CHECKPOINT_KEYWORDS)
        only_non_reentrant = sorted(k for k in call.kwargs if k in NON_REENTRANT_ONLY)
        if extra:
            error = f"ValueError: Unexpected keyword arguments: {','.join(extra)}"
        elif only_non_reentrant:
            error = "ValueError: Passing `context_fn` or `debug` is only supported when use_reentrant=False."
        else:
            continue
        yield Report(
            call.span,
            f"reentrant {_label(call)} with keyword arguments raises `{error}`; set `use_reentrant=False`",
            fix=set_keyword(call, "use_reentrant", "False", Applicability.UNSAFE, "Set `use_reentrant=False`", replace=True),
        )


@rule(
    "CKPT104",
    "reentrant-checkpoint-with-autograd-grad",
    Severity.ERROR,
    fix=Applicability.DISPLAY_ONLY,
    summary="reentrant checkpoint in a module that uses `torch.autograd.grad` or `.backward(inputs=...)`",
)
def reentrant_with_autograd_grad(ctx: Context) -> Iterator[Report]:
    grads = ctx.facts.calls_to("torch.autograd.grad")
    grads += [c for c in ctx.facts.calls if c.is_backward and "inputs" in c.kwargs]
    # a custom `autograd.Function`'s own backward computes gradients of its own graph, not of the step's
    grads = [g for g in grads if not _in_autograd_function(ctx, g)]
    for call in ctx.training.torch_checkpoint_sites:
        if ctx.training.torch_mode(call).reentrant is not True:
            continue
        found = on_path(call.condition, grads)
        if found is None:
            continue
        grad, condition = found
        yield Report(
            call.span,
            f"reentrant {_label(call)} with `torch.autograd.grad` / `.backward(inputs=...)` at line {grad.line}: the backward "
            "raises `RuntimeError: When use_reentrant=True, torch.utils.checkpoint is incompatible with .grad() or "
            "passing an `inputs` parameter to .backward()`; use `use_reentrant=False`",
            fix=set_keyword(call, "use_reentrant", "False", Applicability.DISPLAY_ONLY, "Use `use_reentrant=False`", replace=True),
            condition=condition,
        )


def _in_autograd_function(ctx: Context, call: Call) -> bool:
    owner = ctx.facts.enclosing_class(call.scope)
    return owner is not None and any(base in AUTOGRAD_FUNCTION for base in owner.bases)


@rule(
    "CKPT105",
    "checkpoint-rng-state-not-preserved",
    Severity.WARNING,
    fix=Applicability.UNSAFE,
    summary="`preserve_rng_state=False` in a model with dropout",
)
def rng_state_not_preserved(ctx: Context) -> Iterator[Report]:
    dropout_line = _dropout_evidence(ctx)
    if dropout_line is None:
        return
    wrappers = ctx.facts.calls_to(CHECKPOINT_WRAPPER)  # passes preserve_rng_state on to checkpoint
    for call in ctx.training.torch_checkpoint_sites + wrappers:
        value = call.kwarg("preserve_rng_state")
        if isinstance(value, Const) and value.value is False:
            yield Report(
                call.keyword_spans.get("preserve_rng_state", call.span),
                f"{_label(call)} with `preserve_rng_state=False` while dropout is active (line {dropout_line}): the "
                "recomputation draws new dropout masks, so the gradients do not match the forward pass",
                fix=set_keyword(call, "preserve_rng_state", "True", Applicability.UNSAFE, "Set `preserve_rng_state=True`", replace=True),
            )


def _dropout_evidence(ctx: Context) -> int | None:
    for call in ctx.facts.calls:
        if call.name in ("Dropout", "Dropout1d", "Dropout2d", "dropout", "AlphaDropout"):
            p = call.kwarg("p")
            if isinstance(p, Missing):
                p = call.args[0] if call.args else Const(0.5 if call.name != "dropout" else 0.5)
            if constant(p, 0.5) != 0:
                return call.line
        for name in DROPOUT_KEYWORDS & set(call.kwargs) - {"p"}:
            value = constant(call.kwargs[name])
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                return call.keyword_spans[name].start.line if name in call.keyword_spans else call.line
    return None


# -- torch.compile and checkpointing ---------------------------------------------------------------
FUNCTORCH_CONFIG = "torch._functorch.config"
DYNAMO_CONFIG = "torch._dynamo.config"
AMB = "activation_memory_budget"


@dataclass
class _BudgetSite:
    span: Span
    line: int
    namespace: str  # the config module it is set on
    value: Value
    condition: Condition
    scope: str  # the function it is set in ("<module>" at the top level)


def _budget_sites(ctx: Context) -> list[_BudgetSite]:
    """`torch._functorch.config.activation_memory_budget = x` (any alias of the module), and
    `torch._functorch.config.patch(activation_memory_budget=x)` / `.patch({"activation_memory_budget": x})`."""
    sites = []
    for assign in ctx.facts.assigns_to(AMB):
        base = assign.base_value
        if isinstance(base, QualName) and base.name in (FUNCTORCH_CONFIG, DYNAMO_CONFIG):
            sites.append(_BudgetSite(assign.span, assign.line, base.name, assign.value, assign.condition, assign.scope))
    for call in ctx.facts.calls_to(f"{FUNCTORCH_CONFIG}.patch", f"{DYNAMO_CONFIG}.patch"):
        value = call.kwarg(AMB)
        if isinstance(value, Missing) and call.args and isinstance(call.args[0], DictVal):
            value = call.args[0].get(AMB)
        if not isinstance(value, Missing):
            sites.append(_BudgetSite(call.span, call.line, call.qualname.rsplit(".", 1)[0], value, call.condition, call.scope))
    return sites


def _without(ctx: Context, condition: Condition, sites: list) -> Condition | None:
    """The path on which `condition` holds and none of `sites` (compiles, checkpoints) happens; None when every
    run on `condition` has one of them, or when that path cannot be told (several conditioned sites)."""
    meeting = [s for s in sites if together(condition, s.condition) is not None]
    if not meeting:
        return condition
    if len(meeting) > 1 or len(meeting[0].condition.literals) != 1:
        return None  # always on this path, or on a combination of tests that cannot be negated simply
    (literal,) = meeting[0].condition.literals
    if literal.option is None and not literal.named:
        return None  # a test in the code (`if torch.cuda.is_available():`): nobody can choose the other branch
    return together(condition, Condition(frozenset({literal.negated()})))


@rule(
    "CKPT106",
    "activation-memory-budget-without-compile",
    Severity.WARNING,
    summary="`activation_memory_budget` set where `torch.compile` never reads it",
)
def activation_memory_budget_without_compile(ctx: Context) -> Iterator[Report]:
    compiles = ctx.training.compile_sites
    for site in _budget_sites(ctx):
        value = constant(site.value)
        if site.namespace == DYNAMO_CONFIG:
            yield Report(
                site.span,
                f"`{AMB}` is not a setting of `torch._dynamo.config`: torch raises \"AttributeError: "
                f"torch._dynamo.config.{AMB} does not exist\"; the budget lives in `torch._functorch.config` "
                "(`torch._functorch.config.activation_memory_budget = ...`) and only compiled regions read it",
                condition=site.condition,
            )
            continue
        if isinstance(site.value, Const) and value == 1.0 and site.value.origin and site.value.origin.option is None:
            continue  # the default: asks for nothing
        if site.scope != "<module>" and not (ctx.facts.runs or ctx.analysis.settings.is_training):
            continue  # in a function of a module that only defines (a library's helper): its callers choose to compile
        path = _without(ctx, site.condition, compiles)
        if path is None:
            continue
        elsewhere = [s.where for s in compiles if together(site.condition, s.condition) is not None]
        nothing = f"nothing is compiled on this path (the compile at {elsewhere[0]} runs only on another)" if elsewhere else \
            "nothing in the script is compiled"
        yield Report(
            site.span,
            f"`torch._functorch.config.{AMB}`{f' = {value!r}' if value is not None else ''} but {nothing}: only the min-cut partitioner of `torch.compile` (AOTAutograd) reads the budget, so eager "
            "training stores every activation as before and saves no memory; compile the model (`torch.compile(model)` "
            "or `TrainingArguments(torch_compile=True)`), or checkpoint it (`gradient_checkpointing_enable()`)",
            condition=path,
        )


_NO_CUDAGRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def _checkpointing_on(ctx: Context) -> list:
    """Where checkpointing runs in the step: torch's `checkpoint` calls, Hugging Face checkpointing that is on,
    and FSDP / torch wrappers that checkpoint layers."""
    from ckpt_doctor.rules.distributed import external_checkpointing_calls

    return [*ctx.training.torch_checkpoint_sites, *(s for s in ctx.training.hf_sites if s.enabled is True),
            *external_checkpointing_calls(ctx), *(c for c in ctx.facts.calls if _unsloth_checkpointing(c))]


def _unsloth_checkpointing(call: Call) -> bool:
    """Unsloth's `FastLanguageModel` / `FastModel` / `FastVisionModel` `.get_peft_model(..., use_gradient_checkpointing=
    "unsloth")` (or True): Unsloth checkpoints the decoder layers itself (offloading the saved inputs to the host)."""
    return bool(call.qualname and call.qualname.startswith("unsloth.") and call.name in ("get_peft_model", "from_pretrained")
                and truth(call.kwarg("use_gradient_checkpointing")) is True)


def _spot_label(spot) -> str:
    if isinstance(spot, Call):
        return f"`{spot.name}` at line {spot.line}"
    from ckpt_doctor.rules.huggingface import _site_label

    return f"{_site_label(spot)} at line {spot.span.start.line}"


@rule(
    "CKPT107",
    "compile-cudagraphs-with-checkpointing",
    Severity.WARNING,
    fix=Applicability.UNSAFE,
    summary="`torch.compile` in a CUDA-graph mode (`reduce-overhead`, `max-autotune`) over checkpointed layers",
)
def compile_cudagraphs_with_checkpointing(ctx: Context) -> Iterator[Report]:
    spots = None
    for site in ctx.training.compiling_sites:
        if site.cudagraphs is not True:
            continue
        if spots is None:
            spots = _checkpointing_on(ctx)
        found = on_path(site.condition, spots)
        if found is None:
            continue
        spot, condition = found
        mode = constant(site.mode)
        asked = f"`{site.mode_keyword}=\"{mode}\"`" if isinstance(mode, str) and site.mode_keyword else "`\"triton.cudagraphs\": True`"
        fix = None
        if isinstance(mode, str) and mode in _NO_CUDAGRAPHS and site.call is not None and site.mode_keyword and (
            site.call.qualname == "torch.compile" or is_training_config(site.call.qualname)
        ):
            fix = set_keyword(site.call, site.mode_keyword, f'"{_NO_CUDAGRAPHS[mode]}"', Applicability.UNSAFE,
                              f'Use `{site.mode_keyword}="{_NO_CUDAGRAPHS[mode]}"` (no CUDA graphs)', replace=True)
        yield Report(
            site.span,
            f"{asked} records CUDA graphs (CUDA graph trees), and checkpointing is on ({_spot_label(spot)}): where a "
            "compiled region runs inside a checkpointed one (a compiled layer, or a graph break in the checkpointed "
            "function) the recomputation in the backward changes which tensors are alive, and torch fails with "
            "\"RuntimeError: TODO: graph recording observed an input tensor deallocate during graph recording that did "
            "not occur during replay\" or \"accessing tensor output of CUDAGraphs that has been overwritten by a "
            f"subsequent run\"; use a mode without CUDA graphs (\"{_NO_CUDAGRAPHS.get(mode, 'max-autotune-no-cudagraphs')}\")",
            fix=fix,
            condition=condition,
        )


# -- selective activation checkpointing ---------------------------------------------------------------
def _packets_label(packets: list[str]) -> str:
    return ", ".join(f"`torch.ops.{p}`" for p in packets)


@rule(
    "CKPT108",
    "sac-op-list-overload-packet",
    Severity.ERROR,
    summary="`create_selective_checkpoint_contexts([...])` given `torch.ops.aten.mm` (a packet) instead of `torch.ops.aten.mm.default`",
)
def sac_op_list_packet(ctx: Context) -> Iterator[Report]:
    for found in op_collections(ctx.facts):
        if found.how != "list" or not found.packets:
            continue
        first = found.packets[0]
        yield Report(
            found.span,
            f"the op list given to `create_selective_checkpoint_contexts` holds {_packets_label(found.packets)}, an "
            "`OpOverloadPacket`, where torch needs an `OpOverload`: torch 2.13.0 raises \"ValueError: Expected op in "
            f"`op_list` to be an OpOverload but got: {first} of type <class 'torch._ops.OpOverloadPacket'>\" on the first "
            f"checkpointed forward; name the overload (`torch.ops.{first}.default`)",
            condition=found.condition,
        )


@rule(
    "CKPT109",
    "sac-policy-compares-overload-packet",
    Severity.WARNING,
    summary="a selective-checkpointing policy compares its `op` with `torch.ops.aten.mm` (a packet): never true, nothing is saved",
)
def sac_policy_packet(ctx: Context) -> Iterator[Report]:
    for found in op_collections(ctx.facts):
        if found.how != "policy" or not found.packets or found.test is None:
            continue
        first = found.packets[0]
        yield Report(
            found.span,
            f"the selective-checkpointing policy `{found.policy}` (given to `create_selective_checkpoint_contexts` at line "
            f"{found.call.line}) tests `{found.test.param} {found.test.operator} ...` against {_packets_label(found.packets)}: torch "
            f"calls the policy with an `OpOverload` (`torch.ops.{first}.default`), which never equals the `OpOverloadPacket` "
            f"`torch.ops.{first}`, so the test is {'never' if found.test.operator in ('in', '==') else 'always'} true: the policy never "
            "picks those ops out, and a list of ops to save saves none of them, with no error or warning; name the overload "
            f"(`torch.ops.{first}.default`) or compare "
            f"`{found.test.param}.overloadpacket`",
            condition=found.condition,
        )


# -- graph breaks in checkpointed functions under torch.compile -----------------------------------
# pytorch/pytorch#135816 shows the eager fallback on torch 2.4; releases before it were not checked [T12]
GRAPH_BREAK_FALLBACK_SINCE = "2.4"


def _compiles_around(ctx: Context, body: CheckpointedBody) -> list:
    """The compile sites that may compile the model around `body`: not `fullgraph=True` (that raises at the break
    instead, a different story), not a bare `@torch.compile` on the checkpointed function itself (a compiled
    function under an eager checkpoint is the way that works)."""
    name = body.function.rsplit(".", 1)[-1]
    sites = []
    for site in ctx.training.compiling_sites:
        if site.call is not None and truth(site.call.kwarg("fullgraph")) is True:
            continue
        if site.kind == "decorator" and _decorates(ctx.facts.lines, site.span.start.line, name):
            continue
        sites.append(site)
    return sites


def _decorates(lines: list[str], line: int, name: str) -> bool:
    for text in lines[line:line + 8]:  # past other decorators to the `def`
        stripped = text.strip()
        if stripped.startswith(("def ", "async def ")):
            return stripped.split("def ", 1)[1].split("(", 1)[0].strip() == name
    return False


@rule(
    "CKPT110",
    "graph-break-in-checkpointed-function",
    Severity.WARNING,
    summary="a graph break (`print`, `.item()`) inside a checkpointed function of a compiled model: that function runs uncompiled",
)
def graph_break_in_checkpointed_function(ctx: Context) -> Iterator[Report]:
    if ctx.versions.at_least("torch", GRAPH_BREAK_FALLBACK_SINCE) is False:
        return
    if not ctx.training.compiling_sites:
        return
    seen: set[int] = set()  # one finding a line (`print(h.norm().item())`; a block both wrapped and checkpointed)
    for body in checkpointed_bodies(ctx.facts, ctx.training.torch_checkpoint_sites):
        found = on_path(body.site.condition, _compiles_around(ctx, body))
        if found is None:
            continue
        compile_site, condition = found
        for brk in body.breaks:
            path = together(condition, brk.call.condition)
            if path is None or brk.call.line in seen:
                continue
            seen.add(brk.call.line)
            inside = f"`{brk.via}`, which `{body.function}` calls" if brk.via else f"`{body.function}`"
            tests = sorted(literal.describe() for literal in brk.call.condition.literals if literal.option is None)
            inside += f" ({', '.join(tests)})" if tests else ""
            checkpointed = "checkpointed" if body.site.qualname in TORCH_CHECKPOINTS else f"wrapped by `{body.site.name}`"
            yield Report(
                brk.call.span,
                f"{brk.what} in {inside}, the function {checkpointed} at line {body.site.line}, breaks the graph of "
                f"{compile_site.what} ({compile_site.where}): Dynamo traces a checkpointed function whole or not at all, so the "
                "checkpoint call falls back to eager (`torch.utils.checkpoint` is `@torch._disable_dynamo`), the function and "
                "everything it calls run uncompiled, and a checkpoint called in a loop makes Dynamo skip the whole calling "
                "forward (\"graph break in loop\"); no error, the compile just buys nothing there. Remove the break from the "
                "checkpointed function, or compile the function itself and checkpoint the compiled one; this rests on the "
                f"compile at {compile_site.where} covering this model, on {ctx.versions.get('torch').describe('torch')}",
                condition=path,
            )


# -- torch.compile of a DDP model that checkpoints ---------------------------------------------------------------------
# torch/_dynamo/backends/distributed.py, DDPOptimizer.compile_fn: raises on a higher-order op (a checkpointed region)
# from 2.1.0 to 2.5.1; 2.6.0 - 2.8.0 fail with "RuntimeError: val" on a checkpointed block with dropout or SDPA; 2.9.0
# works (released sources and CPU reproductions; rules/CKPT111.md, docs/version-facts.md [T14])
DDP_OPTIMIZER_HOP_SINCE = "2.1"
DDP_OPTIMIZER_HOP_RAISE_UNTIL = "2.6"
DDP_OPTIMIZER_WORKS_SINCE = "2.9"
OPTIMIZE_DDP = "optimize_ddp"
_DDP_OPTIMIZER_ON = (True, "ddp_optimizer")  # the values that keep Dynamo's DDP optimizer (torch/_dynamo/config.py)


def _ddp_optimizer_off(ctx: Context) -> bool:
    """`torch._dynamo.config.optimize_ddp = False` (or `"python_reducer"`, `"no_optimization"`), assigned or patched
    anywhere in the script: the workaround the error message names."""
    for assign in ctx.facts.assigns_to(OPTIMIZE_DDP):
        if constant(assign.value) not in _DDP_OPTIMIZER_ON:
            return True
    for call in ctx.facts.calls_to(f"{DYNAMO_CONFIG}.patch"):
        value = call.kwarg(OPTIMIZE_DDP)
        if not isinstance(value, Missing) and constant(value) not in _DDP_OPTIMIZER_ON:
            return True
    return False


def _ddp_wraps(ctx: Context, site) -> list:
    """What makes the compiled model a DDP one on `site`'s path: a `DistributedDataParallel(...)` of the script, or, for a
    compile the Trainer or accelerate does, a launch of several processes that is not FSDP or DeepSpeed (both wrap the
    model in DDP then: transformers `Trainer._wrap_model`, accelerate `Accelerator.prepare_model`)."""
    wraps = ctx.facts.calls_to(DDP)
    if site.kind in ("training config", "accelerate", "launcher") and not wraps and launched_ddp_processes(ctx) is not None:
        return [site]
    return wraps


def _switched_on_checkpointing(ctx: Context) -> list:
    """A model's own checkpointing switch, of a library the analysis does not model (timm's and open_clip's
    `set_grad_checkpointing()`, diffusers' `enable_gradient_checkpointing()`), not turned off by its argument."""
    return [c for c in ctx.facts.calls if c.receiver is not None and is_checkpointing_switch(c.name)
            and truth(c.args[0] if c.args else c.kwarg("enable")) is not False]


@rule(
    "CKPT111",
    "compile-ddp-optimizer-checkpointing",
    Severity.ERROR,
    summary="`torch.compile` of a DDP model that checkpoints, on a torch whose DDP optimizer fails on it",
)
def compile_ddp_optimizer_checkpointing(ctx: Context) -> Iterator[Report]:
    if ctx.versions.at_least("torch", DDP_OPTIMIZER_HOP_SINCE) is not True:
        return
    if ctx.versions.at_least("torch", DDP_OPTIMIZER_WORKS_SINCE) is not False:
        return  # a release that works, or a range that allows one (a fresh install takes the newest)
    if not ctx.training.compiling_sites or _ddp_optimizer_off(ctx):
        return
    spots = [*_checkpointing_on(ctx), *(enable for enable, *_ in ctx.facts.model_checkpoints), *_switched_on_checkpointing(ctx)]
    torch = ctx.versions.get("torch").describe("torch")
    raises = ctx.versions.at_least("torch", DDP_OPTIMIZER_HOP_RAISE_UNTIL)
    error = {
        False: "\"NotImplementedError: DDPOptimizer backend: Found a higher order op in the graph. This is not supported. "
               "Please turn off DDP optimizer using torch._dynamo.config.optimize_ddp=False\"",
        True: "\"RuntimeError: val\" (from AOTAutograd, on a checkpointed block with dropout or scaled_dot_product_attention)",
    }.get(raises, "\"NotImplementedError: DDPOptimizer backend: Found a higher order op in the graph\" (torch 2.1 - 2.5) or "
                  "\"RuntimeError: val\" (2.6 - 2.8)")
    for site in ctx.training.compiling_sites:
        found = on_path(site.condition, _ddp_wraps(ctx, site))
        if found is None:
            continue
        wrap, condition = found
        found = on_path(condition, spots)
        if found is None:
            continue
        spot, condition = found
        ddp = f"`DistributedDataParallel` at line {wrap.line}" if isinstance(wrap, Call) and wrap.qualname == DDP else \
            f"DDP ({int(ctx.analysis.settings.gpus.value)} processes, {ctx.analysis.settings.gpus.describe()})"
        yield Report(
            site.span,
            f"{site.what} ({site.where}) of a model trained with {ddp} whose forward checkpoints ({_spot_label(spot)}): "
            f"on {torch}, Dynamo's DDP optimizer (`torch._dynamo.config.optimize_ddp`, on by default), which splits the graph "
            f"at DDP's gradient buckets, fails on the checkpointed region with {error}; with `suppress_errors` the forward "
            "silently runs uncompiled instead. Set `torch._dynamo.config.optimize_ddp = False` before the first compiled "
            "step (one bucket for the whole graph, less overlap of communication), or use torch 2.9 or later",
            condition=condition,
        )
