"""Path conditions: under which option values a statement of the script runs.

`if args.use_lora: A else: B` runs `A` with `--use_lora` and `B` without it; no run does both, so no
finding may combine a fact of `A` with a fact of `B`. Every fact carries the `Condition` of the
branches around it: a set of `Literal`s, each "this test came out this way". A test that reads a
command-line option (argparse, `HfArgumentParser` dataclass fields, click, the Trainer's own
arguments) names the option, so tests in different places on the same option are recognised as
the same question; any other test is keyed by its text in its function, which still makes `if`
and `else` of one statement exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Protocol, TypeVar


# the constants a comparison may name (as written), and their truth
_TRUTH_OF_CONSTANT = {"True": True, "False": False, "None": False, "0": False, "''": False, '""': False}


@dataclass(frozen=True)
class Literal:
    """One test and the way it came out on the path: `args.use_lora` is true."""

    key: str  # what is asked: "option --use_lora", or "<scope>: torch.cuda.device_count() > 1"
    holds: bool  # the branch runs when the answer is `holds`
    text: str  # the test as written: "args.use_lora"
    option: str | None = None  # the command-line option it reads ("--use_lora"), None for a test in the code
    default: bool | None = None  # the answer in the run the defaults describe, None if not known
    equals: object = None  # for `args.peft == "lora"`: the constant compared with (the key names `args.peft`)
    named: bool = False  # said in messages though no option: a flag's value nobody can know (`cfg.gc`)

    def contradicts(self, other: "Literal") -> bool:
        if self.key != other.key:
            return False
        if self.equals is None and other.equals is None:
            return self.holds != other.holds
        if self.equals is None or other.equals is None:
            # `if args.x:` against `args.x is False` / `args.x == True`: a truth test and a comparison with a constant
            truth, compared = (self, other) if self.equals is None else (other, self)
            if not compared.holds or str(compared.equals) not in _TRUTH_OF_CONSTANT:
                return False
            return truth.holds != _TRUTH_OF_CONSTANT[str(compared.equals)]
        if self.equals == other.equals:
            return self.holds != other.holds
        return self.holds and other.holds  # `peft == "lora"` and `peft == "full"` together

    def negated(self) -> "Literal":
        """The same test, the other way: the literal of the `else` branch."""
        return replace(self, holds=not self.holds)

    @property
    def by_default(self) -> bool | None:
        """Whether this branch is the one the default run takes."""
        return None if self.default is None else self.default == self.holds

    def describe(self) -> str:
        if self.option is None:
            return f"when `{self.text}` is {'true' if self.holds else 'false'}"
        if self.equals is not None:
            return f"with `{self.option} {self.equals}`" if self.holds else f"without `{self.option} {self.equals}`"
        return f"with `{self.option}`" if self.holds else f"without `{self.option}`"

    def as_dict(self) -> dict:
        out = {"test": self.text, "value": self.holds}
        if self.option is not None:
            out["option"] = self.option
        if self.equals is not None:
            out["equals"] = self.equals
        return out


@dataclass(frozen=True)
class Condition:
    """The conjunction of the literals on a path; the empty condition holds on every path."""

    literals: frozenset[Literal] = frozenset()

    def __and__(self, other: "Condition") -> "Condition | None":
        """Both conditions at once, or None when no run satisfies both."""
        if not other.literals:
            return self
        if not self.literals:
            return other
        for mine in self.literals:
            for theirs in other.literals:
                if mine.contradicts(theirs):
                    return None
        return Condition(self.literals | other.literals)

    def compatible(self, other: "Condition") -> bool:
        return (self & other) is not None

    def implies(self, other: "Condition") -> bool:
        """Whether every run on this path is also on `other`'s: each of its tests is asked here, the same way."""
        mine = {(l.key, l.holds, l.equals) for l in self.literals}
        return all((l.key, l.holds, l.equals) in mine for l in other.literals)

    def also(self, literal: Literal) -> "Condition | None":
        return self & Condition(frozenset((literal,)))

    @property
    def runs_by_default(self) -> bool | None:
        """True when the default run takes this path, False when it certainly does not, None if unknown."""
        answers = [literal.by_default for literal in self.literals]
        if False in answers:
            return False
        return True if all(answers) else None

    @property
    def needed(self) -> list[Literal]:
        """The options (and flags nobody can know) the default run does not certainly satisfy, in a stable order:
        what a finding's message and JSON name ("with `--use_lora`"). Tests in the code (`if self.training:`) only
        keep exclusive branches apart; naming them would bury the message."""
        chosen = (l for l in self.literals if (l.option is not None or l.named) and l.by_default is not True)
        return sorted(chosen, key=lambda l: (l.option or l.text, l.holds, l.text, str(l.equals)))

    def describe(self) -> str:
        """What a finding needs beyond the default run: "with `--use_lora`", "" when nothing (each said once: two
        tests of one option read the same)."""
        return ", ".join(dict.fromkeys(l.describe() for l in self.needed))

    def as_list(self) -> list[dict]:
        return [l.as_dict() for l in self.needed]


ALWAYS = Condition()


def together(*conditions: Condition | None) -> Condition | None:
    """The path on which facts with these conditions all happen; None when no run has them all (`if` and `else`
    of one test, `--use_lora` and not, or a condition already None): no finding may combine them."""
    out: Condition | None = ALWAYS
    for condition in conditions:
        if out is None or condition is None:
            return None
        out = out & condition
    return out


def within(outer: Condition, inner: Condition | list[Literal]) -> Condition:
    """`outer` and `inner`; a branch that contradicts its path (`if not args.x:` inside `if args.x:`) is dead code,
    walked under `outer` alone."""
    joined = outer & (inner if isinstance(inner, Condition) else Condition(frozenset(inner)))
    return outer if joined is None else joined


class _Conditioned(Protocol):
    condition: Condition


F = TypeVar("F", bound=_Conditioned)


def on_path(condition: Condition, facts: Iterable[F], where=lambda fact: True) -> tuple[F, Condition] | None:
    """The first of `facts` that satisfies `where` and can happen in one run with `condition`, and that run's
    path; None when there is none."""
    for fact in facts:
        if where(fact) and (joined := together(condition, fact.condition)) is not None:
            return fact, joined
    return None
