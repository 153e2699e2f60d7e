"""CKPT108 / CKPT109 (selective activation checkpointing given operator packets), beyond their page examples:
the forms a policy takes, the look-alikes that are right, branches, and the project's own same-named function."""

from __future__ import annotations

import textwrap

from ckpt_doctor.analysis.facts import extract
from ckpt_doctor.analysis.selective import op_collections, packet_name
from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.analysis.values import QualName
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.config import Settings

NEWEST = {"torch": "2.13", "transformers": "5.24", "peft": "0.21", "trl": "1.16"}
HEAD = """
import functools
import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
aten = torch.ops.aten
"""


def run(code: str, select: str, targets: dict | None = None):
    text = textwrap.dedent(HEAD) + textwrap.dedent(code)
    settings = Settings(target_versions=NEWEST if targets is None else targets, select=[select])
    return [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == select]


def lines(code: str, select: str, **kwargs) -> list[int]:
    offset = len(textwrap.dedent(HEAD).splitlines())
    return [f.span.start.line - offset for f in run(code, select, **kwargs)]


def test_packet_names():
    assert packet_name(QualName("torch.ops.aten.mm")) == "aten.mm"
    assert packet_name(QualName("torch.ops._c10d_functional.reduce_scatter_tensor")) == "_c10d_functional.reduce_scatter_tensor"
    assert packet_name(QualName("torch.ops.aten.mm.default")) is None
    assert packet_name(QualName("torch.ops.higher_order.flex_attention")) is None  # an operator, not a packet
    assert packet_name(QualName("torch.ops.aten")) is None


# -- CKPT108: a list given to torch ----------------------------------------------------------------

def test_list_forms_are_reported():
    code = """
    a = create_selective_checkpoint_contexts([aten.mm.default, torch.ops.aten.bmm])
    OPS = [aten.mm, aten.addmm]
    b = functools.partial(create_selective_checkpoint_contexts, OPS)
    c = lambda: create_selective_checkpoint_contexts(list((aten.mm,)))
    """
    assert lines(code, "CKPT108") == [2, 4, 5]
    (finding,) = run("create_selective_checkpoint_contexts([aten.bmm])", "CKPT108")
    assert "ValueError: Expected op in `op_list` to be an OpOverload but got: aten.bmm" in finding.message


def test_list_of_overloads_and_higher_order_ops_is_clean():
    code = """
    a = create_selective_checkpoint_contexts([aten.mm.default, torch.ops.higher_order.flex_attention])
    b = create_selective_checkpoint_contexts(OPS_FROM_ELSEWHERE)
    c = create_selective_checkpoint_contexts([getattr(aten, name).default for name in ("mm", "bmm")])
    """
    assert lines(code, "CKPT108") == []


def test_list_on_one_branch_keeps_its_condition():
    code = """
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--sac", action="store_true")
    args = p.parse_args()
    if args.sac:
        ctx = create_selective_checkpoint_contexts([aten.mm])
    else:
        ctx = create_selective_checkpoint_contexts([aten.mm.default])
    """
    (finding,) = run(code, "CKPT108")
    assert "with `--sac`" in finding.message


def test_project_function_of_the_same_name_is_not_torch():
    code = """
    def create_selective_checkpoint_contexts(ops):
        return ops
    x = create_selective_checkpoint_contexts([aten.mm])
    """
    assert lines(code, "CKPT108") == []


# -- CKPT109: a policy function ----------------------------------------------------------------------

def test_policy_forms_are_reported():
    code = """
    SAVE = {aten.mm, aten.bmm.default}

    def policy_fn(ctx, op, *args, **kwargs):
        if op in SAVE:
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    def make_policy(meta):
        def _custom_policy(ctx, func, *args, **kwargs):
            keep = func == torch.ops.aten.addmm
            return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE
        return _custom_policy

    def local_list_policy(ctx, op, *args, **kwargs):
        ops = frozenset([torch.ops.aten.mm, torch.ops.aten.bmm])
        return CheckpointPolicy.PREFER_RECOMPUTE if op not in ops else CheckpointPolicy.MUST_SAVE

    a = functools.partial(create_selective_checkpoint_contexts, policy_fn)
    b = lambda: create_selective_checkpoint_contexts(make_policy({}))
    c = functools.partial(create_selective_checkpoint_contexts, local_list_policy)
    """
    assert lines(code, "CKPT109") == [5, 11, 17]
    messages = [f.message for f in run(code, "CKPT109")]
    assert "`torch.ops.aten.mm`" in messages[0] and "bmm" not in messages[0]
    assert "always true" in messages[2]


def test_right_policies_are_clean():
    code = """
    SAVE = {aten.mm.default, torch.ops.aten._scaled_dot_product_flash_attention.default}
    PACKETS = {aten.mm, aten.bmm}

    def by_overload(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in SAVE else CheckpointPolicy.PREFER_RECOMPUTE

    def by_packet(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op.overloadpacket in PACKETS else CheckpointPolicy.PREFER_RECOMPUTE

    def by_name(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if str(op) in ("aten.mm.default",) else CheckpointPolicy.PREFER_RECOMPUTE

    a = create_selective_checkpoint_contexts(by_overload)
    b = create_selective_checkpoint_contexts(by_packet)
    c = functools.partial(create_selective_checkpoint_contexts, by_name)
    """
    assert lines(code, "CKPT109") == []


