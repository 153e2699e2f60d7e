r"""Parse a script written for a newer Python than the one running ckpt-doctor.

`parse_module` is `ast.parse` when the host can parse the text (the fast path: nothing else runs, and
LibCST is not imported). Only when that raises SyntaxError does the fallback run: LibCST's native
parser reads the syntax of every version up to 3.15 whatever the host (it ignores the python_version
of its config), the constructs the host lacks are rewritten into host syntax that keeps the line
numbering, and `ast.parse` runs again on the result:

- PEP 695 (3.12) `type X[T] = v` -> `X         = v` (`=` and `v` keep their columns; `X` moves to
  where `type` was); `def f[T](...)` / `class C[T](...)` -> the `[...]` list becomes blanks (a
  multi-line list becomes backslash continuations), so everything after it keeps its column.
- PEP 696 (3.13) type-parameter defaults: on a 3.12 host the whole list is blanked if any has one.
- PEP 701 (3.12) f-strings and PEP 750 (3.14) t-strings the host cannot read: the whole literal
  becomes an empty-looking f-string of the same width and line count (`f"      "`, or
  `f"\<newline>...   "` over several lines). CALLS AND NAMES INSIDE SUCH A LITERAL ARE NOT SEEN by
  the analysis; the literal stays an `ast.JoinedStr`, so it still reads as "not a constant".
  Literals the host can read are left untouched, calls inside them included.
- PEP 758 (3.14) `except A, B: f()` -> `except(A, B):f()` (`A` and `f` keep their columns; with no
  blank before `(` or after `)` to take, what follows moves one column).
- PEP 810 (3.15) `lazy import m` / `lazy from m import n` -> `import      m` / `from      m import n`
  (a plain import for the analysis; names keep their columns, `import`/`from` move to `lazy`'s).
- On a 3.10 host also 3.11's `except* E` -> `except  E` (a `TryStar` reads as a plain `Try`) and
  PEP 646 `tuple[*Ts]` / `*args: *Ts` -> the `*` becomes a space.

Every other line is the same text, so line numbers (and columns, which `ast` counts in UTF-8 bytes)
of all other statements, calls and keywords are the host's own. Text that is invalid in every
version raises the host's ORIGINAL SyntaxError; the fallback never raises anything else (a LibCST
failure of any kind, RecursionError included, gives the original error), and text nested deeper
than LibCST can take without crashing the process is not given to it (`_nesting`).
Not covered (the original error is raised): syntax newer than LibCST's (1.9 knows up to 3.15's
`lazy` imports), text past the nesting bound, and LibCST's own rare gaps (`return*x`, `{{` inside a
format spec, `rf"\{x}\<newline>"`). Not reported: a bad escape inside a replacement field of an
f-string the host cannot read (`f"{d["\x"]}"`); the field is replaced unchecked.
"""

from __future__ import annotations

import ast
import re
import sys
import warnings
from keyword import iskeyword

__all__ = ["parse_module"]

_HOST = sys.version_info[:2]
_BREAK = re.compile(r"(\r\n|\r|\n)")

# LibCST's native parser recurses on the machine stack, so deep nesting crashes the whole process
# (segfault with an 8 MiB stack: 2,000 nested brackets, 4,000 `lambda:`, 20,000 `elif`), and its memory
# grows with the square of the depth (8,000 unary minus: 3.5 GB, 18 s). The host stopped at its first
# error, so its own limits never saw the rest of the file: `_nesting` bounds the depth before LibCST
# runs. At this limit the worst shapes take LibCST under 150 MB and 1 s; of 20,114 files of the
# standard library and site-packages, 4 go past it (generated polynomial tables, pydoc's topics, a
# stress test), the 99.9th percentile is 260 and the median 12.
_MAX_NESTING = 500
_CODE = re.compile(  # one token of code; a match with no named group (blank, comment) is skipped
    r"[ \t\f]+|\\(?:\r\n|\r|\n)|#[^\r\n]*"
    r"|(?P<nl>\r\n|\r|\n)"
    r"|(?P<str>(?i:rb|br|rf|fr|rt|tr|[rbuft])?(?:'''|" '"""' r"""|'|"))"""
    r"|(?P<name>\w+)|(?P<op>.)",
    re.S,
)
_PLAIN = {  # the rest of a string without replacement fields, from after its opening quote
    q: re.compile(
        r"(?:[^\\]|\\.)*?(?:" + q + r"|\Z)" if len(q) == 3
        else r"(?:[^\\\r\n" + q + r"]|\\(?:\r\n|.))*(?:" + q + r"|(?=[\r\n])|\Z)",
        re.S,
    )
    for q in ("'", '"', "'''", '"""')
}
_LITERAL = re.compile(r"""[^{}\\'"\r\n]+""")  # f-/t-string text up to the next character that matters
_CLOSER = {"(": ")", "[": "]", "{": "}"}


