"""What one `kgrow learn` run plans, answers, changes and reports: plain records, no behaviour."""
from __future__ import annotations

from dataclasses import dataclass

from agent.lora.questions import QAPair, contains
from kb.facts import Fact


@dataclass(frozen=True)
class LearnPlan:
    """What ``learn`` will train on: the user's facts and the pairs made from them."""

    user: str
    name: str  # how prompts call the user (their stated name, else the user id)
    system: str  # the system message the agent sends this user
    facts: tuple[Fact, ...]  # those that gave at least one pair
    pairs: tuple[QAPair, ...]
    held_out: tuple[QAPair, ...] = ()  # one untrained phrasing per fact: measured, never trained on


@dataclass(frozen=True)
class ClosedBookAnswer:
    """One fact's test question answered without any facts in the prompt, before and after training."""

    question: str
    expected: str
    before: str
    after: str

    @property
    def right_before(self) -> bool:
        return contains(self.before, self.expected)

    @property
    def right_after(self) -> bool:
        return contains(self.after, self.expected)


@dataclass(frozen=True)
class ProbeChange:
    """A locality probe whose answer the adapter changed."""

    prompt: str
    before: str
    after: str


@dataclass(frozen=True)
class LearnReport:
    """Everything one `kgrow learn` run measured and decided."""

    user: str
    base_model: str
    facts: int
    pairs: int
    steps: int
    first_loss: float  # mean loss of the first epoch's batches (fact pairs and replay anchors)
    final_loss: float  # mean loss of the last epoch's batches
    train_seconds: float  # answering the replay anchors with the base model, then training
    eval_seconds: float  # generation for the closed-book questions and the probes, before and after
    closed_book_before: float  # share of facts answered right without facts in the prompt
    closed_book_after: float
    answers: tuple[ClosedBookAnswer, ...]
    # the same on a phrasing not trained on ("Where is Sam's home?"); None when all are trained
    held_out_before: float | None
    held_out_after: float | None
    held_out: tuple[ClosedBookAnswer, ...]
    probes: int
    changed_fraction: float  # share of probes whose first probe_tokens tokens changed
    changed: tuple[ProbeChange, ...]
    max_changed_fraction: float
    accepted: bool
    reason: str  # why it was accepted or rejected, with the numbers
    adapter_version: int | None  # set when accepted and stored
    adapter_path: str | None
