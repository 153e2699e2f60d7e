"""Architecture registry, exact parameter counts and LoRA sizes (ckpt_doctor.estimate.{arch,registry,params}).

The exact-count tests build every bundled config with transformers on the meta device (no memory, a few
milliseconds each, 70B included) and compare ``sum(p.numel() for p in model.parameters())``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ckpt_doctor.estimate import registry
from ckpt_doctor.estimate.arch import ModelArch, UnsupportedConfig
from ckpt_doctor.estimate.params import count_params, default_lora_targets, lora_params

DATA = Path(registry.__file__).resolve().parent.parent / "data" / "models.json"
ENTRIES = json.loads(DATA.read_text(encoding="utf-8"))["models"]
IDS = [e["name"] for e in ENTRIES]

REQUIRED = [
    "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf",
    "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-70B", "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-3B",
    "mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-v0.3", "mistralai/Mixtral-8x7B-v0.1", "Qwen/Qwen2-7B",
    "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-14B", "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "google/gemma-2b", "google/gemma-7b", "google/gemma-2-2b",
    "google/gemma-2-9b", "google/gemma-3-1b-pt", "google/gemma-3-4b-pt", "microsoft/phi-2",
    "microsoft/Phi-3-mini-4k-instruct", "openai-community/gpt2", "openai-community/gpt2-medium",
    "openai-community/gpt2-large", "openai-community/gpt2-xl", "EleutherAI/pythia-160m", "EleutherAI/pythia-1b",
    "EleutherAI/pythia-6.9b", "tiiuae/falcon-7b", "facebook/opt-125m", "facebook/opt-1.3b", "facebook/opt-6.7b",
    "google-bert/bert-base-uncased", "google-bert/bert-large-uncased", "google-t5/t5-small", "google-t5/t5-base",
    "google/flan-t5-base",
]
# Issue 10: the models people fine-tune in 2025-2026 (each entry names its source in models.json).
ADDED = [
    "Qwen/Qwen2.5-3B", "Qwen/Qwen2.5-32B", "Qwen/Qwen2.5-72B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-14B", "Qwen/Qwen3-32B",
    "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-235B-A22B", "meta-llama/Llama-3.1-405B", "mistralai/Mixtral-8x22B-v0.1",
    "mistralai/Mistral-Nemo-Instruct-2407", "google/gemma-2-27b", "google/gemma-3-12b-pt", "google/gemma-3-27b-pt",
    "microsoft/Phi-3.5-mini-instruct", "microsoft/phi-4", "HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M",
    "EleutherAI/pythia-1.4b", "EleutherAI/pythia-2.8b", "EleutherAI/pythia-12b",
]
VARIANTS = [(e, v) for e in ENTRIES for v in e.get("variants", [])]
# the keys a variant may change: none of them changes a parameter count or an activation shape (rope and the
# context length only cap the default sequence length)
VARIANT_KEYS = {"max_position_embeddings", "rope_theta", "rope_scaling", "rms_norm_eps", "sliding_window"}


# --------------------------------------------------------------------------------------------------
# without torch / transformers
# --------------------------------------------------------------------------------------------------
def test_registry_covers_the_required_models():
    assert len(ENTRIES) >= 32
    assert set(REQUIRED) <= set(registry.known_names())
    assert set(ADDED) <= set(registry.known_names())
    assert len(set(n.lower() for n in IDS)) == len(IDS)


def test_every_entry_and_variant_names_its_source_and_loads():
    keys = [k.lower() for e in ENTRIES for k in (e["name"], *e.get("aliases", []))]
    keys += [v["name"].lower() for _, v in VARIANTS]
    assert len(keys) == len(set(keys)), "an alias or variant shadows another entry"
    for e in ENTRIES:
        assert isinstance(e.get("source"), str) and len(e["source"]) > 40, e["name"]
        ModelArch.from_hf_config(e["config"], e["name"])  # never UnsupportedConfig
    for name in ADDED:
        src = next(e for e in ENTRIES if e["name"] == name)["source"]
        assert "@" in src, f"{name}: the source names no repository@commit"
    for e, v in VARIANTS:
        assert len(v["source"]) > 40 and set(v["config"]) <= VARIANT_KEYS, v["name"]
        base = ModelArch.from_hf_config(e["config"], e["name"])
        var = registry.resolve(v["name"])
        assert var.name == v["name"] and count_params(var).total == count_params(base).total
        assert all(var.hf_config[k] == val for k, val in v["config"].items())


def test_reference_counts_without_transformers():
    assert count_params(registry.resolve("meta-llama/Llama-2-7b-hf")).total == 6_738_415_616
    assert count_params(registry.resolve("meta-llama/Meta-Llama-3-8B")).total == 8_030_261_248


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.get("published_params")], ids=lambda e: e["name"])
def test_published_parameter_counts(entry):
    arch = ModelArch.from_hf_config(entry["config"], entry["name"])
    expected = entry["published_params"]
    if arch.model_type == "t5" and arch.tie_word_embeddings and entry["config"].get("tie_word_embeddings") is False:
        # Flan-T5 stores an untied lm_head; transformers >= 5 always ties it (see arch.t5_ties_lm_head).
        expected -= arch.vocab_size * arch.hidden_size
    assert count_params(arch).total == expected


def test_breakdown_sums_and_shapes():
    c = count_params(registry.resolve("llama-2-7b"))
    parts = (c.embedding + c.position_embedding + c.attention + c.mlp + c.norms + c.lm_head + c.head_other
             + c.other + c.vision)
    assert parts == c.total
    assert c.embedding == c.lm_head == 32000 * 4096
    assert c.attention_per_layer == 4 * 4096 * 4096
    assert c.mlp_per_layer == 3 * 4096 * 11008
    assert c.per_layer == c.attention_per_layer + c.mlp_per_layer + 2 * 4096
    mix = count_params(registry.resolve("mixtral-8x7b"))
    assert mix.experts == 32 * 8 * 3 * 4096 * 14336
    assert 12e9 < mix.active < 13e9  # ~12.9B active parameters with top-2 routing
    tied = count_params(registry.resolve("llama-3.2-1b"))
    assert tied.lm_head == 0


def test_arch_fields_and_linear_layers():
    a = registry.resolve("Meta-Llama-3-8B")
    assert (a.model_type, a.num_layers, a.num_kv_heads, a.head_dim, a.gated_mlp) == ("llama", 32, 8, 128, True)
    assert a.linear_layers() == [
        ("q_proj", 4096, 4096), ("k_proj", 4096, 1024), ("v_proj", 4096, 1024), ("o_proj", 4096, 4096),
        ("gate_proj", 4096, 14336), ("up_proj", 4096, 14336), ("down_proj", 14336, 4096),
    ]
    g = registry.resolve("gpt2")
    assert (g.hidden_size, g.num_layers, g.num_attention_heads, g.intermediate_size) == (768, 12, 12, 3072)
    assert [n for n, _, _ in g.linear_layers()] == ["c_attn", "c_proj", "c_fc", "c_proj"]
    f = registry.resolve("falcon-7b")
    assert f.num_kv_heads == 1 and f.linear_layers()[0] == ("query_key_value", 4544, 4544 + 2 * 64)
    t5 = registry.resolve("t5-small")
    assert (t5.num_encoder_layers, t5.num_decoder_layers, t5.num_layers) == (6, 6, 12)
    assert [n for n, _, _ in t5.linear_layers("encoder")] == ["q", "k", "v", "o", "wi", "wo"]
    assert registry.resolve("flan-t5-base").gated_mlp
    g3 = registry.resolve("gemma-3-4b")
    assert g3.model_type == "gemma3" and g3.vision is not None and g3.hidden_size == 2560 and g3.qk_norm
    assert registry.resolve("mixtral-8x7b").num_experts == 8
    hash(a)  # frozen and hashable despite hf_config
    with pytest.raises(UnsupportedConfig):
        ModelArch.from_hf_config({"model_type": "mamba"}, "x")


def test_from_hf_config_family_keys_and_defaults():
    # num_key_value_heads and head_dim default from the heads; gpt2's n_inner None -> 4 * n_embd
    a = ModelArch.from_hf_config({"model_type": "llama", "hidden_size": 512, "num_attention_heads": 8,
                                  "num_hidden_layers": 2, "intermediate_size": 1024, "vocab_size": 100}, "t")
    assert (a.num_kv_heads, a.head_dim) == (8, 64)
    g = ModelArch.from_hf_config({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": None}, "g")
    assert g.intermediate_size == 256
    gem3 = ModelArch.from_hf_config({"model_type": "gemma3", "text_config": {"hidden_size": 2560,
                                     "intermediate_size": 10240, "num_hidden_layers": 34}}, "partial")
    assert (gem3.vocab_size, gem3.num_attention_heads, gem3.head_dim) == (262208, 8, 256)
    old_falcon = ModelArch.from_hf_config({"model_type": "falcon", "new_decoder_architecture": True,
                                           "num_kv_heads": 8, "hidden_size": 8192, "num_attention_heads": 128,
                                           "num_hidden_layers": 2, "vocab_size": 100}, "f40b")
    assert old_falcon.num_kv_heads == 8


def test_lora_params_closed_form():
    a = registry.resolve("llama-2-7b")
    assert default_lora_targets(a) == ("q_proj", "v_proj")
    assert lora_params(a, 16) == 32 * 2 * 16 * (4096 + 4096) == 8_388_608  # PEFT's 4,194,304 x 2 at r=8
    assert lora_params(a, 8, "q_proj,v_proj") == 4_194_304
    assert lora_params(a, 8, ["self_attn.o_proj"]) == 32 * 8 * (4096 + 4096)
    assert lora_params(a, 0) == 0
    mix = registry.resolve("mixtral-8x7b")
    assert lora_params(mix, 8) == lora_params(mix, 8, "q_proj,v_proj")
    assert lora_params(registry.resolve("mixtral-8x7b"), 8, "all-linear") == 32 * 8 * (4096 * 4 + 4096 * 2 + 1024 * 2)


# --------------------------------------------------------------------------------------------------
# resolve()
# --------------------------------------------------------------------------------------------------
def test_resolve_aliases_and_case():
    assert registry.resolve("gpt2").name == "openai-community/gpt2"
    assert registry.resolve("llama-2-7b").name == "meta-llama/Llama-2-7b-hf"
    assert registry.resolve("META-LLAMA/LLAMA-2-7B-HF").name == "meta-llama/Llama-2-7b-hf"
    assert registry.resolve("Llama-2-7b-hf").name == "meta-llama/Llama-2-7b-hf"  # without the organisation
    assert registry.resolve("bert-base-uncased").model_type == "bert"
    assert registry.resolve("meta-llama/Llama-2-7b-chat-hf").name == "meta-llama/Llama-2-7b-hf"
    assert registry.resolve("Qwen/Qwen2.5-7B-Instruct").name == "Qwen/Qwen2.5-7B"
    assert registry.resolve("mistralai/Mistral-7B-Instruct-v0.3").vocab_size == 32768


def test_resolve_new_models_and_their_instruct_names():
    assert registry.resolve("Qwen/Qwen2.5-72B-Instruct").name == "Qwen/Qwen2.5-72B"
    assert registry.resolve("Qwen/Qwen3-30B-A3B").num_experts == 128
    assert registry.resolve("google/gemma-3-27b-it").name == "google/gemma-3-27b-pt"
    assert registry.resolve("google/gemma-2-27b-it").name == "google/gemma-2-27b"
    assert registry.resolve("meta-llama/Meta-Llama-3.1-405B").num_layers == 126
    arch, why = registry.lookup("meta-llama/Llama-3.3-70B-Instruct")
    assert arch.name == "meta-llama/Llama-3.1-70B" and "same architecture numbers" in why
    # Mixtral-8x22B-Instruct-v0.1 has a 32768-token vocabulary, the base 32000: no instruct fallback
    assert registry.resolve("mistralai/Mixtral-8x22B-v0.1").vocab_size == 32000
    arch, why = registry.lookup("mistralai/Mixtral-8x22B-Instruct-v0.1")
    assert arch is None and "vocab_size 32768" in why


def test_release_suffixes_resolve_only_where_declared():
    arch, why = registry.lookup("Qwen/Qwen3-4B-Instruct-2507")
    assert arch.name == "Qwen/Qwen3-4B-Instruct-2507" and arch.max_position_embeddings == 262144
    assert "Qwen/Qwen3-4B with the max_position_embeddings, rope_theta" in why
    assert count_params(arch).total == count_params(registry.resolve("Qwen/Qwen3-4B")).total == 4_022_468_096
    assert registry.resolve("Qwen3-4B-Thinking-2507").max_position_embeddings == 262144
    one_m = registry.resolve("Qwen/Qwen2.5-7B-Instruct-1M")
    assert one_m.max_position_embeddings == 1_010_000 and count_params(one_m).total == 7_615_616_512
    # no general "-2507" / "-1M" rule: a release nobody checked stays unknown
    for unchecked in ("Qwen/Qwen3-8B-Instruct-2507", "Qwen/Qwen2.5-32B-Instruct-1M"):
        assert registry.resolve(unchecked) is None, unchecked


def test_reupload_under_another_organisation(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    arch, why = registry.lookup("NousResearch/Meta-Llama-3-8B")
    assert arch.name == "meta-llama/Meta-Llama-3-8B"
    assert why.startswith("architecture of meta-llama/Meta-Llama-3-8B (same name as NousResearch/Meta-Llama-3-8B)")
    assert registry.resolve("unsloth/Qwen2.5-7B").name == "Qwen/Qwen2.5-7B"
    arch, why = registry.lookup("unsloth/Meta-Llama-3.1-8B-bnb-4bit")
    assert arch.name == "meta-llama/Llama-3.1-8B" and "4-bit (bitsandbytes)" in why and "--load-in-4bit" in why
    assert registry.resolve("unsloth/Qwen2.5-7B-Instruct-unsloth-bnb-4bit").name == "Qwen/Qwen2.5-7B"
    assert registry.resolve("unsloth/llama-3-8b-bnb-4bit").name == "meta-llama/Meta-Llama-3-8B"
    # GGUF files are llama.cpp's: transformers cannot train them, so nothing is estimated, and the reason says so
    arch, why = registry.lookup("Qwen/Qwen2.5-7B-Instruct-GGUF")
    assert arch is None and "GGUF" in why
    assert registry.resolve("bartowski/Meta-Llama-3-8B-GGUF") is None
    # a same-named model in the local HF cache keeps its own config
    snap = tmp_path / "hub" / "models--acme--Qwen2.5-7B" / "snapshots" / ("c" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                                  "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert registry.resolve("acme/Qwen2.5-7B").num_layers == 2
    assert registry.resolve("other/Unknown-Model-7B") is None


def test_local_folder_named_like_a_model(tmp_path):
    # with a config.json the file wins, whatever the folder is called
    with_cfg = tmp_path / "Qwen2.5-7B-Instruct"
    with_cfg.mkdir()
    (with_cfg / "config.json").write_text(json.dumps(registry.registry_config("qwen2.5-0.5b")))
    arch, why = registry.lookup(str(with_cfg))
    assert count_params(arch).total == 494_032_768 and why.startswith("config.json at")
    # without one, the folder's name
    bare = tmp_path / "models" / "Meta-Llama-3-8B"
    bare.mkdir(parents=True)
    arch, why = registry.lookup(str(bare))
    assert arch.name == "meta-llama/Meta-Llama-3-8B" and "by its folder name" in why
    # a path of another machine (the script was written for the cluster)
    arch, why = registry.lookup("/data/models/Qwen2.5-7B-Instruct")
    assert arch.name == "Qwen/Qwen2.5-7B" and "by its folder name" in why
    assert registry.resolve("./model_hub/Qwen2.5-0.5B-Instruct/").name == "Qwen/Qwen2.5-0.5B"
    assert registry.resolve("/data/models/Qwen3-4B-Instruct-2507").max_position_embeddings == 262144
    # a folder that names no bundled model stays unknown, with the old reasons
    (tmp_path / "checkpoint-500").mkdir()
    arch, why = registry.lookup(str(tmp_path / "checkpoint-500"))
    assert arch is None and "without config.json" in why
    assert registry.lookup("/data/models/my-finetune")[1] == "/data/models/my-finetune does not exist"
    assert registry.resolve("/data/models/Qwen2.5-7B-Instruct-GGUF") is None


def test_resolve_unknown_returns_none(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for bad in ("no-such-org/no-such-model", "", "   ", str(tmp_path / "missing" / "config.json"), "./nope"):
        assert registry.resolve(bad) is None
    arch, why = registry.lookup("no-such-org/no-such-model")
    assert arch is None and "not a bundled model" in why
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    arch, why = registry.lookup(str(tmp_path / "weird"))
    assert arch is None and "mamba" in why
    (tmp_path / "broken.json").write_text("{not json")
    assert registry.resolve(str(tmp_path / "broken.json")) is None


def test_resolve_local_config(tmp_path):
    cfg = registry.registry_config("qwen2.5-0.5b")
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(cfg))
    by_dir = registry.resolve(str(model_dir))
    by_file = registry.resolve(str(model_dir / "config.json"))
    assert by_dir is not None and by_file is not None
    assert count_params(by_dir).total == count_params(by_file).total == 494_032_768
    # a PEFT adapter directory resolves its base model
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "gpt2", "r": 8}))
    assert registry.resolve(str(adapter)).name == "openai-community/gpt2"


def test_resolve_hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-llama"
    old, new = "a" * 40, "b" * 40
    for rev, layers in ((old, 3), (new, 5)):
        snap = repo / "snapshots" / rev
        snap.mkdir(parents=True)
        (snap / "config.json").write_text(json.dumps({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": layers,
            "num_attention_heads": 4, "vocab_size": 1000}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(old)  # refs/main wins over the newer snapshot
    os.utime(repo / "snapshots" / new / "config.json", (2e9, 2e9))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    a = registry.resolve("acme/tiny-llama")
    assert a is not None and a.num_layers == 3 and a.name == "acme/tiny-llama"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert registry.resolve("ACME/Tiny-Llama").num_layers == 3
    (repo / "refs" / "main").unlink()
    assert registry.resolve("acme/tiny-llama").num_layers == 5  # newest snapshot without refs/main
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert registry.resolve("acme/tiny-llama") is None


def test_no_torch_or_transformers_import():
    code = (
        "import sys\n"
        "from ckpt_doctor.estimate import registry, params, arch\n"
        "for n in registry.known_names():\n"
        "    a = registry.resolve(n); params.count_params(a); params.lora_params(a, 8)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)


# --------------------------------------------------------------------------------------------------
# against transformers (meta device) and PEFT
# --------------------------------------------------------------------------------------------------
def _build(config: dict, meta: bool = True):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForMaskedLM,
                              AutoModelForSeq2SeqLM)

    transformers.logging.set_verbosity_error()
    cfg = dict(config)
    model_type = cfg.pop("model_type")
    hf_cfg = AutoConfig.for_model(model_type, **cfg)
    cls = {"t5": AutoModelForSeq2SeqLM, "bert": AutoModelForMaskedLM, "qwen2_vl": AutoModelForImageTextToText,
           "qwen2_5_vl": AutoModelForImageTextToText}.get(model_type, AutoModelForCausalLM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if meta:
            with torch.device("meta"):
                return cls.from_config(hf_cfg)
        torch.manual_seed(0)
        return cls.from_config(hf_cfg)


@pytest.mark.parametrize("entry,variant", VARIANTS, ids=[v["name"] for _, v in VARIANTS])
def test_variant_count_matches_transformers(entry, variant):
    config = {**entry["config"], **variant["config"]}
    model = _build(config)
    assert count_params(ModelArch.from_hf_config(config, variant["name"])).total == sum(
        p.numel() for p in model.parameters())


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_count_matches_transformers(entry):
    model = _build(entry["config"])
    real = sum(p.numel() for p in model.parameters())
    arch = ModelArch.from_hf_config(entry["config"], entry["name"])
    assert count_params(arch).total == real
    # the config transformers serialises (all defaults spelled out) reads back to the same count
    again = ModelArch.from_hf_config(model.config.to_dict(), entry["name"])
    assert count_params(again).total == real


TINY = {
    "llama": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128},
    "mixtral": {"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "num_local_experts": 4},
    "qwen2": {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128},
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128, "n_positions": 64},
    "phi": {"model_type": "phi", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "vocab_size": 128},
    "falcon": {"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "vocab_size": 128},
    "bert": {"model_type": "bert", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
             "num_attention_heads": 4, "vocab_size": 128},
    "t5": {"model_type": "t5", "d_model": 64, "d_ff": 96, "d_kv": 16, "num_heads": 4, "num_layers": 2,
           "num_decoder_layers": 3, "vocab_size": 128, "feed_forward_proj": "gated-gelu"},
}
LORA_CASES = [
    ("llama", None), ("llama", "q_proj,k_proj,down_proj"), ("llama", "all-linear"),
    # Mixtral: PEFT's default (q_proj, v_proj) is lost by peft 0.21's transformers-v5 MoE config conversion
    # (NoMatchingPeftModuleError), so the default is spelled out here.
    ("mixtral", "q_proj,v_proj"),
    ("qwen2", ["o_proj", "gate_proj"]), ("gpt2", None), ("gpt2", ["mlp.c_proj"]), ("phi", None),
    ("falcon", None), ("bert", None), ("bert", ["query", "value", "key"]), ("t5", None), ("t5", "q,k,v,o,wi_0,wo"),
]


@pytest.mark.parametrize("kind,targets", LORA_CASES, ids=[f"{k}-{t}" for k, t in LORA_CASES])
def test_lora_params_match_peft(kind, targets):
    peft = pytest.importorskip("peft")
    config = TINY[kind]
    model = _build(config, meta=False)
    arch = ModelArch.from_hf_config(config, kind)
    assert count_params(arch).total == sum(p.numel() for p in model.parameters())
    r = 4
    if targets is None:
        peft_targets = None  # PEFT's own default for the model type
    elif isinstance(targets, str):
        peft_targets = targets if targets == "all-linear" else targets.split(",")
    else:
        peft_targets = list(targets)
    task = {"t5": "SEQ_2_SEQ_LM", "bert": None}.get(kind, "CAUSAL_LM")
    lcfg = peft.LoraConfig(r=r, lora_alpha=8, target_modules=peft_targets, task_type=task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(model, lcfg)
    trainable = sum(p.numel() for n, p in pm.named_parameters() if p.requires_grad and "lora_" in n)
    assert lora_params(arch, r, targets) == trainable


def test_dataclass_replace_keeps_config():
    a = registry.resolve("gpt2")
    b = dataclasses.replace(a, num_layers=1)
    assert b.hf_config == a.hf_config and count_params(b).total < count_params(a).total


def test_a_remote_code_decoder_is_sized_as_a_generic_decoder_and_says_so(tmp_path):
    import json

    from ckpt_doctor.estimate.params import count_params
    from ckpt_doctor.estimate.registry import lookup

    # ChatGLM3-6B's and Qwen-7B's config.json (remote code: no layer program of their own), published sizes 6.24B, 7.72B
    chatglm = {"model_type": "chatglm", "num_layers": 28, "padded_vocab_size": 65024, "hidden_size": 4096,
               "ffn_hidden_size": 13696, "num_attention_heads": 32, "seq_length": 8192, "multi_query_group_num": 2}
    qwen = {"model_type": "qwen", "hidden_size": 4096, "intermediate_size": 22016, "num_attention_heads": 32,
            "num_hidden_layers": 32, "vocab_size": 151936, "seq_length": 8192}
    for config, published in ((chatglm, 6.24e9), (qwen, 7.72e9)):
        folder = tmp_path / config["model_type"]
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
        arch, source = lookup(str(folder))
        assert arch is not None and arch.generic and "generic" in source and "approximate" in source
        assert abs(count_params(arch).total - published) / published < 0.02


def test_a_config_without_a_decoders_sizes_is_still_refused(tmp_path):
    from ckpt_doctor.estimate.registry import lookup

    (tmp_path / "config.json").write_text('{"model_type": "mystery", "hidden_size": 64}', encoding="utf-8")
    arch, why = lookup(str(tmp_path))
    assert arch is None and "'mystery' is not supported" in why