def _nesting(text: str, limit: int = _MAX_NESTING, literals: list | None = None) -> int:
    """An upper bound on how deep LibCST's parser will recurse, tokenizing as Python 3.12+ does
    (PEP 701: code inside f-/t-string replacement fields is scanned like any other code, quotes
    included); stops early once past `limit`. Within a bracket (or replacement field) every operator,
    keyword and string after a string counts one level; a comma ends the elements that cannot nest
    across it and a statement end resets everything, but `lambda` (whose parameters and nested
    bodies span commas) and `for` (`for a, b in x for ...`) count until their bracket closes.
    `elif` chains nest too, so every `elif` of the file counts. Each outermost f-/t-string literal is
    appended to `literals` as (start, end, [(start, end) of each of its replacement fields])."""
    # A code frame: [")" / "]" / "}" / "" (module level) / "field", base depth, tokens since a comma,
    # lambdas before their `:`, lambda bodies, fors]. A string frame: ["str", quote, raw, in a format
    # spec, base depth of its replacement fields].
    frames: list[list] = [["", 0, 0, 0, 0, 0]]
    deepest = elifs = pos = fstrings = start = field = 0
    fields: list[tuple[int, int]] = []
    after_string = False
    while pos < len(text) and deepest <= limit and elifs <= limit:
        top = frames[-1]
        if top[0] != "str":
            match = _CODE.match(text, pos)
            pos, kind, token = match.end(), match.lastgroup, match.group()
            if kind is None:
                continue
            if kind == "nl":
                if top[0] == "":
                    top[2:] = [0, 0, 0, 0]
                continue
            if kind == "op" or kind == "str" and after_string or iskeyword(token):
                top[2] += 1
            after_string = kind == "str"
            depth = top[1] + 1 + sum(top[2:])
            deepest = max(deepest, depth)
            if kind == "str":
                prefix = token.rstrip("\'\"").lower()
                quote = token[len(prefix):]
                if "f" in prefix or "t" in prefix:
                    frames.append(["str", quote, "r" in prefix, False, depth + 1])
                    if not fstrings:
                        start, fields = match.start(), []
                    fstrings += 1
                else:
                    pos = _PLAIN[quote].match(text, pos).end()
            elif token == "lambda":
                top[3] += 1
            elif token == "for":
                top[5] += 1
            elif token == "elif":
                elifs += 1
            elif token in _CLOSER:
                frames.append([_CLOSER[token], depth, 0, 0, 0, 0])
            elif token == "}" and top[0] == "field" or token in ")]}" and top[0] == token:
                frames.pop()
                after_string = False
                if token == "}" and fstrings == 1 and frames[-1][0] == "str" and not frames[-1][3]:
                    fields.append((field, pos))
            elif token == ",":
                top[2] = 0
                if not top[3]:
                    top[4] = 0
            elif token == ";" and top[0] == "":
                top[2:] = [0, 0, 0, 0]
            elif token == ":" and top[0] == "field":  # a format spec: text with replacement fields
                outer = frames[-2]
                frames.append(["str", outer[1], outer[2], True, top[1]])
            elif token == ":" and top[3]:  # a lambda's body starts
                top[3] -= 1
                top[4] += 1
            continue
        _, quote, raw, spec, base = top
        match = _LITERAL.match(text, pos)
        if match:
            pos = match.end()
            continue
        char = text[pos]
        if text.startswith(quote, pos) or char in "\r\n" and len(quote) == 1:  # the string ends
            del frames[-3 if spec else -1 :]
            pos += len(quote) if char not in "\r\n" else 0
            after_string = True
            fstrings -= 1
            if not fstrings and literals is not None:
                literals.append((start, pos, fields))
        elif char == "\\":  # `\{` is a backslash then a replacement field; `\N{...}` a named character
            follow = text[pos + 1 : pos + 2]
            if follow == "N" and not raw and text.startswith("{", pos + 2):
                pos = text.find("}", pos) + 1 or len(text)
            elif text.startswith("\r\n", pos + 1):
                pos += 3
            else:
                pos += 1 if follow in ("{", "}") else 2
        elif char in "{}" and text.startswith(char * 2, pos) and not spec:
            pos += 2
        elif char == "{":
            frames.append(["field", base, 0, 0, 0, 0])
            field = pos if fstrings == 1 and not spec else field
            pos += 1
        elif char == "}" and spec:  # the end of the format spec and of its replacement field
            del frames[-2:]
            pos += 1
            if fstrings == 1 and not frames[-1][3]:
                fields.append((field, pos))
        else:
            pos += 1
    return max(deepest, elifs)


