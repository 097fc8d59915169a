"""Typed records of the knowledge base: facts, episodes, their sources, and input validation."""
from __future__ import annotations

import enum
import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone

from kb.errors import InvalidInputError, choice

#: longest text accepted at all (characters); longer text is almost surely a mistake
MAX_TEXT_CHARS = 1_000_000
#: longest user name accepted
MAX_USER_CHARS = 128
#: the scope key of facts visible to every user
SHARED = ""


class Status(str, enum.Enum):
    """Life-cycle of a fact: only ``active`` facts are current; the others stay in history."""

    ACTIVE = "active"
    SUPERSEDED = "superseded"
    FORGOTTEN = "forgotten"


class Kind(str, enum.Enum):
    """What a search hit or index row refers to."""

    FACT = "fact"
    EPISODE = "episode"

    @classmethod
    def parse(cls, value: "str | Kind") -> "Kind":
        return choice(cls, value, "kind", "valid kinds")


@dataclass(frozen=True)
class Source:
    """One statement of a fact: where and when it was said, and by whom."""

    source_id: str | None  # caller-supplied id, e.g. "session-3/turn-7"
    user: str | None  # who stated it
    time: float  # unix seconds, UTC
    episode_id: str | None = None  # the raw utterance it was extracted from, if stored
    note: str | None = None  # free text, e.g. "correction of turn 4"


@dataclass(frozen=True)
class Fact:
    """A (subject, relation, object) triple with text, scope, validity interval and provenance."""

    id: str  # stable: hash of scope + normalised triple
    subject: str  # normalised entity name
    relation: str  # normalised relation name (snake_case)
    object: str  # normalised entity name or literal value
    text: str  # natural-language statement, full length
    user: str  # owner; "" (SHARED) means visible to every user
    confidence: float  # in [0, 1]
    status: Status
    stated_at: float  # unix seconds of the first statement
    valid_from: float  # unix seconds
    valid_to: float | None  # None while still true
    superseded_by: str | None = None
    sources: tuple[Source, ...] = field(default=(), compare=False)

    @property
    def shared(self) -> bool:
        return self.user == SHARED

    def valid_at(self, t: float) -> bool:
        """True if the fact held at unix time ``t`` (forgotten facts never hold)."""
        if self.status is Status.FORGOTTEN:
            return False
        return self.valid_from <= t and (self.valid_to is None or t < self.valid_to)

    def triple(self) -> tuple[str, str, str]:
        return (self.subject, self.relation, self.object)


@dataclass(frozen=True)
class Episode:
    """A raw utterance as it was said: the evidence that facts link back to."""

    id: str
    speaker: str  # who said it: the user's name, "assistant", or another person's name
    text: str
    user: str  # whose memory it belongs to
    source_id: str | None
    time: float
    session: str | None = None  # the conversation it belongs to (chat session id, imported session)
    position: int | None = None  # 0-based index of the turn within its session, both sides counted
    role: str = "user"  # Role value: the agent's user, the assistant itself, or another person


class Role(str, enum.Enum):
    """Who said an episode, as seen from the KB's user: facts are extracted only from human turns,
    and the assistant's own turns never count as evidence about the user's world."""

    USER = "user"  # the agent's user
    ASSISTANT = "assistant"  # the agent (or "assistant" in an imported chat)
    OTHER = "other"  # another person the user talks with

    @classmethod
    def parse(cls, value: "str | Role") -> "Role":
        return choice(cls, value, "role", "valid roles")


@dataclass(frozen=True)
class Hit:
    """One search result: a fact or an episode, its fused score and why it matched."""

    kind: Kind
    score: float  # reciprocal-rank-fusion score; higher is better
    fact: Fact | None = None
    episode: Episode | None = None
    vector_score: float | None = None  # cosine similarity from the vector index
    keyword_rank: int | None = None  # 1-based rank in the BM25 keyword list
    keyword_score: float | None = None  # BM25 (higher is better; facts and episodes score apart)
    via_entities: tuple[str, ...] = ()  # query entities whose graph neighbourhood it came from

    @property
    def id(self) -> str:
        return self.fact.id if self.fact is not None else self.episode.id  # type: ignore[union-attr]

    @property
    def text(self) -> str:
        return self.fact.text if self.fact is not None else self.episode.text  # type: ignore[union-attr]

    @property
    def provenance(self) -> tuple[Source, ...]:
        if self.fact is not None:
            return self.fact.sources
        ep = self.episode
        assert ep is not None
        return (Source(ep.source_id, ep.user, ep.time, ep.id),)


