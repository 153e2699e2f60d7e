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

from ckpt_doctor.analysis.api_era import version_ceilings
from ckpt_doctor.analysis.config_files import ProjectFiles
from ckpt_doctor.analysis.facts import FactsError, ScriptFacts, extract
from ckpt_doctor.analysis.launchers import find_launches
from ckpt_doctor.analysis.project import Project
from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.analysis.training import Training
from ckpt_doctor.analysis.versions import TargetVersions

if TYPE_CHECKING:
    from ckpt_doctor.analysis.settings import ScriptSettings
    from ckpt_doctor.config import Settings

__all__ = ["Analysis", "FactsError", "analyze"]


@dataclass
class Analysis:
    source: SourceFile
    facts: ScriptFacts
    versions: TargetVersions
    files: ProjectFiles = field(repr=False)

    @cached_property
    def training(self) -> Training:
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


def analyze(source: SourceFile, config: "Settings") -> Analysis:
    """Parse and read `source` once. Raises SyntaxError, or FactsError when it is too deep to analyse."""
    files = ProjectFiles(source.path)
    project = Project(source.path, files)
    facts = extract(source.text, source.path, files, project, find_launches(source.path, files, project.root))
    versions = TargetVersions(
        config.target_versions,
        script=source.path,
        root=config.root,
        ceilings=version_ceilings(facts),
        inline_pins=source.pip_pins(),
    )
    return Analysis(source, facts, versions, files)
