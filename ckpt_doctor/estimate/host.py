"""Host (CPU) memory of the plans that offload: the activations the `offload` checkpointing plan keeps on the host,
and the optimizer states / parameters DeepSpeed ZeRO moves there (`offload_optimizer` / `offload_param` with
`device: cpu`), split into pinned (page-locked: the kernel can neither swap nor reclaim it) and pageable bytes, per
GPU process and per node.  No torch.

Sizes per trainable parameter of a rank's partition (n = trainable / data-parallel ranks), DeepSpeed v0.19.5:

- ZeRO-1/2 (`runtime/zero/stage_1_and_2.py`, `DeepSpeedZeroOptimizer.__init__`): the fp32 master partition (4 n),
  a 16-bit copy for the copy back (2 n) and the fp32 gradient partition (4 n) are `pin_memory`-ed when
  `cpu_offload_pin_memory`; the Adam moments are `torch.zeros_like(p.data)` in `ops/adam/cpu_adam.py`
  (`DeepSpeedCPUAdam.step`): 8 n, pageable.
- ZeRO-3 (`runtime/zero/stage3.py`): the fp32 master partition is `.to(cpu).clone()` (`_create_fp32_partitions`,
  4 n, pageable), the gradient buffer is pinned with `offload_optimizer_pin_memory`
  (`grad_partitions_flat_buffer`, 4 n), the Adam moments as above (8 n); `offload_param` keeps each rank's 16-bit
  parameter partition on the host (`runtime/zero/partition_parameters.py`, pinned with `offload_param.pin_memory`):
  2 bytes per parameter, frozen ones included.
- `pin_memory` defaults to True from DeepSpeed 0.19.5 (`runtime/zero/offload_config.py`, deepspeedai/DeepSpeed#8207)
  and to False before.

The `offload` checkpointing plan keeps each layer's input on the host (`torch.autograd.graph.save_on_cpu`, whose
`pin_memory` defaults to False in torch 2.13.0): layers x batch x sequence x hidden x the weights' bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .memory import DTYPE_BYTES, TrainingSetup

__all__ = ["HostMemory", "HostTerm", "Offload", "host_memory", "DEEPSPEED_PIN_DEFAULT_SINCE"]

DEEPSPEED_PIN_DEFAULT_SINCE = "0.19.5"  # offload_config.py: `pin_memory: bool = True` (False up to 0.19.4)
_ADAM = ("adamw", "adamw-fused", "adamw-loop")  # DeepSpeedCPUAdam keeps two fp32 moments


@dataclass(frozen=True)
class Offload:
    """What a DeepSpeed config asks: `offload_optimizer` / `offload_param` on the CPU, and `pin_memory` (None: not
    stated, DeepSpeed's default applies)."""

    optimizer: bool = False
    param: bool = False
    optimizer_pin: bool | None = None
    param_pin: bool | None = None
    where: str = ""  # "ds_z3_offload.json (named at line 12)"


@dataclass(frozen=True)
class HostTerm:
    name: str
    bytes_per_process: int
    pinned: bool
    source: str

    def to_dict(self, processes: int) -> dict[str, Any]:
        return {"name": self.name, "bytes_per_process": self.bytes_per_process,
                "bytes_per_node": self.bytes_per_process * processes, "pinned": self.pinned, "source": self.source}


@dataclass
class HostMemory:
    processes_per_node: int
    terms: list[HostTerm] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def total(self, pinned: bool) -> int:
        return sum(t.bytes_per_process for t in self.terms if t.pinned is pinned) * self.processes_per_node

    @property
    def pinned_bytes(self) -> int:
        return self.total(True)

    @property
    def pageable_bytes(self) -> int:
        return self.total(False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "processes_per_node": self.processes_per_node,
            "pinned_bytes_per_node": self.pinned_bytes,
            "pageable_bytes_per_node": self.pageable_bytes,
            "terms": [t.to_dict(self.processes_per_node) for t in self.terms],
            "notes": list(self.notes),
        }


def activation_offload_bytes(setup: TrainingSetup) -> int:
    """Per GPU process: the layer inputs the `offload` plan saves on the host for the backward."""
    a = setup.arch
    return a.num_layers * setup.batch_size * setup.seq_len * a.hidden_size * DTYPE_BYTES[setup.dtype]


def host_memory(setup: TrainingSetup, params_total: int, params_trainable: int, offload: Offload | None = None,
                gpus_per_node: int | None = None, deepspeed_pins_by_default: bool | None = True) -> dict[str, HostMemory]:
    """Host memory of each offloading plan of `setup`: `"offload"` (the checkpointing plan that moves saved layer
    inputs to the host) always, `"deepspeed"` when `offload` asks DeepSpeed to offload. `gpus_per_node`: processes
    on one node (default: all of `setup.gpus`); `deepspeed_pins_by_default`: DeepSpeed's `pin_memory` default on the
    target release (True from 0.19.5, False before, None when not known: counted as pinned, and said)."""
    per_node = max(1, min(gpus_per_node or setup.gpus, setup.gpus))
    out = {"offload": HostMemory(per_node, [HostTerm(
        "saved layer inputs (checkpointing plan `offload`)", activation_offload_bytes(setup), False,
        "torch.autograd.graph.save_on_cpu(pin_memory=False) by default (torch 2.13.0); pinned with pin_memory=True")])}
    if offload is None or not (offload.optimizer or offload.param):
        return out
    dp = max(1, setup.gpus)
    n = -(-params_trainable // dp)  # a rank's partition of the trainable parameters
    ds = HostMemory(per_node)
    pin_opt = offload.optimizer_pin if offload.optimizer_pin is not None else deepspeed_pins_by_default
    pin_par = offload.param_pin if offload.param_pin is not None else deepspeed_pins_by_default
    for on, block, stated in ((offload.optimizer, "offload_optimizer", offload.optimizer_pin), (offload.param, "offload_param", offload.param_pin)):
        if on and stated is None:
            known = {True: f"True on the DeepSpeed the project targets (>= {DEEPSPEED_PIN_DEFAULT_SINCE})",
                     False: f"False on the DeepSpeed the project targets (< {DEEPSPEED_PIN_DEFAULT_SINCE})",
                     None: f"not known: counted as pinned (True from {DEEPSPEED_PIN_DEFAULT_SINCE}, False before)"}
            ds.notes.append(f"{block}.pin_memory is not stated; DeepSpeed's default is {known[deepspeed_pins_by_default]}")
    pin_opt, pin_par = pin_opt is not False, pin_par is not False
    moments = 8 * n if setup.optimizer in _ADAM else 0
    if offload.optimizer and setup.zero in (0, 1, 2):
        ds.terms.append(HostTerm("fp32 master weights, fp32 gradients, 16-bit copy (ZeRO-1/2 offload_optimizer)", 10 * n, pin_opt,
                                 "deepspeed 0.19.5 runtime/zero/stage_1_and_2.py: pinned with offload_optimizer.pin_memory"))
    elif offload.optimizer:
        ds.terms.append(HostTerm("fp32 gradients (ZeRO-3 offload_optimizer)", 4 * n, pin_opt,
                                 "deepspeed 0.19.5 runtime/zero/stage3.py grad_partitions_flat_buffer: pinned with offload_optimizer.pin_memory"))
        ds.terms.append(HostTerm("fp32 master weights (ZeRO-3 offload_optimizer)", 4 * n, False,
                                 "deepspeed 0.19.5 runtime/zero/stage3.py _create_fp32_partitions: .to(cpu).clone(), not pinned"))
    if offload.optimizer and moments:
        ds.terms.append(HostTerm("Adam moments (DeepSpeedCPUAdam)", moments, False,
                                 "deepspeed 0.19.5 ops/adam/cpu_adam.py: torch.zeros_like(p.data), not pinned"))
    if offload.param and setup.zero == 3:
        ds.terms.append(HostTerm("16-bit parameter partitions (ZeRO-3 offload_param)", 2 * -(-params_total // dp), pin_par,
                                 "deepspeed 0.19.5 runtime/zero/partition_parameters.py: pinned with offload_param.pin_memory"))
    elif offload.param:
        ds.notes.append("offload_param applies to ZeRO-3 only: ignored at this stage")
    if offload.where:
        ds.notes.append(f"offload read from {offload.where}")
    ds.notes.append("DeepSpeed's own estimator (estimate_zero2/zero3_model_states_mem_needs) adds a 1.5x buffer factor on top")
    out["deepspeed"] = ds
    return out


def offload_of(analysis) -> tuple[Offload | None, bool | None]:
    """The DeepSpeed offload an analysed script or config asks for (the config its ZeRO stage comes from), and whether
    the DeepSpeed release it targets pins by default (None: not known)."""
    training = getattr(analysis, "training", None)
    stage = getattr(training, "zero_stage", None) if training is not None else None
    versions = getattr(analysis, "versions", None)
    pins = versions.at_least("deepspeed", DEEPSPEED_PIN_DEFAULT_SINCE) if versions is not None else None
    if not stage:
        return None, pins
    config = stage[1]
    opt, par = config.offload("offload_optimizer"), config.offload("offload_param")
    if opt is None and par is None:
        return None, pins
    return Offload(optimizer=opt is not None, param=par is not None, optimizer_pin=opt[1] if opt else None,
                   param_pin=par[1] if par else None, where=config.where), pins
