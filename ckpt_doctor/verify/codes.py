"""What the libraries say at runtime, mapped to the rule that explains it.  One table; no torch.

torch, transformers and peft warn from inside their own code (``torch/utils/checkpoint.py``,
``transformers/modeling_layers.py``), never at the user's line, so the warning alone rarely tells the user
what to change.  Each entry maps a message (a warning, a log record, or the text of the exception that
stopped the script) to a rule code; ``ckpt-doctor rules CODE`` then explains the fix.

A code written ``"CKPT101|CKPT201"`` depends on who called ``torch.utils.checkpoint``: the user's own code
(the first code) or Hugging Face's checkpointing (the second); see :func:`resolve`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["RUNTIME_MESSAGES", "HF_PACKAGES", "code_for", "origin_of", "resolve"]


class RuntimeMessage(NamedTuple):
    pattern: str  # a regular expression searched in the message
    code: str     # a rule code, or "USER|HF" codes picked by who called checkpoint
    why: str      # one line: what the message means in the rule's terms


RUNTIME_MESSAGES: tuple[RuntimeMessage, ...] = (
    RuntimeMessage(r"use_reentrant parameter should be passed explicitly", "CKPT101|CKPT201",
                   "torch.utils.checkpoint ran without an explicit use_reentrant and fell back to the reentrant variant"),
    RuntimeMessage(r"None of the inputs have requires_grad=True", "CKPT202",
                   "a reentrant checkpoint got only frozen inputs: the checkpointed layers get no gradients"),
    RuntimeMessage(r"element 0 of tensors does not require grad and does not have a grad_fn", "CKPT202",
                   "the loss has no grad_fn: typically reentrant checkpointing over frozen inputs"),
    RuntimeMessage(r"`use_cache=True` is incompatible with gradient checkpointing"
                   r"|Caching is incompatible with gradient checkpointing", "CKPT203",
                   "use_cache was on while checkpointing; transformers turned it off for the step"),
    RuntimeMessage(r"Expected to mark a variable ready only once", "CKPT301",
                   "DDP saw a parameter twice: reentrant checkpointing with find_unused_parameters=True"),
    RuntimeMessage(r"`gradient_checkpointing(_enable|_disable|_kwargs)?` is deprecated"
                   r"|only defines `gradient_checkpointing_enable`, which is deprecated", "CKPT205",
                   "the deprecated gradient_checkpointing* name was used"),
    RuntimeMessage(r"Unexpected keyword arguments: ", "CKPT103",
                   "the reentrant checkpoint refuses keyword arguments for the wrapped function"),
    RuntimeMessage(r"torch\.utils\.checkpoint is incompatible\s+with \.grad\(\)", "CKPT104",
                   "reentrant checkpoint under torch.autograd.grad or backward(inputs=...)"),
    RuntimeMessage(r"Recomputed values for the following tensors have different metadata", "CKPT105",
                   "the recomputed forward differs from the first one (RNG state, or a layer run differently)"),
    RuntimeMessage(r"Expected op in `op_list` to be an OpOverload but got: .* of type <class 'torch\._ops\.OpOverloadPacket'>", "CKPT108",
                   "the op list given to create_selective_checkpoint_contexts names a packet (aten.mm), not an overload (aten.mm.default)"),
    RuntimeMessage(r"encountered during backward but not found in storage", "CKPT306",
                   "selective checkpointing replayed a different sequence of ops in the recompute; FSDP units inside the "
                   "region (their all-gather internals) are the known cause"),
)

_COMPILED = tuple((re.compile(m.pattern), m) for m in RUNTIME_MESSAGES)

# packages whose calls into torch.utils.checkpoint are "Hugging Face checkpointing" (CKPT2xx)
HF_PACKAGES = ("transformers", "peft", "trl")


def origin_of(filename: str | None) -> str:
    """``"huggingface"``, ``"torch"`` or ``"user"`` for a source file."""
    if not filename:
        return "user"
    norm = filename.replace("\\", "/")
    for pkg in HF_PACKAGES:
        if f"/{pkg}/" in norm and ("site-packages" in norm or "dist-packages" in norm or f"/src/{pkg}/" in norm):
            return "huggingface"
    if "/torch/" in norm and ("site-packages" in norm or "dist-packages" in norm):
        return "torch"
    return "user"


def resolve(code: str, origin: str | None) -> str:
    """Pick one code of ``"USER|HF"`` by who called checkpoint."""
    if "|" not in code:
        return code
    user, hf = code.split("|", 1)
    return hf if origin == "huggingface" else user


def code_for(message: str, origin: str | None = None) -> tuple[str | None, str | None]:
    """``(code, why)`` of the first table entry matching ``message``; ``(None, None)`` when none does."""
    for rx, entry in _COMPILED:
        if rx.search(message):
            return resolve(entry.code, origin), entry.why
    return None, None
