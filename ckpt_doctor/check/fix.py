"""Applying fixes: LibCST transforms located by the positions the facts pass recorded.

LibCST is imported here only, so `check` without `--fix`/`--diff`/fix edits never pays for it.
Every transform keeps the comments and formatting around what it touches; the result is parsed
again before anyone sees it, and a fix that would not parse is dropped.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Iterable

from ckpt_doctor.analysis.parse import parse_module
from ckpt_doctor.findings import (
    Applicability,
    FixSpec,
    InsertStatement,
    Position,
    RenameAttribute,
    RenameKeywords,
    RenameMethod,
    ReplaceText,
    SetDictKey,
    SetKeywords,
)



class FixError(Exception):
    pass


def applicable(spec: FixSpec | None, unsafe: bool) -> bool:
    if spec is None:
        return False
    if spec.applicability is Applicability.SAFE:
        return True
    return unsafe and spec.applicability is Applicability.UNSAFE


def apply_fixes(text: str, specs: Iterable[FixSpec]) -> str:
    """`text` with every spec applied (those that overlap the same node are applied once each)."""
    specs = list(specs)
    if not specs:
        return text
    texts = [s for s in specs if isinstance(s.edit, ReplaceText)]
    nodes = [s for s in specs if not isinstance(s.edit, ReplaceText)]
    if texts:
        # in a script these are comment edits (CKPT001): the lines stay where they were, so the spans of the
        # other fixes still hold after them
        text = _replace(text, texts)
    return _Parsed(text).apply(nodes) if nodes else text


def _replace(text: str, specs: list[FixSpec]) -> str:
    """Text edits, last first so earlier offsets stay valid; an edit overlapping one already made is left out."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(position: Position) -> int:
        return starts[min(position.line, len(starts)) - 1] + position.column - 1

    done: list[tuple[int, int]] = []
    for spec in sorted(specs, key=lambda s: (s.span.start, s.span.end), reverse=True):
        start, end = offset(spec.span.start), offset(spec.span.end)
        if any(start < b and a < end or start == a for a, b in done):
            continue
        text = text[:start] + spec.edit.content + text[end:]
        done.append((start, end))
    return text


class _Parsed:
    """A file parsed once by LibCST, to which several fixes can be applied independently."""

    def __init__(self, text: str) -> None:
        import libcst as cst
        from libcst.metadata import MetadataWrapper, PositionProvider

        self.cst, self.text = cst, text
        try:
            module = cst.parse_module(text)
            if module.code != text:  # e.g. a `\` line continuation ending in CRLF in an LF file
                raise FixError("LibCST cannot reproduce this file byte for byte; nothing was changed")
            self.wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
            self.positions = self.wrapper.resolve(PositionProvider)
        except cst.ParserSyntaxError as exc:
            raise FixError(f"LibCST cannot parse the code: {exc.message}") from None
        except RecursionError:
            raise FixError("too deeply nested to fix") from None

    def apply(self, specs: list[FixSpec]) -> str:
        cst = self.cst
        try:
            new_text = self.wrapper.module.visit(_transformer(cst)(specs, self.positions)).code
        except cst.ParserSyntaxError as exc:
            raise FixError(f"fix produced invalid Python ({exc.message}); nothing was changed") from None
        except RecursionError:
            raise FixError("too deeply nested to fix") from None
        return _finish(self.text, new_text, specs)

    def apply_one(self, spec: FixSpec) -> str:
        """The text after `spec` alone. A fix of one call or dict regenerates only that node, not the whole
        module (a file with hundreds of findings would otherwise cost hundreds of module codegens)."""
        if not isinstance(spec.edit, _NODE_EDITS) or spec.imports:
            return self.apply([spec])
        cst = self.cst
        transformer = _transformer(cst)([spec], self.positions)
        try:
            self.wrapper.module.visit(transformer)
            if len(transformer.replaced) != 1:
                return self.text
            original, updated = transformer.replaced[0]
            where = self.positions[original]
            start, end = self._offset(where.start), self._offset(where.end)
            new_text = self.text[:start] + self.wrapper.module.code_for_node(updated) + self.text[end:]
        except cst.ParserSyntaxError as exc:
            raise FixError(f"fix produced invalid Python ({exc.message}); nothing was changed") from None
        except RecursionError:
            raise FixError("too deeply nested to fix") from None
        return _finish(self.text, new_text, [spec])

    def _offset(self, position) -> int:
        """The offset in the text of a LibCST position (1-based line, 0-based column in characters)."""
        if not hasattr(self, "_line_starts"):
            starts, offset = [0], 0
            for piece in re.split(r"(\r\n|\r|\n)", self.text)[:-1]:
                offset += len(piece)
                if piece in ("\r\n", "\r", "\n"):
                    starts.append(offset)
            self._line_starts = starts
        return self._line_starts[position.line - 1] + position.column


