"""The synthetic step of ``ckpt-doctor verify --model ...``: run by the bootstrap like a user's script
(``--module ckpt_doctor.verify.synthetic SETUP.json``), so it is measured by exactly the same machinery.

The model is built from its config with random weights (no download) as ``estimate --trace`` builds it
(``ckpt_doctor.estimate.trace.build_model``: dtype, attention, LoRA, checkpointing), directly on the device,
and trained on random token ids: forward, loss, backward, ``optimizer.step()``, ``zero_grad()``, until the
bootstrap stops the process after the wanted number of steps.
"""

from __future__ import annotations

import json
import sys


def setup_from_json(d: dict):
    from ckpt_doctor.estimate.arch import ModelArch
    from ckpt_doctor.estimate.memory import TrainingSetup

    arch = ModelArch.from_hf_config(d["hf_config"], d["name"])
    fields = dict(d["setup"])
    if fields.get("lora_targets") is not None:
        fields["lora_targets"] = tuple(fields["lora_targets"])
    return TrainingSetup(arch=arch, **fields).validate()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    device = spec.get("device", "cuda")
    setup = setup_from_json(spec)

    import contextlib

    import torch

    from ckpt_doctor.estimate.trace import build_model, make_inputs, make_optimizer

    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(setup, meta=False)
    model.train()
    vocab = int(getattr(model.config, "vocab_size", 32000))
    inputs = {k: v.to(device) for k, v in make_inputs(setup, vocab).items()}
    opt = make_optimizer(setup, model.parameters())
    if setup.mixed_precision != "no":
        dtype = torch.bfloat16 if setup.mixed_precision == "bf16" else torch.float16
        autocast = lambda: torch.autocast(device_type=torch.device(device).type, dtype=dtype)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    micro = max(1, setup.gradient_accumulation)
    for _ in range(int(spec.get("steps", 1)) + 3):  # the bootstrap stops the process after the wanted steps
        for _ in range(micro):
            with autocast():
                loss = model(**inputs).loss
            if micro > 1:
                loss = loss / micro
            loss.backward()
            del loss
        opt.step()
        opt.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()
