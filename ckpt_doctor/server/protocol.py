"""The language server: pygls does the protocol (JSON-RPC, document sync, position encodings); this module wires
its notifications and requests to the checking, action and hover modules.

Diagnostics are published when a buffer opens, is saved, and after it changes, debounced: an edit after a pause is
checked at once, a burst of edits (typing) once, DEBOUNCE_SECONDS after the last. All checking, fixing and estimating
runs on one worker thread, one job at a time, so the protocol stays responsive (a change that arrives during a check
is seen when it arrives) and the analysis never runs twice at once. Each buffer's last check is kept by version:
code actions and hovers reuse it.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from ckpt_doctor import __version__
from ckpt_doctor.server import actions as code_actions
from ckpt_doctor.server.diagnostics import client_range, diagnostic, diagnostics, finding_index
from ckpt_doctor.server.documents import Checked, check_buffer, checkable
from ckpt_doctor.server.hover import hover as hover_text
from ckpt_doctor.server.positions import finding_range, to_position
from ckpt_doctor.server.workspace import WorkspaceSettings

DEBOUNCE_SECONDS = 0.05  # edits closer together than this are checked once, this long after the last
CONFIG_FILES = ("pyproject.toml",)


class CkptDoctorServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("ckpt-doctor", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = WorkspaceSettings()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-doctor")
        self.checked: dict[str, Checked] = {}
        self.running: dict[tuple[str, int | None], asyncio.Future] = {}  # checks under way, by (uri, version)
        self.pending: dict[str, asyncio.Task] = {}  # debounced publications waiting
        self.last_change: dict[str, float] = {}
        self.reported: set[str] = set()  # configuration problems already shown

    async def run(self, function, *args):
        """`function(*args)` on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)

    # -- checking -------------------------------------------------------------------------------------------
    async def current(self, uri: str) -> Checked | None:
        """The check of the buffer's current version (made now if the last one is older); None: not ours."""
        if uri not in self.workspace.text_documents:
            return None
        document = self.workspace.get_text_document(uri)
        path = to_fs_path(uri) or uri
        version, text = document.version, document.source
        if not checkable(path, document.language_id, text):
            return None
        last = self.checked.get(uri)
        if last is not None and last.version == version and last.text == text:
            return last
        key = (uri, version)
        if key not in self.running:
            settings, problem = self.settings.for_path(path)
            if problem and problem not in self.reported:
                self.reported.add(problem)
                self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"ckpt-doctor: {problem}"))
            self.running[key] = asyncio.ensure_future(self.run(check_buffer, path, version, text, settings))
        try:
            checked = await asyncio.shield(self.running[key])
        finally:
            if key in self.running and self.running[key].done():
                del self.running[key]
        document = self.workspace.text_documents.get(uri)
        if document is not None and document.version == checked.version:
            self.checked[uri] = checked
        return checked

    async def publish(self, uri: str) -> None:
        checked = await self.current(uri)
        if uri not in self.workspace.text_documents:
            return
        if checked is not None and checked.version != self.workspace.get_text_document(uri).version:
            return  # edited while it was checked: the check of the new version publishes
        found = diagnostics(checked, client_range(self.workspace.position_codec)) if checked is not None else []
        version = checked.version if checked is not None else None
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=found, version=version))

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

    def forget(self, uri: str) -> None:
        waiting = self.pending.pop(uri, None)
        if waiting is not None:
            waiting.cancel()
        self.checked.pop(uri, None)
        self.last_change.pop(uri, None)

    async def recheck_all(self) -> None:
        self.settings.invalidate()
        self.checked.clear()
        for uri in list(self.workspace.text_documents):
            await self.publish(uri)

    def take_settings(self, options: object) -> None:
        problem = self.settings.set_overrides(options)
        if problem:
            self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, problem))


