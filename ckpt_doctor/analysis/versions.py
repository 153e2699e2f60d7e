"""Which torch / transformers / peft / trl a script targets, as a range, and where that answer came from.

A target is a range of releases (`Target.low` .. `Target.high`, either end may be unknown). Per package,
the first of these that says something wins (DESIGN.md §2):

1. `--target-version` / `[tool.ckpt-doctor] target-versions`: exact.
2. What the project declares: `%pip install` pins in a notebook, then the requirements nearest the script
   (uv / poetry / pdm / pipenv lock files, requirements*.txt with nested -r/-c, pyproject.toml, setup.py, setup.cfg,
   environment.yml), and, when
   the project says nothing about transformers itself, the transformers range a framework it requires
   (axolotl, LLaMA-Factory, TRL) declares at that release (FRAMEWORK_PINS, docs/version-facts.md [F1]).
3. API-era evidence from the script's own code (`ceilings=`, `floors=`): "inferred: <reason>". With a
   declaration they only narrow it where they agree with it.
4. The installed distributions (importlib.metadata, never imported), only when ckpt-doctor runs in the
   project's own environment (`runs_in_project_env`).
5. Nothing: Target(None, None, "not declared"); `at_least` answers None ("the era is unknown").
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache, total_ordering
from pathlib import Path

from ckpt_doctor.analysis.config_files import README_NAMES, shown_path

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

INSTALLED = "installed in the project's environment"
NOT_DECLARED = "not declared"

# What a framework release itself requires of transformers: (framework, from release, up to but not
# including release, transformers specifier). Each row is read from the framework's own requirements at
# the release tags it covers; docs/version-facts.md "## Framework pins [F1]" cites them.
FRAMEWORK_PINS: tuple[tuple[str, str, str, str], ...] = (
    ("axolotl", "0.4.0", "0.5.0", "==4.37.0"),
    ("axolotl", "0.5.0", "0.5.1", "==4.46.1"),
    ("axolotl", "0.5.1", "0.6.0", "==4.46.3"),
    ("axolotl", "0.6.0", "0.7.0", ">=4.46.3"),
    ("axolotl", "0.7.0", "0.7.1", "==4.48.3"),
    ("axolotl", "0.7.1", "0.8.0", "==4.49.0"),
    ("axolotl", "0.8.0", "0.8.1", "==4.50.3"),
    ("axolotl", "0.8.1", "0.9.0", "==4.51.0"),
    ("axolotl", "0.9.0", "0.10.0", "==4.51.3"),
    ("axolotl", "0.10.0", "0.10.1", "==4.52.3"),
    ("axolotl", "0.10.1", "0.11.0", "==4.52.4"),
    ("axolotl", "0.11.0", "0.12.0", "==4.53.1"),
    ("axolotl", "0.12.0", "0.12.2", "==4.55.0"),
    ("axolotl", "0.12.2", "0.13.0", "==4.55.2"),
    ("axolotl", "0.13.0", "0.13.1", "==4.57.1"),
    ("axolotl", "0.13.1", "0.14.0", "==4.57.6"),
    ("axolotl", "0.14.0", "0.15.0", "==5.0.0"),
    ("axolotl", "0.15.0", "0.16.0", "==5.3.0"),
    ("axolotl", "0.16.0", "0.16.1", "==5.4.0"),
    ("axolotl", "0.16.1", "0.17.0", "==5.5.0"),
    ("axolotl", "0.17.0", "0.18.0", "==5.9.0"),
    ("axolotl", "0.18.0", "0.18.1", "==5.14.1"),
    ("llmtuner", "0.5.0", "0.5.2", ">=4.36.2"),  # LLaMA-Factory's PyPI name before 0.8.0
    ("llmtuner", "0.5.2", "0.7.2", ">=4.37.2"),
    ("llamafactory", "0.8.0", "0.9.0", ">=4.41.2"),
    ("llamafactory", "0.9.0", "0.9.1", ">=4.41.2,<=4.45.0"),
    ("llamafactory", "0.9.1", "0.9.2", ">=4.41.2,<=4.46.1"),
    ("llamafactory", "0.9.2", "0.9.3", ">=4.41.2,<=4.49.0"),
    ("llamafactory", "0.9.3", "0.9.4", ">=4.45.0,<=4.52.4"),
    ("llamafactory", "0.9.4", "0.9.5", ">=4.51.0,<=4.57.1"),
    ("llamafactory", "0.9.5", "0.9.6", ">=4.55.0,<=5.6.0"),
    ("trl", "0.8.0", "0.11.0", ">=4.31.0"),
    ("trl", "0.11.0", "0.12.0", ">=4.40.0"),
    ("trl", "0.12.0", "0.12.2", ">=4.46.0"),
    ("trl", "0.12.2", "0.13.0", "<4.47.0"),
    ("trl", "0.13.0", "0.18.0", ">=4.46.0"),
    ("trl", "0.18.0", "0.19.0", ">=4.50.0"),
    ("trl", "0.19.0", "0.20.0", ">=4.51.0"),
    ("trl", "0.20.0", "0.21.0", ">=4.53.2"),
    ("trl", "0.21.0", "0.23.0", ">=4.55.0"),
    ("trl", "0.23.0", "0.27.0", ">=4.56.1"),
    ("trl", "0.27.0", "1.10.0", ">=4.56.2"),
)
_FRAMEWORKS = frozenset(row[0] for row in FRAMEWORK_PINS)
# the frameworks whose own config keys depend on their release (CKPT501): read from requirements, not tracked as a
# transformers source
FRAMEWORK_PACKAGES = ("ms-swift", "llamafactory", "axolotl")
_WANTED = frozenset(TRACKED) | _FRAMEWORKS | frozenset(FRAMEWORK_PACKAGES)


@total_ordering
@dataclass(frozen=True, eq=False)
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

    def _key(self) -> tuple[int, ...]:  # 4.46 == 4.46.0
        parts = list(self.parts)
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: "Version") -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def at_least(self, text: str) -> bool:
        return self >= Version.parse(text)


@dataclass(frozen=True)
class Target:
    low: Version | None  # lowest release the project allows / targets; None = not known
    high: Version | None  # highest release it allows; None = not known (treat as newest)
    source: str  # "target version", "pinned in requirements.txt", "requires >=4.45 in setup.py", "inferred: ..."
    package: str = field(default="", compare=False)  # for `version`'s newest-known fallback

    @property
    def version(self) -> Version:
        """One version for messages: the pin, else the low end, else the high end, else the newest known."""
        if self.low is not None:
            return self.low
        if self.high is not None:
            return self.high
        return Version.parse(NEWEST_KNOWN.get(self.package, "0"))

    @property
    def declared(self) -> bool:
        return self.source not in (NOT_DECLARED, INSTALLED) and not self.source.startswith("inferred")

    @property
    def exact(self) -> bool:
        return self.low is not None and self.low == self.high

    def describe(self, package: str) -> str:
        if self.low is None and self.high is None:
            return f"{package} (version not declared)"
        source = re.sub(r"^requires \S+ in ", "requires in ", self.source)
        return f"{package} {_range_text(self.low, self.high)} ({source})"


class TargetVersions:
    def __init__(
        self,
        explicit: dict[str, str] | None = None,
        script: str | Path | None = None,
        root: Path | None = None,
        ceilings: dict[str, tuple[str, str]] | None = None,
        inline_pins: dict[str, Version] | None = None,
        floors: dict[str, tuple[str, str]] | None = None,
        env_prefix: str | Path | None = None,
    ):
        self._explicit = {k.lower(): v for k, v in (explicit or {}).items()}
        self._inline = inline_pins or {}  # `%pip install transformers==4.44.2` in a notebook
        # From the script's own API use (ckpt_doctor.analysis.api_era): package -> (version, reason).
        self._ceilings = ceilings or {}
        self._floors = floors or {}
        self._script = Path(script).resolve() if script else None
        self._root = root
        self._env_prefix = env_prefix  # sys.prefix unless a test injects one
        self._cache: dict[str, Target] = {}

    def get(self, package: str) -> Target:
        if package not in self._cache:
            self._cache[package] = self._resolve(package)
        return self._cache[package]

    def at_least(self, package: str, version: str) -> bool | None:
        """True: every allowed release is >= version; False: none is; None: the range straddles it or is unknown."""
        target, boundary = self.get(package), Version.parse(version)
        if target.low is not None and target.low >= boundary:
            return True
        if target.high is not None and target.high < boundary:
            return False
        return None

    def lowest(self, package: str) -> Version | None:
        return self.get(package).low

    def _resolve(self, package: str) -> Target:
        if package in self._explicit:
            pinned = Version.parse(self._explicit[package])
            return Target(pinned, pinned, "target version", package)
        declared = self._declared(package)
        inferred = self._inferred(package)
        if declared is not None:
            return _narrow(declared, inferred)
        installed = self._installed(package)
        if installed is not None and (inferred is None or _contains(inferred, installed)):
            return Target(installed, installed, INSTALLED, package)
        return inferred or Target(None, None, NOT_DECLARED, package)

    def _declared(self, package: str) -> Target | None:
        if package in self._inline:
            pinned = self._inline[package]
            return Target(pinned, pinned, "pinned by %pip install in the notebook", package)
        if self._script is None:
            return None
        target = pins_near(self._script.parent, self._root).get(package)
        return Target(target.low, target.high, target.source, package) if target else None

    def _inferred(self, package: str) -> Target | None:
        floor, ceiling = self._floors.get(package), self._ceilings.get(package)
        if floor is None and ceiling is None:
            return None
        reasons = "; ".join(evidence[1] for evidence in (floor, ceiling) if evidence is not None)
        low = Version.parse(floor[0]) if floor else None
        high = Version.parse(ceiling[0]) if ceiling else None
        if low is not None and high is not None and low > high:  # the script mixes eras: no answer
            return None
        return Target(low, high, f"inferred: {reasons}", package)

    def _installed(self, package: str) -> Version | None:
        if self._script is None or not runs_in_project_env(project_folder(self._script.parent, self._root), self._env_prefix):
            return None
        return installed_version(package)


@lru_cache(maxsize=256)
def runs_in_project_env(project: Path | None, prefix: str | Path | None = None) -> bool:
    """Whether the interpreter (`sys.prefix`, or `prefix`) is an environment inside the project's folder.

    Only then do its installed distributions say anything about the project: pre-commit's isolated env or a
    CI venv with ckpt-doctor's own extras do not."""
    if project is None:
        return False
    return Path(prefix if prefix is not None else sys.prefix).resolve().is_relative_to(project.resolve())


