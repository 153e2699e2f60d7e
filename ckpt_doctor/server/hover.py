"""Hover over a model load (`from_pretrained`, `from_config`), a `TrainingArguments` / TRL config or a trainer call:
the memory estimate of one training step for the settings the script gives there.

The estimate is `ckpt-doctor estimate SCRIPT`'s: the same analysis (`analyze`), the same reading of its settings
(`settings_from_analysis`), the same setup, budget and plans (ckpt_doctor.estimate.command); closed form, offline.
A model that cannot be resolved offline is said so in the hover.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ckpt_doctor.analysis import FactsError, analyze
from ckpt_doctor.analysis.facts import Call
from ckpt_doctor.analysis.library import is_training_config
from ckpt_doctor.findings import Position, Span
from ckpt_doctor.server.documents import Checked

GIB = 2**30
# each setting the estimate rests on, in the order a reader looks for them
SETTING_LABELS = (
    ("model", "model"), ("batch_size", "batch per device"), ("seq_len", "sequence length"), ("dtype", "weights dtype"),
    ("mixed_precision", "mixed precision"), ("optimizer", "optimizer"), ("attn", "attention"), ("lora_r", "LoRA rank"),
    ("frozen", "frozen"), ("gradient_accumulation", "gradient accumulation"), ("gpus", "GPUs"), ("zero", "ZeRO stage"),
    ("checkpointing", "checkpointing"),
)


@dataclass
class HoverText:
    markdown: str
    span: Span  # the call hovered


def hover(checked: Checked, position: Position) -> HoverText | None:
    """The estimate over the call at `position` (1-based, in the source: a notebook's joined cells), or None where
    there is nothing to say."""
    if checked.kind not in ("python", "notebook") or checked.source is None or checked.problem is not None:
        return None
    if "analysis" not in checked.memo:
        try:
            checked.memo["analysis"] = analyze(checked.source, checked.settings)
        except (SyntaxError, FactsError, ValueError, RecursionError):
            checked.memo["analysis"] = None
    analysis = checked.memo["analysis"]
    if analysis is None:
        return None
    call = _call_at(analysis, position)
    if call is None:
        return None
    if "estimate" not in checked.memo:
        checked.memo["estimate"] = estimate_markdown(analysis, checked.settings, Path(checked.path).name)
    return HoverText(checked.memo["estimate"], call.span)


def _call_at(analysis, position: Position) -> Call | None:
    training = analysis.training
    targets = [*training.model_loads, *(c for c in analysis.facts.calls if is_training_config(c.qualname) or training.is_trainer(c))]
    around = [c for c in targets if c.span.start <= position <= c.span.end]
    return min(around, key=lambda c: (c.span.end.line - c.span.start.line, c.span.end.column - c.span.start.column), default=None)


def estimate_markdown(analysis, config, name: str) -> str:
    from ckpt_doctor.estimate.command import EstimateError, configured_budget, estimate_plans, settings_from_analysis, setup_from_settings
    from ckpt_doctor.estimate.gpus import DEFAULT_BUDGET_BYTES

    title = "**ckpt-doctor: memory of one training step**"
    try:
        flags, _ = settings_from_analysis(analysis, config, where=name)
        if flags["trained_unknown"]:
            raise EstimateError(f"what the step trains is not known: {flags['trained_unknown']}")
        setup, model_source = setup_from_settings(flags, seq_len_given=False, from_script=True)
    except EstimateError as exc:
        return (f"{title}\n\nNo estimate: {exc}.\n\nMap the model to a local config.json in `[tool.ckpt-doctor] model-configs` "
                "(or give it a constant default) for an estimate.\n\n" + _settings(analysis.settings))
    budget = configured_budget(config) or (DEFAULT_BUDGET_BYTES, "default: a 24 GiB card; set gpu-memory")
    est, plans = estimate_plans(setup, budget[0])
    fits = est.peak_bytes_nvidia_smi <= budget[0]
    best = plans.get(plans.recommended) if plans.recommended else None
    lines = [
        title,
        "",
        f"Model: {model_source}; checkpointing as written: `{setup.checkpointing}`",
        "",
        f"- **peak**: {_gib(est.peak_bytes)} allocated by PyTorch, {_gib(est.peak_bytes_nvidia_smi)} as nvidia-smi shows it",
        f"- **phase of the peak**: {est.peak_phase}",
        f"- **budget**: {_gib(budget[0])} ({budget[1]}): " + ("fits" if fits else "**does not fit**"),
        "- **lightest plan that fits**: " + (f"`{best.name}`, {_gib(best.peak_bytes_nvidia_smi)} (+{best.extra_compute_pct:.0f} % compute)"
                                             if best else "none: no checkpointing plan fits the budget"),
        "",
        "| plan | nvidia-smi | fits | extra compute |",
        "|---|---|---|---|",
        *(f"| `{p.name}` | {_gib(p.peak_bytes_nvidia_smi)} | {'yes' if p.fits else 'no'} | +{p.extra_compute_pct:.0f} % |" for p in plans),
        "",
        _settings(analysis.settings),
    ]
    return "\n".join(lines)


def _settings(settings) -> str:
    """Each setting with where it came from: a line of the script (or a launcher's), or the default used."""
    rows = [f"- {label}: {setting.describe()}" for attribute, label in SETTING_LABELS
            if (setting := getattr(settings, attribute, None)) is not None and (attribute != "frozen" or setting.stated)]
    if settings.load_in_4bit or settings.load_in_8bit:
        rows.append(f"- quantized base: {'4-bit' if settings.load_in_4bit else '8-bit'}")
    return "Settings, and where each came from:\n\n" + "\n".join(rows)


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"
