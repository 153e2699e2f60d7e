"""Which torch / transformers / peft / trl a script targets, and where that answer came from.

Order (DESIGN.md §2): `--target-version` / `[tool.ckpt-doctor] target-versions`, then the project's
pins nearest the script (requirements*.txt, pyproject.toml), then the installed distributions (read
with importlib.metadata, never imported), then the newest release we know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TRACKED = ("torch", "transformers", "peft", "trl", "accelerate", "deepspeed")

# The newest releases whose behaviour the rules were checked against (docs/version-facts.md).
NEWEST_KNOWN = {
    "torch": "2.13",
    "transformers": "5.24",
    "peft": "0.21",
    "trl": "1.16",
    "accelerate": "1.15",
    "deepspeed": "0.19",
}

_PIN_FILES = ("requirements.txt", "requirements-train.txt", "requirements_train.txt", "requirements-dev.txt", "pyproject.toml")


@dataclass(frozen=True, order=True)
class Version:
    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> "Version":
        numbers = re.findall(r"\d+", text.split("+")[0])
        if not numbers:
            raise ValueError(f"not a version: {text!r}")
        return cls(tuple(int(n) for n in numbers[:3]))

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)

    def at_least(self, text: str) -> bool:
        return self >= Version.parse(text)


@dataclass(frozen=True)
class Target:
    version: Version
    source: str  # "--target-version", "requirements.txt", "installed", "newest known", ...

    def describe(self, package: str) -> str:
        return f"{package} {self.version} ({self.source})"


class TargetVersions:
    def __init__(
        self,
        explicit: dict[str, str] | None = None,
        script: str | Path | None = None,
        root: Path | None = None,
        ceilings: dict[str, tuple[str, str]] | None = None,
        inline_pins: dict[str, Version] | None = None,
    ):
        self._inline = inline_pins or {}  # `%pip install transformers==4.44.2` in a notebook
        self._explicit = {k.lower(): v for k, v in (explicit or {}).items()}
        # From the script's own API use (ckpt_doctor.analysis.api_era): they cap the installed / newest-known
        # guess, never a version the project states.
        self._ceilings = ceilings or {}
        self._script = Path(script).resolve() if script else None
        self._root = root
        self._cache: dict[str, Target] = {}

    def get(self, package: str) -> Target:
        if package not in self._cache:
            self._cache[package] = self._resolve(package)
        return self._cache[package]

    def at_least(self, package: str, version: str) -> bool:
        return self.get(package).version.at_least(version)

    def _resolve(self, package: str) -> Target:
        if package in self._explicit:
            return Target(Version.parse(self._explicit[package]), "target version")
        if package in self._inline:
            return Target(self._inline[package], "pinned by %pip install in the notebook")
        if self._script is not None:
            pinned = pins_near(self._script.parent, self._root)
            if package in pinned:
                version, where = pinned[package]
                return Target(version, f"pinned in {_short(where)}")
        guess = _installed(package)
        target = Target(guess, "installed") if guess is not None else Target(Version.parse(NEWEST_KNOWN[package]), "newest known")
        if package in self._ceilings:
            ceiling, reason = self._ceilings[package]
            if Version.parse(ceiling) < target.version:
                return Target(Version.parse(ceiling), f"inferred: {reason}")
        return target


def parse_target_versions(items: list[str] | dict[str, str]) -> dict[str, str]:
    """`["transformers=4.46", "trl==0.21"]` or a TOML table -> {"transformers": "4.46", ...}."""
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==?\s*([0-9][0-9A-Za-z.+-]*)\s*", item)
            if not match:
                raise ValueError(f"bad target version {item!r}: expected PACKAGE=VERSION, e.g. transformers=4.46")
            pairs.append((match.group(1), match.group(2)))
    out = {}
    for package, version in pairs:
        package = package.lower().replace("_", "-")
        if package not in TRACKED:
            raise ValueError(f"unknown package {package!r} in target versions (known: {', '.join(TRACKED)})")
        Version.parse(str(version))
        out[package] = str(version)
    return out


@lru_cache(maxsize=256)
def pins_near(folder: Path, root: Path | None = None) -> dict[str, tuple[Version, str]]:
    """Pins found in the nearest folder (walking up) that has a requirements or pyproject file."""
    current = folder
    while True:
        found: dict[str, tuple[Version, str]] = {}
        any_file = False
        for name in _PIN_FILES:
            candidate = current / name
            if candidate.is_file():
                any_file = True
                try:
                    text = candidate.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                for package, version in _pins_in(text).items():
                    found.setdefault(package, (version, str(candidate)))
        if any_file:
            return found
        if (root is not None and current == root) or (current / ".git").exists() or current.parent == current:
            return {}
        current = current.parent


_REQUIREMENT = re.compile(
    r"""^[ \t]*["']?(?P<name>torch|transformers|peft|trl|accelerate|deepspeed)(?![\w.-])(\[[^\]]*\])?[ \t]*(?P<spec>[^;"'#\n]*)""",
    re.IGNORECASE | re.MULTILINE,
)


def _pins_in(text: str) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for match in _REQUIREMENT.finditer(text):
        version = _version_from_spec(match.group("spec"))
        if version is not None:
            pins.setdefault(match.group("name").lower(), version)
    return pins


def pins_in_pip_command(line: str) -> dict[str, Version]:
    """`%pip install -q "transformers==4.44.2" trl<0.10` -> {"transformers": 4.44.2, "trl": 0.9.999}."""
    pins: dict[str, Version] = {}
    for token in re.findall(r"[\w.\[\]-]+\s*(?:[=~<>!]=?\s*[\w.*]+,?)+", line):
        pins.update(_pins_in(token))
    return pins


def _version_from_spec(spec: str) -> Version | None:
    """`==4.46.0` / `~=4.46` -> 4.46; `>=4.40,<5` -> just below 5 (the newest the pin admits)."""
    spec = spec.strip()
    exact = re.search(r"(?:===?|~=|<=)\s*([0-9][0-9.]*)", spec)
    if exact:
        return Version.parse(exact.group(1))
    upper = re.search(r"<\s*([0-9][0-9.]*)", spec)
    if upper:
        bound = Version.parse(upper.group(1))
        parts = list(bound.parts) + [0] * (3 - len(bound.parts))
        # the highest release below the bound: 5 -> 4.999, 4.50 -> 4.49.999
        for index in range(len(parts) - 1, -1, -1):
            if parts[index] > 0:
                parts[index] -= 1
                for later in range(index + 1, len(parts)):
                    parts[later] = 999
                return Version(tuple(parts))
    return None


def _short(path: str) -> str:
    import os

    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


@lru_cache(maxsize=None)
def _installed(package: str) -> Version | None:
    from importlib import metadata

    try:
        return Version.parse(metadata.version(package))
    except (metadata.PackageNotFoundError, ValueError):
        return None
