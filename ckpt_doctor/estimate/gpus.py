"""GPU names -> memory, and budget strings ("80GiB", "24GB", "24000MiB") -> bytes.  No torch.

Memory sizes are what ``nvidia-smi`` reports as the card's total (vendor datasheets; a "24 GB" card has
24 GiB of memory as the driver counts it, e.g. an RTX 4090 shows 24564 MiB).  We use the marketing
number in GiB, which is within 1 % of what the driver reports.
"""

from __future__ import annotations

import os
import sys

import re

__all__ = ["DEFAULT_BUDGET_BYTES", "GPU_MEMORY_GIB", "BudgetError", "gpu_memory_bytes", "known_gpus", "parse_budget"]

GiB = 1 << 30

DEFAULT_BUDGET_BYTES = 24 * GiB
"""Used when no budget is given anywhere: a 24 GB consumer card (RTX 3090 / 4090)."""

# canonical name -> GiB
GPU_MEMORY_GIB: dict[str, float] = {
    # data centre
    "H200": 141, "H100-80GB": 80, "H100-94GB": 94, "H100-NVL": 94, "H800": 80, "H20": 96,
    "GH200": 96, "B200": 192, "B100": 192, "GB200": 192,
    "A100-80GB": 80, "A100-40GB": 40, "A800-80GB": 80, "A30": 24, "A10": 24, "A10G": 24, "A16": 16, "A2": 16,
    "L40S": 48, "L40": 48, "L4": 24, "L20": 48,
    "V100-32GB": 32, "V100-16GB": 16, "P100-16GB": 16, "P100-12GB": 12, "T4": 16, "K80": 12, "P40": 24,
    "MI300X": 192, "MI325X": 256, "MI250X": 128, "MI250": 128, "MI210": 64, "MI100": 32,
    # workstation
    "RTX-6000-ADA": 48, "RTX-A6000": 48, "RTX-A5000": 24, "RTX-A4000": 16, "RTX-PRO-6000": 96, "RTX-5000-ADA": 32,
    # consumer
    "RTX5090": 32, "RTX5080": 16, "RTX5070TI": 16, "RTX5070": 12,
    "RTX4090": 24, "RTX4080": 16, "RTX4070TI": 12, "RTX4070": 12, "RTX4060TI": 16, "RTX4060": 8,
    "RTX3090TI": 24, "RTX3090": 24, "RTX3080TI": 12, "RTX3080": 10, "RTX3070": 8, "RTX3060": 12,
    "RTX2080TI": 11, "RTX2080": 8, "GTX1080TI": 11, "TITAN-RTX": 24,
    # Apple / others (unified memory, for completeness)
    "M2-ULTRA": 192, "M3-MAX": 128,
}

# bare names that mean one size (the larger, most common, variant)
_ALIASES: dict[str, str] = {
    "H100": "H100-80GB", "H100-SXM": "H100-80GB", "H100-PCIE": "H100-80GB", "H100SXM": "H100-80GB",
    "A100": "A100-80GB", "A800": "A800-80GB", "V100": "V100-16GB", "P100": "P100-16GB",
    "A6000": "RTX-A6000", "A5000": "RTX-A5000", "A4000": "RTX-A4000", "6000ADA": "RTX-6000-ADA",
    "RTX6000ADA": "RTX-6000-ADA", "TITANRTX": "TITAN-RTX", "3090": "RTX3090", "4090": "RTX4090", "5090": "RTX5090",
    "3080": "RTX3080", "4080": "RTX4080",
}


class BudgetError(ValueError):
    """A budget string or GPU name that cannot be read."""


def _key(name: str) -> str:
    s = name.strip().upper()
    s = re.sub(r"^(NVIDIA|AMD|GEFORCE|TESLA|QUADRO|INSTINCT)[\s_-]+", "", s)
    s = re.sub(r"^(GEFORCE|TESLA)[\s_-]+", "", s)
    s = s.replace("_", "-").replace(" ", "-")
    s = re.sub(r"(\d+)\s*-?G(I?B)?$", r"\1GB", s)  # "80G", "80GiB", "80 GB" -> 80GB
    s = s.replace("GIB", "GB")
    return s


