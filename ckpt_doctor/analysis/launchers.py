"""The command lines that run a training script: the shell scripts and Makefiles kept beside it.

People rarely type the options that matter; they keep them in a `run.sh`:

```sh
MODEL=meta-llama/Llama-2-7b-hf
torchrun --nproc_per_node 8 train.py \\
    --model_name_or_path $MODEL --gradient_checkpointing True --per_device_train_batch_size 4
```

`find_launch` finds the line that runs a script and reads it into a `Launch`: the options it passes the script
(with their values as far as the file's own variables tell them), the launcher (`python`, `torchrun`,
`deepspeed`, `accelerate launch`), and the number of processes. The analysis then reads an option the launch
passes as that value, not as "depends on the option". Nothing is run: variables the file sets are expanded,
anything else (`$1`, `$(nvidia-smi ...)`) stays unknown.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from ckpt_doctor.analysis.conditions import Literal
from ckpt_doctor.analysis.config_files import README_NAMES, ProjectFiles, shown_path
from ckpt_doctor.analysis.frameworks import library_fields
from ckpt_doctor.analysis.values import Const, OptionVal, Origin, Value, constant

# files that hold launch lines, and folders next to a script where people keep them
LAUNCHER_SUFFIXES = (".sh", ".bash", ".slurm", ".sbatch")
MAKEFILES = ("Makefile", "makefile", "GNUmakefile", "justfile", "Justfile")
LAUNCHER_FOLDERS = {"shell", "sh", "bash", "run", "runs", "jobs", "experiments"}
# and any folder whose name has one of these in it (`example_scripts`, `train_scripts`, `launchers`, `slurm_jobs`)
_LAUNCHER_FOLDER_WORDS = ("script", "launch", "slurm", "example", "recipe")
_FOLDER_DEPTH = 3  # `experiments/public/train/run.sh`
MAX_LAUNCHER_FILES = 300

UNKNOWN_VALUE = None  # an option passed with a value the file does not tell (`--model $1`)

_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
# options of the launchers that take no value (all others take one)
_TORCHRUN_FLAGS = {"--standalone", "--no_python", "--no-python", "--run_path", "--run-path", "-m", "--module", "--tee"}
_DEEPSPEED_FLAGS = {"--no_python", "--no_local_rank", "--no_ssh_check", "--force_multi", "--autotuning", "--module", "--enable_each_rank_log",
                    "--bind_cores_to_rank", "--no_ssh", "--save_pid"}
_ACCELERATE_FLAGS = {"--multi_gpu", "--use_deepspeed", "--use_fsdp", "--use_megatron_lm", "--cpu", "--tpu", "-m", "--module", "--no_python",
                     "--debug", "-q", "--quiet", "--same_network", "--use_xpu",
                     "--enable_cpu_affinity", "--dynamo_use_fullgraph", "--dynamo_use_dynamic"}
_PYTHON_VALUE_OPTIONS = {"-W", "-X", "-c"}
_COMMENT = re.compile(r"(^|\s)#(?![!]).*$")
_SEPARATORS = {";", "&&", "||", "|", "&", ";;"}
_ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.DOTALL)
_MAKE_ASSIGNMENT = re.compile(r"^(?:export\s+|override\s+)?([A-Za-z_][\w.]*)\s*(?::=|::=|\?=|\+=|=)\s*(.*)$")
_EXPANSION = re.compile(r"\$(?:\{([A-Za-z_]\w*|\d)(?:(:?[-=])([^}]*))?\}|([A-Za-z_]\w*|\d)|\(([A-Za-z_][\w.]*)\))")
_POSITIONAL = re.compile(r"\$\{?([1-9]\b|[@*])")  # `$1`, `${4}`, `"$@"`: a launcher another one runs with arguments
_ALL_ARGUMENTS = re.compile(r'"\$\{?[@*]\}?"|\$\{?[@*]\}?')
_UNSET_ARGUMENT = re.compile(r"^\$\{?[1-9]\}?$")


@dataclass(frozen=True)
class Launch:
    """One line of a launcher that runs the script, as far as it can be read."""

    file: str  # the launcher, as messages name it
    line: int
    runner: str  # "python" | "torchrun" | "deepspeed" | "accelerate"
    options: dict[str, object] = field(default_factory=dict)  # option (normalised) -> value; True for a bare flag
    written: dict[str, str] = field(default_factory=dict)  # option (normalised) -> as written ("--per-device-batch-size")
    positional: tuple[object, ...] = ()  # the script's other arguments (a config file, hydra `key=value` overrides)
    runner_options: dict[str, object] = field(default_factory=dict)  # `accelerate launch --config_file x.yaml`, ...
    processes: int | None = None  # processes per node times nodes, when the line says
    option_lines: dict[str, int] = field(default_factory=dict)  # option (normalised) -> the line it is written on

    forwards: bool = False  # passes on its own arguments (`"$@"`): any other option may be given too
    # files the launcher writes before the line with a here-document (`cat <<EOT > dpo_config.yaml`): name -> (line, text)
    written_files: dict[str, tuple[int, str]] = field(default_factory=dict)
    # flags the guide that shows this command tells people to add (README: "add `--grad_checkpointing` to the arguments")
    suggested: frozenset[str] = frozenset()
    env: dict[str, str] = field(default_factory=dict)  # the variables of ENVIRONMENT the line runs with

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def takes(self, literal: Literal) -> bool:
        """Whether this launch certainly takes the branch `literal` describes: it passes the option that way."""
        return literal.option is not None and self.passes(literal.option) and self.allows(literal)

    def allows(self, literal: Literal) -> bool:
        """Whether this launch can take the branch `literal` describes (`args.use_lora` true)."""
        if literal.option is None:
            return True  # a test in the code, or a value nobody can know
        if not self.passes(literal.option):
            suggested = normalise(literal.option) in self.suggested and literal.holds and literal.equals is None
            return self.forwards or suggested or literal.by_default is not False
        value = self.value(literal.option, flag=literal.equals is None)
        if value is UNKNOWN_VALUE:
            return True
        if literal.equals is not None:
            return (literal.equals in (repr(value), repr(str(value)))) == literal.holds
        return bool(value) == literal.holds

    def passes(self, option: str) -> bool:
        return normalise(option) in self.options

    def value(self, option: str, *, flag: bool = False) -> object:
        """The value the launch gives `option` (True for a bare `--flag`; UNKNOWN_VALUE when the file does not
        tell). `flag`: a boolean option, so `--x false` is False. Raises KeyError when it is not passed."""
        raw = self.options[normalise(option)]
        if raw is UNKNOWN_VALUE or raw is True:
            return raw
        return typed(str(raw), flag=flag)


def launched_value(launch: Launch | None, options, *, flag: bool = False, stored: bool | None = None) -> Value | None:
    """The value the launch line gives the first of `options` it passes (`--bf16 True` in run.sh), None when it
    passes none; `flag`: a boolean option; `stored`: what a bare `--x` stores (argparse `store_true`)."""
    option = next((o for o in options if launch is not None and launch.passes(o)), None)
    if launch is None or option is None:
        return None
    value = launch.value(option, flag=flag)
    if value is UNKNOWN_VALUE:
        return OptionVal(option, launch.line)
    if stored is not None and value is True:
        value = stored
    line = launch.option_lines.get(normalise(option), launch.line)
    return Const(value, Origin(line, "launch line", option=launch.written.get(normalise(option), option), file=launch.file))


def with_launched(launch: Launch | None, fields: dict, own: set[str], library: bool) -> dict:
    """A parsed namespace's fields as the launch line sets them: each field it passes, and, for a library class
    (`TrainingArguments`), every option no dataclass of the script declares."""
    out = dict(fields)
    for option in (launch.options if launch else ()):
        if option in fields or (library and option not in own):
            out[option] = launched_value(launch, [f"--{option}"], flag=isinstance(constant(fields.get(option)), bool))
    for name, given in abbreviations(launch, set(fields) | (library_fields() if library else set())).items():
        out[name] = launched_value(launch, [f"--{given}"], flag=isinstance(constant(fields.get(name)), bool))
    return out


def abbreviations(launch: Launch | None, known: Iterable[str]) -> dict[str, str]:
    """argparse's `allow_abbrev`, on by default and in `HfArgumentParser`: an option the launch passes that is none of
    `known` but the start of exactly one of them (`--max_seq_len` for `max_seq_length`). Known name -> the option
    as passed (both normalised)."""
    if launch is None:
        return {}
    names = {normalise(k) for k in known}
    out = {}
    for given in launch.options:
        matches = [n for n in names if n.startswith(given)] if given not in names else []
        if len(matches) == 1:
            out[matches[0]] = given
    return out


def launch_for(launches: list[Launch], literals: list[Literal]) -> Launch | None:
    """The launch that runs the path `literals` describe: the first that passes each option that way, else the first
    that may (an option it does not pass whose default is not known); None when none does."""
    certain = (l for l in launches if all(l.takes(x) for x in literals if x.option is not None) and all(l.allows(x) for x in literals))
    return next(certain, None) or next((l for l in launches if all(l.allows(x) for x in literals)), None)


def normalise(option: str) -> str:
    """`--per-device-train-batch-size`, `--per_device_train_batch_size` and `per_device_train_batch_size` are one
    option (argparse and `HfArgumentParser` accept both spellings)."""
    return option.lstrip("-").replace("-", "_").lower()


def typed(raw: str, *, flag: bool = False) -> object:
    """A command-line word as the value a script's option parser makes of it: numbers, booleans, else text."""
    lowered = raw.lower()
    if lowered in ("true", "yes") or (flag and lowered == "1"):
        return True
    if lowered in ("false", "no") or (flag and lowered == "0"):
        return False
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


