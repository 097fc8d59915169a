"""Opening a KB directory: checks, the writer lock, creation, and upgrades of older formats (with a message)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from kb import manifest as manifest_mod
from kb.embeddings import Embedder, SentenceTransformerEmbedder
from kb.errors import IncompatibleKBError, InvalidInputError, NotFoundError
from kb.facts import iso
from kb.lock import LOCK_FILE, WriterLock
from kb.log import FactLog, now
from kb.vocabulary import Vocabulary

DB_FILE = "kb.sqlite"


@dataclass
class Opened:
    """An opened directory's log, manifest and writer lock (None when read-only)."""

    log: FactLog
    manifest: manifest_mod.Manifest
    lock: WriterLock | None
    embedder: Embedder | None

    def release(self) -> None:
        self.log.close()
        if self.lock is not None:
            self.lock.release()


def open_directory(path: Path, embedder: Embedder | None, read_only: bool, create: bool,
                   allow_embedder_change: bool) -> Opened:
    """Open (or create) the KB directory ``path``: the database's schema is upgraded in one transaction,
    then the manifest's format (kb.manifest), each with a message on stderr. Nothing stays locked on error."""
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"{path} is a file; a knowledge base is a directory")
    if not path.exists():
        if read_only or not create:
            raise NotFoundError(f"no knowledge base at {path}")
        path.mkdir(parents=True)
    loaded = manifest_mod.load(path)
    if loaded is None and (read_only or not create):
        raise NotFoundError(f"{path} is not a kgrow knowledge base (no manifest.json)")
    if loaded is None and any(p.name != LOCK_FILE for p in path.iterdir()):
        raise IncompatibleKBError(f"{path} is not empty and has no manifest.json; refusing to use it as a KB")
    lock = None if read_only else WriterLock(path)
    db = None
    try:
        if lock is not None:
            lock.acquire()
        if loaded is None:
            embedder = embedder or SentenceTransformerEmbedder()
            stamp = iso(now())
            man = manifest_mod.Manifest(manifest_mod.FORMAT_VERSION, embedder.id, embedder.dim, stamp, stamp,
                                        manifest_mod.software())
        else:
            man = loaded.manifest
            if embedder is not None and not allow_embedder_change:
                manifest_mod.check_embedder(man, embedder, path)
        db = FactLog(path / DB_FILE, read_only=read_only)  # upgrades an older schema, in a transaction
        if not read_only and loaded is None:
            with db.transaction():
                Vocabulary(db).seed_defaults()
            manifest_mod.save(path, man)
        elif not read_only and loaded.upgraded_from is not None:
            man = replace(man, written_by=manifest_mod.software())
            manifest_mod.save(path, man)
            manifest_mod.report_upgrade(path, loaded.upgraded_from)
        return Opened(db, man, lock, embedder)
    except BaseException:
        if db is not None:
            db.close()
        if lock is not None:
            lock.release()
        raise
