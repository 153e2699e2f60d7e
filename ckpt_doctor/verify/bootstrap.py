"""The child process of ``ckpt-doctor verify``: instrument torch, run the user's script, stop after its first
optimizer step(s), and write what happened as JSON.

    python -m ckpt_doctor.verify.bootstrap SCRIPT [ARGS...]
    python -m ckpt_doctor.verify.bootstrap --module NAME [ARGS...]

Everything is installed *before* the script runs, and nothing in the script is edited:

* ``torch.optim.optimizer.register_optimizer_step_post_hook``: a global hook after every ``optimizer.step()``
  of any optimizer (Trainer, accelerate, Lightning and plain loops all end up there).  After the wanted number
  of steps the results are written and the process leaves with ``os._exit(0)``; the parent kills the rest of
  the process group (data-loader workers).
* ``torch.utils.checkpoint.checkpoint`` is replaced by a counting wrapper before transformers is imported
  (``transformers.modeling_utils`` binds it with ``from torch.utils.checkpoint import checkpoint`` and its
  ``activation_checkpointing_enable`` wraps that name in a ``functools.partial``; modules imported earlier that
  hold the original are patched too).  The variant that really ran is read from the path torch takes
  (``_checkpoint_without_reentrant_generator`` is the non-reentrant one), so a torch whose default changes
  is still counted right.
* ``warnings._showwarnmsg`` (what both Python and C warnings go through once a filter lets them show) and
  ``logging.Logger.handle`` (transformers' ``logger.warning_once``): every warning is recorded and mapped to a
  rule code by ``codes.code_for``; the user still sees them.
* global module forward hooks: the model's first forward of each step (step timing, the batch's shape, train
  mode, autocast), and ``--compare``'s toggle (``CKPT_DOCTOR_VERIFY_CHECKPOINTING=on|off``) applied to the
  Hugging Face model right before its first forward.
* memory: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` (reset after each step, so each step
  has its own peak) and NVML's used memory; on the CPU, a dispatch mode counts live tensor bytes (rounded to
  CUDA's 512-byte blocks) from the model's first forward on.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import runpy
import sys
import threading
import time
import traceback
import warnings
import weakref
from typing import Any

ENV_RESULT = "CKPT_DOCTOR_VERIFY_RESULT"
ENV_STATUS = "CKPT_DOCTOR_VERIFY_STATUS"
ENV_STEPS = "CKPT_DOCTOR_VERIFY_STEPS"
ENV_DEVICE = "CKPT_DOCTOR_VERIFY_DEVICE"              # cuda | cpu
ENV_CHECKPOINTING = "CKPT_DOCTOR_VERIFY_CHECKPOINTING"  # "" (as written) | on | off
ENV_CPU_MEMORY = "CKPT_DOCTOR_VERIFY_CPU_MEMORY"        # "0" turns the CPU live-bytes count off

EXIT_NO_CUDA = 3
EXIT_NO_TORCH = 4
RESULT_VERSION = 1
CUDA_BLOCK = 512
MAX_WARNINGS = 200
_CKPT_OWN_KWARGS = ("use_reentrant", "context_fn", "determinism_check", "debug", "preserve_rng_state", "early_stop")
_THIS_DIR = os.path.dirname(os.path.abspath(__file__))


class _State:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.result_path = os.environ.get(ENV_RESULT)
        self.status_path = os.environ.get(ENV_STATUS)
        self.steps_wanted = max(1, int(os.environ.get(ENV_STEPS, "1") or 1))
        self.device = os.environ.get(ENV_DEVICE, "cuda")
        self.toggle = os.environ.get(ENV_CHECKPOINTING, "")
        self.toggle_info: dict[str, Any] | None = {"requested": self.toggle, "applied": False, "how": None} \
            if self.toggle else None
        self.calls = {"reentrant": 0, "non_reentrant": 0, "implicit_use_reentrant": 0, "bypassed": 0}
        self.sites: dict[tuple, int] = {}
        self.warnings: dict[tuple, dict] = {}
        self.notes: list[str] = []
        self.steps: list[dict] = []
        self.step_start: float | None = None
        self.candidates: dict[int, dict] = {}  # top-level modules called this step: id -> info
        self.embed_shape: list[int] | None = None
        self.autocast: dict | None = None
        self.info: dict[str, Any] = {}
        self.toggled_ids: set[int] = set()
        self.local = threading.local()
        self.live = None  # the CPU live-bytes dispatch mode
        self.finished = False
        self.internal = 0  # > 0 while verify itself calls into the libraries (their warnings are not the script's)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


S = _State()


def _status(text: str) -> None:
    if not S.status_path:
        return
    try:
        with open(S.status_path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        pass


def _note(text: str) -> None:
    if text not in S.notes and len(S.notes) < 50:
        S.notes.append(text)


# --------------------------------------------------------------------------------------------------------
# warnings and log records


def _record(message: str, category: str, filename: str | None, lineno: int | None, kind: str) -> None:
    if S.internal:
        return
    from ckpt_doctor.verify.codes import code_for, origin_of

    message = str(message)
    origin = getattr(S.local, "ckpt_origin", None)
    site = getattr(S.local, "ckpt_site", None)
    if origin is None and filename:
        origin = origin_of(filename)
    code, why = code_for(message, origin)
    key = (category, message[:500])
    entry = S.warnings.get(key)
    if entry is None:
        if len(S.warnings) >= MAX_WARNINGS:
            return
        entry = S.warnings[key] = {
            "code": code, "category": category, "message": message[:2000], "count": 0, "kind": kind,
            "source": f"{filename}:{lineno}" if filename else None,
            "user_site": site, "origin": origin, "why": why,
            "step": len(S.steps) + 1,
        }
    entry["count"] += 1


def _install_warning_capture() -> None:
    original = warnings._showwarnmsg  # type: ignore[attr-defined]

    def _showwarnmsg(msg):
        try:
            _record(str(msg.message), getattr(msg.category, "__name__", str(msg.category)), msg.filename, msg.lineno,
                    "warning")
        except Exception:  # noqa: BLE001 - never break the script's warnings
            pass
        return original(msg)

    warnings._showwarnmsg = _showwarnmsg  # type: ignore[attr-defined]

    original_handle = logging.Logger.handle

    def handle(self, record):
        try:
            if record.levelno >= logging.WARNING and record.name != "py.warnings":
                _record(record.getMessage(), f"log:{record.levelname}", record.pathname, record.lineno, "log")
        except Exception:  # noqa: BLE001
            pass
        return original_handle(self, record)

    logging.Logger.handle = handle


# --------------------------------------------------------------------------------------------------------
# torch.utils.checkpoint


def _caller_site() -> tuple[str, str, int]:
    """(origin, file, line) of the code that called checkpoint, skipping torch's own frames."""
    from ckpt_doctor.verify.codes import origin_of

    f = sys._getframe(2)
    first = None
    for _ in range(40):
        if f is None:
            break
        fn = f.f_code.co_filename
        if os.path.dirname(os.path.abspath(fn)) != _THIS_DIR:
            origin = origin_of(fn)
            if first is None:
                first = (origin, fn, f.f_lineno)
            if origin != "torch":
                return origin, fn, f.f_lineno
        f = f.f_back
    return first or ("user", "?", 0)


