"""CKPT407 (an evaluation loop whose forward autograd records), beyond its page examples: what keeps a graph and
what does not, every way gradients are turned off, and the loops that only look like evaluation."""

from __future__ import annotations

import textwrap

from ckpt_doctor.analysis.source import SourceFile
from ckpt_doctor.check.lint import lint_text
from ckpt_doctor.config import Settings

NEWEST = {"torch": "2.13", "transformers": "4.46", "peft": "0.21", "trl": "1.16"}
HEAD = """
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-1.5B").cuda()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)


def train_epoch(loader):
    model.train()
    for batch in loader:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
"""
CALLS = """

for epoch in range(3):
    train_epoch(train_loader)
    evaluate(eval_loader)
"""


def findings(code: str, calls: str = CALLS):
    text = textwrap.dedent(HEAD) + textwrap.dedent(code) + calls
    settings = Settings(target_versions=NEWEST, select=["CKPT407"])
    return [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == "CKPT407"]


def lines(code: str, calls: str = CALLS) -> list[int]:
    offset = len(textwrap.dedent(HEAD).splitlines())
    return [f.span.start.line - offset for f in findings(code, calls)]


def test_what_the_loop_keeps_of_the_forward():
    kept = {
        "total += outputs.loss": True,
        "total += outputs.loss.float()": True,
        "logits.append(outputs.logits.cpu())": True,
        "logits.append(outputs.logits[:, -1].softmax(-1))": True,
        "total += F.cross_entropy(outputs.logits.view(-1, 10), labels.view(-1))": True,
        "total += outputs.loss.item()": False,
        "total += float(outputs.loss)": False,
        "total += outputs.loss.detach()": False,
        "logits.append(outputs.logits.argmax(-1))": False,
        "logits.append(outputs.logits.detach().cpu())": False,
        "total += (outputs.logits.argmax(-1) == labels).sum()": False,
        "logits.append(outputs.logits.tolist())": False,
    }
    for statement, expected in kept.items():
        code = f"""
        def evaluate(loader):
            model.eval()
            total, logits = 0.0, []
            for batch in loader:
                labels = batch["labels"]
                outputs = model(**batch)
                {statement}
            return total
        """
        assert lines(code) == ([7] if expected else []), statement


def test_a_result_rebound_every_batch_is_not_kept():
    assert lines("""
    def evaluate(loader):
        model.eval()
        for batch in loader:
            batch_losses = []
            outputs = model(**batch)
            batch_losses.append(outputs.loss)
            print(sum(batch_losses).item())
    """) == []


def test_checkpointing_skipped_in_eval_mode():
    code = """
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def evaluate(loader):
        model.eval()
        total = 0.0
        for batch in loader:
            total += model(**batch).loss.item()
        return total
    """
    (found,) = findings(code)
    assert found.span.start.line - len(textwrap.dedent(HEAD).splitlines()) == 8
    assert "checkpoints only in training mode" in found.message
    # a loop over a counter (sampling tokens) is no pass over the evaluation set
    assert lines(code.replace("for batch in loader:", "for step in range(32):").replace("model(**batch)", "model(ids)")) == []
    # nor is a loop that never put the model in eval mode, whatever its name
    assert lines(code.replace("        model.eval()\n", "")) == []


def test_without_checkpointing_or_anything_kept_nothing_is_reported():
    assert lines("""
    def evaluate(loader):
        model.eval()
        total = 0.0
        for batch in loader:
            total += model(**batch).loss.item()
        return total
    """) == []


def test_every_way_gradients_are_off():
    body = """
        model.eval()
        total = 0.0
        for batch in loader:
            total += model(**batch).loss
        return total
    """
    variants = [
        "@torch.no_grad()\ndef evaluate(loader):",
        "@torch.no_grad\ndef evaluate(loader):",
        "@torch.inference_mode()\ndef evaluate(loader):",
        "@torch.autograd.no_grad()\ndef evaluate(loader):",
    ]
    for head in variants:
        assert lines(head + textwrap.indent(textwrap.dedent(body), "    ")) == [], head
    looped = """
    def evaluate(loader):
        model.eval()
        total = 0.0
        {context}
            for batch in loader:
                total += model(**batch).loss
        return total
    """
    for context in ("with torch.no_grad():", "with torch.inference_mode():", "with torch.set_grad_enabled(False):",
                    "with torch.set_grad_enabled(phase == 'train'):", "with torch.autocast('cuda'), torch.no_grad():"):
        assert lines(looped.format(context=context)) == [], context
    assert lines(looped.format(context="with torch.autocast('cuda'):")) == [7]
    assert lines(looped.format(context="with torch.inference_mode(False):")) == [7]


