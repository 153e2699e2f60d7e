"""The language server: pygls does the protocol (JSON-RPC, document and notebook sync, position encodings); this
module wires its notifications and requests to the checking, action and hover modules.

Diagnostics are published when a buffer opens, is saved, and after it changes, debounced: an edit after a pause is
checked at once, a burst of edits (typing) once, DEBOUNCE_SECONDS after the last. All checking, fixing and estimating
runs on one worker thread, one job at a time, so the protocol stays responsive (a change that arrives during a check
is seen when it arrives) and the analysis never runs twice at once. Each buffer's last check is kept by version:
code actions and hovers reuse it.

A buffer is a text document, or a notebook document (its cells, checked together as one .ipynb); requests name a
text document, which may be one of a notebook document's cells (a `View`).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from ckpt_doctor import __version__
from ckpt_doctor.server import actions as code_actions
from ckpt_doctor.server.diagnostics import cell_diagnostics, client_range, diagnostic, diagnostics, finding_index
from ckpt_doctor.server.documents import Checked, check_buffer, checkable
from ckpt_doctor.server.hover import hover as hover_text
from ckpt_doctor.server.notebooks import cell_edits, cell_point, cell_range, joined_position, notebook_json
from ckpt_doctor.server.positions import Point, finding_range, split_lines, to_position

DEBOUNCE_SECONDS = 0.05  # edits closer together than this are checked once, this long after the last
CONFIG_FILES = ("pyproject.toml",)
NOTEBOOKS = types.NotebookDocumentSyncOptions(notebook_selector=[types.NotebookDocumentFilterWithCells(
    cells=[types.NotebookCellLanguage(language="python")], notebook="jupyter-notebook")], save=True)


@dataclass
class Cell:
    uri: str
    code: bool
    text: str
    version: int | None


@dataclass
class Buffer:
    """What is checked under a URI."""

    uri: str
    path: str
    version: int | None
    text: str  # a notebook document's: its cells as .ipynb JSON
    language: str | None = None
    cells: list[Cell] | None = None  # a notebook document's


@dataclass
class View:
    """A text document as a request sees it: a buffer of its own, or cell `cell` of a notebook document."""

    uri: str
    buffer: Buffer
    checked: Checked
    cell: int | None = None

    @property
    def lines(self) -> list[str]:
        return split_lines(self.buffer.cells[self.cell].text) if self.cell is not None else self.checked.lines

    def finding_range(self, finding) -> tuple[Point, Point] | None:
        if self.cell is None:
            return finding_range(self.checked.lines, finding, self.checked.notebook)
        return cell_range(self.buffer.cells[self.cell].text, finding) if finding.cell == self.cell else None


class CkptDoctorServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("ckpt-doctor", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         notebook_document_sync=NOTEBOOKS)
        from ckpt_doctor.server.workspace import WorkspaceSettings

        self.settings = WorkspaceSettings()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-doctor")
        self.checked: dict[str, Checked] = {}
        self.running: dict[tuple[str, int | None], asyncio.Future] = {}  # checks under way, by (uri, version)
        self.pending: dict[str, asyncio.Task] = {}  # debounced publications waiting
        self.last_change: dict[str, float] = {}
        self.cells_published: dict[str, set[str]] = {}  # notebook document -> the cells given diagnostics
        self.reported: set[str] = set()  # configuration problems already shown

    async def run(self, function, *args):
        """`function(*args)` on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)

    # -- buffers --------------------------------------------------------------------------------------------
    def notebook_of(self, uri: str) -> str | None:
        """The notebook document whose cell `uri` is."""
        notebook = self.workspace.get_notebook_document(cell_uri=uri)
        return notebook.uri if notebook is not None else None

    def buffer(self, uri: str) -> Buffer | None:
        notebook = self.workspace.get_notebook_document(notebook_uri=uri)
        path = to_fs_path(uri) or uri
        if notebook is not None:
            cells = []
            for cell in notebook.cells:
                document = self.workspace.get_text_document(cell.document)
                cells.append(Cell(cell.document, cell.kind == types.NotebookCellKind.Code, document.source, document.version))
            text = notebook_json([(cell.code, cell.text) for cell in cells])
            return Buffer(uri, path if path.endswith(".ipynb") else path + ".ipynb", notebook.version, text, cells=cells)
        if uri not in self.workspace.text_documents or self.notebook_of(uri) is not None:
            return None
        document = self.workspace.get_text_document(uri)
        return Buffer(uri, path, document.version, document.source, document.language_id)

    async def current(self, uri: str) -> Checked | None:
        """The check of the buffer's current version (made now if the last one is older); None: not ours."""
        buffer = self.buffer(uri)
        if buffer is None or not checkable(buffer.path, buffer.language, buffer.text):
            return None
        last = self.checked.get(uri)
        if last is not None and last.version == buffer.version and last.text == buffer.text:
            return last
        key = (uri, buffer.version)
        if key not in self.running:
            settings, problem = self.settings.for_path(buffer.path)
            if problem and problem not in self.reported:
                self.reported.add(problem)
                self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"ckpt-doctor: {problem}"))
            self.running[key] = asyncio.ensure_future(self.run(check_buffer, buffer.path, buffer.version, buffer.text, settings))
        try:
            checked = await asyncio.shield(self.running[key])
        finally:
            if key in self.running and self.running[key].done():
                del self.running[key]
        now = self.buffer(uri)
        if now is not None and now.version == checked.version:
            self.checked[uri] = checked
        return checked

    async def view(self, uri: str) -> View | None:
        notebook = self.notebook_of(uri)
        checked = await self.current(notebook or uri)
        buffer = self.buffer(notebook or uri)
        if checked is None or buffer is None or checked.version != buffer.version:
            return None
        if notebook is None:
            return View(uri, buffer, checked)
        cell = next((i for i, c in enumerate(buffer.cells) if c.uri == uri), None)
        return View(uri, buffer, checked, cell) if cell is not None else None

    # -- publishing -----------------------------------------------------------------------------------------
    async def publish(self, uri: str) -> None:
        uri = self.notebook_of(uri) or uri
        checked = await self.current(uri)
        buffer = self.buffer(uri)
        if buffer is None:
            return
        if checked is not None and checked.version != buffer.version:
            return  # edited while it was checked: the check of the new version publishes
        to_client = client_range(self.workspace.position_codec)
        if buffer.cells is None:
            found = diagnostics(checked, to_client) if checked is not None else []
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=found, version=buffer.version))
            return
        by_cell = cell_diagnostics(checked, [c.text for c in buffer.cells], to_client) if checked is not None else []
        for cell, found in zip(buffer.cells, by_cell):
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=cell.uri, diagnostics=found, version=cell.version))
        gone = self.cells_published.get(uri, set()) - {c.uri for c in buffer.cells}
        for cell_uri in gone:
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=cell_uri, diagnostics=[]))
        self.cells_published[uri] = {c.uri for c in buffer.cells}

    def publish_later(self, uri: str) -> None:
        loop = asyncio.get_running_loop()
        waiting = self.pending.pop(uri, None)
        if waiting is not None:
            waiting.cancel()
        now = loop.time()
        burst = waiting is not None or now - self.last_change.get(uri, float("-inf")) < DEBOUNCE_SECONDS
        self.last_change[uri] = now
        self.pending[uri] = asyncio.ensure_future(self._publish_after(DEBOUNCE_SECONDS if burst else 0, uri))

    async def _publish_after(self, delay: float, uri: str) -> None:
        await asyncio.sleep(delay)
        self.pending.pop(uri, None)  # from here on a newer edit does not cancel this check: it queues its own
        await self.publish(uri)

    def forget(self, uri: str, cells: list[str] = ()) -> None:
        """A buffer closed: nothing waits for it, and its diagnostics are cleared."""
        waiting = self.pending.pop(uri, None)
        if waiting is not None:
            waiting.cancel()
        self.checked.pop(uri, None)
        self.last_change.pop(uri, None)
        for cleared in list(cells) + list(self.cells_published.pop(uri, ())) or [uri]:
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=cleared, diagnostics=[]))

    async def recheck_all(self) -> None:
        self.settings.invalidate()
        self.checked.clear()
        notebooks = {self.notebook_of(uri) or uri for uri in list(self.workspace.text_documents)}
        for uri in notebooks:
            await self.publish(uri)

    def take_settings(self, options: object) -> None:
        problem = self.settings.set_overrides(options)
        if problem:
            self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, problem))

    # -- edits ----------------------------------------------------------------------------------------------
    async def workspace_edit(self, view: View, action: code_actions.Action) -> types.WorkspaceEdit | None:
        """The edit of `action`: of the buffer, or of each cell of a notebook document it changes."""
        to_client = client_range(self.workspace.position_codec)
        if view.buffer.cells is None:
            edits = await self.run(code_actions.edits, view.checked, action)
            changes = [(view.uri, view.checked.version, view.checked.lines, edits)] if edits else []
        else:
            new_text = await self.run(code_actions.fixed_source, view.checked, action)
            cells = view.buffer.cells
            by_cell = cell_edits(view.checked, new_text, [c.text for c in cells]) if new_text is not None else {}
            changes = [(cells[i].uri, cells[i].version, split_lines(cells[i].text), edits) for i, edits in sorted(by_cell.items())]
        if not changes:
            return None
        return types.WorkspaceEdit(document_changes=[
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                edits=[types.TextEdit(range=to_client(lines, start, end), new_text=content) for content, start, end in edits])
            for uri, version, lines, edits in changes])


