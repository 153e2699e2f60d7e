"""Settings: `[tool.ckpt-doctor]` in the nearest pyproject.toml, overridden by the command line.

```toml
[tool.ckpt-doctor]
select = ["CKPT"]                 # code prefixes
ignore = ["CKPT403"]
extend-select = []
extend-exclude = ["experiments/old"]
per-file-ignores = { "notebooks/*" = ["CKPT1"] }
target-versions = { transformers = "4.46", trl = "0.21" }
fail-on = "warning"               # error | warning | info
gpu-memory = "80GiB"
checkpointing-threshold = 1_000_000_000   # parameters
max-file-size = "10MiB"
model-configs = { "my-org/my-model" = "configs/my-model/config.json" }
```
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ckpt_doctor.check import OUTPUT_FORMATS
from ckpt_doctor.findings import Severity
from ckpt_doctor.analysis.source import DEFAULT_MAX_FILE_BYTES
from ckpt_doctor.analysis.versions import parse_target_versions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_EXCLUDE = (
    ".bzr", ".direnv", ".eggs", ".git", ".hg", ".ipynb_checkpoints", ".mypy_cache", ".nox", ".pants.d",
    ".pytype", ".ruff_cache", ".svn", ".tox", ".venv", "__pypackages__", "_build", "buck-out", "build",
    "dist", "node_modules", "site-packages", "venv", ".ckpt_doctor_cache",
)
DEFAULT_CHECKPOINTING_THRESHOLD = 1_000_000_000
_KNOWN_KEYS = {
    "select", "ignore", "extend-select", "exclude", "extend-exclude", "per-file-ignores", "target-versions",
    "fail-on", "gpu-memory", "checkpointing-threshold", "max-file-size", "respect-gitignore", "output-format",
    "cache-dir", "model-configs",
}  # each is in ckpt_doctor/data/ckpt-doctor.schema.json (tests/test_config_schema.py keeps the two in step)


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    select: list[str] = field(default_factory=lambda: ["CKPT"])
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    extend_exclude: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    target_versions: dict[str, str] = field(default_factory=dict)
    fail_on: Severity = Severity.WARNING
    gpu_memory: str | None = None
    checkpointing_threshold: int = DEFAULT_CHECKPOINTING_THRESHOLD
    max_file_size: int = DEFAULT_MAX_FILE_BYTES
    respect_gitignore: bool = True
    output_format: str | None = None
    cache_dir: str | None = None
    model_configs: dict[str, str] = field(default_factory=dict)  # model id -> local config.json (CKPT4xx)
    root: Path = field(default_factory=Path.cwd)  # the folder of the config file (or cwd)
    config_file: Path | None = None

    def enabled(self, code: str) -> bool:
        selected = _longest_match(code, self.select + self.extend_select)
        ignored = _longest_match(code, self.ignore)
        return selected > 0 and selected > ignored

    def ignored_for(self, path: str, code: str) -> bool:
        if not self.per_file_ignores:
            return False  # asked once per rule and file: no path resolution when there is nothing to match
        relative = _relative(path, self.root)
        for pattern, codes in self.per_file_ignores.items():
            if _glob_match(relative, pattern) and _longest_match(code, codes) > 0:
                return True
        return False

    def fingerprint(self) -> str:
        """What the findings of a file depend on besides its text (for the cache key)."""
        data = asdict(self)
        data.pop("output_format"), data.pop("root"), data.pop("config_file"), data.pop("cache_dir")
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _longest_match(code: str, prefixes: list[str]) -> int:
    best = 0
    for prefix in prefixes:
        prefix = prefix.strip().upper()
        if prefix == "ALL":
            prefix = "CKPT"
        if prefix and code.startswith(prefix):
            best = max(best, len(prefix))
    return best


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError, RuntimeError):
        return Path(path).as_posix()


def _glob_match(relative: str, pattern: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(name, pattern) or relative.startswith(pattern.rstrip("/") + "/")


def find_config(start: Path) -> Path | None:
    """The nearest pyproject.toml (from `start` upwards) that has a [tool.ckpt-doctor] table."""
    start = start.resolve()
    for folder in [start, *start.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{candidate}: cannot read configuration: {exc}") from None
            if "ckpt-doctor" in data.get("tool", {}):
                return candidate
    return None


def load_settings(config_file: Path | None = None, start: Path | None = None) -> Settings:
    if config_file is None:
        config_file = find_config(start or Path.cwd())
    settings = Settings(root=(config_file.parent if config_file else (start or Path.cwd())).resolve())
    if config_file is None:
        return settings
    try:
        data = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_file}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file}: invalid TOML: {exc}") from None
    table = data.get("tool", {}).get("ckpt-doctor", {})
    settings.config_file = config_file
    try:
        apply_table(settings, table)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config_file}: [tool.ckpt-doctor] {exc}") from None
    return settings


def apply_table(settings: Settings, table: dict) -> None:
    unknown = set(table) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
    for key in ("select", "ignore", "extend-select", "exclude", "extend-exclude"):
        if key in table:
            values = _string_list(key, table[key])
            if key in ("select", "ignore", "extend-select"):
                _check_codes(key, values)
            setattr(settings, key.replace("-", "_"), values)
    if "per-file-ignores" in table:
        value = table["per-file-ignores"]
        if not isinstance(value, dict):
            raise ValueError("per-file-ignores must be a table of glob = [codes]")
        settings.per_file_ignores = {k: _check_codes(k, _string_list(k, v)) for k, v in value.items()}
    if "target-versions" in table:
        settings.target_versions = parse_target_versions(table["target-versions"])
    if "fail-on" in table:
        settings.fail_on = parse_severity(table["fail-on"])
    if "gpu-memory" in table:
        parse_size(table["gpu-memory"])  # "80GiB", 85899345920; not "lots"
        settings.gpu_memory = str(table["gpu-memory"])
    if "checkpointing-threshold" in table:
        settings.checkpointing_threshold = int(table["checkpointing-threshold"])
    if "max-file-size" in table:
        settings.max_file_size = parse_size(table["max-file-size"])
    if "respect-gitignore" in table:
        settings.respect_gitignore = bool(table["respect-gitignore"])
    if "output-format" in table:
        if table["output-format"] not in OUTPUT_FORMATS:
            raise ValueError(f"output-format must be one of {', '.join(OUTPUT_FORMATS)}, not {table['output-format']!r}")
        settings.output_format = table["output-format"]
    if "cache-dir" in table:
        settings.cache_dir = str(table["cache-dir"])
    if "model-configs" in table:
        value = table["model-configs"]
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError('model-configs must be a table of "model id" = "path/to/config.json"')
        settings.model_configs = dict(value)


def _check_codes(key: str, codes: list[str]) -> list[str]:
    for code in codes:
        if not valid_code_prefix(code):
            raise ValueError(f"{key}: {code!r} is not a rule code or prefix (e.g. CKPT1, CKPT201, ALL)")
    return codes


def _string_list(key: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{key} must be a list of strings")


def parse_severity(text: str) -> Severity:
    try:
        return Severity.parse(str(text))
    except KeyError:
        raise ValueError(f"fail-on must be error, warning or info, not {text!r}") from None


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text: object) -> int:
    """`10MiB`, `24GB`, `80 GiB`, `1048576` -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 80GiB, 24GB, 10MiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def valid_code_prefix(prefix: str) -> bool:
    return bool(re.fullmatch(r"(CKPT[0-9]{0,3}|ALL)", prefix.strip().upper()))
