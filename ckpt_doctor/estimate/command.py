"""``ckpt-doctor estimate``: peak GPU memory of one training step, with and without checkpointing.

Registered by the CLI (``ckpt_doctor.cli``).  Imports no torch: the closed form answers in milliseconds;
``--trace`` (the exact fake-tensor trace) imports torch and transformers lazily.

Exit codes: 0 an estimate was printed (whether or not it fits), 2 usage error (unknown model, unknown GPU,
bad size, a setting the trace cannot run).
"""

from __future__ import annotations

import json
from dataclasses import replace

import click

from .gpus import (
    DEFAULT_BUDGET_BYTES,
    configured_budget as budget_from_configuration,
    BudgetError,
    gpu_memory_bytes,
    known_gpus,
    parse_budget,
)
from .memory import OPTIMIZERS, TrainingSetup
from .memory import estimate as _estimate
from .memory import plans as _plans
from .job import job_phases, render_job
from .render import render_fit, render_host, render_text, to_json_dict

__all__ = ["DEFAULTS", "EstimateError", "configured_budget", "estimate", "estimate_plans", "settings_from_analysis",
           "settings_from_script", "setup_from_settings"]

EXIT_OK, EXIT_USAGE = 0, 2

# what a flag means when neither it nor the script says anything
DEFAULTS = {
    "batch_size": 1,
    "seq_len": 2048,  # capped by the model's max_position_embeddings
    "dtype": "bf16",
    "mixed_precision": "no",
    "attn": "sdpa",
    "optimizer": "adamw",
    "lora_r": None,
    "lora_targets": None,
    "load_in_4bit": False,
    "load_in_8bit": False,
    "kbit_upcast": True,  # peft's prepare_model_for_kbit_training: non-quantised parameters in fp32
    "gpus": 1,
    "zero": 0,
    "gradient_accumulation": 1,
    "checkpointing": "none",
    "frozen": "none",
    "master_weights": "none",  # "fp32": DeepSpeed's bf16/fp16 mode (read from a script or config, no flag)
    # Qwen2-VL / Qwen2.5-VL: images per sample, their side in pixels (visual tokens are part of --seq-len), frozen tower
    "images": 1,
    "image_size": 448,
    "freeze_vision_tower": False,
    "expandable_segments": False,  # PYTORCH_CUDA_ALLOC_CONF's expandable_segments:True
    "loss": "plain",  # "fused": Liger's fused linear cross-entropy
    "reentrant": False,  # checkpointing runs torch's reentrant variant (read from a script or config, no flag)
}


# ---- what the script and the configuration say ----------------------------------------------------------
class EstimateError(Exception):
    """Why there is no estimate (the message `estimate` prints, the language server's hover shows)."""


def settings_from_script(path: str, model_flag: str | None = None) -> tuple[dict, str]:
    """The training settings a script states (ckpt_doctor.analysis.settings), in this command's flag names, read as
    `check` reads them (flags given on the command line override them), and their description with lines."""
    from ckpt_doctor.analysis import FactsError, analyze, analyze_config, analyze_launched_script, analyze_launcher
    from ckpt_doctor.analysis.config_document import CONFIG_SUFFIXES
    from ckpt_doctor.check.lint import is_config
    from ckpt_doctor.analysis.config_document import ConfigError as BadConfigFile
    from ckpt_doctor.analysis.source import SourceError, read_source
    from ckpt_doctor.config import ConfigError, load_settings

    try:
        config = load_settings()
        source = read_source(path, config.max_file_size)
        if path.endswith(CONFIG_SUFFIXES):  # a framework's config
            analysis = analyze_config(source, config)
        elif is_config(path):  # a launcher: its first framework line, else the first script it runs as it runs it
            analysis = next(iter(analyze_launcher(source, config)), None) or analyze_launched_script(source, config)
        else:
            analysis = analyze(source, config)
    except (SourceError, ConfigError) as exc:
        _fail(str(exc))
    except BadConfigFile as exc:
        _fail(f"{path}: {exc}")
    except SyntaxError as exc:
        _fail(f"{path}:{exc.lineno}:{exc.offset}: cannot parse: {exc.msg}")
    except FactsError as exc:
        _fail(f"{path}: {exc}")
    if analysis is None:
        _fail(f"{path}: neither a config of LLaMA-Factory, axolotl, torchtune, ms-swift, TRL, accelerate or DeepSpeed, nor a "
              "launcher that runs one of them or a Python script of this project")
    try:
        return settings_from_analysis(analysis, config, model_flag, where=path)
    except EstimateError as exc:
        _fail(str(exc))