# -- finding the launch of a script --------------------------------------------------------------------------


MAX_LAUNCHES = 16
MAX_CALLERS = 4  # launchers read for the arguments they run another one with
MAX_GUIDES = 20  # Markdown files besides the READMEs read for launch commands


def find_launches(script: str, files: ProjectFiles, root: Path | None) -> list[Launch]:
    """The lines of the project's launchers that run `script`, those of the launcher nearest the script first."""
    if script == "-" or root is None:
        return []
    try:
        target = Path(script).resolve()
    except (OSError, ValueError):
        return []
    found: list[Launch] = []
    texts: dict[Path, str | None] = {}

    def read(path: Path) -> str | None:  # each file once, however many questions are asked of it
        if path not in texts:
            texts[path] = files.launcher(path)
        return texts[path]

    # the project's shell scripts first (those its READMEs tell people to run before the others); the commands its
    # READMEs show only after them
    readmes = _readme_files(target.parent, root)
    for path in [*_documented_first(_launcher_files(target.parent, root), readmes, read), *readmes]:
        text = read(path)
        if text is None or target.stem not in text:
            continue
        text = shell_lines(path.name, text)
        if path.suffix in LAUNCHER_SUFFIXES:
            text = _with_sourced(text, path, root, read)
        documents = None
        suggested = _suggested_flags(read(path) or "") if path.suffix == ".md" else frozenset()
        runs = _commands_in_folders(text, path, is_makefile(path.name))
        if path.suffix in LAUNCHER_SUFFIXES and _POSITIONAL.search(text):
            # `bash finetune.sh $MODEL 2048` in another launcher: this one's `$1`... as that caller gives them
            runs = [run for arguments in _callers(path, root, read)
                    for run in _commands_in_folders(text, path, False, arguments)] + runs
        for line, words, folder in runs:
            launch = _read_command(words, line, path, target, root, folder, files)
            if launch is not None:
                if launch.runner == "accelerate" and launch.processes is None and not launch.runner_options:
                    launch = replace(launch, processes=job_gpus(read(path) or ""))
                if documents is None:  # read once per launcher, when it runs the script
                    documents = _here_documents(text) if "<<" in text else []
                written = {name: (start, body) for start, name, body in documents if name and start < line}
                found.append(replace(launch, option_lines=_option_lines(text.splitlines()[line - 1:], launch), written_files=written,
                                     suggested=suggested, env=environment(text, line, words)))
            if len(found) >= MAX_LAUNCHES:
                return found
    return found


ENVIRONMENT = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
"""The environment variables a launch's settings come from: the CUDA caching allocator's configuration (torch reads
`PYTORCH_ALLOC_CONF`, and `PYTORCH_CUDA_ALLOC_CONF` before it: torch 2.13 `c10/cuda/CUDAAllocatorConfig.h`)."""
_EXPORTED = re.compile(rf"^[ \t]*export[ \t]+({'|'.join(ENVIRONMENT)})=(\S*)", re.MULTILINE)


