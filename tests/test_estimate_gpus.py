"""GPU names -> memory and budget strings -> bytes (ckpt_doctor.estimate.gpus)."""

from __future__ import annotations

import pytest

from ckpt_doctor.estimate.gpus import (
    DEFAULT_BUDGET_BYTES,
    GPU_MEMORY_GIB,
    BudgetError,
    gpu_memory_bytes,
    known_gpus,
    parse_budget,
)

GiB = 1 << 30


@pytest.mark.parametrize(("name", "gib"), [
    ("A100-80GB", 80), ("a100 80gb", 80), ("A100-40GB", 40), ("a100-40g", 40), ("A100", 80),
    ("A100-SXM4-80GB", 80), ("NVIDIA A100-SXM4-40GB", 40), ("H100", 80), ("NVIDIA H100 PCIe", 80),
    ("H100-80GB", 80), ("H200", 141), ("RTX4090", 24), ("rtx 4090", 24), ("NVIDIA GeForce RTX 4090", 24),
    ("GeForce RTX 3090", 24), ("4090", 24), ("RTX3080", 10), ("L40S", 48), ("l4", 24), ("T4", 16),
    ("Tesla V100-SXM2-16GB", 16), ("V100-32GB", 32), ("A10G", 24), ("MI300X", 192), ("RTX-A6000", 48),
])
def test_gpu_names(name, gib):
    assert gpu_memory_bytes(name) == gib * GiB


@pytest.mark.parametrize("name", ["", "   ", "RTX9999", "A100-81GB", "banana"])
def test_unknown_gpu_names(name):
    assert gpu_memory_bytes(name) is None


def test_table_is_consistent():
    assert len(known_gpus()) == len(GPU_MEMORY_GIB) >= 40
    for name in known_gpus():
        assert gpu_memory_bytes(name) == int(GPU_MEMORY_GIB[name] * GiB), name
    assert DEFAULT_BUDGET_BYTES == 24 * GiB


@pytest.mark.parametrize(("text", "nbytes"), [
    ("80GiB", 80 * GiB), ("80 GiB", 80 * GiB), ("80gib", 80 * GiB), ("24GB", 24 * 10**9), ("24gb", 24 * 10**9),
    ("24000MiB", 24000 * 2**20), ("24000MB", 24 * 10**9), ("23.5GiB", int(23.5 * GiB)), ("16G", 16 * 10**9),
    ("1TiB", 2**40), ("512KiB", 512 * 1024), ("24", 24 * GiB), (24, 24 * GiB), (8_000_000_000, 8_000_000_000),
    ("8000000000", 8_000_000_000), ("1048576B", 2**20),
])
def test_parse_budget(text, nbytes):
    assert parse_budget(text) == nbytes


@pytest.mark.parametrize("text", ["", "GiB", "eighty GiB", "80 GiBs", "80XB", "-1GiB", "0GiB", "1e3GiB", True])
def test_parse_budget_rejects(text):
    with pytest.raises(BudgetError):
        parse_budget(text)
