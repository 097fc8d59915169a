"""Numbered, append-only upgrade steps of the SQLite schema (as in simonw/llm): step N takes version N-1 to N.

Never edit or reorder a step that has shipped: a KB written by any earlier kgrow replays the steps
after its own ``meta.schema_version`` inside one ``FactLog.transaction()``, so a failed upgrade
leaves it as it was. The manifest has its own numbered steps in kb.manifest.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable

from kb.errors import IncompatibleKBError

Step = Callable[[sqlite3.Connection], None]


def _v2_episode_sessions(db: sqlite3.Connection) -> None:
    """Episodes learn their session, their position in it and who said them (the user, the assistant,
    another person); assistant turns stored before were written with speaker 'assistant'."""
    db.execute("ALTER TABLE episodes ADD COLUMN session TEXT")
    db.execute("ALTER TABLE episodes ADD COLUMN position INTEGER")
    db.execute("ALTER TABLE episodes ADD COLUMN role TEXT NOT NULL DEFAULT 'user'")
    db.execute("UPDATE episodes SET role='assistant' WHERE speaker='assistant'")


def _v3_stemmed_keywords(db: sqlite3.Connection) -> None:
    """Keyword search matches word forms ("attended" finds "attend", "sessions" finds "session"):
    the full-text tables are rebuilt with SQLite's built-in porter stemmer. On the LongMemEval dev
    split this alone raised any@5 from 0.851 to 0.86+ (README, memory ablation). The tables are
    contentless, so they are refilled from the rows' own text."""
    for table, fts in (("facts", "facts_fts"), ("episodes", "episodes_fts")):
        db.execute(f"DROP TABLE IF EXISTS {fts}")
        db.execute(f"CREATE VIRTUAL TABLE {fts} USING fts5(text, content='', tokenize='porter unicode61')")
        db.execute(f"INSERT INTO {fts}(rowid, text) SELECT rowid, text FROM {table}")


def _v4_scope_indexes(db: sqlite3.Connection) -> None:
    """Covering indexes of the columns a search's scope filter reads, keyed by vector row id: checking
    which of 800 vector hits or 4,000 keyword matches a user may see no longer reads the rows
    themselves, whose long texts and vectors spill onto overflow pages (3x faster at 50k episodes)."""
    db.execute("CREATE INDEX IF NOT EXISTS episodes_scope ON episodes(vid, status, user, time)")
    db.execute("CREATE INDEX IF NOT EXISTS facts_scope ON facts(vid, status, user, valid_from, valid_to)")


def _v5_sources_by_episode(db: sqlite3.Connection) -> None:
    """An index of sources by episode: recall asks which facts each recalled turn taught (to sink a turn
    whose facts were superseded), which read the whole sources table (22 ms a question at 200k facts)."""
    db.execute("CREATE INDEX IF NOT EXISTS sources_episode ON sources(episode_id)")


#: STEPS[n] upgrades schema version n+1 to n+2 (version 1 is the first released schema)
STEPS: tuple[Step, ...] = (_v2_episode_sessions, _v3_stemmed_keywords, _v4_scope_indexes, _v5_sources_by_episode)


def version(db: sqlite3.Connection) -> int:
    """The database's schema version (a database without one predates the meta entry: version 1)."""
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 1


def _newer(v: int, newest: int) -> IncompatibleKBError:
    return IncompatibleKBError(
        f"the KB's schema version is {v}, newer than this kgrow reads (up to {newest}); upgrade kgrow")


def check_readable(db: sqlite3.Connection, newest: int) -> int:
    """The database's schema version; an error naming both versions when this code cannot read it."""
    try:
        v = version(db)
    except sqlite3.OperationalError:
        return newest  # an empty database opened read-only: nothing to read yet
    if v > newest:
        raise _newer(v, newest)
    if v < newest:
        raise IncompatibleKBError(
            f"the KB's schema version is {v}, older than this kgrow reads ({newest}); "
            "open it once for writing to upgrade it")
    return v


def check_writable(db: sqlite3.Connection, newest: int) -> int:
    """The database's version, or an error when it is newer than ``newest``."""
    v = version(db)
    if v > newest:
        raise _newer(v, newest)
    return v


def apply(db: sqlite3.Connection, old: int, newest: int) -> None:
    """Run steps old+1..newest and record the new version; the caller holds the transaction."""
    assert len(STEPS) == newest - 1, "one step per version after the first"
    for n in range(old, newest):
        STEPS[n - 1](db)
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)", (str(newest),))
