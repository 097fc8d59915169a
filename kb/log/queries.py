"""The retrieval queries of hybrid search (FactLog's search methods): scope filters, BM25, graph, scans."""
from __future__ import annotations

import sqlite3
from typing import Iterator, Sequence

import numpy as np

from kb.facts import Kind
from kb.log import vids
from kb.log.scope import Scope

_FTS = {Kind.FACT: ("facts", "facts_fts"), Kind.EPISODE: ("episodes", "episodes_fts")}
#: the covering index of each table's scope columns (schema 4): a visibility check reads it alone,
#: never the wide rows (texts and vectors spill onto overflow pages)
_SCOPE_INDEX = {Kind.FACT: "facts_scope", Kind.EPISODE: "episodes_scope"}
#: scans of at most this many rows are kept (20k x 384 float32: 30 MB), and at most this many scans
SCAN_CACHE_ROWS = 20_000
SCAN_CACHE_ENTRIES = 4


def _sql(scope: Scope, kind: Kind, alias: str = "", lookup: bool = True) -> tuple[str, list]:
    return scope.fact_sql(alias, lookup) if kind is Kind.FACT else scope.episode_sql(alias, lookup)


class QueriesMixin:
    """What the retrievers of kb.search ask; every method speaks vector ids."""

    db: sqlite3.Connection
    generation: int
    _scans: dict  # (kind, scope, batch, generation, data_version) -> the batches of one scan_vectors

    def visible(self, vector_ids: Sequence[int], scope: Scope, kinds: Sequence[Kind]) -> set[int]:
        """The vector ids among ``vector_ids`` whose rows ``scope`` may see."""
        ids = np.asarray(vector_ids, dtype=np.int64)
        out: set[int] = set()
        for kind in kinds:
            rows = vids.rows_of(ids, kind)
            if rows:
                w, p = _sql(scope, kind)
                q = ",".join("?" * len(rows))
                seen = self.db.execute(f"SELECT vid FROM {_FTS[kind][0]} INDEXED BY {_SCOPE_INDEX[kind]} "
                                       f"WHERE vid IN ({q}) AND {w}", rows + p).fetchall()
                out.update(vids.encode_many(kind, [r for (r,) in seen]).tolist())
        return out

    def scan_vectors(self, kind: Kind, scope: Scope, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vector ids (n,), vectors (n, dim)) of every row ``scope`` may see, in batches.

        A scan of at most SCAN_CACHE_ROWS rows is kept until the database changes (a commit here or by
        another connection): a facts-only search in a KB of mostly episodes repeats the same scan of
        a user's facts at every turn, and reading their vectors is most of its cost."""
        # inside an open transaction the database may hold writes no counter has seen yet: no cache
        key = None if self.db.in_transaction else (
            kind, scope, batch, self.generation, self.db.execute("PRAGMA data_version").fetchone()[0])
        if key is not None and (hit := self._scans.get(key)) is not None:
            yield from hit
            return
        w, p = _sql(scope, kind, lookup=False)
        cur = self.db.execute(f"SELECT vid, vector FROM {_FTS[kind][0]} WHERE {w} AND vector IS NOT NULL", p)
        done: list[tuple[np.ndarray, np.ndarray]] = []
        while rows := cur.fetchmany(batch):
            ids = vids.encode_many(kind, [r[0] for r in rows])
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            done.append((ids, vecs))
            yield ids, vecs
        if key is not None and sum(len(i) for i, _ in done) <= SCAN_CACHE_ROWS:
            if len(self._scans) >= SCAN_CACHE_ENTRIES or any(k[3:] != key[3:] for k in self._scans):
                self._scans.clear()  # stale or full: scans of an older database state are never read again
            self._scans[key] = done

    def term_rows(self, kind: Kind, term: str, cap: int) -> int:
        """Rows whose text holds ``term`` (a quoted FTS5 phrase), counted up to ``cap``."""
        table = _FTS[kind][1]
        return self.db.execute(
            f"SELECT count(*) FROM (SELECT rowid FROM {table} WHERE {table} MATCH ? LIMIT {int(cap)})", (term,),
        ).fetchone()[0]

    def keyword(self, kind: Kind, match: str, scope: Scope, k: int) -> list[tuple[float, int]]:
        """(bm25 score, vector id) of the best ``k`` visible rows matching ``match``; lower is better."""
        table, fts = _FTS[kind]
        w, p = _sql(scope, kind, "t")
        rows = self.db.execute(
            f"SELECT t.vid, bm25({fts}) AS s FROM {fts} JOIN {table} t INDEXED BY {_SCOPE_INDEX[kind]} "
            f"ON t.vid = {fts}.rowid "
            f"WHERE {fts} MATCH ? AND {w} ORDER BY s LIMIT ?", [match, *p, k],
        ).fetchall()
        return [(s, vids.encode(kind, r)) for r, s in rows]

    def facts_touching(self, entities: Sequence[str], scope: Scope, k: int) -> list[tuple[int, str, str]]:
        """(vector id, subject, object) of visible facts on these entities, most confident and recent first."""
        w, p = scope.fact_sql()
        q = ",".join("?" * len(entities))
        rows = self.db.execute(
            f"SELECT vid, subject, object FROM facts WHERE (subject IN ({q}) OR object IN ({q})) AND {w} "
            f"ORDER BY confidence DESC, stated_at DESC LIMIT ?",
            [*entities, *entities, *p, k],
        ).fetchall()
        return [(vids.fact_vid(r), s, o) for r, s, o in rows]