def _install_checkpoint_wrapper() -> None:
    import torch.utils.checkpoint as tuc

    original = tuc.checkpoint
    original_generator = tuc._checkpoint_without_reentrant_generator

    def _generator(*args, **kwargs):
        S.local.ckpt_path = "non_reentrant"
        return original_generator(*args, **kwargs)

    @functools.wraps(original)
    def checkpoint(function, *args, use_reentrant=None, **kwargs):
        try:
            origin, fn, line = _caller_site()
        except Exception:  # noqa: BLE001
            origin, fn, line = "user", "?", 0
        if S.toggle == "off":
            S.calls["bypassed"] += 1
            if S.toggle_info is not None:
                S.toggle_info.update(applied=True, how=S.toggle_info.get("how") or "torch.utils.checkpoint bypassed")
            return function(*args, **{k: v for k, v in kwargs.items() if k not in _CKPT_OWN_KWARGS})
        outer = (getattr(S.local, "ckpt_origin", None), getattr(S.local, "ckpt_site", None),
                 getattr(S.local, "ckpt_path", None))
        S.local.ckpt_origin, S.local.ckpt_site, S.local.ckpt_path = origin, f"{fn}:{line}", "reentrant"
        try:
            return original(function, *args, use_reentrant=use_reentrant, **kwargs)
        finally:
            mode = S.local.ckpt_path or "reentrant"
            S.calls[mode] += 1
            if use_reentrant is None:
                S.calls["implicit_use_reentrant"] += 1
            key = (fn, line, mode, origin, use_reentrant is None)
            S.sites[key] = S.sites.get(key, 0) + 1
            S.local.ckpt_origin, S.local.ckpt_site, S.local.ckpt_path = outer

    checkpoint._ckpt_doctor_original = original  # type: ignore[attr-defined]
    tuc._checkpoint_without_reentrant_generator = _generator
    tuc.checkpoint = checkpoint
    _rebind(original, checkpoint)
    S.checkpoint_original, S.checkpoint_wrapper = original, checkpoint


