"""Notebooks are checked cell by cell, reported with cell and line, and fixed in place without
disturbing anything but the fixed cell's source."""

from __future__ import annotations

import json

import pytest

from conftest import CKPT101_SCRIPT, code_cell, markdown_cell, notebook

# Jupyter stores a cell's last line without its newline.
CELL3 = CKPT101_SCRIPT.rstrip("\n")
OUTPUT = {"name": "stdout", "output_type": "stream", "text": ["Tue Nov 25 ... NVIDIA-SMI 550.54\n"]}


def _notebook(indent: int = 1, cell3: str = CELL3) -> str:
    return notebook(
        [
            markdown_cell("# Fine-tuning with checkpointing \u2713\n\nWe call `checkpoint(block, x)` below.", "md-1"),
            code_cell("%pip install -q torch transformers\n!nvidia-smi\nimport os", "code-2", outputs=[OUTPUT], count=1),
            code_cell(cell3, "code-3", count=2),
            code_cell("%%time\nforward(None, 1)", "code-4"),
        ],
        indent=indent,
    )


def test_notebook_finding_reported_with_cell_and_line(cli):
    cli.write("nb.ipynb", _notebook())
    result = cli.check("nb.ipynb")
    assert result.code == 1, result.err
    lines = [line for line in result.out.splitlines() if "CKPT" in line and line.startswith("nb.ipynb")]
    assert len(lines) == 1
    assert lines[0].startswith("nb.ipynb:cell 3:5:12: CKPT101 [warning] ")


def test_notebook_in_folder_walk_and_json_location(cli):
    cli.write("notebooks/nb.ipynb", _notebook())
    result = cli.check(".", "--output-format", "json")
    data = result.json()
    assert len(data) == 1
    assert data[0]["cell"] == 3
    assert data[0]["location"] == {"row": 5, "column": 12}
    assert data[0]["filename"].endswith("nb.ipynb")
    edits = data[0]["fix"]["edits"]
    assert edits and all(e["location"]["row"] == 5 for e in edits)


def test_noqa_in_a_notebook_cell(cli):
    cli.write("nb.ipynb", _notebook(cell3=CELL3 + "  # noqa: CKPT101"))
    result = cli.check("nb.ipynb")
    assert result.code == 0 and result.codes == []


@pytest.mark.parametrize("indent", [1, 2, 4])
def test_notebook_fix_rewrites_only_that_cell(cli, indent):
    original = _notebook(indent=indent)
    path = cli.write("nb.ipynb", original)
    result = cli.check("nb.ipynb", "--fix")
    assert result.code == 0, result.out + result.err
    fixed_text = path.read_text(encoding="utf-8")
    before, after = json.loads(original), json.loads(fixed_text)

    # only cell 3's source changed, and only by the fix
    assert after["cells"][2]["source"] == CELL3.replace("checkpoint(block, x)", "checkpoint(block, x, use_reentrant=False)").splitlines(keepends=True)
    after_cells = [dict(c) for c in after["cells"]]
    before_cells = [dict(c) for c in before["cells"]]
    after_cells[2].pop("source"), before_cells[2].pop("source")
    assert after_cells == before_cells  # markdown, magics, outputs, metadata, ids, counts
    assert {k: v for k, v in after.items() if k != "cells"} == {k: v for k, v in before.items() if k != "cells"}
    assert after["cells"][1]["source"] == ["%pip install -q torch transformers\n", "!nvidia-smi\n", "import os"]
    assert after["cells"][3]["source"] == ["%%time\n", "forward(None, 1)"]

    # same layout: indentation, key order, non-ASCII kept as is, trailing newline
    assert fixed_text == original.replace("checkpoint(block, x)\"", "checkpoint(block, x, use_reentrant=False)\"")
    assert "\u2713" in fixed_text

    # a second --fix is a no-op
    again = cli.check("nb.ipynb", "--fix")
    assert again.code == 0 and "Fixed" not in again.out
    assert path.read_text(encoding="utf-8") == fixed_text


def test_notebook_fix_with_string_sources(cli):
    doc = json.loads(_notebook())
    for cell in doc["cells"]:
        cell["source"] = "".join(cell["source"])
    original = json.dumps(doc, indent=1)
    path = cli.write("nb.ipynb", original)
    assert cli.check("nb.ipynb", "--fix").code == 0
    after = json.loads(path.read_text())
    assert after["cells"][2]["source"] == CELL3.replace("checkpoint(block, x)", "checkpoint(block, x, use_reentrant=False)")
    assert after["cells"][1]["source"] == "%pip install -q torch transformers\n!nvidia-smi\nimport os"
    assert not path.read_text().endswith("\n")  # no newline added where there was none


def test_notebook_diff_writes_nothing(cli):
    original = _notebook()
    path = cli.write("nb.ipynb", original)
    result = cli.check("nb.ipynb", "--diff")
    assert result.code == 1
    assert "+    return checkpoint(block, x, use_reentrant=False)" in result.out.splitlines()
    assert path.read_text() == original


def test_notebook_diff_shows_no_internal_markers(cli):
    cli.write("nb.ipynb", _notebook())
    result = cli.check("nb.ipynb", "--diff")
    assert "#ckpt-doctor-" not in result.out


SETUP = """\
import torch
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-0.5B", torch_dtype=torch.bfloat16)
model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.config.use_cache = False
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
for batch in []:
    model(**batch).loss.backward()
    optimizer.step()"""


def test_notebook_messages_quote_cell_lines(cli):
    cli.write("nb.ipynb", notebook([code_cell(SETUP, "a"), code_cell('model.save_pretrained("out")', "b")]))
    result = cli.check("nb.ipynb", "--select", "CKPT204", "--fail-on", "info")
    assert result.codes == ["CKPT204"]
    assert "line 7" not in result.out


def test_notebook_insert_before_stays_in_its_cell(cli):
    path = cli.write("nb.ipynb", notebook([code_cell(SETUP, "a"), code_cell('model.save_pretrained("out")', "b")]))
    cli.check("nb.ipynb", "--select", "CKPT204", "--fix", "--unsafe-fixes")
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["source"] == SETUP.splitlines(keepends=True)
    assert "".join(cells[1]["source"]).startswith("model.config.use_cache = True\n")

