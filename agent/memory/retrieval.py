"""Per-turn retrieval: hybrid KB search on the resolved query plus a capped walk around the state's entities."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from typing import TYPE_CHECKING

from agent.validation import check, within
from kb import KnowledgeBase
from kb.errors import KBError
from kb.facts import Fact

if TYPE_CHECKING:
    from agent.dialogue.state import DialogueState, Turn


@dataclass(frozen=True)
class RetrievalConfig:
    """How many facts a turn may draw on and where they come from."""

    # facts offered to the model; a 135M model reads the first few best, so keep it small
    k: int = within(3, 1, 1000)
    # entities from the dialogue state whose facts are pulled in directly (graph hop 1)
    max_entities: int = within(4, 0, 1000)
    # facts taken per state entity; hubs are capped so one busy entity cannot crowd out the rest
    per_entity: int = within(12, 0, 1000)
    # neighbours of the focus entity also walked (graph hop 2), and facts taken from each
    hop2_entities: int = within(3, 0, 1000)
    hop2_per_entity: int = within(4, 0, 1000)
    # search hits below this cosine that no keyword or graph link supports are dropped as noise
    min_vector_score: float = within(0.25, -1.0, 1.0)
    # added per cue linking a question's words to a fact's relation ("where ... born" -> born_in);
    # comparable to one first-place reciprocal-rank vote (1/61)
    relation_bonus: float = within(0.015, 0.0, 1.0)
    # how much a fact's confidence scales its score: score * (1 - w + w * confidence). Feedback moves
    # confidences, so a fact used in rejected answers sinks below one that was confirmed; 0 ignores it.
    # 0.5 (scenario eval, fake models): 1.0 let the extractor's 0.8 for pronoun-resolved facts sink
    # them under unrelated 0.9 facts (pronoun answers 6/10 -> 3/10); 0.5 and 0.3 changed nothing
    confidence_weight: float = within(0.5, 0.0, 1.0)
    # a user's own fact in a single-valued slot hides a shared fact in the same slot (same subject and
    # relation): a user's correction of shared knowledge cannot supersede it for everyone, but holds
    # for them; the 135M model otherwise often answers from the shared fact it is also shown
    own_over_shared: bool = True

    def __post_init__(self) -> None:
        check(self)  # every within() field in its range


@dataclass(frozen=True)
class UsedFact:
    """A fact put in front of the model, with its number in the prompt and why it was chosen."""

    number: int
    fact: Fact
    score: float
    why: str  # "search", "entity:mary", "2-hop:john via mary"


_RRF = 60.0
_WORD = re.compile(r"[a-z]+")
# Words a question uses for a relation, keyed by the words of relation names ("lives_in" -> lives, in).
# The retriever ranks a fact up when its relation is what the question asks about, e.g. "Where was I
# born?" prefers born_in over born_on, "What music do I like?" prefers likes over favorite_color.
_RELATION_WORDS: dict[str, frozenset[str]] = {
    "lives": frozenset({"live", "home", "reside", "city", "town", "moved", "where"}),
    "works": frozenset({"work", "working", "job", "employer", "company", "employed"}),
    "born": frozenset({"born", "birth", "birthday", "birthplace"}),
    "on": frozenset({"when", "date", "day", "birthday"}),
    "in": frozenset({"where", "city", "country", "place", "town"}),
    "at": frozenset({"where", "company", "place"}),
    "studies": frozenset({"study", "studying", "university", "school", "college", "student"}),
    "speaks": frozenset({"speak", "speaking", "language", "languages"}),
    "likes": frozenset({"like", "love", "enjoy", "music", "hobby", "hobbies", "fan"}),
    "dislikes": frozenset({"dislike", "hate", "avoid", "stand"}),
    "name": frozenset({"name", "called", "call"}),
    "age": frozenset({"old", "age"}),
    "occupation": frozenset({"job", "living", "profession", "occupation"}),
    "owns": frozenset({"own", "car", "drive", "have"}),
    "favorite": frozenset({"favorite", "favourite"}),
    "color": frozenset({"color", "colour"}),
    "pet": frozenset({"pet", "animal", "dog", "cat"}),
    "comes": frozenset({"from", "come", "hometown"}),
    "from": frozenset({"from"}),
}
_PERSON_RELATIONS = frozenset({"sister", "brother", "mother", "father", "husband", "wife", "spouse", "friend", "son",
                               "daughter", "partner", "boss", "manager", "married_to", "child", "parent"})


def relation_cue(question_words: frozenset[str], relation: str) -> int:
    """How many ways the question's words point at ``relation`` (0 = not at all)."""
    parts = relation.split("_")
    score = sum(1 for p in parts if p in question_words)  # "sister" in "who is my sister"
    score += sum(1 for p in parts if _RELATION_WORDS.get(p, frozenset()) & question_words)
    if relation in _PERSON_RELATIONS and "who" in question_words:
        score += 1
    return score


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

    def retrieve(self, text: str, turn: "Turn", state: "DialogueState", user: str,
                 text_vector: np.ndarray | None = None) -> list[UsedFact]:
        """Up to k facts for this turn, best first. ``text_vector`` is the embedding of ``text``, used
        when resolving references left the query unchanged (saves one embedding per turn)."""
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
            # one embedding per turn: the words as said stand in for the resolved query in the dense
            # list; the resolved names still reach BM25 and the graph
            hits = self.kb.search(query, k=cfg.k * 2, user=user, kinds=["fact"], query_vector=text_vector)
        except KBError:
            hits = []
        for h in hits:
            weak = (h.vector_score is not None and h.vector_score < cfg.min_vector_score
                    and h.keyword_rank is None and not h.via_entities)
            if h.fact is not None and not weak:
                offer(h.fact, h.score, "search")
        entities = self._ordered_entities(state, turn, user)[: cfg.max_entities]
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
        words = frozenset(_WORD.findall(text.lower()))
        if turn.intent.value == "question":
            for fid, f in facts.items():
                scores[fid] += cfg.relation_bonus * relation_cue(words, f.relation)
        for fid, f in facts.items():
            scores[fid] *= 1.0 - cfg.confidence_weight + cfg.confidence_weight * f.confidence
        if cfg.own_over_shared:
            mine = {(f.subject, f.relation) for f in facts.values() if f.user == user}
            for fid in [fid for fid, f in facts.items()
                        if f.shared and (f.subject, f.relation) in mine and self.kb.single_valued(f.relation)]:
                del facts[fid]
        ranked = sorted(facts.values(), key=lambda f: (-scores[f.id], f.id))[: cfg.k]
        return [UsedFact(i, f, scores[f.id], why[f.id]) for i, f in enumerate(ranked, start=1)]

    def _ordered_entities(self, state: "DialogueState", turn: "Turn", user: str) -> list[str]:
        """State entities, with the user's own entity after the others this turn names: in "where does
        my sister live?" the question is about the sister, not about the user who owns her."""
        ents = state.entities()
        me = self.kb.resolve(user)
        named = {self.kb.resolve(e) for e in turn.references.values()} | {
            self.kb.resolve(m.entity) for m in turn.mentions if m.label != "UNNAMED"}
        if named - {me}:
            ents = sorted(ents, key=lambda e: self.kb.resolve(e) == me)  # stable: others keep their order
        return ents

    def _facts_about(self, entity: str, user: str, limit: int) -> list[Fact]:
        try:
            return self.kb.about(entity, user=user, limit=limit)  # subject side first, newest first
        except KBError:
            return []