DEVELOPMENT_HEAD = "development head"


def _narrow(declared: Target, inferred: Target | None) -> Target:
    """API-era evidence narrows a declared range only where it agrees with it; a development head (`git+...
    transformers`, read as the newest release or later) whose code cannot run there was installed when the head was
    older: the era evidence is the range then."""
    if inferred is None:
        return declared
    if DEVELOPMENT_HEAD in declared.source and inferred.high is not None and declared.low is not None and inferred.high < declared.low:
        return Target(inferred.low, inferred.high, f"{declared.source} of an earlier install; {inferred.source}", declared.package)
    low, high = declared.low, declared.high
    if inferred.low is not None and (low is None or inferred.low > low) and (high is None or inferred.low <= high):
        low = inferred.low
    if inferred.high is not None and (high is None or inferred.high < high) and (low is None or inferred.high >= low):
        high = inferred.high
    if (low, high) == (declared.low, declared.high):
        return declared
    return Target(low, high, f"{declared.source}; {inferred.source}", declared.package)


def _contains(target: Target, version: Version) -> bool:
    return (target.low is None or target.low <= version) and (target.high is None or version <= target.high)


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


# -- finding the project's requirement files ------------------------------------------------------


@lru_cache(maxsize=1024)
def _requirement_files(folder: Path) -> tuple[Path, ...]:
    """The requirement files of one folder, most specific first (a requirements file before pyproject); each
    folder is listed once per process, however many scripts lie below it."""
    try:
        names = set(os.listdir(folder))  # one listing instead of a glob and a stat per candidate
    except OSError:
        return ()
    texts = sorted((n for n in names if n.startswith("requirements") and n.endswith(".txt")),
                   key=lambda n: (n != "requirements.txt", n))
    nested = sorted((folder / "requirements").glob("*.txt")) if "requirements" in names and (folder / "requirements").is_dir() else []
    others = [n for n in ("pyproject.toml", "setup.py", "setup.cfg", "environment.yml", "environment.yaml") if n in names]
    own = [folder / f for f in FRAMEWORK_VERSION_FILES if f.split("/", 1)[0] in names]  # a framework's own checkout
    locks = [folder / n for n in LOCK_FILES if n in names]  # the versions resolved, before the ranges declared
    # last, a README whose install commands pin a tracked package (`pip install transformers==4.41.0`)
    readmes = [folder / n for n in README_NAMES if n in names and _readme_requirements(_text(folder / n), folder / n)]
    return tuple(p for p in own + locks + [folder / n for n in texts] + nested + [folder / n for n in others] + readmes if p.is_file())