def environment(text: str, line: int, words: list[str]) -> dict[str, str]:
    """The variables of ENVIRONMENT the command on `line` of `text` runs with: exported on an earlier line, or set in
    front of the command itself (`PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python train.py`)."""
    before = "\n".join(text.splitlines()[:line - 1])
    env = {m.group(1): m.group(2).strip("\"'") for m in _EXPORTED.finditer(before)}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not _ASSIGNMENT.match(word):
            break
        if name in ENVIRONMENT:
            env[name] = value
    return env


def _documented_first(launchers: list[Path], readmes: list[Path], read: Callable[[Path], str | None]) -> list[Path]:
    """`launchers` with those a README (or guide) names (`bash finetune/scripts/run_sft_Yi_6b.sh`) first, in the order
    it names them: the run the project documents, before a variant that sorts earlier (`run_sft_lora_Yi_6b.sh`)."""
    documented = " ".join(text for text in map(read, readmes) if text)
    if not documented:
        return launchers

    def mentioned(path: Path) -> float:
        found = re.search(rf"(?<![\w.-]){re.escape(path.name)}\b", documented)
        return found.start() if found else float("inf")

    return sorted(launchers, key=mentioned)


def _commands_in_folders(text: str, path: Path, makefile: bool, arguments: list[str] | None = None) -> list[tuple[int, list[str], Path]]:
    """`commands`, each with the folder it runs in: the launcher's, or the one a `cd sub` before it moved to."""
    folder = path.parent
    out = []
    for line, words in commands(text, makefile=makefile, arguments=arguments):
        if words[0] == "cd" and len(words) == 2:
            # `cd "$(dirname "${BASH_SOURCE[0]}")/../sft/"`: from the launcher's own folder
            place = _OWN_FOLDER.sub(lambda _: str(path.parent), words[1])
            if "$" not in place and not place.startswith("-"):
                # from where the last `cd` went, else from the launcher's folder (a README's next block starts there)
                folder = next((f / place for f in (folder, path.parent) if (f / place).is_dir()), folder)
                continue
        out.append((line, words, folder))
    return out


_OWN_FOLDER = re.compile(r'^\$\(dirname\s*"?\$\{?(?:0|BASH_SOURCE(?:\[0\])?)\}?"?\)')  # as `commands` leaves it
_SOURCE = re.compile(r"^[ \t]*(?:source|\.)[ \t]+([\w./-]+\.(?:sh|bash|env))[ \t]*$", re.MULTILINE)


def _with_sourced(text: str, launcher: Path, root: Path, read: Callable[[Path], str | None]) -> str:
    """The launcher's text with the variables each file it `source`s sets (`source less/scripts/train/base_training_args.sh`,
    from its own folder or the project root: `export base_training_args="--bf16 True ..."`) on the line of the `source`,
    so the launcher's line numbers stay as they are."""
    def sourced(match: re.Match) -> str:
        for base in (launcher.parent, root):
            candidate = base / match.group(1)
            found = read(candidate) if _within(candidate, root) else None
            if found is not None:
                return _assignments(found)
        return match.group(0)

    return _SOURCE.sub(sourced, text) if "source" in text or ". " in text else text


def _assignments(text: str) -> str:
    """The variable assignments of a sourced file, as one line of the sourcing launcher (`A=1 ; export B="x y"`)."""
    out = []
    for _, logical in _logical_lines(text):
        stripped = logical.strip()
        if _ASSIGNMENT.match(stripped.removeprefix("export ").strip()):
            out.append(stripped)
    return " ; ".join(out)


def _callers(launcher: Path, root: Path, read: Callable[[Path], str | None]) -> list[list[str]]:
    """The arguments other launchers of the project run `launcher` with (`bash finetune.sh $DATA 4 3072`, `sh
    scripts/finetune.sh ...`, `./finetune.sh ...`), their own variables expanded; at most MAX_CALLERS."""
    found: list[list[str]] = []
    for path in _launcher_files(launcher.parent, root):
        text = read(path) if path != launcher else None
        if text is None or launcher.name not in text:
            continue
        for _, words, folder in _commands_in_folders(shell_lines(path.name, text), path, False):
            start = 1 if words[0] in ("bash", "sh", "source", ".") else 0
            if len(words) <= start or not words[start].endswith(launcher.name):
                continue
            own = _OWN_FOLDER.match(words[start])  # `sh $(dirname "$0")/run_g.sh ...`: beside the caller
            if _same(path.parent / words[start][own.end():].lstrip("/") if own else folder / words[start], launcher):
                found.append([w for w in words[start + 1:] if not _ALL_ARGUMENTS.fullmatch(w)])  # not the caller's own `"$@"`
            if len(found) >= MAX_CALLERS:
                return found
    return found


def _readme_files(folder: Path, root: Path) -> list[Path]:
    """The Markdown READMEs of the script's folder and its parents up to the project root, nearest first, then the
    project's other guides: the Markdown files of its root and of its `docs/` (`docs/train_video_chatgpt.md`)."""
    readmes = [current / name for current in _folders_up(folder, root) for name in README_NAMES if (current / name).is_file()]
    guides = sorted(p for base in (root, root / "docs") if base.is_dir() for p in base.glob("*.md") if p.name not in README_NAMES)
    return readmes + guides[:MAX_GUIDES]


TASK_FILES = ("package.json", "pyproject.toml")  # the `scripts:` people keep beside their code


def shell_lines(name: str, text: str) -> str:
    """A launcher's text as shell lines: a shell script or Makefile as it is; the commands of `package.json`
    "scripts" and of pyproject task tables (`[tool.poe.tasks]`, `[tool.pdm.scripts]`, `[tool.hatch.envs.*.scripts]`)
    each on the line it is written on, every other line blank, so lines keep their numbers."""
    if name.lower().endswith(".md"):  # a README or another guide
        return _markdown_code(text)
    if name not in TASK_FILES:
        return text
    lines = text.splitlines()
    out = [""] * len(lines)
    for command in _task_commands(name, text):
        needle = command.splitlines()[0][:60] if command.strip() else ""
        for index, line in enumerate(lines):
            if needle and needle in line and not out[index]:
                out[index] = command.replace("\n", " ")
                break
    return "\n".join(out) + "\n"


