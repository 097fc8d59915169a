"""Hybrid search: FAISS vectors + SQLite FTS5 BM25 + graph expansion, fused by reciprocal rank.

Every candidate list is filtered by the log (user scope, status, validity time) before it is
ranked, so forgotten or superseded facts and other users' private facts can never surface.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from kb.errors import InvalidInputError
from kb.facts import Episode, Hit, Kind, clean_text, normalize_name
from kb.log import Scope, Storage
from kb.maintenance import IndexKeeper

_WORD = re.compile(r"\w+", re.UNICODE)
# words never looked up as entities on their own, and dropped from keyword queries
STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being am do does
    did have has had i me my mine you your yours he him his she her hers it its we us our they them their
    what which who whom whose when where why how this that these those there here not no yes so than
    too very can could should would will shall may might must about into over under again also just
    tell know please any some all each""".split()
)
#: most candidates one list contributes before fusion
MAX_FETCH = 4096
#: a keyword matching more rows than this carries little information and would make BM25 score
#: every one of them (tens of ms at 1M facts): such terms are left to the vector retriever
COMMON_TERM_ROWS = 2000


def mentioned_entities(log: Storage, aliases: dict[str, str], query: str, max_n: int = 4) -> list[str]:
    """Known entity names (alias-resolved) that occur as 1..max_n word n-grams of the query."""
    words = [w for w in _WORD.findall(query)]
    grams: dict[str, None] = {}
    for n in range(max_n, 0, -1):
        for i in range(len(words) - n + 1):
            g = normalize_name(" ".join(words[i : i + n]))
            if n == 1 and (g in STOPWORDS or len(g) < 2):
                continue
            grams[aliases.get(g, g)] = None
    return log.known_entities(list(grams))


def check_search_args(query: object, k: object, kinds: Sequence) -> tuple[str, tuple[Kind, ...]]:
    """The cleaned query and distinct kinds of a search call; raises naming a bad value."""
    q = clean_text(query, "query")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
        raise InvalidInputError(f"k={k!r} is invalid; give an integer from 1 to 1000")
    kinds_t = tuple(dict.fromkeys(Kind.parse(x) for x in kinds))
    if not kinds_t:
        raise InvalidInputError("kinds is empty; give fact and/or episode")
    return q, kinds_t


def query_terms(query: str) -> list[str]:
    """Distinct content words of a query, in order (stopwords dropped), at most 32."""
    terms: list[str] = []
    for w in _WORD.findall(query.casefold()):
        if w not in STOPWORDS and w not in terms:
            terms.append(w)
    return terms[:32]


def fts_query(terms: Sequence[str]) -> str | None:
    """An FTS5 MATCH expression OR-ing the terms, each quoted (no syntax injection)."""
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


