"""Model architecture numbers, read from Hugging Face ``config.json`` dicts.

This module is imported by the fast CLI: it must never import torch or transformers (not even lazily)
and never touch the network.  It only turns a plain config dict into a :class:`ModelArch`, a frozen
description of the shapes that matter for parameter and memory estimates.

Conventions
-----------
* ``num_layers`` is the total number of transformer blocks that run in a training step: the decoder
  layers for decoder-only models, the encoder layers for BERT, and encoder + decoder layers for T5
  (``num_encoder_layers`` / ``num_decoder_layers`` give the split).  The vision tower of a multimodal
  model (Gemma 3 4B) is not included; it is described by :attr:`ModelArch.vision`.
* ``head_dim`` is the per-head size actually used by the projections (Gemma: 256, T5: ``d_kv``).
* :meth:`ModelArch.stacks` describes every repeated stack of layers (its linear layers with biases,
  its norms, the experts of a MoE block) so that exact parameter counts and LoRA sizes can be derived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "LinearSpec",
    "NormSpec",
    "Stack",
    "VisionArch",
    "ModelArch",
    "SUPPORTED_MODEL_TYPES",
    "UnsupportedConfig",
    "attention_refusal",
    "default_attn",
    "t5_ties_lm_head",
]


class UnsupportedConfig(ValueError):
    """The config dict cannot be described (unknown ``model_type`` or missing keys)."""


class LinearSpec(NamedTuple):
    """One linear projection inside a layer.

    ``name`` is the leaf module name that ``--lora-targets`` / PEFT ``target_modules`` match
    (``q_proj``, ``c_attn``, ``query_key_value``...); ``path`` is the dotted path inside the layer
    (``self_attn.q_proj``).  ``count`` > 1 marks fused MoE expert weights (one ``[count, out, in]``
    parameter); those and routers have ``lora_targetable=False`` because PEFT cannot wrap them as
    ``nn.Linear``.
    """

    name: str
    in_features: int
    out_features: int
    bias: bool = False
    count: int = 1
    path: str = ""
    lora_targetable: bool = True

    @property
    def numel(self) -> int:
        return self.count * (self.in_features * self.out_features + (self.out_features if self.bias else 0))


class NormSpec(NamedTuple):
    """One normalisation layer: ``size`` weights, plus ``size`` biases when ``bias`` (LayerNorm)."""

    name: str
    size: int
    bias: bool

    @property
    def numel(self) -> int:
        return self.size * (2 if self.bias else 1)


@dataclass(frozen=True)
class Stack:
    """``num_layers`` identical layers.  ``extra`` holds parameters present once per stack, not per
    layer (T5's relative attention bias lives in the first layer only)."""

    name: str
    num_layers: int
    linears: tuple[LinearSpec, ...]
    norms: tuple[NormSpec, ...]
    extra: tuple[tuple[str, int], ...] = ()

    @property
    def linear_params_per_layer(self) -> int:
        return sum(lin.numel for lin in self.linears)

    @property
    def norm_params_per_layer(self) -> int:
        return sum(n.numel for n in self.norms)

    @property
    def params(self) -> int:
        per_layer = self.linear_params_per_layer + self.norm_params_per_layer
        return self.num_layers * per_layer + sum(n for _, n in self.extra)


@dataclass(frozen=True)
class VisionArch:
    """The vision tower of a multimodal model and its projector into the language model.

    ``kind``: ``siglip`` (Gemma 3: a fixed ``image_size``, ``mm_tokens_per_image`` tokens per image), ``qwen2_vl`` or
    ``qwen2_5_vl`` (native resolution: an image of any size is cut into ``patch_size`` patches, ``temporal_patch_size``
    frames deep, and every ``spatial_merge_size`` x ``spatial_merge_size`` block of them becomes one token of the
    language model's sequence after the patch merger; ``image_size`` is 0, the resolution is a setting of the step).
    Qwen2-VL's blocks: LayerNorm, ``fc1`` -> quick_gelu -> ``fc2``; Qwen2.5-VL's: RMSNorm, gated SiLU MLP with biases,
    window attention except in ``fullatt_block_indexes`` (transformers 5.25 models/qwen2_vl, models/qwen2_5_vl)."""

    hidden_size: int
    num_layers: int
    num_attention_heads: int
    intermediate_size: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    use_head: bool = False
    mm_tokens_per_image: int = 256
    kind: str = "siglip"
    out_hidden_size: int = 0           # the merger's output: the language model's hidden size
    spatial_merge_size: int = 1
    temporal_patch_size: int = 1
    window_size: int = 0               # Qwen2.5-VL: window attention over window_size x window_size pixels
    fullatt_block_indexes: tuple[int, ...] = ()
    hidden_act: str = "gelu_pytorch_tanh"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def is_qwen(self) -> bool:
        return self.kind in ("qwen2_vl", "qwen2_5_vl")

    @property
    def patch_dim(self) -> int:
        """Values per patch: one row of ``pixel_values``."""
        return self.num_channels * self.temporal_patch_size * self.patch_size ** 2

    def image_grid(self, image_size: int) -> tuple[int, int, int]:
        """``(grid_h, grid_w, tokens)`` of a square ``image_size`` image: the processor resizes each side to a multiple
        of ``patch_size * spatial_merge_size`` (transformers 5.25 image_processing_qwen2_vl.py ``smart_resize``:
        ``round(height / factor) * factor``, at least one factor), then ``grid = side / patch_size``; ``tokens`` =
        ``grid_h * grid_w / spatial_merge_size**2``, the image's tokens in the language model's sequence."""
        factor = self.patch_size * self.spatial_merge_size
        side = max(factor, round(image_size / factor) * factor)
        g = side // self.patch_size
        return g, g, g * g // self.spatial_merge_size ** 2

    def attention_chunks(self, image_size: int, block: int) -> list[int]:
        """Patches of each attention call of vision block ``block`` over one image: the whole image (Qwen2-VL, and
        Qwen2.5-VL's ``fullatt_block_indexes``), else its windows of ``window_size // spatial_merge_size // patch_size``
        merged tokens a side, the last row and column of windows cut by the grid (transformers 5.25 vision_utils.py
        ``get_vision_window_index``; its padding adds empty windows that ``unique_consecutive`` drops)."""
        gh, gw, _ = self.image_grid(image_size)
        if self.kind != "qwen2_5_vl" or block in self.fullatt_block_indexes or not self.window_size:
            return [gh * gw]
        m, w = self.spatial_merge_size, self.window_size // self.spatial_merge_size // self.patch_size

        def sides(n: int) -> list[int]:
            return [w] * (n // w) + ([n % w] if n % w else [])

        return [a * b * m * m for a in sides(gh // m) for b in sides(gw // m)]


# model_type -> internal family
_FAMILY = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "qwen3_moe": "llama",
    "gemma": "llama",
    "gemma2": "llama",
    "gemma3_text": "llama",
    "gemma3": "llama",
    "olmo2": "llama",
    "gpt_oss": "llama",
    "qwen2_vl": "llama",
    "qwen2_5_vl": "llama",
    "phi": "phi",
    "phi3": "phi3",
    "gpt2": "gpt2",
    "gpt_neox": "gpt_neox",
    "falcon": "falcon",
    "RefinedWeb": "falcon",
    "RefinedWebModel": "falcon",
    "opt": "opt",
    "bert": "bert",
    "t5": "t5",
}
SUPPORTED_MODEL_TYPES = tuple(sorted(_FAMILY))

# Defaults of the transformers config classes for the keys we read (used when a config.json omits
# them; many real config.json files rely on these, e.g. Gemma 3's nested text_config).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, max_position_embeddings=2048, tie_word_embeddings=False,
                  attention_bias=False, mlp_bias=False, hidden_act="silu"),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096 * 32,
                    tie_word_embeddings=False, hidden_act="silu"),
    "mixtral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096 * 32,
                    tie_word_embeddings=False, num_local_experts=8, num_experts_per_tok=2, hidden_act="silu"),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=32768,
                  tie_word_embeddings=False, hidden_act="silu"),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, head_dim=128, max_position_embeddings=32768,
                  tie_word_embeddings=False, attention_bias=False, hidden_act="silu"),
    "qwen3_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=24,
                      num_attention_heads=32, num_key_value_heads=4, head_dim=128, max_position_embeddings=32768,
                      tie_word_embeddings=False, attention_bias=False, hidden_act="silu", num_experts=128,
                      num_experts_per_tok=8, moe_intermediate_size=768, decoder_sparse_step=1,
                      mlp_only_layers=[]),
    "gemma": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=16, head_dim=256, max_position_embeddings=8192,
                  tie_word_embeddings=True, attention_bias=False, hidden_act="gelu_pytorch_tanh"),
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=8192,
                   tie_word_embeddings=True, attention_bias=False, hidden_activation="gelu_pytorch_tanh"),
    "gemma3_text": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                        max_position_embeddings=131072, tie_word_embeddings=True, attention_bias=False,
                        hidden_activation="gelu_pytorch_tanh"),
    # transformers 5.25 models/olmo2/configuration_olmo2.py Olmo2Config
    "olmo2": dict(vocab_size=50304, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, max_position_embeddings=2048, tie_word_embeddings=False,
                  attention_bias=False, hidden_act="silu"),
    # transformers 5.25 models/gpt_oss/configuration_gpt_oss.py GptOssConfig
    "gpt_oss": dict(vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=36,
                    num_attention_heads=64, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                    tie_word_embeddings=False, attention_bias=True, hidden_act="silu", num_local_experts=128,
                    num_experts_per_tok=4, sliding_window=128, swiglu_alpha=1.702, swiglu_limit=7.0),
    # Qwen2VLTextConfig / Qwen2_5_VLTextConfig defaults (transformers 5.25 configuration_qwen2_vl.py,
    # configuration_qwen2_5_vl.py); the text keys sit at the top of the published config.json or under text_config
    "qwen2_vl": dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                     num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=32768,
                     tie_word_embeddings=False, hidden_act="silu"),
    "qwen2_vl_vision": dict(depth=32, embed_dim=1280, hidden_size=3584, hidden_act="quick_gelu", mlp_ratio=4,
                            num_heads=16, in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
    "qwen2_5_vl_vision": dict(depth=32, hidden_size=3584, hidden_act="silu", intermediate_size=3420, num_heads=16,
                              in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                              window_size=112, out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31]),
    "siglip_vision_model": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, num_channels=3, image_size=224, patch_size=16,
                                vision_use_head=True),
    "phi": dict(vocab_size=51200, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                num_attention_heads=32, max_position_embeddings=2048, tie_word_embeddings=False,
                qk_layernorm=False, hidden_act="gelu_new"),
    "phi3": dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                 num_attention_heads=32, max_position_embeddings=4096, tie_word_embeddings=False,
                 hidden_act="silu"),
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                 tie_word_embeddings=True, activation_function="gelu_new"),
    "gpt_neox": dict(vocab_size=50432, hidden_size=6144, num_hidden_layers=44, num_attention_heads=64,
                     intermediate_size=24576, max_position_embeddings=2048, tie_word_embeddings=False,
                     attention_bias=True, hidden_act="gelu"),
    "falcon": dict(vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
                   multi_query=True, new_decoder_architecture=False, parallel_attn=True, bias=False,
                   max_position_embeddings=2048, tie_word_embeddings=True, alibi=False, hidden_act="gelu"),
    "opt": dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                max_position_embeddings=2048, do_layer_norm_before=True, word_embed_proj_dim=None,
                enable_bias=True, layer_norm_elementwise_affine=True, tie_word_embeddings=True,
                activation_function="relu"),
    "bert": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
                 tie_word_embeddings=True, hidden_act="gelu"),
    "t5": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=None,
               num_heads=8, relative_attention_num_buckets=32, feed_forward_proj="relu",
               tie_word_embeddings=True),
}
_DEFAULTS["RefinedWeb"] = _DEFAULTS["RefinedWebModel"] = _DEFAULTS["falcon"]


