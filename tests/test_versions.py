"""Target versions: --target-version, then pins near the script, then installed, then newest known."""

from __future__ import annotations

import pytest

from ckpt_doctor.analysis.versions import NEWEST_KNOWN, TargetVersions, Version, parse_target_versions, pins_near


@pytest.fixture(autouse=True)
def _fresh_pin_cache():
    pins_near.cache_clear()
    yield
    pins_near.cache_clear()


def test_explicit_target_wins_over_pins(tmp_path):
    (tmp_path / "requirements.txt").write_text("transformers==4.46.3\n")
    versions = TargetVersions({"transformers": "5.24"}, script=tmp_path / "train.py")
    target = versions.get("transformers")
    assert target.version == Version.parse("5.24") and target.source == "target version"


@pytest.mark.parametrize(
    "line, expected",
    [
        ("transformers==4.46.3", "4.46.3"),
        ("transformers ~= 4.40", "4.40"),
        ("transformers[torch]>=4.38,<5", "4.999.999"),
        ("transformers<4.50  # pinned for the old API", "4.49.999"),
        ("transformers==4.35.0 ; python_version >= '3.9'", "4.35.0"),
    ],
)
def test_requirement_pins(tmp_path, line, expected):
    (tmp_path / "requirements.txt").write_text(f"torch\n{line}\n")
    target = TargetVersions(script=tmp_path / "train.py").get("transformers")
    assert target.version == Version.parse(expected)
    assert target.source.startswith("pinned in ") and target.source.endswith("requirements.txt")


def test_other_packages_with_a_shared_prefix_are_not_pins(tmp_path):
    (tmp_path / "requirements.txt").write_text("torchvision==0.19.0\ntransformers-stream-generator==0.0.5\ntrl-extras==9.0\n")
    assert pins_near(tmp_path) == {}


def test_lower_bound_only_is_not_a_pin(tmp_path):
    (tmp_path / "requirements.txt").write_text("transformers>=4.40\n")
    assert "transformers" not in pins_near(tmp_path)


def test_nearest_pins_win_and_pyproject_dependencies_count(tmp_path):
    (tmp_path / "requirements.txt").write_text("trl==0.21.0\n")
    sub = tmp_path / "recipes" / "sft"
    sub.mkdir(parents=True)
    (sub / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = [\n  "trl==1.16.0",\n]\n')
    assert TargetVersions(script=sub / "train.py").get("trl").version == Version.parse("1.16.0")
    assert TargetVersions(script=tmp_path / "train.py").get("trl").version == Version.parse("0.21.0")


def test_search_stops_at_the_repository_root(tmp_path):
    (tmp_path / "requirements.txt").write_text("transformers==4.30.0\n")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    target = TargetVersions(script=repo / "train.py").get("transformers")
    assert target.version != Version.parse("4.30.0")


def test_without_pins_or_installation_the_newest_known_applies(tmp_path, monkeypatch):
    import ckpt_doctor.analysis.versions as versions

    monkeypatch.setattr(versions, "_installed", lambda package: None)
    target = TargetVersions(script=tmp_path / "train.py").get("trl")
    assert target.version == Version.parse(NEWEST_KNOWN["trl"]) and target.source == "newest known"


@pytest.mark.parametrize("bad", ["transformers", "transfomers=4.46", "torch=latest"])
def test_bad_target_versions_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_target_versions([bad])


def test_version_comparison_is_numeric():
    assert Version.parse("4.46.3") > Version.parse("4.9")
    assert Version.parse("2.13.0+cpu").at_least("2.13")
    assert not Version.parse("5.22.0").at_least("5.23")