def settings_from_analysis(analysis, config, model_flag: str | None = None, where: str = "") -> tuple[dict, str]:
    """`settings_from_script` for an analysis already made (of a file on disk or of an editor's buffer) under the
    configuration `config`; completes `analysis.settings` with the model's defaults. Raises EstimateError."""
    from ckpt_doctor.analysis.settings import complete_for

    settings = analysis.settings
    model = model_flag or (settings.model.value if settings.model else None)
    if model and model in config.model_configs:
        model = str(config.root / config.model_configs[model])
    if model is None and settings.model_load is not None:
        raise EstimateError(f"{where}:{settings.model_load.line}: the model id is not a constant; pass --model "
                            f"(settings read: {settings.describe()})")
    from .registry import resolve

    arch = resolve(str(model)) if model else None
    if arch is not None:
        complete_for(settings, arch)  # the same defaults `check` uses (dtype "auto", autocast over 16-bit weights, ...)
    from .host import offload_of

    offload, pins = offload_of(analysis)  # host memory only: the device estimate does not read it
    # `fused_loss`: a fused loss the setup does not model (not Liger's), which `--fit` must not propose again
    job = {"eval_logits_batch": settings.eval_logits_batch, "vllm_colocated": settings.vllm_colocated}
    return ({**settings.as_flags(), "model": model, "fused_loss": settings.unmodelled_fused_loss, "offload": offload,
             "deepspeed_pins": pins, "trained_unknown": settings.trained_unknown, "job": job}, settings.describe())


def setup_from_settings(settings: dict, *, seq_len_given: bool, from_script: bool, read: str = "") -> tuple[TrainingSetup, str]:
    """The TrainingSetup of `settings` (flag names; absent or None: the default) and where its model was found.
    `read` ends the messages (the settings a script gave). Raises EstimateError."""
    settings = dict(settings)
    name = settings.pop("model", None)
    if not name:
        raise EstimateError(f"no model: pass --model with a bundled model id or a local config.json path{read}")
    from .registry import lookup

    try:
        arch, source = lookup(str(name))
    except Exception as exc:  # noqa: BLE001 - a broken config must not be a traceback
        arch, source = None, str(exc)
    if arch is None:
        raise EstimateError(f"cannot resolve model {name!r}: {source}; pass --model with a local config.json path{read}")

    if settings.get("attn") is None:  # what transformers picks: sdpa, or eager where it refuses sdpa (Gemma 2)
        from .arch import default_attn

        settings["attn"] = default_attn(arch)
    for k, v in DEFAULTS.items():
        if settings.get(k) is None:
            settings[k] = v
    if not seq_len_given and (not from_script or settings["seq_len"] == DEFAULTS["seq_len"]):
        cap = arch.max_position_embeddings or DEFAULTS["seq_len"]
        settings["seq_len"] = min(int(settings["seq_len"]), int(cap))
    targets = settings.get("lora_targets")
    if isinstance(targets, str):
        targets = tuple(t.strip() for t in targets.split(",") if t.strip()) or None
    settings["lora_targets"] = tuple(targets) if targets else None
    if settings["lora_targets"] and not settings.get("lora_r"):
        raise EstimateError("--lora-targets needs --lora-r")
    try:
        return TrainingSetup(arch=arch, **{k: settings[k] for k in DEFAULTS}).validate(), source
    except (TypeError, ValueError) as exc:
        raise EstimateError(str(exc)) from None


def estimate_plans(setup: TrainingSetup, budget: int):
    """The estimate of `setup` as written, and every checkpointing plan against `budget` (that estimate reused)."""
    est = _estimate(setup)
    return est, _plans(replace(setup, checkpointing="none"), budget, known={setup.checkpointing: est})