def _rebind(original, replacement) -> None:
    """Modules imported before the wrapper that hold the original under some name."""
    for name, mod in list(sys.modules.items()):
        if mod is None or name == "torch.utils.checkpoint":
            continue
        try:
            d = vars(mod)
        except TypeError:
            continue
        for attr, value in list(d.items()):
            if value is original:
                try:
                    setattr(mod, attr, replacement)
                except Exception:  # noqa: BLE001
                    pass


# --------------------------------------------------------------------------------------------------------
# modules: the model's forward, its batch, the toggle


def _in_backward() -> bool:
    import torch

    try:
        return torch._C._current_graph_task_id() != -1
    except Exception:  # noqa: BLE001
        return False


def _depth() -> int:
    return getattr(S.local, "depth", 0)


def _hf_model(module):
    """The Hugging Face PreTrainedModel inside a module (itself, PEFT's base, DDP's .module), or None."""
    ptm = getattr(sys.modules.get("transformers.modeling_utils"), "PreTrainedModel", None)
    try:
        for m in module.modules():
            if ptm is not None and isinstance(m, ptm):
                return m
        for m in module.modules():
            if hasattr(m, "supports_gradient_checkpointing") and hasattr(getattr(m, "config", None), "to_dict"):
                return m
    except Exception:  # noqa: BLE001
        return None
    return None


def _apply_toggle(module) -> None:
    if id(module) in S.toggled_ids:
        return
    S.toggled_ids.add(id(module))
    hf = _hf_model(module)
    info = S.toggle_info
    if hf is None:
        if S.toggle == "on" and info is not None and not info["applied"]:
            info["reason"] = "no Hugging Face model to turn checkpointing on for (a plain model checkpoints only " \
                             "where its code calls torch.utils.checkpoint)"
        return
    S.internal += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if S.toggle == "off":
                fn = getattr(hf, "activation_checkpointing_disable", None) or hf.gradient_checkpointing_disable
                if any(getattr(m, "gradient_checkpointing", False) for m in hf.modules()):
                    fn()
                info.update(applied=True, how=f"{type(hf).__name__}.{fn.__name__}()")
            elif S.toggle == "on":
                if not getattr(hf, "supports_gradient_checkpointing", False):
                    info["reason"] = f"{type(hf).__name__} does not support activation checkpointing"
                    return
                if hasattr(hf, "activation_checkpointing_enable"):
                    hf.activation_checkpointing_enable({"use_reentrant": False})
                    how = "activation_checkpointing_enable"
                else:
                    hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                    how = "gradient_checkpointing_enable"
                info.update(applied=True, how=f"{type(hf).__name__}.{how}({{'use_reentrant': False}})")
    except Exception as exc:  # noqa: BLE001
        info["reason"] = f"{type(exc).__name__}: {exc}"
    finally:
        S.internal -= 1