_FENCE = re.compile(r"^\s*(```|~~~)")
_PROMPT = re.compile(r"^\s*[$>]\s+")
_PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")  # `--model_name_or_path <path to LLaVA-7B model>`


def _markdown_code(text: str) -> str:
    """A README's fenced code blocks as shell lines (a `$ ` prompt dropped, a `<placeholder>` an unknown value, a line
    of `--options` after one whose `\\` was forgotten joined to it), every other line blank, so lines keep their
    numbers."""
    out, inside = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            inside = not inside
            out.append("")
            continue
        code = _PLACEHOLDER.sub("$PLACEHOLDER", _PROMPT.sub("", line)) if inside else ""
        if code.lstrip().startswith("--") and out and out[-1].strip() and not out[-1].rstrip().endswith("\\"):
            out[-1] += " \\"
        out.append(code)
    return "\n".join(out) + "\n"


_INLINE_FLAG = re.compile(r"`(--[A-Za-z][\w-]*)`")


def _suggested_flags(text: str) -> frozenset[str]:
    """The bare `--flags` a guide's prose names in inline code, outside its code blocks ("add `--grad_checkpointing`
    to the arguments"): runs the project documents, as the commands it shows with that flag added."""
    prose, inside = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            inside = not inside
        elif not inside:
            prose.append(line)
    return frozenset(normalise(flag) for flag in _INLINE_FLAG.findall("\n".join(prose)))


def _task_commands(name: str, text: str) -> list[str]:
    """The command strings of a task file; a file that does not parse has none."""
    try:
        if name == "package.json":
            import json

            scripts = json.loads(text).get("scripts", {})
            return [v for v in scripts.values() if isinstance(v, str)] if isinstance(scripts, dict) else []
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        tool = tomllib.loads(text).get("tool", {})
    except (ValueError, AttributeError):
        return []
    tables = [tool.get("poe", {}).get("tasks", {}), tool.get("pdm", {}).get("scripts", {})]
    tables += [env.get("scripts", {}) for env in tool.get("hatch", {}).get("envs", {}).values() if isinstance(env, dict)]
    found = []
    for table in tables:
        for task in table.values() if isinstance(table, dict) else ():
            if isinstance(task, dict):  # `{cmd = "..."}`, `{shell = "..."}`
                task = task.get("cmd") or task.get("shell") or task.get("call")
            found += [task] if isinstance(task, str) else [t for t in task if isinstance(t, str)] if isinstance(task, list) else []
    return found


def is_makefile(path: str) -> bool:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name in MAKEFILES or name.endswith(".mk")


def script_launches(text: str, launcher: Path, root: Path, makefile: bool = False) -> list[tuple[Path, Launch]]:
    """The Python scripts of the project a launcher runs, each with its launch line (`python train.py ...`)."""
    found = []
    for line, words in commands(text, makefile=makefile):
        for target in _named_scripts(words, launcher, root):
            launch = _read_command(words, line, launcher, target, root)
            if launch is not None:
                found.append((target, replace(launch, option_lines=_option_lines(text.splitlines()[line - 1:], launch))))
                break
    return found


def _named_scripts(words: list[str], launcher: Path, root: Path) -> list[Path]:
    """Files of the project the words may name as the program: `train.py`, `src/train.py`, `-m pkg.train`."""
    out = []
    for index, word in enumerate(words):
        relative = word.replace(".", "/") + ".py" if index and words[index - 1] in ("-m", "--module") else word
        if relative.endswith(".py") and "$" not in relative and not relative.startswith("-"):
            found = [p.resolve() for p in (launcher.parent / relative, root / relative) if p.is_file()]
            # after a `cd` into a subfolder: the one file of the project whose path ends with the words
            out += found or _ending_with(root, tuple(p for p in relative.split("/") if p not in ("", ".")))
    return list(dict.fromkeys(out))


def _ending_with(root: Path, parts: tuple[str, ...]) -> list[Path]:
    if len(parts) < 2 or ".." in parts:
        return []
    matches = [p.resolve() for p in _python_files(root, parts[-1]) if _tail_matches(list(parts), p)]
    return matches if len(matches) == 1 else []


def _python_files(root: Path, name: str, depth: int = 6) -> list[Path]:
    """Files called `name` below `root` (hidden folders and environments left out), to a few levels."""
    found: list[Path] = []
    folders = [root]
    for _ in range(depth):
        next_level = []
        for folder in folders:
            try:
                entries = list(folder.iterdir())
            except OSError:
                continue
            found += [e for e in entries if e.name == name and e.is_file()]
            next_level += [e for e in entries if e.is_dir() and not e.name.startswith(".") and e.name not in ("node_modules", "venv", "site-packages")]
        folders = next_level[:500]
    return found


@dataclass(frozen=True)
class FrameworkLaunch:
    """A line that starts a framework's trainer: `llamafactory-cli train x.yaml`, `axolotl train x.yml`,
    `tune run lora_finetune_single_device --config x.yaml key=value`, `swift sft --model ... --tuner_type lora`,
    `trl sft --config x.yaml`."""

    framework: str  # the id in frameworks.json
    launch: Launch  # its options (`--key value`, and `key=value` overrides), line and file
    config: str | None  # the config file it names, as written


def framework_launches(text: str, path: str, makefile: bool = False) -> list[FrameworkLaunch]:
    """Every framework launch in a shell script or Makefile."""
    found = []
    lines = text.splitlines()
    for line, words in commands(text, makefile=makefile):
        read = _framework_command(words)
        if read is None:
            continue
        framework_id, config, rest, processes, runner, runner_options = read
        options, written, positional = _script_arguments(rest)
        for word in positional:  # OmegaConf / LLaMA-Factory `key=value` overrides
            if isinstance(word, str) and "=" in word and not word.startswith("="):
                key, _, value = word.partition("=")
                options[key] = _known(value)
                written[key] = key
        processes = processes or _processes(runner, runner_options)
        launch = Launch(shown_path(path), line, runner, options, written, tuple(positional), runner_options, processes,
                        env=environment(text, line, words))
        found.append(FrameworkLaunch(framework_id, replace(launch, option_lines=_option_lines(lines[line - 1:], launch)), config))
    return found


