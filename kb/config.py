"""Configuration of a knowledge base and the typed inputs/outputs of its write API."""
from __future__ import annotations

from dataclasses import dataclass, field

from kb.errors import InvalidInputError
from kb.facts import Fact
from kb.index import IndexConfig


@dataclass(frozen=True)
class KBConfig:
    """Behaviour of one open knowledge base (not stored: it may differ between processes)."""

    # vector index structure and its knobs
    index: IndexConfig = field(default_factory=IndexConfig)
    # cosine similarity of fact texts at or above which a new fact with the same user, subject and
    # relation (and compatible object) is merged into the existing one instead of stored again
    near_duplicate: float = 0.95
    # save the vector index after this many new vectors; the log is durable on every commit anyway,
    # and an index that lags is caught up from the log on the next open
    save_every: int = 20_000
    # reciprocal rank fusion constant: larger flattens the difference between ranks
    rrf_k: int = 60
    # show progress bars (stderr) when rebuilding or repairing the index
    show_progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.near_duplicate <= 1.0:
            raise InvalidInputError(
                f"near_duplicate={self.near_duplicate} must be in (0, 1]; 1.0 disables semantic merging"
            )
        if self.save_every < 1:
            raise InvalidInputError(f"save_every={self.save_every} must be >= 1")
        if self.rrf_k < 1:
            raise InvalidInputError(f"rrf_k={self.rrf_k} must be >= 1")


@dataclass(frozen=True)
class NewFact:
    """One fact to add; only subject, relation and object are required."""

    subject: str
    relation: str
    object: str
    text: str | None = None  # natural-language statement; generated from the triple if None
    user: str | None = None  # owner; required unless shared
    shared: bool = False  # visible to every user
    source_id: str | None = None  # caller's id of where it was said, e.g. a turn id
    episode_id: str | None = None  # the stored utterance it came from
    time: object = None  # when it was stated (datetime, ISO string, unix seconds); default now
    valid_from: object = None  # when it became true; default = time
    confidence: float = 1.0
    note: str | None = None  # recorded with the source, e.g. "correction of turn 4"


@dataclass(frozen=True)
class NewEpisode:
    """One utterance to store as an episode; only text and user are required."""

    text: str  # stored whole; only the embedding sees a truncated copy (EMBED_CHARS)
    user: str  # whose memory it is
    speaker: str = "user"  # who said it: the user's name, "assistant", or another person's name
    role: str = "user"  # kb.facts.Role: user, assistant or other
    session: str | None = None  # the conversation it belongs to
    position: int | None = None  # 0-based turn index within the session, both sides counted
    time: object = None  # when it was said (datetime, ISO string, unix seconds); default now
    source_id: str | None = None  # caller's id of the turn, e.g. "chat-3/turn/5"


#: an episode's text is embedded from its first this many characters: MiniLM reads 256 word pieces
#: (about 1,000 characters) anyway, and a 100k-character paste must not cost a 100k tokenizer pass
EMBED_CHARS = 2_000


@dataclass(frozen=True)
class AddResult:
    """What adding one fact did."""

    fact: Fact  # the stored fact (an existing one if this was a duplicate)
    created: bool  # False when it was merged into an existing fact as another source
    superseded: tuple[Fact, ...] = ()  # facts it replaced (now status superseded, with valid_to)
    merged_semantically: bool = False  # True when matched by the near-duplicate check, not the hash