def _first_tensor_shape(args) -> list[int] | None:
    import torch

    for a in args:
        if isinstance(a, torch.Tensor):
            return list(a.shape)
    return None


def _pre_hook(module, args) -> None:
    try:
        depth = _depth()
        S.local.depth = depth + 1
        if S.finished or threading.current_thread() is not threading.main_thread() or _in_backward():
            return
        import torch

        grad = torch.is_grad_enabled()
        if depth == 0:
            if not grad:
                return  # evaluation / generation: not part of a training step
            if S.step_start is None:
                _sync()
                S.step_start = time.perf_counter()
                if not S.steps:
                    _status("first forward")
                    _start_live(module)
            info = S.candidates.get(id(module))
            if info is None and len(S.candidates) < 16:
                if S.toggle:
                    _apply_toggle(module)
                info = S.candidates[id(module)] = {"ref": weakref.ref(module), "calls": 0, "step": -1}
            if info is not None:
                info["calls"] += 1
                if info["step"] != len(S.steps):  # once per step: the mode the step really ran in
                    info["step"] = len(S.steps)
                    info["training"] = bool(module.training)
                    info["eval_modules"] = sum(1 for m in module.modules() if not m.training)
                    info["shape"] = _first_tensor_shape(args)
        elif grad:
            if S.embed_shape is None and isinstance(module, torch.nn.Embedding) and args:
                a = args[0]
                if isinstance(a, torch.Tensor) and a.dim() >= 2:
                    S.embed_shape = list(a.shape)
            if S.autocast is None:
                for dev in ("cuda", "cpu"):
                    try:
                        if torch.is_autocast_enabled(dev):
                            S.autocast = {"device": dev, "dtype": str(torch.get_autocast_dtype(dev)).replace("torch.", "")}
                            break
                    except Exception:  # noqa: BLE001
                        continue
                else:
                    S.autocast = {}
    except Exception as exc:  # noqa: BLE001
        _note(f"internal: forward pre-hook: {type(exc).__name__}: {exc}")


def _post_hook(module, args, output) -> None:
    S.local.depth = max(0, _depth() - 1)


# --------------------------------------------------------------------------------------------------------
# memory


def _cuda() -> bool:
    return S.device == "cuda"


def _sync() -> None:
    if _cuda():
        try:
            import torch

            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001
            pass


def _make_live_mode():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveBytes(TorchDispatchMode):
        """Live storage bytes, CUDA-rounded: every storage an op returns (or that is tracked) until freed."""

        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, tuple[int, Any]] = {}
            self.total = 0
            self.peak = 0
            self.overall_peak = 0

        def _drop(self, key: int) -> None:
            nbytes, _ = self.live.pop(key, (0, None))
            self.total -= nbytes

        def track(self, *objs) -> None:
            for t in tree_leaves(objs):
                if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                    continue
                try:
                    st = t.untyped_storage()
                except Exception:  # noqa: BLE001
                    continue
                key = st._cdata
                if key in self.live:
                    continue
                nbytes = -(-st.nbytes() // CUDA_BLOCK) * CUDA_BLOCK
                self.live[key] = (nbytes, weakref.ref(st, lambda _r, k=key: self._drop(k)))
                self.total += nbytes
            self.peak = max(self.peak, self.total)
            self.overall_peak = max(self.overall_peak, self.total)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            try:
                self.track(out)
            except Exception:  # noqa: BLE001
                pass
            return out

    return LiveBytes()


def _start_live(module) -> None:
    if _cuda() or os.environ.get(ENV_CPU_MEMORY, "1") == "0" or S.live is not None:
        return
    try:
        mode = _make_live_mode()
        mode.track(list(module.parameters()), list(module.buffers()))
        mode.__enter__()
        S.live = mode
    except Exception as exc:  # noqa: BLE001
        _note(f"CPU memory not measured: {type(exc).__name__}: {exc}")


def _memory_now(device_index: int | None) -> dict:
    import torch

    if _cuda():
        idx = torch.cuda.current_device() if device_index is None else device_index
        return {"allocated": int(torch.cuda.max_memory_allocated(idx)), "reserved": int(torch.cuda.max_memory_reserved(idx))}
    if S.live is not None:
        return {"allocated": int(S.live.peak), "reserved": None}
    return {"allocated": None, "reserved": None}


def _reset_peaks(device_index: int | None) -> None:
    import torch

    if _cuda():
        idx = torch.cuda.current_device() if device_index is None else device_index
        torch.cuda.reset_peak_memory_stats(idx)
    elif S.live is not None:
        S.live.peak = S.live.total


def _nvml_used(device_index: int | None) -> tuple[int | None, str | None]:
    if not _cuda():
        return None, None
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        idx = torch.cuda.current_device() if device_index is None else device_index
        handle = None
        try:
            uuid = str(torch.cuda.get_device_properties(idx).uuid)
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
        except Exception:  # noqa: BLE001
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            nv = int(ids[idx]) if idx < len(ids) and ids[idx].isdigit() else idx
            handle = pynvml.nvmlDeviceGetHandleByIndex(nv)
        try:
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if p.pid == os.getpid() and p.usedGpuMemory:
                    return int(p.usedGpuMemory), "process"
        except Exception:  # noqa: BLE001
            pass
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used), "device"
    except Exception as exc:  # noqa: BLE001
        _note(f"NVML not read: {type(exc).__name__}: {exc}")
        return None, None


