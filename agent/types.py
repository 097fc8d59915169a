"""The plain records a turn and a feedback round pass around: each stage's output, the reply, its
timings, feedback signals, candidates and rounds, the rating; kept apart from the code that makes them.

This module imports no behaviour at run time (only type names for annotations): it sits in the bottom
layer of the import-linter contract ``agent-layers``, so every stage can import it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.errors import BadInputError

if TYPE_CHECKING:
    import numpy as np

    from spacy.tokens import Doc

    from agent.answers.support import Plan
    from agent.dialogue.state import DialogueState, Turn
    from agent.extraction.triple import Triple
    from agent.fusion.adapter import KnowledgeTokens
    from agent.fusion.fuser import FusedFact
    from agent.generation.llm import Message
    from agent.memory.recall import Memory
    from agent.memory.retrieval import UsedFact
    from agent.profile.profile import Generation, Profile
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


# --------------------------------------------------------------------------- the stages of one turn
# understand -> recall -> compose -> generate -> commit (agent/pipeline/stages.py). Nothing before commit
# changes the dialogue state, the history, the profile or the knowledge base.


@dataclass(frozen=True)
class Understood:
    """The message read: its turn, the state it leads to, what it states, and what it asks of the profile."""

    text: str  # the message as said (cleaned)
    now: float | None  # when it was said (None: the clock); recall sees nothing said later
    turn: Turn  # parsed and resolved; becomes part of the state at commit
    doc: Doc  # the parse of ``text``, shared by the extractor and the plan answers
    state: DialogueState  # the dialogue state once this turn is committed (a new object)
    triples: tuple[Triple, ...]  # world facts it states (statements and corrections; preferences left out)
    preferences: Profile | None  # the user's stored preferences after it; None: it changes none
    preferences_ack: str  # the acknowledgement of those changes ("" for none)
    vector: Any  # (dim,) float32 embedding of ``text``, shared by recall and the stored episode; None if unused
    seconds_state: float  # parsing, resolving and embedding the message
    seconds_extraction: float  # preferences and facts


@dataclass(frozen=True)
class Recalled:
    """What memory brought back for the message, and what the answer policy decided from it."""

    memories: tuple[Memory, ...]  # best first, as Agent.recall returns them
    used: tuple[UsedFact, ...]  # the facts that go into the prompt, numbered
    snippets: tuple[str, ...]  # dated lines of the best episodes for the prompt
    plan: Plan | None  # the answer policy's decision for a question (None: not a question)
    seconds: float


class ReplyKind(str, enum.Enum):
    """How a turn's reply is made."""

    ACKNOWLEDGE = "acknowledge"  # a template that says what commit stored (no generation)
    FIXED = "fixed"  # a text decided before generation: an abstention, or a stored plan's sentence
    BARE = "bare"  # general knowledge: the bare model, no memories
    MODEL = "model"  # the model over the prompt with the memories (and fused knowledge tokens)


@dataclass(frozen=True)
class Composed:
    """What the model is asked, or the reply that needs no model."""

    kind: ReplyKind
    text: str = ""  # FIXED: the reply; ACKNOWLEDGE: the preferences' part (commit adds the facts')
    messages: tuple[Message, ...] = ()  # BARE and MODEL: the prompt
    knowledge: KnowledgeTokens | None = None  # MODEL: the facts fused as knowledge tokens (None: text only)
    limits: Generation | None = None  # decoding limits from the user's answer-length preference
    held: bool = False  # the whole reply is grounded before it is shown (the plan's ANSWER action)
    evidence: str | None = None  # MODEL: the episode the answer may cite when fusion is on
    cited: bool = False  # MODEL: the prompt numbers facts, so the reply may cite them as [n]


@dataclass(frozen=True)
class Generated:
    """The reply text as shown, and what generating it read."""

    text: str
    generated: bool  # the model ran (False for acknowledgements and fixed texts)
    fused: tuple[FusedFact, ...] = ()  # knowledge tokens the model read, most attended first
    seconds: float = 0.0


@dataclass(frozen=True)
class Stored:
    """What commit wrote to the knowledge base for one turn."""

    episode_id: str | None  # the message as an episode (None: commands and feedback are not stored)
    learned: tuple[Fact, ...]  # facts created
    superseded: tuple[Fact, ...]  # facts they replaced
    retracted: tuple[Fact, ...]  # facts negated by the message
    known: tuple[Fact, ...]  # facts it restated that the KB already held (one memory, one more source)
    seconds: float


@dataclass(frozen=True)
class Trace:
    """The stage records of one turn, for /why and the timings."""

    understood: Understood
    recalled: Recalled | None  # None: the reply needed no memories (an acknowledgement, a command)
    composed: Composed
    generated: Generated
    stored: Stored


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
    trace: Trace | None = None  # the stage records of the turn (None for a reply made by a feedback round)
