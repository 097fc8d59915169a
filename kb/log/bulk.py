"""Whole-table work of the log (FactLog's bulk methods): vectors for the index, counts, integrity, export."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from kb.facts import Kind
from kb.log import vids
from kb.log.base import chunks
from kb.log.rows import to_blob

_TABLE = {Kind.FACT: "facts", Kind.EPISODE: "episodes"}
EPISODE_KEYS = ("id", "user", "speaker", "text", "source_id", "time", "status", "session", "position", "role")
FACT_KEYS = ("id", "user", "subject", "relation", "object", "text", "confidence", "status", "stated_at",
             "valid_from", "valid_to", "superseded_by")


@dataclass(frozen=True)
class Section:
    """One record type of an export: its keys and the SELECT producing them in that order.

    The fact and episode SELECTs start with an extra vector-id column and, with vectors, end with the
    vector blob; ``kind`` says which (None for the other tables).
    """

    type: str
    keys: tuple[str, ...]
    sql: str
    params: tuple
    kind: Kind | None = None


@dataclass(frozen=True)
class Integrity:
    """Counts of inconsistencies inside the log (all zero / "ok" when healthy)."""

    quick_check: str  # SQLite's PRAGMA quick_check
    bad_vectors: int  # rows with no vector or one of the wrong size
    orphans: int  # facts without a source
    dangling: int  # facts superseded by a fact that does not exist
    multi_valued: list  # (user, subject, relation, n): single-valued slots with several current values
    bad_links: int  # sources pointing at missing episodes


class BulkMixin:
    """Vectors, counts, integrity checks and the export's SELECTs."""

    db: sqlite3.Connection

    # ----------------------------------------------------------------- vectors

    def vector_ids(self, include_forgotten: bool = False, kind: Kind | None = None) -> np.ndarray:
        """All vector ids the index should hold (sorted int64); of one ``kind`` when given."""
        cond = "" if include_forgotten else " WHERE status!='forgotten'"
        parts = [vids.encode_many(k, [r[0] for r in self.db.execute(f"SELECT vid FROM {t}{cond}")])
                 for k, t in _TABLE.items() if kind in (None, k)]
        return np.sort(np.concatenate(parts))

    def max_vector_id(self) -> int:
        """An upper bound of every vector id stored so far (grows with every insert)."""
        top = 0  # 0: no rows at all
        for k, t in _TABLE.items():
            rowid = self.db.execute(f"SELECT max(vid) FROM {t}").fetchone()[0]
            if rowid is not None:
                top = max(top, vids.encode(k, rowid))
        return top

    def iter_vectors(self, dim: int, vector_ids: np.ndarray | None = None, batch: int = 10_000,
                     kind: Kind | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids (n,), vectors (n, dim)) of stored vectors: of ``vector_ids``, or every one not
        forgotten (of one ``kind`` when given)."""
        if vector_ids is not None:
            for chunk in chunks(list(map(int, vector_ids)), 900):
                rows: list[tuple[int, bytes]] = []
                for k, rowids in zip(_TABLE, vids.partition(chunk)):
                    if rowids:
                        rows += [(vids.encode(k, r), b) for r, b in self.db.execute(
                            f"SELECT vid, vector FROM {_TABLE[k]} WHERE vid IN ({','.join('?' * len(rowids))})",
                            rowids)]
                if rows:
                    yield _stack(rows, dim)
            return
        for k, table in _TABLE.items():
            if kind not in (None, k):
                continue
            cur = self.db.execute(f"SELECT vid, vector FROM {table} WHERE status!='forgotten' ORDER BY vid")
            while rows := cur.fetchmany(batch):
                yield _stack([(vids.encode(k, r), b) for r, b in rows], dim)

    def texts(self, kind: Kind) -> list[tuple[int, str]]:
        """(vector id, text) of every row of one kind, any status."""
        return [(vids.encode(kind, r), t) for r, t in self.db.execute(f"SELECT vid, text FROM {_TABLE[kind]}")]

    def set_vectors(self, rows: Iterable[tuple[int, np.ndarray]]) -> None:
        """Replace stored vectors, keyed by vector id."""
        by_kind: dict[Kind, list] = {Kind.FACT: [], Kind.EPISODE: []}
        for vid, vec in rows:
            kind, rowid = vids.split(int(vid))
            by_kind[kind].append((to_blob(vec), rowid))
        for kind, pairs in by_kind.items():
            self.db.executemany(f"UPDATE {_TABLE[kind]} SET vector=? WHERE vid=?", pairs)

    # ----------------------------------------------------------------- counts and checks

    def counts(self) -> dict[str, int]:
        """Rows per table, facts per status, active episodes, single-valued relations."""
        one = lambda sql: int(self.db.execute(sql).fetchone()[0])  # noqa: E731
        out = {f"facts_{s}": n for s, n in self.db.execute("SELECT status, count(*) FROM facts GROUP BY status")}
        out.update(facts=one("SELECT count(*) FROM facts"), episodes=one("SELECT count(*) FROM episodes"),
                   episodes_active=one("SELECT count(*) FROM episodes WHERE status='active'"),
                   users=one("SELECT count(*) FROM users"), entities=one("SELECT count(*) FROM entities"),
                   single_valued=one("SELECT count(*) FROM relations WHERE single_valued=1"))
        return out

    def integrity(self, dim: int) -> Integrity:
        one = lambda sql, p=(): int(self.db.execute(sql, p).fetchone()[0])  # noqa: E731
        bad = sum(one(f"SELECT count(*) FROM {t} WHERE vector IS NULL OR length(vector)!=?", (4 * dim,))
                  for t in _TABLE.values())
        return Integrity(
            quick_check=self.db.execute("PRAGMA quick_check").fetchone()[0], bad_vectors=bad,
            orphans=one("SELECT count(*) FROM facts f WHERE NOT EXISTS (SELECT 1 FROM sources s WHERE s.fact_id=f.id)"),
            dangling=one("SELECT count(*) FROM facts WHERE superseded_by IS NOT NULL "
                         "AND superseded_by NOT IN (SELECT id FROM facts)"),
            multi_valued=self.db.execute(
                "SELECT user, subject, relation, count(*) FROM facts WHERE status='active' AND relation IN "
                "(SELECT name FROM relations WHERE single_valued=1) GROUP BY user, subject, relation "
                "HAVING count(*)>1 LIMIT 5").fetchall(),
            bad_links=one("SELECT count(*) FROM sources WHERE episode_id IS NOT NULL "
                          "AND episode_id NOT IN (SELECT id FROM episodes)"),
        )

    # ----------------------------------------------------------------- export

    def export_sections(self, who: str | None, vectors: bool) -> list[Section]:
        """The export's record types in file order; ``who`` limits it to one user plus shared facts."""
        vec = ", vector" if vectors else ""
        # a user's export: their facts and episodes, shared facts, and what those rows refer to
        fw, fp = ("user IN (?, '')", (who,)) if who is not None else ("1", ())
        ew, ep = ("user=?", (who,)) if who is not None else ("1", ())
        of_facts = f"fact_id IN (SELECT id FROM facts WHERE {fw})" if who is not None else "1"
        # a shared fact's source may cite another user's episode; that episode is not exported, so
        # the link is written as null rather than pointing at nothing
        src_ep = "(SELECT e.id FROM episodes e WHERE e.id=s.episode_id AND e.user=?)" if who is not None else "s.episode_id"
        ents = (f"name IN (SELECT subject FROM facts WHERE {fw} UNION SELECT object FROM facts WHERE {fw})"
                if who is not None else "1")
        ev, fv = vids.SQL_VID["episodes"], vids.SQL_VID["facts"]
        return [
            Section("user", ("name", "created"),
                    f"SELECT name, created FROM users WHERE {'name=?' if who is not None else '1'} ORDER BY rowid", ep),
            Section("relation", ("name", "single_valued"), "SELECT name, single_valued FROM relations ORDER BY rowid", ()),
            Section("alias", ("alias", "canonical"), "SELECT alias, canonical FROM aliases ORDER BY rowid", ()),
            Section("entity", ("name", "display", "first_seen"),
                    f"SELECT name, display, first_seen FROM entities WHERE {ents} ORDER BY rowid", fp + fp),
            Section("episode", EPISODE_KEYS,
                    f"SELECT {ev}, {', '.join(EPISODE_KEYS)}{vec} FROM episodes WHERE {ew} ORDER BY vid", ep, Kind.EPISODE),
            Section("fact", FACT_KEYS,
                    f"SELECT {fv}, {', '.join(FACT_KEYS)}{vec} FROM facts WHERE {fw} ORDER BY vid", fp, Kind.FACT),
            Section("source", ("fact_id", "source_id", "user", "time", "episode_id", "note"),
                    f"SELECT s.fact_id, s.source_id, s.user, s.time, {src_ep}, s.note FROM sources s "
                    f"WHERE {of_facts} ORDER BY s.seq", ep + fp),
            Section("history", ("fact_id", "time", "event", "detail"),
                    f"SELECT fact_id, time, event, detail FROM history WHERE {of_facts} ORDER BY seq", fp),
        ]

    def section_count(self, s: Section) -> int:
        return int(self.db.execute(f"SELECT count(*) FROM ({s.sql})", s.params).fetchone()[0])

    def section_rows(self, s: Section) -> Iterator[tuple]:
        return iter(self.db.execute(s.sql, s.params))

    def section_vector_ids(self, s: Section) -> np.ndarray:
        """The vector ids of a fact or episode section's rows, in its order."""
        return np.array([r[0] for r in self.db.execute(s.sql, s.params)], dtype=np.int64)

    def set_episode_status(self, vector_id: int, status: str) -> None:
        kind, rowid = vids.split(vector_id)
        assert kind is Kind.EPISODE
        self.db.execute("UPDATE episodes SET status=? WHERE vid=?", (status, rowid))


def _stack(rows: list[tuple[int, bytes]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
    return ids, vecs