# Attention implementations transformers refuses per model type, at model construction: transformers 5.25
# modeling_utils.py PreTrainedModel._sdpa_can_dispatch ("does not support an attention implementation through
# torch.nn.functional.scaled_dot_product_attention yet") and the Flash Attention check of
# _check_and_adjust_attn_implementation, which read the class flags _supports_sdpa / _supports_flash_attn.
# For the supported model types they are False only for: Gemma2ForCausalLM._supports_sdpa (models/gemma2/
# modeling_gemma2.py: "sdpa does not support softcapping"), GptOssPreTrainedModel._supports_sdpa (the attention sinks
# are an extra softmax column SDPA has no input for), T5ForConditionalGeneration._supports_flash_attn and
# Gemma3ForConditionalGeneration._supports_flash_attn (the multimodal Gemma 3).  ``flash`` is the --attn name of
# flash_attention_2.
_ATTN_REFUSED: dict[str, tuple[str, str, str]] = {
    # model_type: (refused --attn, transformers class, what transformers says)
    "gemma2": ("sdpa", "Gemma2ForCausalLM", "does not support attention through torch's scaled_dot_product_attention "
               "(no attention soft-capping)"),
    "t5": ("flash", "T5ForConditionalGeneration", "does not support Flash Attention"),
    "gemma3": ("flash", "Gemma3ForConditionalGeneration", "does not support Flash Attention"),
    # models/gpt_oss/modeling_gpt_oss.py GptOssPreTrainedModel._supports_sdpa = False (attention sinks)
    "gpt_oss": ("sdpa", "GptOssForCausalLM", "does not support attention through torch's scaled_dot_product_attention "
                "(attention sinks)"),
}