# nodes without children a walker looks for (a name, a constant: most nodes of a script)
LEAVES = frozenset({ast.Name, ast.Constant})
# fields whose nodes never hold anything a walker looks for: `Load`/`Store` contexts and operators
_LEAF_FIELDS = frozenset({"ctx", "op", "ops"})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}


def children(node: ast.AST) -> list[ast.AST]:
    """`ast.iter_child_nodes` without contexts and operators, as a list: the walkers' inner loop, several times
    faster than the generator on real scripts."""
    names = _CHILD_FIELDS.get(type(node))
    if names is None:
        names = _CHILD_FIELDS[type(node)] = tuple(f for f in node._fields if f not in _LEAF_FIELDS)
    found: list[ast.AST] = []
    for name in names:
        value = getattr(node, name, None)
        if isinstance(value, list):
            found += [item for item in value if isinstance(item, ast.AST)]
        elif isinstance(value, ast.AST):
            found.append(value)
    return found


def parse_module(text: str, path: str = "<string>") -> ast.Module:
    """ast.parse on the host; when that fails with SyntaxError, try to rewrite newer-than-host syntax into
    host-parsable text with the SAME line numbering, and parse that. Raises the ORIGINAL SyntaxError (with
    its lineno/offset/msg) when the text is invalid in every supported version."""
    try:
        return ast.parse(text, filename=path)
    except SyntaxError as exc:
        original = exc
    try:
        rewritten = _rewrite(text)
        tree = ast.parse(rewritten, filename=path) if rewritten is not None else None
    except Exception:  # LibCST's ParserSyntaxError, RecursionError on deep nesting, anything else
        tree = None
    if tree is None:
        raise original
    return tree


def _rewrite(text: str, host: tuple[int, int] = _HOST) -> str | None:
    """`text` with the newer-than-`host` constructs rewritten line-preservingly, or None when there is
    nothing to rewrite, it is too deeply nested, a literal is bad in every version, or the line breaks
    did not survive. Raises LibCST's error when LibCST cannot parse it."""
    spans: list = []
    if _nesting(text, literals=spans) > _MAX_NESTING:
        return None
    import libcst  # ~0.4 s to import: only ever on the failure path

    module = libcst.parse_module(text)  # also the check that some Python version takes the text
    rewriter = _statements(libcst, module, host)
    visited = module.visit(rewriter)
    new = visited.code if rewriter.changed else text
    if new is not text and spans:  # the statement rewrites moved the literals: find them again
        spans = []
        _nesting(new, limit=len(new) + 1, literals=spans)
    pieces, done = [], 0
    for start, end, fields in spans:
        literal = new[start:end]
        if _host_error(literal) is None:
            continue
        # Its text outside the replacement fields must still be good (LibCST does not check escapes
        # such as `\N{nonsense}`); the host reads that part as 3.12+ does.
        if _host_error(_text_only(literal, [(a - start, b - start) for a, b in fields])) is not None:
            return None
        pieces += [new[done:start], _placeholder(literal)]
        done = end
    new = "".join(pieces) + new[done:] if pieces else new
    # LibCST does not always reprint a file exactly (it drops the space in `except A, B :`, and once
    # dropped a CRLF backslash continuation); a lost or added line break would shift line numbers.
    if new == text or new.count("\n") != text.count("\n") or new.count("\r") != text.count("\r"):
        return None
    return new


