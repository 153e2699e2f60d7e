"""Target versions as ranges: --target-version, then what the project declares (every common requirement
form, frameworks that pin transformers), then API-era evidence, then the project's own environment."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ckpt_doctor.analysis.versions as versions
from ckpt_doctor.analysis.versions import (
    FRAMEWORK_PINS,
    Target,
    TargetVersions,
    Version,
    parse_target_versions,
    pins_in_pip_command,
    pins_near,
    runs_in_project_env,
)

V = Version.parse


@pytest.fixture(autouse=True)
def _fresh_pin_cache(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # sources name files relative to the working folder
    versions.clear_caches()
    # whatever this test run has installed says nothing about the tmp_path projects
    monkeypatch.setattr(versions, "installed_version", lambda package: None)
    yield
    versions.clear_caches()


def project(tmp_path, files: dict[str, str]):
    (tmp_path / ".git").mkdir(exist_ok=True)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return TargetVersions(script=tmp_path / "train.py")


def span(target: Target) -> tuple[str | None, str | None]:
    return (str(target.low) if target.low else None, str(target.high) if target.high else None)


# -- explicit ---------------------------------------------------------------------------------------


def test_explicit_target_wins_over_pins(tmp_path):
    (tmp_path / "requirements.txt").write_text("transformers==4.46.3\n")
    versions_ = TargetVersions({"transformers": "5.24"}, script=tmp_path / "train.py", ceilings={"transformers": ("4.46.3", "old API")})
    target = versions_.get("transformers")
    assert target.version == V("5.24") and target.source == "target version"
    assert target.exact and target.declared
    assert target.describe("transformers") == "transformers 5.24 (target version)"


# -- requirements.txt -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, low, high",
    [
        ("transformers==4.46.3", "4.46.3", "4.46.3"),
        ("transformers ~= 4.40", "4.40", "4.999.999"),
        ("transformers~=4.46.1", "4.46.1", "4.46.999"),
        ("transformers[torch]>=4.38,<5", "4.38", "4.999.999"),
        ("transformers<4.50  # pinned for the old API", None, "4.49.999"),
        ("transformers==4.35.0 ; python_version >= '3.9'", "4.35.0", "4.35.0"),
        ("transformers>=4.45", "4.45", None),
        ("transformers>4.45", "4.45", None),
        ("transformers<=4.46.1", None, "4.46.1"),
        ("transformers==4.46.*", "4.46", "4.46.999"),
        ("transformers>=4.40,!=4.47.0,<4.50", "4.40", "4.49.999"),
        ("transformers[torch]>=4.45; python_version>\"3.8\"", "4.45", None),
        ("Transformers_==4.46.0", None, None),  # not a requirement on transformers
        ("transformers @ git+https://github.com/huggingface/transformers@v4.46.0", "4.46.0", "4.46.0"),
        ("git+https://github.com/huggingface/transformers@v4.46.0", "4.46.0", "4.46.0"),
        ("git+https://github.com/huggingface/transformers.git@4.47.1#egg=transformers", "4.47.1", "4.47.1"),
        ("git+https://github.com/huggingface/transformers", "5.24", None),  # the development head: newest known or later
        ("git+https://github.com/huggingface/transformers@main", "5.24", None),
        ("-e git+https://github.com/huggingface/transformers@v4.45.2#egg=transformers", "4.45.2", "4.45.2"),
        ("transformers==5.0.0rc1", "5.0.0", "5.0.0"),
    ],
)
def test_requirement_forms(tmp_path, line, low, high):
    target = project(tmp_path, {"requirements.txt": f"torch\n{line}\n"}).get("transformers")
    assert span(target) == (low, high)
    if low or high:
        assert target.declared and target.source.endswith("requirements.txt")
    else:
        assert target.source == "not declared"


def test_sources_and_descriptions(tmp_path):
    versions_ = project(tmp_path, {"requirements.txt": "transformers>=4.45\ntrl==0.21.0\npeft>=0.10,<1\n"})
    assert versions_.get("trl").source == "pinned in requirements.txt"
    assert versions_.get("trl").describe("trl") == "trl 0.21.0 (pinned in requirements.txt)"
    assert versions_.get("transformers").source == "requires >=4.45 in requirements.txt"
    assert versions_.get("transformers").describe("transformers") == "transformers >=4.45 (requires in requirements.txt)"
    assert versions_.get("peft").describe("peft") == "peft >=0.10,<1 (requires in requirements.txt)"
    assert versions_.get("torch").describe("torch") == "torch (version not declared)"


def test_other_packages_with_a_shared_prefix_are_not_pins(tmp_path):
    (tmp_path / "requirements.txt").write_text("torchvision==0.19.0\ntransformers-stream-generator==0.0.5\ntrl-extras==9.0\n")
    assert pins_near(tmp_path) == {}


def test_lower_bound_only_straddles(tmp_path):
    versions_ = project(tmp_path, {"requirements.txt": "transformers>=4.45\n"})
    assert versions_.at_least("transformers", "4.40") is True
    assert versions_.at_least("transformers", "4.45.0") is True  # 4.45 == 4.45.0
    assert versions_.at_least("transformers", "4.46") is None  # the range straddles it: era unknown
    assert versions_.lowest("transformers") == V("4.45")
    assert versions_.get("transformers").version == V("4.45")


def test_upper_bound_answers_false(tmp_path):
    versions_ = project(tmp_path, {"requirements.txt": "transformers>=4.40,<4.46\n"})
    assert versions_.at_least("transformers", "4.46") is False
    assert versions_.at_least("transformers", "4.41") is None
    assert versions_.at_least("transformers", "4.40") is True


def test_every_requirements_file_and_folder_counts(tmp_path):
    versions_ = project(
        tmp_path,
        {"requirements-train.txt": "trl==0.19.1\n", "requirements/gpu.txt": "deepspeed>=0.15\n", "requirements.txt": "torch==2.5.1\n"},
    )
    assert span(versions_.get("trl")) == ("0.19.1", "0.19.1")
    assert span(versions_.get("deepspeed")) == ("0.15", None)
    assert versions_.get("deepspeed").source.endswith("gpu.txt")
    assert span(versions_.get("torch")) == ("2.5.1", "2.5.1")


def test_nested_requirement_files_with_a_loop(tmp_path):
    versions_ = project(
        tmp_path,
        {
            "requirements.txt": "-r reqs/base.txt\n--requirement=reqs/extra.txt\n-c constraints.txt\ntransformers\n",
            "reqs/base.txt": "-r ../requirements.txt\ntorch>=2.4\n",  # loops back
            "reqs/extra.txt": "--requirement base.txt\npeft==0.13.2\n",
            "constraints.txt": "transformers==4.46.3\n",
        },
    )
    assert span(versions_.get("torch")) == ("2.4", None)
    assert span(versions_.get("peft")) == ("0.13.2", "0.13.2")
    assert span(versions_.get("transformers")) == ("4.46.3", "4.46.3")
    assert versions_.get("transformers").source.endswith("constraints.txt")


# -- pyproject.toml, setup.py, setup.cfg, environment.yml --------------------------------------------


def test_nearest_pins_win_and_pyproject_dependencies_count(tmp_path):
    (tmp_path / "requirements.txt").write_text("trl==0.21.0\n")
    sub = tmp_path / "recipes" / "sft"
    sub.mkdir(parents=True)
    (sub / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = [\n  "trl==1.16.0",\n]\n')
    assert TargetVersions(script=sub / "train.py").get("trl").version == V("1.16.0")
    assert TargetVersions(script=tmp_path / "train.py").get("trl").version == V("0.21.0")


UV_LOCK = """version = 1
requires-python = ">=3.12"