# fixes that rewrite one call or dict literal in place
_NODE_EDITS = (SetKeywords, SetDictKey, RenameMethod, RenameKeywords)  # edits of one call or dict


def _finish(text: str, new_text: str, specs: list[FixSpec]) -> str:
    imports = [imp for s in specs for imp in s.imports]
    if imports:
        new_text = _add_imports(new_text, imports)
    try:
        parse_module(new_text)
    except SyntaxError as exc:  # never hand back code that does not parse (in any Python version)
        raise FixError(f"fix produced invalid Python ({exc.msg}); nothing was changed") from None
    return new_text


def edits_for(text: str, specs: list[FixSpec]) -> list[list[tuple[str, Position, Position]]]:
    """Each fix as text edits (content, start, end), ruff-style, 1-based; the file is parsed once."""
    parsed: _Parsed | None = None
    out = []
    for spec in specs:
        if isinstance(spec.edit, ReplaceText):
            out.append([(spec.edit.content, spec.span.start, spec.span.end)])
            continue
        try:
            parsed = parsed or _Parsed(text)
            new_text = parsed.apply_one(spec)
        except FixError:
            new_text = text
        out.append(minimal_edit(text, new_text))
    return out


def minimal_edit(text: str, new_text: str) -> list[tuple[str, Position, Position]]:
    """The one text edit (content, start, end; 1-based) that turns `text` into `new_text`, or none."""
    if new_text == text:
        return []
    start = 0
    limit = min(len(text), len(new_text))
    while start < limit and text[start] == new_text[start]:
        start += 1
    end_old, end_new = len(text), len(new_text)
    while end_old > start and end_new > start and text[end_old - 1] == new_text[end_new - 1]:
        end_old -= 1
        end_new -= 1
    return [(new_text[start:end_new], _offset_to_position(text, start), _offset_to_position(text, end_old))]


def _offset_to_position(text: str, offset: int) -> Position:
    line = text.count("\n", 0, offset) + 1
    line_start = text.rfind("\n", 0, offset) + 1
    return Position(line, offset - line_start + 1)


def unified_diff(path: str, old: str, new: str, notebook: bool = False) -> str:
    """A unified diff; for a notebook, one per changed code cell, headed `path:cell N`."""
    if not notebook:
        return "".join(
            difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=f"a/{path}", tofile=f"b/{path}")
        )
    from ckpt_doctor.analysis.source import split_cells

    before, after = split_cells(old), split_cells(new)
    parts = []
    for index in sorted(after):
        a, b = before.get(index, []), after[index]
        if a != b:
            name = f"{path}:cell {index + 1}"
            parts.extend(difflib.unified_diff([x + "\n" for x in a], [x + "\n" for x in b], fromfile=f"a/{name}", tofile=f"b/{name}"))
    return "".join(parts)


def write_atomically(path: str | Path, data: bytes, expected: bytes | None = None, create: bool = False) -> None:
    """Replace `path` with `data` in one rename; refuse if the file changed since it was read.
    A symbolic link stays a link: the file it points to is replaced. `create`: a missing file is created
    (a report written with --output-file), readable by all (0o644), its folder too."""
    path = Path(os.path.realpath(path))
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o644
    else:
        mode = None
    if expected is not None:
        try:
            current = path.read_bytes()
        except OSError as exc:
            raise FixError(f"cannot re-read before writing: {exc.strerror or exc}") from None
        if current != expected:
            raise FixError("file changed while it was being checked; not written")
    if mode is None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if not os.access(path, os.W_OK) or not mode & 0o222:  # root may write anything: respect the mode bits
            raise FixError("file is read-only; not written")
    # the name is chosen before the file exists, so a Ctrl-C between creating it and knowing its name cannot leave it
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}.ckpt-doctor.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:  # an error, Ctrl-C or SIGTERM: leave the old file and no temporary
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _add_imports(text: str, imports: list[str]) -> str:
    lines = text.splitlines(keepends=True)
    missing = [imp for imp in dict.fromkeys(imports) if not any(line.strip() == imp for line in lines)]
    if not missing:
        return text
    tree = parse_module(text)
    insert_at = 0
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) and isinstance(node.value.value, str)
        if is_docstring or isinstance(node, (ast.Import, ast.ImportFrom)):
            insert_at = node.end_lineno or insert_at
            continue
        break
    newline = "\r\n" if "\r\n" in text else "\n"
    return "".join(lines[:insert_at] + [imp + newline for imp in missing] + lines[insert_at:])


