"""The durable fact log: one SQLite database (WAL) that is the single source of truth of a KB.

Vector ids: a fact with row id ``r`` has vector id ``2r``; an episode with row id ``r`` has
``2r + 1``. The FAISS index stores only these ids; everything else is looked up here, so a
status change (supersede, forget) is visible to every search the moment it commits.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from kb import migrations
from kb.facts import Episode, Fact, Kind, Source, Status

#: the newest schema this code reads and writes; kb.migrations upgrades older databases to it
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS relations(name TEXT PRIMARY KEY, single_valued INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS aliases(alias TEXT PRIMARY KEY, canonical TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entities(name TEXT PRIMARY KEY, display TEXT NOT NULL, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS facts(
    vid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    user TEXT NOT NULL,
    subject TEXT NOT NULL,
    relation TEXT NOT NULL,
    object TEXT NOT NULL,
    text TEXT NOT NULL,
    confidence REAL NOT NULL,
    status TEXT NOT NULL,
    stated_at REAL NOT NULL,
    valid_from REAL NOT NULL,
    valid_to REAL,
    superseded_by TEXT,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS facts_key ON facts(key);
CREATE INDEX IF NOT EXISTS facts_usr ON facts(user, subject, relation);
CREATE INDEX IF NOT EXISTS facts_subject ON facts(subject);
CREATE INDEX IF NOT EXISTS facts_object ON facts(object);
CREATE TABLE IF NOT EXISTS episodes(
    vid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    speaker TEXT NOT NULL,
    text TEXT NOT NULL,
    source_id TEXT,
    time REAL NOT NULL,
    status TEXT NOT NULL,
    vector BLOB,
    session TEXT,
    position INTEGER,
    role TEXT NOT NULL DEFAULT 'user'
);
CREATE INDEX IF NOT EXISTS episodes_user ON episodes(user);
CREATE TABLE IF NOT EXISTS sources(
    seq INTEGER PRIMARY KEY,
    fact_id TEXT NOT NULL,
    source_id TEXT,
    user TEXT,
    time REAL NOT NULL,
    episode_id TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS sources_fact ON sources(fact_id);
CREATE TABLE IF NOT EXISTS history(
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    fact_id TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_fact ON history(fact_id);
CREATE VIRTUAL TABLE IF NOT EXISTS facts_fts USING fts5(text, content='');
CREATE VIRTUAL TABLE IF NOT EXISTS episodes_fts USING fts5(text, content='');
"""

# indexes on columns that migrations add: created after the upgrade has run
_INDEXES = """
CREATE INDEX IF NOT EXISTS episodes_session ON episodes(user, session, position);
"""

FACT_COLS = (
    "vid, id, key, user, subject, relation, object, text, confidence, status, "
    "stated_at, valid_from, valid_to, superseded_by"
)
EPISODE_COLS = "vid, id, user, speaker, text, source_id, time, status, session, position, role"


def fact_vid(rowid: int) -> int:
    return 2 * rowid


def episode_vid(rowid: int) -> int:
    return 2 * rowid + 1


def split_vid(vid: int) -> tuple[Kind, int]:
    return (Kind.EPISODE, vid >> 1) if vid & 1 else (Kind.FACT, vid >> 1)


def to_blob(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype=np.float32).tobytes()


def from_blob(blob: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32, count=dim)