def configured_budget(config=None) -> tuple[int, str] | None:
    """``(bytes, source)`` from ``[tool.ckpt-doctor] gpu-memory`` (of `config`, else of the configuration found from
    the current folder) or NVML, else None. Consulted after ``--gpu-memory`` and ``--gpu`` and before the 24 GiB
    default."""
    from ckpt_doctor.config import ConfigError, load_settings

    if config is None:
        try:
            config = load_settings()
        except ConfigError as exc:
            _fail(str(exc))
    return budget_from_configuration(config.gpu_memory, f"gpu-memory in {config.config_file or 'the editor settings'}")


# --------------------------------------------------------------------------------------------------------
def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    raise click.exceptions.Exit(EXIT_USAGE)


def _budget(gpu_memory: str | None, gpu: str | None) -> tuple[int, str]:
    if gpu_memory:
        try:
            return parse_budget(gpu_memory), f"--gpu-memory {gpu_memory}"
        except BudgetError as exc:
            _fail(f"{exc}; pass --gpu-memory like 80GiB, 24GB or 24000MiB")
    if gpu:
        n = gpu_memory_bytes(gpu)
        if n is None:
            _fail(f"unknown GPU {gpu!r}; pass --gpu-memory SIZE (e.g. 24GiB) or --gpu with one of: "
                  + ", ".join(known_gpus()))
        return n, f"--gpu {gpu}"
    conf = configured_budget()
    if conf is not None:
        return conf
    return DEFAULT_BUDGET_BYTES, "default: a 24 GiB card; set --gpu-memory or --gpu"


@click.command("estimate", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("script", required=False, type=click.Path(dir_okay=False))
@click.option("--model", "-m", metavar="ID_OR_PATH", help="Bundled model id (meta-llama/Llama-2-7b-hf), a local "
              "directory or config.json, or a model in the local Hugging Face cache.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Per-device micro-batch size (default 1).")
@click.option("--seq-len", type=click.IntRange(min=1), help="Tokens per sample (default 2048, capped by the model).")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), help="Dtype of the weights (default bf16).")
@click.option("--mixed-precision", type=click.Choice(["no", "bf16", "fp16"]),
              help="Autocast over fp32 master weights, as TrainingArguments(bf16=True) on an fp32 model.")
@click.option("--attn", type=click.Choice(["eager", "sdpa", "flash"]), help="Attention implementation (default sdpa).")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)),
              help="adamw is torch.optim.AdamW (foreach); adamw-loop is foreach=False (default adamw).")
@click.option("--lora-r", type=click.IntRange(min=1), help="LoRA rank: freezes the base model.")
@click.option("--lora-targets", metavar="NAMES", help="Comma-separated LoRA target modules (default: PEFT's).")
@click.option("--load-in-4bit", is_flag=True, default=None, help="4-bit NF4 base weights (QLoRA).")
@click.option("--load-in-8bit", is_flag=True, default=None, help="8-bit base weights.")
@click.option("--kbit-upcast/--no-kbit-upcast", default=None,
              help="4/8-bit: peft's prepare_model_for_kbit_training casts embeddings, norms and head to fp32, so the "
                   "residual stream is fp32 (default); --no-kbit-upcast: they stay in --dtype (axolotl, fms-acceleration, "
                   "TRL >= 0.26, a script that never calls it).")
@click.option("--gpus", type=click.IntRange(min=1), help="Data-parallel GPUs (default 1).")
@click.option("--zero", type=click.Choice(["0", "1", "2", "3"]), help="ZeRO stage; FSDP FULL_SHARD counts as 3.")
@click.option("--gradient-accumulation", type=click.IntRange(min=1), help="Micro-batches per optimizer step.")
@click.option("--checkpointing", metavar="PLAN", help="The plan the step runs with: none, full, every_N, offload.")
@click.option("--frozen", type=click.Choice(["none", "trunk"]), help="trunk: only the output head trains (default none).")
@click.option("--images", type=click.IntRange(min=0),
              help="Qwen2-VL / Qwen2.5-VL: images per sample (default 1); their visual tokens are part of --seq-len.")