[[package]]
name = "torch"
version = "2.9.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "trl"
version = "0.25.1"
source = { registry = "https://pypi.org/simple" }
dependencies = [
    { name = "transformers" },
]
"""


@pytest.mark.parametrize("name, text", [
    ("uv.lock", UV_LOCK),
    ("poetry.lock", UV_LOCK.replace('source = { registry = "https://pypi.org/simple" }', 'description = ""')),
    ("Pipfile.lock", '{"_meta": {}, "default": {"trl": {"version": "==0.25.1"}}, "develop": {"torch": {"version": "==2.9.0"}}}'),
])
def test_a_lock_file_gives_the_versions_it_resolved_before_the_ranges_declared(tmp_path, name, text):
    # d0rbu/reasoning-vocab (holdout14): pyproject says `trl>=0.8.0`, uv.lock resolved trl 0.25.1, whose GRPOConfig
    # turns checkpointing on by default (docs/version-facts.md R1)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["trl>=0.8.0", "torch>=2.0"]\n')
    (tmp_path / name).write_text(text)
    found = TargetVersions(script=tmp_path / "exp" / "grpo_train.py")
    assert (found.get("trl").version, found.get("torch").version) == (V("0.25.1"), V("2.9.0"))
    assert found.get("trl").exact and name in found.get("trl").describe("trl")


def test_pyproject_optional_dependencies_and_tool_tables_are_not_requirements(tmp_path):
    versions_ = project(
        tmp_path,
        {
            "pyproject.toml": (
                '[project]\nname = "x"\ndependencies = ["torch>=2.4"]\n'
                '[project.optional-dependencies]\ntrain = ["transformers[torch]>=4.45,<5; python_version>\'3.8\'"]\n'
                '[tool.ruff.lint.isort]\nknown-third-party = ["trl==9.9"]\n'
            )
        },
    )
    assert span(versions_.get("transformers")) == ("4.45", "4.999.999")
    assert span(versions_.get("torch")) == ("2.4", None)
    assert versions_.get("trl").source == "not declared"


@pytest.mark.parametrize(
    "value, low, high",
    [
        ('"^4.45"', "4.45", "4.999.999"),
        ('"^0.12.1"', "0.12.1", "0.12.999"),
        ('"~4.45.1"', "4.45.1", "4.45.999"),
        ('"4.46.0"', "4.46.0", "4.46.0"),
        ('">=4.40,<4.50"', "4.40", "4.49.999"),
        ('{ version = "^4.45", extras = ["torch"] }', "4.45", "4.999.999"),
        ('"*"', None, None),
    ],
)
def test_poetry_dependencies(tmp_path, value, low, high):
    text = f'[tool.poetry]\nname = "x"\n[tool.poetry.dependencies]\npython = "^3.10"\ntransformers = {value}\n'
    assert span(project(tmp_path, {"pyproject.toml": text}).get("transformers")) == (low, high)


def test_invalid_toml_falls_back_to_the_pattern(tmp_path):
    text = '[project\ndependencies = [\n  "transformers==4.44.2",\n'
    assert span(project(tmp_path, {"pyproject.toml": text}).get("transformers")) == ("4.44.2", "4.44.2")


def test_setup_py_is_read_without_running_it(tmp_path):
    setup = (
        "import sys\nfrom setuptools import setup\n"
        "sys.exit('never executed')\n"
        "REQUIRED = ['torch>=2.3', 'transformers>=4.45,<4.47']\n"
        "EXTRAS = {'rl': ['trl==0.12.1'], 'dev': ['pytest']}\n"
        "setup(name='x', install_requires=REQUIRED + ['accelerate~=1.0'], extras_require=EXTRAS)\n"
    )
    versions_ = project(tmp_path, {"setup.py": setup})
    assert span(versions_.get("transformers")) == ("4.45", "4.46.999")
    assert versions_.get("transformers").source == "requires >=4.45,<4.47 in setup.py"
    assert versions_.get("transformers").describe("transformers") == "transformers >=4.45,<4.47 (requires in setup.py)"
    assert span(versions_.get("trl")) == ("0.12.1", "0.12.1")
    assert span(versions_.get("accelerate")) == ("1.0", "1.999.999")


def test_setup_cfg_install_requires(tmp_path):
    cfg = "[metadata]\nname = x\n[options]\ninstall_requires =\n    peft>=0.11\n    transformers==4.44.0\n[options.extras_require]\nrl =\n    trl<0.12\n"
    versions_ = project(tmp_path, {"setup.cfg": cfg})
    assert span(versions_.get("transformers")) == ("4.44.0", "4.44.0")
    assert span(versions_.get("peft")) == ("0.11", None)
    assert span(versions_.get("trl")) == (None, "0.11.999")


def test_conda_environment_with_a_pip_section(tmp_path):
    env = (
        "name: train\nchannels:\n  - pytorch\n  - conda-forge\n"
        "dependencies:\n  - python=3.11\n  - pytorch::pytorch=2.4.1=py3.11_cuda12.1_0\n  - accelerate>=0.34\n"
        "  - pip\n  - pip:\n      - transformers[torch]==4.46.2\n      - \"trl>=0.12,<0.13\"\n"
        "other:\n  - peft==0.1\n"
    )
    versions_ = project(tmp_path, {"environment.yml": env})
    assert span(versions_.get("torch")) == ("2.4.1", "2.4.1")
    assert span(versions_.get("accelerate")) == ("0.34", None)
    assert span(versions_.get("transformers")) == ("4.46.2", "4.46.2")
    assert span(versions_.get("trl")) == ("0.12", "0.12.999")
    assert versions_.get("peft").source == "not declared"


# -- frameworks that pin transformers ----------------------------------------------------------------


def test_axolotl_release_pins_transformers(tmp_path):
    # axolotl v0.5.0 requirements.txt: transformers==4.46.1 (docs/version-facts.md [F1])
    versions_ = project(tmp_path, {"requirements.txt": "axolotl[flash-attn]==0.5.0\n"})
    target = versions_.get("transformers")
    assert span(target) == ("4.46.1", "4.46.1") and target.declared
    assert target.describe("transformers") == "transformers 4.46.1 (required by axolotl 0.5.0, pinned in requirements.txt)"


def test_framework_ranges(tmp_path):
    # llamafactory 0.9.1: >=4.41.2,<=4.46.1; 0.9.2: >=4.41.2,<=4.49.0; later releases beyond the table
    target = project(tmp_path, {"requirements.txt": "llamafactory>=0.9.1,<0.9.3\n"}).get("transformers")
    assert span(target) == ("4.41.2", "4.49.0")
    versions.clear_caches()
    target = project(tmp_path, {"requirements.txt": "llamafactory>=0.9.4\n"}).get("transformers")
    assert span(target) == ("4.51.0", None)


def test_trl_release_gives_a_transformers_floor(tmp_path):
    versions_ = project(tmp_path, {"requirements.txt": "trl==0.21.0\n"})
    assert span(versions_.get("transformers")) == ("4.55.0", None)
    assert versions_.at_least("transformers", "4.46") is True
    assert versions_.at_least("transformers", "5.0") is None


def test_the_projects_own_transformers_requirement_beats_the_framework(tmp_path):
    versions_ = project(tmp_path, {"requirements.txt": "axolotl==0.5.0\ntransformers==4.47.0\n"})
    assert versions_.get("transformers").source == "pinned in requirements.txt"


def test_framework_table_rows_are_ordered_and_parse():
    for framework in {row[0] for row in FRAMEWORK_PINS}:
        rows = [row for row in FRAMEWORK_PINS if row[0] == framework]
        for (_, since, until, spec), following in zip(rows, rows[1:] + [None]):
            assert V(since) < V(until)
            assert versions._spec_range(spec) != (None, None)
            if following is not None:
                assert V(until) <= V(following[1])


# -- API-era evidence --------------------------------------------------------------------------------


def test_api_era_evidence_without_a_declaration(tmp_path):
    versions_ = TargetVersions(
        script=tmp_path / "train.py",
        ceilings={"transformers": ("4.46.3", "`evaluation_strategy=` is gone from 4.57")},
        floors={"trl": ("0.21", "`SFTConfig(max_length=...)`")},
    )
    transformers = versions_.get("transformers")
    assert span(transformers) == (None, "4.46.3") and not transformers.declared
    assert transformers.source == "inferred: `evaluation_strategy=` is gone from 4.57"
    assert versions_.at_least("transformers", "4.57") is False
    assert versions_.at_least("transformers", "4.40") is None
    assert span(versions_.get("trl")) == ("0.21", None)
    assert versions_.at_least("trl", "0.21") is True


def test_api_era_narrows_a_declaration_only_where_it_agrees(tmp_path):
    project(tmp_path, {"requirements.txt": "transformers>=4.40\ntrl==0.21.0\n"})
    versions_ = TargetVersions(
        script=tmp_path / "train.py",
        ceilings={"transformers": ("4.46.3", "old API"), "trl": ("0.20.999", "old TRL API")},
    )
    assert span(versions_.get("transformers")) == ("4.40", "4.46.3")
    assert versions_.get("transformers").declared
    assert span(versions_.get("trl")) == ("0.21.0", "0.21.0")  # the pin is not contradicted
    assert versions_.get("trl").source == "pinned in requirements.txt"


def test_a_development_head_whose_code_cannot_run_on_it_was_an_earlier_head(tmp_path):
    # openthaigpt, DHS-LLM-Workshop (holdouts): `git+https://github.com/huggingface/transformers` in a project whose
    # code passes `Trainer(tokenizer=...)`, gone from transformers 5: the head it was installed at was a 4.x one
    project(tmp_path, {"requirements.txt": "git+https://github.com/huggingface/transformers\n"})
    era = {"transformers": ("4.57.6", "`Trainer(tokenizer=...)` is gone from transformers 5")}
    target = TargetVersions(script=tmp_path / "train.py", ceilings=era).get("transformers")
    assert span(target) == (None, "4.57.6") and "development head" in target.source and target.declared
    assert span(TargetVersions(script=tmp_path / "train.py").get("transformers")) == ("5.24", None)  # no evidence: a fresh install


# -- installed distributions --------------------------------------------------------------------------


def test_installed_is_ignored_outside_the_project(tmp_path, monkeypatch):
    monkeypatch.setattr(versions, "installed_version", lambda package: V("4.57.1"))
    (tmp_path / ".git").mkdir()
    elsewhere = tmp_path.parent / (tmp_path.name + "-ci-venv")
    target = TargetVersions(script=tmp_path / "train.py", env_prefix=elsewhere).get("transformers")
    assert target == Target(None, None, "not declared")
    assert TargetVersions(script=tmp_path / "train.py", env_prefix=elsewhere).at_least("transformers", "4.0") is None


def test_installed_is_used_inside_the_project(tmp_path, monkeypatch):
    monkeypatch.setattr(versions, "installed_version", lambda package: V("4.57.1"))
    (tmp_path / ".git").mkdir()
    (tmp_path / "src").mkdir()
    versions_ = TargetVersions(script=tmp_path / "src" / "train.py", env_prefix=tmp_path / ".venv")
    target = versions_.get("transformers")
    assert span(target) == ("4.57.1", "4.57.1") and target.source == "installed in the project's environment"
    assert not target.declared
    # API-era evidence that contradicts the environment wins
    versions_ = TargetVersions(script=tmp_path / "train.py", env_prefix=tmp_path / ".venv", ceilings={"transformers": ("4.46.3", "old API")})
    assert span(versions_.get("transformers")) == (None, "4.46.3")


def test_runs_in_project_env(tmp_path):
    assert runs_in_project_env(tmp_path, tmp_path / ".venv")
    assert not runs_in_project_env(tmp_path / "proj", tmp_path / "venv")
    assert not runs_in_project_env(None, tmp_path)


# -- nothing known ----------------------------------------------------------------------------------


def test_search_stops_at_the_repository_root(tmp_path):
    (tmp_path / "requirements.txt").write_text("transformers==4.30.0\n")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    target = TargetVersions(script=repo / "train.py").get("transformers")
    assert target.low is None and target.source == "not declared"


def test_nothing_declared_means_the_era_is_unknown(tmp_path):
    versions_ = project(tmp_path, {})
    target = versions_.get("trl")
    assert target == Target(None, None, "not declared") and not target.declared and not target.exact
    assert target.describe("trl") == "trl (version not declared)"
    assert target.version == V(versions.NEWEST_KNOWN["trl"])  # for messages only
    for boundary in ("0.1", "0.21", "99"):
        assert versions_.at_least("trl", boundary) is None
    assert versions_.lowest("trl") is None


# -- helpers kept from before ------------------------------------------------------------------------


def test_notebook_pins(tmp_path):
    pins = pins_in_pip_command('%pip install -q "transformers==4.44.2" trl<0.10 torch>=2.0')
    assert pins == {"transformers": V("4.44.2"), "trl": V("0.9.999")}
    versions_ = TargetVersions(script=tmp_path / "nb.ipynb", inline_pins=pins)
    assert versions_.get("transformers").source == "pinned by %pip install in the notebook"
    assert versions_.get("transformers").declared


@pytest.mark.parametrize("bad", ["transformers", "transfomers=4.46", "torch=latest"])
def test_bad_target_versions_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_target_versions([bad])


def test_version_comparison_is_numeric():
    assert V("4.46.3") > V("4.9")
    assert V("2.13.0+cpu").at_least("2.13")
    assert not V("5.22.0").at_least("5.23")
    assert V("4.46") == V("4.46.0") and hash(V("4.46")) == hash(V("4.46.0"))


def test_the_module_imports_nothing_heavy():
    code = "import sys, ckpt_doctor.analysis.versions; print(sorted(m for m in ('torch', 'transformers', 'tomllib', 'configparser', 'importlib.metadata') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_venv_at_the_repository_root_serves_a_sub_project(tmp_path, monkeypatch):
    monkeypatch.setattr(versions, "installed_version", lambda package: V("4.44.0"))
    project(tmp_path, {"recipes/sft/requirements.txt": "torch==2.4.0\n"})
    versions_ = TargetVersions(script=tmp_path / "recipes" / "sft" / "train.py", env_prefix=tmp_path / ".venv")
    assert versions_.get("torch").source == "pinned in recipes/sft/requirements.txt"
    assert versions_.get("transformers").source == "installed in the project's environment"