def _rss_peak() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------------------------------------
# the optimizer step


_DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _optimizer_name(opt, on_cuda: bool) -> str | None:
    cls = type(opt).__name__
    mod = type(opt).__module__
    d = getattr(opt, "defaults", {}) or {}
    if "bitsandbytes" in mod:
        if "8bit" in cls and "Adam" in cls:
            return "paged-adamw-8bit" if "Paged" in cls else "adamw-8bit"
        return None
    if cls in ("AdamW", "Adam"):
        if d.get("fused"):
            return "adamw-fused"
        if d.get("foreach") is True:
            return "adamw"
        if d.get("foreach") is False:
            return "adamw-loop"
        return "adamw" if on_cuda else "adamw-loop"  # torch picks foreach for CUDA tensors only
    if cls == "Adafactor":
        return "adafactor"
    if cls == "SGD" and not d.get("momentum"):
        return "sgd"
    return None


def _unique_params(params) -> list:
    seen: dict[int, Any] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


def _describe_step(opt) -> None:
    """What the first step ran with: the model, its config, batch, dtype, optimizer, checkpointing."""
    import torch

    opt_params = _unique_params(p for g in opt.param_groups for p in g["params"])
    opt_ids = {id(p) for p in opt_params}
    best, best_n = None, 0
    for info in S.candidates.values():
        m = info["ref"]()
        if m is None:
            continue
        n = sum(p.numel() for p in _unique_params(m.parameters()) if id(p) in opt_ids)
        if n > best_n:
            best, best_n = (m, info), n
    on_cuda = any(p.is_cuda for p in opt_params[:1])
    S.info["optimizer"] = {
        "class": f"{type(opt).__module__}.{type(opt).__name__}",
        "estimate_name": _optimizer_name(opt, on_cuda),
        "params": int(sum(p.numel() for p in opt_params)),
        "params_frozen": int(sum(p.numel() for p in opt_params if not p.requires_grad)),
        "param_groups": len(opt.param_groups),
    }
    if best is None:
        S.info["model"] = None
        S.info["params_total"] = S.info["optimizer"]["params"]
        S.info["params_trainable"] = int(sum(p.numel() for p in opt_params if p.requires_grad))
        _note("no module's forward was seen before the optimizer step; parameter counts are the optimizer's")
        return
    model, info = best
    params = _unique_params(model.parameters())
    S.info["params_total"] = int(sum(p.numel() for p in params))
    S.info["params_trainable"] = int(sum(p.numel() for p in params if p.requires_grad))
    S.info["train_mode"] = info["training"]
    S.info["modules_in_eval"] = info["eval_modules"]
    by_dtype: dict[str, int] = {}
    for p in params:
        k = str(p.dtype).replace("torch.", "")
        by_dtype[k] = by_dtype.get(k, 0) + p.numel()
    dtype = max(by_dtype, key=by_dtype.get) if by_dtype else None
    device = next((str(p.device) for p in params), None)
    shape = S.embed_shape or info["shape"]
    S.info["batch"] = {
        "shape": shape,
        "batch_size": int(shape[0]) if shape else None,
        "seq_len": int(shape[1]) if shape and len(shape) >= 2 else None,
        "forward_calls": info["calls"],
        "from": "embedding input" if S.embed_shape else ("first positional tensor" if info["shape"] else None),
    }
    if _cuda() and device is not None and not device.startswith("cuda"):
        _note(f"the model's parameters are on {device}, not on the GPU: GPU memory measures nothing "
              "(--device cpu measures live tensors on the CPU)")
    hf = _hf_model(model)
    mdesc: dict[str, Any] = {
        "class": type(model).__name__, "device": device, "dtype": _DTYPE_NAMES.get(dtype or "", dtype),
        "param_dtypes": by_dtype, "autocast": S.autocast or None,
    }
    if hf is not None:
        mdesc["hf_class"] = type(hf).__name__
        try:
            cfg = hf.config.to_dict()
            mdesc["config"] = json.loads(json.dumps(cfg, default=str))
        except Exception as exc:  # noqa: BLE001
            _note(f"model config not serialisable: {exc}")
        mdesc["attn"] = getattr(hf.config, "_attn_implementation", None)
        layers, flags = 0, []
        try:
            from transformers.modeling_layers import GradientCheckpointingLayer
        except Exception:  # noqa: BLE001
            GradientCheckpointingLayer = None  # noqa: N806
        for m in hf.modules():
            if GradientCheckpointingLayer is not None and isinstance(m, GradientCheckpointingLayer):
                layers += 1
                flags.append(bool(getattr(m, "gradient_checkpointing", False)))
        mdesc["hf_checkpointing"] = {"layers": layers, "enabled": sum(flags), "plan": _plan_of(flags)}
        if sum(flags) and not info["training"]:
            n = S.calls["reentrant"] + S.calls["non_reentrant"]
            S.warnings[("ckpt-doctor", "eval")] = {
                "code": "CKPT208", "category": "ckpt-doctor", "kind": "observation", "count": 1,
                "message": f"checkpointing is enabled on {sum(flags)} of {layers} layers, but the step ran with the "
                           f"model in eval mode: transformers checkpoints only in training mode ({n} calls)",
                "source": None, "user_site": None, "origin": None, "step": 1,
                "why": "the model was in eval() mode during the training step"}
        peft_cfg = getattr(model, "peft_config", None)
        if isinstance(peft_cfg, dict) and peft_cfg:
            c = next(iter(peft_cfg.values()))
            t = getattr(c, "target_modules", None)
            mdesc["lora"] = {"r": getattr(c, "r", None),
                             "targets": sorted(t) if isinstance(t, (set, list, tuple)) else t}
    try:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            mdesc["world_size"] = torch.distributed.get_world_size()
    except Exception:  # noqa: BLE001
        pass
    S.info["model"] = mdesc


