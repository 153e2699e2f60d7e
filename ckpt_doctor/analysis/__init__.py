"""Reading a training script without running it: source -> facts -> what the training does -> settings.

`analyze` is the one way in, for `check`, `estimate SCRIPT` and `verify` alike:

```python
result = analyze(source, config)
result.facts      # every call, assignment and option, with the branches (path condition) it runs in
result.training   # where checkpointing is on, in which mode, PEFT, k-bit, DeepSpeed, ...
result.settings   # model, batch, sequence, dtype, ... of the run the defaults (or the launcher) describe, each with its origin
result.versions   # the library releases the project targets, and where that answer came from
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from ckpt_doctor.analysis.config_files import ProjectFiles
from ckpt_doctor.analysis.project import Project
from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.analysis.versions import TargetVersions

# The script reader (LibCST, facts, training) is imported when a script is read: a config, a launcher or a warm
# cache does not pay for it.
if TYPE_CHECKING:
    from pathlib import Path

    from ckpt_doctor.analysis.facts import FactsError, ScriptFacts
    from ckpt_doctor.analysis.launchers import Launch
    from ckpt_doctor.analysis.training import Training
    from ckpt_doctor.analysis.run_config import RunConfig
    from ckpt_doctor.analysis.settings import ScriptSettings
    from ckpt_doctor.config import Settings

__all__ = ["Analysis", "ConfigAnalysis", "FactsError", "analyze", "analyze_config", "analyze_launched_script", "analyze_launcher"]


@dataclass
class Analysis:
    source: SourceFile
    facts: "ScriptFacts"
    versions: TargetVersions
    files: ProjectFiles = field(repr=False)
    project: "Project | None" = field(default=None, repr=False)

    @cached_property
    def training(self) -> "Training":
        from ckpt_doctor.analysis.training import Training

        return Training(self.facts, self.versions, self.files)

    @cached_property
    def settings(self) -> "ScriptSettings":
        from ckpt_doctor.analysis.settings import read_settings

        return read_settings(self.training)

    @property
    def dependencies(self) -> list[str]:
        """Every other file the results depend on: the settings files read, and those the script names."""
        located = self.files.located([name for name, _ in self.facts.strings])
        return list(dict.fromkeys(self.files.read + located))


def analyze(source: SourceFile, config: "Settings", launches: "list[Launch] | None" = None) -> Analysis:
    """Parse and read `source` once, as the project's launchers run it (or as `launches` do). Raises SyntaxError, or
    FactsError when it is too deep to analyse."""
    from ckpt_doctor.analysis.api_era import version_ceilings
    from ckpt_doctor.analysis.facts import extract
    from ckpt_doctor.analysis.launchers import find_launches

    files = ProjectFiles(source.path)
    project = Project(source.path, files)
    if launches is None:
        launches = find_launches(source.path, files, project.repository)
    facts = extract(source.text, source.path, files, project, launches)
    versions = TargetVersions(
        config.target_versions,
        script=source.path,
        root=config.root,
        ceilings=version_ceilings(facts),
        inline_pins=source.pip_pins(),
    )
    return Analysis(source, facts, versions, files, project)


@dataclass
class ConfigAnalysis:
    """A framework's config (LLaMA-Factory, axolotl, torchtune, ms-swift, TRL, accelerate, DeepSpeed) read as the
    run it describes: `run` has the checkpointing, LoRA, sharding and batch facts with their keys, `settings` the
    same `ScriptSettings` a script gives."""

    source: SourceFile
    run: "RunConfig"
    versions: TargetVersions

    @cached_property
    def settings(self) -> "ScriptSettings":
        from ckpt_doctor.analysis.settings import vllm_setting
        from ckpt_doctor.analysis.whole_job import config_colocations

        settings = self.run.settings()
        settings.vllm_colocated = vllm_setting(config_colocations(self.run, self.versions))
        return settings

    @property
    def lines(self) -> list[str]:
        return self.source.text.splitlines()

    @property
    def dependencies(self) -> list[str]:
        return list(self.run.read)


def analyze_config(source: SourceFile, config: "Settings") -> ConfigAnalysis | None:
    """Read a YAML / JSON file; None when it is no training framework's config (skipped, not an error). Raises
    ConfigError when it is not YAML / JSON at all."""
    from ckpt_doctor.analysis.config_document import read_document
    from ckpt_doctor.analysis.run_config import read_run

    run = read_run(read_document(source.text, source.path))
    if run is None:
        return None
    versions = TargetVersions(config.target_versions, script=source.path, root=config.root)
    return ConfigAnalysis(source, run, versions)


def analyze_launcher(source: SourceFile, config: "Settings") -> list[ConfigAnalysis]:
    """A shell script or Makefile: the run of each line that starts a framework's trainer (`llamafactory-cli train
    x.yaml`, `swift sft --tuner_type lora ...`). Lines that run a Python script of the project are read with that
    script; a line that runs one the project does not hold, or a console command, with `TrainingArguments` options
    is read as those options say."""
    from ckpt_doctor.analysis.launchers import TRAINER, framework_launches, is_makefile
    from ckpt_doctor.analysis.run_config import read_launched

    versions = TargetVersions(config.target_versions, script=source.path, root=config.root)
    launched = framework_launches(source.text, source.path, is_makefile(source.path))
    if any(line.framework == TRAINER for line in launched):  # read with its script where the project has it
        scripts = {launch.line for _, launch in launched_scripts(source)}
        launched = [line for line in launched if line.framework != TRAINER or line.launch.line not in scripts]
    runs = (read_launched(line, source.path, source.text) for line in launched)
    return [ConfigAnalysis(source, run, versions) for run in runs if run is not None]


def launched_scripts(source: SourceFile) -> "list[tuple[Path, Launch]]":
    """The Python scripts of the project a launcher runs, each with the line that runs it."""
    from pathlib import Path

    from ckpt_doctor.analysis.launchers import is_makefile, script_launches

    launcher = Path(source.path).resolve()
    root = Project(source.path, ProjectFiles(source.path)).root or launcher.parent
    return script_launches(source.text, launcher, root, is_makefile(source.path))


def analyze_launched_script(source: SourceFile, config: "Settings") -> Analysis | None:
    """The first Python script of the project a launcher runs, read as that line runs it; None when it runs none."""
    from ckpt_doctor.analysis.source import read_source

    for script, launch in launched_scripts(source):
        return analyze(read_source(script, config.max_file_size), config, launches=[launch])
    return None


def __getattr__(name: str):
    if name == "FactsError":  # `from ckpt_doctor.analysis import FactsError` without importing the reader first
        from ckpt_doctor.analysis.facts import FactsError

        return FactsError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
