"""Fact and episode rows of the log: typed reads and writes (FactLog's row methods)."""
from __future__ import annotations

import sqlite3
from typing import Sequence

import numpy as np

from kb.facts import Episode, Fact, Kind, Source, Status
from kb.log import vids
from kb.log.base import chunks
from kb.log.scope import Scope

FACT_COLS = (
    "vid, id, key, user, subject, relation, object, text, confidence, status, "
    "stated_at, valid_from, valid_to, superseded_by"
)
EPISODE_COLS = "vid, id, user, speaker, text, source_id, time, status, session, position, role"


def to_blob(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype=np.float32).tobytes()


def from_blob(blob: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32, count=dim)


class RowsMixin:
    """Facts, their sources and history, and episodes."""

    db: sqlite3.Connection

    # ----------------------------------------------------------------- reading facts

    @staticmethod
    def _fact(row: tuple, sources: tuple[Source, ...] = ()) -> Fact:
        return Fact(
            id=row[1], subject=row[4], relation=row[5], object=row[6], text=row[7], user=row[3],
            confidence=row[8], status=Status(row[9]), stated_at=row[10], valid_from=row[11],
            valid_to=row[12], superseded_by=row[13], sources=sources,
        )

    def sources_of(self, fact_ids: Sequence[str]) -> dict[str, tuple[Source, ...]]:
        out: dict[str, list[Source]] = {f: [] for f in fact_ids}
        for chunk in chunks(list(fact_ids), 500):
            q = ",".join("?" * len(chunk))
            for fid, sid, user, t, eid, note in self.db.execute(
                f"SELECT fact_id, source_id, user, time, episode_id, note FROM sources "
                f"WHERE fact_id IN ({q}) ORDER BY seq",
                chunk,
            ):
                out[fid].append(Source(sid, user, t, eid, note))
        return {k: tuple(v) for k, v in out.items()}

    def _facts(self, where: str, params: Sequence = (), order: str = "vid", limit: int | None = None,
               with_sources: bool = True) -> list[Fact]:
        sql = f"SELECT {FACT_COLS} FROM facts WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self.db.execute(sql, list(params)).fetchall()
        srcs = self.sources_of([r[1] for r in rows]) if with_sources else {}
        return [self._fact(r, srcs.get(r[1], ())) for r in rows]

    def fact(self, fact_id: str) -> Fact | None:
        got = self._facts("id=?", (fact_id,))
        return got[0] if got else None

    def has_fact(self, fact_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM facts WHERE id=?", (fact_id,)).fetchone() is not None

    def list_facts(self, *, user: str | None = None, entity: str | None = None, relation: str | None = None,
                   as_of: float | None = None, history: bool = False, limit: int | None = None) -> list[Fact]:
        """Facts of ``user`` plus shared ones (every user's when None), current only unless ``history``
        or ``as_of``; oldest first."""
        where, params = [], []
        if user is not None:
            # with an entity, its subject/object indexes find its few facts; left to itself SQLite
            # read every fact of the user through facts_usr instead (16 ms at 100k of them, 0.02 ms
            # this way): the unary + keeps it off the user index
            where.append("+user IN (?, '')" if entity is not None else "user IN (?, '')")
            params.append(user)
        if entity is not None:
            where.append("(subject=? OR object=?)")
            params += [entity, entity]
        if relation is not None:
            where.append("relation=?")
            params.append(relation)
        if as_of is not None:
            w, p = Scope(None, as_of).fact_sql()
            where.append(w)
            params += p
        else:
            where.append("status IN ('active', 'superseded')" if history else "status='active'")
        return self._facts(" AND ".join(where), params, order="valid_from, vid", limit=limit)

    def facts_about(self, name: str, scope: Scope, limit: int) -> list[Fact]:
        """Facts with ``name`` as subject (newest first), then as object; at most ``limit``."""
        w, p = scope.fact_sql()
        out = self._facts(f"subject=? AND {w}", [name, *p], order="vid DESC", limit=limit)
        if len(out) < limit:
            out += self._facts(f"object=? AND subject!=? AND {w}", [name, name, *p], order="vid DESC",
                               limit=limit - len(out))
        return out

    def slot_versions(self, user: str, subject: str, relation: str) -> list[Fact]:
        """Every fact (any status) of one user, subject and relation, by validity."""
        return self._facts("user=? AND subject=? AND relation=?", (user, subject, relation), order="valid_from, vid")

    def slot_held_at(self, user: str, subject: str, relation: str, t: float) -> list[Fact]:
        """Superseded versions of a slot that held at time ``t`` (no sources loaded)."""
        return self._facts(
            "user=? AND subject=? AND relation=? AND status='superseded' AND valid_from<=? AND valid_to>?",
            (user, subject, relation, t, t), with_sources=False)

    def slot_next_after(self, user: str, subject: str, relation: str, t: float) -> Fact | None:
        """The first version of a slot (not forgotten) that became true after ``t``."""
        got = self._facts("user=? AND subject=? AND relation=? AND status!='forgotten' AND valid_from>?",
                          (user, subject, relation, t), order="valid_from, vid", limit=1, with_sources=False)
        return got[0] if got else None

    def rows_for_key(self, key: str) -> list[tuple[int, str, str]]:
        """(rowid, id, status) of every row sharing a content key, oldest first."""
        return self.db.execute("SELECT vid, id, status FROM facts WHERE key=? ORDER BY vid", (key,)).fetchall()

    def key_active(self, key: str) -> bool:
        """True if a current fact has this content key."""
        return any(st == "active" for _, _, st in self.rows_for_key(key))

    def key_vector(self, key: str, dim: int) -> np.ndarray:
        """The stored vector of the newest row with this content key."""
        blob = self.db.execute("SELECT vector FROM facts WHERE key=? ORDER BY vid DESC", (key,)).fetchone()
        return from_blob(blob[0], dim)

    def active_same_slot(self, user: str, subject: str, relation: str) -> list[tuple[int, str, str, str, bytes | None]]:
        """(rowid, id, key, object, vector) of active facts with this scope, subject and relation."""
        return self.db.execute(
            "SELECT vid, id, key, object, vector FROM facts WHERE user=? AND subject=? AND relation=? "
            "AND status='active'",
            (user, subject, relation),
        ).fetchall()

    def facts_learned_from(self, episode_ids: Sequence[str]) -> list[Fact]:
        """Facts (any status, forgotten ones too) with a source citing one of these episodes, oldest first."""
        if not episode_ids:
            return []
        q = ",".join("?" * len(episode_ids))
        return self._facts(f"id IN (SELECT fact_id FROM sources WHERE episode_id IN ({q}))", list(episode_ids))

    def history_of(self, fact_ids: Sequence[str]) -> list[tuple[int, float, str, str, str | None]]:
        q = ",".join("?" * len(fact_ids))
        return self.db.execute(
            f"SELECT seq, time, fact_id, event, detail FROM history WHERE fact_id IN ({q}) ORDER BY seq",
            list(fact_ids),
        ).fetchall()

    def forget_targets(self, *, fact_id: str | None = None, entity: str | None = None,
                       user: str | None = None) -> tuple[list[str], np.ndarray]:
        """(ids, vector ids) of the facts not yet forgotten: one fact, an entity's (of ``user``), or a user's."""
        if fact_id is not None:
            where, params = "id=?", [fact_id]
        elif entity is not None:
            where, params = "(subject=? OR object=?)", [entity, entity]
            if user is not None:
                where += " AND user=?"
                params.append(user)
        else:
            where, params = "user=?", [user]
        rows = self.db.execute(f"SELECT id, vid FROM facts WHERE {where} AND status!='forgotten'", params).fetchall()
        return [r[0] for r in rows], vids.encode_many(Kind.FACT, [r[1] for r in rows])

    # ----------------------------------------------------------------- writing facts

    def insert_fact(self, f: Fact, key: str, vector: np.ndarray) -> int:
        """Insert one fact row (and its keyword entry); returns its vector id."""
        cur = self.db.execute(
            "INSERT INTO facts(id, key, user, subject, relation, object, text, confidence, status, stated_at, "
            "valid_from, valid_to, superseded_by, vector) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (f.id, key, f.user, f.subject, f.relation, f.object, f.text, f.confidence, f.status.value,
             f.stated_at, f.valid_from, f.valid_to, f.superseded_by, to_blob(vector)),
        )
        rowid = int(cur.lastrowid)
        self.db.execute("INSERT INTO facts_fts(rowid, text) VALUES(?, ?)", (rowid, f.text))
        return vids.fact_vid(rowid)

    def add_source(self, fact_id: str, s: Source) -> None:
        self.db.execute(
            "INSERT INTO sources(fact_id, source_id, user, time, episode_id, note) VALUES(?,?,?,?,?,?)",
            (fact_id, s.source_id, s.user, s.time, s.episode_id, s.note),
        )

    def add_history(self, fact_id: str, event: str, detail: str | None, now: float) -> None:
        self.db.execute(
            "INSERT INTO history(time, fact_id, event, detail) VALUES(?,?,?,?)", (now, fact_id, event, detail)
        )

    def supersede(self, fact_id: str, by: str | None, at: float) -> None:
        """End a fact's validity at ``at``; ``by`` names its replacement (None: retracted, no replacement)."""
        if by is None:
            self.db.execute("UPDATE facts SET status='superseded', valid_to=? WHERE id=?", (at, fact_id))
        else:
            self.db.execute(
                "UPDATE facts SET status='superseded', valid_to=?, superseded_by=? WHERE id=?", (at, by, fact_id))

    def set_status(self, fact_ids: Sequence[str], status: Status) -> None:
        for chunk in chunks(list(fact_ids), 500):
            q = ",".join("?" * len(chunk))
            self.db.execute(f"UPDATE facts SET status=? WHERE id IN ({q})", [status.value, *chunk])

    def set_confidence(self, fact_id: str, value: float) -> None:
        self.db.execute("UPDATE facts SET confidence=? WHERE id=?", (value, fact_id))

    # ----------------------------------------------------------------- episodes

    @staticmethod
    def _episode(row: tuple) -> Episode:
        return Episode(id=row[1], user=row[2], speaker=row[3], text=row[4], source_id=row[5], time=row[6],
                       session=row[8], position=row[9], role=row[10])

    def episode(self, episode_id: str) -> Episode | None:
        row = self.db.execute(f"SELECT {EPISODE_COLS} FROM episodes WHERE id=?", (episode_id,)).fetchone()
        return self._episode(row) if row else None

    def has_episode(self, episode_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM episodes WHERE id=?", (episode_id,)).fetchone() is not None

    def list_episodes(self, *, user: str | None = None, session: str | None = None,
                      limit: int | None = None) -> list[Episode]:
        """Active episodes (of ``user``; of one ``session``), oldest first."""
        where, params = ["status='active'"], []
        if user is not None:
            where.append("user=?")
            params.append(user)
        if session is not None:
            where.append("session=?")
            params.append(session)
        sql = f"SELECT {EPISODE_COLS} FROM episodes WHERE {' AND '.join(where)} ORDER BY time, vid"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._episode(r) for r in self.db.execute(sql, params)]

    def session_episodes(self, user: str, session: str, start: int, stop: int | None) -> list[Episode]:
        """Active episodes of one session with ``start <= position < stop``, by position."""
        where, params = "user=? AND session=? AND status='active' AND position>=?", [user, session, start]
        if stop is not None:
            where += " AND position<?"
            params.append(stop)
        return [self._episode(r) for r in
                self.db.execute(f"SELECT {EPISODE_COLS} FROM episodes WHERE {where} ORDER BY position", params)]

    def insert_episode(self, e: Episode, vector: np.ndarray, status: str = "active") -> int:
        """Insert one episode row (and its keyword entry); returns its vector id."""
        cur = self.db.execute(
            "INSERT INTO episodes(id, user, speaker, text, source_id, time, status, vector, session, position, role) "
            "VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (e.id, e.user, e.speaker, e.text, e.source_id, e.time, status, to_blob(vector), e.session,
             e.position, e.role),
        )
        rowid = int(cur.lastrowid)
        self.db.execute("INSERT INTO episodes_fts(rowid, text) VALUES(?, ?)", (rowid, e.text))
        return vids.episode_vid(rowid)

    def forget_episodes_of(self, user: str) -> np.ndarray:
        """Mark a user's episodes forgotten; returns their vector ids."""
        rows = [r[0] for r in self.db.execute("SELECT vid FROM episodes WHERE user=? AND status!='forgotten'", (user,))]
        self.db.execute("UPDATE episodes SET status='forgotten' WHERE user=? AND status!='forgotten'", (user,))
        return vids.encode_many(Kind.EPISODE, rows)

    # ----------------------------------------------------------------- by vector id

    def records(self, vector_ids: Sequence[int]) -> dict[int, Fact | Episode]:
        """The fact or episode of each vector id that exists (any status), keyed by vector id."""
        fr, er = vids.partition(vector_ids)
        out: dict[int, Fact | Episode] = {}
        for chunk in chunks(fr, 500):
            q = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT {FACT_COLS} FROM facts WHERE vid IN ({q})", chunk).fetchall()
            srcs = self.sources_of([r[1] for r in rows])
            for r in rows:
                out[vids.fact_vid(r[0])] = self._fact(r, srcs[r[1]])
        for chunk in chunks(er, 500):
            q = ",".join("?" * len(chunk))
            for r in self.db.execute(f"SELECT {EPISODE_COLS} FROM episodes WHERE vid IN ({q})", chunk):
                out[vids.episode_vid(r[0])] = self._episode(r)
        return out
