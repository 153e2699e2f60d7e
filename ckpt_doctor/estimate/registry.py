"""Find a model's architecture by name or path, offline.

Sources, in order (:func:`lookup`):

1. a local path: a directory holding ``config.json`` (or a PEFT adapter directory whose
   ``adapter_config.json`` names its base model), or a path to a ``config.json`` file;
2. the bundled registry ``ckpt_doctor/data/models.json``: exact Hub id, case-insensitive, an alias
   (``llama-2-7b``, ``gpt2``) or the id without its organisation (``Llama-2-7b-hf``);
3. the local Hugging Face cache, read offline: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``; layout ``models--ORG--NAME/snapshots/<rev>/config.json``, preferring
   the revision named in ``refs/main``;
4. the registry again, under the name rules below; each says in its source note which bundled model it used
   and why:

   * chat / instruct variants of a bundled base model (``-Instruct``, ``-chat``, ``-it``), which have the same
     architecture numbers, unless the entry says ``no_variant_fallback`` (Mixtral-8x22B: the Instruct release
     has a larger vocabulary);
   * a bundled entry's ``variants`` (``Qwen/Qwen2.5-7B-Instruct-1M``, ``Qwen/Qwen3-4B-Instruct-2507``): the
     base config with the few keys the release changed (``max_position_embeddings``, ``rope_theta``...),
     each variant citing its source;
   * a re-upload under another organisation (``NousResearch/Meta-Llama-3-8B``, ``unsloth/Qwen2.5-7B``,
     ``unsloth/Meta-Llama-3.1-8B-bnb-4bit``): the bundled model of the same repository name, after dropping a
     ``-bnb-4bit`` / ``-bnb-8bit`` / ``-unsloth`` tail (bitsandbytes checkpoints keep the architecture; their
     weights are 4/8-bit, which the note says).  ``-GGUF`` repositories are refused: llama.cpp files cannot be
     loaded for training by transformers;
   * a local folder without ``config.json`` (or a path that does not exist here, as in a script written for a
     cluster) whose last component is a bundled model's name (``/data/models/Qwen2.5-7B-Instruct``): that
     model, "by its folder name".  A ``config.json`` in the folder always wins.

Never a network call, never an import of torch or transformers.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

from .arch import ModelArch, UnsupportedConfig

__all__ = ["resolve", "resolve_with_source", "lookup", "known_names", "aliases", "registry_config", "hf_cache_dir", "load_config_file"]

_DATA = Path(__file__).resolve().parent.parent / "data" / "models.json"


@lru_cache(maxsize=1)
def _entries() -> tuple[dict, ...]:
    with open(_DATA, encoding="utf-8") as fh:
        return tuple(json.load(fh)["models"])


@lru_cache(maxsize=1)
def _index() -> dict[str, dict]:
    """lower-case key -> entry, for ids, aliases and ids without their organisation."""
    idx: dict[str, dict] = {}
    for e in _entries():
        idx[e["name"].lower()] = e
    for e in _entries():  # aliases and short names never shadow a full id
        for key in [*e.get("aliases", []), e["name"].split("/")[-1]]:
            idx.setdefault(key.lower(), e)
    for e in _entries():  # Hub-id aliases without their organisation (Meta-Llama-3.1-8B)
        for key in e.get("aliases", []):
            if "/" in key:
                idx.setdefault(key.split("/")[-1].lower(), e)
    return idx


@lru_cache(maxsize=1)
def _variant_index() -> dict[str, tuple[dict, dict]]:
    """lower-case variant id (and id without organisation) -> (base entry, variant)."""
    idx: dict[str, tuple[dict, dict]] = {}
    for e in _entries():
        for v in e.get("variants", []):
            idx[v["name"].lower()] = (e, v)
    for e in _entries():
        for v in e.get("variants", []):
            idx.setdefault(v["name"].split("/")[-1].lower(), (e, v))
    return idx


def known_names() -> list[str]:
    """Canonical Hub ids of the bundled models, in registry order."""
    return [e["name"] for e in _entries()]


def aliases() -> dict[str, str]:
    """Every accepted registry key (lower case) -> canonical id."""
    return {k: e["name"] for k, e in _index().items()}


def registry_config(name: str) -> dict | None:
    """The bundled ``config.json`` dict of a registry model (a copy), or None."""
    e = _index().get(name.strip().lower())
    return dict(e["config"]) if e else None


def _from_entry(e: dict) -> ModelArch:
    return ModelArch.from_hf_config(e["config"], e["name"])


def _from_variant(e: dict, v: dict) -> ModelArch:
    return ModelArch.from_hf_config({**e["config"], **v["config"]}, v["name"])


def _variant_note(e: dict, v: dict) -> str:
    return (f"bundled registry ({e['name']} with the {', '.join(sorted(v['config']))} of {v['name']}, "
            f"the only architecture keys that release changes)")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache directory (may not exist)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def load_config_file(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _hf_cache_config(repo_id: str) -> Path | None:
    if repo_id.count("/") > 1 or not repo_id or repo_id.startswith((".", "/")):
        return None
    cache = hf_cache_dir()
    folder = "models--" + repo_id.replace("/", "--")
    repo = cache / folder
    if not repo.is_dir():
        try:  # Hub ids are case-insensitive; the cache keeps the spelling first used
            wanted = folder.lower()
            repo = next((p for p in cache.iterdir() if p.name.lower() == wanted and p.is_dir()), None)
        except OSError:
            return None
        if repo is None:
            return None
    snaps = repo / "snapshots"
    ref = repo / "refs" / "main"
    try:
        rev = ref.read_text(encoding="utf-8").strip() if ref.is_file() else ""
    except OSError:
        rev = ""
    if rev and (snaps / rev / "config.json").is_file():
        return snaps / rev / "config.json"
    try:
        candidates = [p / "config.json" for p in snaps.iterdir() if (p / "config.json").is_file()]
    except OSError:
        return None
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


_NO_CONFIG = "is a directory without config.json"


def _from_path(s: str, depth: int) -> tuple[ModelArch | None, str] | None:
    p = Path(s).expanduser()
    try:
        if p.is_dir():
            cfg_path = p / "config.json"
            if not cfg_path.is_file():
                adapter = load_config_file(p / "adapter_config.json")
                base = (adapter or {}).get("base_model_name_or_path")
                if base and depth < 2:
                    arch, why = lookup(str(base), _depth=depth + 1)
                    return arch, f"base model {base!r} of the PEFT adapter in {p}: {why}"
                return None, f"{p} {_NO_CONFIG}"
        elif p.is_file():
            cfg_path = p
        else:
            return None
    except OSError:
        return None
    cfg = load_config_file(cfg_path)
    if cfg is None:
        return None, f"{cfg_path} is not a JSON object"
    name = cfg.get("_name_or_path") or str(p)
    try:
        arch = ModelArch.from_hf_config(cfg, str(name))
    except UnsupportedConfig as exc:
        return None, str(exc)
    approximate = f"; model_type {arch.model_type!r} sized as a generic Llama-style decoder (approximate)" if arch.generic else ""
    return arch, f"config.json at {cfg_path}{approximate}"


# "-Instruct", "-chat", "-it" before an optional version / "-hf" tail: Llama-2-7b-chat-hf -> Llama-2-7b-hf,
# Mistral-7B-Instruct-v0.3 -> Mistral-7B-v0.3 (the version is kept: v0.1 and v0.3 differ in vocabulary).
_VARIANT = re.compile(r"-(instruct|chat|it)(?=(-v[0-9.]+)?(-hf)?$)", re.IGNORECASE)
# Tails of re-uploads that keep the architecture numbers: unsloth's bitsandbytes checkpoints
# (unsloth/Meta-Llama-3.1-8B-bnb-4bit, unsloth/Qwen2.5-7B-Instruct-unsloth-bnb-4bit).
_REUPLOAD_TAIL = re.compile(r"(-unsloth)?(-bnb-[48]bit)?$", re.IGNORECASE)
# llama.cpp files: no transformers training loads them.
_GGUF = re.compile(r"(^|[-_.])gguf$", re.IGNORECASE)


def _entry_note(e: dict, name: str) -> str:
    if "/" in name and name.lower() != e["name"].lower():  # another Hub id listed as an alias (Llama-3.3-70B-Instruct)
        return f"bundled registry ({e['name']}; {name} has the same architecture numbers)"
    return f"bundled registry ({e['name']})"


def _registry_match(name: str) -> tuple[ModelArch, str] | None:
    """A bundled model by id / alias / short name, a declared variant, or an instruct variant of a base."""
    key = name.strip().lower()
    e = _index().get(key)
    if e is not None:
        return _from_entry(e), _entry_note(e, name.strip())
    ev = _variant_index().get(key)
    if ev is not None:
        return _from_variant(*ev), _variant_note(*ev)
    base = _VARIANT.sub("", name.strip())
    if base != name.strip():
        e = _index().get(base.lower())
        if e is not None and not e.get("no_variant_fallback"):
            return _from_entry(e), f"bundled registry ({e['name']}, same architecture as {name.strip()})"
    return None


def _by_repo_name(name: str) -> tuple[ModelArch, str] | None:
    """NAME, or NAME less a ``-bnb-4bit`` / ``-unsloth`` tail, as a bundled model; the note says which tail."""
    got = _registry_match(name)
    if got is not None:
        return got
    stripped = _REUPLOAD_TAIL.sub("", name)
    if not stripped or stripped == name:
        return None
    got = _registry_match(stripped)
    if got is None:
        return None
    tail = name[len(stripped):].lower()
    if "bnb-4bit" in tail:
        quant = f"{name} stores its weights 4-bit (bitsandbytes): estimate with --load-in-4bit; "
    elif "bnb-8bit" in tail:
        quant = f"{name} stores its weights 8-bit (bitsandbytes): estimate with --load-in-8bit; "
    else:
        quant = ""
    return got[0], f"{quant}{got[1]}"


def _same_name(repo: str) -> tuple[ModelArch | None, str] | None:
    """``OTHER-ORG/NAME[-bnb-4bit]`` -> the bundled model named NAME (a re-upload or mirror)."""
    if repo.count("/") != 1:
        return None
    org, name = repo.split("/")
    if not org or not name:
        return None
    if _GGUF.search(name):
        return None, (f"{repo!r} is a GGUF (llama.cpp) repository: transformers cannot load it for training, so "
                      "no training step can be estimated; name the original checkpoint instead")
    got = _by_repo_name(name)
    if got is None:
        return None
    arch, why = got
    return arch, f"architecture of {arch.name} (same name as {repo}): {why}"


def _by_folder_name(path: Path) -> tuple[ModelArch, str] | None:
    """A local folder without config.json named like a bundled model (``/data/models/Qwen2.5-7B-Instruct``)."""
    folder = re.split(r"[\\/]+", str(path).rstrip("/\\"))[-1]  # also a Windows path read on Linux
    if not folder or folder.lower().endswith(".json") or _GGUF.search(folder):
        return None
    got = _by_repo_name(folder)
    if got is None:
        return None
    arch, why = got
    return arch, (f"architecture of {arch.name} by its folder name ({path} has no config.json; put the model's "
                  f"config.json there to use its own numbers): {why}")


def lookup(name_or_path: str, _depth: int = 0) -> tuple[ModelArch | None, str]:
    """Resolve and say where from: ``(arch, source)``; ``(None, reason)`` when nothing matched."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        return None, "no model name given"
    s = name_or_path.strip()
    looks_like_path = s.startswith((".", "/", "~")) or s.endswith(".json") or "\\" in s
    if Path(s).expanduser().exists():
        got = _from_path(s, _depth)
        if got is not None and got[0] is None and looks_like_path and got[1].endswith(_NO_CONFIG):
            # a downloaded model's folder without its config.json: /data/models/Qwen2.5-7B-Instruct
            by_folder = _by_folder_name(Path(s).expanduser())
            if by_folder is not None:
                return by_folder
        # a bare name like "gpt2" that happens to be an unrelated folder falls through to the registry
        if got is not None and (got[0] is not None or looks_like_path):
            return got
    elif looks_like_path:
        # a script written for another machine: /data/models/Qwen2.5-7B-Instruct
        by_folder = _by_folder_name(Path(s.rstrip("/\\")))
        if by_folder is not None:
            return by_folder
        return None, f"{s} does not exist"
    e = _index().get(s.lower())
    if e is not None:
        return _from_entry(e), _entry_note(e, s)
    cached = _hf_cache_config(s)
    if cached is not None:
        cfg = load_config_file(cached)
        if cfg is not None:
            try:
                return ModelArch.from_hf_config(cfg, s), f"Hugging Face cache ({cached})"
            except UnsupportedConfig as exc:
                return None, str(exc)
    got = _registry_match(s)
    if got is not None:
        return got
    same = _same_name(s)
    if same is not None:
        return same
    blocked = _index().get(_VARIANT.sub("", s.split("/")[-1]).lower())
    why_not = ""
    if blocked is not None and blocked.get("no_variant_fallback"):
        why_not = f"; not estimated as {blocked['name']}: {blocked['no_variant_fallback']}"
    return None, (f"{s!r} is not a bundled model, not a local config.json and not in the Hugging Face cache "
                  f"({hf_cache_dir()}){why_not}")


def resolve(name_or_path: str) -> ModelArch | None:
    """The architecture of a model id, alias, local directory / ``config.json``, or cached Hub model;
    None when it cannot be found offline (never raises for an unknown name)."""
    return resolve_with_source(name_or_path)[0]


def resolve_with_source(name_or_path: str) -> tuple[ModelArch | None, str]:
    """``lookup`` that never raises: ``(arch, where it came from)``, ``(None, "")`` when a config cannot be read."""
    try:
        return lookup(name_or_path)
    except Exception:  # noqa: BLE001 - a lookup must never break the caller
        return None, ""