# lock files: uv, poetry and pdm write `[[package]]` / `name = "trl"` / `version = "0.25.1"`; pipenv a JSON
LOCK_FILES = ("uv.lock", "poetry.lock", "pdm.lock", "Pipfile.lock")
_LOCKED = re.compile(r'^\[\[package\]\]\s*\nname\s*=\s*"([^"]+)"\s*\nversion\s*=\s*"([^"]+)"', re.MULTILINE)


def _lock_requirements(text: str, path: Path) -> list[_Requirement]:
    """The exact versions a lock file resolved (the first entry of a package a lock lists twice)."""
    if path.name == "Pipfile.lock":
        try:
            data = json.loads(text)
        except ValueError:
            return []
        sections = [data.get(key) for key in ("default", "develop")] if isinstance(data, dict) else []
        pairs = [(name, str(entry.get("version", "")).lstrip("=")) for section in sections if isinstance(section, dict)
                 for name, entry in section.items() if isinstance(entry, dict)]
    else:
        pairs = _LOCKED.findall(text)
    return [req for name, version in pairs if version and (req := _parse_requirement(f"{name}=={version}", path)) is not None]


_PIP_INSTALL = re.compile(r"\bpip3?\s+install\b(.*)")
_VERSIONED_WORD = re.compile(r"[\w.\[\]-]+\s*(?:[=~<>!]=?\s*[\w.*]+,?)+")  # `transformers==4.41.0`, `trl<0.10`


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _readme_requirements(text: str, path: Path) -> list[_Requirement]:
    """The versioned requirements of a README's `pip install` lines."""
    out = []
    for line in text.splitlines():
        command = _PIP_INSTALL.search(line.replace("\\", " "))
        for word in _VERSIONED_WORD.findall(command.group(1).replace('"', " ").replace("'", " ")) if command else ():
            req = _parse_requirement(word, path)
            out += [req] if req is not None and (req[1] is not None or req[2] is not None) else []
    return out