# --------------------------------------------------------------------------- validation


def clean_text(value: object, what: str = "text") -> str:
    """Return ``value`` as a stripped UTF-8-clean str, or raise naming the problem."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInputError(
                f"{what} is not valid UTF-8 (bad byte 0x{value[e.start]:02x} at offset {e.start}); "
                "pass str or UTF-8 encoded bytes"
            ) from None
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__} {value!r:.60}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"{what} contains a character that is not valid UTF-8 ({value[e.start]!r} at offset {e.start}); "
            "the input was probably decoded from non-UTF-8 bytes"
        ) from None
    if "\x00" in value:
        raise InvalidInputError(f"{what} contains a NUL character at offset {value.index(chr(0))}")
    stripped = value.strip()
    if not stripped:
        raise InvalidInputError(f"{what} is empty or whitespace-only ({value!r:.40}); give some text")
    if len(stripped) > MAX_TEXT_CHARS:
        raise InvalidInputError(
            f"{what} is {len(stripped):,} characters; at most {MAX_TEXT_CHARS:,} are accepted"
        )
    return stripped


def clean_user(value: object) -> str:
    """Validate a user name: a non-empty single-line string of at most MAX_USER_CHARS characters."""
    name = clean_text(value, "user name")
    if len(name) > MAX_USER_CHARS or "\n" in name:
        raise InvalidInputError(
            f"user name {name!r:.60} is invalid; use one line of at most {MAX_USER_CHARS} characters"
        )
    return name


def clean_confidence(value: object) -> float:
    try:
        c = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInputError(f"confidence {value!r} is not a number; give a value in [0, 1]") from None
    if math.isnan(c) or not 0.0 <= c <= 1.0:
        raise InvalidInputError(f"confidence {value!r} is out of range; give a value in [0, 1]")
    return c


def to_timestamp(value: object, what: str = "time") -> float:
    """Accept a datetime, an ISO-8601 string or unix seconds; return unix seconds (UTC)."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isnan(value) or math.isinf(value):
            raise InvalidInputError(f"{what} {value!r} is not a finite number")
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(
                f"{what} {value!r} is not a valid time; use ISO-8601 like 2025-01-31T12:00:00Z, "
                "a datetime, or unix seconds"
            ) from None
        return to_timestamp(dt)
    raise InvalidInputError(f"{what} {value!r} is not a time; use ISO-8601, a datetime, or unix seconds")


def iso(t: float | None) -> str | None:
    """Unix seconds -> ISO-8601 UTC string (None stays None)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


# --------------------------------------------------------------------------- normalisation

_WS = re.compile(r"\s+")
_EDGE_PUNCT = "\"'`“”‘’.,;:!?()[]{}"


def normalize_name(value: str) -> str:
    """Canonical form of an entity or literal: NFKC, case-folded, single spaces, no edge quotes."""
    s = unicodedata.normalize("NFKC", value)
    s = _WS.sub(" ", s).strip().strip(_EDGE_PUNCT).strip()
    return s.casefold()


def normalize_relation(value: str) -> str:
    """Canonical relation name: 'Lives In' -> 'lives_in'."""
    s = normalize_name(value)
    s = re.sub(r"[^\w]+", "_", s).strip("_")
    return s


def fact_id(scope: str, subject: str, relation: str, obj: str) -> str:
    """Stable id from the normalised content: same scope + triple => same id."""
    h = hashlib.sha256("\x1f".join((scope, subject, relation, obj)).encode("utf-8")).hexdigest()
    return "f_" + h[:24]


def episode_id(user: str, speaker: str, source_id: str | None, time: float, text: str) -> str:
    h = hashlib.sha256(
        "\x1f".join((user, speaker, source_id or "", repr(time), text)).encode("utf-8")
    ).hexdigest()
    return "e_" + h[:24]


def default_fact_text(subject: str, relation: str, obj: str) -> str:
    """A readable sentence for a triple when the caller gave none: 'alice lives in paris'."""
    return f"{subject} {relation.replace('_', ' ')} {obj}"
