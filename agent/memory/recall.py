"""Recall: the memories (facts and episodes) the agent puts in front of its model for one message.

One ranking serves every caller: the turn pipeline, ``Agent.recall``, and later the LangChain
retriever, MCP and the server. Stages, each kept only where the dev benchmark
(``bench/memory_eval.py``) showed it helps; the README's memory section has the ablation table:

1. hybrid candidates: ``KnowledgeBase.search`` over facts and episodes (FAISS cosine + FTS5 BM25 +
   graph expansion) on the words as said, re-scored by a convex fusion of the normalised dense and
   BM25 scores;
2. the fact retriever's facts (entity walk, relation cues, confidence) merged in;
3. supersession: an episode whose facts were all superseded or retracted sinks below current ones,
   and one that taught a fact the user had forgotten is not recalled;
4. time: nothing said after ``now`` is recalled;
5. session aggregation: a turn gains a share of the best other hits of its session;
6. neighbour expansion: the turns next to the best hits (question and answer often span an exchange).
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from agent.memory.ranker import Scoring, minmax, features, load
from agent.errors import BadInputError
from agent.validation import check, within
from kb import Episode, Fact, Hit, KnowledgeBase, Kind, Role
from kb.errors import KBError


@dataclass(frozen=True)
class Memory:
    """One recalled memory: a fact or an episode, with where it came from and why it ranks here."""

    id: str  # fact id (f_...) or episode id (e_...)
    kind: Kind
    text: str  # the fact's sentence, or the utterance verbatim
    time: float  # when it was said (episode) or became true (fact), unix seconds
    score: float  # higher is better; comparable within one recall only
    source_ids: tuple[str, ...]  # the turns it came from (an episode's own; every source of a fact)
    speaker: str  # who said it ("assistant" for the agent's own turns); facts: their first source's user
    role: str  # kb.Role value; the assistant's turns never count as evidence about the user's world
    session: str | None = None
    position: int | None = None
    why: str = "search"  # "search", "entity:mary", "neighbour of e_...", ...
    stale: bool = False  # an episode whose facts were all superseded or retracted since
    fact_rank: int | None = None  # the fact retriever's rank (1 = best) when it chose this fact: the prompt
    # cites facts in that order (relation cues, confidence), measured on the scenario set
    fact: Fact | None = None
    episode: Episode | None = None


@dataclass(frozen=True)
class RecallConfig:
    """How recall ranks memories; defaults measured on the LongMemEval dev split (README)."""

    # memories returned by Agent.recall when the caller gives no k
    k: int = within(10, 1, 1000)
    # candidates drawn from hybrid search before re-ranking; more finds more but costs FAISS/SQL time
    candidates: int = within(100, 1, 1000)
    # facts compete with episodes in the joint search (else only the fact retriever's facts come in)
    search_facts: bool = True
    # LEARNED: the packaged logistic regression over each candidate's features (agent/memory/ranker.py;
    # grouped cross-validation on the dev split in the README); HAND: the convex fusion below
    scoring: Scoring = Scoring.HAND
    # weights for LEARNED other than the packaged ones (a JSON file bench/train_ranker.py writes)
    ranker_path: str | None = None
    # share of the dense (MiniLM cosine) score in the convex fusion with BM25, both min-max normalised
    # over the candidates; the middle of a plateau (0.5..0.7) on the dev split, where it beat
    # reciprocal-rank fusion by 3 points of any@5 (README, memory ablation)
    dense_share: float = within(0.6, 0.0, 1.0)
    # added to a fact the graph reached from the question's entities (in normalised score units)
    graph_weight: float = within(0.1, 0.0, 10.0)
    # extra weight of human turns (the user's and other people's) over the assistant's
    human_boost: float = within(0.5, 0.0, 10.0)
    # share of a session's best other hit added to each of its turns (0 = off): evidence sessions
    # tend to match the question in several turns
    session_weight: float = within(0.0, 0.0, 1.0)
    # neighbours added on each side of the top hits, and how many top hits are expanded
    neighbours: int = within(0, 0, 1000)
    expand_top: int = within(3, 0, 1000)
    # a neighbour's score as a share of the hit it came from
    neighbour_weight: float = within(0.5, 0.0, 1.0)
    # score factor of a fact reached only by the entity walk, not by search (see Recaller.recall)
    walk_factor: float = within(0.2, 0.0, 1.0)
    # score factor of an episode all of whose facts were superseded or retracted
    superseded_factor: float = within(0.1, 0.0, 1.0)
    # a human turn scoring at least this share of the best memory is evidence a fused answer must be
    # found in, else the text path answers (agent.fusion.fuser.Fuser.stream): the adapter reads facts only
    evidence_ratio: float = within(0.8, 0.0, 1.0)
    # episodes put in the prompt next to the facts (a 135M model reads few well)
    prompt_episodes: int = within(3, 0, 1000)
    # characters of an episode shown in the prompt: the window of sentences that best matches the query
    snippet_chars: int = within(300, 40, 100000)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scoring", Scoring.parse(self.scoring))
        check(self)  # every within() field in its range
        if self.ranker_path is not None and not isinstance(self.ranker_path, str):
            raise BadInputError(f"ranker_path={self.ranker_path!r} is invalid; give a path to a JSON file or None")


#: the learned ranker's best candidate scores this (see Recaller._fuse)
_LEARNED_TOP = 1.5


def fact_memory(f: Fact, score: float, why: str) -> Memory:
    srcs = tuple(s.source_id for s in f.sources if s.source_id)
    speaker = f.sources[0].user if f.sources and f.sources[0].user else f.user
    return Memory(f.id, Kind.FACT, f.text, f.valid_from, score, srcs, speaker or "", Role.USER.value,
                  why=why, fact=f)


def episode_memory(e: Episode, score: float, why: str) -> Memory:
    return Memory(e.id, Kind.EPISODE, e.text, e.time, score, (e.source_id,) if e.source_id else (),
                  e.speaker, e.role, e.session, e.position, why, episode=e)


class Recaller:
    """Ranks facts and episodes for one query; stateless apart from the KB it reads."""

    def __init__(self, kb: KnowledgeBase, config: RecallConfig):
        self.kb = kb
        self.config = config

    def recall(self, query: str, *, user: str, k: int, now: float | None = None,
               query_vector: np.ndarray | None = None, facts: Sequence[tuple[Fact, float, str]] = ()) -> list[Memory]:
        """Up to ``k`` memories for ``query``, best first. ``facts`` are (fact, score, why) from the fact
        retriever; ``now`` hides what was said later (imported histories, benchmarks)."""
        cfg = self.config
        found: dict[str, Memory] = {}

        def offer(m: Memory) -> None:
            old = found.get(m.id)
            if old is None or m.score > old.score:
                found[m.id] = m

        try:
            kinds = (Kind.EPISODE, Kind.FACT) if cfg.search_facts else (Kind.EPISODE,)
            hits = self.kb.search(query, k=max(cfg.candidates, k), user=user, query_vector=query_vector,
                                  as_of=now, kinds=kinds)  # facts as they stood then; episodes said by then
        except KBError:
            hits = []
        scored = self._fuse(hits, query)
        for h, score in zip(hits, scored):
            if h.fact is not None:
                offer(fact_memory(h.fact, score, "search"))
            elif h.episode is not None:
                offer(episode_memory(h.episode, score, "search"))
        searched = {h.fact.id: score for h, score in zip(hits, scored) if h.fact is not None}
        top = max((score for _, score, _ in facts), default=0.0) or 1.0
        for rank, (f, score, why) in enumerate(facts, start=1):
            # the retriever's score adds the walk around the question's entities ("my" reaches every
            # fact about the user) and relation cues: context for ranking facts among themselves, so it
            # counts (as a share of its best) at walk_factor next to the joint search and cannot bury
            # the turn that answers
            m = fact_memory(f, searched.get(f.id, 0.0) + cfg.walk_factor * score / top, why)
            found[m.id] = replace(m, fact_rank=rank)
        if now is not None:
            found = {i: m for i, m in found.items() if m.time <= now}
        found = self._demote_superseded(found, now)
        if cfg.session_weight:
            found = self._aggregate_sessions(found)
        if cfg.neighbours:
            for m in self._neighbours(found, user, now):
                found.setdefault(m.id, m)
        return sorted(found.values(), key=lambda m: (-m.score, m.id))[:k]

    def _fuse(self, hits: Sequence[Hit], query: str) -> list[float]:
        """Each hit's score: a convex combination of its dense cosine and its BM25 score, each min-max
        normalised over the candidates (a list a hit is missing from counts 0), plus a graph vote,
        times the speaker's weight. Scores keep how far apart hits are, which ranks throw away: on the
        dev split a first place in one list with nothing in the other no longer outranks a hit both
        lists rate well (Bruch et al. 2022 found the same against reciprocal-rank fusion)."""
        cfg = self.config
        if cfg.scoring is Scoring.LEARNED:
            if not hits:
                return []
            z = load(cfg.ranker_path).logit(features(hits, query))
            # min-max onto the hand fusion's scale (its best human turn scores about 1.5): the fact
            # retriever's walk and the supersession factor below add and multiply in those units
            return [v * _LEARNED_TOP for v in minmax(z.tolist())]
        dense = minmax([h.vector_score for h in hits])
        bm25 = minmax([h.keyword_score for h in hits])
        out = []
        for h, d, b in zip(hits, dense, bm25):
            s = cfg.dense_share * d + (1.0 - cfg.dense_share) * b
            if h.via_entities:
                s += cfg.graph_weight
            if h.episode is None or h.episode.role != Role.ASSISTANT.value:
                s *= 1.0 + cfg.human_boost  # what people said, not the assistant's long replies
            out.append(s)
        return out

    def _demote_superseded(self, found: dict[str, Memory], now: float | None) -> dict[str, Memory]:
        eps = [i for i, m in found.items() if m.kind is Kind.EPISODE]
        try:
            taught = self.kb.facts_from_episodes(eps)
        except KBError:
            return found
        out = dict(found)
        for eid, facts in taught.items():
            if any(f.status.value == "forgotten" for f in facts):
                del out[eid]  # the user asked to forget what it taught: its words go too
            elif facts and not any(_current(f, now) for f in facts):
                out[eid] = replace(out[eid], score=out[eid].score * self.config.superseded_factor, stale=True)
        return out

    def _aggregate_sessions(self, found: dict[str, Memory]) -> dict[str, Memory]:
        by_session: dict[str, list[float]] = defaultdict(list)
        for m in found.values():
            if m.session is not None:
                by_session[m.session].append(m.score)
        out = {}
        for i, m in found.items():
            others = sorted(by_session.get(m.session or "", []), reverse=True)
            if m.session is not None and len(others) > 1:
                best_other = others[1] if others[0] == m.score else others[0]
                m = replace(m, score=m.score + self.config.session_weight * best_other)
            out[i] = m
        return out

    def _neighbours(self, found: dict[str, Memory], user: str, now: float | None) -> list[Memory]:
        cfg = self.config
        top = [m for m in sorted(found.values(), key=lambda m: -m.score)
               if m.kind is Kind.EPISODE and m.session is not None and m.position is not None][: cfg.expand_top]
        out = []
        for m in top:
            try:
                near = self.kb.session_episodes(user, m.session, max(0, m.position - cfg.neighbours),
                                                m.position + cfg.neighbours + 1)
            except KBError:
                continue
            for e in near:
                if e.id != m.id and (now is None or e.time <= now):
                    out.append(episode_memory(e, m.score * cfg.neighbour_weight, f"neighbour of {m.id}"))
        return out


def _current(f: Fact, now: float | None) -> bool:
    """Whether ``f`` held at ``now`` (default: holds today)."""
    if now is None:
        return f.status.value == "active"
    return f.valid_from <= now and (f.valid_to is None or f.valid_to > now)


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")


def snippet(text: str, query: str, max_chars: int) -> str:
    """The window of whole sentences of ``text`` (at most ``max_chars``) sharing most words with
    ``query``; long turns are cut to the part that answers, not to their first lines."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    sentences = [s for s in _SENTENCE.split(text) if s]
    q = set(_WORD.findall(query.lower())) - _STOP
    best, best_score = "", -1.0
    for i in range(len(sentences)):
        window, score, j = "", 0.0, i
        while j < len(sentences) and len(window) + len(sentences[j]) + 1 <= max_chars:
            window = f"{window} {sentences[j]}".strip()
            score += len(q & set(_WORD.findall(sentences[j].lower())))
            j += 1
        if not window:  # one sentence longer than the budget: cut it at a word
            window = sentences[i][:max_chars].rsplit(" ", 1)[0] + "…"
            score = len(q & set(_WORD.findall(window.lower())))
        if score > best_score + 1e-9:
            best, best_score = window, score
    return best


_STOP = frozenset(
    "a an the i me my we our you your he she it they them is are was were be been do did does to of in on at "
    "for with and or but what which who when where how why that this there have has had can could would "
    "should will about from as by so if".split())

