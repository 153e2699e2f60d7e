#!/usr/bin/env python3
"""Extract the full set of top-level config keys each training framework accepts.

Output: ``ckpt_doctor/data/framework_keys.json`` (see ``--out``)::

    {"<framework>": {"releases": {"<tag>": {"keys": [...], "unknown_keys": "error"|"ignored"|"warning",
                                            "source": "<repo>@<tag>: files read", ...}},
                     "newest": "<tag>"}}

Everything is read statically: framework sources come from the local bare git
snapshots under ``/work/.mirror/<owner>+<name>/repo`` via ``git cat-file``
(equivalent to ``git --git-dir=<dir> show <tag>:<path>``) and are parsed with
``ast``; no framework is imported and no network is used.  transformers'
``TrainingArguments`` / ``Seq2SeqTrainingArguments`` are parsed from the
*installed* transformers package's ``training_args.py`` /
``training_args_seq2seq.py`` (source text only, the module is not imported).
Caveat: older framework releases ran on transformers 4.x, whose
TrainingArguments differs (e.g. ``evaluation_strategy``, ``overwrite_output_dir``,
``no_cuda`` ...); every release here is unioned with the *installed*
transformers fields, which the ``source`` string names.  (A 4.x transformers
snapshot is over the 500 MiB fetch limit, so no 4.x list is produced.)

Class resolution (all frameworks): every ``.py`` under the framework package at
the tag is indexed; a base-class name is resolved in the module that uses it
(class defined there -> module-level alias ``X = Y`` (last assignment wins,
so ``if USE_MCA: B = Mca... else: B = Seq2SeqTrainingArguments`` resolves to
the HF class) -> ``from .mod import X [as Y]`` / absolute package imports,
followed through re-exporting ``__init__`` files and TYPE_CHECKING blocks ->
``transformers`` imports -> a unique ``class X`` anywhere in the package).
Dataclass fields = annotated class-body names of ``@dataclass`` classes across
the whole base chain, minus ``ClassVar`` and ``field(init=False)`` (exactly what
``HfArgumentParser`` / ``parse_dict`` accept; annotations of non-dataclass
bases are not fields).  Pydantic fields = annotated names of ``BaseModel``
subclasses (minus ``ClassVar``/``_private``), plus ``Field(alias=...)`` and
``validation_alias=AliasChoices(...)`` names.

Per framework:

* llamafactory (hiyouga/LLaMA-Factory): ``src/llamafactory/hparams/parser.py``
  ``_TRAIN_ARGS`` list (the ``HfArgumentParser`` of ``get_train_args``):
  ModelArguments (+ BaseModelArguments, QuantizationArguments, ProcessorArguments,
  ExportArguments, Vllm/SGLang/KTransformers mixins; ``compute_dtype`` etc. are
  init=False), DataArguments, TrainingArguments (hparams/training_args.py:
  Profiler/Fp8/RayArguments + transformers Seq2SeqTrainingArguments),
  FinetuningArguments (+ Freeze/Lora/OFT/RLHF/Galore/Apollo/BAdam/SwanLab),
  GeneratingArguments.  A YAML/JSON config is passed to
  ``parser.parse_dict(args, allow_extra_keys=False)`` -> unknown keys raise
  (unless env ALLOW_EXTRA_ARGS=1).  The USE_MCA=1 path (mcore_adapter
  TrainingArguments) is not covered.
* swift / swift_rlhf (modelscope/ms-swift): the pipeline ``args_class`` of
  ``swift sft`` / ``swift rlhf``: 4.x ``swift/arguments/sft_args.py::SftArguments``
  and ``rlhf_args.py::RLHFArguments``; 3.x ``swift/llm/argument/train_args.py::
  TrainArguments`` and ``rlhf_args.py::RLHFArguments``; all bases including
  swift/trainers/arguments.py (TrainArgumentsMixin + transformers
  Seq2SeqTrainingArguments).  Parsed with ``HfArgumentParser.
  parse_args_into_dataclasses(return_remaining_strings=True)``; leftovers raise
  in ``SwiftPipeline.__init__`` unless ``ignore_args_error: true`` (then warning).
  YAML/JSON configs (4.x ``swift sft cfg.yaml``) become ``--key value`` argv, so
  argparse prefix abbreviations (``--lora_ran`` -> lora_rank) are also accepted;
  the top-level ``ENV`` mapping is popped first.
* trl_sft / trl_dpo / trl_grpo (huggingface/trl): ``trl/scripts/{sft,dpo,grpo}.py``
  ``dataclass_types`` tuple given to ``TrlParser``: ScriptArguments (or
  GRPOScriptArguments), SFTConfig/DPOConfig/GRPOConfig (+ bases down to
  transformers TrainingArguments), ModelConfig, DatasetMixtureConfig (when
  present).  ``--config`` YAML keys go to ``set_defaults_with_config``; ``env``
  is popped.  Keys matching no dataclass field are forwarded to ``accelerate
  launch`` (1.x) or raise (0.x ``fail_with_unknown_args``): an error unless it is
  an accelerate launch option.  ``accelerate_launch_keys`` (releases whose CLI
  passes leftovers on: trl/cli.py or trl/cli/*.py using
  ``return_remaining_strings=True``) lists those options (``add_argument("--x")``
  names from accelerate ``commands/launch.py`` of the newest accelerate tag).
* axolotl (axolotl-ai-cloud/axolotl): pydantic ``AxolotlInputConfig`` in
  ``src/axolotl/utils/schemas/config.py`` and all its bases/mixins
  (schemas/model.py, peft.py, training.py, integrations.py, deprecated.py,
  multimodal.py, ...).  ``model_config`` sets no ``extra`` -> pydantic default
  ``ignore``; ``validate_config`` returns ``model_dump()``, so unknown keys are
  silently dropped.  ``fsdp_config.<field>`` entries come from schemas/fsdp.py
  ``FSDPConfig`` (also extra=ignore; a ``fsdp_`` prefix is stripped by a
  validator).  ``plugin_keys`` lists, per ``src/axolotl/integrations/<name>``, the pydantic
  fields of the class named by the plugin's ``get_input_args()`` (merged into
  the schema by ``merge_input_args`` only when that plugin is in ``plugins:``).
* accelerate / accelerate_sagemaker (huggingface/accelerate):
  ``src/accelerate/commands/config/config_args.py`` ``ClusterConfig`` (used when
  compute_environment is LOCAL_MACHINE) / ``SageMakerConfig`` + ``BaseConfig``,
  plus legacy keys that ``process_config`` pops/deletes before the check
  (``fp16``, ``dynamo_backend``).  ``from_yaml_file`` raises on any other key.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

MIRROR = Path(os.environ.get("CKPT_DOCTOR_MIRROR", "/work/.mirror"))

# framework -> (mirror dir, [tags newest first])
RELEASES = {
    "llamafactory": ("hiyouga+LLaMA-Factory", ["v0.9.5", "v0.9.4", "v0.9.2", "v0.9.0"]),
    "swift": ("modelscope+ms-swift", ["v4.5.2", "v4.0.0", "v3.8.0", "v3.2.0"]),
    "swift_rlhf": ("modelscope+ms-swift", ["v4.5.2", "v4.0.0", "v3.8.0", "v3.2.0"]),
    "trl_sft": ("huggingface+trl", ["v1.9.0", "v0.29.1", "v0.23.0", "v0.16.0"]),
    "trl_dpo": ("huggingface+trl", ["v1.9.0", "v0.29.1", "v0.23.0", "v0.16.0"]),
    "trl_grpo": ("huggingface+trl", ["v1.9.0", "v0.29.1", "v0.23.0", "v0.16.0"]),
    "axolotl": ("axolotl-ai-cloud+axolotl", ["v0.18.0", "v0.15.0", "v0.12.0", "v0.8.0"]),
    "accelerate": ("huggingface+accelerate", ["v1.14.0"]),
    "accelerate_sagemaker": ("huggingface+accelerate", ["v1.14.0"]),
}

SANITY = {
    "llamafactory": (
        ["cutoff_len", "lora_rank", "lora_target", "disable_gradient_checkpointing", "use_reentrant_gc",
         "per_device_train_batch_size", "gradient_checkpointing", "deepspeed"],
        ["lora_r", "sequence_len"],
    ),
    "axolotl": (["base_model", "micro_batch_size", "sequence_len", "gradient_checkpointing",
                 "activation_offloading"], []),
    "swift": (["tuner_type", "lora_rank", "max_length", "per_device_train_batch_size"], []),
    "trl_sft": (["max_length", "use_peft", "lora_r", "model_name_or_path", "gradient_checkpointing"], []),
}


# --------------------------------------------------------------------------- sources


class GitTree:
    """All files under some prefixes of one tag, read with a single `git cat-file --batch`."""

    def __init__(self, git_dir: Path, tag: str, prefixes: list[str]):
        self.git_dir, self.tag = git_dir, tag
        out = subprocess.run(
            ["git", f"--git-dir={git_dir}", "ls-tree", "-r", tag, "--", *prefixes],
            check=True, capture_output=True, text=True,
        ).stdout
        entries = []
        for line in out.splitlines():
            meta, path = line.split("\t", 1)
            _, kind, sha = meta.split()
            if kind == "blob" and path.endswith(".py"):
                entries.append((path, sha))
        self.texts: dict[str, str] = {}
        if entries:
            proc = subprocess.run(
                ["git", f"--git-dir={git_dir}", "cat-file", "--batch"],
                input="".join(f"{sha}\n" for _, sha in entries).encode(),
                check=True, capture_output=True,
            )
            buf, pos = proc.stdout, 0
            for path, _ in entries:
                nl = buf.index(b"\n", pos)
                size = int(buf[pos:nl].split()[2])
                self.texts[path] = buf[nl + 1: nl + 1 + size].decode("utf-8", "replace")
                pos = nl + 1 + size + 1

    def has(self, path: str) -> bool:
        return path in self.texts


def transformers_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("transformers")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit("transformers is not installed; cannot read training_args.py")
    return Path(list(spec.submodule_search_locations)[0])


def transformers_version(tdir: Path) -> str:
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', (tdir / "__init__.py").read_text(), re.M)
    return m.group(1) if m else "?"


# --------------------------------------------------------------------------- resolver


def _is_dataclass_deco(d: ast.expr) -> bool:
    if isinstance(d, ast.Call):
        d = d.func
    return (isinstance(d, ast.Name) and d.id == "dataclass") or (
        isinstance(d, ast.Attribute) and d.attr == "dataclass")


def _ann_is_classvar(ann: ast.expr) -> bool:
    src = ast.unparse(ann)
    return src.startswith("ClassVar") or src.startswith("typing.ClassVar")


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


class Module:
    def __init__(self, name: str, path: str, text: str):
        self.name, self.path = name, path
        self.tree = ast.parse(text)
        self.classes: dict[str, ast.ClassDef] = {}
        self.aliases: dict[str, ast.expr] = {}
        self.imports: dict[str, list[tuple[str, str | None]]] = {}  # local -> [(module, attr or None)]
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
        for node in ast.walk(self.tree):  # includes if/else, try, TYPE_CHECKING and function-local imports
            if isinstance(node, ast.ImportFrom):
                mod = self._abs(node.module, node.level)
                for a in node.names:
                    self.imports.setdefault(a.asname or a.name, []).append((mod, a.name))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    self.imports.setdefault(a.asname or a.name.split(".")[0], []).append(
                        (a.name if a.asname else a.name.split(".")[0], None))
        for node in self._toplevel_stmts(self.tree.body):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and isinstance(node.value, (ast.Name, ast.Attribute)):
                self.aliases[node.targets[0].id] = node.value  # last assignment wins (else-branch)

    def _toplevel_stmts(self, body):
        for node in body:
            yield node
            if isinstance(node, ast.If):
                yield from self._toplevel_stmts(node.body)
                yield from self._toplevel_stmts(node.orelse)
            elif isinstance(node, ast.Try):
                yield from self._toplevel_stmts(node.body)

    def _abs(self, module: str | None, level: int) -> str:
        if level == 0:
            return module or ""
        parts = self.name.split(".")
        if not self.path.endswith("__init__.py"):
            parts = parts[:-1]
        parts = parts[: len(parts) - (level - 1)] if level > 1 else parts
        return ".".join(parts + ([module] if module else []))


class Resolver:
    """Maps class names to ClassDefs across one framework package (+ installed transformers)."""

    def __init__(self, files: dict[str, str], src_root: str, tdir: Path):
        self.src_root = src_root.rstrip("/") + "/" if src_root else ""
        self.files = files
        self.mod_path: dict[str, str] = {}
        for p in files:
            rel = p[len(self.src_root):] if p.startswith(self.src_root) else p
            mod = rel[:-3].replace("/", ".")
            if mod.endswith(".__init__"):
                mod = mod[: -len(".__init__")]
            self.mod_path[mod] = p
        self.tdir = tdir
        self._mods: dict[str, Module | None] = {}
        self.read: set[str] = set()
        self.warnings: list[str] = []

    def module(self, mod: str) -> Module | None:
        if mod in self._mods:
            return self._mods[mod]
        m = None
        if mod in self.mod_path:
            path = self.mod_path[mod]
            try:
                m = Module(mod, path, self.files[path])
            except SyntaxError as e:
                self.warnings.append(f"syntax error in {path}: {e}")
        elif mod.startswith("transformers"):
            rel = mod.split(".")[1:]
            f = self.tdir.joinpath(*rel).with_suffix(".py") if rel else self.tdir / "__init__.py"
            if not f.exists() and rel:
                f = self.tdir.joinpath(*rel) / "__init__.py"
            if f.exists():
                m = Module(mod, str(f), f.read_text())
        self._mods[mod] = m
        return m

    # transformers' top-level __init__ is lazy; map the classes we care about directly
    HF_CLASSES = {"TrainingArguments": "transformers.training_args",
                  "Seq2SeqTrainingArguments": "transformers.training_args_seq2seq"}

    def resolve(self, mod: str, name: str, depth: int = 0):
        """-> (Module, ClassDef) or None"""
        if depth > 25:
            return None
        m = self.module(mod)
        if m is None:
            if mod.split(".")[0] == "transformers" and name in self.HF_CLASSES:
                return self.resolve(self.HF_CLASSES[name], name, depth + 1)
            return None
        if name in m.classes:
            return m, m.classes[name]
        if name in m.aliases:
            r = self.resolve_expr(m, m.aliases[name], depth + 1)
            if r:
                return r
        for src_mod, attr in m.imports.get(name, []):
            if attr is None:
                continue
            r = self.resolve(src_mod, attr, depth + 1)
            if r:
                return r
            if src_mod.split(".")[0] == "transformers" and attr in self.HF_CLASSES:
                return self.resolve(self.HF_CLASSES[attr], attr, depth + 1)
        return None

    def resolve_expr(self, m: Module, expr: ast.expr, depth: int = 0):
        if isinstance(expr, ast.Name):
            return self.resolve(m.name, expr.id, depth)
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, (ast.Name, ast.Attribute)):
            base = ast.unparse(expr.value)
            head = base.split(".")[0]
            for src_mod, attr in m.imports.get(head, []):
                full = src_mod if attr is None else f"{src_mod}.{attr}"
                full = full + base[len(head):]
                r = self.resolve(full, expr.attr, depth + 1)
                if r:
                    return r
                if full.split(".")[0] == "transformers" and expr.attr in self.HF_CLASSES:
                    return self.resolve(self.HF_CLASSES[expr.attr], expr.attr, depth + 1)
        return None

    def find_unique(self, name: str):
        pat = re.compile(rf"^class {re.escape(name)}\b", re.M)
        hits = [p for p, t in self.files.items() if pat.search(t)]
        if len(hits) == 1:
            mod = next(k for k, v in self.mod_path.items() if v == hits[0])
            m = self.module(mod)
            if m and name in m.classes:
                return m, m.classes[name]
        return None

    # ---- field collection
    def fields(self, m: Module, cls: ast.ClassDef, kind: str, seen=None) -> dict[str, bool]:
        """kind 'dataclass' -> {name: init}; kind 'pydantic' -> {key: True} incl. aliases."""
        seen = seen if seen is not None else set()
        key = (m.path, cls.name)
        if key in seen:
            return {}
        seen.add(key)
        self.read.add(m.path)
        out: dict[str, bool] = {}
        for b in reversed(cls.bases):
            bname = ast.unparse(b)
            if bname in ("object", "BaseModel", "Generic") or bname.startswith(("Generic[", "pydantic.")):
                continue
            r = self.resolve_expr(m, b)
            if r is None and isinstance(b, ast.Name):
                r = self.find_unique(b.id)
            if r is None:
                self.warnings.append(f"unresolved base {bname} of {cls.name} ({m.path})")
                continue
            out.update(self.fields(r[0], r[1], kind, seen))
        if kind == "dataclass" and not any(_is_dataclass_deco(d) for d in cls.decorator_list):
            return out  # annotations of a non-dataclass class are not dataclass fields
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            name = stmt.target.id
            if _ann_is_classvar(stmt.annotation):
                continue
            if kind == "dataclass":
                init = True
                v = stmt.value
                if isinstance(v, ast.Call) and ast.unparse(v.func).split(".")[-1] == "field":
                    iv = _kw(v, "init")
                    if isinstance(iv, ast.Constant) and iv.value is False:
                        init = False
                out[name] = init
            else:
                if name.startswith("_") or name == "model_config":
                    continue
                out[name] = True
                v = stmt.value
                if isinstance(v, ast.Call) and ast.unparse(v.func).split(".")[-1] == "Field":
                    for kwn in ("alias", "validation_alias"):
                        av = _kw(v, kwn)
                        if isinstance(av, ast.Constant) and isinstance(av.value, str):
                            out[av.value] = True
                        elif isinstance(av, ast.Call) and ast.unparse(av.func).endswith("AliasChoices"):
                            for a in av.args:
                                if isinstance(a, ast.Constant) and isinstance(a.value, str):
                                    out[a.value] = True
        return out

    def keys_of(self, mod: str, name: str, kind: str = "dataclass") -> list[str]:
        r = self.resolve(mod, name) or self.find_unique(name)
        if r is None:
            raise LookupError(f"cannot resolve class {name} from {mod}")
        f = self.fields(r[0], r[1], kind)
        return sorted(k for k, init in f.items() if init)

    def sources(self, repo: str, tag: str) -> str:
        local = sorted(p for p in self.read if not p.startswith("/"))
        hf = sorted(Path(p).name for p in self.read if p.startswith("/"))
        s = f"{repo}@{tag}: " + ", ".join(local)
        if hf:
            s += f"; transformers {transformers_version(self.tdir)} (installed): " + ", ".join(hf)
        return s


def module_name(resolver: Resolver, path: str) -> str:
    return next(k for k, v in resolver.mod_path.items() if v == path)


def names_in(node: ast.expr) -> list[str]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return [ast.unparse(e) for e in node.elts]
    return []


# --------------------------------------------------------------------------- frameworks


def repo_label(mirror: str) -> str:
    return mirror.replace("+", "/", 1)


def extract_llamafactory(git_dir, tag, tdir):
    tree = GitTree(git_dir, tag, ["src/llamafactory"])
    res = Resolver(tree.texts, "src", tdir)
    ppath = "src/llamafactory/hparams/parser.py"
    pm = res.module(module_name(res, ppath))
    train_args = None
    for node in pm.tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_TRAIN_ARGS"
                                                for t in node.targets):
            train_args = names_in(node.value)
    if not train_args:
        raise LookupError("_TRAIN_ARGS not found in parser.py")
    keys = set()
    for cname in train_args:
        keys |= set(res.keys_of(pm.name, cname))
    res.read.add(ppath)
    allow = "ALLOW_EXTRA_ARGS" in tree.texts[ppath]
    return {
        "keys": sorted(keys),
        "unknown_keys": "error",
        "source": res.sources("hiyouga/LLaMA-Factory", tag),
        "classes": train_args,
        "notes": "YAML/JSON -> HfArgumentParser.parse_dict(allow_extra_keys=False): unknown keys raise ValueError"
                 + (" (unless env ALLOW_EXTRA_ARGS=1)" if allow else "") + "; USE_MCA path not covered",
    }, res.warnings


def extract_swift(git_dir, tag, tdir, rlhf=False):
    tree = GitTree(git_dir, tag, ["swift"])
    res = Resolver(tree.texts, "", tdir)
    if tree.has("swift/arguments/sft_args.py"):
        path, cname = ("swift/arguments/rlhf_args.py", "RLHFArguments") if rlhf else \
            ("swift/arguments/sft_args.py", "SftArguments")
    elif tree.has("swift/llm/argument/train_args.py"):
        path, cname = ("swift/llm/argument/rlhf_args.py", "RLHFArguments") if rlhf else \
            ("swift/llm/argument/train_args.py", "TrainArguments")
    else:
        raise LookupError("unknown ms-swift layout")
    keys = set(res.keys_of(module_name(res, path), cname))
    notes = ("argv -> HfArgumentParser.parse_args_into_dataclasses(return_remaining_strings=True); "
             "leftovers raise ValueError in SwiftPipeline unless ignore_args_error=true (then a warning); "
             "argparse prefix abbreviations of a unique option are also accepted")
    main = tree.texts.get("swift/cli/main.py", "")
    if "parse_yaml_args" in main and re.search(r"pop\(\s*['\"]ENV['\"]", main):
        keys.add("ENV")
        res.read.add("swift/cli/main.py")
        notes += "; `swift <cmd> cfg.yaml|json` turns each top-level key into --key value, `ENV` mapping popped"
    return {
        "keys": sorted(keys),
        "unknown_keys": "error",
        "source": res.sources("modelscope/ms-swift", tag),
        "classes": [cname],
        "notes": notes,
    }, res.warnings


def accelerate_launch_keys(accel_git: Path, tag: str) -> list[str]:
    tree = GitTree(accel_git, tag, ["src/accelerate/commands/launch.py"])
    text = tree.texts.get("src/accelerate/commands/launch.py", "")
    keys = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            opts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            longs = [o for o in opts if o.startswith("--")]
            if not longs:
                continue
            dest = _kw(node, "dest")
            keys.add(dest.value if isinstance(dest, ast.Constant) else longs[0][2:].replace("-", "_"))
            keys.update(o[2:] for o in longs)
    return sorted(keys - {"help"})


def extract_trl(git_dir, tag, tdir, script, accel):
    tree = GitTree(git_dir, tag, ["trl"])
    res = Resolver(tree.texts, "", tdir)
    spath = f"trl/scripts/{script}.py"
    if not tree.has(spath):
        raise LookupError(f"{spath} missing")
    sm = res.module(module_name(res, spath))
    classes = None
    for node in ast.walk(sm.tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "dataclass_types"
                                                for t in node.targets):
            classes = names_in(node.value)
        elif classes is None and isinstance(node, ast.Call) and ast.unparse(node.func).endswith("TrlParser") \
                and node.args and isinstance(node.args[0], (ast.Tuple, ast.List)):
            classes = names_in(node.args[0])
    if not classes:
        raise LookupError(f"no dataclass_types in {spath}")
    keys = set()
    for cname in classes:
        keys |= set(res.keys_of(sm.name, cname))
    res.read.add(spath)
    utils = tree.texts.get("trl/scripts/utils.py", "")
    if re.search(r"pop\(\s*['\"]env['\"]", utils):
        keys.add("env")
        res.read.add("trl/scripts/utils.py")
    out = {
        "keys": sorted(keys),
        "unknown_keys": "error",
        "source": res.sources("huggingface/trl", tag),
        "classes": classes,
        "notes": "`trl %s --config cfg.yaml`: keys -> TrlParser.set_defaults_with_config; `env` popped; "
                 "keys no dataclass reads are passed to `accelerate launch` (1.x) or raise (0.x), so they "
                 "error unless they are accelerate launch options (accelerate_launch_keys)" % script,
    }
    cli = "".join(t for pth, t in tree.texts.items() if pth == "trl/cli.py" or pth.startswith("trl/cli/"))
    passthrough = "return_remaining_strings=True" in cli  # leftovers handed to `accelerate launch`
    if accel is not None and passthrough:
        out["accelerate_launch_keys"] = sorted(set(accel) | ({"accelerate_config"} if "--accelerate_config" in
                                                             tree.texts.get("trl/cli/accelerate_config.py", "") + cli
                                                             else set()))
    elif not passthrough:
        out["notes"] = ("`trl %s --config cfg.yaml`: keys -> TrlParser.set_defaults_with_config; `env` popped; "
                        "keys no dataclass reads raise ValueError (fail_with_unknown_args)" % script)
    return out, res.warnings


def extract_axolotl(git_dir, tag, tdir):
    tree = GitTree(git_dir, tag, ["src/axolotl"])
    res = Resolver(tree.texts, "src", tdir)
    for path in ("src/axolotl/utils/schemas/config.py",
                 "src/axolotl/utils/config/models/input/v0_4_1/__init__.py"):
        if tree.has(path):
            break
    else:
        raise LookupError("AxolotlInputConfig module not found")
    mod = module_name(res, path)
    keys = set(res.keys_of(mod, "AxolotlInputConfig", "pydantic"))
    r = res.resolve(mod, "AxolotlInputConfig")
    extra = None
    for stmt in r[1].body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and "model_config" in ast.unparse(stmt):
            m = re.search(r"extra['\"]?\s*[:=]\s*['\"](\w+)['\"]", ast.unparse(stmt))
            extra = m.group(1) if m else extra
    fsdp = res.resolve(mod, "FSDPConfig")
    if fsdp:
        keys |= {f"fsdp_config.{k}" for k in res.fields(fsdp[0], fsdp[1], "pydantic")}
    plugins = {}
    for p in sorted(tree.texts):  # plugin classes: `def get_input_args(self): return "axolotl...XArgs"`
        mm = re.match(r"src/axolotl/integrations/([^/]+)/", p)
        if not mm or "get_input_args" not in tree.texts[p]:
            continue
        for node in ast.walk(ast.parse(tree.texts[p])):
            if not (isinstance(node, ast.FunctionDef) and node.name == "get_input_args"):
                continue
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Constant) \
                        and isinstance(ret.value.value, str) and "." in ret.value.value:
                    amod, acls = ret.value.value.rsplit(".", 1)
                    r = res.resolve(amod, acls)
                    if r is None:
                        res.warnings.append(f"plugin args {ret.value.value} unresolved")
                        continue
                    pk = res.fields(r[0], r[1], "pydantic", seen=set())
                    plugins.setdefault(mm.group(1), set()).update(pk)
    plugins = {k: sorted(v) for k, v in sorted(plugins.items())}
    # `flash_attention: bool | None = Field(..., deprecated="Use `attn_implementation: flash_attention_2` instead.")`
    deprecated = {}
    for p in sorted(tree.texts):
        if not p.startswith("src/axolotl/utils/schemas/"):
            continue
        for node in ast.walk(ast.parse(tree.texts[p])):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(node.value, ast.Call):
                said = _kw(node.value, "deprecated")
                if isinstance(said, ast.Constant) and isinstance(said.value, str) and node.target.id in keys:
                    deprecated[node.target.id] = {"message": said.value, "source": f"{p}:{node.lineno}"}
    unknown = {"forbid": "error", None: "ignored", "ignore": "ignored", "allow": "ignored"}[extra]
    return {
        "keys": sorted(keys),
        "unknown_keys": unknown,
        "source": res.sources("axolotl-ai-cloud/axolotl", tag),
        "classes": ["AxolotlInputConfig"] + (["FSDPConfig"] if fsdp else []),
        "notes": f"pydantic model_config extra={extra or 'unset (pydantic default: ignore)'}; validate_config "
                 "returns model_dump(), so unknown keys are dropped silently; plugin_keys are accepted only when "
                 "the plugin is listed under `plugins:`",
        "plugin_keys": plugins,
        "deprecated": dict(sorted(deprecated.items())),
    }, res.warnings


def extract_accelerate(git_dir, tag, tdir, cname="ClusterConfig"):
    path = "src/accelerate/commands/config/config_args.py"
    tree = GitTree(git_dir, tag, ["src/accelerate"])
    res = Resolver(tree.texts, "src", tdir)
    mod = module_name(res, path)
    keys = set(res.keys_of(mod, cname))
    legacy = set()
    cm = res.module(mod)
    for node in ast.walk(cm.tree):
        if isinstance(node, ast.FunctionDef) and node.name == "process_config":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Delete):
                    for t in sub.targets:
                        if isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant):
                            legacy.add(t.slice.value)
                elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "pop" \
                        and sub.args and isinstance(sub.args[0], ast.Constant):
                    legacy.add(sub.args[0].value)
    legacy -= keys
    return {
        "keys": sorted(keys | legacy),
        "unknown_keys": "error",
        "source": res.sources("huggingface/accelerate", tag),
        "classes": [cname],
        "legacy_keys": sorted(legacy),
        "notes": "from_yaml_file/from_json_file: process_config() converts legacy keys, then any key not in "
                 f"{cname}.__dataclass_fields__ raises ValueError",
    }, res.warnings


# --------------------------------------------------------------------------- main


def training_args_fields(wheel: Path) -> tuple[str, list[str]]:
    """(version, the init fields of TrainingArguments and Seq2SeqTrainingArguments) of a transformers wheel, read
    with ast: older releases the frameworks pin (`warmup_ratio` is gone from 5.x, `evaluation_strategy` from 4.47)."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        version = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")).split("-")[1].split(".dist")[0]
        fields: list[str] = []
        for name, cls in (("transformers/training_args.py", "TrainingArguments"),
                          ("transformers/training_args_seq2seq.py", "Seq2SeqTrainingArguments")):
            tree = ast.parse(archive.read(name).decode("utf-8"))
            node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    call = stmt.value if isinstance(stmt.value, ast.Call) else None
                    init = _kw(call, "init") if call is not None else None
                    if not (isinstance(init, ast.Constant) and init.value is False):
                        fields.append(stmt.target.id)
    return version, sorted(set(fields))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="ckpt_doctor/data/framework_keys.json")
    ap.add_argument("--only", nargs="*", help="restrict to these framework names")
    ap.add_argument("--transformers-wheel", type=Path, action="append", default=[],
                    help="an older transformers wheel whose TrainingArguments fields the frameworks built on it also read "
                         "(`pip download transformers==4.46.3 --no-deps -d wheels/`); repeatable")
    args = ap.parse_args()
    t0 = time.time()
    tdir = transformers_dir()
    result: dict = {}
    accel_git = MIRROR / "huggingface+accelerate" / "repo"
    accel_tag = RELEASES["accelerate"][1][0]
    accel_launch = accelerate_launch_keys(accel_git, accel_tag) if accel_git.exists() else None
    failures = 0
    for fw, (mirror, tags) in RELEASES.items():
        if args.only and fw not in args.only:
            continue
        git_dir = MIRROR / mirror / "repo"
        if not git_dir.exists():
            print(f"{fw}: SKIPPED (no snapshot at {git_dir})")
            continue
        releases = {}
        warns: list[str] = []
        for tag in tags:
            try:
                if fw == "llamafactory":
                    entry, w = extract_llamafactory(git_dir, tag, tdir)
                elif fw in ("swift", "swift_rlhf"):
                    entry, w = extract_swift(git_dir, tag, tdir, rlhf=fw == "swift_rlhf")
                elif fw.startswith("trl_"):
                    entry, w = extract_trl(git_dir, tag, tdir, fw[4:], accel_launch)
                elif fw == "axolotl":
                    entry, w = extract_axolotl(git_dir, tag, tdir)
                elif fw == "accelerate":
                    entry, w = extract_accelerate(git_dir, tag, tdir)
                elif fw == "accelerate_sagemaker":
                    entry, w = extract_accelerate(git_dir, tag, tdir, "SageMakerConfig")
                else:
                    raise KeyError(fw)
            except Exception as e:  # keep going: one bad tag must not lose the rest
                print(f"  {fw}@{tag}: FAILED: {type(e).__name__}: {e}")
                failures += 1
                continue
            releases[tag] = entry
            warns += [f"{tag}: {x}" for x in w]
        if not releases:
            continue
        newest = next(t for t in tags if t in releases)
        result[fw] = {"releases": releases, "newest": newest}
        counts = ", ".join(f"{t}={len(r['keys'])}" for t, r in releases.items())
        line = f"{fw}: newest {newest}, {releases[newest]['unknown_keys']} on unknown; keys {counts}"
        if fw in SANITY:
            must, mustnot = SANITY[fw]
            ks = set(releases[newest]["keys"])
            missing = [k for k in must if k not in ks]
            present = [k for k in mustnot if k in ks]
            ok = not missing and not present
            line += "; sanity " + ("OK" if ok else f"FAIL missing={missing} unexpected={present}")
            failures += 0 if ok else 1
        print(line)
        for wmsg in sorted(set(warns)):
            print(f"  warning: {wmsg}")
    older = dict(training_args_fields(wheel) for wheel in args.transformers_wheel)
    if older:  # keys a framework on an older transformers reads though the installed one dropped them
        result["transformers_training_args"] = {"releases": older}
        print("transformers TrainingArguments fields: " + ", ".join(f"{v}={len(k)}" for v, k in older.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    print(f"wrote {out} ({len(result)} frameworks) in {time.time() - t0:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