@click.option("--image-size", type=click.IntRange(min=1), metavar="PX",
              help="Qwen2-VL / Qwen2.5-VL: side of each (square) image in pixels, rounded to a multiple of 28 as the "
                   "processor does (default 448: 256 visual tokens).")
@click.option("--freeze-vision-tower", is_flag=True, default=None,
              help="Qwen2-VL / Qwen2.5-VL: the vision tower and merger do not train (model.visual.requires_grad_(False)).")
@click.option("--expandable-segments/--no-expandable-segments", default=None,
              help="The caching allocator runs with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (what is reserved "
                   "beyond what is allocated; default: read from the script and its launcher, else off).")
@click.option("--loss", type=click.Choice(["plain", "fused"]),
              help="fused: Liger's fused linear cross-entropy (use_liger_kernel=True), which never holds the whole "
                   "logits; causal LMs only (default: read from the script, else plain).")
@click.option("--gpu-memory", metavar="SIZE", help="GPU memory budget, e.g. 80GiB, 24GB, 24000MiB.")
@click.option("--gpu", "gpu_name", metavar="NAME", help="GPU by name for the budget, e.g. A100-80GB, RTX4090, L40S.")
@click.option("--offload-optimizer", type=click.Choice(["none", "cpu"]), help="DeepSpeed offload_optimizer device (host memory only).")
@click.option("--offload-param", type=click.Choice(["none", "cpu"]), help="DeepSpeed offload_param device, ZeRO-3 (host memory only).")
@click.option("--pin-memory/--no-pin-memory", default=None, help="DeepSpeed offload pin_memory (default: DeepSpeed's, True from 0.19.5).")
@click.option("--gpus-per-node", type=click.IntRange(min=1), help="GPU processes on one node, for host memory (default: all --gpus).")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--trace", "do_trace", is_flag=True,
              help="Also run the exact fake-tensor trace (needs torch + transformers: the [verify] extra).")
@click.option("--fit", "do_fit", is_flag=True,
              help="Search the changes that keep the experiment (checkpointing plan, micro-batch x accumulation, fused "
                   "loss, fused or 8-bit AdamW, ZeRO stage over the GPUs given) and mark the cheapest plan that fits.")