_FRAMEWORK_SUBCOMMANDS = {"swift": {"sft", "pt", "rlhf"}, "trl": {"sft", "dpo", "grpo", "kto", "reward", "rloo", "orpo"}}


# the scripts of a framework's own tree that people run directly, and the framework they are
_ENTRY_POINTS = {"train_bash.py": "llamafactory", "swift/cli/sft.py": "swift", "swift/cli/pt.py": "swift", "swift/cli/rlhf.py": "swift", "swift.cli.sft": "swift",
                 "src/train.py": "llamafactory", "llamafactory/launcher.py": "llamafactory", "llamafactory.launcher": "llamafactory",
                 "axolotl.cli.train": "axolotl", "trl/scripts/sft.py": "trl", "trl/scripts/dpo.py": "trl", "trl.scripts.sft": "trl"}
CONFIG_FILE = (".yaml", ".yml", ".json")
AUTO = "auto"  # a script run with a config file of its own: the framework is the one the file's keys say
TRAINER = "trainer"  # a program run with `TrainingArguments` options (`--per_device_train_batch_size 4 ...`)
# options that name `TrainingArguments` fields: one of the first two and one more make a Trainer command line
_TRAINER_BATCH = ("per_device_train_batch_size", "gradient_accumulation_steps")
_TRAINER_MORE = ("output_dir", "num_train_epochs", "max_steps", "learning_rate", "gradient_checkpointing", "deepspeed", "bf16", "fp16")


def _framework_command(words: list[str]):
    """(framework, config file named, the words after it, processes, runner, runner options) of a framework launch;
    None for any other line."""
    leading = next((i for i, w in enumerate(words) if not _ASSIGNMENT.match(w)), len(words))
    env = dict(w.split("=", 1) for w in words[:leading])  # `NPROC_PER_NODE=4 swift sft ...`
    words = words[leading:]
    processes = int(env["NPROC_PER_NODE"]) if env.get("NPROC_PER_NODE", "").isdigit() else None
    if processes is None and env.get("CUDA_VISIBLE_DEVICES") and re.fullmatch(r"[\d,]+", env["CUDA_VISIBLE_DEVICES"]):
        visible = len(env["CUDA_VISIBLE_DEVICES"].split(","))
        processes = visible if any(w.rsplit("/", 1)[-1] in ("torchrun", "accelerate", "deepspeed", "swift") for w in words) else None
    for index, word in enumerate(words):
        name = word.rsplit("/", 1)[-1]
        rest = words[index + 1:]
        if name in ("llamafactory-cli", "lmf") and rest[:1] == ["train"] and len(rest) > 1:
            return "llamafactory", rest[1], rest[2:], processes, "llamafactory-cli", {}
        if name == "axolotl" and rest[:1] in (["train"], ["preprocess"]) and len(rest) > 1:
            return "axolotl", rest[1], rest[2:], processes, "axolotl", {}
        if name == "tune" and rest[:1] == ["run"]:
            config = next((rest[i + 1] for i, w in enumerate(rest[:-1]) if w == "--config"), None)
            overrides = rest[rest.index("--config") + 2:] if config else []
            tune_processes = next((int(rest[i + 1]) for i, w in enumerate(rest[:-1]) if w == "--nproc_per_node" and rest[i + 1].isdigit()), None)
            return "torchtune", config, overrides, tune_processes or processes, "tune", {}
        if name in _FRAMEWORK_SUBCOMMANDS and rest and rest[0] in _FRAMEWORK_SUBCOMMANDS[name]:
            after = rest[1:]
            config = after[0] if after and after[0].endswith(CONFIG_FILE) else None
            if config is None and "--config" in after[:-1]:
                config = after[after.index("--config") + 1]
            options = {"command": rest[0]}
            visible = env.get("CUDA_VISIBLE_DEVICES", "")
            if name == "swift" and processes and re.fullmatch(r"[\d,]+", visible) and len(visible.split(",")) > processes:
                # fewer processes than visible GPUs: each process spreads its model over several (`is_mp()`) [S8]
                options["gpus_per_process"] = len(visible.split(",")) // processes
            return name, config, [w for w in after if w not in (config, "--config")], processes, name, options
        read = _runner(words, index)
        if read is not None:
            runner, runner_options, program, module, rest = read
            framework = _ENTRY_POINTS.get(module or "") or next((f for p, f in _ENTRY_POINTS.items() if (program or "").endswith(p)), None)
            config = rest[0] if rest and rest[0].endswith(CONFIG_FILE) else None
            if config is None and "--config" in rest[:-1]:
                config = rest[rest.index("--config") + 1]
            if framework is None and config is None:
                # a script of the project's own: read with the script; as a Trainer command line where it is not there
                return (TRAINER, None, rest, processes, runner, runner_options) if _trainer_options(rest) else None
            return framework or AUTO, config, [w for w in rest if w not in (config, "--config")], processes, runner, runner_options
    if words and words[0] not in _NOT_PROGRAMS and not words[0].startswith("-") and _trainer_options(words[1:]):
        return TRAINER, None, words[1:], processes, words[0].rsplit("/", 1)[-1], {}  # a console command: `autoalign-cli sft ...`
    return None


_NOT_PROGRAMS = {"bash", "sh", "zsh", "source", ".", "echo", "printf", "exec", "eval"}


def _trainer_options(words: list[str]) -> bool:
    options = {normalise(w.partition("=")[0]) for w in words if w.startswith("--")}
    return any(o in options for o in _TRAINER_BATCH) and any(o in options for o in _TRAINER_MORE)


def _runner(words: list[str], index: int):
    """What `python` / `torchrun` / `deepspeed` / `accelerate launch` at `words[index]` runs, or None."""
    name = words[index].rsplit("/", 1)[-1]
    if _PYTHON.match(name):
        return _after_python(words, index + 1)
    if name in ("torchrun", "deepspeed"):
        return _after_runner(words, index + 1, name, _TORCHRUN_FLAGS if name == "torchrun" else _DEEPSPEED_FLAGS)
    if name == "accelerate" and index + 1 < len(words) and words[index + 1] == "launch":
        return _after_runner(words, index + 2, "accelerate", _ACCELERATE_FLAGS)
    return None


