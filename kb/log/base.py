"""The SQLite connection of the fact log: opening and upgrading, transactions, and the small tables."""
from __future__ import annotations

import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from kb.errors import NotFoundError
from kb.facts import clean_user
from kb.log import migrations
from kb.log.ddl import INDEXES, SCHEMA, SCHEMA_VERSION


def now() -> float:
    return time.time()


def chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class LogBase:
    """Connection, transactions, meta, users, relations, aliases and entities (FactLog's base)."""

    def __init__(self, path: Path, read_only: bool = False):
        self.path = path
        self.read_only = read_only
        self.upgraded_from: int | None = None  # the schema version an upgrade on open started from
        #: bumped by every commit or rollback: caches of query results compare it
        self.generation = 0
        #: bumped whenever aliases or relations may have changed: kb.vocabulary compares it
        self.vocab_generation = 0
        self._scans: dict = {}  # kb.log.queries: recent vector scans, valid until the database changes
        self._depth = 0  # open transaction() blocks: 0 none, 1 the transaction, more are savepoints
        if read_only:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
            migrations.check_readable(self.db, SCHEMA_VERSION)
        else:
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a process crash (SIGKILL);
            # only an OS crash / power loss can lose the last commits.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._create_or_upgrade()
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache

    def _create_or_upgrade(self) -> None:
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is None:
            with self.transaction():
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.set_meta("schema_version", str(SCHEMA_VERSION))
        old = migrations.check_writable(self.db, SCHEMA_VERSION)
        if old < SCHEMA_VERSION:
            with self.transaction():
                migrations.apply(self.db, old, SCHEMA_VERSION)
            self.upgraded_from = old
            print(f"kgrow: upgraded the knowledge base schema of {self.path.parent} from version {old} to "
                  f"{SCHEMA_VERSION}", file=sys.stderr)
        self.db.executescript(INDEXES)

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------------- transactions / meta

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``with log.transaction():`` one write transaction; rolls back on any exception and re-raises.

        Nested inside another (``KnowledgeBase.batch``), it is a savepoint: a failed inner block is
        undone alone and the outer one goes on; nothing is committed until the outermost block ends.
        """
        if self._depth:
            name = f"sp{self._depth}"
            self.db.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self.db.execute(f"ROLLBACK TO {name}")
                self.db.execute(f"RELEASE {name}")
                self.vocab_generation += 1  # a rolled-back alias or relation must not stay cached
                raise
            else:
                self.db.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1
                self.generation += 1  # caches of query results must see this block's writes (or their undoing)
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            self.generation += 1
            self.vocab_generation += 1  # a rolled-back alias or relation must not stay cached
            raise
        self._depth = 0
        self.db.execute("COMMIT")
        self.generation += 1

    @property
    def in_transaction(self) -> bool:
        """A write transaction is open on this connection (inside ``transaction()``)."""
        return self._depth > 0

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """``with log.snapshot():`` reads see one consistent state, even while another process writes."""
        if self._depth:  # inside a write transaction, which is one consistent state already
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("ROLLBACK")  # nothing was written through this connection

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    # ----------------------------------------------------------------- users

    def users(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM users ORDER BY name")]

    def has_user(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone() is not None

    def known_user(self, user: object) -> str:
        """The validated name of a registered user, or NotFoundError listing the known ones."""
        who = clean_user(user)
        if not self.has_user(who):
            known = self.users()
            raise NotFoundError(f"unknown user {who!r}; known users: {', '.join(known) if known else '(none yet)'}")
        return who

    def add_user(self, name: str, now: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO users(name, created) VALUES(?, ?)", (name, now))

    def remove_user(self, name: str) -> None:
        self.db.execute("DELETE FROM users WHERE name=?", (name,))

    # ----------------------------------------------------------------- relations, aliases

    def relations(self) -> dict[str, bool]:
        return {r[0]: bool(r[1]) for r in self.db.execute("SELECT name, single_valued FROM relations")}

    def set_relation(self, name: str, single_valued: bool) -> None:
        self.vocab_generation += 1
        self.db.execute(
            "INSERT OR REPLACE INTO relations(name, single_valued) VALUES(?, ?)", (name, int(single_valued))
        )

    def aliases(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.execute("SELECT alias, canonical FROM aliases")}

    def set_alias(self, alias: str, canonical: str) -> None:
        self.vocab_generation += 1
        self.db.execute("INSERT OR REPLACE INTO aliases(alias, canonical) VALUES(?, ?)", (alias, canonical))

    # ----------------------------------------------------------------- entities

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

    def entity_names(self, limit: int) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM entities LIMIT ?", (limit,))]

    def entity_degree(self, entity: str, cap: int) -> int:
        """Facts with ``entity`` as subject or object (any status), counted up to ``cap``."""
        n = self.db.execute(f"SELECT count(*) FROM (SELECT 1 FROM facts WHERE subject=? LIMIT {int(cap)})",
                            (entity,)).fetchone()[0]
        if n < cap:
            n += self.db.execute(f"SELECT count(*) FROM (SELECT 1 FROM facts WHERE object=? LIMIT {int(cap)})",
                                 (entity,)).fetchone()[0]
        return n
