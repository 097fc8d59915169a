"""IndexKeeper: keeps the FAISS indexes (one per kind) consistent with the log (verify, repair, rebuild, compact, save)."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from kb import manifest
from kb.facts import Kind
from kb.files import fsync_dir
from kb.index import VectorIndex
from kb.log import Storage
from kb.log import vids as vid_codes

if TYPE_CHECKING:
    from kb.config import KBConfig
    from kb.embeddings import Embedder

log = logging.getLogger("kgrow.kb")
#: one FAISS index per kind (format 3): a search for episodes never scans facts and the other way
#: round, so the log's visibility filter keeps most of what the index returns
INDEX_FILES = {Kind.FACT: "index-fact.faiss", Kind.EPISODE: "index-episode.faiss"}
#: formats 1 and 2 kept facts and episodes in this one file; opening for writing splits it
LEGACY_INDEX_FILE = "index.faiss"


@dataclass(frozen=True)
class VerifyReport:
    """Result of ``KnowledgeBase.verify``: ``ok`` is False when any problem was found."""

    ok: bool
    facts: int  # rows in the log, every status
    episodes: int
    indexed: int  # vectors in the indexes
    missing: int  # log rows the indexes lack (searchable only by keyword until repaired)
    unknown: int  # index ids the log does not know (would be dropped)
    tombstones: int  # forgotten rows still in an index (filtered at search time)
    problems: tuple[str, ...] = field(default=())


class IndexKeeper:
    """Owns the in-memory indexes (one per kind), their files, and the policy of when to save, repair
    and compact them."""

    def __init__(self, directory: Path, db: Storage, dim: int, config: "KBConfig"):
        self.directory = directory
        self.db = db
        self.dim = dim
        self.config = config
        self.report: list[str] = []
        self._unsaved = dict.fromkeys(Kind, 0)
        self._dead = dict.fromkeys(Kind, 0)  # forgotten vectors still held by an HNSW index
        self._pending: list | None = None  # inside deferred(): (method, argument) to apply at its end
        legacy = directory / LEGACY_INDEX_FILE
        split = legacy.exists() and not all((directory / INDEX_FILES[k]).exists() for k in Kind)
        if split:
            log.info("splitting the vector index of %s by kind", directory)
            print(f"kgrow: splitting the vector index of {directory} into one index per kind (format "
                  f"{manifest.FORMAT_VERSION}); rebuilding them from the log", file=sys.stderr)
        self.indexes = {k: self._load_or_rebuild(k, split) for k in Kind}
        if legacy.exists() and not db.read_only:
            self.save()  # the per-kind files first: a crash before the unlink only repeats this
            legacy.unlink()
            fsync_dir(directory)

    # ------------------------------------------------------------------ open-time verification

    def _load_or_rebuild(self, kind: Kind, upgrading: bool) -> VectorIndex:
        path = self.directory / INDEX_FILES[kind]
        if not path.exists():
            if upgrading:
                return self._build(kind)
            if len(self.db.vector_ids(include_forgotten=True, kind=kind)):
                self._tell(f"vector index {path.name} is missing; rebuilding it from the log")
                return self._build(kind)
            return VectorIndex(self.dim, self.config.index)
        try:
            index = VectorIndex.load(path, self.dim, self.config.index)
        except (RuntimeError, ValueError) as e:
            self._tell(f"vector index {path.name} is unreadable ({str(e).splitlines()[0][:120]}); rebuilding")
            return self._build(kind)
        want = self.db.vector_ids(kind=kind)
        have = index.ids()
        known = self.db.vector_ids(include_forgotten=True, kind=kind)
        unknown = np.setdiff1d(have, known, assume_unique=True)
        missing = np.setdiff1d(want, have, assume_unique=True)
        if len(unknown) or len(missing) > max(1000, len(want) // 2):
            self._tell(f"vector index {path.name} disagrees with the log ({len(missing)} missing, {len(unknown)} "
                       "unknown ids); rebuilding it from the log")
            return self._build(kind)
        if len(missing):
            self._tell(f"vector index {path.name} lags the log by {len(missing)} vectors (last session ended "
                       "before saving); adding them from the log")
            self._add_from_log(index, missing, kind)
            self._unsaved[kind] += len(missing)
        self._dead[kind] = len(have) - (len(want) - len(missing))  # forgotten rows still in the index
        return index

    def _tell(self, msg: str) -> None:
        log.warning(msg)
        self.report.append(msg)
        if self.config.show_progress:
            print(f"kgrow: {msg}", file=sys.stderr)

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="vec", disable=not self.config.show_progress or total < 2000,
                    file=sys.stderr, leave=False)

    def _add_from_log(self, index: VectorIndex, vids: np.ndarray | None, kind: Kind) -> None:
        total = len(vids) if vids is not None else len(self.db.vector_ids(kind=kind))
        with self._bar(total, f"indexing {kind.value}s") as bar:
            for ids, vecs in self.db.iter_vectors(self.dim, vids, kind=kind):
                index.add(ids, vecs)
                bar.update(len(ids))

    def _build(self, kind: Kind) -> VectorIndex:
        n = len(self.db.vector_ids(kind=kind))
        index = VectorIndex(self.dim, self.config.index, hnsw=VectorIndex(self.dim, self.config.index).wants_hnsw(n))
        self._add_from_log(index, None, kind)
        self._unsaved[kind] += max(1, n)
        self._dead[kind] = 0
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
        for kind, mine in self._by_kind(ids):
            self.indexes[kind].add(ids[mine], vecs[mine])
            self._unsaved[kind] += int(mine.sum())
        if sum(self._unsaved.values()) >= self.config.save_every and not self.db.read_only:
            self.save()

    def tombstone(self, vids: np.ndarray) -> None:
        """Forgotten vectors: removed from an exact index now; compacted out of HNSW in bulk."""
        if len(vids) == 0:
            return
        if self._pending is not None:
            self._pending.append((self.tombstone, vids))
            return
        for kind, mine in self._by_kind(vids):
            index = self.indexes[kind]
            index.remove(vids[mine])
            self._unsaved[kind] += int(mine.sum())
            n = len(index)
            if n and index.is_hnsw:
                self._dead[kind] += int(mine.sum())  # counted at open, then kept up to date: O(1) per forget
                if self._dead[kind] / n >= self.config.index.compact_ratio:
                    self.indexes[kind] = self._build(kind)
                    self.save()

    @staticmethod
    def _by_kind(ids: np.ndarray):
        """(kind, mask) for each kind that has ids among ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        for kind in Kind:
            mine = vid_codes.of_kind(ids, kind)
            if mine.any():
                yield kind, mine

    def catch_up(self) -> None:
        """Read-only openers: index vectors that a concurrent writer committed since we loaded."""
        top = self.db.max_vector_id()
        if top <= getattr(self, "_seen_top", 0):
            return
        for kind, index in self.indexes.items():
            missing = np.setdiff1d(self.db.vector_ids(kind=kind), index.ids(), assume_unique=True)
            if len(missing):
                self._add_from_log(index, missing, kind)
        self._seen_top = top

    def nearest(self, query: np.ndarray, n: int, kinds: Sequence[Kind]) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` nearest vectors of these kinds: (scores, vector ids), best first. Several kinds are
        merged by score, as one index holding them all would rank them."""
        found = [self.indexes[k].search(query, n) for k in Kind if k in kinds]
        if len(found) == 1:
            return found[0]
        scores = np.concatenate([s for s, _ in found])
        ids = np.concatenate([i for _, i in found])
        best = np.argsort(-scores, kind="stable")[:n]
        return scores[best], ids[best]

    def save(self) -> None:
        if self.db.read_only:
            return
        for kind, index in self.indexes.items():
            if self._unsaved[kind]:
                index.save(self.directory / INDEX_FILES[kind])
                self._unsaved[kind] = 0

    def rebuild(self) -> int:
        self.indexes = {k: self._build(k) for k in Kind}
        if not self.db.read_only:
            self.save()
        return self.size

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
        return sum(len(i) for i in self.indexes.values())

    @property
    def index_kind(self) -> str:
        """"hnsw" when any index is approximate, else "flat"."""
        return "hnsw" if any(i.is_hnsw for i in self.indexes.values()) else "flat"

    def ids(self) -> np.ndarray:
        """Sorted int64 ids held by the indexes."""
        return np.sort(np.concatenate([i.ids() for i in self.indexes.values()]))

    def storage_order(self) -> np.ndarray:
        """The vector ids in the order the indexes store them, facts first (faiss breaks score ties by it)."""
        return np.concatenate([self.indexes[k].storage_ids() for k in Kind])

    # ------------------------------------------------------------------ verification

    def verify(self) -> VerifyReport:
        problems: list[str] = []
        counts = self.db.counts()
        if self.db.read_only:
            self.catch_up()
        want = self.db.vector_ids()
        known = self.db.vector_ids(include_forgotten=True)
        have = self.ids()
        missing = np.setdiff1d(want, have, assume_unique=True)
        # an id is unknown when the log lacks it, or holds it as a row of the other kind
        unknown = sum(len(np.setdiff1d(index.ids(), known[vid_codes.of_kind(known, kind)], assume_unique=True))
                      for kind, index in self.indexes.items())
        tomb = np.intersect1d(have, np.setdiff1d(known, want, assume_unique=True), assume_unique=True)
        if len(missing):
            problems.append(f"{len(missing)} log rows are missing from the vector index (run `kgrow kb rebuild`)")
        if unknown:
            problems.append(f"{unknown} index ids are unknown to the log (run `kgrow kb rebuild`)")
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
        return VerifyReport(not problems, counts["facts"], counts["episodes"], len(have), len(missing), unknown,
                            len(tomb), tuple(problems))
