"""The caching allocator's replay (estimate/allocator.py): its rules, one by one, and the reserved memory it gives
against the H200 measurements in bench/results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ckpt_doctor.estimate.allocator import LARGE_BUFFER, MiB, CachingAllocator, round_size, segment_size
from ckpt_doctor.estimate.memory import TrainingSetup, estimate
from ckpt_doctor.estimate.registry import resolve

ROOT = Path(__file__).resolve().parents[1]


def test_sizes_round_to_512_bytes_and_segments_follow_the_pool():
    assert round_size(1) == 512
    assert round_size(513) == 1024
    assert segment_size(1 * MiB) == 2 * MiB            # small pool: 2 MiB segments
    assert segment_size(1 * MiB + 512) == LARGE_BUFFER  # 1-10 MiB: a 20 MiB segment
    assert segment_size(10 * MiB + 1) == 12 * MiB       # larger: its own size, in 2 MiB steps


def test_a_freed_block_is_reused_and_small_requests_share_a_segment():
    a = CachingAllocator()
    b = a.malloc(100 * MiB)
    a.free(b)
    a.malloc(60 * MiB)  # best fit: the cached 100 MiB block, split (the rest is over 1 MiB)
    assert a.reserved == 100 * MiB
    a.malloc(40 * MiB)  # the split-off rest
    assert a.reserved == 100 * MiB
    small = [a.malloc(1000) for _ in range(100)]
    assert a.reserved == 100 * MiB + 2 * MiB
    assert all(not s.free for s in small)


def test_a_large_block_is_not_split_for_less_than_one_mib():
    a = CachingAllocator()
    a.free(a.malloc(20 * MiB + 512 * 1024))  # a segment of 22 MiB
    b = a.malloc(21 * MiB + 512 * 1024)        # fits with 0.5 MiB over: taken whole, not split
    assert b.size == 22 * MiB
    assert a.allocated == 22 * MiB


def test_freed_neighbours_merge_and_segments_never_do():
    a = CachingAllocator()
    x, y = a.malloc(50 * MiB), a.malloc(50 * MiB)  # two segments
    a.free(x)
    a.free(y)
    a.malloc(90 * MiB)  # no single cached block fits: a third segment
    assert a.reserved == 50 * MiB + 50 * MiB + 90 * MiB
    c = CachingAllocator()
    c.free(c.malloc(100 * MiB))
    p, q = c.malloc(50 * MiB), c.malloc(50 * MiB)  # both from the one segment
    c.free(p)
    c.free(q)  # merged again into the whole segment
    c.malloc(100 * MiB)
    assert c.reserved == 100 * MiB


def test_holes_cost_new_segments_and_an_expandable_segment_merges_them():
    def run(expandable: bool) -> CachingAllocator:
        a = CachingAllocator(expandable_segments=expandable)
        blocks = [a.malloc(30 * MiB) for _ in range(10)]
        for b in blocks[:4]:
            a.free(b)  # 120 MiB free, in four separate segments unless they are one
        a.malloc(100 * MiB)
        return a

    plain, expandable = run(False), run(True)
    assert plain.peak_allocated == expandable.peak_allocated == 300 * MiB
    assert plain.peak_reserved == 400 * MiB  # no 30 MiB hole fits: a new segment
    assert expandable.peak_reserved == 300 * MiB  # the four holes are one free block of the one segment


def test_an_expandable_segment_grows_from_its_free_end():
    a = CachingAllocator(expandable_segments=True)
    x = a.malloc(30 * MiB)  # maps 40 MiB: 10 MiB free at the end
    assert a.reserved == 40 * MiB
    a.malloc(25 * MiB)  # the 10 MiB free end plus one more 20 MiB page
    assert a.reserved == 60 * MiB
    a.free(x)
    a.malloc(30 * MiB)  # the freed block at the start
    assert a.reserved == 60 * MiB


def test_segments_in_use_are_what_a_full_card_cannot_give_back():
    a = CachingAllocator()
    x = a.malloc(100 * MiB)
    y = a.malloc(100 * MiB)
    a.free(x)  # a whole free segment: given back before a request fails
    assert (a.reserved, a.in_use) == (200 * MiB, 100 * MiB)
    a.malloc(10 * MiB)  # the cached segment again (split): in use
    assert a.in_use == 200 * MiB
    a.free(y)
    assert a.in_use == 100 * MiB
    assert a.peak_in_use == 200 * MiB


def test_the_estimate_reserves_what_the_replay_says_per_plan():
    llama = resolve("meta-llama/Llama-3.2-1B")
    none = estimate(TrainingSetup(llama, batch_size=4, seq_len=1024, checkpointing="none"))
    full = estimate(TrainingSetup(llama, batch_size=4, seq_len=1024, checkpointing="full"))
    for est in (none, full):
        needed = est.peak_bytes_nvidia_smi - est.cuda_context_bytes
        assert est.peak_bytes < needed <= est.peak_bytes_reserved
        assert needed % (2 * MiB) == 0 and est.peak_bytes_reserved % (2 * MiB) == 0
    # checkpointing frees the saved activations in a different order: its cache is a larger share of the peak
    assert full.peak_bytes_reserved / full.peak_bytes > none.peak_bytes_reserved / none.peak_bytes
    # on a card with room to spare the cache keeps segments that a full card gets back
    assert full.peak_bytes_nvidia_smi - full.cuda_context_bytes < full.peak_bytes_reserved
    expandable = estimate(TrainingSetup(llama, batch_size=4, seq_len=1024, checkpointing="full", expandable_segments=True))
    assert expandable.peak_bytes == full.peak_bytes
    assert expandable.peak_bytes_reserved < full.peak_bytes_reserved
    assert expandable.peak_bytes_nvidia_smi < full.peak_bytes_nvidia_smi


def test_zero_makes_the_optimizer_state_as_a_partition_never_whole():
    """ZeRO and FSDP make each rank's optimizer state for its partition only (deepspeed stage_1_and_2.py /
    stage3.py ``initialize_optimizer_states`` step the fp32 partition; FSDP's optimizer sees the local shard).  The
    walk makes each state tensor whole and then its shard; replaying the whole ones made the allocator's own peak the
    whole 8-bit state of a 70B model (150 GiB), and its placement left 33 GiB of segments in use at the step's peak."""
    arch = resolve("meta-llama/Llama-3.1-70B")
    for opt in ("adamw", "adamw-8bit"):
        est = estimate(TrainingSetup(arch, batch_size=1, seq_len=512, gpus=8, zero=3, checkpointing="full", optimizer=opt))
        kept = est.peak_bytes_nvidia_smi - est.cuda_context_bytes
        assert est.peak_bytes < kept < 1.05 * est.peak_bytes, (opt, kept / est.peak_bytes)


