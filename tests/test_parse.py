"""parse_module: ast.parse on the host, and a line-preserving fallback for newer syntax (PEP 695, 696,
701, 750, 758, 810; 646 and except* on a 3.10 host). Positions are checked against the text itself
(every `model.gradient_checkpointing_enable(` and `use_reentrant=` of a snippet must come back where
it is written) and, where a Python >= 3.12 is installed, against that interpreter's own tree."""

from __future__ import annotations

import ast
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ckpt_doctor.analysis.parse import _MAX_NESTING, _nesting, _rewrite, _text_only, parse_module

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = sys.version_info[:2]
CALL = "model.gradient_checkpointing_enable("
KEYWORD = "use_reentrant="


def written_at(text: str, needle: str) -> list[tuple[int, int]]:
    """(line, UTF-8 byte column) of every occurrence of `needle`, as `ast` counts them."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        start = line.find(needle)
        while start >= 0:
            found.append((number, len(line[:start].encode())))
            start = line.find(needle, start + 1)
    return found


def calls_in(tree: ast.AST) -> list[tuple[int, int]]:
    return sorted(
        (n.lineno, n.col_offset)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "gradient_checkpointing_enable"
    )


def keywords_in(tree: ast.AST) -> list[tuple[int, int]]:
    return sorted((n.lineno, n.col_offset) for n in ast.walk(tree) if isinstance(n, ast.keyword) and n.arg == "use_reentrant")


def host_rejects(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return True
    return False


# Each snippet is valid in some Python the host may not be; `needs` is the first version that reads it.
SNIPPETS = {
    "type alias": ((3, 12), """
        type Batch = dict[str, torch.Tensor]
        type Pair[K, V] = tuple[K, V]; model.gradient_checkpointing_enable(use_reentrant=False)
        model.gradient_checkpointing_enable()
    """),
    "generic function": ((3, 12), """
        def step[T: torch.nn.Module, *Ts, **P](m: T, *a: P.args) -> T: model.gradient_checkpointing_enable(use_reentrant=True)
        async def run[T](x: T):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False}, use_reentrant=1)
    """),
    "generic class": ((3, 12), """
        class Wrapper[M: torch.nn.Module](Base, metaclass=Meta): x = model.gradient_checkpointing_enable()
        class Plain[T]:
            def forward[X](self, x: X) -> X:
                return model.gradient_checkpointing_enable(use_reentrant=False)
    """),
    "multi-line type parameters": ((3, 12), """
        def f[
            T,  # the item
            U: (int, str),
        ](x: T) -> T: model.gradient_checkpointing_enable(use_reentrant=False)
        model.gradient_checkpointing_enable()
    """),
    "PEP 696 defaults": ((3, 13), """
        def f[T = int](x: T) -> T: return model.gradient_checkpointing_enable(use_reentrant=False)
        class C[T, *Ts = *tuple[int], **P = [int]]: model.gradient_checkpointing_enable()
        type A[T = str] = list[T]; model.gradient_checkpointing_enable(use_reentrant=True)
    """),
    "f-string nested quotes": ((3, 12), """
        name = f"{cfg["model"]}-{cfg["run"]}"; model.gradient_checkpointing_enable(use_reentrant=False)
        é = f"é{d["é"]}"; model.gradient_checkpointing_enable()
    """),
    "f-string backslash": ((3, 12), r"""
        path = f"{"\\".join(parts)}"; model.gradient_checkpointing_enable(use_reentrant=False)
        lines = f"{'\n'.join(rows)}"; model.gradient_checkpointing_enable()
    """),
    "f-string comment and multi-line field": ((3, 12), """
        msg = f"{
            cfg["a"]  # comment
            + 1
        }"; model.gradient_checkpointing_enable(use_reentrant=False)
        other = (f"{a +
            b}", model.gradient_checkpointing_enable())
    """),
    "PEP 758 except without parentheses": ((3, 14), """
        try:
            model.gradient_checkpointing_enable()
        except ValueError, TypeError: model.gradient_checkpointing_enable(use_reentrant=False)
        try:
            pass
        except* OSError, KeyError:
            model.gradient_checkpointing_enable(use_reentrant=True)
    """),
    "PEP 750 t-string": ((3, 14), """
        s = t"{x}"; model.gradient_checkpointing_enable(use_reentrant=False)
        model.gradient_checkpointing_enable()
    """),
    "PEP 810 lazy import": ((3, 15), """
        lazy import torch, os as o
        lazy from transformers import (AutoModel,
            Trainer); model.gradient_checkpointing_enable(use_reentrant=False)
        model.gradient_checkpointing_enable()
    """),
}


@pytest.mark.parametrize("name", SNIPPETS)
def test_newer_syntax_parses_with_calls_and_keywords_where_written(name):
    needs, code = SNIPPETS[name]
    text = textwrap.dedent(code).lstrip("\n")
    assert host_rejects(text) == (HOST < needs)
    tree = parse_module(text)
    assert calls_in(tree) == written_at(text, CALL)
    assert keywords_in(tree) == written_at(text, KEYWORD)


def test_crlf_tabs_and_line_continuations_keep_positions():
    text = "type A = int\r\nif x:\r\n\tdef f[T](a, \\\r\n\t      b): model.gradient_checkpointing_enable(use_reentrant=False)\r\n"
    text += 'y = f"{d["k"]}"; model.gradient_checkpointing_enable()\r\n'
    tree = parse_module(text)
    assert calls_in(tree) == written_at(text, CALL) == [(4, 11), (5, 17)]
    assert keywords_in(tree) == written_at(text, KEYWORD)


def test_only_the_lines_with_newer_syntax_change():
    text = textwrap.dedent(
        """\
        import torch
        type Batch = dict[str, int]
        def f[T](x: T) -> T:
            return x
        y = f"{d["k"]}" + f"{ok}"
        z = f"{readable!r}"
        try:
            pass
        except A, B:
            pass
        """
    )
    new = _rewrite(text)
    assert len(new.splitlines()) == len(text.splitlines())
    changed = [i for i, (a, b) in enumerate(zip(text.splitlines(), new.splitlines()), 1) if a != b]
    assert changed == [2, 3, 5, 9]
    assert new.splitlines()[1] == "Batch      = dict[str, int]"  # `=` and the value keep their columns
    assert new.splitlines()[2] == "def f   (x: T) -> T:"
    assert new.splitlines()[4] == 'y = f"        " + f"{ok}"'  # the readable literal is left alone
    assert new.splitlines()[8] == "except(A, B):"


def test_unreadable_fstring_becomes_a_same_sized_joinedstr_and_readable_ones_keep_their_calls():
    text = 'x = (f"{a +\n  b["c"]}", f"{model.gradient_checkpointing_enable()}", g())\ntype T = int\n'
    tree = parse_module(text)
    placeholder, readable, call = tree.body[0].value.elts
    assert isinstance(placeholder, ast.JoinedStr)
    assert (placeholder.lineno, placeholder.col_offset, placeholder.end_lineno, placeholder.end_col_offset) == (1, 5, 2, 10)
    assert calls_in(readable) == written_at(text, CALL) == [(2, 15)]
    assert (call.lineno, call.col_offset) == written_at(text, "g()")[0] == (2, 56)


def test_plain_file_gives_exactly_ast_parse():
    for path in [REPO_ROOT / "examples" / "train_lora.py", Path(ast.__file__)]:
        text = path.read_text(encoding="utf-8")
        assert ast.dump(parse_module(text, str(path)), include_attributes=True) == ast.dump(
            ast.parse(text, str(path)), include_attributes=True
        )


INVALID = [
    "x = = 1\n",
    "type X = int\nx = = 1\n",  # the host's own error: it points at line 1
    "def f[](x): pass\n",
    "type X[T] =\n",
    'x = f"{}"\n',
    'x = f"{d["k"]!}"\n',
    'x = f"{d["k"]}\\N{no such name}"\n',
    "try:\n    pass\nexcept A, B as e:\n    pass\n",  # 3.14 wants the parentheses with `as`
    "lazy def f(): pass\n",
    "class C[T](:\n    pass\n",
    "print 'x'\n",
    "type X = int\n\x00\n",
    "type X = int\nx = " + "(" * 300 + ")" * 300 + "\n",
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid_everywhere_raises_the_hosts_original_error(text):
    with pytest.raises(SyntaxError) as host:
        ast.parse(text, filename="t.py")
    with pytest.raises(SyntaxError) as ours:
        parse_module(text, "t.py")
    assert type(ours.value) is type(host.value)
    assert (ours.value.lineno, ours.value.offset, ours.value.msg, ours.value.filename) == (
        host.value.lineno, host.value.offset, host.value.msg, host.value.filename
    )


def test_what_ast_raises_besides_syntax_error_passes_through():
    text = "x = " + "-" * 100_000 + "1\n"
    try:
        ast.parse(text)
        expected = None
    except BaseException as exc:  # MemoryError on 3.11 ("too complex"), RecursionError elsewhere
        expected = type(exc)
    if expected is None:
        parse_module(text)
    else:
        with pytest.raises(expected):
            parse_module(text)


def test_deep_nesting_never_reaches_libcst_and_gives_the_original_error():
    # LibCST's native parser segfaults on these (the whole process dies), so run them in a child.
    program = textwrap.dedent(
        """
        import sys
        from ckpt_doctor.analysis.parse import parse_module
        shapes = [
            "x = " + "lambda:" * 5000 + "1",
            "x = " + "-" * 20000 + "1",
            "x = " + "a if b else " * 9000 + "1",
            "x = " + 'f"{' * 3000 + "1" + '}"' * 3000,
            "x = a" + ".a" * 9000,
            "if x:\\n pass\\n" + "elif x:\\n pass\\n" * 20000,
        ]
        for shape in shapes:
            text = "type X = int\\n" + shape + "\\n"
            try:
                compile(text, "t.py", "exec", 0x400)  # ast.PyCF_ONLY_AST without importing ast
            except SyntaxError as exc:
                host = (exc.lineno, exc.msg)
            try:
                parse_module(text, "t.py")
            except SyntaxError as exc:
                assert (exc.lineno, exc.msg) == host, (exc, host)
            else:
                raise AssertionError("parsed")
        print("libcst" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"  # turned away by the bound, before LibCST was even imported


def test_nesting_bound_lets_real_code_through_and_stops_deep_shapes():
    text = (REPO_ROOT / "examples" / "train_lora.py").read_text(encoding="utf-8")
    assert _nesting(text) < 50
    assert _nesting(Path(ast.__file__).read_text(encoding="utf-8")) < 100
    flat = "labels = {" + ", ".join(f'{i}: "class {i}"' for i in range(5000)) + "}\n"
    assert _nesting(flat) < 10
    lambdas = "table = {" + ", ".join(f'"{i}": lambda a, b: a + {i}' for i in range(2000)) + "}\n"
    assert _nesting(lambdas) < 10
    hidden = [
        "x = (" + "lambda a, b: " * 600 + "1)",  # lambda parameters span commas
        "x = [a " + "for a, b in c " * 600 + "]",
        'x = f"{x["a"' + "-" * 600 + '1]}"',  # PEP 701: code after a nested same-quote string
        "x = f\"{x:'}\" + " + "-" * 600 + "1 + ''",  # a quote inside a format spec is text
        "x = (" + '"a" ' * 600 + ")",  # implicit concatenation nests in LibCST
    ]
    for shape in hidden:
        assert _nesting(shape) > _MAX_NESTING, shape[:40]


def test_nesting_scanner_finds_the_outermost_fstrings_and_their_fields():
    text = (
        'a = f"{d["k"]:{w}}" + rb"{x}" + RF\'\'\'{f"{1}"}\n\'\'\' f"\\N{DASH}{{}}" "p" t"{x:\'}" + u"{no}"\n'
        'b = f"a{x!r}b{y:>{w}}c{{}}\\{z}" # f"{not a string}"\n'
    )
    spans = []
    _nesting(text, literals=spans)
    found = [(text[start:end], [text[a:b] for a, b in fields]) for start, end, fields in spans]
    assert found == [
        ('f"{d["k"]:{w}}"', ['{d["k"]:{w}}']),
        ("RF\'\'\'{f\"{1}\"}\n\'\'\'", ['{f"{1}"}']),
        ('f"\\N{DASH}{{}}"', []),  # a named character and doubled braces are text
        ("t\"{x:\'}\"", ["{x:\'}"]),  # a quote inside a format spec is text
        ('f"a{x!r}b{y:>{w}}c{{}}\\{z}"', ["{x!r}", "{y:>{w}}", "{z}"]),
    ]
    start, end, fields = spans[-1]
    relative = [(a - start, b - start) for a, b in fields]
    assert _text_only(text[start:end], relative) == 'f"a{0}b{0}c{{}}\\{0}"'
    assert _text_only('rt"{x}"', [(3, 6)]) == 'rf"{0}"'


@pytest.mark.parametrize(
    ("host", "text", "expected"),
    [
        ((3, 10), "try:\n    f()\nexcept* E as e:\n    pass\n", "try:\n    f()\nexcept  E as e:\n    pass\n"),
        ((3, 10), "def f(*a: *Ts) -> tuple[int, *Ts]: pass\n", "def f(*a:  Ts) -> tuple[int,  Ts]: pass\n"),
        ((3, 11), "def f(*a: *Ts) -> tuple[int, *Ts]: pass\n", None),
        ((3, 12), "def f[T](x): pass\ntype A = int\n", None),
        ((3, 12), "def f[T = int](x): pass\n", "def f         (x): pass\n"),
        ((3, 13), "def f[T = int](x): pass\n", None),
        ((3, 13), "try:\n    pass\nexcept  A, B :\n    pass\n", "try:\n    pass\nexcept (A, B):\n    pass\n"),
        ((3, 14), "try:\n    pass\nexcept A, B:\n    pass\n", None),
        ((3, 14), "lazy import os\n", "import      os\n"),
    ],
)
def test_each_rewrite_only_below_the_version_that_has_the_syntax(host, text, expected):
    assert _rewrite(text, host=host) == expected
    if expected is not None and host == (3, 10):
        ast.parse(expected, feature_version=(3, 10))


def test_fallback_never_raises_anything_but_what_ast_raises():
    base = "\n".join(textwrap.dedent(code).strip("\n") for _, code in SNIPPETS.values()) + "\n"
    pieces = list("()[]{}:;,.'\"\\\n\t =*#") + ["type ", "def f", 'f"{', "'''", "lambda", "except ", "[T]", "é", "\r"]
    rng = random.Random(7)
    for _ in range(40):
        at = rng.randrange(len(base))
        text = base[:at] + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) + base[at + rng.randint(0, 3):]
        try:
            ast.parse(text)
            host = None
        except BaseException as exc:
            host = type(exc)
        try:
            parse_module(text)
        except SyntaxError:
            assert host is not None and issubclass(host, SyntaxError)
        except BaseException as exc:  # only what the host's own ast.parse raises
            assert type(exc) is host, repr(text)