# The file that states a framework's own release, in its checkout: a script there (the framework's examples) runs that
# release, whatever the requirement files say about other packages
FRAMEWORK_VERSION_FILES = {
    "swift/version.py": "ms-swift",  # `__version__ = '4.6.0.dev0'`
    "src/llamafactory/extras/env.py": "llamafactory",  # `VERSION = "0.9.6.dev0"`
}  # (axolotl keeps its release in a bare `VERSION` file, a name too common to tell its checkout by)
_OWN_VERSION = re.compile(r"""^(?:__version__|VERSION)\s*=\s*["']([0-9][^"']*)["']""", re.M)


def _own_release(path: Path, text: str) -> list[_Requirement]:
    """The framework's own release, from its version file, as an exact pin."""
    package = next((name for file, name in FRAMEWORK_VERSION_FILES.items() if path.as_posix().endswith("/" + file)), None)
    match = _OWN_VERSION.search(text) if package else None
    if match is None:
        return []
    version = Version.parse(match.group(1))
    return [(package, version, version, f"=={match.group(1)}", path)]


@lru_cache(maxsize=256)
def _walk(folder: Path, root: Path | None) -> tuple[Path | None, tuple[Path, ...]]:
    """Walk up from `folder` to the first folder with requirement files (its files), stopping at `root`, a
    folder with `.git`, or the filesystem root. -> (the project folder or None, its requirement files)."""
    current = folder
    while True:
        files = _requirement_files(current)
        if files:
            return current, tuple(files)
        if (root is not None and current == root) or (current / ".git").exists():
            return current, ()
        if current.parent == current:
            return None, ()
        current = current.parent


@lru_cache(maxsize=256)
def project_folder(folder: Path, root: Path | None = None) -> Path | None:
    """The project's folder seen from a script folder: the repository (`root`, or the nearest folder with
    `.git` above it), else the folder whose requirement files the walk found, else None."""
    for current in (folder, *folder.parents):
        if (root is not None and current == root) or (current / ".git").exists():
            return current
    return _walk(folder, root)[0]


def pins_near(folder: Path, root: Path | None = None) -> dict[str, Target]:
    """What the nearest folder (walking up) with requirement files declares: package -> Target.

    Only versioned requirements count; a framework's own transformers requirement fills in when the
    project states nothing about transformers itself."""
    return _pins_in(_stamped(_walk(folder, root)[1]))[0]


