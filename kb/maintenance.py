"""IndexKeeper: keeps the FAISS index consistent with the log (verify, repair, rebuild, compact, save)."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from tqdm import tqdm

from kb.facts import Kind
from kb.index import VectorIndex
from kb.log import Storage

if TYPE_CHECKING:
    from kb.config import KBConfig
    from kb.embeddings import Embedder

log = logging.getLogger("kgrow.kb")
INDEX_FILE = "index.faiss"


@dataclass(frozen=True)
class VerifyReport:
    """Result of ``KnowledgeBase.verify``: ``ok`` is False when any problem was found."""

    ok: bool
    facts: int  # rows in the log, every status
    episodes: int
    indexed: int  # vectors in the index
    missing: int  # log rows the index lacks (searchable only by keyword until repaired)
    unknown: int  # index ids the log does not know (would be dropped)
    tombstones: int  # forgotten rows still in the index (filtered at search time)
    problems: tuple[str, ...] = field(default=())


class IndexKeeper:
    """Owns the in-memory index, its file, and the policy of when to save, repair and compact it."""

    def __init__(self, directory: Path, db: Storage, dim: int, config: "KBConfig"):
        self.path = directory / INDEX_FILE
        self.db = db
        self.dim = dim
        self.config = config
        self.report: list[str] = []
        self._unsaved = 0
        self._dead = 0  # forgotten vectors still held by an HNSW index (filtered at search time)
        self._pending: list | None = None  # inside deferred(): (method, argument) to apply at its end
        self.index = self._load_or_rebuild()

    # ------------------------------------------------------------------ open-time verification

    def _load_or_rebuild(self) -> VectorIndex:
        if not self.path.exists():
            if self.db.max_vector_id():
                self._tell(f"vector index {self.path.name} is missing; rebuilding it from the log")
                return self._build()
            return VectorIndex(self.dim, self.config.index)
        try:
            index = VectorIndex.load(self.path, self.dim, self.config.index)
        except (RuntimeError, ValueError) as e:
            self._tell(f"vector index {self.path.name} is unreadable ({str(e).splitlines()[0][:120]}); rebuilding")
            return self._build()
        want = self.db.vector_ids()
        have = index.ids()
        known = self.db.vector_ids(include_forgotten=True)
        unknown = np.setdiff1d(have, known, assume_unique=True)
        missing = np.setdiff1d(want, have, assume_unique=True)
        if len(unknown) or len(missing) > max(1000, len(want) // 2):
            self._tell(f"vector index disagrees with the log ({len(missing)} missing, {len(unknown)} unknown ids); "
                       "rebuilding it from the log")
            return self._build()
        if len(missing):
            self._tell(f"vector index lags the log by {len(missing)} vectors (last session ended before saving); "
                       "adding them from the log")
            self._add_from_log(index, missing)
            self._unsaved += len(missing)
        self._dead = len(have) - (len(want) - len(missing))  # forgotten rows still in the index
        return index

    def _tell(self, msg: str) -> None:
        log.warning(msg)
        self.report.append(msg)
        if self.config.show_progress:
            print(f"kgrow: {msg}", file=sys.stderr)

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="vec", disable=not self.config.show_progress or total < 2000,
                    file=sys.stderr, leave=False)

    def _add_from_log(self, index: VectorIndex, vids: np.ndarray | None) -> None:
        total = len(vids) if vids is not None else len(self.db.vector_ids())
        with self._bar(total, "indexing") as bar:
            for ids, vecs in self.db.iter_vectors(self.dim, vids):
                index.add(ids, vecs)
                bar.update(len(ids))

    def _build(self) -> VectorIndex:
        n = len(self.db.vector_ids())
        index = VectorIndex(self.dim, self.config.index, hnsw=VectorIndex(self.dim, self.config.index).wants_hnsw(n))
        self._add_from_log(index, None)
        self._unsaved += max(1, n)
        return index

    # ------------------------------------------------------------------ runtime

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """``with keeper.deferred():`` index changes wait for the block to end: applied in order if it
        succeeds, dropped if it raises (its log transaction rolled back, so the rows are gone too)."""
        if self._pending is not None:  # nested: the outer block applies or drops them
            yield
            return
        self._pending = []
        try:
            yield
        except BaseException:
            self._pending = None
            raise
        pending, self._pending = self._pending, None
        for apply, arg in pending:
            apply(arg)

    def add(self, new_vecs: list[tuple[int, np.ndarray]]) -> None:
        if not new_vecs:
            return
        if self._pending is not None:
            self._pending.append((self.add, new_vecs))
            return
        ids = np.array([v for v, _ in new_vecs], dtype=np.int64)
        vecs = np.stack([x for _, x in new_vecs]).astype(np.float32)  # (n, dim)
        self.index.add(ids, vecs)
        self._unsaved += len(ids)
        if self._unsaved >= self.config.save_every and not self.db.read_only:
            self.save()

    def tombstone(self, vids: np.ndarray) -> None:
        """Forgotten vectors: removed from an exact index now; compacted out of HNSW in bulk."""
        if len(vids) == 0:
            return
        if self._pending is not None:
            self._pending.append((self.tombstone, vids))
            return
        self.index.remove(vids)
        self._unsaved += len(vids)
        n = len(self.index)
        if n and self.index.is_hnsw:
            self._dead += len(vids)  # counted at open, then kept up to date: O(1) per forget
            if self._dead / n >= self.config.index.compact_ratio:
                self.rebuild()

    def catch_up(self) -> None:
        """Read-only openers: index vectors that a concurrent writer committed since we loaded."""
        top = self.db.max_vector_id()
        if top <= getattr(self, "_seen_top", 0):
            return
        missing = np.setdiff1d(self.db.vector_ids(), self.index.ids(), assume_unique=True)
        if len(missing):
            self._add_from_log(self.index, missing)
        self._seen_top = top

    def save(self) -> None:
        if self.db.read_only or self._unsaved == 0:
            return
        self.index.save(self.path)
        self._unsaved = 0

    def rebuild(self) -> int:
        self.index = self._build()
        self._dead = 0
        if not self.db.read_only:
            self.save()
        return len(self.index)

    def reembed(self, embedder: "Embedder") -> None:
        """Recompute every stored vector with ``embedder`` (after a model change), in one transaction."""
        self.dim = embedder.dim
        with self.db.transaction():
            for kind in Kind:
                rows = self.db.texts(kind)
                with self._bar(len(rows), f"re-embedding {kind.value}s") as bar:
                    for i in range(0, len(rows), 512):
                        chunk = rows[i : i + 512]
                        vecs = embedder.embed_documents([t for _, t in chunk])
                        self.db.set_vectors([(v, x) for (v, _), x in zip(chunk, vecs)])
                        bar.update(len(chunk))

    # ------------------------------------------------------------------ what others may read

    @property
    def size(self) -> int:
        """Vectors held (tombstones of an HNSW index included)."""
        return len(self.index)

    @property
    def index_kind(self) -> str:
        return self.index.kind_name

    def storage_order(self) -> np.ndarray:
        """The vector ids in the order the index stores them (faiss breaks score ties by it)."""
        return self.index.storage_ids()

    # ------------------------------------------------------------------ verification

    def verify(self) -> VerifyReport:
        problems: list[str] = []
        counts = self.db.counts()
        if self.db.read_only:
            self.catch_up()
        want = self.db.vector_ids()
        known = self.db.vector_ids(include_forgotten=True)
        have = self.index.ids()
        missing = np.setdiff1d(want, have, assume_unique=True)
        unknown = np.setdiff1d(have, known, assume_unique=True)
        tomb = np.intersect1d(have, np.setdiff1d(known, want, assume_unique=True), assume_unique=True)
        if len(missing):
            problems.append(f"{len(missing)} log rows are missing from the vector index (run `kgrow kb rebuild`)")
        if len(unknown):
            problems.append(f"{len(unknown)} index ids are unknown to the log (run `kgrow kb rebuild`)")
        chk = self.db.integrity(self.dim)
        if chk.quick_check != "ok":
            problems.append(f"SQLite quick_check: {chk.quick_check}")
        if chk.bad_vectors:
            problems.append(f"{chk.bad_vectors} rows have no vector or one of the wrong dimension (expected {self.dim})")
        if chk.orphans:
            problems.append(f"{chk.orphans} facts have no source (provenance lost)")
        if chk.dangling:
            problems.append(f"{chk.dangling} facts are superseded by a fact that does not exist")
        if chk.multi_valued:
            problems.append(f"single-valued relations with several current values: {chk.multi_valued}")
        if chk.bad_links:
            problems.append(f"{chk.bad_links} sources point at episodes that do not exist")
        return VerifyReport(not problems, counts["facts"], counts["episodes"], len(have), len(missing), len(unknown),
                            len(tomb), tuple(problems))
