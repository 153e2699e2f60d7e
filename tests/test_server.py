"""The language server (`ckpt-doctor server`), driven over stdio by a real LSP client (pytest-lsp).

Each test starts the server as a subprocess, opens buffers in a throw-away project, and checks what comes back
against what the command line says about the same file: the diagnostics against `check --output-format json`,
the code actions' edits against `check --fix` (and `--fix --unsafe-fixes`) run on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")
from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient  # noqa: E402

from tests.conftest import REPO_ROOT  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="function")

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "ckpt_doctor", "server"], server_env=dict(os.environ))
EXAMPLE = (REPO_ROOT / "examples" / "train_lora.py").read_text(encoding="utf-8")
FIX_ALL = "source.fixAll.ckpt-doctor"


# The README's project: transformers >=4.40 declared (4.x and 5.x allowed), the other libraries pinned, so
# examples/train_lora.py gets CKPT201, CKPT202 (safe fixes) and CKPT205 (unsafe fix) whatever is installed.
PYPROJECT = """\
[project]
name = "demo"
version = "0"
dependencies = ["transformers>=4.40"]

[tool.ckpt-doctor]
target-versions = { trl = "0.12", torch = "2.5", peft = "0.13" }
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    return tmp_path


def capabilities(resolve: bool = False) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            code_action=types.CodeActionClientCapabilities(
                resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]) if resolve else None),
            hover=types.HoverClientCapabilities(content_format=[types.MarkupKind.Markdown]),
        ),
        workspace=types.WorkspaceClientCapabilities(workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True)),
    )


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient, project: Path):
    await lsp_client.initialize_session(types.InitializeParams(capabilities=capabilities(), root_uri=project.as_uri()))
    yield
    await lsp_client.shutdown_session()


# -- helpers -----------------------------------------------------------------------------------------------

async def open_file(client: LanguageClient, path: Path, text: str, language: str = "python") -> list[types.Diagnostic]:
    path.write_text(text, encoding="utf-8")
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=path.as_uri(), language_id=language, version=1, text=text)))
    return await diagnostics_of(client, path.as_uri())


async def published(client: LanguageClient) -> types.PublishDiagnosticsParams:
    """The next publishDiagnostics (a test fails, rather than hangs, when none comes)."""
    import asyncio

    return await asyncio.wait_for(client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), timeout=20)


async def diagnostics_of(client: LanguageClient, uri: str) -> list[types.Diagnostic]:
    while True:
        params = await published(client)
        if params.uri == uri:
            return list(params.diagnostics)


def change(client: LanguageClient, uri: str, version: int, text: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


def whole(text: str) -> types.Range:
    return types.Range(types.Position(0, 0), types.Position(len(text.splitlines()) + 1, 0))


async def actions(client: LanguageClient, uri: str, where: types.Range, only: list[str] | None = None,
                  diagnostics: list[types.Diagnostic] = ()) -> list[types.CodeAction]:
    found = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri), range=where,
        context=types.CodeActionContext(diagnostics=list(diagnostics), only=only)))
    return list(found or [])


def apply(text: str, edit: types.WorkspaceEdit) -> str:
    """The text after a WorkspaceEdit's edits (LSP semantics: ranges refer to the text before any of them)."""
    edits = [e for change in edit.document_changes for e in change.edits]
    lines = text.splitlines(keepends=True) + [""]
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(position: types.Position) -> int:
        return starts[position.line] + position.character  # ASCII test files: UTF-16 units are characters

    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[:offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


def cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckpt_doctor", "check", "--no-cache", *args], cwd=project,
                          capture_output=True, text=True, timeout=120)


def cli_fixed(project: Path, name: str, text: str, *flags: str) -> str:
    copy = project / f"cli_{name}"
    copy.write_text(text, encoding="utf-8")
    cli(project, "--fix", *flags, copy.name)
    return copy.read_text(encoding="utf-8")


# -- diagnostics ---------------------------------------------------------------------------------------------

async def test_diagnostics_on_open_are_check_findings(client: LanguageClient, project: Path):
    found = await open_file(client, project / "train.py", EXAMPLE)
    report = json.loads(cli(project, "--output-format", "json", "train.py").stdout)
    assert [(d.code, d.range.start.line + 1, d.range.start.character + 1) for d in found] == \
        [(f["code"], f["location"]["row"], f["location"]["column"]) for f in report]
    assert {"CKPT201", "CKPT202"} <= {d.code for d in found}
    from ckpt_doctor.rules import get_rule

    severities = {"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning,
                  "info": types.DiagnosticSeverity.Information}
    for diagnostic, finding in zip(found, report):
        assert diagnostic.code_description.href == get_rule(diagnostic.code).url
        assert diagnostic.severity == severities[finding["severity"]]
        assert diagnostic.source == "ckpt-doctor" and diagnostic.message == finding["message"]