def versions_key(script: str | Path, root: Path | None = None) -> str:
    """What the versions a script targets are read from, named without reading it: the requirement files the walk
    up from the script finds, and the installed releases where the interpreter's environment is the project's. With
    the stamps of `requirement_files_read`, a cache keyed by it stays right when any of them changes."""
    return _folder_versions_key(os.path.dirname(os.path.abspath(script)), root)


@lru_cache(maxsize=1024)
def _folder_versions_key(folder_name: str, root: Path | None) -> str:
    folder = Path(folder_name).resolve()
    parts = [str(p) for p in _walk(folder, root)[1]]
    if runs_in_project_env(project_folder(folder, root)):
        parts += [f"{package}={installed_version(package)}" for package in TRACKED]
    return ";".join(parts)


def requirement_files_read(script: str | Path, root: Path | None = None) -> tuple[Path, ...]:
    """Every requirement file the pins of `script` were read from, `-r` includes too."""
    return _pins_in(_stamped(_walk(Path(script).resolve().parent, root)[1]))[1]


def _stamped(files: tuple[Path, ...]) -> tuple[tuple[Path, int, int], ...]:
    """The files with their modification time and size: a file edited since it was read is read again."""
    out = []
    for path in files:
        try:
            status = path.stat()
            out.append((path, status.st_mtime_ns, status.st_size))
        except OSError:
            out.append((path, 0, -1))
    return tuple(out)


@lru_cache(maxsize=64)
def _pins_in(stamped: tuple[tuple[Path, int, int], ...]) -> tuple[dict[str, Target], tuple[Path, ...]]:
    """The pins of one project's requirement files, read once however many script folders lie below it, and the
    files read for them."""
    found: dict[str, Target] = {}
    visited: set[Path] = set()
    files = [path for path, _, _ in stamped]
    for path in files:
        for name, low, high, spec, where in _requirements_in_file(path, visited):
            if low is not None or high is not None:
                found.setdefault(name, Target(low, high, _declared_source(low, high, spec, where), name))
    if "transformers" not in found:
        via = _via_framework(found)
        if via is not None:
            found["transformers"] = via
    wanted = frozenset(TRACKED) | frozenset(FRAMEWORK_PACKAGES)
    return {name: target for name, target in found.items() if name in wanted}, tuple(sorted(visited | set(files)))


def _declared_source(low: Version | None, high: Version | None, spec: str, where: Path) -> str:
    if low is not None and low == high:
        return f"pinned in {shown_path(where)}"
    return f"requires {spec} in {shown_path(where)}"


# A requirement as read: (normalized name, low, high, specifier text, file it came from).
_Requirement = tuple[str, "Version | None", "Version | None", str, Path]


def _requirements_in_file(path: Path, visited: set[Path]) -> list[_Requirement]:
    resolved = path.resolve()
    if resolved in visited:
        return []
    visited.add(resolved)
    text = _text(path)
    name = path.name.lower()
    if name == "pyproject.toml":
        lines = _pyproject_requirements(text)  # parsed once per text: every sub-folder's walk ends at the same file
    elif name == "setup.py":
        lines = _setup_py_requirements(text)
    elif name == "setup.cfg":
        lines = _setup_cfg_requirements(text)
    elif name in ("environment.yml", "environment.yaml"):
        return _conda_requirements(text, path, visited)
    elif path.name in README_NAMES:
        return _readme_requirements(text, path)
    elif path.name in LOCK_FILES:
        return _lock_requirements(text, path)
    elif name.endswith(".py"):
        return _own_release(path, text)
    else:
        return _requirements_txt(text, path, visited)
    return [req for line in lines if (req := _parse_requirement(line, path)) is not None]


_EDITABLE = re.compile(r"^(?:-e|--editable)(?:\s*=\s*|\s+)")


def _requirements_txt(text: str, path: Path, visited: set[Path]) -> list[_Requirement]:
    """requirements.txt lines; `-r` / `--requirement` / `-c` / `--constraint` files are read where they stand."""
    out: list[_Requirement] = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        include = re.match(r"(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+|(?=\S))(\S+)", line)
        if include:
            out += _requirements_in_file(path.parent / include.group(1), visited)
        elif line and (not line.startswith("-") or _EDITABLE.match(line)):
            req = _parse_requirement(_EDITABLE.sub("", line), path)
            out += [req] if req else []
    return out