def _plan_of(flags: list[bool]) -> str | None:
    if not flags:
        return None
    if all(flags):
        return "full"
    if not any(flags):
        return "none"
    for n in range(2, len(flags) + 1):
        if flags == [i % n == 0 for i in range(len(flags))]:
            return f"every_{n}"
    return "partial"


def _device_index(opt) -> int | None:
    for g in opt.param_groups:
        for p in g["params"]:
            if p.is_cuda:
                return p.device.index
    return None


def _step_hook(opt, args, kwargs) -> None:
    if S.finished:
        return
    try:
        _sync()
        end = time.perf_counter()
        idx = _device_index(opt) if _cuda() else None
        mem = _memory_now(idx)
        step = {
            "seconds": round(end - (S.step_start or end), 6),
            "peak_allocated_bytes": mem["allocated"], "peak_reserved_bytes": mem["reserved"],
            "optimizer": type(opt).__name__,
        }
        if not S.steps:
            _describe_step(opt)
            S.info["device_index"] = idx
        S.steps.append(step)
        S.step_start = None
        _status(f"step {len(S.steps)} done")
        if len(S.steps) >= S.steps_wanted:
            S.info["nvml_used_bytes"], S.info["nvml_scope"] = _nvml_used(idx)
            _finish("ok")
        _reset_peaks(idx)
        for info in S.candidates.values():
            info["calls"] = 0
    except Exception as exc:  # noqa: BLE001
        _note(f"internal: optimizer step hook: {type(exc).__name__}: {exc}")
        if len(S.steps) >= S.steps_wanted:
            _finish("ok")


