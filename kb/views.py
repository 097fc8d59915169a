"""Read-only summaries of a knowledge base: statistics and entity profiles."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kb.errors import NotFoundError
from kb.facts import Fact, clean_text

if TYPE_CHECKING:
    from kb.log import FactLog
    from kb.store import KnowledgeBase


@dataclass(frozen=True)
class KBStats:
    """Counts and settings of one knowledge base."""

    path: str
    format_version: int
    embedder_id: str
    embedder_dim: int
    facts_active: int
    facts_superseded: int
    facts_forgotten: int
    episodes: int
    users: int
    entities: int
    relations_single_valued: int
    index_kind: str
    index_vectors: int
    disk_bytes: int


@dataclass(frozen=True)
class EntityProfile:
    """Everything currently known about one entity, and what used to be true."""

    name: str  # normalised
    display: str  # as first written
    aliases: tuple[str, ...]
    current: tuple[Fact, ...]  # active facts where it is subject or object
    past: tuple[Fact, ...]  # superseded facts about it
    neighbours: tuple[str, ...]  # entities one hop away through current facts


def stats(kb: "KnowledgeBase") -> KBStats:
    db = kb._log
    by_status = dict(db.db.execute("SELECT status, count(*) FROM facts GROUP BY status").fetchall())
    disk = sum(p.stat().st_size for p in kb.path.iterdir() if p.is_file())
    idx = kb._keeper.index
    return KBStats(
        path=str(kb.path), format_version=kb.manifest.format_version, embedder_id=kb.manifest.embedder_id,
        embedder_dim=kb.manifest.embedder_dim, facts_active=by_status.get("active", 0),
        facts_superseded=by_status.get("superseded", 0), facts_forgotten=by_status.get("forgotten", 0),
        episodes=db.count("SELECT count(*) FROM episodes WHERE status='active'"),
        users=db.count("SELECT count(*) FROM users"), entities=db.count("SELECT count(*) FROM entities"),
        relations_single_valued=db.count("SELECT count(*) FROM relations WHERE single_valued=1"),
        index_kind=idx.kind_name, index_vectors=len(idx), disk_bytes=disk,
    )


def entity_profile(kb: "KnowledgeBase", name: str, user: str | None) -> EntityProfile:
    norm = kb.resolve(clean_text(name, "entity"))
    display = kb._log.entity_display(norm)
    if display is None:
        raise NotFoundError(unknown_entity(kb._log, norm))
    facts = kb.facts(user=user, entity=norm, history=True)
    current = tuple(f for f in facts if f.status.value == "active")
    past = tuple(f for f in facts if f.status.value == "superseded")
    aliases = tuple(sorted(a for a, c in kb._aliases.items() if c == norm))
    neighbours = tuple(dict.fromkeys(f.object if f.subject == norm else f.subject for f in current))
    return EntityProfile(norm, display, aliases, current, past, neighbours)


@dataclass(frozen=True)
class HistoryEvent:
    """One change in a fact's life: created, restated, superseded, forgotten, confidence..."""

    time: float
    event: str
    fact_id: str
    detail: str | None


def unknown_entity(db: "FactLog", name: str) -> str:
    """The error message for an entity name the KB does not know, with close matches."""
    import difflib

    names = [r[0] for r in db.db.execute("SELECT name FROM entities LIMIT 20000")]
    close = difflib.get_close_matches(name, names, n=5)
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    return f"unknown entity {name!r}{hint}"