def _option_lines(lines: list[str], launch: Launch) -> dict[str, int]:
    """The line each option is written on, in a command continued over several lines."""
    out: dict[str, int] = {}
    for offset, text in enumerate(lines):
        for key, written in launch.written.items():
            if key not in out and re.search(rf"(^|\s){re.escape(written)}(=|\s|$)", text):
                out[key] = launch.line + offset
        if not text.rstrip().endswith("\\"):
            break
    return out


def _launcher_files(folder: Path, root: Path) -> list[Path]:
    """Launcher files in the script's folder and its parents up to the project root, nearest first, each
    folder's own files before those of its `scripts/`-like subfolders."""
    found: list[Path] = []
    for current in _folders_up(folder, root):
        found += _listed(current, 0)
        if len(found) >= MAX_LAUNCHER_FILES:
            break
    return list(dict.fromkeys(found))[:MAX_LAUNCHER_FILES]


def _listed(folder: Path, depth: int) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    files = [e for e in entries if (e.suffix in LAUNCHER_SUFFIXES or e.name in MAKEFILES or e.suffix == ".mk"
                                    or (depth == 0 and e.name in TASK_FILES)) and e.is_file()]
    if depth < _FOLDER_DEPTH:
        for entry in entries:
            if (depth > 0 or _launcher_folder(entry.name.lower())) and not entry.name.startswith(".") and entry.is_dir():
                files += _listed(entry, depth + 1)
    return files


def _launcher_folder(name: str) -> bool:
    return name in LAUNCHER_FOLDERS or any(word in name for word in _LAUNCHER_FOLDER_WORDS)


def _folders_up(folder: Path, root: Path) -> list[Path]:
    """`folder` and its parents up to `root`, nearest first (only `folder` when it lies outside `root`)."""
    return [folder, *[p for p in folder.parents if _within(p, root)]] if _within(folder, root) else [folder]


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# -- reading a launcher ---------------------------------------------------------------------------------------


def commands(text: str, makefile: bool = False, arguments: list[str] | None = None) -> list[tuple[int, list[str]]]:
    """Each simple command of a shell script or Makefile recipe as (line, words), with the variables the file
    sets expanded (`$MODEL`, `${MODEL:-default}`, Make's `$(MODEL)`), and `$1`... when the `arguments` a caller
    runs the script with are known; unknown ones stay as written."""
    variables: dict[str, str] = {str(n): word for n, word in enumerate(arguments or [], 1) if n <= 9}
    given = " ".join(shlex.quote(word) for word in arguments or [])
    out: list[tuple[int, list[str]]] = []
    for line, logical in _logical_lines(text):
        stripped = logical.strip()
        if arguments is not None and "$" in stripped:  # `"$@"`: every argument the caller gives
            stripped = _ALL_ARGUMENTS.sub(lambda _: given, stripped)
        if makefile:
            if not logical.startswith("\t"):
                assignment = _MAKE_ASSIGNMENT.match(stripped)
                if assignment and not stripped.startswith("\t"):
                    variables.setdefault(assignment.group(1), _expand(assignment.group(2).strip(), variables))
                continue
            stripped = stripped.lstrip("@-+ ")
        if not stripped or stripped.startswith("#"):
            continue
        for words in _split_commands(_expand(stripped, variables)):
            if words[0] == "eval" and len(words) > 1:  # `eval "$header" "$training_args"`: the words, split again
                words = next(iter(_split_commands(" ".join(words[1:]))), words)
            if words[0] in ("export", "local", "readonly", "declare"):
                words = [w for w in words[1:] if not w.startswith("-")]
            assignments = [_ASSIGNMENT.match(w) for w in words]
            if words and all(assignments):  # `NAME=value`, nothing run
                variables.update({m.group(1): m.group(2) for m in assignments})
            elif words:
                out.append((line, words))
                out += [(line, inner) for inner in _shell_c_commands(words)]
    return out


def _shell_c_commands(words: list[str]) -> list[list[str]]:
    """The commands of `bash -c "..."` / `sh -c '...'` (under `srun`, `docker run`, ...)."""
    for index, word in enumerate(words[:-2]):
        if word.rsplit("/", 1)[-1] in ("bash", "sh") and words[index + 1] == "-c":
            return _split_commands(words[index + 2])
    return []


_QUOTED_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?[A-Za-z_]\w*=\"")
_MAX_QUOTED_LINES = 100


def _open_double_quote(text: str) -> bool:
    """Whether `text` ends inside a double-quoted string (a backslash escapes the next character)."""
    inside, escaped = False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            inside = not inside
    return inside


_HERE_DOCUMENT = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_]\w*)\2")
_WRITES_TO = re.compile(r"(?<![<>&\d])>\s*(['\"]?)([^\s;&|<>'\"]+)\1")
_MAX_HERE_LINES = 500


def _here_documents(text: str) -> list[tuple[int, str | None, str]]:
    """Each here-document of a shell script: (its command's line, the file the command writes it to, as written
    (`cat <<EOT > dpo_config.yaml`; None when it writes none), its text)."""
    out: list[tuple[int, str | None, str]] = []
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        match = _HERE_DOCUMENT.search(line) if "<<<" not in line and not line.lstrip().startswith("#") else None
        if match is None:
            continue
        end = next((i for i in range(number, min(len(lines), number + _MAX_HERE_LINES))
                    if (lines[i].lstrip("\t") if match.group(1) else lines[i]).rstrip() == match.group(3)), None)
        if end is None:
            continue
        target = _WRITES_TO.search(line[:match.start()] + " " + line[match.end():])
        out.append((number, target.group(2) if target else None, "\n".join(lines[number:end]) + "\n"))
        number = end + 1
    return out


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with their `\\` continuations joined, and a variable's double-quoted value written over several lines
    (`ARGS="` ... `"`), each with the number of its first line; the text of here-documents is no command."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    # the lines of each here-document's text and of its end word
    bodies = {line for first, _, body in _here_documents(text) for line in range(first + 1, first + body.count("\n") + 2)} if "<<" in text else set()
    for number, raw in enumerate(text.splitlines(), 1):
        if number in bodies:
            continue
        if raw.lstrip().startswith("#") and pending:
            continue  # a comment line inside a continued command
        raw = _COMMENT.sub("", raw)  # `# ...` after a word: a comment; `data#1000` is a word
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        if _QUOTED_ASSIGNMENT.match(pending[0]) and _open_double_quote(" ".join(pending)) and len(pending) < _MAX_QUOTED_LINES:
            continue  # `ARGS="` whose value goes on over the next lines, to the closing quote
        out.append((start, " ".join(pending)))
        pending = []
    if pending:
        out.append((start, " ".join(pending)))
    return out