async def test_diagnostics_follow_changes_and_saves(client: LanguageClient, project: Path):
    path = project / "train.py"
    await open_file(client, path, EXAMPLE)
    edited = EXAMPLE.replace("    gradient_checkpointing=True,\n", "")
    change(client, path.as_uri(), 2, edited)
    found = await diagnostics_of(client, path.as_uri())
    assert not {"CKPT201", "CKPT202"} & {d.code for d in found}
    change(client, path.as_uri(), 3, EXAMPLE)
    client.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(path.as_uri())))
    found = await diagnostics_of(client, path.as_uri())
    assert {"CKPT201", "CKPT202"} <= {d.code for d in found}


async def test_unparsable_buffer_gives_one_diagnostic_and_the_server_goes_on(client: LanguageClient, project: Path):
    path = project / "broken.py"
    found = await open_file(client, path, EXAMPLE.replace("training_args = TrainingArguments(", "training_args = TrainingArguments(("))
    assert len(found) == 1 and "cannot parse" in found[0].message and found[0].severity == types.DiagnosticSeverity.Error
    assert found[0].range.start.line > 20  # at the error, not at the top
    hover = await client.text_document_hover_async(types.HoverParams(types.TextDocumentIdentifier(path.as_uri()), types.Position(16, 30)))
    assert hover is None
    assert await actions(client, path.as_uri(), whole(EXAMPLE)) == []
    change(client, path.as_uri(), 2, EXAMPLE)
    assert {"CKPT201", "CKPT202"} <= {d.code for d in await diagnostics_of(client, path.as_uri())}


