"""Exact parameter counts and LoRA adapter sizes from a :class:`~ckpt_doctor.estimate.arch.ModelArch`.

No torch / transformers imports here (the fast CLI uses this module).

The counts equal ``sum(p.numel() for p in model.parameters())`` (tied weights counted once) for the
model class people fine-tune, instantiated from the config with transformers:

* decoder-only models (Llama, Mistral, Mixtral, Qwen, Gemma, Phi, GPT-2, GPT-NeoX, Falcon, OPT):
  ``AutoModelForCausalLM`` (for Gemma 3 4B that is ``Gemma3ForConditionalGeneration``, vision tower and
  projector included, reported under ``vision``);
* T5: ``AutoModelForSeq2SeqLM`` (``T5ForConditionalGeneration``);
* BERT: ``AutoModelForMaskedLM`` (``BertForMaskedLM``: no pooler, the MLM head with its transform,
  LayerNorm and vocabulary bias; the decoder weight is tied to the word embeddings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

from .arch import LinearSpec, ModelArch, Stack

__all__ = ["ParamCounts", "count_params", "lora_params", "default_lora_targets", "lora_target_layers"]

_ATTN_PREFIXES = ("self_attn.", "attn.", "attention.", "self_attention.", "layer.0.SelfAttention.",
                  "layer.1.EncDecAttention.")


def _is_attention(spec: LinearSpec) -> bool:
    return spec.path.startswith(_ATTN_PREFIXES)


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts.  ``total`` is the sum of every other field except the ``*_per_layer`` ones,
    ``experts`` (included in ``mlp``) and ``active`` (a MoE's parameters used per token)."""

    total: int
    embedding: int          # token embeddings (plus BERT's token-type table)
    position_embedding: int  # learned position tables (GPT-2, OPT, BERT); 0 for RoPE/ALiBi/relative
    attention: int          # all attention projections of all layers (biases included)
    mlp: int                # all MLP / MoE projections of all layers (router and experts included)
    norms: int              # every norm: per layer, final, embedding LayerNorm
    lm_head: int            # an untied output projection (and its bias); 0 when tied
    head_other: int = 0     # other head parameters (BERT MLM transform + vocab bias, OPT projections)
    other: int = 0          # T5 relative attention biases
    vision: int = 0         # vision tower + multimodal projector (Gemma 3 4B)
    experts: int = 0        # MoE expert weights (a part of ``mlp``)
    active: int = 0         # parameters a token passes through (= total for dense models)
    attention_per_layer: int = 0
    mlp_per_layer: int = 0
    norms_per_layer: int = 0
    per_layer: int = 0      # one layer of the main stack (decoder, or BERT's encoder)
    stacks: dict = field(default_factory=dict)  # stack name -> parameters of that whole stack

    def to_dict(self) -> dict:
        return asdict(self)


def _vision_params(arch: ModelArch) -> int:
    v = arch.vision
    if v is None:
        return 0
    vh = v.hidden_size
    if v.is_qwen:
        # PatchEmbed: Conv3d(in_channels, vh, [temporal_patch_size, patch, patch], bias=False); PatchMerger: ln_q
        # (LayerNorm in Qwen2-VL, RMSNorm in Qwen2.5-VL), Linear(4 vh, 4 vh), GELU, Linear(4 vh, out)
        m = vh * v.spatial_merge_size ** 2
        ln_q = 2 * vh if v.kind == "qwen2_vl" else vh
        return v.patch_dim * vh + ln_q + (m * m + m) + (m * v.out_hidden_size + v.out_hidden_size)
    n = v.num_channels * v.patch_size * v.patch_size * vh + vh  # patch embedding conv
    n += v.num_patches * vh  # position embedding
    n += 2 * vh  # post_layernorm
    if v.use_head:  # SiglipMultiheadAttentionPoolingHead
        n += vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + 2 * vh
        n += vh * v.intermediate_size + v.intermediate_size + v.intermediate_size * vh + vh
    # Gemma3MultiModalProjector: mm_input_projection_weight [vision_hidden, text_hidden] + RMSNorm
    n += vh * arch.hidden_size + vh
    return n