def _host_error(literal: str) -> str | None:
    """The host's complaint about a string literal, None if it reads it."""
    try:
        with warnings.catch_warnings():  # invalid escapes warn; the host's own parse will say so once
            warnings.simplefilter("ignore")
            ast.parse("(" + literal + "\n)", mode="eval")
        return None
    except SyntaxError as exc:
        return str(exc.msg)


def _text_only(literal: str, fields: list[tuple[int, int]]) -> str:
    """An f-/t-string as an f-string whose replacement fields are all `{0}`."""
    prefix = literal[: len(literal) - len(literal.lstrip("rRbBuUfFtT"))]
    pieces, at = [prefix.replace("t", "f").replace("T", "f")], len(prefix)
    for start, end in fields:
        pieces += [literal[at:start], "{0}"]
        at = end
    return "".join(pieces) + literal[at:]


def _placeholder(literal: str) -> str:
    """An f-string with no replacement field, as wide in UTF-8 bytes and with as many lines as `literal`.
    Calls inside the literal are therefore NOT SEEN by the analysis; it still reads as a JoinedStr
    (not a constant), as the original would."""
    parts = _BREAK.split(literal)  # [line, break, line, ...]
    if len(parts) == 1:
        return 'f"' + " " * max(0, len(literal.encode()) - 3) + '"'
    # backslash-newline inside the literal keeps the line count; the last line keeps its width
    return 'f"' + "".join("\\" + b for b in parts[1::2]) + " " * (len(parts[-1].encode()) - 1) + '"'


def _blank(piece: str) -> str:
    """Spaces of the same UTF-8 width per line; line breaks become backslash continuations."""
    parts = _BREAK.split(piece)
    return "".join("\\" + p if i % 2 else " " * len(p.encode()) for i, p in enumerate(parts))


