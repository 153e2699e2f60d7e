"""The settings a file is checked with: `[tool.ckpt-doctor]` of the nearest pyproject.toml (`load_settings`, as `check`
finds it from the file's folder), overridden by the settings the editor sends (initializationOptions,
workspace/didChangeConfiguration) through `apply_table`, so they are validated the same way."""

from __future__ import annotations

import re
from pathlib import Path

from ckpt_doctor.config import ConfigError, Settings, apply_table, load_settings

# keys an editor may nest its settings under (VS Code sends {"ckpt-doctor": {...}} on didChangeConfiguration)
_SECTIONS = ("ckpt-doctor", "ckpt_doctor", "ckptDoctor", "settings")
# the one spelling the command line uses that the table spells otherwise
_ALIASES = {"target-version": "target-versions"}


def table_from_client(options: object) -> dict:
    """The `[tool.ckpt-doctor]`-shaped table of what the editor sent: `{"select": [...], "gpu-memory": "80GiB",
    "target-version": {"transformers": "4.46"}}`; snake_case and camelCase keys are accepted too."""
    if not isinstance(options, dict):
        return {}
    for section in _SECTIONS:
        if isinstance(options.get(section), dict):
            return table_from_client(options[section])
    table = {}
    for key, value in options.items():
        name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", str(key)).lower().replace("_", "-")
        table[_ALIASES.get(name, name)] = value
    return table


class WorkspaceSettings:
    """Settings per folder, read once and kept until a pyproject.toml or the editor's settings change."""

    def __init__(self) -> None:
        self.overrides: dict = {}
        self._by_folder: dict[Path, tuple[Settings, str | None]] = {}

    def set_overrides(self, options: object) -> str | None:
        """Take the editor's settings; a problem with them is returned (and they are not taken)."""
        table = table_from_client(options)
        try:
            apply_table(Settings(), table)
        except (TypeError, ValueError) as exc:
            return f"ckpt-doctor: editor settings ignored: {exc}"
        self.overrides = table
        self.invalidate()
        return None

    def invalidate(self) -> None:
        self._by_folder.clear()

    def for_path(self, path: str) -> tuple[Settings, str | None]:
        """The settings of the file at `path`, and a problem with the configuration file if there is one (the
        defaults and the editor's settings apply then)."""
        folder = Path(path).parent if path else Path.cwd()
        if folder not in self._by_folder:
            self._by_folder[folder] = self._read(folder)
        settings, problem = self._by_folder[folder]
        return settings, problem

    def _read(self, folder: Path) -> tuple[Settings, str | None]:
        problem = None
        start = folder if folder.is_dir() else Path.cwd()  # an unsaved buffer: the server's folder
        try:
            settings = load_settings(start=start)
        except ConfigError as exc:
            settings, problem = Settings(root=start.resolve()), str(exc)
        apply_table(settings, self.overrides)  # validated in set_overrides
        return settings, problem
