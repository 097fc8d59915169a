"""Hybrid search: FAISS vectors + SQLite FTS5 BM25 + graph expansion, fused by reciprocal rank.

Every candidate list is filtered by the log (user scope, status, validity time) before it is
ranked, so forgotten or superseded facts and other users' private facts can never surface.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from kb.facts import Episode, Fact, Hit, Kind, normalize_name

if TYPE_CHECKING:
    from kb.log import FactLog
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


@dataclass(frozen=True)
class Scope:
    """SQL fragments selecting what one search may see."""

    user: str | None  # None: every user (administrators); otherwise the user plus shared facts
    as_of: float | None  # None: what is current now; else what was true at that unix time

    def fact_sql(self, alias: str = "", lookup: bool = True) -> tuple[str, list]:
        """WHERE fragment and parameters. ``lookup``: rows are already pinned by their id or another
        index, so the filter columns are written ``+col`` to stop SQLite from scanning the per-user
        index instead (which turned a 40-row id lookup into a scan of the user's facts: 9 ms at 100k)."""
        p = ("+" if lookup else "") + (alias + "." if alias else "")
        where, params = [], []
        if self.user is not None:
            where.append(f"{p}user IN (?, '')")
            params.append(self.user)
        if self.as_of is None:
            where.append(f"{p}status='active'")
        else:
            where.append(f"{p}status!='forgotten' AND {p}valid_from<=? AND ({p}valid_to IS NULL OR {p}valid_to>?)")
            params += [self.as_of, self.as_of]
        return " AND ".join(where), params

    def episode_sql(self, alias: str = "", lookup: bool = True) -> tuple[str, list]:
        p = ("+" if lookup else "") + (alias + "." if alias else "")
        where, params = [f"{p}status='active'"], []
        if self.user is not None:
            where.append(f"{p}user=?")
            params.append(self.user)
        if self.as_of is not None:
            where.append(f"{p}time<=?")
            params.append(self.as_of)
        return " AND ".join(where), params


def mentioned_entities(log: "FactLog", aliases: dict[str, str], query: str, max_n: int = 4) -> list[str]:
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

    def __init__(self, log: "FactLog", keeper: "IndexKeeper", rrf_k: int):
        self.log = log
        self.keeper = keeper  # its .index may be replaced by a rebuild or compaction
        self.rrf_k = rrf_k

    # ------------------------------------------------------------------ retrievers

    def vector_ranked(self, qv: np.ndarray, k: int, scope: Scope, kinds: Sequence[Kind]) -> list[tuple[int, float]]:
        """[(vector id, cosine)] best first, after scope filtering; widens the fetch until k survive."""
        fetch = max(4 * k, 32)
        while True:
            scores, ids = self.keeper.index.search(qv, min(fetch, MAX_FETCH))
            kept = self._visible(ids, scope, kinds)
            ranked = [(int(i), float(s)) for s, i in zip(scores, ids) if int(i) in kept]
            exhausted = len(ids) < min(fetch, MAX_FETCH)
            if len(ranked) >= k or exhausted:
                return ranked
            if fetch >= MAX_FETCH:
                return self._exact_scan(qv, k, scope, kinds)
            fetch *= 4

    def _visible(self, ids: np.ndarray, scope: Scope, kinds: Sequence[Kind]) -> set[int]:
        fr = [int(i) >> 1 for i in ids if not i & 1]
        er = [int(i) >> 1 for i in ids if i & 1]
        out: set[int] = set()
        if fr and Kind.FACT in kinds:
            w, p = scope.fact_sql()
            q = ",".join("?" * len(fr))
            out.update(2 * r for (r,) in self.log.db.execute(f"SELECT vid FROM facts WHERE vid IN ({q}) AND {w}", fr + p))
        if er and Kind.EPISODE in kinds:
            w, p = scope.episode_sql()
            q = ",".join("?" * len(er))
            out.update(2 * r + 1 for (r,) in self.log.db.execute(f"SELECT vid FROM episodes WHERE vid IN ({q}) AND {w}", er + p))
        return out

    def _exact_scan(self, qv: np.ndarray, k: int, scope: Scope, kinds: Sequence[Kind]) -> list[tuple[int, float]]:
        """Brute force over the visible rows' stored vectors: used when the scope is a tiny slice."""
        best: list[tuple[int, float]] = []
        for table, kind, odd in (("facts", Kind.FACT, 0), ("episodes", Kind.EPISODE, 1)):
            if kind not in kinds:
                continue
            w, p = scope.fact_sql(lookup=False) if kind is Kind.FACT else scope.episode_sql(lookup=False)
            cur = self.log.db.execute(f"SELECT vid, vector FROM {table} WHERE {w} AND vector IS NOT NULL", p)
            while rows := cur.fetchmany(20_000):
                vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
                sims = vecs @ qv  # (n,)
                top = np.argsort(-sims)[:k]
                best += [(2 * rows[i][0] + odd, float(sims[i])) for i in top]
        best.sort(key=lambda t: -t[1])
        return best[:k]

    def keyword_ranked(self, query: str, k: int, scope: Scope, kinds: Sequence[Kind]) -> list[int]:
        """Vector ids ranked by BM25 over fact and episode texts (best first)."""
        terms = query_terms(query)
        scored: list[tuple[float, int]] = []
        if Kind.FACT in kinds and (match := fts_query(self._selective(terms, "facts_fts"))):
            w, p = scope.fact_sql("f")
            rows = self.log.db.execute(
                f"SELECT f.vid, bm25(facts_fts) AS s FROM facts_fts JOIN facts f ON f.vid = facts_fts.rowid "
                f"WHERE facts_fts MATCH ? AND {w} ORDER BY s LIMIT ?", [match, *p, k],
            ).fetchall()
            scored += [(s, 2 * r) for r, s in rows]
        if Kind.EPISODE in kinds and (match := fts_query(self._selective(terms, "episodes_fts"))):
            w, p = scope.episode_sql("e")
            rows = self.log.db.execute(
                f"SELECT e.vid, bm25(episodes_fts) AS s FROM episodes_fts JOIN episodes e ON e.vid = episodes_fts.rowid "
                f"WHERE episodes_fts MATCH ? AND {w} ORDER BY s LIMIT ?", [match, *p, k],
            ).fetchall()
            scored += [(s, 2 * r + 1) for r, s in rows]
        scored.sort()  # bm25() is lower-is-better
        return [vid for _, vid in scored[:k]]

    def _selective(self, terms: Sequence[str], table: str) -> list[str]:
        """Terms that match at most COMMON_TERM_ROWS rows (probing stops counting there)."""
        keep = []
        for t in terms:
            n = self.log.db.execute(
                f"SELECT count(*) FROM (SELECT rowid FROM {table} WHERE {table} MATCH ? LIMIT {COMMON_TERM_ROWS + 1})",
                ('"' + t.replace('"', '""') + '"',),
            ).fetchone()[0]
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
        w, p = scope.fact_sql()
        q = ",".join("?" * len(ents))
        rows = self.log.db.execute(
            f"SELECT vid, subject, object FROM facts WHERE (subject IN ({q}) OR object IN ({q})) AND {w} "
            f"ORDER BY confidence DESC, stated_at DESC LIMIT ?",
            [*ents, *ents, *p, k],
        ).fetchall()
        found = set(ents)
        return [(2 * r, tuple(e for e in (s, o) if e in found)) for r, s, o in rows]

    def _degree(self, entity: str) -> int:
        """Facts on which ``entity`` is subject or object, counted up to COMMON_TERM_ROWS + 1."""
        cap = COMMON_TERM_ROWS + 1
        n = self.log.db.execute(f"SELECT count(*) FROM (SELECT 1 FROM facts WHERE subject=? LIMIT {cap})", (entity,)).fetchone()[0]
        if n < cap:
            n += self.log.db.execute(f"SELECT count(*) FROM (SELECT 1 FROM facts WHERE object=? LIMIT {cap})", (entity,)).fetchone()[0]
        return n

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
        kw = self.keyword_ranked(query, fetch, scope, kinds)
        lists.append(kw)
        kw_rank = {v: i + 1 for i, v in enumerate(kw)}
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
        facts = self.log.facts_by_rowids([v >> 1 for v, _ in top if not v & 1])
        eps = self.log.episodes_by_rowids([v >> 1 for v, _ in top if v & 1])
        hits: list[Hit] = []
        for vid, score in top:
            common = dict(score=score, vector_score=vec_scores.get(vid), keyword_rank=kw_rank.get(vid),
                          via_entities=via.get(vid, ()))
            if vid & 1:
                ep: Episode | None = eps.get(vid >> 1)
                if ep is not None:
                    hits.append(Hit(kind=Kind.EPISODE, episode=ep, **common))
            else:
                f: Fact | None = facts.get(vid >> 1)
                if f is not None:
                    hits.append(Hit(kind=Kind.FACT, fact=f, **common))
        return hits
