"""`check --show-settings`: the configuration a check would run with, and where each value came from."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from ckpt_doctor import __version__
from ckpt_doctor.config import Settings

VERSIONED_PACKAGES = ("torch", "transformers", "peft", "trl")
DEFAULT_GPU_MEMORY = "NVML's total memory when a GPU is visible at check time, else 24GiB"


def _table_keys(settings: Settings) -> set[str]:
    if settings.config_file is None:
        return set()
    from ckpt_doctor.config import tomllib

    try:
        data = tomllib.loads(Path(settings.config_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return set(data.get("tool", {}).get("ckpt-doctor", {}))


def resolved(settings: Settings, from_cli: set[str], path: str | None) -> dict:
    """Each setting with its value and origin ("command line", the config file, or "default"); the target version
    of each library as the check of `path` (a file, or a folder's scripts) would assume it."""
    from ckpt_doctor.analysis.versions import TargetVersions, _range_text
    from ckpt_doctor.rules import all_rules

    in_file = _table_keys(settings)

    def origin(key: str) -> str:
        if key in from_cli:
            return "command line"
        return str(settings.config_file) if key in in_file else "default"

    def entry(key: str, value) -> dict:
        return {"value": value, "origin": origin(key)}

    script = Path(path or ".")
    script = script / "__main__.py" if script.is_dir() else script
    versions = TargetVersions(settings.target_versions, script=script, root=settings.root)
    targets = {}
    for package in VERSIONED_PACKAGES:
        target = versions.get(package)
        source = target.source
        if package in {k.lower() for k in settings.target_versions}:
            source += f" ({origin('target-versions')})"
        targets[package] = {
            "versions": _range_text(target.low, target.high) or None,  # "2.13", ">=4.46,<5"; None: any release
            "origin": source,
        }
    return {
        "ckpt-doctor": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "config-file": str(settings.config_file) if settings.config_file else None,
        "root": str(settings.root),
        "settings": {
            "select": entry("select", settings.select),
            "extend-select": entry("extend-select", settings.extend_select),
            "ignore": entry("ignore", settings.ignore),
            "per-file-ignores": entry("per-file-ignores", settings.per_file_ignores),
            "exclude": entry("exclude", settings.exclude),
            "extend-exclude": entry("extend-exclude", settings.extend_exclude),
            "respect-gitignore": entry("respect-gitignore", settings.respect_gitignore),
            "fail-on": entry("fail-on", str(settings.fail_on)),
            "gpu-memory": entry("gpu-memory", settings.gpu_memory or DEFAULT_GPU_MEMORY),
            "checkpointing-threshold": entry("checkpointing-threshold", settings.checkpointing_threshold),
            "max-file-size": entry("max-file-size", settings.max_file_size),
            "output-format": entry("output-format", settings.output_format or "concise"),
            "cache-dir": entry("cache-dir", settings.cache_dir or str(settings.root / ".ckpt_doctor_cache")),
            "model-configs": entry("model-configs", settings.model_configs),
        },
        "enabled-rules": [r.code for r in all_rules() if settings.enabled(r.code)],
        "target-versions": {"for": str(script), **targets},
    }


def render(data: dict, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(data, indent=2) + "\n"
    lines = [
        f"ckpt-doctor {data['ckpt-doctor']}, Python {data['python']}",
        f"config file: {data['config-file'] or 'none (no pyproject.toml with [tool.ckpt-doctor] above the current folder)'}",
        f"root: {data['root']}",
        "",
        "Settings:",
    ]
    width = max(len(k) for k in data["settings"])
    for key, item in data["settings"].items():
        value = item["value"]
        shown = json.dumps(value) if not isinstance(value, str) else value
        lines.append(f"  {key:<{width}} = {shown}  ({item['origin']})")
    lines += ["", f"Enabled rules: {', '.join(data['enabled-rules']) or 'none'}", "",
              f"Target versions (for {data['target-versions']['for']}):"]
    for package in VERSIONED_PACKAGES:
        target = data["target-versions"][package]
        lines.append(f"  {package:<12} {target['versions'] or 'any release'}  ({target['origin']})")
    return "\n".join(lines) + "\n"
