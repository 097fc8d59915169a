"""The durable fact log: one SQLite database (WAL), the single source of truth of a KB and the only code that speaks SQL.

``FactLog`` is the storage seam (its interface is ``kb.log.storage.Storage``): every other part of
the knowledge base reads and writes through its typed methods, and every write runs inside
``with log.transaction():``, which commits on success and rolls back on any exception. The FAISS
index stores only vector ids (kb.log.vids encodes them); everything else is looked up here, so a
status change (supersede, forget) is visible to every search the moment it commits. Older
databases are upgraded on open by the numbered steps of kb.log.migrations.
"""
from __future__ import annotations

from kb.log.base import LogBase, now
from kb.log.bulk import BulkMixin, Integrity, Section
from kb.log.ddl import SCHEMA_VERSION
from kb.log.queries import QueriesMixin
from kb.log.rows import RowsMixin, from_blob
from kb.log.scope import Scope
from kb.log.storage import Storage


class FactLog(RowsMixin, QueriesMixin, BulkMixin, LogBase):
    """The SQLite fact log: ``FactLog(path, read_only=False)``; see the package docstring."""


__all__ = ["SCHEMA_VERSION", "FactLog", "Integrity", "Scope", "Section", "Storage", "from_blob", "now"]