@lru_cache(maxsize=64)
def _pyproject_requirements(text: str) -> tuple[str, ...]:
    """[project] dependencies and optional-dependencies, [dependency-groups], [tool.poetry.dependencies]."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return tuple(m.group(0).strip("\"' \t") for m in _REQUIREMENT.finditer(text))
    project = data.get("project", {})
    lines = list(project.get("dependencies", []))
    for group in list(project.get("optional-dependencies", {}).values()) + list(data.get("dependency-groups", {}).values()):
        lines += [item for item in group if isinstance(item, str)]
    poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {})
    for name, value in poetry.items():
        spec = value.get("version") if isinstance(value, dict) else value
        if isinstance(value, list):  # multiple-constraint dependency: the first that has a version
            spec = next((v.get("version") for v in value if isinstance(v, dict) and v.get("version")), None)
        if isinstance(spec, str):
            lines.append(f"{name} {_poetry_spec(spec)}")
    return tuple(line for line in lines if isinstance(line, str))


def _poetry_spec(spec: str) -> str:
    """Poetry's `^4.45` / `~4.45` / `4.46.0` -> a PEP 440 specifier."""
    spec = spec.strip()
    caret = re.fullmatch(r"\^\s*(\d+(?:\.\d+)*)", spec)
    if caret:
        parts = [int(p) for p in caret.group(1).split(".")]
        bump = next((i for i, p in enumerate(parts) if p != 0), len(parts) - 1)
        return f">={caret.group(1)},<{'.'.join(map(str, parts[:bump] + [parts[bump] + 1]))}"
    tilde = re.fullmatch(r"~(?!=)\s*(\d+(?:\.\d+)*)", spec)
    if tilde:
        parts = [int(p) for p in tilde.group(1).split(".")]
        upto = parts[:2] if len(parts) > 1 else parts[:1]
        return f">={tilde.group(1)},<{'.'.join(map(str, upto[:-1] + [upto[-1] + 1]))}"
    if re.fullmatch(r"\d+(?:\.\d+)*(?:\.\*)?", spec):
        return f"=={spec}"
    return "" if spec == "*" else spec


@lru_cache(maxsize=64)
def _setup_py_requirements(text: str) -> list[str]:
    """`setup(install_requires=[...], extras_require={...})`, read with `ast` (never executed); a list given
    by a module-level variable name is followed."""
    import ast

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    names: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            names[node.target.id] = node.value

    def strings(node: ast.expr | None, depth: int = 0) -> list[str]:
        if depth > 5 or node is None:
            return []
        if isinstance(node, ast.Name):
            return strings(names.get(node.id), depth + 1)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if isinstance(node, ast.Dict):
            return [s for value in node.values for s in strings(value, depth + 1)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return strings(node.left, depth + 1) + strings(node.right, depth + 1)
        return []

    lines: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "setup":
            for keyword in node.keywords:
                if keyword.arg in ("install_requires", "extras_require"):
                    lines += strings(keyword.value)
    # Hugging Face's convention (transformers, trl, alignment-handbook, open-r1): one `_deps` list of every pin, which
    # `install_requires` picks from through `deps["trl"]` lookups
    return lines + strings(names.get("_deps"))


def _setup_cfg_requirements(text: str) -> list[str]:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return []
    values = [parser.get("options", "install_requires", fallback="")]
    if parser.has_section("options.extras_require"):
        values += [value for _, value in parser.items("options.extras_require")]
    return [line.strip() for value in values for line in value.splitlines() if line.strip()]


def _conda_requirements(text: str, path: Path, visited: set[Path]) -> list[_Requirement]:
    """environment.yml `dependencies:` (conda `name=version`, `pytorch` is torch) and its `- pip:` list."""
    out: list[_Requirement] = []
    in_deps, pip_indent = False, None
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*", "", raw).rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            in_deps, pip_indent = line.startswith("dependencies:"), None
            continue
        item = re.match(r"\s*-\s*(.+)", line)
        if not in_deps or not item:
            continue
        value = item.group(1).strip().strip("\"'")
        if pip_indent is not None and indent > pip_indent:
            out += _requirements_txt(value, path, visited)
            continue
        pip_indent = indent if value.rstrip() == "pip:" else None
        if pip_indent is None:
            out += _conda_item(value, path)
    return out


def _conda_item(value: str, path: Path) -> list[_Requirement]:
    match = re.fullmatch(r"(?:[\w.-]+::)?([A-Za-z0-9_.-]+)\s*(.*)", value)
    if not match:
        return []
    name, spec = match.group(1), match.group(2).strip()
    name = "torch" if name.lower() == "pytorch" else name
    single = re.fullmatch(r"=\s*([0-9][0-9.]*?)(?:\.\*)?(?:=\S+)?", spec)  # conda `=4.46` is 4.46.*
    if single:
        spec = f"=={single.group(1)}.*"
    req = _parse_requirement(f"{name} {spec}", path)
    return [req] if req else []


_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)")


