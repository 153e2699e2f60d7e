"""Fix transforms: each keeps formatting and comments, and the result parses."""

from __future__ import annotations

import ast
import textwrap

import pytest

from ckpt_doctor.analysis.facts import extract
from ckpt_doctor.findings import FixSpec, InsertStatement, RenameAttribute, SetDictKey, SetKeywords
from ckpt_doctor.check.fix import FixError, apply_fixes, edits_for, write_atomically

CHECKPOINT = "torch.utils.checkpoint.checkpoint"
HEADER = "from torch.utils.checkpoint import checkpoint\n"


def keyword_fix(code: str, name="use_reentrant", value="False", replace=False) -> str:
    code = HEADER + textwrap.dedent(code)
    specs = [FixSpec(SetKeywords(((name, value),), replace), c.span) for c in extract(code).calls_to(CHECKPOINT)]
    out = apply_fixes(code, specs)
    ast.parse(out)
    return out[len(HEADER):]


@pytest.mark.parametrize(
    "before, after",
    [
        ("checkpoint(f, x)\n", "checkpoint(f, x, use_reentrant=False)\n"),
        ("checkpoint(f, x)  # keep\n", "checkpoint(f, x, use_reentrant=False)  # keep\n"),
        ("checkpoint(f, *xs, **kw)\n", "checkpoint(f, *xs, **kw, use_reentrant=False)\n"),
        ("checkpoint(\n    f,\n    x,\n)\n", "checkpoint(\n    f,\n    x,\n    use_reentrant=False,\n)\n"),
        ("checkpoint(\n    f,  # the block\n    x,  # its input\n)\n", "checkpoint(\n    f,  # the block\n    x,  # its input\n    use_reentrant=False,\n)\n"),
        ("checkpoint(\n    f,  # a\n    x  # b\n)\n", "checkpoint(\n    f,  # a\n    x,  # b\n    use_reentrant=False\n)\n"),
        ("y = [checkpoint(f, x) for f in fs]\n", "y = [checkpoint(f, x, use_reentrant=False) for f in fs]\n"),
        ("checkpoint(f, x, use_reentrant=True)\n", "checkpoint(f, x, use_reentrant=True)\n"),
    ],
)
def test_set_keyword(before, after):
    assert keyword_fix(before) == after


def test_set_keyword_replace_overwrites_only_the_value():
    assert keyword_fix("checkpoint(f, x, use_reentrant=True)  # why\n", replace=True) == "checkpoint(f, x, use_reentrant=False)  # why\n"


def test_nested_calls_each_get_their_keyword():
    assert keyword_fix("checkpoint(g, checkpoint(f, x))\n") == "checkpoint(g, checkpoint(f, x, use_reentrant=False), use_reentrant=False)\n"


def test_set_dict_key_keeps_quote_style():
    code = "model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'preserve_rng_state': True})\n"
    (call,) = extract(code).calls
    spec = FixSpec(SetDictKey("use_reentrant", "False"), call.kwargs["gradient_checkpointing_kwargs"].span)
    assert apply_fixes(code, [spec]) == (
        "model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'preserve_rng_state': True, 'use_reentrant': False})\n"
    )


def test_set_dict_key_in_a_multiline_dict_keeps_comments_on_their_lines():
    code = "d = {\n    'a': 1,  # c\n}\nmodel.gradient_checkpointing_enable(gradient_checkpointing_kwargs=d)\n"
    (call,) = extract(code).method_calls("gradient_checkpointing_enable")
    spec = FixSpec(SetDictKey("use_reentrant", "False"), call.kwargs["gradient_checkpointing_kwargs"].span)
    assert apply_fixes(code, [spec]).startswith("d = {\n    'a': 1,  # c\n    'use_reentrant': False,\n}\n")


def test_insert_after_in_nested_block_keeps_indentation_and_comments():
    code = textwrap.dedent(
        """\
        def main():
            if True:
                # enable it
                model.gradient_checkpointing_enable()  # here
                train(model)
        """
    )
    (call,) = extract(code).method_calls("gradient_checkpointing_enable")
    out = apply_fixes(code, [FixSpec(InsertStatement("model.config.use_cache = False"), call.statement)])
    assert out == textwrap.dedent(
        """\
        def main():
            if True:
                # enable it
                model.gradient_checkpointing_enable()  # here
                model.config.use_cache = False
                train(model)
        """
    )


def test_crlf_and_tabs_survive():
    code = HEADER.replace("\n", "\r\n") + "def f(x):\r\n\treturn checkpoint(g, x)\r\n"
    specs = [FixSpec(SetKeywords((("use_reentrant", "False"),), replace=False), c.span) for c in extract(code).calls_to(CHECKPOINT)]
    out = apply_fixes(code, specs)
    assert out.endswith("def f(x):\r\n\treturn checkpoint(g, x, use_reentrant=False)\r\n")
    assert "\n" not in out.replace("\r\n", "")


def test_rename_attribute_only_touches_the_target():
    code = "args.gradient_checkpointing = args.gradient_checkpointing or True\n"
    (assign,) = extract(code).assigns_to("gradient_checkpointing")
    spec = FixSpec(RenameAttribute("gradient_checkpointing", "activation_checkpointing"), assign.span)
    assert apply_fixes(code, [spec]) == "args.activation_checkpointing = args.gradient_checkpointing or True\n"


def test_fix_that_would_not_parse_is_refused():
    code = HEADER + "checkpoint(f, x)\n"
    (call,) = extract(code).calls_to(CHECKPOINT)
    with pytest.raises(FixError):
        apply_fixes(code, [FixSpec(SetKeywords((("use_reentrant", "False )("),), replace=False), call.span)])


def test_edits_reproduce_the_fix():
    code = HEADER + "checkpoint(\n    f,\n    x,\n)\n"
    (call,) = extract(code).calls_to(CHECKPOINT)
    spec = FixSpec(SetKeywords((("use_reentrant", "False"),), replace=False), call.span)
    (((content, start, end),),) = edits_for(code, [spec])
    lines = code.splitlines(keepends=True)
    offset = lambda p: sum(len(line) for line in lines[: p.line - 1]) + p.column - 1  # noqa: E731
    assert code[: offset(start)] + content + code[offset(end):] == apply_fixes(code, [spec])


def test_write_atomically_refuses_a_file_changed_since_read(tmp_path):
    path = tmp_path / "train.py"
    path.write_bytes(b"old\n")
    with pytest.raises(FixError):
        write_atomically(path, b"new\n", expected=b"something else\n")
    assert path.read_bytes() == b"old\n"
    write_atomically(path, b"new\n", expected=b"old\n")
    assert path.read_bytes() == b"new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["train.py"]  # no temporary left behind


def test_a_file_libcst_cannot_reproduce_is_not_fixed():
    """Found by hypothesmith: LibCST drops a `\\` continuation line ending in CRLF in an LF file."""
    text = HEADER + "pass;\n\\\r\ny = checkpoint(model, 1)\n"
    specs = [FixSpec(SetKeywords((("use_reentrant", "False"),), replace=False), c.span)
             for c in extract(text).calls_to(CHECKPOINT)]
    assert specs
    with pytest.raises(FixError, match="byte for byte"):
        apply_fixes(text, specs)
