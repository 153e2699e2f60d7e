"""What the training frameworks make of their config keys: `ckpt_doctor/data/frameworks.json`, whose every
entry carries the tag of its citation in `docs/framework-facts.md` ([L#] LLaMA-Factory, [X#] axolotl, [U#]
torchtune, [S#] ms-swift, [C#] TRL CLI, [A#] accelerate, [D#] DeepSpeed).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ckpt_doctor.analysis.config_document import Document

NAMES = {
    "llamafactory": "LLaMA-Factory", "axolotl": "axolotl", "torchtune": "torchtune", "swift": "ms-swift",
    "trl": "TRL", "accelerate": "accelerate", "deepspeed": "DeepSpeed", "trainer": "TrainingArguments",
}
# keys one framework alone writes: a file with one of them is that framework's whatever else it holds
_DECISIVE = {
    "llamafactory": ("finetuning_type", "cutoff_len", "lora_target", "disable_gradient_checkpointing", "use_reentrant_gc", "quantization_bit"),
    "axolotl": ("base_model", "micro_batch_size", "sequence_len", "sample_packing", "lora_target_linear"),
    "torchtune": ("checkpointer._component_", "enable_activation_checkpointing", "enable_activation_offloading"),
    "swift": ("tuner_type", "train_type", "quant_bits", "attn_impl", "freeze_vit"),
    "accelerate": ("compute_environment", "distributed_type"),
    "deepspeed": ("zero_optimization", "train_micro_batch_size_per_gpu"),
}
_LLAMAFACTORY_STAGES = ("pt", "sft", "rm", "ppo", "dpo", "kto")  # `stage: sft` [L10]
# enough to tell a TRL CLI config from any YAML with a model in it
_TRL = ("use_peft", "lora_target_modules", "dataset_name", "packing", "max_length", "per_device_train_batch_size", "learning_rate",
        "gradient_checkpointing", "bf16", "model_name_or_path")
_TRL_AT_LEAST = 3


@dataclass(frozen=True)
class Framework:
    id: str
    table: dict

    @property
    def name(self) -> str:
        return NAMES[self.id]

    def default(self, key: str) -> object:
        return self.table["keys"].get(key, {}).get("default")

    def tag(self, key: str) -> str:
        return self.table["keys"].get(key, {}).get("tag", "")

    @property
    def renamed(self) -> dict[str, dict]:
        return self.table.get("renamed", {})


@lru_cache(maxsize=1)
def _tables() -> dict:
    return json.loads((Path(__file__).resolve().parent.parent / "data" / "frameworks.json").read_text(encoding="utf-8"))


def framework(framework_id: str) -> Framework:
    return Framework(framework_id, _tables()[framework_id])


def recognise(document: Document) -> Framework | None:
    """The framework whose config `document` is, from its keys; None for any other YAML / JSON."""
    for framework_id, keys in _DECISIVE.items():
        if any(key in document for key in keys):
            return framework(framework_id)
    if document.value("stage") in _LLAMAFACTORY_STAGES:
        return framework("llamafactory")
    if sum(key in document for key in _TRL) >= _TRL_AT_LEAST and any(k in document for k in ("model_name_or_path", "dataset_name")):
        return framework("trl")
    return None


@lru_cache(maxsize=1)
def _decisive_text() -> re.Pattern:
    keys = "|".join(re.escape(k.split(".")[0]) for keys in _DECISIVE.values() for k in keys)
    return re.compile(r"^\s*[\"']?(" + keys + r")[\"']?\s*:", re.MULTILINE)


def recognisable(text: str) -> bool:
    """Whether text that cannot be read as YAML / JSON still names a key only a framework's config has: its read error
    is then worth reporting (other broken files, a Helm template, are not ours)."""
    return _decisive_text().search(text) is not None


@dataclass(frozen=True)
class KeySet:
    """The keys one release of a framework reads (`ckpt_doctor/data/framework_keys.json`, generated from the
    frameworks' sources by `bench/frameworks/extract_keys.py`), and what it does with any other."""

    table: str  # "llamafactory", "swift_rlhf", "trl_sft", ...
    releases: tuple[str, ...]  # the releases the verdict holds for
    keys: frozenset[str]  # read by every one of them
    unknown: str  # "error" | "ignored"
    plugin_keys: dict  # axolotl: plugin -> the keys it reads
    deprecated: dict  # key -> {"message": what the framework says to use, "source": "path:line"} (axolotl)

    def reads(self, key: str, plugins: list[str]) -> bool:
        if key in self.keys:
            return True
        # axolotl: `plugins: [axolotl.integrations.liger.LigerPlugin]` makes the liger keys read
        listed = {part for plugin in plugins for part in plugin.split(".")}
        return any(key in keys for plugin, keys in self.plugin_keys.items() if plugin in listed)


@lru_cache(maxsize=1)
def _key_tables() -> dict:
    return json.loads((Path(__file__).resolve().parent.parent / "data" / "framework_keys.json").read_text(encoding="utf-8"))


def key_set(table: str, releases: list[str] | None = None, any_of: bool = False) -> KeySet | None:
    """What `releases` of a framework all read (the newest release when None); None for a framework not listed.
    `any_of`: what one of them reads (for a release between those listed, which may read either's keys)."""
    found = _key_tables().get(table)
    if found is None:
        return None
    chosen = [r for r in (releases or [found["newest"]]) if r in found["releases"]] or [found["newest"]]
    entries = [found["releases"][r] for r in chosen]
    combine = frozenset.union if any_of else frozenset.intersection
    keys = combine(*(frozenset(e["keys"]) | frozenset(e.get("legacy_keys", ())) for e in entries))
    if table.startswith(("llamafactory", "swift", "trl_")):  # built on TrainingArguments: older transformers' fields too
        older = _key_tables().get("transformers_training_args", {}).get("releases", {})
        keys |= frozenset(k for fields in older.values() for k in fields)
    plugins = {p: set(k) for e in entries for p, k in e.get("plugin_keys", {}).items()}
    deprecated = {k: v for e in entries for k, v in e.get("deprecated", {}).items()}
    return KeySet(table, tuple(chosen), keys, entries[0]["unknown_keys"], plugins, deprecated)


@lru_cache(maxsize=1)
def library_fields() -> frozenset[str]:
    """Every field of `TrainingArguments` (the releases listed) and of TRL's configs: options a parser of a library
    class takes besides the script's own."""
    tables = _key_tables()
    fields = {k for fields in tables.get("transformers_training_args", {}).get("releases", {}).values() for k in fields}
    for table in ("trl_sft", "trl_dpo", "trl_grpo"):
        found = tables.get(table)
        if found is not None:
            fields |= set(found["releases"][found["newest"]]["keys"])
    return frozenset(fields)


def releases_of(table: str) -> list[str]:
    found = _key_tables().get(table)
    return list(found["releases"]) if found else []