class FactLog:
    """Thin typed layer over the SQLite database; callers own transactions via ``transaction()``."""

    def __init__(self, path: Path, read_only: bool = False):
        self.path = path
        self.read_only = read_only
        self.upgraded_from: int | None = None  # the schema version an upgrade on open started from
        if read_only:
            uri = f"file:{path}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            migrations.check_readable(self.db, SCHEMA_VERSION)
        else:
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a process crash (SIGKILL);
            # only an OS crash / power loss can lose the last commits.
            self.db.execute("PRAGMA synchronous=NORMAL")
            fresh = self.db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is None
            if fresh:
                self.db.executescript(_SCHEMA)
                self.set_meta("schema_version", str(SCHEMA_VERSION))
            self.upgraded_from = migrations.upgrade(self.db, SCHEMA_VERSION)
            self.db.executescript(_INDEXES)
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------------- transactions / meta

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    # ----------------------------------------------------------------- users, schema, entities

    def users(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM users ORDER BY name")]

    def has_user(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone() is not None

    def add_user(self, name: str, now: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO users(name, created) VALUES(?, ?)", (name, now))

    def relations(self) -> dict[str, bool]:
        return {r[0]: bool(r[1]) for r in self.db.execute("SELECT name, single_valued FROM relations")}

    def set_relation(self, name: str, single_valued: bool) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO relations(name, single_valued) VALUES(?, ?)", (name, int(single_valued))
        )

    def aliases(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.execute("SELECT alias, canonical FROM aliases")}

    def set_alias(self, alias: str, canonical: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO aliases(alias, canonical) VALUES(?, ?)", (alias, canonical))

    def add_entity(self, name: str, display: str, now: float) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO entities(name, display, first_seen) VALUES(?, ?, ?)", (name, display, now)
        )

    def entity_display(self, name: str) -> str | None:
        row = self.db.execute("SELECT display FROM entities WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def known_entities(self, names: Sequence[str]) -> list[str]:
        if not names:
            return []
        q = ",".join("?" * len(names))
        return [r[0] for r in self.db.execute(f"SELECT name FROM entities WHERE name IN ({q})", list(names))]

    # ----------------------------------------------------------------- facts

    def _fact(self, row: tuple, sources: tuple[Source, ...] = ()) -> Fact:
        return Fact(
            id=row[1], subject=row[4], relation=row[5], object=row[6], text=row[7], user=row[3],
            confidence=row[8], status=Status(row[9]), stated_at=row[10], valid_from=row[11],
            valid_to=row[12], superseded_by=row[13], sources=sources,
        )

    def sources_of(self, fact_ids: Sequence[str]) -> dict[str, tuple[Source, ...]]:
        out: dict[str, list[Source]] = {f: [] for f in fact_ids}
        for chunk in _chunks(list(fact_ids), 500):
            q = ",".join("?" * len(chunk))
            for fid, sid, user, t, eid, note in self.db.execute(
                f"SELECT fact_id, source_id, user, time, episode_id, note FROM sources "
                f"WHERE fact_id IN ({q}) ORDER BY seq",
                chunk,
            ):
                out[fid].append(Source(sid, user, t, eid, note))
        return {k: tuple(v) for k, v in out.items()}

    def facts_where(self, where: str, params: Sequence = (), order: str = "vid", limit: int | None = None,
                    with_sources: bool = True) -> list[Fact]:
        sql = f"SELECT {FACT_COLS} FROM facts WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self.db.execute(sql, list(params)).fetchall()
        srcs = self.sources_of([r[1] for r in rows]) if with_sources else {}
        return [self._fact(r, srcs.get(r[1], ())) for r in rows]

    def fact(self, fact_id: str) -> Fact | None:
        got = self.facts_where("id=?", (fact_id,))
        return got[0] if got else None

    def facts_by_rowids(self, rowids: Sequence[int]) -> dict[int, Fact]:
        out: dict[int, Fact] = {}
        for chunk in _chunks(list(rowids), 500):
            q = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT {FACT_COLS} FROM facts WHERE vid IN ({q})", chunk).fetchall()
            srcs = self.sources_of([r[1] for r in rows])
            for r in rows:
                out[r[0]] = self._fact(r, srcs[r[1]])
        return out

    def rows_for_key(self, key: str) -> list[tuple[int, str, str]]:
        """(rowid, id, status) of every row sharing a content key, oldest first."""
        return self.db.execute("SELECT vid, id, status FROM facts WHERE key=? ORDER BY vid", (key,)).fetchall()

    def active_same_slot(self, user: str, subject: str, relation: str) -> list[tuple[int, str, str, str, bytes | None]]:
        """(rowid, id, key, object, vector) of active facts with this scope, subject and relation."""
        return self.db.execute(
            "SELECT vid, id, key, object, vector FROM facts WHERE user=? AND subject=? AND relation=? "
            "AND status='active'",
            (user, subject, relation),
        ).fetchall()

    def insert_fact(self, f: Fact, key: str, vector: np.ndarray) -> int:
        cur = self.db.execute(
            "INSERT INTO facts(id, key, user, subject, relation, object, text, confidence, status, stated_at, "
            "valid_from, valid_to, superseded_by, vector) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (f.id, key, f.user, f.subject, f.relation, f.object, f.text, f.confidence, f.status.value,
             f.stated_at, f.valid_from, f.valid_to, f.superseded_by, to_blob(vector)),
        )
        rowid = int(cur.lastrowid)
        self.db.execute("INSERT INTO facts_fts(rowid, text) VALUES(?, ?)", (rowid, f.text))
        return rowid

    def add_source(self, fact_id: str, s: Source) -> None:
        self.db.execute(
            "INSERT INTO sources(fact_id, source_id, user, time, episode_id, note) VALUES(?,?,?,?,?,?)",
            (fact_id, s.source_id, s.user, s.time, s.episode_id, s.note),
        )

    def add_history(self, fact_id: str, event: str, detail: str | None, now: float) -> None:
        self.db.execute(
            "INSERT INTO history(time, fact_id, event, detail) VALUES(?,?,?,?)", (now, fact_id, event, detail)
        )

    def history_of(self, fact_ids: Sequence[str]) -> list[tuple[int, float, str, str, str | None]]:
        q = ",".join("?" * len(fact_ids))
        return self.db.execute(
            f"SELECT seq, time, fact_id, event, detail FROM history WHERE fact_id IN ({q}) ORDER BY seq",
            list(fact_ids),
        ).fetchall()

    def supersede(self, fact_id: str, by: str, at: float) -> None:
        self.db.execute(
            "UPDATE facts SET status='superseded', valid_to=?, superseded_by=? WHERE id=?", (at, by, fact_id)
        )

    def set_status(self, fact_ids: Sequence[str], status: Status) -> None:
        for chunk in _chunks(list(fact_ids), 500):
            q = ",".join("?" * len(chunk))
            self.db.execute(f"UPDATE facts SET status=? WHERE id IN ({q})", [status.value, *chunk])

    def set_confidence(self, fact_id: str, value: float) -> None:
        self.db.execute("UPDATE facts SET confidence=? WHERE id=?", (value, fact_id))

    # ----------------------------------------------------------------- episodes

    def _episode(self, row: tuple) -> Episode:
        return Episode(id=row[1], user=row[2], speaker=row[3], text=row[4], source_id=row[5], time=row[6],
                       session=row[8], position=row[9], role=row[10])

    def episode(self, episode_id: str) -> Episode | None:
        row = self.db.execute(f"SELECT {EPISODE_COLS} FROM episodes WHERE id=?", (episode_id,)).fetchone()
        return self._episode(row) if row else None

    def episodes_where(self, where: str, params: Sequence = (), order: str = "vid",
                       limit: int | None = None) -> list[Episode]:
        sql = f"SELECT {EPISODE_COLS} FROM episodes WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._episode(r) for r in self.db.execute(sql, list(params))]

    def episodes_by_rowids(self, rowids: Sequence[int], where: str = "1", params: Sequence = ()) -> dict[int, Episode]:
        out: dict[int, Episode] = {}
        for chunk in _chunks(list(rowids), 500):
            q = ",".join("?" * len(chunk))
            for r in self.db.execute(
                f"SELECT {EPISODE_COLS} FROM episodes WHERE vid IN ({q}) AND {where}", [*chunk, *params]
            ):
                out[r[0]] = self._episode(r)
        return out

    def insert_episode(self, e: Episode, vector: np.ndarray) -> int:
        cur = self.db.execute(
            "INSERT INTO episodes(id, user, speaker, text, source_id, time, status, vector, session, position, role) "
            "VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (e.id, e.user, e.speaker, e.text, e.source_id, e.time, "active", to_blob(vector), e.session,
             e.position, e.role),
        )
        rowid = int(cur.lastrowid)
        self.db.execute("INSERT INTO episodes_fts(rowid, text) VALUES(?, ?)", (rowid, e.text))
        return rowid

    # ----------------------------------------------------------------- vectors

    def vector_ids(self, include_forgotten: bool = False) -> np.ndarray:
        """All vector ids the index should hold (sorted int64)."""
        cond = "" if include_forgotten else " WHERE status!='forgotten'"
        f = np.array([r[0] for r in self.db.execute(f"SELECT vid FROM facts{cond}")], dtype=np.int64) * 2
        e = np.array([r[0] for r in self.db.execute(f"SELECT vid FROM episodes{cond}")], dtype=np.int64) * 2 + 1
        return np.sort(np.concatenate([f, e]))

    def iter_vectors(self, dim: int, vids: np.ndarray | None = None,
                     batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids (n,), vectors (n, dim)) of stored vectors, optionally only ``vids``."""
        if vids is not None:
            for chunk in _chunks(list(map(int, vids)), 900):
                fr = [v >> 1 for v in chunk if not v & 1]
                er = [v >> 1 for v in chunk if v & 1]
                rows: list[tuple[int, bytes]] = []
                if fr:
                    rows += [(2 * r, b) for r, b in self.db.execute(
                        f"SELECT vid, vector FROM facts WHERE vid IN ({','.join('?' * len(fr))})", fr)]
                if er:
                    rows += [(2 * r + 1, b) for r, b in self.db.execute(
                        f"SELECT vid, vector FROM episodes WHERE vid IN ({','.join('?' * len(er))})", er)]
                if rows:
                    yield _stack(rows, dim)
            return
        for table, mul, add in (("facts", 2, 0), ("episodes", 2, 1)):
            cur = self.db.execute(f"SELECT vid, vector FROM {table} WHERE status!='forgotten' ORDER BY vid")
            while True:
                rows = cur.fetchmany(batch)
                if not rows:
                    break
                yield _stack([(mul * r + add, b) for r, b in rows], dim)

    def set_vectors(self, table: str, rows: Iterable[tuple[int, np.ndarray]]) -> None:
        assert table in ("facts", "episodes")
        self.db.executemany(f"UPDATE {table} SET vector=? WHERE vid=?", [(to_blob(v), r) for r, v in rows])

    # ----------------------------------------------------------------- counts

    def count(self, sql: str, params: Sequence = ()) -> int:
        return int(self.db.execute(sql, list(params)).fetchone()[0])


def _stack(rows: list[tuple[int, bytes]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
    return ids, vecs


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def now() -> float:
    return time.time()