def _expand(text: str, variables: dict[str, str]) -> str:
    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(4) or match.group(5)
        unset = variables.get(name) == "" or _UNSET_ARGUMENT.match(variables.get(name, ""))  # `X=$4` run with no 4th
        if name in variables and not (unset and match.group(2) in (":-", ":=")):
            return variables[name]
        if match.group(2):  # ${NAME:-default}
            return match.group(3)
        return match.group(0)

    # what is still unknown after that (`$(( 4 * $COUNT_NODE ))`, `$(nvidia-smi -L | wc -l)`) stays one word
    return _SUBSTITUTION.sub(lambda m: re.sub(r"\s+", "", m.group(0)).replace("|", "\\|"), _ARITHMETIC.sub(_arithmetic, _EXPANSION.sub(one, text)))


# `$(( 16 / 2 ))` and `$(expr 16 / 2)` once the file's variables are in: `--gradient_accumulation_steps $(expr 16 / $N)`
_ARITHMETIC = re.compile(r"\$\(\(\s*(\d+)\s*([-+*/])\s*(\d+)\s*\)\)|\$\(expr\s+(\d+)\s+\\?([-+*/])\s+(\d+)\s*\)")


_SUBSTITUTION = re.compile(r"\$\(\([^()]*\)\)|\$\([^()]*\)")