def build_server() -> CkptDoctorServer:
    server = CkptDoctorServer()

    @server.feature(types.INITIALIZE)
    def initialize(ls: CkptDoctorServer, params: types.InitializeParams) -> None:
        root = ls.workspace.root_path
        if root and os.path.isdir(root):
            os.chdir(root)  # messages name other files relative to the workspace, as `check` run there does
        if params.initialization_options:
            ls.take_settings(params.initialization_options)

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
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: CkptDoctorServer, params: types.DidChangeConfigurationParams) -> None:
        if params.settings:
            ls.take_settings(params.settings)
        await ls.recheck_all()

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def did_change_watched_files(ls: CkptDoctorServer, params: types.DidChangeWatchedFilesParams) -> None:
        if any(change.uri.endswith(CONFIG_FILES) for change in params.changes):
            await ls.recheck_all()

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix, code_actions.FIX_ALL], resolve_provider=True),
    )
    async def code_action(ls: CkptDoctorServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        uri = params.text_document.uri
        checked = await ls.current(uri)
        if checked is None or checked.result is None:
            return None
        codec = ls.workspace.position_codec
        wanted = codec.range_from_client_units(checked.lines, params.range)
        start, end = (wanted.start.line, wanted.start.character), (wanted.end.line, wanted.end.character)
        indices = [i for d in params.context.diagnostics if (i := finding_index(d)) is not None and i < len(checked.findings)
                   and d.source == "ckpt-doctor"]
        for index, finding in enumerate(checked.findings):
            where = finding_range(checked.lines, finding, checked.notebook)
            if where is not None and where[0] <= end and start <= where[1]:
                indices.append(index)
        lazy = _resolves_edits(ls)
        out = []
        for action in code_actions.actions_for(checked, indices, params.context.only):
            finding = checked.findings[action.finding] if action.finding is not None else None
            where = finding_range(checked.lines, finding, checked.notebook) if finding is not None else None
            item = types.CodeAction(
                title=action.title,
                kind=action.kind,
                is_preferred=action.preferred or None,
                diagnostics=[_diagnostic_for(ls, checked, action.finding, where)] if where is not None else None,
                data={"uri": uri, "version": checked.version, "what": action.what, "finding": action.finding,
                      "title": action.title, "kind": action.kind},
            )
            if not lazy:
                item.edit = _workspace_edit(ls, uri, checked, await ls.run(code_actions.edits, checked, action))
                if item.edit is None:
                    continue
            out.append(item)
        return out

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls: CkptDoctorServer, item: types.CodeAction) -> types.CodeAction:
        data = item.data if isinstance(item.data, dict) else {}
        uri = data.get("uri")
        if not uri or uri not in ls.workspace.text_documents:
            return item
        checked = await ls.current(uri)
        if checked is None or checked.result is None or checked.version != data.get("version") or data.get("what") is None:
            return item  # the buffer changed since: no edit (the client asks again)
        action = code_actions.Action(data.get("title", item.title), data.get("kind", item.kind), data["what"], data.get("finding"))
        item.edit = _workspace_edit(ls, uri, checked, await ls.run(code_actions.edits, checked, action))
        return item

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: CkptDoctorServer, params: types.HoverParams) -> types.Hover | None:
        checked = await ls.current(params.text_document.uri)
        if checked is None:
            return None
        codec = ls.workspace.position_codec
        at = codec.position_from_client_units(checked.lines, params.position)
        found = await ls.run(hover_text, checked, to_position((at.line, at.character)))
        if found is None:
            return None
        span = client_range(codec)(checked.lines, (found.span.start.line - 1, found.span.start.column - 1),
                                   (found.span.end.line - 1, found.span.end.column - 1))
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=found.markdown), range=span)

    return server


def _resolves_edits(ls: CkptDoctorServer) -> bool:
    """Whether the client resolves a code action's edit when it is chosen (else every edit is computed now)."""
    try:
        support = ls.client_capabilities.text_document.code_action.resolve_support
    except AttributeError:
        return False
    return support is not None and "edit" in (support.properties or [])


def _diagnostic_for(ls: CkptDoctorServer, checked: Checked, index: int, where) -> types.Diagnostic:
    return diagnostic(checked.findings[index], client_range(ls.workspace.position_codec)(checked.lines, *where), index)


def _workspace_edit(ls: CkptDoctorServer, uri: str, checked: Checked, edits: list) -> types.WorkspaceEdit | None:
    if not edits:
        return None
    to_client = client_range(ls.workspace.position_codec)
    text_edits = [types.TextEdit(range=to_client(checked.lines, start, end), new_text=content) for content, start, end in edits]
    return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=checked.version), edits=text_edits)])