def attention_refusal(arch: "ModelArch", attn: str) -> str | None:
    """The one-line reason transformers (5.25) refuses to build ``arch`` with attention ``attn``, else None."""
    refused = _ATTN_REFUSED.get(arch.model_type)
    if refused is None or refused[0] != attn:
        return None
    hf_name = "flash_attention_2" if attn == "flash" else attn
    instead = "eager" if attn == "sdpa" else "sdpa"
    return (f"{arch.name}: transformers refuses attn_implementation={hf_name!r} for {arch.model_type} "
            f"({refused[1]} {refused[2]}); use --attn {instead}")


def default_attn(arch: "ModelArch") -> str:
    """What transformers picks when the script names no attention: sdpa, else eager (modeling_utils.py
    _check_and_adjust_attn_implementation falls back to eager when sdpa cannot dispatch)."""
    return "eager" if attention_refusal(arch, "sdpa") else "sdpa"


_TRANSFORMERS_MAJOR: list[int | None] = []


def _transformers_major() -> int | None:
    """Major version of the installed transformers, read from package metadata (no import)."""
    if not _TRANSFORMERS_MAJOR:
        try:
            from importlib.metadata import PackageNotFoundError, version

            try:
                _TRANSFORMERS_MAJOR.append(int(version("transformers").split(".")[0]))
            except (PackageNotFoundError, ValueError):
                _TRANSFORMERS_MAJOR.append(None)
        except ImportError:  # pragma: no cover
            _TRANSFORMERS_MAJOR.append(None)
    return _TRANSFORMERS_MAJOR[0]


def t5_ties_lm_head(config: dict) -> bool:
    """Whether ``T5ForConditionalGeneration`` shares ``lm_head`` with the embeddings.

    T5 v1.1 / Flan-T5 checkpoints say ``tie_word_embeddings: false`` and store a separate ``lm_head``;
    transformers < 5 honours that.  transformers >= 5 (PR #42815) always ties (the flag only selects
    ``scale_decoder_outputs``), so the instantiated model is smaller by ``vocab_size * d_model``.  We
    follow the installed transformers (package metadata only, no import); without it, the >= 5 rule.
    """
    if config.get("tie_word_embeddings", True) is not False:
        return True
    major = _transformers_major()
    return major is None or major >= 5


# the names remote-code configs give the sizes a decoder is made of (GPT-2, ChatGLM, Qwen-1, InternLM, Baichuan, ...)
_GENERIC_KEYS = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "model_dim"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "num_key_value_heads": ("num_key_value_heads", "multi_query_group_num", "n_head_kv", "num_kv_heads"),
    "intermediate_size": ("intermediate_size", "ffn_hidden_size", "n_inner"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
    "max_position_embeddings": ("max_position_embeddings", "seq_length", "n_positions", "max_sequence_length"),
}


# remote-code models whose `intermediate_size` counts both halves of the gated MLP: Qwen-1's `modeling_qwen.py`
# `QWenMLP` builds `w1` and `w2` of `config.intermediate_size // 2` each
_HALVED_INTERMEDIATE = {"qwen"}