# --------------------------------------------------------------------------------------------------------
# results


def _result(status: str, error: dict | None = None) -> dict:
    overall_alloc = overall_res = None
    memory_source = None
    try:
        import torch

        if _cuda() and torch.cuda.is_available() and torch.cuda.is_initialized():
            idx = S.info.get("device_index")
            idx = torch.cuda.current_device() if idx is None else idx
            overall_alloc = max([s["peak_allocated_bytes"] or 0 for s in S.steps]
                                + [int(torch.cuda.max_memory_allocated(idx))])
            overall_res = max([s["peak_reserved_bytes"] or 0 for s in S.steps]
                              + [int(torch.cuda.max_memory_reserved(idx))])
            memory_source = "cuda"
        elif S.live is not None:
            overall_alloc = int(S.live.overall_peak)
            memory_source = "cpu-live-tensors"
    except Exception:  # noqa: BLE001
        pass
    device = {"type": S.device}
    try:
        import torch

        device["torch"] = torch.__version__
        if _cuda() and torch.cuda.is_available():
            idx = S.info.get("device_index")
            idx = torch.cuda.current_device() if idx is None else idx
            device.update(index=idx, name=torch.cuda.get_device_name(idx),
                          total_bytes=int(torch.cuda.get_device_properties(idx).total_memory))
    except Exception:  # noqa: BLE001
        pass
    sites = [
        {"file": f, "line": line, "mode": mode, "origin": origin, "implicit_use_reentrant": implicit, "calls": n}
        for (f, line, mode, origin, implicit), n in sorted(S.sites.items(), key=lambda kv: -kv[1])
    ][:20]
    return {
        "version": RESULT_VERSION,
        "status": status,
        "device": device,
        "steps_run": len(S.steps),
        "steps": S.steps,
        "peak_allocated_bytes": overall_alloc,
        "peak_reserved_bytes": overall_res,
        "memory_source": memory_source,
        "nvml_used_bytes": S.info.get("nvml_used_bytes"),
        "nvml_scope": S.info.get("nvml_scope"),
        "cpu_peak_rss_bytes": _rss_peak(),
        "params_total": S.info.get("params_total"),
        "params_trainable": S.info.get("params_trainable"),
        "optimizer": S.info.get("optimizer"),
        "model": S.info.get("model"),
        "batch": S.info.get("batch"),
        "train_mode": S.info.get("train_mode"),
        "modules_in_eval": S.info.get("modules_in_eval"),
        "checkpoint_calls": dict(S.calls),
        "checkpoint_sites": sites,
        "warnings": list(S.warnings.values()),
        "toggle": S.toggle_info,
        "error": error,
        "notes": S.notes,
        "elapsed_seconds": round(S.elapsed(), 3),
    }


def _write(result: dict) -> None:
    if not S.result_path:
        return
    tmp = S.result_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, default=str)
    os.replace(tmp, S.result_path)