def _arithmetic(match: re.Match) -> str:
    left, operator, right = match.group(1, 2, 3) if match.group(1) else match.group(4, 5, 6)
    a, b = int(left), int(right)
    if operator == "/" and b == 0:
        return match.group(0)
    return str({"+": a + b, "-": a - b, "*": a * b, "/": a // b}[operator])


def _split_commands(text: str) -> list[list[str]]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""  # comments are gone already (`_logical_lines`); `#` inside a word is part of it
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote
        return []
    out: list[list[str]] = [[]]
    for word in words:
        if word in _SEPARATORS or set(word) <= set(";&|"):
            out.append([])
        else:
            out[-1].append(word)
    return [c for c in out if c]


def _read_command(words: list[str], line: int, launcher: Path, target: Path, root: Path, folder: Path | None = None,
                  files: ProjectFiles | None = None) -> Launch | None:
    """The launch `words`, run in `folder` (the launcher's by default), make, when they run `target`, or a wrapper
    of the project (read through `files`) that runs `target`'s entry point."""
    if words[0] in ("echo", "printf"):
        return None  # `echo $cmd` shows the command the next line runs
    for index, word in enumerate(words):
        name = word.rsplit("/", 1)[-1]
        if not (_PYTHON.match(name) or name in ("torchrun", "deepspeed", "accelerate")):
            continue
        read = _runner(words, index)
        if read is None:
            return None
        runner, runner_options, program, module, rest = read
        folder = folder or launcher.parent
        if not (_runs(program, module, folder, target, root) or files is not None and _wraps(program, module, folder, target, root, files)):
            return None
        options, written, positional = _script_arguments(rest)
        return Launch(shown_path(launcher), line, runner, options, written, tuple(positional), runner_options,
                      _processes(runner, runner_options), forwards=any(w in ("$@", "$*", "${@}", "${*}") for w in rest))
    return None


def _after_python(words: list[str], index: int):
    while index < len(words) and words[index].startswith("-") and words[index] != "-m":
        index += 2 if words[index] in _PYTHON_VALUE_OPTIONS else 1
    if index + 1 < len(words) and words[index] == "-m":
        module = words[index + 1]
        if module in ("torch.distributed.run", "torch.distributed.launch"):
            return _after_runner(words, index + 2, "torchrun", _TORCHRUN_FLAGS)
        if module in ("accelerate.commands.launch",):
            return _after_runner(words, index + 2, "accelerate", _ACCELERATE_FLAGS)
        if module == "deepspeed.launcher.runner":
            return _after_runner(words, index + 2, "deepspeed", _DEEPSPEED_FLAGS)
        return "python", {}, None, module, words[index + 2:]
    if index < len(words):
        return "python", {}, words[index], None, words[index + 1:]
    return None


def _after_runner(words: list[str], index: int, runner: str, flags: set[str]):
    options: dict[str, object] = {}
    module = False
    while index < len(words) and words[index].startswith("-"):
        word = words[index]
        name, equals, value = word.partition("=")
        if name in ("-m", "--module"):
            module = True
            index += 1
        elif equals:
            options[normalise(name)] = value
            index += 1
        elif name in flags or index + 1 >= len(words):
            options[normalise(name)] = True
            index += 1
        else:
            options[normalise(name)] = words[index + 1]
            index += 2
    if index >= len(words):
        return None
    program = words[index]
    return (runner, options, None, program, words[index + 1:]) if module else (runner, options, program, None, words[index + 1:])


def _runs(program: str | None, module: str | None, folder: Path, target: Path, root: Path) -> bool:
    """Whether the program (a path) or module a launch line run in `folder` names is `target`."""
    if module is not None:
        parts = module.split(".")
        return _tail_matches(parts[:-1] + [parts[-1] + ".py"], target) or _tail_matches(parts + ["__main__.py"], target)
    if program is None or not program.endswith(".py"):
        return False
    known = program.split("$")[-1].split("}")[-1].lstrip("/") if "$" in program else program
    parts = [p for p in known.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return any(_same(base / program, target) for base in (folder, root))
    if len(parts) == 1 and "$" not in program:
        if any(_same(base / program, target) for base in (folder, root)):
            return True
        if program != target.name or (folder / program).exists():
            return False
        # `bash scripts/train.sh` run from the folder of `train.py`: a bare name the launcher's own folder lacks; or a
        # README above the script that runs it from elsewhere (WizardCoder's `deepspeed train_wizardcoder.py`, for a
        # file kept in src/), when it is the project's only file of that name
        return target.parent in folder.resolve().parents or (folder.resolve() in target.parents and len(_python_files(root, program)) == 1)
    # `python open_flamingo/open_flamingo/train/train.py`, run from above the checkout: its first word names the
    # checkout itself (the path is no file of the project as written)
    above = len(parts) > 3 and not root.joinpath(*parts).exists() and not folder.joinpath(*parts).exists()
    return _tail_matches(parts, target) or (above and _tail_matches(parts[1:], target))


_IMPORT_FROM = re.compile(r"^from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(?:\(([\w\s,]+)\)|([\w \t,]+))", re.MULTILINE)


def _wraps(program: str | None, module: str | None, folder: Path, target: Path, root: Path, files: ProjectFiles) -> bool:
    """Whether the program a launch line runs is a wrapper of `target`: a module of the project that imports a function
    from `target` and calls it (LLaVA's and FastChat's `train_mem.py`: `from llava.train.train import train`, a
    monkey-patch, then `train()`)."""
    relative = module.replace(".", "/") + ".py" if module is not None else program
    if relative is None or not relative.endswith(".py") or "$" in relative or relative.startswith("/"):
        return False
    wrapper = next((p for p in (folder / relative, root / relative) if p.is_file()), None)
    text = files.module(wrapper) if wrapper is not None and not _same(wrapper, target) else None
    if text is None:
        return False
    for match in _IMPORT_FROM.finditer(text):
        source, names = match.group(1), [n.split()[-1] for n in (match.group(2) or match.group(3)).split(",") if n.strip()]
        if _names_module(source, wrapper, target) and any(re.search(rf"\b{re.escape(n)}\s*\(", text[match.end():]) for n in names):
            return True
    return False


def _names_module(source: str, importer: Path, target: Path) -> bool:
    """Whether `from source import ...` in the file `importer` imports the module `target`."""
    dots = len(source) - len(source.lstrip("."))
    parts = [p for p in source[dots:].split(".") if p]
    if not parts:
        return False
    if dots:
        base = importer.parent
        for _ in range(dots - 1):
            base = base.parent
        return _same(base.joinpath(*parts[:-1], parts[-1] + ".py"), target)
    return _tail_matches(parts[:-1] + [parts[-1] + ".py"], target)


def _tail_matches(parts: list[str], target: Path) -> bool:
    return len(parts) <= len(target.parts) and list(target.parts[-len(parts):]) == parts


def _same(path: Path, target: Path) -> bool:
    try:
        return path.resolve() == target
    except (OSError, ValueError):
        return False


def _script_arguments(words: list[str]) -> tuple[dict[str, object], dict[str, str], list[object]]:
    options: dict[str, object] = {}
    written: dict[str, str] = {}
    positional: list[object] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("-") and len(word) > 1 and not _number(word):
            name, equals, value = word.partition("=")
            key = normalise(name)
            written[key] = name
            if equals:
                options[key] = _known(value)
                index += 1
            elif index + 1 < len(words) and (not words[index + 1].startswith("-") or _number(words[index + 1])) and not _redirect(words[index + 1]):
                options[key] = _known(words[index + 1])
                index += 2
            else:
                options[key] = True
                index += 1
        elif _redirect(word):
            break
        else:
            positional.append(_known(word))
            index += 1
    return options, written, positional


def _known(word: str) -> object:
    """The word, or UNKNOWN_VALUE where the file does not tell it: `$1`, `$(...)`, a `<PLACEHOLDER>`. A config file
    under a folder the file does not tell (`${REPO_HOME}/configs/zero3.json`) is the project's `configs/zero3.json`."""
    tail = re.fullmatch(r"\$\{?\w+\}?/([\w./-]+\.(?:json|ya?ml))", word)
    if tail:
        return tail.group(1)
    return UNKNOWN_VALUE if "$" in word or "`" in word or (word.startswith("<") and word.endswith(">")) else word


def _number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


def _redirect(word: str) -> bool:
    return (word[:1] in (">", "<") or word[:2] in ("2>", "1>", "&>")) and not (word.startswith("<") and word.endswith(">") and len(word) > 2)


_SBATCH_GPUS = re.compile(r"^#SBATCH[ \t]+(?:--gpus-per-node|--gpus|-G)[= \t]+(?:\w+:)?(\d+)[ \t]*(?:#.*)?$"
                          r"|^#SBATCH[ \t]+--gres[= \t]+gpu(?::\w+)?:(\d+)[ \t]*(?:#.*)?$", re.MULTILINE)
_SBATCH_NODES = re.compile(r"^#SBATCH[ \t]+(?:--nodes|-N)[= \t]+(\d+)", re.MULTILINE)


def job_gpus(text: str) -> int | None:
    """The GPUs per node a SLURM job script requests (`#SBATCH --gpus=2`, `--gres=gpu:a100:4`, `--gpus-per-node=8`),
    where `accelerate launch` with neither a process count nor a config file takes its processes from: it runs one per
    visible GPU (docs/framework-facts.md [A6]: accelerate 1.16.0 `commands/launch.py` L1363-1373, "More than one GPU
    was found, enabling multi-GPU training"). None when the job asks for GPUs over several nodes without saying how
    many each gets, or asks for none."""
    counts = {int(a or b) for a, b in _SBATCH_GPUS.findall(text)}
    nodes = {int(n) for n in _SBATCH_NODES.findall(text)}
    per_node = "--gpus-per-node" in text or "--gres" in text
    if len(counts) != 1 or (not per_node and nodes - {1}):
        return None
    return counts.pop()


def _processes(runner: str, options: dict[str, object]) -> int | None:
    def number(*names: str) -> int | None:
        for name in names:
            value = options.get(name)
            if isinstance(value, str) and value.isdigit():
                return int(value)
        return None

    if runner == "torchrun":
        per_node = number("nproc_per_node")
    elif runner == "deepspeed":
        per_node = number("num_gpus")
        include = options.get("include")
        if per_node is None and isinstance(include, str) and re.fullmatch(r"[\w.-]+:[\d,]+", include):
            per_node = len(include.split(":", 1)[1].split(","))
    elif runner == "accelerate":
        return number("num_processes")
    else:
        return None
    nodes = number("nnodes", "num_nodes") or 1
    return per_node * nodes if per_node is not None else None