def test_function_never_given_to_torch_is_not_a_policy():
    code = """
    def is_matmul(ctx, op):  # a dispatch-mode helper, not a checkpointing policy
        return op in {aten.mm, aten.bmm}

    def policy_fn(ctx, op, *args, **kwargs):
        return CheckpointPolicy.PREFER_RECOMPUTE
    c = create_selective_checkpoint_contexts(policy_fn)
    """
    assert lines(code, "CKPT109") == []


def test_only_the_op_parameter_counts():
    code = """
    def policy_fn(ctx, op, *args, **kwargs):
        if ctx in {aten.mm}:  # not the op
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE
    c = create_selective_checkpoint_contexts(policy_fn)
    """
    assert lines(code, "CKPT109") == []


def test_unknown_collection_is_not_judged():
    code = """
    from mylib import SAVE

    def policy_fn(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in SAVE else CheckpointPolicy.PREFER_RECOMPUTE
    c = create_selective_checkpoint_contexts(policy_fn)
    """
    assert lines(code, "CKPT109") == []


def test_rules_do_not_depend_on_the_torch_release():
    code = "c = create_selective_checkpoint_contexts([aten.mm])"
    assert lines(code, "CKPT108", targets={**NEWEST, "torch": "2.5"}) == [1]


def test_facts_record_parameter_tests_with_their_position():
    facts = extract(textwrap.dedent("""
        import torch
        def f(a, b, *rest):
            return b in {torch.ops.aten.mm} and a == 1
        """))
    tests = sorted((t.param, t.index, t.operator) for t in facts.param_tests)
    assert tests == [("a", 0, "=="), ("b", 1, "in")]
    assert op_collections(facts) == []  # nothing is given to torch


# -- verify: the run-time error maps back to the rule ----------------------------------------------------

def test_runtime_error_maps_to_ckpt108():
    from ckpt_doctor.verify import codes

    message = ("Expected op in `op_list` to be an OpOverload but got: aten.mm of type <class 'torch._ops.OpOverloadPacket'>. "
               "Please update the OpOverloadPacket to a specific OpOverload.")
    assert codes.code_for(message, "user")[0] == "CKPT108"


def test_runtime_error_of_installed_torch_maps_to_ckpt108():
    import pytest

    torch = pytest.importorskip("torch")
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    from ckpt_doctor.verify import codes

    with pytest.raises(ValueError) as raised:
        create_selective_checkpoint_contexts([torch.ops.aten.mm])
    assert codes.code_for(str(raised.value), "torch")[0] == "CKPT108"


# -- CKPT306 ---------------------------------------------------------------------------------------

SAC_HEADER = """
from functools import partial
import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import fully_shard
from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts
context = partial(create_selective_checkpoint_contexts, [torch.ops.aten.mm.default])
"""


def _ckpt306(body: str) -> list[int]:
    from ckpt_doctor.check.lint import lint_text
    from ckpt_doctor.analysis.source import SourceFile
    from ckpt_doctor.config import Settings

    text = SAC_HEADER + textwrap.dedent(body)
    found = lint_text(SourceFile("t.py", text, text.encode()), Settings(select=["CKPT306"], target_versions={"torch": "2.13"}))
    return [f.span.start.line - SAC_HEADER.count("\n") for f in found if f.code == "CKPT306"]


def test_sac_over_a_sharded_module_or_one_holding_sharded_blocks_is_reported():
    assert _ckpt306("""
        def parallelize(model):
            model = fully_shard(model)
            return checkpoint_wrapper(model, context_fn=context)
        """) == [4]
    assert _ckpt306("""
        def parallelize(model):
            fully_shard(model.layers[0])
            return checkpoint_wrapper(model, context_fn=context)
        """) == [4]
    assert _ckpt306("""
        def forward(model, x):
            fully_shard(model.encoder)
            return checkpoint(model, x, use_reentrant=False, context_fn=context)
        """) == [4]


def test_sac_before_fully_shard_plain_checkpointing_or_ignored_fsdp_ops_are_clean():
    assert _ckpt306("""
        def parallelize(model):
            block = checkpoint_wrapper(model.block, context_fn=context)
            return fully_shard(block)
        """) == []  # torchtitan's order: the unit is the wrapper, its gather runs outside the region
    assert _ckpt306("""
        def parallelize(model):
            model = fully_shard(model)
            return checkpoint_wrapper(model)
        """) == []  # plain checkpointing: no SAC cache
    assert _ckpt306("""
        from torch.utils.checkpoint import SAC_IGNORED_OPS
        SAC_IGNORED_OPS.update({torch.ops.aten._foreach_copy_.default})
        def parallelize(model):
            model = fully_shard(model)
            return checkpoint_wrapper(model, context_fn=context)
        """) == []
    assert _ckpt306("""
        def parallelize(model, other):
            fully_shard(other)
            return checkpoint_wrapper(model, context_fn=context)
        """) == []  # another module


def test_sac_and_fully_shard_in_exclusive_branches_never_meet():
    assert _ckpt306("""
        import argparse
        p = argparse.ArgumentParser(); p.add_argument("--fsdp", action="store_true"); args = p.parse_args()
        def parallelize(model):
            if args.fsdp:
                model = fully_shard(model)
            else:
                model = checkpoint_wrapper(model, context_fn=context)
            return model
        """) == []


def test_verify_maps_sacs_replay_mismatch_to_ckpt306():
    from ckpt_doctor.verify.codes import code_for

    message = ("aten.split.Tensor encountered during backward but not found in storage. This can happen if the operations "
               "in the checkpointed region are nondeterministic or depend on global state that changed between forward and backward.")
    assert code_for(message, "torch")[0] == "CKPT306"
