"""The JSON schema of `[tool.ckpt-doctor]` (ckpt_doctor/data/ckpt-doctor.schema.json), for editors: it knows every
key the configuration reader accepts and no other, and it agrees with the reader on every example configuration
of the README, the docs and the tests."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from ckpt_doctor.config import _KNOWN_KEYS, Settings, apply_table

jsonschema = pytest.importorskip("jsonschema")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "ckpt_doctor" / "data"
SCHEMA = json.loads((DATA / "ckpt-doctor.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def _accepted(table: dict) -> bool:
    try:
        apply_table(Settings(), table)
    except (TypeError, ValueError):
        return False
    return True


def _tables_in(text: str) -> list[dict]:
    """The [tool.ckpt-doctor] tables of the ```toml blocks of a markdown text."""
    tables = []
    for block in re.findall(r"^```toml\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        if "[tool.ckpt-doctor]" in block:
            tables.append(tomllib.loads(block)["tool"]["ckpt-doctor"])
    return tables


def _tables_in_tests() -> list[tuple[str, dict]]:
    """Every configuration the tests write: string constants that start a [tool.ckpt-doctor] table."""
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("[tool.ckpt-doctor]\n"):
                try:
                    data = tomllib.loads(node.value)
                except tomllib.TOMLDecodeError:
                    continue  # the invalid-TOML tests
                found.append((f"{path.name}:{node.lineno}", data["tool"]["ckpt-doctor"]))
    return found


def test_schema_is_a_valid_draft7_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_schema_has_exactly_the_keys_the_reader_accepts():
    assert set(SCHEMA["properties"]) == _KNOWN_KEYS
    assert SCHEMA["additionalProperties"] is False


def test_output_format_choices_match():
    from ckpt_doctor.check import OUTPUT_FORMATS

    assert SCHEMA["properties"]["output-format"]["enum"] == list(OUTPUT_FORMATS)


def test_readme_and_docs_examples_validate():
    tables = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        tables += _tables_in(doc.read_text(encoding="utf-8"))
    from ckpt_doctor import config

    tables += _tables_in(config.__doc__)
    assert len(tables) >= 3  # README, docs/configuration.md, config.py
    for table in tables:
        assert list(VALIDATOR.iter_errors(table)) == [], table
        assert _accepted(table), table


def test_schema_agrees_with_the_reader_on_every_configuration_in_the_tests():
    tables = _tables_in_tests()
    assert len(tables) >= 10
    for where, table in tables:
        valid = not list(VALIDATOR.iter_errors(table))
        assert valid == _accepted(table), f"{where}: schema says {'valid' if valid else 'invalid'}: {table}"


@pytest.mark.parametrize(
    "table",
    [
        {"select": ["CKPT2", "E501"]},
        {"fail-on": "fatal"},
        {"output-format": "xml"},
        {"gpu-memory": "lots"},
        {"target-versions": {"numpy": "2.0"}},
        {"per-file-ignores": {"a/*": ["nope"]}},
        {"model-configs": {"m": 3}},
        {"selct": ["CKPT"]},
    ],
    ids=lambda t: next(iter(t)),
)
def test_bad_tables_fail_both(table):
    assert list(VALIDATOR.iter_errors(table))
    assert not _accepted(table)


def test_pyproject_wrapper_checks_the_table_and_leaves_the_rest():
    from referencing import Registry, Resource

    wrapper = json.loads((DATA / "pyproject.schema.json").read_text(encoding="utf-8"))
    registry = Registry().with_resource(SCHEMA["$id"], Resource.from_contents(SCHEMA))
    validator = jsonschema.Draft7Validator(wrapper, registry=registry)
    good = tomllib.loads('[project]\nname = "x"\n[tool.ruff]\nline-length = 100\n[tool.ckpt-doctor]\nignore = ["CKPT204"]\n')
    assert list(validator.iter_errors(good)) == []
    bad = tomllib.loads('[tool.ckpt-doctor]\nfail-on = "never"\n')
    assert list(validator.iter_errors(bad))


def test_schema_ships_in_the_package():
    from importlib.resources import files

    assert json.loads(files("ckpt_doctor").joinpath("data/ckpt-doctor.schema.json").read_text(encoding="utf-8")) == SCHEMA