async def test_notebook_findings_land_on_the_cell_line(client: LanguageClient, project: Path):
    cell = ["import torch\n", "from torch.utils.checkpoint import checkpoint\n", "\n", "def forward(block, x):\n",
            "    return checkpoint(block, x)"]
    notebook = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# notes"]},
                          {"cell_type": "code", "metadata": {}, "source": cell, "outputs": [], "execution_count": None}],
                "metadata": {"language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    text = json.dumps(notebook, indent=1) + "\n"
    found = await open_file(client, project / "nb.ipynb", text, language="json")
    assert [d.code for d in found] == ["CKPT101"]
    line = text.splitlines()[found[0].range.start.line]
    assert line[found[0].range.start.character:].startswith("checkpoint(block, x)")
    fixed = apply(text, (await actions(client, (project / "nb.ipynb").as_uri(), whole(text), only=[FIX_ALL]))[0].edit)
    assert fixed == cli_fixed(project, "nb.ipynb", text)


# -- configs ---------------------------------------------------------------------------------------------

async def test_yaml_config_gets_diagnostics_and_an_unknown_yaml_none(client: LanguageClient, project: Path):
    examples = project / "examples"
    examples.mkdir()
    shutil.copy(REPO_ROOT / "examples" / "ds_z3_config.json", examples / "ds_z3_config.json")
    sft = (REPO_ROOT / "examples" / "llamafactory_lora_sft.yaml").read_text(encoding="utf-8")
    found = await open_file(client, project / "sft.yaml", sft, language="yaml")
    report = json.loads(cli(project, "--output-format", "json", "sft.yaml").stdout)
    assert [(d.code, d.range.start.line + 1) for d in found] == [(f["code"], f["location"]["row"]) for f in report]
    assert "CKPT501" in {d.code for d in found}
    lora_r = next(d for d in found if d.code == "CKPT501")
    assert sft.splitlines()[lora_r.range.start.line][lora_r.range.start.character:lora_r.range.end.character].startswith("lora_r")

    workflow = "name: ci\non: [push]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - run: pytest\n"
    assert await open_file(client, project / "ci.yaml", workflow, language="yaml") == []
    assert await open_file(client, project / "notes.txt", "gradient_checkpointing=True\n", language="plaintext") == []


async def test_yaml_suppression_is_the_tools_noqa(client: LanguageClient, project: Path):
    sft = "model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nstage: sft\nfinetuning_type: lora\nlora_r: 16\n"
    path = project / "sft.yaml"
    found = await open_file(client, path, sft, language="yaml")
    assert [d.code for d in found] == ["CKPT501"]
    noqa = [a for a in await actions(client, path.as_uri(), found[0].range) if "noqa" in a.title]
    suppressed = apply(sft, noqa[0].edit)
    assert "lora_r: 16  # noqa: CKPT501" in suppressed
    change(client, path.as_uri(), 2, suppressed)
    assert await diagnostics_of(client, path.as_uri()) == []


# -- code actions ----------------------------------------------------------------------------------------

async def test_fix_all_is_check_fix(client: LanguageClient, project: Path):
    path = project / "train.py"
    await open_file(client, path, EXAMPLE)
    found = await actions(client, path.as_uri(), whole(EXAMPLE), only=[FIX_ALL])
    assert [a.kind for a in found] == [FIX_ALL]
    fixed = apply(EXAMPLE, found[0].edit)
    assert fixed != EXAMPLE
    assert fixed == cli_fixed(project, "train.py", EXAMPLE)


async def test_each_quick_fix_is_the_clis_edit_and_says_if_unsafe(client: LanguageClient, project: Path):
    path = project / "train.py"
    found = await open_file(client, path, EXAMPLE)
    report = json.loads(cli(project, "--output-format", "json", "train.py").stdout)
    fixable = [(d, f) for d, f in zip(found, report) if f["fix"] and f["fix"]["applicability"] in ("safe", "unsafe")]
    assert {f["fix"]["applicability"] for _, f in fixable} == {"safe", "unsafe"}
    for diagnostic, finding in fixable:
        offered = [a for a in await actions(client, path.as_uri(), diagnostic.range, only=["quickfix"], diagnostics=[diagnostic])
                   if a.diagnostics and a.diagnostics[0].code == diagnostic.code and "noqa" not in a.title]
        assert len(offered) == 1, [a.title for a in offered]
        action = offered[0]
        safe = finding["fix"]["applicability"] == "safe"
        assert bool(action.is_preferred) is safe
        assert action.title.endswith("(unsafe)") is not safe
        edits = [e for c in action.edit.document_changes for e in c.edits]
        assert [(e.new_text, e.range.start.line + 1, e.range.start.character + 1, e.range.end.line + 1, e.range.end.character + 1)
                for e in edits] == [(e["content"], e["location"]["row"], e["location"]["column"], e["end_location"]["row"],
                                     e["end_location"]["column"]) for e in finding["fix"]["edits"]]


async def test_single_fixes_match_fix_and_unsafe_fixes(client: LanguageClient, project: Path):
    from tests.conftest import CKPT101_FIXED, CKPT101_SCRIPT

    path = project / "ckpt101.py"
    found = await open_file(client, path, CKPT101_SCRIPT)
    assert [d.code for d in found] == ["CKPT101"]
    fix = next(a for a in await actions(client, path.as_uri(), found[0].range) if a.is_preferred)
    assert apply(CKPT101_SCRIPT, fix.edit) == cli_fixed(project, "ckpt101.py", CKPT101_SCRIPT) == CKPT101_FIXED

    explicit = CKPT101_SCRIPT.replace("checkpoint(block, x)", "checkpoint(block, x, use_reentrant=True)")
    path = project / "ckpt102.py"
    found = await open_file(client, path, explicit)
    assert [d.code for d in found] == ["CKPT102"]
    unsafe = [a for a in await actions(client, path.as_uri(), found[0].range) if a.title.endswith("(unsafe)")]
    assert len(unsafe) == 1 and not unsafe[0].is_preferred
    assert apply(explicit, unsafe[0].edit) == cli_fixed(project, "ckpt102.py", explicit, "--unsafe-fixes") != explicit
    assert await actions(client, path.as_uri(), found[0].range, only=[FIX_ALL]) == []  # no safe fix to apply


async def test_noqa_suppresses_the_finding(client: LanguageClient, project: Path):
    path = project / "train.py"
    found = await open_file(client, path, EXAMPLE)
    target = next(d for d in found if d.code == "CKPT205")
    noqa = [a for a in await actions(client, path.as_uri(), target.range) if a.title.startswith("CKPT205: suppress")]
    suppressed = apply(EXAMPLE, noqa[0].edit)
    assert "gradient_checkpointing=True,  # noqa: CKPT205" in suppressed
    change(client, path.as_uri(), 2, suppressed)
    after = await diagnostics_of(client, path.as_uri())
    assert "CKPT205" not in {d.code for d in after} and len(after) == len(found) - 1


@pytest_lsp.fixture(config=SERVER)
async def resolving_client(lsp_client: LanguageClient, project: Path):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities(resolve=True), root_uri=project.as_uri(),
        initialization_options={"ignore": ["CKPT205"], "gpu-memory": "80GiB"}))
    yield
    await lsp_client.shutdown_session()


