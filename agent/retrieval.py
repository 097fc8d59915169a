"""Per-turn retrieval: hybrid KB search on the resolved query plus a capped walk around the state's entities."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import BadInputError
from kb import KnowledgeBase
from kb.errors import KBError
from kb.facts import Fact

if TYPE_CHECKING:
    from agent.state import DialogueState, Turn


@dataclass(frozen=True)
class RetrievalConfig:
    """How many facts a turn may draw on and where they come from."""

    # facts offered to the model; a 135M model reads the first few best, so keep it small
    k: int = 6
    # entities from the dialogue state whose facts are pulled in directly (graph hop 1)
    max_entities: int = 4
    # facts taken per state entity; hubs are capped so one busy entity cannot crowd out the rest
    per_entity: int = 12
    # neighbours of the focus entity also walked (graph hop 2), and facts taken from each
    hop2_entities: int = 3
    hop2_per_entity: int = 4
    # search hits below this cosine that no keyword or graph link supports are dropped as noise
    min_vector_score: float = 0.25

    def __post_init__(self) -> None:
        for name in ("k", "max_entities", "per_entity", "hop2_entities", "hop2_per_entity"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0 or v > 1000:
                raise BadInputError(f"retrieval {name}={v!r} must be an integer in 0..1000")
        if self.k < 1:
            raise BadInputError(f"retrieval k={self.k} must be >= 1")
        if not -1.0 <= self.min_vector_score <= 1.0:
            raise BadInputError(f"min_vector_score={self.min_vector_score} must be in [-1, 1]")


@dataclass(frozen=True)
class UsedFact:
    """A fact put in front of the model, with its number in the prompt and why it was chosen."""

    number: int
    fact: Fact
    score: float
    why: str  # "search", "entity:mary", "2-hop:john via mary"


_RRF = 60.0


class Retriever:
    """Combines hybrid search with the entities the dialogue state resolved."""

    def __init__(self, kb: KnowledgeBase, config: RetrievalConfig):
        self.kb = kb
        self.config = config

    def query_text(self, text: str, turn: "Turn") -> str:
        """The message with resolved references spelled out: 'my sister's husband' -> 'John'."""
        out = text
        for surface, entity in sorted(turn.references.items(), key=lambda kv: -len(kv[0])):
            if len(surface) < 2 and surface.lower() != "i":
                continue
            out = re.sub(rf"(?i)\b{re.escape(surface)}\b", entity, out)
        return out

    def retrieve(self, text: str, turn: "Turn", state: "DialogueState", user: str) -> list[UsedFact]:
        cfg = self.config
        scores: dict[str, float] = {}
        why: dict[str, str] = {}
        facts: dict[str, Fact] = {}

        def offer(f: Fact, score: float, reason: str) -> None:
            if f.id not in facts:
                facts[f.id], why[f.id] = f, reason
            scores[f.id] = scores.get(f.id, 0.0) + score

        query = self.query_text(text, turn)
        try:
            hits = self.kb.search(query, k=cfg.k * 2, user=user, kinds=["fact"])
        except KBError:
            hits = []
        for h in hits:
            weak = (h.vector_score is not None and h.vector_score < cfg.min_vector_score
                    and h.keyword_rank is None and not h.via_entities)
            if h.fact is not None and not weak:
                offer(h.fact, h.score, "search")
        entities = state.entities()[: cfg.max_entities]
        for rank_e, ent in enumerate(entities):
            for rank, f in enumerate(self._facts_about(ent, user, cfg.per_entity)):
                offer(f, 1.0 / (_RRF + rank + 1) / (1 + rank_e), f"entity:{ent}")
        if entities and cfg.hop2_entities:
            focus = self.kb.resolve(entities[0])
            hop1 = [f.object if f.subject == focus else f.subject
                    for f in self._facts_about(entities[0], user, cfg.per_entity)]
            for ent in list(dict.fromkeys(hop1))[: cfg.hop2_entities]:
                for rank, f in enumerate(self._facts_about(ent, user, cfg.hop2_per_entity)):
                    offer(f, 0.5 / (_RRF + rank + 1), f"2-hop:{ent} via {entities[0]}")
        ranked = sorted(facts.values(), key=lambda f: (-scores[f.id], f.id))[: cfg.k]
        return [UsedFact(i, f, scores[f.id], why[f.id]) for i, f in enumerate(ranked, start=1)]

    def _facts_about(self, entity: str, user: str, limit: int) -> list[Fact]:
        try:
            return self.kb.about(entity, user=user, limit=limit)  # subject side first, newest first
        except KBError:
            return []