def _parse_requirement(line: str, path: Path) -> _Requirement | None:
    """One PEP 508 requirement (or a VCS URL) -> (name, low, high, spec, path) for the packages we track."""
    line = line.strip()
    if re.match(r"(git|hg|svn|bzr)\+|https?://", line):
        return _url_requirement(None, line, path)
    match = _NAME.fullmatch(line)
    if not match:
        return None
    name = _normalize(match.group(1))
    if name not in _WANTED:
        return None
    rest = match.group(2).strip()
    if rest.startswith("@"):
        return _url_requirement(name, rest[1:].split(";")[0].strip(), path)
    spec = rest.split(";")[0].strip()
    low, high = _spec_range(spec)
    return name, low, high, re.sub(r"\s+", "", spec), path


def _url_requirement(name: str | None, url: str, path: Path) -> _Requirement | None:
    """`git+https://github.com/huggingface/transformers@v4.46.0`: a release tag gives the version; no tag (or a
    branch) is the development head, at least the newest release known."""
    egg = re.search(r"#egg=([A-Za-z0-9._-]+)", url)
    url = url.split("#")[0]
    repo = re.search(r"/([A-Za-z0-9._-]+?)(?:\.git)?(?:@([^/@]+))?$", url)
    name = name or (_normalize(egg.group(1)) if egg else _normalize(repo.group(1)) if repo else None)
    tag = repo.group(2) if repo else None
    if name not in _WANTED:
        return None
    if not tag or not re.fullmatch(r"v?\d+(\.\d+)+", tag):
        newest = NEWEST_KNOWN.get(name)
        return name, Version.parse(newest) if newest else None, None, f"@{tag or 'HEAD'} ({DEVELOPMENT_HEAD})", path
    version = Version.parse(tag)
    return name, version, version, f"=={version}", path


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# -- specifiers -----------------------------------------------------------------------------------

_CLAUSE = re.compile(r"(===|==|~=|!=|<=|>=|<|>|\^|~|=)?\s*(\d+(?:\.\d+)*)(\.\*)?[0-9A-Za-z.+!-]*")


def _spec_range(spec: str) -> tuple[Version | None, Version | None]:
    """A specifier -> (lowest allowed, highest allowed): `>=4.40,<5` -> (4.40, 4.999.999), `~=4.46` ->
    (4.46, 4.999.999), `==4.46.*` -> (4.46, 4.46.999), `!=` ignored; a contradiction -> (None, None)."""
    low: Version | None = None
    high: Version | None = None
    for match in _CLAUSE.finditer(spec):
        op, text, star = match.group(1) or "==", match.group(2), match.group(3)
        version = Version.parse(text)
        parts = [int(p) for p in text.split(".")]
        clause_low, clause_high = None, None
        if op in ("==", "===", "=") and not star:
            clause_low = clause_high = version
        elif op in ("==", "=") and star:
            clause_low, clause_high = version, _below(parts[:-1] + [parts[-1] + 1])
        elif op == "~=":
            upto = parts[:-1] if len(parts) > 1 else parts
            clause_low, clause_high = version, _below(upto[:-1] + [upto[-1] + 1])
        elif op in (">=", ">"):
            clause_low = version
        elif op == "<=":
            clause_high = version
        elif op == "<":
            clause_high = _below(parts)
        elif op in ("^", "~"):
            clause_low, clause_high = _spec_range(_poetry_spec(op + text))
        if clause_low is not None and (low is None or clause_low > low):
            low = clause_low
        if clause_high is not None and (high is None or clause_high < high):
            high = clause_high
    if low is not None and high is not None and low > high:
        return None, None
    return low, high


