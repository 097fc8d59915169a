"""Read-only views of a knowledge base: facts, listings, histories, entity profiles and statistics."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from kb.errors import InvalidInputError, NotFoundError
from kb.facts import Fact, Status, clean_text, normalize_relation, to_timestamp
from kb.graph import FactGraph
from kb.log import Scope, Storage
from kb.maintenance import IndexKeeper
from kb.manifest import Manifest
from kb.vocabulary import Vocabulary


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


@dataclass(frozen=True)
class HistoryEvent:
    """One change in a fact's life: created, restated, superseded, forgotten, confidence..."""

    time: float
    event: str
    fact_id: str
    detail: str | None


def unknown_entity(log: Storage, name: str) -> str:
    """The error message for an entity name the KB does not know, with close matches."""
    close = difflib.get_close_matches(name, log.entity_names(20_000), n=5)
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    return f"unknown entity {name!r}{hint}"


def _positive(limit: object) -> None:
    if not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(f"limit {limit!r} must be a positive integer")


class Views:
    """Answers every read that is not a search; writes nothing."""

    def __init__(self, log: Storage, vocab: Vocabulary):
        self._log = log
        self._vocab = vocab
        self._graph: tuple[int, str | None, FactGraph] | None = None  # (log generation, user, graph)

    def fact(self, fact_id: str) -> Fact:
        f = self._log.fact(fact_id) if isinstance(fact_id, str) else None
        if f is None:
            raise NotFoundError(f"no fact with id {fact_id!r}; list ids with `kgrow kb facts`")
        return f

    def facts(self, user: str | None, entity: str | None, relation: str | None, history: bool,
              as_of: object, limit: int | None) -> list[Fact]:
        who = self._log.known_user(user) if user is not None else None
        name = self._vocab.resolve(clean_text(entity, "entity")) if entity is not None else None
        rel = normalize_relation(clean_text(relation, "relation")) if relation is not None else None
        t = to_timestamp(as_of, "as_of") if as_of is not None else None
        if limit is not None:
            _positive(limit)
        return self._log.list_facts(user=who, entity=name, relation=rel, as_of=t, history=history, limit=limit)

    def about(self, entity: str, user: str | None, limit: int) -> list[Fact]:
        name = self._vocab.resolve(clean_text(entity, "entity"))
        _positive(limit)
        return self._log.facts_about(name, Scope(self._log.known_user(user) if user is not None else None, None), limit)

    def history(self, fact_id: str) -> tuple[list[Fact], list[HistoryEvent]]:
        f = self.fact(fact_id)
        versions = self._log.slot_versions(f.user, f.subject, f.relation)
        if not self._vocab.is_single(f.relation):
            versions = [v for v in versions if v.object == f.object]
        events = [HistoryEvent(t, ev, fid, d) for _, t, fid, ev, d in self._log.history_of([v.id for v in versions])]
        return versions, events

    def entity(self, name: str, user: str | None) -> EntityProfile:
        norm = self._vocab.resolve(clean_text(name, "entity"))
        display = self._log.entity_display(norm)
        if display is None:
            raise NotFoundError(unknown_entity(self._log, norm))
        facts = self.facts(user, norm, None, True, None, None)
        current = tuple(f for f in facts if f.status is Status.ACTIVE)
        past = tuple(f for f in facts if f.status is Status.SUPERSEDED)
        neighbours = tuple(dict.fromkeys(f.object if f.subject == norm else f.subject for f in current))
        return EntityProfile(norm, display, self._vocab.aliases_of(norm), current, past, neighbours)

    def facts_from_episodes(self, episode_ids: Sequence[str]) -> dict[str, list[Fact]]:
        out: dict[str, list[Fact]] = {e: [] for e in dict.fromkeys(episode_ids)}
        for f in self._log.facts_learned_from(list(out)):
            for e in {s.episode_id for s in f.sources if s.episode_id in out}:
                out[e].append(f)
        return out

    def graph(self, user: str | None) -> FactGraph:
        """The fact graph of ``user`` plus shared facts (everyone's when None), rebuilt after any commit."""
        who = self._log.known_user(user) if user is not None else None
        if self._graph is None or self._graph[0] != self._log.generation or self._graph[1] != who:
            self._graph = (self._log.generation, who, FactGraph.from_facts(self._log.list_facts(user=who), who))
        return self._graph[2]

    def stats(self, path: Path, manifest: Manifest, keeper: IndexKeeper) -> KBStats:
        c = self._log.counts()
        disk = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        return KBStats(
            path=str(path), format_version=manifest.format_version, embedder_id=manifest.embedder_id,
            embedder_dim=manifest.embedder_dim, facts_active=c.get("facts_active", 0),
            facts_superseded=c.get("facts_superseded", 0), facts_forgotten=c.get("facts_forgotten", 0),
            episodes=c["episodes_active"], users=c["users"], entities=c["entities"],
            relations_single_valued=c["single_valued"], index_kind=keeper.index_kind, index_vectors=keeper.size,
            disk_bytes=disk,
        )