def _statements(cst, module, host: tuple[int, int]):
    """A LibCST transformer for the constructs the host lacks other than f-/t-strings; its `changed`
    says whether it found any."""
    code = module.code_for_node
    space = cst.SimpleWhitespace
    enter = (cst.Module, cst.BaseStatement, cst.BaseSuite, cst.ExceptHandler, cst.ExceptStarHandler, cst.Else,
             cst.Finally, cst.MatchCase)

    def strip_params(node) -> bool:
        params = getattr(node, "type_parameters", None)
        if params is None:
            return False
        return host < (3, 12) or (host < (3, 13) and any(p.default is not None for p in params.params))

    class Rewriter(cst.CSTTransformer):
        changed = False

        # Visiting every node costs more than parsing. Only statements and what holds statements are
        # entered (a node not entered is still left, so the `leave_` methods below see it); all nodes
        # only on a 3.10 host, where PEP 646 stars can be anywhere inside an expression.
        def on_visit(self, node):
            return (host < (3, 11) or isinstance(node, enter)) and super().on_visit(node)

        def _def(self, original, updated):  # `def f[T](...)` -> `def f   (...)`
            if not strip_params(original):
                return updated
            self.changed = True
            gap = original.whitespace_after_name.value + _blank(code(original.type_parameters))
            return updated.with_changes(
                type_parameters=None,
                whitespace_after_name=space(gap + original.whitespace_after_type_parameters.value),
                whitespace_after_type_parameters=space(""),
            )

        leave_FunctionDef = leave_ClassDef = _def

        def leave_TypeAlias(self, original, updated):  # `type X[T] = v` -> `X         = v`
            if host >= (3, 12) and not strip_params(original):
                return updated
            self.changed = True
            head = "type" + original.whitespace_after_type.value + code(original.whitespace_after_name)
            if original.type_parameters is not None:
                head += code(original.type_parameters) + code(original.whitespace_after_type_parameters)
            target = cst.AssignTarget(
                target=updated.name, whitespace_before_equal=space(_blank(head)),
                whitespace_after_equal=updated.whitespace_after_equals,
            )
            return cst.Assign(targets=[target], value=updated.value, semicolon=updated.semicolon)

        def _handler(self, original, updated):  # PEP 758 `except A, B:` -> `except(A, B):`
            kind = updated.type
            if host >= (3, 14) or not isinstance(kind, cst.Tuple) or kind.lpar:
                return updated
            self.changed = True
            star = isinstance(updated, cst.ExceptStarHandler)
            before = "whitespace_after_star" if star else "whitespace_after_except"
            # `(` takes the place of a blank before the tuple and `)` of one after it (before the `:`,
            # or before a body on the same line), so what follows keeps its column where there is one.
            changes = {"type": kind.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])}
            gap = getattr(updated, before).value
            if gap.endswith((" ", "\t")):
                changes[before] = space(gap[:-1])
            colon, body = updated.whitespace_before_colon.value, updated.body
            if colon.endswith((" ", "\t")):
                changes["whitespace_before_colon"] = space(colon[:-1])
            elif isinstance(body, cst.SimpleStatementSuite) and body.leading_whitespace.value.endswith((" ", "\t")):
                changes["body"] = body.with_changes(leading_whitespace=space(body.leading_whitespace.value[:-1]))
            return updated.with_changes(**changes)

        leave_ExceptHandler = leave_ExceptStarHandler = _handler

        def _lazy(self, original, updated):  # PEP 810 `lazy import m` -> `import      m`
            if host >= (3, 15):
                return updated
            self.changed = True
            pad = _blank("lazy" + updated.whitespace_after_lazy.value)  # the names keep their columns
            if type(updated).__name__ == "LazyImport":
                after = space(pad + updated.whitespace_after_import.value)
                return cst.Import(names=updated.names, semicolon=updated.semicolon, whitespace_after_import=after)
            return cst.ImportFrom(
                module=updated.module, names=updated.names, relative=updated.relative, lpar=updated.lpar,
                rpar=updated.rpar, semicolon=updated.semicolon,
                whitespace_after_from=space(pad + updated.whitespace_after_from.value),
                whitespace_before_import=updated.whitespace_before_import,
                whitespace_after_import=updated.whitespace_after_import,
            )

        leave_LazyImport = leave_LazyImportFrom = _lazy

        # -- 3.11 syntax, rewritten only on a 3.10 host --------------------------------------------
        def leave_TryStar(self, original, updated):  # `except* E` -> `except  E`
            if host >= (3, 11):
                return updated
            self.changed = True
            handlers = [
                cst.ExceptHandler(
                    body=h.body, type=h.type, name=h.name, leading_lines=h.leading_lines,
                    whitespace_after_except=space(h.whitespace_after_except.value + " " + h.whitespace_after_star.value),
                    whitespace_before_colon=h.whitespace_before_colon,
                )
                for h in updated.handlers
            ]
            return cst.Try(
                body=updated.body, handlers=handlers, orelse=updated.orelse, finalbody=updated.finalbody,
                leading_lines=updated.leading_lines, whitespace_before_colon=updated.whitespace_before_colon,
            )

        def leave_Index(self, original, updated):  # PEP 646 `tuple[*Ts]` -> `tuple[ Ts]`
            if host >= (3, 11) or updated.star is None:
                return updated
            self.changed = True
            after = updated.whitespace_after_star
            if after is None or isinstance(after, cst.SimpleWhitespace):
                after = space(" " + (after.value if after is not None else ""))
            return updated.with_changes(star=None, whitespace_after_star=after)

        def leave_Annotation(self, original, updated):  # PEP 646 `*args: *Ts` -> `*args:  Ts`
            starred = updated.annotation
            if host >= (3, 11) or not isinstance(starred, cst.StarredElement):
                return updated
            self.changed = True
            after = updated.whitespace_after_indicator  # the `*` becomes a space unless that is multi-line
            if isinstance(after, cst.SimpleWhitespace):
                after = space(after.value + " " + code(starred.whitespace_before_value))
            return updated.with_changes(annotation=starred.value, whitespace_after_indicator=after)

    return Rewriter()
