"""The plain records a turn and a feedback round pass around (the reply, its timings, feedback
signals, candidates and rounds, the rating), kept apart from the code that makes them.

This module imports no behaviour at run time (only type names for annotations), so every module of
the turn can import it without the cycles loop -> turn -> feedback -> loop and candidates <-> turn;
the import-linter contract ``agent-types-are-records`` keeps it that way. The records are re-exported
from agent.pipeline.loop and agent.feedback, where they lived before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.errors import BadInputError

if TYPE_CHECKING:
    import numpy as np

    from agent.fusion.fuser import FusedFact
    from agent.memory.recall import Memory
    from agent.memory.retrieval import UsedFact
    from agent.dialogue.state import Turn
    from kb.facts import Fact


#: the rating scale; /bad is RATING_MIN and /good is RATING_MAX
RATING_MIN, RATING_MAX = 1, 5
_LABELS = {1: "bad", 2: "poor", 3: "neutral", 4: "ok", 5: "good"}
_WORDS = {"bad": 1, "wrong": 1, "poor": 2, "neutral": 3, "ok": 4, "good": 5, "right": 5}


@dataclass(frozen=True)
class Rating:
    """How the user judged a reply, on a 1..5 scale: 1 bad (wrong), 2 poor, 3 neutral, 4 ok, 5 good.

    ``/bad`` is 1 and ``/good`` is 5. Ratings 1-2 lower the confidence of the facts the reply used
    and ask for a new answer; 4-5 raise that confidence (4 half as much as 5); 3 changes nothing.
    """

    value: int

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int) or not RATING_MIN <= self.value <= RATING_MAX:
            raise BadInputError(f"rating {self.value!r} is out of range; give an integer {RATING_MIN}..{RATING_MAX} "
                                f"(1 = bad, 5 = good) or one of: {', '.join(_WORDS)}")

    @classmethod
    def parse(cls, value: Rating | int | str) -> Rating:
        """A Rating from itself, an int 1..5, a digit string, or a word (bad, poor, neutral, ok, good...)."""
        if isinstance(value, Rating):
            return value
        if isinstance(value, str):
            word = value.strip().lower()
            if word in _WORDS:
                return cls(_WORDS[word])
            if word.isdigit() and len(word) <= 3:
                return cls(int(word))
            raise BadInputError(f"rating {value!r} is not a rating; give {RATING_MIN}..{RATING_MAX} "
                                f"or one of: {', '.join(_WORDS)}")
        return cls(value)  # __post_init__ names a bad value

    @property
    def is_good(self) -> bool:
        return self.value >= 4

    @property
    def is_bad(self) -> bool:
        return self.value <= 2

    @property
    def strength(self) -> float:
        """-1 (bad) .. +1 (good); 0 for neutral."""
        return (self.value - 3) / 2.0

    def __str__(self) -> str:
        return f"{self.value}/{RATING_MAX} ({_LABELS[self.value]})"


GOOD = Rating(RATING_MAX)
BAD = Rating(RATING_MIN)


@dataclass(frozen=True)
class FeedbackSignal:
    """What one round of feedback asks for, in words and as vectors of the KB's embedder.

    ``vector`` is the feedback vector: the unit direction λ·target − μ·(newest rejected answer), i.e.
    where the next answer should move in embedding space (−rejected alone for a bare bad rating).
    It is what the fusion module injects as a "feedback" knowledge token.
    """

    round: int  # 1 for the first regeneration of a question
    rating: Rating
    text: str | None  # what the answer should say: correction and note, in the third person; None for a bare /bad
    rejected: tuple[str, ...]  # answers rejected so far for this question, newest first
    vector: np.ndarray = field(compare=False, repr=False)  # (dim,) float32, unit length
    target_vector: np.ndarray | None = field(compare=False, repr=False)  # (dim,) embedding of ``text``
    rejected_vectors: np.ndarray = field(compare=False, repr=False)  # (len(rejected), dim)


@dataclass(frozen=True)
class Candidate:
    """One generated answer with the terms of its re-ranking score (None until ``rerank``)."""

    text: str
    logprob: float  # mean log-probability per generated token under the model (no temperature or penalty)
    tokens: int  # generated tokens the mean is over
    greedy: bool = False  # the greedy decode rather than a sample
    fused: bool = False  # generated with the facts and the feedback vector fused as knowledge tokens
    target_sim: float | None = None  # cosine to what the feedback asks for (None: nothing was asked)
    rejected_sim: float | None = None  # highest cosine to a rejected answer (beyond the target: FeedbackConfig)
    score: float | None = None  # logprob + λ·target_sim − μ·rejected_sim


@dataclass(frozen=True)
class FeedbackRound:
    """One regeneration: the signal, every candidate with its score (best first), and the one chosen."""

    number: int
    signal: FeedbackSignal
    candidates: tuple[Candidate, ...]
    chosen: Candidate
    seconds: float  # retrieval, generation and re-ranking of this round


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each step of one turn."""

    state: float = 0.0
    retrieval: float = 0.0
    generation: float = 0.0
    extraction: float = 0.0
    write_back: float = 0.0

    @property
    def memory_overhead(self) -> float:
        """Everything except generation."""
        return self.state + self.retrieval + self.extraction + self.write_back


@dataclass(frozen=True)
class Reply:
    """The outcome of one turn."""

    text: str
    state: Turn  # the dialogue state of this turn (intent, entities, references, focus...)
    used_facts: tuple[UsedFact, ...]  # numbered as cited in the prompt
    learned_facts: tuple[Fact, ...]  # new facts stored from the user's message
    superseded_facts: tuple[Fact, ...]  # facts those replaced or retracted
    timings: Timings = Timings()
    rounds: tuple[FeedbackRound, ...] = ()  # feedback regenerations that led to this text, oldest first
    fused: tuple[FusedFact, ...] = ()  # knowledge tokens the model read, most attended first
    memories: tuple[Memory, ...] = ()  # what recall put in front of the model (facts and episodes), best first