def build_server() -> CkptDoctorServer:
    server = CkptDoctorServer()

    @server.feature(types.INITIALIZE)
    def initialize(ls: CkptDoctorServer, params: types.InitializeParams) -> None:
        root = ls.workspace.root_path
        if root and os.path.isdir(root):
            os.chdir(root)  # messages name other files relative to the workspace, as `check` run there does
        if params.initialization_options:
            ls.take_settings(params.initialization_options)

    # -- text documents
    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    async def did_open(ls: CkptDoctorServer, params: types.DidOpenTextDocumentParams) -> None:
        await ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: CkptDoctorServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.publish_later(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    async def did_save(ls: CkptDoctorServer, params: types.DidSaveTextDocumentParams) -> None:
        if params.text_document.uri.endswith(CONFIG_FILES):
            await ls.recheck_all()  # [tool.ckpt-doctor] may have changed
        else:
            await ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CkptDoctorServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.forget(params.text_document.uri)

    # -- notebook documents
    @server.feature(types.NOTEBOOK_DOCUMENT_DID_OPEN)
    async def notebook_did_open(ls: CkptDoctorServer, params: types.DidOpenNotebookDocumentParams) -> None:
        await ls.publish(params.notebook_document.uri)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CHANGE)
    def notebook_did_change(ls: CkptDoctorServer, params: types.DidChangeNotebookDocumentParams) -> None:
        ls.publish_later(params.notebook_document.uri)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_SAVE)
    async def notebook_did_save(ls: CkptDoctorServer, params: types.DidSaveNotebookDocumentParams) -> None:
        await ls.publish(params.notebook_document.uri)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CLOSE)
    def notebook_did_close(ls: CkptDoctorServer, params: types.DidCloseNotebookDocumentParams) -> None:
        ls.forget(params.notebook_document.uri, [cell.uri for cell in params.cell_text_documents])

    # -- settings
    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: CkptDoctorServer, params: types.DidChangeConfigurationParams) -> None:
        if params.settings:
            ls.take_settings(params.settings)
        await ls.recheck_all()

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def did_change_watched_files(ls: CkptDoctorServer, params: types.DidChangeWatchedFilesParams) -> None:
        if any(change.uri.endswith(CONFIG_FILES) for change in params.changes):
            await ls.recheck_all()

    # -- requests
    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix, code_actions.FIX_ALL], resolve_provider=True),
    )
    async def code_action(ls: CkptDoctorServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        view = await ls.view(params.text_document.uri)
        if view is None or view.checked.result is None:
            return None
        findings = view.checked.findings
        wanted = ls.workspace.position_codec.range_from_client_units(view.lines, params.range)
        start, end = (wanted.start.line, wanted.start.character), (wanted.end.line, wanted.end.character)
        indices = [i for d in params.context.diagnostics if d.source == "ckpt-doctor" and (i := finding_index(d)) is not None
                   and i < len(findings) and view.finding_range(findings[i]) is not None]
        indices += [i for i, finding in enumerate(findings) if (where := view.finding_range(finding)) and where[0] <= end and start <= where[1]]
        to_client = client_range(ls.workspace.position_codec)
        lazy = _resolves_edits(ls)
        out = []
        for action in code_actions.actions_for(view.checked, indices, params.context.only):
            where = view.finding_range(findings[action.finding]) if action.finding is not None else None
            item = types.CodeAction(
                title=action.title,
                kind=action.kind,
                is_preferred=action.preferred or None,
                diagnostics=[diagnostic(findings[action.finding], to_client(view.lines, *where), action.finding)] if where else None,
                data={"uri": view.uri, "version": view.checked.version, "what": action.what, "finding": action.finding,
                      "title": action.title, "kind": action.kind},
            )
            if not lazy:
                item.edit = await ls.workspace_edit(view, action)
                if item.edit is None:
                    continue
            out.append(item)
        return out

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls: CkptDoctorServer, item: types.CodeAction) -> types.CodeAction:
        data = item.data if isinstance(item.data, dict) else {}
        view = await ls.view(data["uri"]) if isinstance(data.get("uri"), str) else None
        if view is None or view.checked.result is None or view.checked.version != data.get("version") or data.get("what") is None:
            return item  # the buffer changed since: no edit (the client asks again)
        action = code_actions.Action(data.get("title", item.title), data.get("kind", item.kind), data["what"], data.get("finding"))
        item.edit = await ls.workspace_edit(view, action)
        return item

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: CkptDoctorServer, params: types.HoverParams) -> types.Hover | None:
        view = await ls.view(params.text_document.uri)
        if view is None or (view.cell is None and view.checked.notebook is not None):
            return None  # an .ipynb edited as JSON: positions are in the JSON, not in the code
        codec = ls.workspace.position_codec
        at = codec.position_from_client_units(view.lines, params.position)
        position = to_position((at.line, at.character)) if view.cell is None else joined_position(view.checked, view.cell, (at.line, at.character))
        found = await ls.run(hover_text, view.checked, position) if position is not None else None
        if found is None:
            return None
        start, end = _viewed(view, found.span.start), _viewed(view, found.span.end)
        span = client_range(codec)(view.lines, start, end) if start is not None and end is not None else None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=found.markdown), range=span)

    return server


def _viewed(view: View, position) -> Point | None:
    """A position of the source, in the viewed text."""
    if view.cell is None:
        return position.line - 1, position.column - 1
    located = cell_point(view.checked, position)
    return located[1] if located is not None and located[0] == view.cell else None


def _resolves_edits(ls: CkptDoctorServer) -> bool:
    """Whether the client resolves a code action's edit when it is chosen (else every edit is computed now)."""
    try:
        support = ls.client_capabilities.text_document.code_action.resolve_support
    except AttributeError:
        return False
    return support is not None and "edit" in (support.properties or [])