def count_params(arch: ModelArch) -> ParamCounts:
    """Exact parameter count of ``arch`` (see the module docstring for which model class)."""
    h, V, f = arch.hidden_size, arch.vocab_size, arch.family
    attention = mlp = norms = experts = other = 0
    stacks: dict[str, int] = {}
    vision_stack = 0
    main: Stack | None = None
    for st in arch.stacks():
        if st.name == "vision":
            vision_stack += st.params
            stacks[st.name] = st.params
            continue
        if main is None or (f == "t5" and st.name == "decoder"):
            main = st
        a = sum(s.numel for s in st.linears if _is_attention(s))
        m = sum(s.numel for s in st.linears if not _is_attention(s))
        attention += st.num_layers * a
        mlp += st.num_layers * m
        norms += st.num_layers * st.norm_params_per_layer
        experts += st.num_layers * sum(s.numel for s in st.linears if s.count > 1)
        other += sum(n for _, n in st.extra)
        stacks[st.name] = st.params
    assert main is not None

    embedding = V * h
    position = 0
    lm_head = 0 if arch.tie_word_embeddings else V * h
    head_other = 0
    if f in ("llama", "phi3"):
        norms += h  # final RMSNorm
    elif f == "phi":
        norms += 2 * h  # final_layernorm
        lm_head += V  # lm_head bias (present even if tied)
    elif f == "gpt2":
        position = arch.num_position_embeddings * h
        norms += 2 * h  # ln_f
    elif f in ("gpt_neox", "falcon"):
        norms += 2 * h
    elif f == "opt":
        cfg = {**{"word_embed_proj_dim": None, "do_layer_norm_before": True}, **arch.hf_config}
        wep = int(cfg.get("word_embed_proj_dim") or h)
        embedding = V * wep
        lm_head = 0 if arch.tie_word_embeddings else V * wep
        position = arch.num_position_embeddings * h
        if wep != h:
            head_other += 2 * h * wep  # project_in, project_out (no bias)
        if cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False):
            norms += 2 * h if arch.norm_bias else 0
    elif f == "bert":
        type_vocab = int(arch.hf_config.get("type_vocab_size", 2))
        embedding += type_vocab * h
        position = arch.num_position_embeddings * h
        norms += 2 * h  # embeddings.LayerNorm
        head_other += h * h + h + 2 * h + V  # transform.dense, transform.LayerNorm, decoder bias
    elif f == "t5":
        norms += 2 * h  # encoder and decoder final_layer_norm
    vision = vision_stack + _vision_params(arch)

    total = embedding + position + attention + mlp + norms + lm_head + head_other + other + vision
    active = total
    if arch.is_moe and arch.num_experts:
        active = total - experts + experts * arch.num_experts_per_tok // arch.num_experts
    a1 = sum(s.numel for s in main.linears if _is_attention(s))
    m1 = sum(s.numel for s in main.linears if not _is_attention(s))
    return ParamCounts(
        total=total, embedding=embedding, position_embedding=position, attention=attention, mlp=mlp,
        norms=norms, lm_head=lm_head, head_other=head_other, other=other, vision=vision, experts=experts,
        active=active, attention_per_layer=a1, mlp_per_layer=m1, norms_per_layer=main.norm_params_per_layer,
        per_layer=a1 + m1 + main.norm_params_per_layer, stacks=stacks,
    )


# PEFT's defaults when LoraConfig(target_modules=None): copied from
# peft/utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING (peft 0.21.2).
# peft has no entry for phi3, qwen3_moe and multimodal gemma3 (it raises "Please specify
# `target_modules`"); for those we use the attention input projections, marked "not PEFT" below.
_PEFT_DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "t5": ("q", "v"),
    "gpt2": ("c_attn",),
    "opt": ("q_proj", "v_proj"),
    "gpt_neox": ("query_key_value",),
    "bert": ("query", "value"),
    "llama": ("q_proj", "v_proj"),
    "falcon": ("query_key_value",),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "phi": ("q_proj", "v_proj", "fc1", "fc2"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    # not PEFT (no default there):
    "phi3": ("qkv_proj",),
    "qwen3_moe": ("q_proj", "v_proj"),
    "gemma3": ("q_proj", "v_proj"),
}


def default_lora_targets(arch: ModelArch) -> tuple[str, ...]:
    """PEFT's default ``target_modules`` for ``arch.model_type`` (see ``_PEFT_DEFAULT_TARGETS``)."""
    return _PEFT_DEFAULT_TARGETS.get(arch.model_type, ("q_proj", "v_proj"))


def _normalise_targets(targets: str | Iterable[str] | None, arch: ModelArch) -> tuple[str, ...]:
    if targets is None:
        return default_lora_targets(arch)
    if isinstance(targets, str):
        if targets.strip() in ("all-linear", "all_linear"):
            return ("all-linear",)
        return tuple(t.strip() for t in targets.split(",") if t.strip())
    return tuple(targets)


def _matches(spec: LinearSpec, targets: tuple[str, ...]) -> bool:
    if not spec.lora_targetable:
        return False
    if targets == ("all-linear",):
        return True
    full = "." + spec.path if spec.path else "." + spec.name
    # PEFT: key == target or key.endswith("." + target)
    return any(t == spec.name or full.endswith("." + t) for t in targets)


def lora_target_layers(arch: ModelArch, targets: str | Iterable[str] | None = None) -> list[tuple[str, str, int]]:
    """``(stack, path, num_layers)`` of each linear that ``targets`` selects."""
    t = _normalise_targets(targets, arch)
    return [(st.name, s.path or s.name, st.num_layers) for st in arch.stacks() for s in st.linears if _matches(s, t)]


def lora_params(arch: ModelArch, r: int, targets: str | Iterable[str] | None = None) -> int:
    """Trainable LoRA parameters: ``r*in + out*r`` (A and B) for every targeted linear of every layer.

    ``targets`` is a list of module names or a comma-separated string (``"q_proj,v_proj"``), matched as
    PEFT does (exact leaf name or a dotted suffix such as ``"mlp.c_proj"``); ``"all-linear"`` selects
    every linear of the layers (PEFT leaves out the output layer too); ``None`` uses PEFT's default for
    the model type.  LoRA biases, DoRA and ``modules_to_save`` are not counted.
    """
    if r <= 0:
        return 0
    t = _normalise_targets(targets, arch)
    n = 0
    for st in arch.stacks():
        for s in st.linears:
            if _matches(s, t):
                n += st.num_layers * s.count * r * (s.in_features + s.out_features)
    return n
