"""Scenario-eval records: the run's config, each turn's and scenario's outcome, the aggregated metrics,
latency percentiles and the whole report (plain frozen dataclasses, written to JSON as they are)."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from agent.errors import BadInputError
from agent.evals.grounded import PolicyMetrics
from agent.evals.scenario import Category, CheckKind, TurnKind

Canon = tuple[str, str, str]  # a (subject, relation, object) triple in canonical form (agent/evals/canon.py)


class Step(str, enum.Enum):
    """A part of a turn whose time is measured (``total`` is the wall-clock time of ``chat``)."""

    STATE = "state"
    RETRIEVAL = "retrieval"
    GENERATION = "generation"
    EXTRACTION = "extraction"
    WRITE_BACK = "write_back"
    TOTAL = "total"


@dataclass(frozen=True)
class EvalConfig:
    """What to run and on which models."""

    scenarios: Path
    model: str
    device: str = "auto"
    fake: bool = False  # HashEmbedder(64) + EchoLLM: fast, tests the harness not the models
    limit: int | None = None  # run only the first N scenarios (after the category filter)
    category: Category | None = None
    # which fact extractor the agent uses (the scenario set decides the default)
    extractor: str = "patterns"
    # knowledge fusion: "off" (facts as text), "on" (fused and cited as text), "only" (fused, not cited)
    fusion: str = "off"

    def __post_init__(self) -> None:
        from agent.extraction.extract import ExtractorKind

        object.__setattr__(self, "extractor", ExtractorKind.parse(self.extractor))
        if self.device not in ("auto", "cpu", "cuda"):
            raise BadInputError(f"device {self.device!r} is invalid; use auto, cpu or cuda")
        if self.fusion not in ("off", "on", "only"):
            raise BadInputError(f"fusion {self.fusion!r} is invalid; use off, on or only")
        if self.limit is not None and self.limit < 1:
            raise BadInputError(f"limit={self.limit} must be >= 1")


@dataclass(frozen=True)
class StepTimes:
    """Milliseconds one turn spent in each Step."""

    state: float
    retrieval: float
    generation: float
    extraction: float
    write_back: float
    total: float


@dataclass(frozen=True)
class TurnResult:
    """One scripted turn as it went."""

    session: int
    turn: int
    user: str
    kind: TurnKind
    text: str
    reply: str
    extracted: tuple[Canon, ...]  # canonical triples the turn produced
    gold: tuple[Canon, ...]  # canonical gold triples
    used: tuple[Canon, ...]  # canonical triples of reply.used_facts, in prompt order
    true_positives: int
    evidence_found: int
    evidence_total: int
    correct: bool | None  # None for statements
    leaked: int  # used facts of another user
    ms: StepTimes
    split: str = "dev"  # the scenario's split (dev / test)
    grounded: bool | None = None  # ask: correct and no unsupported entity, number or date
    abstained: bool | None = None  # ask: the reply says memory has no answer
    unsupported: tuple[str, ...] = ()  # ask: the reply's unsupported claims
    about_user: bool | None = None  # ask: the policy took it for a question about the user's world
    bare_reply: str | None = None  # general knowledge: the bare model's answer to the same question
    bare_correct: bool | None = None


@dataclass(frozen=True)
class CheckResult:
    """One end-of-scenario KB check."""

    kind: CheckKind
    user: str
    triple: Canon
    passed: bool


@dataclass(frozen=True)
class ScenarioResult:
    """A scenario's turns and checks; ``error`` is set when the agent raised and the run stopped early."""

    id: str
    category: Category
    turns: tuple[TurnResult, ...]
    checks: tuple[CheckResult, ...]
    error: str | None = None


@dataclass(frozen=True)
class Metrics:
    """Aggregated numbers for one category or overall; rates are None when nothing was measured."""

    name: str
    scenarios: int
    turns: int
    questions: int
    extraction_tp: int
    extraction_fp: int
    extraction_fn: int
    precision: float | None
    recall: float | None
    f1: float | None
    evidence_found: int
    evidence_total: int
    retrieval_recall: float | None
    answers_correct: int
    answer_accuracy: float | None
    checks_passed: int
    checks_total: int
    check_pass_rate: float | None
    leaked_facts: int
    errors: int
    answers_grounded: int = 0  # right and without an unsupported entity, number or date
    grounded_accuracy: float | None = None


@dataclass(frozen=True)
class StepLatency:
    """Percentiles of one step's time per turn, in milliseconds (None when there were no such turns)."""

    step: Step
    statements_p50: float | None
    statements_p95: float | None
    questions_p50: float | None
    questions_p95: float | None
    all_p50: float | None
    all_p95: float | None


@dataclass(frozen=True)
class EvalReport:
    """The outcome of a whole run."""

    scenario_dir: str
    model: str
    embedder: str
    fake: bool
    seconds: float
    overall: Metrics
    categories: tuple[Metrics, ...]
    latency: tuple[StepLatency, ...]
    scenarios: tuple[ScenarioResult, ...]
    policy: PolicyMetrics | None = None  # abstention, general knowledge, grounded (agent/evals/grounded.py)
