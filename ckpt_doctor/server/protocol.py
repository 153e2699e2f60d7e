"""The language server: pygls does the protocol (JSON-RPC, document sync, position encodings); this module wires
its notifications and requests to the checking, action and hover modules.

Diagnostics are published when a buffer opens, is saved, and (debounced) after it changes. Each buffer's last check
is kept by version: code actions and hovers reuse it instead of checking again.
"""

from __future__ import annotations

import asyncio
import logging
import os

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from ckpt_doctor import __version__
from ckpt_doctor.server import actions as code_actions
from ckpt_doctor.server.diagnostics import client_range, diagnostics, finding_index
from ckpt_doctor.server.documents import Checked, check_buffer, checkable
from ckpt_doctor.server.hover import hover as hover_text
from ckpt_doctor.server.positions import finding_range, to_position
from ckpt_doctor.server.workspace import WorkspaceSettings

DEBOUNCE_SECONDS = 0.05  # edits closer together than this are checked once, this long after the last
CONFIG_FILES = ("pyproject.toml",)
log = logging.getLogger(__name__)


class CkptDoctorServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("ckpt-doctor", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = WorkspaceSettings()
        self.checked: dict[str, Checked] = {}
        self.pending: dict[str, asyncio.TimerHandle] = {}
        self.last_change: dict[str, float] = {}
        self.reported: set[str] = set()  # configuration problems already shown

    # -- checking -------------------------------------------------------------------------------------------
    def check(self, uri: str) -> Checked | None:
        """The check of the buffer's current version (made now if the last one is older); None: not ours."""
        document = self.workspace.get_text_document(uri)
        path = to_fs_path(uri) or uri
        if not checkable(path, document.language_id, document.source):
            return None
        last = self.checked.get(uri)
        if last is not None and last.version == document.version and last.text == document.source:
            return last
        settings, problem = self.settings.for_path(path)
        if problem and problem not in self.reported:
            self.reported.add(problem)
            self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"ckpt-doctor: {problem}"))
        checked = check_buffer(path, document.version, document.source, settings)
        self.checked[uri] = checked
        return checked

    def publish(self, uri: str) -> None:
        self.pending.pop(uri, None)
        if uri not in self.workspace.text_documents:
            return
        checked = self.check(uri)
        found = diagnostics(checked, client_range(self.workspace.position_codec)) if checked is not None else []
        version = checked.version if checked is not None else None
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=found, version=version))

    def publish_later(self, uri: str) -> None:
        """Debounced: an edit after a pause is checked at once; edits closer together than DEBOUNCE_SECONDS (typing)
        are checked once, DEBOUNCE_SECONDS after the last of them."""
        loop = asyncio.get_running_loop()
        waiting = self.pending.pop(uri, None)
        if waiting is not None:
            waiting.cancel()
        now = loop.time()
        burst = waiting is not None or now - self.last_change.get(uri, float("-inf")) < DEBOUNCE_SECONDS
        self.last_change[uri] = now
        self.pending[uri] = loop.call_later(DEBOUNCE_SECONDS if burst else 0, self.publish, uri)

    def recheck_all(self) -> None:
        self.settings.invalidate()
        self.checked.clear()
        for uri in list(self.workspace.text_documents):
            self.publish(uri)

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
    def did_open(ls: CkptDoctorServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    async def did_change(ls: CkptDoctorServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.publish_later(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: CkptDoctorServer, params: types.DidSaveTextDocumentParams) -> None:
        if params.text_document.uri.endswith(CONFIG_FILES):
            ls.recheck_all()  # [tool.ckpt-doctor] may have changed
        else:
            ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CkptDoctorServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        waiting = ls.pending.pop(uri, None)
        if waiting is not None:
            waiting.cancel()
        ls.checked.pop(uri, None)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: CkptDoctorServer, params: types.DidChangeConfigurationParams) -> None:
        if params.settings:
            ls.take_settings(params.settings)
        ls.recheck_all()

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: CkptDoctorServer, params: types.DidChangeWatchedFilesParams) -> None:
        if any(change.uri.endswith(CONFIG_FILES) for change in params.changes):
            ls.recheck_all()

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix, code_actions.FIX_ALL], resolve_provider=True),
    )
    def code_action(ls: CkptDoctorServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        uri = params.text_document.uri
        checked = ls.check(uri)
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
                item.edit = _workspace_edit(ls, uri, checked, code_actions.edits(checked, action))
                if item.edit is None:
                    continue
            out.append(item)
        return out

    @server.feature(types.CODE_ACTION_RESOLVE)
    def code_action_resolve(ls: CkptDoctorServer, item: types.CodeAction) -> types.CodeAction:
        data = item.data if isinstance(item.data, dict) else {}
        uri = data.get("uri")
        if not uri or uri not in ls.workspace.text_documents:
            return item
        checked = ls.check(uri)
        if checked is None or checked.result is None or checked.version != data.get("version") or data.get("what") is None:
            return item  # the buffer changed since: no edit (the client asks again)
        action = code_actions.Action(data.get("title", item.title), data.get("kind", item.kind), data["what"], data.get("finding"))
        item.edit = _workspace_edit(ls, uri, checked, code_actions.edits(checked, action))
        return item

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: CkptDoctorServer, params: types.HoverParams) -> types.Hover | None:
        checked = ls.check(params.text_document.uri)
        if checked is None:
            return None
        codec = ls.workspace.position_codec
        at = codec.position_from_client_units(checked.lines, params.position)
        found = hover_text(checked, to_position((at.line, at.character)))
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
    from ckpt_doctor.server.diagnostics import diagnostic

    return diagnostic(checked.findings[index], client_range(ls.workspace.position_codec)(checked.lines, *where), index)


def _workspace_edit(ls: CkptDoctorServer, uri: str, checked: Checked, edits: list) -> types.WorkspaceEdit | None:
    if not edits:
        return None
    to_client = client_range(ls.workspace.position_codec)
    text_edits = [types.TextEdit(range=to_client(checked.lines, start, end), new_text=content) for content, start, end in edits]
    return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=checked.version), edits=text_edits)])