def _transformer(cst):  # built lazily so importing this module does not import libcst
    class FixTransformer(cst.CSTTransformer):
        def __init__(self, specs: list[FixSpec], positions) -> None:
            super().__init__()
            self.positions = positions
            self.by_start: dict[tuple[int, int], list[FixSpec]] = {}
            self.statement_specs: dict[int, list[FixSpec]] = {}
            for spec in specs:
                if isinstance(spec.edit, (InsertStatement, RenameAttribute)):
                    self.statement_specs.setdefault(spec.span.start.line, []).append(spec)
                else:
                    self.by_start.setdefault((spec.span.start.line, spec.span.start.column), []).append(spec)
            self.done: set[int] = set()
            self.lines = sorted({s.span.start.line for s in specs})
            self.replaced: list = []  # (original, updated) calls and dicts a fix rewrote

        def on_visit(self, node) -> bool:
            """Descend only into nodes that contain a line some fix is about."""
            position = self.positions.get(node)
            if position is None:
                return True
            first, last = position.start.line, position.end.line
            return any(first <= line <= last for line in self.lines)

        def _specs_at(self, node, *kinds: type) -> list[FixSpec]:
            position = self.positions.get(node)
            if position is None:
                return []
            specs = self.by_start.get((position.start.line, position.start.column + 1), [])
            end = (position.end.line, position.end.column + 1)
            return [s for s in specs if isinstance(s.edit, kinds) and (s.span.end.line, s.span.end.column) == end and id(s) not in self.done]

        # calls: keywords, renames, dict(...) literals
        def leave_Call(self, original, updated):
            for spec in self._specs_at(original, *_NODE_EDITS):
                self.done.add(id(spec))
                edit = spec.edit
                if isinstance(edit, SetKeywords):
                    for name, value in edit.keywords:
                        updated = self._set_keyword(updated, name, value, edit.replace)
                elif isinstance(edit, SetDictKey):  # `dict(a=1)` form
                    updated = self._set_keyword(updated, edit.key, edit.value, False)
                elif isinstance(edit, RenameMethod) and isinstance(updated.func, cst.Attribute) and updated.func.attr.value == edit.old:
                    updated = updated.with_changes(func=updated.func.with_changes(attr=cst.Name(edit.new)))
                    updated = self._rename_keywords(updated, edit.keywords)
                elif isinstance(edit, RenameKeywords):
                    updated = self._rename_keywords(updated, edit.renames)
                self.replaced.append((original, updated))
            return updated

        def _rename_keywords(self, call, renames):
            mapping = dict(renames)
            existing = {a.keyword.value for a in call.args if a.keyword is not None}
            args = []
            for arg in call.args:
                if arg.keyword is not None and arg.keyword.value in mapping and mapping[arg.keyword.value] not in existing:
                    arg = arg.with_changes(keyword=cst.Name(mapping[arg.keyword.value]))
                args.append(arg)
            return call.with_changes(args=args)

        def _set_keyword(self, call, name: str, value: str, replace: bool):
            expression = cst.parse_expression(value)
            for index, arg in enumerate(call.args):
                if arg.keyword is not None and arg.keyword.value == name:
                    if not replace:
                        return call
                    args = list(call.args)
                    args[index] = arg.with_changes(value=expression)
                    return call.with_changes(args=args)
            new_arg = cst.Arg(
                value=expression,
                keyword=cst.Name(name),
                equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")),
            )
            args = list(call.args)
            closing = args[-1].whitespace_after_arg if args else None
            if args:
                args[-1] = args[-1].with_changes(whitespace_after_arg=cst.SimpleWhitespace(""))
            args, closing = _append(cst, args, new_arg, call.whitespace_before_args, closing)
            if closing is not None:
                args[-1] = args[-1].with_changes(whitespace_after_arg=closing)
            return call.with_changes(args=args)

        def leave_Dict(self, original, updated):
            specs = self._specs_at(original, SetDictKey)
            if specs:
                self.replaced.append((original, updated))  # the last `updated` is put in below
            for spec in specs:
                self.done.add(id(spec))
                key = spec.edit.key
                present = any(
                    isinstance(e, cst.DictElement) and isinstance(e.key, cst.SimpleString) and e.key.evaluated_value == key
                    for e in updated.elements
                )
                if present:
                    continue
                quote = '"'
                for element in updated.elements:
                    if isinstance(element, cst.DictElement) and isinstance(element.key, cst.SimpleString):
                        quote = element.key.quote
                        break
                element = cst.DictElement(
                    key=cst.SimpleString(f"{quote}{key}{quote}"),
                    value=cst.parse_expression(spec.edit.value),
                    whitespace_before_colon=cst.SimpleWhitespace(""),
                    whitespace_after_colon=cst.SimpleWhitespace(" "),
                )
                elements, closing = _append(cst, list(updated.elements), element, updated.lbrace.whitespace_after, updated.rbrace.whitespace_before)
                updated = updated.with_changes(elements=elements, rbrace=updated.rbrace.with_changes(whitespace_before=closing))
            if specs:
                self.replaced[-1] = (original, updated)
            return updated

        # statements: insertions and attribute renames, looked up by the original statement's position
        def _rewrite_body(self, original_body, updated_body):
            out = []
            changed = False
            for original, statement in zip(original_body, updated_body):
                position = self.positions.get(original)
                specs = self.statement_specs.get(position.start.line, []) if position else []
                specs = [s for s in specs if id(s) not in self.done]
                for spec in specs:
                    self.done.add(id(spec))
                    changed = True
                    edit = spec.edit
                    if isinstance(edit, InsertStatement) and edit.before:  # comments above the statement stay above both
                        inserted = cst.parse_statement(edit.code + "\n")
                        out.append(inserted.with_changes(leading_lines=statement.leading_lines))
                        statement = statement.with_changes(leading_lines=[])
                    elif isinstance(edit, RenameAttribute):
                        statement = statement.visit(_AttributeRenamer(cst, edit.old, edit.new))
                out.append(statement)
                out.extend(cst.parse_statement(s.edit.code + "\n") for s in specs if isinstance(s.edit, InsertStatement) and not s.edit.before)
            return out, changed

        def leave_IndentedBlock(self, original, updated):
            body, changed = self._rewrite_body(original.body, updated.body)
            return updated.with_changes(body=body) if changed else updated

        def leave_Module(self, original, updated):
            body, changed = self._rewrite_body(original.body, updated.body)
            return updated.with_changes(body=body) if changed else updated

    return FixTransformer