async def test_editor_settings_and_lazy_edits(resolving_client: LanguageClient, project: Path):
    client = resolving_client
    path = project / "train.py"
    found = await open_file(client, path, EXAMPLE)
    assert "CKPT205" not in {d.code for d in found} and {"CKPT201", "CKPT202"} <= {d.code for d in found}
    offered = await actions(client, path.as_uri(), whole(EXAMPLE), only=[FIX_ALL])
    assert offered[0].edit is None  # computed when chosen
    resolved = await client.code_action_resolve_async(offered[0])
    assert apply(EXAMPLE, resolved.edit) == cli_fixed(project, "train.py", EXAMPLE, "--ignore", "CKPT205")

    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"ckpt-doctor": {"select": ["CKPT205"]}}))
    found = await diagnostics_of(client, path.as_uri())
    assert {d.code for d in found} == {"CKPT205"}  # select replaced, ignore kept as the table says


# -- hover -----------------------------------------------------------------------------------------------

def position_of(text: str, needle: str) -> types.Position:
    line = next(i for i, l in enumerate(text.splitlines()) if needle in l)
    return types.Position(line, text.splitlines()[line].index(needle) + 1)


async def hover(client: LanguageClient, path: Path, position: types.Position) -> types.Hover | None:
    return await client.text_document_hover_async(types.HoverParams(types.TextDocumentIdentifier(path.as_uri()), position))


async def test_hover_shows_the_estimate_with_origins(client: LanguageClient, project: Path):
    path = project / "train.py"
    await open_file(client, path, EXAMPLE)
    shown = await hover(client, path, position_of(EXAMPLE, "AutoModelForCausalLM.from_pretrained"))
    assert shown is not None and shown.contents.kind == types.MarkupKind.Markdown
    text = shown.contents.value
    assert "peak" in text and "phase of the peak" in text and "lightest plan that fits" in text
    assert "meta-llama/Llama-2-7b-hf (line 11" in text  # the argparse default, with its line
    assert "batch per device: 4 (line 28" in text
    assert "24 GiB" in text  # the default budget, said to be one
    cli_estimate = subprocess.run([sys.executable, "-m", "ckpt_doctor", "estimate", "train.py", "--output-format", "json"],
                                  cwd=project, capture_output=True, text=True, timeout=120)
    peak = json.loads(cli_estimate.stdout)["peak_bytes"]
    assert f"{peak / 2**30:.1f} GiB allocated" in text  # the number `estimate train.py` gives
    assert shown.range.start.line == position_of(EXAMPLE, "AutoModelForCausalLM.from_pretrained").line

    args_hover = await hover(client, path, position_of(EXAMPLE, "TrainingArguments("))
    assert args_hover is not None and args_hover.contents.value == text
    assert await hover(client, path, position_of(EXAMPLE, "load_dataset(")) is None


async def test_hover_says_when_the_model_cannot_be_resolved(client: LanguageClient, project: Path):
    path = project / "custom.py"
    script = EXAMPLE.replace("meta-llama/Llama-2-7b-hf", "my-org/unreleased-model")
    await open_file(client, path, script)
    shown = await hover(client, path, position_of(script, "AutoModelForCausalLM.from_pretrained"))
    assert shown is not None
    assert "No estimate" in shown.contents.value and "my-org/unreleased-model" in shown.contents.value
    assert "model-configs" in shown.contents.value


# -- configuration problems and closing ------------------------------------------------------------------

async def test_broken_configuration_is_said_once_and_the_defaults_apply(client: LanguageClient, project: Path):
    sub = project / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text("[tool.ckpt-doctor]\nselect = [\n", encoding="utf-8")
    from tests.conftest import CKPT101_SCRIPT

    found = await open_file(client, sub / "a.py", CKPT101_SCRIPT)
    assert [d.code for d in found] == ["CKPT101"]
    await open_file(client, sub / "b.py", CKPT101_SCRIPT)
    said = [m.message for m in client.messages if "pyproject.toml" in m.message]
    assert len(said) == 1 and "cannot read configuration" in said[0]


async def test_bad_editor_settings_are_reported_and_ignored(client: LanguageClient, project: Path):
    path = project / "train.py"
    before = await open_file(client, path, EXAMPLE)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"select": ["NOPE1"], "colour": "red"}))
    after = await diagnostics_of(client, path.as_uri())
    assert [d.code for d in after] == [d.code for d in before]
    assert any("editor settings ignored" in m.message for m in client.messages)


