"""Honest scoring shared by the evaluations: the ``grounded`` metric, abstentions, the question topic, and
the scenario set's policy numbers (abstention on unanswerable questions, general knowledge vs the bare
model, unsupported claims), each per dev/test split."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.answers.grounding import unsupported
from agent.answers.phrasing import ABSTENTIONS, GENERIC
from agent.fusion.synth import is_refusal

_ABSTAIN_LEADS = ("you haven't told me", "you have not told me")


def is_abstention(reply: str) -> bool:
    """Whether ``reply`` says memory has no answer (the policy's templates, or a refusal such as "I don't know")."""
    r = " ".join(reply.strip().split())
    low = r.casefold()
    return (low.startswith(_ABSTAIN_LEADS) or r == GENERIC or r in ABSTENTIONS.values()
            or (bool(r) and is_refusal(r) and len(r.split()) <= 12))


def support_texts(reply, question: str, name: str) -> list[str]:
    """What an answer may draw its claims from: the memories put in front of the model (never the
    assistant's own earlier replies), the cited facts, the question and the user's name."""
    mems = [m.text for m in getattr(reply, "memories", ()) if getattr(m, "role", "") != "assistant"
            and getattr(m, "speaker", "") != "assistant"]
    return mems + [u.fact.text for u in reply.used_facts] + [question, name]


@dataclass(frozen=True)
class Grounding:
    """How one answer fares on the honest metrics."""

    abstained: bool
    unsupported: tuple[str, ...]  # unsupported entities, numbers and dates (their text)
    grounded: bool  # contains the expected value (or abstains when it should) and nothing unsupported


def judge(reply_text: str, correct: bool, support: Sequence[str], nlp) -> Grounding:
    """``correct`` is the contains-value verdict; grounded also needs no unsupported claim."""
    bad = tuple(c.text for c in unsupported(reply_text, support, nlp))
    return Grounding(is_abstention(reply_text), bad, correct and not bad)


@dataclass(frozen=True)
class Rate:
    """A count out of a total, with the fraction (None when the total is 0)."""

    n: int
    total: int

    @property
    def rate(self) -> float | None:
        return self.n / self.total if self.total else None

    def __str__(self) -> str:
        return f"{self.n}/{self.total}" + (f" = {self.rate:.1%}" if self.total else "")


@dataclass(frozen=True)
class PolicyMetrics:
    """The scenario set's honesty numbers (``original`` = the categories before issue 14)."""

    original_contains: Rate  # contains-value accuracy on the original questions
    original_grounded: Rate  # ... and no unsupported claim
    abstain_dev: Rate  # unanswerable questions abstained on (and no rejected value), dev split
    abstain_test: Rate
    general_dev: Rate  # general-knowledge questions right (value contained, no abstention)
    general_test: Rate
    bare_dev: Rate  # the same questions asked the bare model
    bare_test: Rate
    general_of_bare_test: Rate  # of what the bare model gets right (test), what the agent gets right
    topic: Rate  # questions whose topic (user / general) the policy tells right
    unsupported_claims: Rate  # answers about the user's world (not abstentions) with an unsupported claim
    false_abstentions: Rate  # original (answerable) questions the agent abstained on


def policy_metrics(rows: Sequence[dict]) -> PolicyMetrics:
    """Aggregate per-question rows: dicts with category, split, correct, grounded, abstained, unsupported,
    topic_right, about_user, bare_correct (general knowledge only)."""
    def rate(sel, pred) -> Rate:
        xs = [r for r in rows if sel(r)]
        return Rate(sum(1 for r in xs if pred(r)), len(xs))

    orig = lambda r: r["category"] not in ("unanswerable", "general_knowledge")  # noqa: E731
    un = lambda split: lambda r: r["category"] == "unanswerable" and r["split"] == split  # noqa: E731
    gk = lambda split: lambda r: r["category"] == "general_knowledge" and r["split"] == split  # noqa: E731
    return PolicyMetrics(
        rate(orig, lambda r: r["correct"]), rate(orig, lambda r: r["grounded"]),
        rate(un("dev"), lambda r: r["correct"]), rate(un("test"), lambda r: r["correct"]),
        rate(gk("dev"), lambda r: r["correct"]), rate(gk("test"), lambda r: r["correct"]),
        rate(gk("dev"), lambda r: r["bare_correct"]), rate(gk("test"), lambda r: r["bare_correct"]),
        rate(lambda r: gk("test")(r) and r["bare_correct"], lambda r: r["correct"]),
        rate(lambda r: True, lambda r: r["topic_right"]),
        rate(lambda r: r["about_user"] and not r["abstained"], lambda r: bool(r["unsupported"])),
        rate(orig, lambda r: r["abstained"]),
    )


def format_policy(p: PolicyMetrics) -> str:
    """The policy block printed under the scenario table."""
    rows = [
        ("original questions: contains-value", p.original_contains),
        ("original questions: grounded", p.original_grounded),
        ("original questions: abstained (false abstentions)", p.false_abstentions),
        ("unanswerable, abstained: dev", p.abstain_dev),
        ("unanswerable, abstained: TEST", p.abstain_test),
        ("general knowledge right: dev (bare model)", p.general_dev, p.bare_dev),
        ("general knowledge right: TEST (bare model)", p.general_test, p.bare_test),
        ("general knowledge TEST, of the bare model's right ones", p.general_of_bare_test),
        ("question topic (user / general) told right", p.topic),
        ("answers about the user's world with an unsupported claim", p.unsupported_claims),
    ]
    out = ["honest scoring (issue 14):"]
    for name, r, *bare in rows:
        out.append(f"  {name:<58}{str(r):>16}" + (f"   ({bare[0]})" if bare else ""))
    return "\n".join(out)
