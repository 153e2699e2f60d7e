"""Selective activation checkpointing (SAC): the op lists and policy functions a script gives
`torch.utils.checkpoint.create_selective_checkpoint_contexts`, and the ops each one names.

torch calls a policy as `policy_fn(ctx, op, *args, **kwargs)` with `op` an `OpOverload`
(`torch.ops.aten.mm.default`), never an `OpOverloadPacket` (`torch.ops.aten.mm`); a list given instead
of a policy must hold overloads too (torch 2.13.0, `torch/utils/checkpoint.py`,
`_CachingTorchDispatchMode.__torch_dispatch__`, `create_selective_checkpoint_contexts`) [T11].
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from ckpt_doctor.analysis.conditions import Condition, together
from ckpt_doctor.analysis.facts import Call, ParamTest, ScriptFacts
from ckpt_doctor.analysis.library import CHECKPOINT, CHECKPOINT_WRAPPER, CREATE_SAC, FULLY_SHARD, PARTIAL
from ckpt_doctor.analysis.values import Const, Instance, Missing, PartialVal, QualName, TupleVal, Value
from ckpt_doctor.findings import Span

POLICY_OP_INDEX = 1  # policy_fn(ctx, op, *args, **kwargs)
# namespaces of `torch.ops` whose attributes are operators themselves, not packets of overloads
_OPERATOR_NAMESPACES = {"higher_order"}


@dataclass
class OpCollection:
    """Ops a selective-checkpointing policy matches against: a list given to torch directly, or what a policy
    function compares its `op` with."""

    how: str  # "list" (passed to `create_selective_checkpoint_contexts`) | "policy" (compared in the policy)
    items: list[Value]
    span: Span  # the call (list) or the comparison (policy)
    line: int
    condition: Condition
    call: Call  # the `create_selective_checkpoint_contexts(...)` or `functools.partial(...)` call
    test: ParamTest | None = None
    policy: str | None = None  # the policy function's name

    @property
    def packets(self) -> list[str]:
        """The `torch.ops.<namespace>.<op>` packets among the items, as written (`aten.mm`)."""
        return [name for name in (packet_name(v) for v in self.items) if name]


def packet_name(value: Value) -> str | None:
    """`aten.mm` for `torch.ops.aten.mm` (an `OpOverloadPacket`); None for an overload (`torch.ops.aten.mm.default`)
    or anything else."""
    if not isinstance(value, QualName) or value.alternatives:
        return None
    parts = value.name.split(".")
    if len(parts) == 4 and parts[:2] == ["torch", "ops"] and parts[2] not in _OPERATOR_NAMESPACES:
        return f"{parts[2]}.{parts[3]}"
    return None


def sac_calls(facts: ScriptFacts) -> list[tuple[Call, Value]]:
    """Each `create_selective_checkpoint_contexts(x)` / `functools.partial(create_selective_checkpoint_contexts, x)`,
    with `x`."""
    found = []
    for call in facts.calls:
        if call.qualname == CREATE_SAC and call.via_partial is None and call.args:
            found.append((call, call.args[0]))
        elif call.qualname == PARTIAL and len(call.args) > 1 and isinstance(call.args[0], QualName) and call.args[0].name == CREATE_SAC:
            found.append((call, call.args[1]))
    return found


def _policy_scopes(facts: ScriptFacts, value: Value) -> list[str]:
    """The scopes (dotted function names) of the script's own function that `value` names: `policy_fn`,
    `functools.partial(policy_fn, ...)`, or the local function a factory returns (`make_policy(meta)`)."""
    if isinstance(value, PartialVal):
        value = value.func
    tested = {t.scope for t in facts.param_tests}
    if isinstance(value, QualName) and value.name.startswith("<local>."):
        name = value.name.split(".", 1)[1]
        return sorted(s for s in tested if s.rsplit(".", 1)[-1] == name)
    if isinstance(value, Instance) and value.qualname.startswith("<local>."):
        factory = value.qualname.split(".", 1)[1]
        scopes = set()
        for scope, returned in facts.returns.items():
            if scope.rsplit(".", 1)[-1] != factory:
                continue
            for r in returned:
                if isinstance(r, QualName) and r.name.startswith("<local>.") and f"{scope}.{r.name[8:]}" in tested:
                    scopes.add(f"{scope}.{r.name[8:]}")
        return sorted(scopes)
    return []


def op_collections(facts: ScriptFacts) -> list[OpCollection]:
    """The op collections of every selective-checkpointing policy the script builds."""
    out = []
    for call, given in sac_calls(facts):
        if isinstance(given, TupleVal):
            out.append(OpCollection("list", given.items, call.span, call.line, call.condition, call))
            continue
        for scope in _policy_scopes(facts, given):
            for test in facts.param_tests:
                if test.scope != scope or test.index != POLICY_OP_INDEX:
                    continue
                items = test.value.items if isinstance(test.value, TupleVal) and test.operator in ("in", "not in") else [test.value]
                out.append(OpCollection("policy", items, test.span, test.line, test.condition, call, test, scope.rsplit(".", 1)[-1]))
    return out


@dataclass
class UnitInRegion:
    """An FSDP2 unit (`fully_shard(x)`) that lies inside a selective-checkpointing region wrapped after it: the
    region is `x` itself or holds it (`fully_shard(model.layers[0])`, then `checkpoint_wrapper(model, context_fn=...)`)."""

    region: Call  # `checkpoint_wrapper(model, context_fn=...)` / `checkpoint(model, ..., context_fn=...)`
    shard: Call  # the earlier `fully_shard(...)`
    condition: Condition


def fsdp_units_in_sac_regions(facts: ScriptFacts) -> list[UnitInRegion]:
    """Selective-checkpointing wrappers applied, in the same function and on a path that meets it, to a module
    that `fully_shard` already sharded or holds a module it sharded. Not reported where the script keeps FSDP's
    internals out of SAC's cache itself (it names `SAC_IGNORED_OPS`)."""
    if "SAC_IGNORED_OPS" in "\n".join(facts.lines):
        return []
    shards = [(c, text) for c in facts.calls if c.qualname in FULLY_SHARD and (text := first_argument(c))]
    found = []
    for region in facts.calls:
        target = first_argument(region) if region.qualname in (CHECKPOINT_WRAPPER, CHECKPOINT) else None
        context = region.kwarg("context_fn")
        if target is None or isinstance(context, Missing) or (isinstance(context, Const) and context.value is None):
            continue
        for shard, unit in shards:
            inside = unit == target or unit.startswith((f"{target}.", f"{target}["))
            both = together(region.condition, shard.condition)
            if inside and shard.scope == region.scope and shard.line < region.line and both is not None:
                found.append(UnitInRegion(region, shard, both))
                break
    return found


def first_argument(call: Call) -> str | None:
    """The first argument of `call` as written (`model`, `model.layers[0]`), None when there is none."""
    if call.arg_names and call.arg_names[0]:
        return call.arg_names[0]
    return ast.unparse(call.node.args[0]) if call.node is not None and call.node.args else None