async def test_closing_a_buffer_clears_its_diagnostics(client: LanguageClient, project: Path):
    path = project / "train.py"
    assert await open_file(client, path, EXAMPLE)
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(path.as_uri())))
    assert await diagnostics_of(client, path.as_uri()) == []


# -- notebook documents (sent cell by cell) --------------------------------------------------------------

async def all_published(client: LanguageClient, uris: list[str]) -> dict[str, list[types.Diagnostic]]:
    """The diagnostics of each of `uris`, once all are published (they come together: none may be missed)."""
    import asyncio

    for uri in uris:
        client.diagnostics.pop(uri, None)
    for _ in range(400):
        if all(uri in client.diagnostics for uri in uris):
            return {uri: list(client.diagnostics[uri]) for uri in uris}
        await asyncio.sleep(0.05)
    raise AssertionError(f"no diagnostics for {[u for u in uris if u not in client.diagnostics]}")


async def open_notebook(client: LanguageClient, path: Path, cells: list[tuple[bool, str]]) -> list[str]:
    uri = path.as_uri()
    cell_uris = [f"vscode-notebook-cell:{path}#C{i}" for i in range(len(cells))]
    client.notebook_document_did_open(types.DidOpenNotebookDocumentParams(
        notebook_document=types.NotebookDocument(uri=uri, notebook_type="jupyter-notebook", version=1, cells=[
            types.NotebookCell(kind=types.NotebookCellKind.Code if code else types.NotebookCellKind.Markup, document=cell)
            for cell, (code, _) in zip(cell_uris, cells)]),
        cell_text_documents=[types.TextDocumentItem(uri=cell, language_id="python" if code else "markdown", version=1, text=text)
                             for cell, (code, text) in zip(cell_uris, cells)]))
    return cell_uris


async def test_notebook_document_cells_get_their_findings_fixes_and_hover(client: LanguageClient, project: Path):
    loading, _, training = EXAMPLE.partition("lora = LoraConfig(")
    training = "lora = LoraConfig(" + training
    cells = [(False, "# A LoRA fine-tune"), (True, loading.rstrip("\n")), (True, training.rstrip("\n"))]
    cell_uris = await open_notebook(client, project / "nb.ipynb", cells)
    by_cell = await all_published(client, cell_uris)
    assert by_cell[cell_uris[0]] == [] and by_cell[cell_uris[1]] == []
    found = by_cell[cell_uris[2]]
    assert {"CKPT201", "CKPT202", "CKPT205"} == {d.code for d in found}
    args = next(d for d in found if d.code == "CKPT205")
    assert cells[2][1].splitlines()[args.range.start.line][args.range.start.character:].startswith("gradient_checkpointing=True")

    # fix all: edits of the cells it changes, the same as check --fix on the .ipynb
    fix_all = (await actions(client, cell_uris[2], whole(cells[2][1]), only=[FIX_ALL]))[0]
    changed = {change.text_document.uri: change for change in fix_all.edit.document_changes}
    assert set(changed) == {cell_uris[2]}  # the PEFT model, TrainingArguments and their fixes are in the last cell
    notebook_text = json.dumps({"cells": [{"cell_type": "code" if code else "markdown", "metadata": {}, "source": text,
                                           **({"outputs": [], "execution_count": None} if code else {})} for code, text in cells],
                                "metadata": {"language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}, indent=1)
    by_cli = json.loads(cli_fixed(project, "nb.ipynb", notebook_text))["cells"]
    for index, (code, text) in enumerate(cells):
        edit = types.WorkspaceEdit(document_changes=[changed[cell_uris[index]]]) if cell_uris[index] in changed else None
        assert (apply(text, edit) if edit else text) == "".join(by_cli[index]["source"])

    # suppression in a cell
    noqa = [a for a in await actions(client, cell_uris[2], args.range) if a.title.startswith("CKPT205: suppress")]
    assert "  # noqa: CKPT205" in apply(cells[2][1], noqa[0].edit)

    # hover in a cell: the estimate, its range in the cell
    shown = await client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(cell_uris[1]), position_of(cells[1][1], "AutoModelForCausalLM.from_pretrained")))
    assert shown is not None and "peak" in shown.contents.value
    assert shown.range.start.line == position_of(cells[1][1], "AutoModelForCausalLM.from_pretrained").line

    client.notebook_document_did_close(types.DidCloseNotebookDocumentParams(
        notebook_document=types.NotebookDocumentIdentifier(uri=(project / "nb.ipynb").as_uri()),
        cell_text_documents=[types.TextDocumentIdentifier(uri) for uri in cell_uris]))
    cleared = await all_published(client, cell_uris)
    assert all(d == [] for d in cleared.values())