def test_imported_names_and_callers_that_turn_gradients_off():
    assert lines("""
    from torch import no_grad

    def evaluate(loader):
        model.eval()
        total = 0.0
        for batch in loader:
            with no_grad():
                outputs = model(**batch)
            total += outputs.loss
        return total
    """) == []
    code = """
    def evaluate(loader):
        model.eval()
        total = 0.0
        for batch in loader:
            total += model(**batch).loss
        return total
    """
    assert lines(code, calls="\nwith torch.no_grad():\n    evaluate(eval_loader)\n") == []
    assert lines(code, calls="\ntorch.set_grad_enabled(False)\nevaluate(eval_loader)\n") == []
    assert lines(code, calls="\n") == []  # called from nowhere in the script
    assert lines(code) == [6]


def test_loops_that_make_a_step_are_not_evaluation():
    # the loss of a REINFORCE-style rollout is backpropagated after the loop
    assert lines("""
    def evaluate(loader):
        model.eval()
        log_probs = []
        for batch in loader:
            log_probs.append(model(**batch).logits.log_softmax(-1))
        torch.stack(log_probs).sum().backward()
        optimizer.step()
    """) == []
    # evaluation inline after the training loop of the same function: the epoch loop's `.train()` comes first
    assert lines("""
    def run(train_loader, eval_loader):
        for epoch in range(3):
            model.train()
            for batch in train_loader:
                model(**batch).loss.backward()
                optimizer.step()
            model.eval()
            total = 0.0
            for batch in eval_loader:
                total += model(**batch).loss
            print(total)
    """, calls="\nrun(a, b)\n") == [11]


def test_a_trainer_script_is_not_concerned():
    text = textwrap.dedent("""
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained("gpt2")
    trainer = Trainer(model=model, args=TrainingArguments("out"))
    trainer.train()

    def evaluate(loader):
        model.eval()
        return [model(**batch).loss for batch in loader]

    total = []
    for batch in loader:
        total.append(model(**batch).loss)
    evaluate(loader)
    """)
    settings = Settings(target_versions=NEWEST, select=["CKPT407"])
    assert lint_text(SourceFile("t.py", text, text.encode()), settings) == []


def test_a_method_of_the_scripts_trainer_class():
    assert lines("""
    class Runner:
        def __init__(self, model):
            self.model = model

        def fit(self, loader):
            self.model.train()

        def validate(self, loader):
            self.model.eval()
            losses = []
            for batch in loader:
                losses.append(self.model(**batch).loss)
            return losses
    """, calls="\nRunner(model).validate(eval_loader)\n") == [13]


def test_a_model_nothing_trains_records_nothing():
    # a frozen reference model: autograd records no graph for a forward whose parameters and inputs require no grad
    assert lines("""
    ref_model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-1.5B").cuda().requires_grad_(False)

    def evaluate(loader):
        ref_model.eval()
        total = 0.0
        for batch in loader:
            total += ref_model(**batch).loss
        return total
    """) == []


ENGINE = """
import torch


def train_fn(model, loader, optimizer):
    model.train()
    for data in loader:
        optimizer.zero_grad()
        _, loss = model(**data)
        loss.backward()
        optimizer.step()


def eval_fn(model, loader):
    model.eval()
    preds = []
    for data in loader:
        batch_preds, loss = model(**data)
        preds.append(batch_preds)
    return preds
"""