def _bench():
    spec = importlib.util.spec_from_file_location("estimate_reserved", ROOT / "bench" / "estimate_reserved.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family,limit", [("meta-llama/Llama-3.2-1B", 5.0), ("Qwen/Qwen2.5-0.5B", 5.0),
                                          ("openai-community/gpt2", 25.0)])
def test_the_replay_of_the_measured_runs_matches_their_reserved_memory(family, limit):
    """bench/results/gpu_verify_NVIDIA_H200*.json: 20 synthetic steps on an H200 (torch 2.11), replayed with their own
    history (weights made in fp32, cast to bf16, one run also emptying the cache).  GPT-2 is replayed too high (its
    CUDA step frees its fp32 logits in an order the closed form does not follow): over, never more than 1 % under, by up to 20 %."""
    rows = [r for r in _bench().rows(_bench().RESULTS) if r["model"] == family]
    assert len(rows) >= 4
    for r in rows:
        assert -limit < r["replayed_pct"] < limit, r
        if family == "openai-community/gpt2":
            assert r["replayed_pct"] > -1.0, r


# -- the setting: where a run turns expandable segments on ----------------------------------------------------------

_SCRIPT = """\
import os
{line}
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B", torch_dtype=torch.bfloat16)
Trainer(model=model, args=TrainingArguments("out", per_device_train_batch_size=4, bf16=True)).train()
"""


def _settings(tmp_path, line: str = "", launcher: str | None = None):
    from ckpt_doctor.analysis import analyze
    from ckpt_doctor.analysis.source import read_source
    from ckpt_doctor.config import Settings

    (tmp_path / ".git").mkdir(exist_ok=True)
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT.format(line=line))
    if launcher is not None:
        (tmp_path / "run.sh").write_text(launcher)
    return analyze(read_source(str(script)), Settings(root=tmp_path)).settings


@pytest.mark.parametrize("line", ['os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"',
                                  'os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True,max_split_size_mb:128")',
                                  'torch.cuda.memory._set_allocator_settings("expandable_segments:True")'])
def test_the_script_turns_expandable_segments_on(tmp_path, line):
    setting = _settings(tmp_path, line).expandable_segments
    assert setting.value is True and setting.line == 2
    assert _settings(tmp_path, line.replace("True", "False")).expandable_segments.value is False
    assert _settings(tmp_path, "# " + line).expandable_segments.value is False


@pytest.mark.parametrize("launcher", ["export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True\npython train.py\n",
                                      "export PYTORCH_ALLOC_CONF='expandable_segments:True'\ntorchrun --nproc_per_node 1 train.py\n",
                                      "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python train.py --seed 1\n"])
def test_the_launcher_environment_turns_expandable_segments_on(tmp_path, launcher):
    setting = _settings(tmp_path, launcher=launcher).expandable_segments
    assert setting.value is True and setting.file.endswith("run.sh")
    assert setting.line == launcher.count("\n")  # the line that runs the script


def test_a_variable_set_after_the_run_or_not_exported_does_not_count(tmp_path):
    later = "python train.py\nexport PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True\n"
    assert _settings(tmp_path, launcher=later).expandable_segments.value is False
    plain = "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True\npython train.py\n"
    assert _settings(tmp_path, launcher=plain).expandable_segments.value is False


def test_estimate_of_a_script_replays_its_allocator(tmp_path):
    import json

    from click.testing import CliRunner

    from ckpt_doctor.estimate.command import estimate as command

    (tmp_path / ".git").mkdir()
    (tmp_path / "train.py").write_text(_SCRIPT.format(line='os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"'))
    on = json.loads(CliRunner().invoke(command, [str(tmp_path / "train.py"), "--seq-len", "1024", "--output-format", "json"]).output)
    off = json.loads(CliRunner().invoke(command, [str(tmp_path / "train.py"), "--seq-len", "1024", "--no-expandable-segments",
                                                  "--output-format", "json"]).output)
    assert on["setup"]["expandable_segments"] is True and off["setup"]["expandable_segments"] is False
    assert on["peak_bytes"] == off["peak_bytes"] and on["peak_bytes_reserved"] != off["peak_bytes_reserved"]