def _finish(status: str, error: dict | None = None, code: int = 0) -> None:
    """Write the result and leave now, without running the rest of the script."""
    S.finished = True
    try:
        _write(_result(status, error))
    finally:
        _status("done")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _error_dict(exc: BaseException) -> dict:
    from ckpt_doctor.verify.codes import code_for

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and (
            tb.tb_frame.f_code.co_filename.startswith("<frozen")
            or os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename)) == _THIS_DIR
            or os.path.basename(tb.tb_frame.f_code.co_filename) == "runpy.py"):
        tb = tb.tb_next  # start at the script's own frame, not the bootstrap's
    lines = traceback.format_exception(type(exc), exc, tb)
    full = "".join(lines).rstrip("\n").splitlines()
    code, why = code_for(f"{exc}")
    return {"kind": "exception", "type": type(exc).__name__, "message": str(exc)[:4000],
            "traceback_tail": full[-25:], "code": code, "why": why, "full": full}


# --------------------------------------------------------------------------------------------------------
# main


def _check_device() -> None:
    import torch

    if S.device != "cuda":
        return
    if torch.cuda.is_available():
        return
    looked = {
        "torch": torch.__version__,
        "torch.version.cuda": torch.version.cuda,
        "torch.cuda.is_available()": False,
        "torch.cuda.device_count()": _safe(torch.cuda.device_count),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "/proc/driver/nvidia/version": os.path.exists("/proc/driver/nvidia/version"),
        "/dev/nvidia0": os.path.exists("/dev/nvidia0"),
    }
    if torch.version.cuda is None:
        why = f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    elif not looked["/proc/driver/nvidia/version"]:
        why = "no NVIDIA driver is loaded (/proc/driver/nvidia/version is missing)"
    elif os.environ.get("CUDA_VISIBLE_DEVICES") is not None and not os.environ["CUDA_VISIBLE_DEVICES"].strip():
        why = "CUDA_VISIBLE_DEVICES is empty"
    else:
        why = "torch.cuda.is_available() is False"
    _finish("no_cuda", {"kind": "no_cuda", "message": why, "looked_for": looked}, EXIT_NO_CUDA)


def _safe(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def install() -> None:
    """Everything but running the script (also used by tests)."""
    import torch  # noqa: F401
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
    from torch.optim.optimizer import register_optimizer_step_post_hook

    import ckpt_doctor.verify.codes  # noqa: F401 - imported now, not inside the script's first warning

    _install_warning_capture()
    _install_checkpoint_wrapper()
    register_module_forward_pre_hook(_pre_hook)
    register_module_forward_hook(_post_hook, always_call=True)
    register_optimizer_step_post_hook(_step_hook)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    module = None
    if argv and argv[0] == "--module":
        if len(argv) < 2:
            sys.exit("usage: python -m ckpt_doctor.verify.bootstrap (SCRIPT | --module NAME) [ARGS...]")
        module, args = argv[1], argv[2:]
    elif argv:
        script, args = argv[0], argv[1:]
    else:
        sys.exit("usage: python -m ckpt_doctor.verify.bootstrap (SCRIPT | --module NAME) [ARGS...]")
    _status("importing torch")
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        _finish("error", {"kind": "no_torch", "message": f"torch cannot be imported: {exc}"}, EXIT_NO_TORCH)
    _check_device()
    install()
    _status("running the script")
    try:
        if module is not None:
            sys.argv = [module, *args]
            sys.path[0] = os.getcwd()
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [script, *args]
            sys.path[0] = os.path.dirname(os.path.abspath(script))
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if S.steps:
            _finish("ok")
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code:
            _finish("error", {"kind": "exit", "type": "SystemExit", "message": f"the script exited with status {exc.code}",
                              "traceback_tail": [], "code": None, "why": None}, 1)
        _finish("no_step", None, 0)
    except BaseException as exc:  # noqa: BLE001 - the script's own failure, reported to the parent
        err = _error_dict(exc)
        sys.stderr.write("\n".join(err["full"]) + "\n")
        del err["full"]
        _finish("error", err, 1)
    _finish("ok" if S.steps else "no_step")


if __name__ == "__main__":
    main()