def _generic_decoder(config: dict) -> dict | None:
    """A Llama-style description of a decoder whose `model_type` has no layer program here, from the sizes its
    config.json gives under the usual names; None when it lacks the hidden size, layers, heads or vocabulary."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    found = {key: _first(text, *names, default=None) for key, names in _GENERIC_KEYS.items()}
    if any(not isinstance(found[k], int) or found[k] < 1 for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")):
        return None
    hidden = found["hidden_size"]
    if config.get("model_type") in _HALVED_INTERMEDIATE and found["intermediate_size"]:
        found["intermediate_size"] //= 2
    return {
        **{k: v for k, v in found.items() if v is not None},
        "num_key_value_heads": found["num_key_value_heads"] or found["num_attention_heads"],
        "intermediate_size": found["intermediate_size"] or 4 * hidden,
        "max_position_embeddings": found["max_position_embeddings"] or 2048,
        "tie_word_embeddings": bool(text.get("tie_word_embeddings", False)),
        "hidden_act": text.get("hidden_act", "silu"),
    }


def _qwen_vl(config: dict, model_type: str) -> tuple[dict, VisionArch]:
    """The language model's keys (a Qwen2 decoder: q/k/v biases, M-RoPE) and the vision tower of a Qwen2-VL /
    Qwen2.5-VL config.json.  The text keys are read at the top level (the published config.json) and under
    ``text_config`` (what transformers 5 saves), as ``Qwen2_5_VLConfig.__post_init__`` moves them; the vision keys
    follow ``Qwen2VLVisionConfig`` / ``Qwen2_5_VLVisionConfig``.  Qwen2-VL's tower is ``embed_dim`` wide with an
    ``embed_dim * mlp_ratio`` MLP and merges into ``hidden_size``; Qwen2.5-VL's is ``hidden_size`` wide and merges into
    ``out_hidden_size``."""
    top = {k: v for k, v in config.items() if v is not None and k not in ("text_config", "vision_config")}
    text = {k: v for k, v in (config.get("text_config") or {}).items() if v is not None}
    cfg = {**_DEFAULTS["qwen2_vl"], **top, **text}
    if "tie_word_embeddings" in config:  # Qwen2_5_VLConfig.tie_word_embeddings rules the model's lm_head
        cfg["tie_word_embeddings"] = bool(config["tie_word_embeddings"]) or bool(text.get("tie_word_embeddings", False))
    v = {**_DEFAULTS[f"{model_type}_vision"], **{k: x for k, x in (config.get("vision_config") or {}).items()
                                                   if x is not None}}
    v["in_channels"] = v.get("in_chans", v["in_channels"])  # the published key; transformers reads in_channels
    if model_type == "qwen2_vl":
        width, inter, out = int(v["embed_dim"]), int(v["embed_dim"]) * int(v["mlp_ratio"]), int(v["hidden_size"])
    else:
        width, inter, out = int(v["hidden_size"]), int(v["intermediate_size"]), int(v["out_hidden_size"])
    vision = VisionArch(
        hidden_size=width, num_layers=int(v["depth"]), num_attention_heads=int(v["num_heads"]),
        intermediate_size=inter, image_size=0, patch_size=int(v["patch_size"]), num_channels=int(v["in_channels"]),
        mm_tokens_per_image=0, kind=model_type, out_hidden_size=out, spatial_merge_size=int(v["spatial_merge_size"]),
        temporal_patch_size=int(v["temporal_patch_size"]), window_size=int(v.get("window_size", 0) or 0),
        fullatt_block_indexes=tuple(int(i) for i in v.get("fullatt_block_indexes", ()) or ()),
        hidden_act=str(v.get("hidden_act", "silu")),
    )
    return cfg, vision


def _first(cfg: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


@dataclass(frozen=True)
class ModelArch:
    """Architecture numbers of one model (see the module docstring for conventions)."""

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    gated_mlp: bool
    num_experts: int = 0
    num_experts_per_tok: int = 0
    hf_config: dict = field(default_factory=dict, hash=False, compare=False, repr=False)
    # --- details needed for exact counts -------------------------------------------------------
    family: str = "llama"              # llama | phi | phi3 | gpt2 | gpt_neox | falcon | opt | bert | t5
    hidden_act: str = "silu"
    qkv_bias: bool = False             # bias on the q/k/v projections
    out_bias: bool = False             # bias on the attention output projection
    mlp_bias: bool = False             # bias on the MLP projections
    norm_type: str = "rmsnorm"         # rmsnorm | layernorm
    norm_bias: bool = False            # LayerNorm with bias
    qk_norm: bool = False              # norm on q and k: per head (Qwen3, Gemma 3, Phi qk_layernorm), over the
                                       # whole projection (OLMo 2)
    parallel_attn: bool = False        # attention and MLP read the same input (Phi-2, Falcon-7B, NeoX)
    position_embedding: str = "rope"   # rope | learned | relative | alibi
    num_position_embeddings: int = 0   # rows of a learned position table (0 for rope)
    moe_intermediate_size: int = 0     # per-expert MLP width (0 if dense)
    num_encoder_layers: int = 0
    num_decoder_layers: int = 0
    is_encoder_decoder: bool = False
    lm_head_bias: bool = False
    vision: VisionArch | None = None
    torch_dtype: str | None = None     # dtype the checkpoint is stored in, from config.json
    # sized as a Llama-style decoder from the config's generic sizes: its `model_type` (often remote code, `qwen`,
    # `chatglm`, `internlm`) has no layer program of its own, so the estimate is an approximation
    generic: bool = False

    # ------------------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def text_config(self) -> dict:
        """The (possibly nested) text part of ``hf_config``."""
        return self.hf_config.get("text_config") or self.hf_config

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: dict, name: str) -> "ModelArch":
        """Build from a Hugging Face ``config.json`` dict.  Raises :class:`UnsupportedConfig`."""
        if not isinstance(config, dict):
            raise UnsupportedConfig(f"{name}: config is not a dict")
        top_type = config.get("model_type")
        if top_type not in _FAMILY:
            generic = _generic_decoder(config)
            if generic is None:
                raise UnsupportedConfig(
                    f"{name}: model_type {top_type!r} is not supported "
                    f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)}), and its config.json does not give the sizes of "
                    "a decoder (hidden size, layers, heads, vocabulary)"
                )
            kw = cls._from_llama(generic, "llama")
            kw.update(model_type=str(top_type), torch_dtype=_first(config, "torch_dtype", "dtype", default=None))
            return cls(name=name, family="llama", hf_config=dict(config), generic=True, **kw)
        vision = None
        cfg = config
        model_type = top_type
        if top_type == "gemma3":
            text = dict(config.get("text_config") or {})
            model_type = "gemma3_text"
            cfg = {**_DEFAULTS["gemma3_text"], **{k: v for k, v in text.items() if v is not None}}
            vcfg = {**_DEFAULTS["siglip_vision_model"], **(config.get("vision_config") or {})}
            vision = VisionArch(
                hidden_size=int(vcfg["hidden_size"]),
                num_layers=int(vcfg["num_hidden_layers"]),
                num_attention_heads=int(vcfg["num_attention_heads"]),
                intermediate_size=int(vcfg["intermediate_size"]),
                image_size=int(vcfg["image_size"]),
                patch_size=int(vcfg["patch_size"]),
                num_channels=int(vcfg.get("num_channels", 3)),
                use_head=bool(vcfg.get("vision_use_head", True)),
                mm_tokens_per_image=int(config.get("mm_tokens_per_image", 256)),
            )
        elif top_type in ("qwen2_vl", "qwen2_5_vl"):
            cfg, vision = _qwen_vl(config, top_type)
        else:
            cfg = {**_DEFAULTS[top_type], **{k: v for k, v in config.items() if v is not None}}
        family = _FAMILY[top_type]
        try:
            builder = getattr(cls, f"_from_{family}")
            kw = builder(cfg, model_type)
        except KeyError as exc:  # pragma: no cover - defaults cover all keys we read
            raise UnsupportedConfig(f"{name}: config.json lacks {exc.args[0]!r}") from None
        kw.setdefault("torch_dtype", _first(config, "torch_dtype", "dtype", default=None)
                      or _first(cfg, "torch_dtype", "dtype", default=None))
        if vision is not None:
            # Gemma3ForConditionalGeneration ties lm_head to the language model's embeddings.
            kw["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", kw["tie_word_embeddings"]))
        if top_type in ("gemma3", "qwen2_vl", "qwen2_5_vl"):
            kw["model_type"] = top_type
        return cls(name=name, family=family, hf_config=dict(config), vision=vision, **kw)

    # --- per-family readers --------------------------------------------------------------------
    @staticmethod
    def _from_llama(cfg: dict, model_type: str) -> dict:
        h = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        kv = int(_first(cfg, "num_key_value_heads", default=heads))
        head_dim = int(_first(cfg, "head_dim", default=h // heads))
        n = int(cfg["num_hidden_layers"])
        experts = 0
        topk = 0
        moe_inter = 0
        if model_type == "mixtral":
            experts = int(cfg["num_local_experts"])
            topk = int(cfg["num_experts_per_tok"])
            moe_inter = int(cfg["intermediate_size"])
        elif model_type == "qwen3_moe":
            experts = int(cfg["num_experts"])
            topk = int(cfg["num_experts_per_tok"])
            moe_inter = int(cfg["moe_intermediate_size"])
        elif model_type == "gpt_oss":  # every layer sparse; each expert's MLP is intermediate_size wide
            experts = int(cfg["num_local_experts"])
            topk = int(cfg["num_experts_per_tok"])
            moe_inter = int(cfg["intermediate_size"])
        qkv_bias = bool(cfg.get("attention_bias", False))
        out_bias = qkv_bias
        if model_type in ("qwen2", "qwen2_vl", "qwen2_5_vl"):  # q/k/v always biased, o_proj never
            qkv_bias, out_bias = True, False
        act = _first(cfg, "hidden_activation", "hidden_act", default="silu")
        return dict(
            model_type=model_type,
            hidden_size=h,
            num_layers=n,
            num_attention_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            max_position_embeddings=int(cfg["max_position_embeddings"]),
            tie_word_embeddings=bool(cfg["tie_word_embeddings"]),
            gated_mlp=True,
            num_experts=experts,
            num_experts_per_tok=topk,
            moe_intermediate_size=moe_inter,
            hidden_act=str(act),
            qkv_bias=qkv_bias,
            out_bias=out_bias,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            norm_type="rmsnorm",
            qk_norm=model_type in ("qwen3", "qwen3_moe", "gemma3_text", "olmo2"),
            num_decoder_layers=n,
        )

    @staticmethod
    def _from_phi(cfg: dict, model_type: str) -> dict:
        h = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        n = int(cfg["num_hidden_layers"])
        return dict(
            model_type=model_type, hidden_size=h, num_layers=n, num_attention_heads=heads,
            num_kv_heads=int(_first(cfg, "num_key_value_heads", default=heads)),
            head_dim=h // heads, intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]), max_position_embeddings=int(cfg["max_position_embeddings"]),
            tie_word_embeddings=bool(cfg["tie_word_embeddings"]), gated_mlp=False,
            hidden_act=str(cfg.get("hidden_act", "gelu_new")), qkv_bias=True, out_bias=True, mlp_bias=True,
            norm_type="layernorm", norm_bias=True, qk_norm=bool(cfg.get("qk_layernorm", False)),
            parallel_attn=True, lm_head_bias=True, num_decoder_layers=n,
        )

    @staticmethod
    def _from_phi3(cfg: dict, model_type: str) -> dict:
        h = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        n = int(cfg["num_hidden_layers"])
        return dict(
            model_type=model_type, hidden_size=h, num_layers=n, num_attention_heads=heads,
            num_kv_heads=int(_first(cfg, "num_key_value_heads", default=heads)),
            head_dim=int(_first(cfg, "head_dim", default=h // heads)),
            intermediate_size=int(cfg["intermediate_size"]), vocab_size=int(cfg["vocab_size"]),
            max_position_embeddings=int(cfg["max_position_embeddings"]),
            tie_word_embeddings=bool(cfg["tie_word_embeddings"]), gated_mlp=True,
            hidden_act=str(cfg.get("hidden_act", "silu")), norm_type="rmsnorm", num_decoder_layers=n,
        )

    @staticmethod
    def _from_gpt2(cfg: dict, model_type: str) -> dict:
        h = int(_first(cfg, "n_embd", "hidden_size"))
        heads = int(_first(cfg, "n_head", "num_attention_heads"))
        n = int(_first(cfg, "n_layer", "num_hidden_layers"))
        pos = int(_first(cfg, "n_positions", "max_position_embeddings"))
        return dict(
            model_type=model_type, hidden_size=h, num_layers=n, num_attention_heads=heads, num_kv_heads=heads,
            head_dim=h // heads, intermediate_size=int(_first(cfg, "n_inner", default=4 * h)),
            vocab_size=int(cfg["vocab_size"]), max_position_embeddings=pos,
            tie_word_embeddings=bool(cfg["tie_word_embeddings"]), gated_mlp=False,
            hidden_act=str(cfg.get("activation_function", "gelu_new")), qkv_bias=True, out_bias=True,
            mlp_bias=True, norm_type="layernorm", norm_bias=True, position_embedding="learned",
            num_position_embeddings=pos, num_decoder_layers=n,
        )

    @staticmethod
    def _from_gpt_neox(cfg: dict, model_type: str) -> dict:
        h = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        n = int(cfg["num_hidden_layers"])
        bias = bool(cfg.get("attention_bias", True))
        return dict(
            model_type=model_type, hidden_size=h, num_layers=n, num_attention_heads=heads, num_kv_heads=heads,
            head_dim=h // heads, intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]), max_position_embeddings=int(cfg["max_position_embeddings"]),
            tie_word_embeddings=bool(cfg["tie_word_embeddings"]), gated_mlp=False,
            hidden_act=str(cfg.get("hidden_act", "gelu")), qkv_bias=bias, out_bias=bias, mlp_bias=True,
            norm_type="layernorm", norm_bias=True, parallel_attn=bool(cfg.get("use_parallel_residual", True)),
            num_decoder_layers=n,
        )

    @staticmethod
    def _from_falcon(cfg: dict, model_type: str) -> dict:
        h = int(_first(cfg, "hidden_size", "n_embed"))
        heads = int(_first(cfg, "num_attention_heads", "n_head"))
        n = int(_first(cfg, "num_hidden_layers", "n_layer"))
        new_arch = bool(cfg.get("new_decoder_architecture", False))
        if new_arch:
            kv = int(_first(cfg, "num_kv_heads", "n_head_kv", default=heads))
        elif cfg.get("multi_query", True):
            kv = 1
        else:
            kv = heads
        bias = bool(cfg.get("bias", False))
        alibi = bool(cfg.get("alibi", False))
        return dict(
            model_type="falcon", hidden_size=h, num_layers=n, num_attention_heads=heads, num_kv_heads=kv,
            head_dim=h // heads, intermediate_size=int(_first(cfg, "ffn_hidden_size", default=4 * h)),
            vocab_size=int(cfg["vocab_size"]), max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg["tie_word_embeddings"]), gated_mlp=False,
            hidden_act=str(cfg.get("activation", cfg.get("hidden_act", "gelu"))), qkv_bias=bias,
            out_bias=bias, mlp_bias=bias, norm_type="layernorm", norm_bias=True,
            parallel_attn=bool(cfg.get("parallel_attn", True)),
            position_embedding="alibi" if alibi else "rope", num_decoder_layers=n,
        )

    @staticmethod
    def _from_opt(cfg: dict, model_type: str) -> dict:
        h = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        n = int(cfg["num_hidden_layers"])
        pos = int(cfg["max_position_embeddings"])
        bias = bool(cfg.get("enable_bias", True))
        return dict(
            model_type=model_type, hidden_size=h, num_layers=n, num_attention_heads=heads, num_kv_heads=heads,
            head_dim=h // heads, intermediate_size=int(cfg["ffn_dim"]), vocab_size=int(cfg["vocab_size"]),
            max_position_embeddings=pos, tie_word_embeddings=bool(cfg["tie_word_embeddings"]), gated_mlp=False,
            hidden_act=str(cfg.get("activation_function", "relu")), qkv_bias=bias, out_bias=bias, mlp_bias=bias,
            norm_type="layernorm", norm_bias=bool(cfg.get("layer_norm_elementwise_affine", True)),
            position_embedding="learned", num_position_embeddings=pos + 2, num_decoder_layers=n,
        )

    @staticmethod
    def _from_bert(cfg: dict, model_type: str) -> dict:
        h = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        n = int(cfg["num_hidden_layers"])
        pos = int(cfg["max_position_embeddings"])
        return dict(
            model_type=model_type, hidden_size=h, num_layers=n, num_attention_heads=heads, num_kv_heads=heads,
            head_dim=h // heads, intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]), max_position_embeddings=pos,
            tie_word_embeddings=bool(cfg["tie_word_embeddings"]), gated_mlp=False,
            hidden_act=str(cfg.get("hidden_act", "gelu")), qkv_bias=True, out_bias=True, mlp_bias=True,
            norm_type="layernorm", norm_bias=True, position_embedding="learned", num_position_embeddings=pos,
            num_encoder_layers=n,
        )

    @staticmethod
    def _from_t5(cfg: dict, model_type: str) -> dict:
        d = int(cfg["d_model"])
        heads = int(cfg["num_heads"])
        enc = int(cfg["num_layers"])
        dec = int(_first(cfg, "num_decoder_layers", default=enc))
        proj = str(cfg.get("feed_forward_proj", "relu"))
        gated = proj.startswith("gated-")
        return dict(
            model_type=model_type, hidden_size=d, num_layers=enc + dec, num_attention_heads=heads,
            num_kv_heads=heads, head_dim=int(cfg["d_kv"]), intermediate_size=int(cfg["d_ff"]),
            vocab_size=int(cfg["vocab_size"]), max_position_embeddings=int(cfg.get("n_positions", 512)),
            tie_word_embeddings=t5_ties_lm_head(cfg), gated_mlp=gated,
            hidden_act=proj.split("-")[-1], norm_type="rmsnorm", position_embedding="relative",
            num_encoder_layers=enc, num_decoder_layers=dec, is_encoder_decoder=True,
        )

    # --- structure -----------------------------------------------------------------------------
    def stacks(self) -> tuple[Stack, ...]:
        """Every repeated stack of layers, with its linears (biases, MoE experts) and norms."""
        h, f = self.hidden_size, self.family
        q, kv, inter = self.q_size, self.kv_size, self.intermediate_size
        L = LinearSpec
        ln = lambda name, size=h: NormSpec(name, size, self.norm_bias)  # noqa: E731
        if f == "llama":
            attn = [
                L("q_proj", h, q, self.qkv_bias, path="self_attn.q_proj"),
                L("k_proj", h, kv, self.qkv_bias, path="self_attn.k_proj"),
                L("v_proj", h, kv, self.qkv_bias, path="self_attn.v_proj"),
                L("o_proj", q, h, self.out_bias, path="self_attn.o_proj"),
            ]
            norms = [ln("input_layernorm"), ln("post_attention_layernorm")]
            if self.model_type in ("gemma2", "gemma3_text", "gemma3"):
                norms += [ln("pre_feedforward_layernorm"), ln("post_feedforward_layernorm")]
            if self.model_type == "olmo2":
                # Olmo2DecoderLayer: no input norm; the attention and MLP outputs are normed (post-norm placement)
                norms = [ln("post_attention_layernorm"), ln("post_feedforward_layernorm")]
            if self.qk_norm and self.model_type == "olmo2":
                # Olmo2Attention: q_norm / k_norm over the whole q and k projections, not per head
                norms += [ln("q_norm", q), ln("k_norm", kv)]
            elif self.qk_norm:
                norms += [ln("q_norm", self.head_dim), ln("k_norm", self.head_dim)]
            if self.model_type == "gpt_oss":
                # GptOssAttention.sinks: one learned logit per head (a vector, stored with the norms)
                norms += [NormSpec("sinks", self.num_attention_heads, False)]
            dense_mlp = [
                L("gate_proj", h, inter, self.mlp_bias, path="mlp.gate_proj"),
                L("up_proj", h, inter, self.mlp_bias, path="mlp.up_proj"),
                L("down_proj", inter, h, self.mlp_bias, path="mlp.down_proj"),
            ]
            out: list[Stack] = []
            if self.is_moe:
                e, mi = self.num_experts, self.moe_intermediate_size
                # gpt-oss: GptOssTopKRouter (weight + bias, not an nn.Linear) and GptOssExperts with biased
                # [E, h, 2*mi] / [E, mi, h] projections (models/gpt_oss/modeling_gpt_oss.py)
                oss = self.model_type == "gpt_oss"
                moe = [
                    L("router" if oss else "gate", h, e, oss, path="mlp.router" if oss else "mlp.gate",
                      lora_targetable=False),
                    L("gate_up_proj", h, 2 * mi, oss, count=e, path="mlp.experts.gate_up_proj",
                      lora_targetable=False),
                    L("down_proj", mi, h, oss, count=e, path="mlp.experts.down_proj", lora_targetable=False),
                ]
                n_moe = self._num_sparse_layers()
                out.append(Stack("decoder", n_moe, tuple(attn + moe), tuple(norms)))
                if self.num_layers - n_moe:
                    out.append(Stack("decoder_dense", self.num_layers - n_moe, tuple(attn + dense_mlp), tuple(norms)))
            else:
                out.append(Stack("decoder", self.num_layers, tuple(attn + dense_mlp), tuple(norms)))
            if self.vision is not None:
                out.append(self._vision_stack())
            return tuple(out)
        if f == "phi":
            lin = (
                L("q_proj", h, q, True, path="self_attn.q_proj"),
                L("k_proj", h, kv, True, path="self_attn.k_proj"),
                L("v_proj", h, kv, True, path="self_attn.v_proj"),
                L("dense", q, h, True, path="self_attn.dense"),
                L("fc1", h, inter, True, path="mlp.fc1"),
                L("fc2", inter, h, True, path="mlp.fc2"),
            )
            norms = [ln("input_layernorm")]
            if self.qk_norm:
                norms += [ln("q_layernorm", self.head_dim), ln("k_layernorm", self.head_dim)]
            return (Stack("decoder", self.num_layers, lin, tuple(norms)),)
        if f == "phi3":
            lin = (
                L("qkv_proj", h, q + 2 * kv, False, path="self_attn.qkv_proj"),
                L("o_proj", q, h, False, path="self_attn.o_proj"),
                L("gate_up_proj", h, 2 * inter, False, path="mlp.gate_up_proj"),
                L("down_proj", inter, h, False, path="mlp.down_proj"),
            )
            return (Stack("decoder", self.num_layers, lin, (ln("input_layernorm"), ln("post_attention_layernorm"))),)
        if f == "gpt2":
            lin = (
                L("c_attn", h, 3 * h, True, path="attn.c_attn"),
                L("c_proj", h, h, True, path="attn.c_proj"),
                L("c_fc", h, inter, True, path="mlp.c_fc"),
                L("c_proj", inter, h, True, path="mlp.c_proj"),
            )
            return (Stack("decoder", self.num_layers, lin, (ln("ln_1"), ln("ln_2"))),)
        if f == "gpt_neox":
            lin = (
                L("query_key_value", h, 3 * h, self.qkv_bias, path="attention.query_key_value"),
                L("dense", h, h, self.out_bias, path="attention.dense"),
                L("dense_h_to_4h", h, inter, True, path="mlp.dense_h_to_4h"),
                L("dense_4h_to_h", inter, h, True, path="mlp.dense_4h_to_h"),
            )
            return (Stack("decoder", self.num_layers, lin, (ln("input_layernorm"), ln("post_attention_layernorm"))),)
        if f == "falcon":
            cfg = self.hf_config
            new_arch = bool(cfg.get("new_decoder_architecture", False))
            if new_arch:
                qkv_out = q + 2 * kv
            elif self.num_kv_heads == 1:
                qkv_out = h + 2 * self.head_dim
            else:
                qkv_out = 3 * h
            lin = (
                L("query_key_value", h, qkv_out, self.qkv_bias, path="self_attention.query_key_value"),
                L("dense", h, h, self.out_bias, path="self_attention.dense"),
                L("dense_h_to_4h", h, inter, self.mlp_bias, path="mlp.dense_h_to_4h"),
                L("dense_4h_to_h", inter, h, self.mlp_bias, path="mlp.dense_4h_to_h"),
            )
            n_ln = cfg.get("num_ln_in_parallel_attn")
            if n_ln is None and new_arch:
                n_ln = 2
            if not self.parallel_attn:
                norms = (ln("post_attention_layernorm"), ln("input_layernorm"))
            elif n_ln == 2:
                norms = (ln("ln_attn"), ln("ln_mlp"))
            else:
                norms = (ln("input_layernorm"),)
            return (Stack("decoder", self.num_layers, lin, norms),)
        if f == "opt":
            b = self.qkv_bias
            lin = (
                L("k_proj", h, h, b, path="self_attn.k_proj"),
                L("v_proj", h, h, b, path="self_attn.v_proj"),
                L("q_proj", h, h, b, path="self_attn.q_proj"),
                L("out_proj", h, h, b, path="self_attn.out_proj"),
                L("fc1", h, inter, b, path="fc1"),
                L("fc2", inter, h, b, path="fc2"),
            )
            affine = bool(self.hf_config.get("layer_norm_elementwise_affine", True))
            norms = (ln("self_attn_layer_norm"), ln("final_layer_norm")) if affine else ()
            return (Stack("decoder", self.num_layers, lin, norms),)
        if f == "bert":
            lin = (
                L("query", h, h, True, path="attention.self.query"),
                L("key", h, h, True, path="attention.self.key"),
                L("value", h, h, True, path="attention.self.value"),
                L("dense", h, h, True, path="attention.output.dense"),
                L("dense", h, inter, True, path="intermediate.dense"),
                L("dense", inter, h, True, path="output.dense"),
            )
            norms = (ln("attention.output.LayerNorm"), ln("output.LayerNorm"))
            return (Stack("encoder", self.num_layers, lin, norms),)
        if f == "t5":
            inner = self.q_size

            def attn(prefix: str) -> list[LinearSpec]:
                return [L(n, h if n != "o" else inner, inner if n != "o" else h, False, path=f"{prefix}.{n}")
                        for n in ("q", "k", "v", "o")]

            if self.gated_mlp:
                ff = [L("wi_0", h, inter, path="DenseReluDense.wi_0"), L("wi_1", h, inter, path="DenseReluDense.wi_1"),
                      L("wo", inter, h, path="DenseReluDense.wo")]
            else:
                ff = [L("wi", h, inter, path="DenseReluDense.wi"), L("wo", inter, h, path="DenseReluDense.wo")]
            rel = int(self.hf_config.get("relative_attention_num_buckets", 32)) * self.num_attention_heads
            enc = Stack("encoder", self.num_encoder_layers, tuple(attn("layer.0.SelfAttention") + ff),
                        (NormSpec("layer.0.layer_norm", h, False), NormSpec("layer.1.layer_norm", h, False)),
                        extra=(("relative_attention_bias", rel),))
            dec = Stack("decoder", self.num_decoder_layers,
                        tuple(attn("layer.0.SelfAttention") + attn("layer.1.EncDecAttention") + ff),
                        (NormSpec("layer.0.layer_norm", h, False), NormSpec("layer.1.layer_norm", h, False),
                         NormSpec("layer.2.layer_norm", h, False)),
                        extra=(("relative_attention_bias", rel),))
            return (enc, dec)
        raise UnsupportedConfig(f"{self.name}: unknown family {f!r}")  # pragma: no cover

    def _num_sparse_layers(self) -> int:
        if self.model_type != "qwen3_moe":
            return self.num_layers
        cfg = self.text_config
        step = int(cfg.get("decoder_sparse_step", 1) or 1)
        only = set(cfg.get("mlp_only_layers") or [])
        return sum(1 for i in range(self.num_layers)
                   if i not in only and self.num_experts > 0 and (i + 1) % step == 0)

    def _vision_stack(self) -> Stack:
        v = self.vision
        assert v is not None
        vh, vi = v.hidden_size, v.intermediate_size
        L = LinearSpec
        if v.is_qwen:
            attn = (L("qkv", vh, 3 * vh, True, path="attn.qkv"), L("proj", vh, vh, True, path="attn.proj"))
            if v.kind == "qwen2_vl":  # VisionMlp: fc1 -> quick_gelu -> fc2; LayerNorm
                mlp = (L("fc1", vh, vi, True, path="mlp.fc1"), L("fc2", vi, vh, True, path="mlp.fc2"))
            else:  # Qwen2_5_VLMLP(bias=True); RMSNorm
                mlp = (L("gate_proj", vh, vi, True, path="mlp.gate_proj"), L("up_proj", vh, vi, True, path="mlp.up_proj"),
                       L("down_proj", vi, vh, True, path="mlp.down_proj"))
            ln = v.kind == "qwen2_vl"
            return Stack("vision", v.num_layers, attn + mlp, (NormSpec("norm1", vh, ln), NormSpec("norm2", vh, ln)))
        lin = (
            L("q_proj", vh, vh, True, path="self_attn.q_proj"),
            L("k_proj", vh, vh, True, path="self_attn.k_proj"),
            L("v_proj", vh, vh, True, path="self_attn.v_proj"),
            L("out_proj", vh, vh, True, path="self_attn.out_proj"),
            L("fc1", vh, vi, True, path="mlp.fc1"),
            L("fc2", vi, vh, True, path="mlp.fc2"),
        )
        return Stack("vision", v.num_layers, lin, (NormSpec("layer_norm1", vh, True), NormSpec("layer_norm2", vh, True)))

    def linear_specs(self, stack: str | None = None) -> tuple[LinearSpec, ...]:
        """Linear layers of one layer of ``stack`` (default: the main stack, decoder or BERT encoder)."""
        stacks = self.stacks()
        if stack is None:
            return stacks[0].linears if self.family != "t5" else stacks[1].linears
        for s in stacks:
            if s.name == stack:
                return s.linears
        raise KeyError(stack)

    def linear_layers(self, stack: str | None = None) -> list[tuple[str, int, int]]:
        """``(module_name, in_features, out_features)`` of each ``nn.Linear`` (or GPT-2 ``Conv1D``) in one
        layer of the main stack; ``module_name`` is the leaf name ``--lora-targets`` matches.  Fused MoE
        expert weights and routers are left out (they are not linear modules LoRA can wrap)."""
        return [(s.name, s.in_features, s.out_features) for s in self.linear_specs(stack) if s.lora_targetable]

    def to_dict(self) -> dict:
        """Plain-JSON summary (no ``hf_config``)."""
        out = {}
        for k in self.__dataclass_fields__:
            if k == "hf_config":
                continue
            v = getattr(self, k)
            out[k] = v.__dict__.copy() if isinstance(v, VisionArch) else v
        return out
