"""CKPT407: an evaluation loop whose forward autograd records (rules/CKPT407.md)."""

from __future__ import annotations

from typing import Iterator

from ckpt_doctor.analysis.evaluation import GradForward, grad_forwards
from ckpt_doctor.findings import Severity
from ckpt_doctor.rules import Context, Report, rule


@rule(
    "CKPT407",
    "evaluation-forward-with-grad",
    Severity.WARNING,
    summary="an evaluation loop runs the model with gradients on, keeping what a training step would not",
)
def evaluation_forward_with_grad(ctx: Context) -> Iterator[Report]:
    training = ctx.training
    checkpointed = {s.call.receiver for s in training.enabled_model_methods if s.call}
    project = getattr(ctx.analysis, "project", None)
    for forward in grad_forwards(ctx.facts, project.calls_from_importers if project is not None else lambda function: []):
        if not training.backward_calls and not forward.trained_elsewhere:
            continue  # a hand-written training step, here or in the module that calls it: the model's parameters train
        around = f"no `torch.no_grad()` around it, nor around its call at {forward.called_from}" if forward.called_from \
            else "no `torch.no_grad()` around it"
        where = f"`{forward.model}(...)` runs with gradients on in an evaluation loop ({around})"
        if forward.kept:
            line, text = forward.kept[0]
            yield Report(forward.call.span, (
                f"{where}, and `{text}` at line {line} keeps each batch's autograd graph, with its saved activations, "
                "until the loop ends: memory grows with every batch; put the loop under `torch.no_grad()` "
                "(or keep `.item()` / `.detach()` of it)"))
        elif forward.in_eval_mode and forward.over_batches and _checkpointed(forward, checkpointed):
            yield Report(forward.call.span, (
                f"{where}, in eval mode: transformers checkpoints only in training mode, so this forward stores every "
                "layer's activations, more than the checkpointed training step; put the loop under `torch.no_grad()`"))


def _checkpointed(forward: GradForward, receivers: set[str]) -> bool:
    """Whether Hugging Face checkpointing is turned on for the model the forward runs (the same name, or its root)."""
    root = forward.model.split(".", 1)[0]
    return any(r == forward.model or r.split(".", 1)[0] == root for r in receivers)
