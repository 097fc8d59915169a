"""The extraction contract: a Triple, the ExtractionContext it is resolved against, the Extractor protocol."""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agent.errors import BadInputError
from agent.language import vocab
from kb.facts import normalize_name

if TYPE_CHECKING:
    from spacy.tokens import Doc

_ISO_PREFIX = re.compile(r"^\d{4}(?:-\d{2}(?:-\d{2})?)?$")
#: (subject, relation) -> the current object in the KB for this user, or None if unknown
Lookup = Callable[[str, str], "str | None"]


def no_lookup(subject: str, relation: str) -> str | None:
    """A lookup that knows nothing (a fresh KB, or tests)."""
    return None


@dataclass(frozen=True)
class Triple:
    """One fact stated in an utterance, with names already resolved, ready to store or retract."""

    subject: str  # surface form of the entity, pronouns and first person resolved ("alice", "Mary")
    relation: str  # snake_case relation, from the vocabulary in agent.language.vocab where possible
    object: str  # surface form of the object; numbers and dates normalised ("34", "1990-05-03")
    text: str  # a short self-contained sentence with names resolved: "Alice lives in Paris."
    negated: bool = False  # the utterance says this no longer holds / does not hold: retract it
    confidence: float = 0.9  # lower when hedged ("I think ...") or resolved by guesswork
    # how it was said (agent.language.modality.Modality value): only "asserted"/"past" are current facts that
    # may supersede; "plan" is stored as a plan relation; other modalities are never stored
    modality: str = "asserted"
    time: str | None = None  # ISO prefix of the time the utterance gave it ("2026-12"), None if none

    def __post_init__(self) -> None:
        from agent.language.modality import Modality

        object.__setattr__(self, "modality", Modality.parse(self.modality).value)
        if self.time is not None and not _ISO_PREFIX.match(str(self.time)):
            raise BadInputError(f"Triple.time={self.time!r} must be an ISO date prefix like 2026-12 or 2026-12-01")
        for name in ("subject", "relation", "object", "text"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise BadInputError(f"Triple.{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.confidence, (int, float)) or math.isnan(self.confidence) \
                or not 0.0 <= self.confidence <= 1.0:
            raise BadInputError(f"Triple.confidence={self.confidence!r} must be in [0, 1]")

    @property
    def current(self) -> bool:
        """Whether this is a fact that holds now (stored as current, may supersede)."""
        return not self.negated and self.modality in ("asserted", "past")

    @property
    def stored(self) -> bool:
        """Whether write-back stores it: current facts, plans, and retractions of asserted facts."""
        return self.modality in ("asserted", "past", "plan")

    def key(self) -> tuple[str, str, str, bool]:
        """Identity for de-duplication: normalised triple plus polarity."""
        return (normalize_name(self.subject), self.relation, normalize_name(self.object), self.negated)


@dataclass(frozen=True)
class ExtractionContext:
    """What an extractor needs to resolve "I", "she", "my sister" in one user's utterance."""

    user: str  # the speaking user's id; first person ("I", "me", "my"...) maps to this entity
    # extra resolutions from the dialogue state, lower-cased surface -> entity:
    # {"she": "mary", "my sister": "mary", "he": "john"}
    references: dict[str, str] = field(default_factory=dict)
    # (subject, relation) -> current object in the KB for this user; resolves "my sister's husband"
    lookup: Lookup = no_lookup
    # when the utterance was said (unix seconds): "next month" is resolved against it; None = now
    now: float | None = None
    # referents earlier turns introduced without a name, most recent first, as (owner, noun):
    # ("sam", "greyhound") after "I adopted a greyhound", so "His name is Biscuit" names the dog
    unnamed: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.now is not None and (not isinstance(self.now, (int, float)) or math.isnan(self.now)):
            raise BadInputError(f"ExtractionContext.now must be unix seconds or None, got {self.now!r}")
        if not isinstance(self.user, str) or not self.user.strip():
            raise BadInputError(f"ExtractionContext.user must be a non-empty string, got {self.user!r}")
        if not isinstance(self.references, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.references.items()
        ):
            raise BadInputError("ExtractionContext.references must map strings to strings")
        if not isinstance(self.unnamed, tuple) or not all(
            isinstance(u, tuple) and len(u) == 2 and all(isinstance(x, str) and x.strip() for x in u)
            for u in self.unnamed
        ):
            raise BadInputError(f"ExtractionContext.unnamed must be a tuple of (owner, noun) string pairs, "
                                f"got {self.unnamed!r}")
        if not callable(self.lookup):
            raise BadInputError(f"ExtractionContext.lookup must be callable, got {self.lookup!r}")

    def resolve(self, surface: str) -> str | None:
        """The entity a surface form refers to: the user for first person, else a reference."""
        s = " ".join(surface.lower().split())
        if s in vocab.FIRST_PERSON or s in ("user", "the user"):
            return self.user
        return self.references.get(s)

    def safe_lookup(self, subject: str, relation: str) -> str | None:
        """``lookup`` that treats a failing or non-string answer as unknown."""
        try:
            value = self.lookup(normalize_name(subject), relation)
        except Exception:  # noqa: BLE001 - a broken lookup must not break extraction
            return None
        return value if isinstance(value, str) and value.strip() else None


@runtime_checkable
class Extractor(Protocol):
    """Anything that turns one user utterance into triples (patterns, an LLM...).

    The contract every implementation keeps (tests/test_contracts.py): a list of Triple; [] for an
    empty text and for a question; BadInputError naming the type for a non-string text; the same
    triples for the same input; first person resolved to ``context.user``.
    """

    def extract(self, text: str, context: ExtractionContext, doc: Doc | None = None) -> list[Triple]:
        """Facts stated in ``text``; [] for questions. ``doc`` is an optional parse of ``text``."""
        ...


def dedupe(triples: list[Triple]) -> list[Triple]:
    """Drop repeated triples (same normalised subject, relation, object, polarity), keeping order."""
    seen: set[tuple[str, str, str, bool]] = set()
    out: list[Triple] = []
    for t in triples:
        k = t.key()
        if k not in seen:
            seen.add(k)
            out.append(t)
    return out