def test_an_evaluation_function_another_module_of_the_project_calls(tmp_path):
    """`engine.py` holds the loops and `train.py` runs them: the call in `train.py` says whether autograd is on."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n", encoding="utf-8")
    engine = tmp_path / "engine.py"
    engine.write_text(textwrap.dedent(ENGINE), encoding="utf-8")
    settings = Settings(target_versions=NEWEST, select=["CKPT407"])

    def check(train: str | None) -> list:
        runner = tmp_path / "train.py"
        if train is None:
            runner.unlink(missing_ok=True)
        else:
            runner.write_text(textwrap.dedent(train), encoding="utf-8")
        text = engine.read_text(encoding="utf-8")
        return [f for f in lint_text(SourceFile(str(engine), text, text.encode()), settings) if f.code == "CKPT407"]

    with_grad = check("""
        import engine
        for epoch in range(3):
            engine.train_fn(model, train_loader, optimizer)
            preds = engine.eval_fn(model, valid_loader)
    """)
    assert [f.span.start.line for f in with_grad] == [18]
    assert "nor around its call at" in with_grad[0].message and "train.py:5" in with_grad[0].message
    from_import = check("""
        from engine import eval_fn, train_fn
        train_fn(model, train_loader, optimizer)
        preds = eval_fn(model, valid_loader)
    """)
    assert len(from_import) == 1
    assert check("""
        import torch
        import engine
        engine.train_fn(model, train_loader, optimizer)
        with torch.no_grad():
            preds = engine.eval_fn(model, valid_loader)
    """) == []
    assert check("""
        from other import eval_fn  # another module's function of the same name
        preds = eval_fn(model, valid_loader)
    """) == []
    assert check(None) == []  # nothing calls it: a caller nobody sees may turn autograd off


def test_a_name_rebound_to_itself_and_the_forward_accumulates():
    code = """
def evaluate(loader):
    model.eval()
    preds = torch.Tensor()
    for batch in loader:
        outputs = model(batch)
        outputs = F.softmax(outputs, dim=1)
        preds = torch.cat((preds, outputs), dim=0)
    return preds
"""
    assert lines(code) == [6]
    own = """
def evaluate(loader):
    model.eval()
    correct = 0
    for batch, target in loader:
        output = model(batch)
        output = F.interpolate(output, size=target.size()[1:])
        correct += (output.argmax(1) == target).sum().item()
    return correct
"""
    assert lines(own) == []  # rebinding this batch's own output keeps nothing of the last batch


def test_a_module_the_optimizer_trains_is_a_model_by_any_name():
    head = """
import torch
net = Net().cuda()
opt = torch.optim.Adam(net.parameters())
for batch in train_loader:
    net(batch).backward()
    opt.step()
net.eval()
losses = []
for batch in val_loader:
    out = net(batch)
    losses.append(out)
"""
    text = textwrap.dedent(head)
    settings = Settings(target_versions=NEWEST, select=["CKPT407"])
    found = [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == "CKPT407"]
    assert [f.span.start.line for f in found] == [11]
    text = text.replace("opt = torch.optim.Adam(net.parameters())", "opt = torch.optim.Adam(head.parameters())")
    assert [f for f in lint_text(SourceFile("t.py", text, text.encode()), settings) if f.code == "CKPT407"] == []


TEST_MODULE = """
import torch


def test_epoch(model, loader):
    model.eval()
    outputs = []
    for batch in loader:
        out = model(batch)
        outputs.append(out)
    return torch.cat(outputs)
"""


def test_an_evaluation_of_a_model_handed_in_by_the_module_that_trains_it(tmp_path):
    """`test.py` only evaluates (no step of its own); `train.py` trains `model` and hands it to `test_epoch`."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n", encoding="utf-8")
    module = tmp_path / "test.py"
    module.write_text(textwrap.dedent(TEST_MODULE), encoding="utf-8")
    settings = Settings(target_versions=NEWEST, select=["CKPT407"])
    train = """
        from test import test_epoch
        for epoch in range(3):
            for batch in train_loader:
                model(batch).backward()
                optimizer.step()
            test_epoch(model, val_loader){}
    """
    text = module.read_text(encoding="utf-8")

    def check(runner: str) -> list:
        (tmp_path / "train.py").write_text(textwrap.dedent(runner), encoding="utf-8")
        return [f for f in lint_text(SourceFile(str(module), text, text.encode()), settings) if f.code == "CKPT407"]

    found = check(train.format(""))
    assert [f.span.start.line for f in found] == [9] and "train.py:7" in found[0].message
    # the module that calls it trains nothing: an inference script's model has no gradients to record
    assert check(train.format("").replace("model(batch).backward()", "pass")) == []
    assert check("import torch\n" + textwrap.dedent(train.format("")).replace("    test_epoch(", "    with torch.no_grad():\n        test_epoch(")) == []