_CANON = {_key(k).replace("-", ""): k for k in GPU_MEMORY_GIB}
_CANON.update({_key(k).replace("-", ""): v for k, v in _ALIASES.items()})


def known_gpus() -> list[str]:
    return sorted(GPU_MEMORY_GIB)


def largest_gpu() -> tuple[str, int]:
    """The GPU with the most memory in the table, and its bytes: a step above it fits no single card made."""
    name = max(GPU_MEMORY_GIB, key=lambda k: GPU_MEMORY_GIB[k])
    return name, int(GPU_MEMORY_GIB[name] * GiB)


def gpu_memory_bytes(name: str) -> int | None:
    """Memory of a GPU given by name (``A100-80GB``, ``a100 80gb``, ``NVIDIA H100``, ``RTX4090``,
    ``rtx 4090``, ``L40S``); ``None`` when unknown."""
    if not name or not name.strip():
        return None
    k = _key(name).replace("-", "")
    canon = _CANON.get(k)
    if canon is None:
        # "A100-SXM4-80GB", "H100 PCIe 80GB": strip the form factor
        k2 = re.sub(r"(SXM\d?|PCIE|NVL|HBM\d?E?)", "", k)
        canon = _CANON.get(k2)
    if canon is None:
        return None
    canon = _ALIASES.get(canon, canon)
    return int(GPU_MEMORY_GIB[canon] * GiB)


_UNITS = {
    "": None, "B": 1,
    "K": 1000, "KB": 1000, "KIB": 1 << 10,
    "M": 1000**2, "MB": 1000**2, "MIB": 1 << 20,
    "G": 1000**3, "GB": 1000**3, "GIB": 1 << 30,
    "T": 1000**4, "TB": 1000**4, "TIB": 1 << 40,
}


def parse_budget(text: str | float) -> int:
    """Bytes from a memory size: ``"80GiB"``, ``"24GB"``, ``"24000MiB"``, ``"23.5 GiB"``, ``"16g"``, or a
    plain number of bytes.  ``GB``/``MB`` are decimal (10^9, 10^6), ``GiB``/``MiB`` binary; a bare ``G``
    or ``M`` is decimal too.  A plain number below 4096 is read as GiB (``--gpu-memory 24``)."""
    if isinstance(text, bool):
        raise BudgetError(f"not a memory size: {text!r}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        if not m:
            raise BudgetError(f"not a memory size: {text!r} (use e.g. 80GiB, 24GB or 24000MiB)")
        value, unit = float(m.group(1)), m.group(2).upper()
    if unit not in _UNITS:
        raise BudgetError(f"unknown unit {unit!r} in {text!r} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    mult = _UNITS[unit]
    if mult is None:
        mult = 1 << 30 if value < 4096 else 1
    n = int(round(value * mult))
    if n <= 0:
        raise BudgetError(f"memory size must be positive: {text!r}")
    return n


def configured_budget(gpu_memory: str | None, where: str = "gpu-memory") -> tuple[int, str] | None:
    """The budget when no flag names one: `gpu-memory` from the configuration, else the first GPU's total
    memory read from NVML on a GPU machine, else None (the caller's default applies). One resolution for
    `check` (CKPT4xx) and `estimate`."""
    if gpu_memory:
        return parse_budget(gpu_memory), where
    total = nvml_total()
    return (total, "NVML (GPU 0)") if total else None


def nvml_total() -> int | None:
    """GPU 0's total memory from NVML (nvidia-ml-py, part of the [verify] extra; imports no torch), None when
    there is no library, driver or device."""
    if sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia/version"):
        return None  # no NVIDIA driver loaded: no need to load NVML to learn that
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no device
        return None