def test_importing_and_the_fast_path_do_not_import_libcst():
    program = (
        "import sys\n"
        "from ckpt_doctor.analysis.parse import parse_module\n"
        "parse_module('import torch\\nx = 1\\n')\n"
        "assert 'libcst' not in sys.modules, 'fast path imported libcst'\n"
        "parse_module('type X = int\\n')\n"
        "assert 'libcst' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def newer_python() -> str | None:
    """A Python >= 3.12 that actually runs (pyenv shims may exist for versions not selected)."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(16, 11, -1)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")), reverse=True)
    for exe in filter(None, candidates):
        try:
            done = subprocess.run([exe, "-c", "import sys; print(sys.version_info >= (3, 12))"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == "True":
            return exe
    return None


POSITIONS = """
import ast, json, sys
tree = ast.parse(sys.stdin.read())
print(json.dumps(sorted(
    [n.lineno, n.col_offset, n.end_lineno, n.end_col_offset, type(n).__name__]
    for n in ast.walk(tree) if isinstance(n, (ast.stmt, ast.Call, ast.keyword))
)))
"""


def test_positions_match_a_real_newer_python():
    exe = newer_python()
    if exe is None:
        pytest.skip("no Python >= 3.12 installed to compare with")
    version = tuple(json.loads(subprocess.run([exe, "-c", "import sys, json; print(json.dumps(sys.version_info[:2]))"], capture_output=True, text=True).stdout))
    text = "\n".join(textwrap.dedent(code).strip("\n") for needs, code in SNIPPETS.values() if needs <= version) + "\n"
    done = subprocess.run([exe, "-c", POSITIONS], input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    theirs = [tuple(x) for x in json.loads(done.stdout)]
    tree = parse_module(text)
    ours = sorted(
        (n.lineno, n.col_offset, n.end_lineno, n.end_col_offset, type(n).__name__)
        for n in ast.walk(tree) if isinstance(n, (ast.stmt, ast.Call, ast.keyword))
    )
    # What may differ: a type alias is an Assign whose target starts where `type` did (same start),
    # and calls inside an f-string the host cannot read are not there at all.
    aliases = {(line, col) for line, col, *_, kind in theirs if kind == "TypeAlias"}
    ours = [(l, c, el, ec, "TypeAlias" if k == "Assign" and (l, c) in aliases else k) for l, c, el, ec, k in ours]
    assert [x for x in ours if x not in theirs] == []
    hidden = [x for x in theirs if x not in ours]
    assert all(kind in ("Call", "keyword") for *_, kind in hidden), hidden
    assert len(hidden) < 10
