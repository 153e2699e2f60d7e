"""A realistic ~500-line training script for the language server's benchmark (bench/server_speed.py) and tests.

It is `examples/train_lora.py` grown the way real scripts grow: argument parsing, data preparation, a custom
model wrapper that checkpoints its blocks by hand, evaluation and logging helpers, then the example's own
training code (so the usual findings are there, and fixable).
"""

from __future__ import annotations

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_lora.py"

_HELPER = '''

def preprocess_{n}(rows, tokenizer, max_length={length}):
    """Tokenise one shard ({n}) of the dataset and pack it into fixed-length blocks."""
    texts = [r["instruction"] + "\\n" + r.get("input", "") + "\\n" + r["output"] for r in rows]
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
    blocks, current = [], []
    for ids in encoded["input_ids"]:
        current.extend(ids + [tokenizer.eos_token_id])
        while len(current) >= max_length:
            blocks.append(current[:max_length])
            current = current[max_length:]
    return {{"input_ids": blocks, "labels": [list(b) for b in blocks]}}


class Block{n}(torch.nn.Module):
    """A residual MLP block; its forward is checkpointed by hand when `checkpointing` is on."""

    def __init__(self, width={width}, checkpointing=True):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.up = torch.nn.Linear(width, 4 * width)
        self.down = torch.nn.Linear(4 * width, width)
        self.checkpointing = checkpointing

    def _inner(self, x):
        return self.down(torch.nn.functional.gelu(self.up(self.norm(x))))

    def forward(self, x):
        if self.checkpointing and self.training:
            return x + checkpoint(self._inner, x)
        return x + self._inner(x)


def evaluate_{n}(model, loader, device="cuda"):
    """Mean loss and perplexity over `loader` (shard {n})."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            batch = {{k: v.to(device) for k, v in batch.items()}}
            loss = model(**batch).loss
            total += float(loss) * batch["input_ids"].shape[0]
            count += batch["input_ids"].shape[0]
    model.train()
    mean = total / max(count, 1)
    return {{"loss": mean, "perplexity": math.exp(min(mean, 20.0))}}
'''


def build_script(lines: int = 500) -> str:
    """The example's imports, helpers until about `lines` lines, then the example's training code."""
    example = EXAMPLE.read_text(encoding="utf-8")
    head, _, body = example.partition("parser = argparse.ArgumentParser()")
    head = head.replace("import argparse\n", "import argparse\nimport math\n").replace(
        "import torch\n", "import torch\nfrom torch.utils.checkpoint import checkpoint\n")
    body = "parser = argparse.ArgumentParser()" + body
    parts = [head.rstrip("\n") + "\n"]
    used = parts[0].count("\n") + body.count("\n") + 2
    n = 0
    while used + _HELPER.count("\n") <= lines:
        parts.append(_HELPER.format(n=n, length=512 + 256 * (n % 4), width=256 * (1 + n % 3)))
        used += _HELPER.count("\n")
        n += 1
    parts.append("".join(f"LOG_EVERY_{i} = {10 * (i + 1)}\n" for i in range(max(0, lines - used))))
    return "".join(parts) + "\n\n" + body