def _append(cst, items: list, new_item, opening=None, closing=None):
    """Append to a comma-separated sequence, following its comma and line style.

    `opening` is the whitespace after the opening bracket and `closing` the whitespace before the
    closing one (LibCST keeps it on the last call argument, or on a dict's closing brace). Comments
    live in those whitespace nodes, so each stays on the line of the item it follows. Returns the
    new items and the new closing whitespace.
    """
    if not items:
        return [new_item], closing
    last = items[-1]
    comma = last.comma if isinstance(last.comma, cst.Comma) else None
    previous = items[-2].comma.whitespace_after if len(items) >= 2 and isinstance(items[-2].comma, cst.Comma) else opening
    indent = previous.last_line if isinstance(previous, cst.ParenthesizedWhitespace) else cst.SimpleWhitespace("    ")
    if isinstance(closing, cst.ParenthesizedWhitespace):  # the closing bracket on its own line
        separator = cst.Comma(
            whitespace_before=comma.whitespace_before if comma else cst.SimpleWhitespace(""),
            whitespace_after=cst.ParenthesizedWhitespace(first_line=closing.first_line, empty_lines=closing.empty_lines, indent=True, last_line=indent),
        )
        new_item = new_item.with_changes(comma=cst.Comma() if comma else cst.MaybeSentinel.DEFAULT)
        new_closing = cst.ParenthesizedWhitespace(first_line=cst.TrailingWhitespace(), empty_lines=[], indent=closing.indent, last_line=closing.last_line)
        return items[:-1] + [last.with_changes(comma=separator), new_item], new_closing
    if comma is None:
        return items[:-1] + [last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))), new_item], closing
    after = comma.whitespace_after
    if not isinstance(after, cst.ParenthesizedWhitespace):  # `f(a, b,)` on one line
        return items[:-1] + [last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))), new_item.with_changes(comma=comma)], closing
    last = last.with_changes(comma=comma.with_changes(whitespace_after=after.with_changes(last_line=indent)))
    trailing = cst.ParenthesizedWhitespace(first_line=cst.TrailingWhitespace(), empty_lines=[], indent=after.indent, last_line=after.last_line)
    return items[:-1] + [last, new_item.with_changes(comma=cst.Comma(whitespace_after=trailing))], closing


def _AttributeRenamer(cst, old: str, new: str):
    class Renamer(cst.CSTTransformer):
        def leave_AssignTarget(self, original, updated):
            target = updated.target
            if isinstance(target, cst.Attribute) and target.attr.value == old:
                return updated.with_changes(target=target.with_changes(attr=cst.Name(new)))
            return updated

    return Renamer()