class HybridSearcher:
    """Runs the three retrievers over one log + index and fuses their rankings."""

    def __init__(self, log: Storage, keeper: IndexKeeper, rrf_k: int):
        self.log = log
        self.keeper = keeper  # its indexes may be replaced by a rebuild or compaction
        self.rrf_k = rrf_k

    # ------------------------------------------------------------------ retrievers

    def vector_ranked(self, qv: np.ndarray, k: int, scope: Scope, kinds: Sequence[Kind]) -> list[tuple[int, float]]:
        """[(vector id, cosine)] best first, after scope filtering; widens the fetch until k survive."""
        fetch = max(4 * k, 32)
        while True:
            scores, ids = self.keeper.nearest(qv, min(fetch, MAX_FETCH), kinds)
            kept = self._visible(ids, scope, kinds)
            mask = np.isin(ids, np.fromiter(kept, dtype=np.int64, count=len(kept)))
            ranked = list(zip(ids[mask].tolist(), scores[mask].tolist()))
            exhausted = len(ids) < min(fetch, MAX_FETCH)
            if len(ranked) >= k or exhausted:
                return ranked
            if fetch >= MAX_FETCH or (len(ranked) + 1) * MAX_FETCH < k * len(ids):
                # at this survival rate even MAX_FETCH would not yield k (a facts-only search in a KB
                # of mostly episodes): scan the visible rows at once instead of widening in vain. The
                # rate is smoothed (+1): none surviving the first fetch is weak evidence when the
                # nearest rows are all of the other kind (the conversation itself, near its question)
                return self._exact_scan(qv, k, scope, kinds)
            fetch *= 4

    def _visible(self, ids: np.ndarray, scope: Scope, kinds: Sequence[Kind]) -> set[int]:
        return self.log.visible(ids, scope, kinds)

    def _exact_scan(self, qv: np.ndarray, k: int, scope: Scope, kinds: Sequence[Kind]) -> list[tuple[int, float]]:
        """Brute force over the visible rows' stored vectors: used when the scope is a tiny slice."""
        best: list[tuple[int, float]] = []
        for kind in (Kind.FACT, Kind.EPISODE):
            if kind not in kinds:
                continue
            for ids, vecs in self.log.scan_vectors(kind, scope):
                sims = vecs @ qv  # (n,)
                top = np.argsort(-sims)[:k]
                best += [(int(ids[i]), float(sims[i])) for i in top]
        best.sort(key=lambda t: -t[1])
        return best[:k]

    def keyword_ranked(self, query: str, k: int, scope: Scope, kinds: Sequence[Kind]) -> list[tuple[int, float]]:
        """[(vector id, BM25 score: higher is better)] over fact and episode texts, best first."""
        terms = query_terms(query)
        scored: list[tuple[float, int]] = []
        for kind in (Kind.FACT, Kind.EPISODE):
            if kind in kinds and (match := fts_query(self._selective(terms, kind))):
                scored += self.log.keyword(kind, match, scope, k)
        scored.sort()  # bm25() is lower-is-better
        return [(vid, -s) for s, vid in scored[:k]]

    def _selective(self, terms: Sequence[str], kind: Kind) -> list[str]:
        """Terms that match at most COMMON_TERM_ROWS rows (probing stops counting there)."""
        keep = []
        for t in terms:
            n = self.log.term_rows(kind, '"' + t.replace('"', '""') + '"', COMMON_TERM_ROWS + 1)
            if 0 < n <= COMMON_TERM_ROWS:
                keep.append(t)
        return keep

    def graph_ranked(self, entities: Sequence[str], k: int, scope: Scope) -> list[tuple[int, tuple[str, ...]]]:
        """Facts touching the query's entities (1 hop), most confident and recent first.

        Hub entities (on more than COMMON_TERM_ROWS facts, e.g. a city everyone lives in) are
        skipped: they say little about the query and sorting all their facts is what costs.
        """
        ents = [e for e in entities if self._degree(e) <= COMMON_TERM_ROWS]
        if not ents:
            return []
        found = set(ents)
        return [(vid, tuple(e for e in (s, o) if e in found)) for vid, s, o in self.log.facts_touching(ents, scope, k)]

    def _degree(self, entity: str) -> int:
        """Facts on which ``entity`` is subject or object, counted up to COMMON_TERM_ROWS + 1."""
        return self.log.entity_degree(entity, COMMON_TERM_ROWS + 1)

    # ------------------------------------------------------------------ fusion

    def search(self, query: str, qv: np.ndarray | None, k: int, scope: Scope, kinds: Sequence[Kind],
               entities: Sequence[str]) -> list[Hit]:
        fetch = max(2 * k, 20)
        lists: list[list[int]] = []
        vec_scores: dict[int, float] = {}
        if qv is not None:
            vr = self.vector_ranked(qv, fetch, scope, kinds)
            vec_scores = dict(vr)
            lists.append([v for v, _ in vr])
        kw_scored = self.keyword_ranked(query, fetch, scope, kinds)
        kw = [v for v, _ in kw_scored]
        lists.append(kw)
        kw_rank = {v: i + 1 for i, v in enumerate(kw)}
        kw_score = dict(kw_scored)
        via: dict[int, tuple[str, ...]] = {}
        if Kind.FACT in kinds:
            gr = self.graph_ranked(entities, fetch, scope)
            via = dict(gr)
            lists.append([v for v, _ in gr])
        fused: dict[int, float] = {}
        for ranked in lists:
            for rank, vid in enumerate(ranked, start=1):
                fused[vid] = fused.get(vid, 0.0) + 1.0 / (self.rrf_k + rank)
        top = sorted(fused.items(), key=lambda t: (-t[1], t[0]))[:k]
        found = self.log.records([v for v, _ in top])
        hits: list[Hit] = []
        for vid, score in top:
            rec = found.get(vid)
            if rec is None:
                continue
            common = dict(score=score, vector_score=vec_scores.get(vid), keyword_rank=kw_rank.get(vid),
                          keyword_score=kw_score.get(vid), via_entities=via.get(vid, ()))
            if isinstance(rec, Episode):
                hits.append(Hit(kind=Kind.EPISODE, episode=rec, **common))
            else:
                hits.append(Hit(kind=Kind.FACT, fact=rec, **common))
        return hits