def _below(parts: list[int]) -> Version | None:
    """The highest release below a bound: 5 -> 4.999.999, 4.50 -> 4.49.999."""
    parts = list(parts) + [0] * (3 - len(parts))
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] > 0:
            parts[index] -= 1
            return Version(tuple(parts[: index + 1] + [999] * (len(parts) - index - 1)))
    return None


def _range_text(low: Version | None, high: Version | None) -> str:
    if low is not None and low == high:
        return str(low)
    bounds = [f">={low}"] if low is not None else []
    if high is not None:
        parts = list(high.parts)
        if len(parts) > 1 and parts[-1] == 999:
            while len(parts) > 1 and parts[-1] == 999:
                parts.pop()
            bounds.append("<" + ".".join(map(str, parts[:-1] + [parts[-1] + 1])))
        else:
            bounds.append(f"<={high}")
    return ",".join(bounds)


def _version_from_spec(spec: str) -> Version | None:
    """`==4.46.0` / `~=4.46` -> 4.46; `>=4.40,<5` -> just below 5 (the newest the pin admits)."""
    spec = spec.strip()
    exact = re.search(r"(?:===?|~=|<=)\s*([0-9][0-9.]*)", spec)
    if exact:
        return Version.parse(exact.group(1))
    upper = re.search(r"<\s*([0-9][0-9.]*)", spec)
    if upper:
        return _below([int(p) for p in re.findall(r"\d+", upper.group(1))])
    return None


# -- frameworks that pin transformers -------------------------------------------------------------


def _via_framework(found: dict[str, Target]) -> Target | None:
    """The transformers range a required framework release declares (FRAMEWORK_PINS)."""
    for framework in sorted(_FRAMEWORKS & found.keys()):
        declared = found[framework]
        low, high = _framework_transformers(framework, declared.low, declared.high)
        if low is not None or high is not None:
            required = f"{framework} {_range_text(declared.low, declared.high)}"
            return Target(low, high, f"required by {required}, {declared.source}", "transformers")
    return None


def _framework_transformers(framework: str, low: Version | None, high: Version | None) -> tuple[Version | None, Version | None]:
    """Union of the transformers ranges of the framework's releases in [low, high]. Past the table's last
    release the high end is unknown (later releases keep at least the last known floor)."""
    if low is None:
        return None, None
    rows = [row for row in FRAMEWORK_PINS if row[0] == framework]
    first, last = Version.parse(rows[0][1]), Version.parse(rows[-1][2])
    matched = [_spec_range(spec) for _, since, until, spec in rows
               if (high is None or Version.parse(since) <= high) and low < Version.parse(until)]
    if not matched or low < first:
        return None, None
    lows = [r[0] for r in matched]
    highs = [r[1] for r in matched]
    union_low = None if None in lows else min(lows)
    beyond = high is None or high >= last
    union_high = None if beyond or None in highs else max(highs)
    return union_low, union_high


# -- helpers --------------------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"""^[ \t]*["']?(?P<name>torch|transformers|peft|trl|accelerate|deepspeed|axolotl|llamafactory|llmtuner)(?![\w.-])(\[[^\]]*\])?[ \t]*(?P<spec>[^;"'#\n]*)""",
    re.IGNORECASE | re.MULTILINE,
)


def pins_in_pip_command(line: str) -> dict[str, Version]:
    """`%pip install -q "transformers==4.44.2" trl<0.10` -> {"transformers": 4.44.2, "trl": 0.9.999}."""
    pins: dict[str, Version] = {}
    for token in _VERSIONED_WORD.findall(line):
        for match in _REQUIREMENT.finditer(token):
            name = match.group("name").lower()
            version = _version_from_spec(match.group("spec"))
            if version is not None and name in TRACKED:
                pins.setdefault(name, version)
    return pins


@lru_cache(maxsize=None)
def installed_version(package: str) -> Version | None:
    """The installed release of `package` (read with importlib.metadata, never imported)."""
    from importlib import metadata

    try:
        return Version.parse(metadata.version(package))
    except (metadata.PackageNotFoundError, ValueError):
        return None


def clear_caches() -> None:
    """Forget the requirement files read so far (they are cached per folder for the life of the process)."""
    for cached in (_walk, project_folder, _pins_in, _folder_versions_key, _requirement_files, _pyproject_requirements,
                   _setup_py_requirements, runs_in_project_env):
        cached.cache_clear()
