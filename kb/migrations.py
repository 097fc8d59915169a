"""Numbered, append-only upgrade steps of the SQLite schema (as in simonw/llm): step N takes version N-1 to N.

Never edit or reorder a step that has shipped: a KB written by any earlier kgrow replays the steps
after its own ``meta.schema_version``, all in one transaction, so a failed upgrade leaves it as it was.
"""
from __future__ import annotations

import sqlite3
import sys
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


#: STEPS[n] upgrades schema version n+1 to n+2 (version 1 is the first released schema)
STEPS: tuple[Step, ...] = (_v2_episode_sessions,)


def _version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 1


def check_readable(db: sqlite3.Connection, newest: int) -> int:
    """The database's schema version; an error naming both versions when this code cannot read it."""
    try:
        v = _version(db)
    except sqlite3.OperationalError:
        return newest  # an empty database opened read-only: nothing to read yet
    if v > newest:
        raise IncompatibleKBError(
            f"the KB's schema version is {v}, newer than this kgrow reads (up to {newest}); upgrade kgrow")
    if v < newest:
        raise IncompatibleKBError(
            f"the KB's schema version is {v}, older than this kgrow reads ({newest}); "
            "open it once for writing to upgrade it")
    return v


def upgrade(db: sqlite3.Connection, newest: int) -> int | None:
    """Replay the steps after the database's version in one transaction; returns the old version, or
    None when it was current."""
    v = _version(db)
    if v > newest:
        raise IncompatibleKBError(
            f"the KB's schema version is {v}, newer than this kgrow reads (up to {newest}); upgrade kgrow")
    if v == newest:
        return None
    assert len(STEPS) == newest - 1, "one step per version after the first"
    db.execute("BEGIN IMMEDIATE")
    try:
        for n in range(v, newest):
            STEPS[n - 1](db)
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)", (str(newest),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    print(f"kgrow: upgraded the knowledge base schema from version {v} to {newest}", file=sys.stderr)
    return v