def estimate(script: str | None, model: str | None, batch_size: int | None, seq_len: int | None, dtype: str | None,
             mixed_precision: str | None, attn: str | None, optimizer: str | None, lora_r: int | None,
             lora_targets: str | None, load_in_4bit: bool | None, load_in_8bit: bool | None,
             kbit_upcast: bool | None, gpus: int | None, zero: str | None, gradient_accumulation: int | None,
             checkpointing: str | None, frozen: str | None, images: int | None, image_size: int | None,
             freeze_vision_tower: bool | None, expandable_segments: bool | None, loss: str | None, gpu_memory: str | None,
             gpu_name: str | None,
             offload_optimizer: str | None, offload_param: str | None, pin_memory: bool | None,
             gpus_per_node: int | None, output_format: str, do_trace: bool, do_fit: bool = False) -> None:
    """Estimate the peak GPU memory of one training step (forward, backward, optimizer step) per GPU, the
    checkpointing plans that fit the budget, and the lightest one."""
    given = {
        "model": model, "batch_size": batch_size, "seq_len": seq_len, "dtype": dtype,
        "mixed_precision": mixed_precision, "attn": attn, "optimizer": optimizer, "lora_r": lora_r,
        "lora_targets": lora_targets, "load_in_4bit": load_in_4bit, "load_in_8bit": load_in_8bit,
        "kbit_upcast": kbit_upcast, "gpus": gpus,
        "zero": int(zero) if zero is not None else None, "gradient_accumulation": gradient_accumulation,
        "checkpointing": checkpointing, "frozen": frozen, "images": images, "image_size": image_size,
        "freeze_vision_tower": freeze_vision_tower, "expandable_segments": expandable_segments, "loss": loss,
    }
    settings: dict = {}
    job: dict = {}  # the phases beyond the step the script sets up (evaluation keeping logits, vLLM colocated)
    read = ""  # what the messages below add: the settings the script gave
    if script:
        from_script, described = settings_from_script(script, model)
        unknown = from_script.pop("trained_unknown")
        job = from_script.pop("job")
        settings.update({k: v for k, v in from_script.items() if v is not None})
        read = f" (settings read from {script}: {described})"
        if unknown and lora_r is None and not load_in_4bit and not load_in_8bit:
            _fail(f"{script}: what the step trains is not known: {unknown}; pass --lora-r (and --load-in-4bit or "
                  f"--load-in-8bit) as the run uses them{read}")
            return
    settings.update({k: v for k, v in given.items() if v is not None})

    try:
        setup, source = setup_from_settings(settings, seq_len_given=seq_len is not None, from_script=bool(script), read=read)
    except EstimateError as exc:
        _fail(str(exc))
        return

    budget, budget_source = _budget(gpu_memory, gpu_name)
    est, plan_results = estimate_plans(setup, budget)

    host = _host(setup, est, settings, offload_optimizer, offload_param, pin_memory, gpus_per_node)

    trace_dict = None
    if do_trace:
        trace_dict = _run_trace(setup)
    fit = _fit(setup, budget, plan_results, bool(settings.get("fused_loss"))) if do_fit else None
    phases = job_phases(est, budget, job.get("eval_logits_batch"), job.get("vllm_colocated"))

    if output_format == "json":
        d = to_json_dict(est, plan_results, budget, budget_source, source, trace_dict)
        if fit is not None:
            d["fit"] = fit.to_dict()
        d["host_memory"] = {name: h.to_dict() for name, h in host.items()}
        d["job"] = [phase.to_dict() for phase in phases]
        click.echo(json.dumps(d, indent=2, sort_keys=False))
    else:
        text = render_text(est, plan_results, budget, budget_source, source, trace_dict)
        if phases:
            text += "\n" + "\n".join(render_job(phases))
        if fit is not None:
            text += "\n\n" + "\n".join(render_fit(fit))
        click.echo(text)
        click.echo(render_host(host))


def _fit(setup: TrainingSetup, budget: int, plan_results, fused_loss: bool):
    """The planner over `setup`, reusing the checkpointing plans' estimates already made."""
    from .fit import FitOptions, plan_fit

    known = {p.name: p.estimate for p in plan_results if p.estimate is not None}
    return plan_fit(setup, budget, FitOptions(fused_loss=fused_loss), known=known)


def _host(setup, est, settings: dict, offload_optimizer, offload_param, pin_memory, gpus_per_node):
    """Host memory of the offloading plans: the script's DeepSpeed offload, the flags over it."""
    from .host import Offload, host_memory

    offload = settings.get("offload") or Offload()
    if offload_optimizer is not None or offload_param is not None or pin_memory is not None:
        offload = replace(
            offload,
            optimizer=offload.optimizer if offload_optimizer is None else offload_optimizer == "cpu",
            param=offload.param if offload_param is None else offload_param == "cpu",
            optimizer_pin=offload.optimizer_pin if pin_memory is None else pin_memory,
            param_pin=offload.param_pin if pin_memory is None else pin_memory,
        )
    pins = settings.get("deepspeed_pins")
    return host_memory(setup, est.params_total, est.params_trainable, offload, gpus_per_node, pins)


def _run_trace(setup: TrainingSetup) -> dict:
    try:
        from . import trace as _trace
    except ImportError as exc:  # pragma: no cover - trace.py itself imports nothing heavy
        _fail(f"--trace: {exc}")
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        _fail("--trace needs torch and transformers: pip install 'ckpt-doctor[verify]'")
    try:
        res = _trace.trace_step(setup)
    except _trace.TraceUnsupported as exc:
        _fail(str(exc))
    except ImportError as exc:
        _fail(f"--trace needs {exc.name or exc}: pip install 'ckpt-doctor[verify]' (and peft for LoRA)")
    return res.to_dict()
