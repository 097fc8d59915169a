"""The FAISS vector index: exact while small, HNSW past a size threshold, saved atomically.

The index is a cache of the vectors stored in the fact log: it holds (vector id -> vector) and
nothing else, and can always be rebuilt from the log. Forgotten rows are filtered by the log at
search time (tombstones), so removal never has to touch the graph of an HNSW index; they are
dropped for real when the index is compacted (rebuilt) once they pass a fraction of it.
"""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from kb.errors import InvalidInputError, choice
from kb.files import write_atomic


class IndexKind(str, enum.Enum):
    """Which FAISS structure holds the vectors."""

    AUTO = "auto"  # exact until hnsw_threshold vectors, then HNSW
    FLAT = "flat"  # always exact (brute force inner product)
    HNSW = "hnsw"  # always approximate

    @classmethod
    def parse(cls, value: "str | IndexKind") -> "IndexKind":
        return choice(cls, value, "index kind")


@dataclass(frozen=True)
class IndexConfig:
    """Vector index settings; defaults measured on 2 cores with 384-dim MiniLM-like vectors."""

    # AUTO switches from exact to HNSW at hnsw_threshold vectors
    kind: IndexKind = IndexKind.AUTO
    # exact search over 384-dim fp32 passes 1 ms per query at ~20k vectors (0.6 ms at 15k): past this, HNSW
    hnsw_threshold: int = 15_000
    # HNSW graph degree: M=32 keeps 1M x 384 at ~1.8 GB with recall@10 >= 0.99
    hnsw_m: int = 32
    # build-time beam width: 40/64 stall at recall ~0.985 even with a wide search beam; 128 reaches
    # 0.994 at efSearch 96 (1M clustered MiniLM-like vectors) for ~2.5x the build time (185 s per 1M)
    ef_construction: int = 128
    # search-time beam width: 96 measured p50 0.30 ms / p99 0.70 ms at 1M on one core
    ef_search: int = 96
    # threads for a single query; >1 only adds OpenMP overhead and fights torch for cores
    search_threads: int = 1
    # compact (rebuild) once this fraction of the index is tombstoned
    compact_ratio: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", IndexKind.parse(self.kind))
        for name in ("hnsw_threshold", "hnsw_m", "ef_construction", "ef_search", "search_threads"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"index {name}={getattr(self, name)!r} must be >= 1")
        if not 0.0 < self.compact_ratio <= 1.0:
            raise InvalidInputError(f"compact_ratio {self.compact_ratio} must be in (0, 1]")


class VectorIndex:
    """Inner-product search over L2-normalised vectors keyed by int64 vector ids."""

    def __init__(self, dim: int, config: IndexConfig, hnsw: bool | None = None):
        self.dim = dim
        self.config = config
        if hnsw is None:
            hnsw = config.kind is IndexKind.HNSW
        self._index = self._new(hnsw)

    # ---------------------------------------------------------------- construction

    def _new(self, hnsw: bool) -> faiss.IndexIDMap2:
        if hnsw:
            inner = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.config.ef_construction
            inner.hnsw.efSearch = self.config.ef_search
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    @property
    def is_hnsw(self) -> bool:
        return isinstance(faiss.downcast_index(self._index.index), faiss.IndexHNSW)

    @property
    def kind_name(self) -> str:
        return "hnsw" if self.is_hnsw else "flat"

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """Sorted int64 ids held by the index."""
        return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def storage_ids(self) -> np.ndarray:
        """The int64 ids in storage order (not sorted)."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def wants_hnsw(self, n: int) -> bool:
        k = self.config.kind
        return k is IndexKind.HNSW or (k is IndexKind.AUTO and n >= self.config.hnsw_threshold)

    # ---------------------------------------------------------------- mutation

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Add (n,) int64 ids with (n, dim) float32 vectors; switches to HNSW when due."""
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not self.is_hnsw and self.wants_hnsw(len(self) + len(ids)):
            old_ids, old_vecs = self.dump()
            self._index = self._new(hnsw=True)
            ids = np.concatenate([old_ids, ids])
            vecs = np.concatenate([old_vecs, vecs])
        faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))
        self._index.add_with_ids(vecs, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Physically remove ids from an exact index; HNSW keeps them as log-filtered tombstones."""
        if self.is_hnsw or len(ids) == 0:
            return 0
        return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    def dump(self) -> tuple[np.ndarray, np.ndarray]:
        """All (ids (n,), vectors (n, dim)) currently held."""
        n = len(self)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        if n == 0:
            return ids, np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._index.index.reconstruct_n(0, n)
        return ids, vecs

    # ---------------------------------------------------------------- search

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores (k',), ids (k',)) for one (dim,) query; k' <= k, no -1 padding."""
        if len(self) == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        faiss.omp_set_num_threads(self.config.search_threads)
        if self.is_hnsw:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.config.ef_search, k)
            scores, ids = self._index.search(q, k, params=params)
        else:
            scores, ids = self._index.search(q, k)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    # ---------------------------------------------------------------- persistence

    def save(self, path: Path) -> None:
        """Write atomically (see kb.files.write_atomic); faiss streams straight into the temp file."""

        def write(fh) -> None:
            writer = faiss.PyCallbackIOWriter(fh.write)
            faiss.write_index(self._index, writer)
            del writer  # flushes faiss's buffer into fh

        write_atomic(Path(path), write)

    @classmethod
    def load(cls, path: Path, dim: int, config: IndexConfig) -> "VectorIndex":
        """Read a saved index; raises ValueError/RuntimeError if unreadable or of another dim."""
        raw = faiss.read_index(str(path))
        if not isinstance(raw, faiss.IndexIDMap2):
            raw = faiss.downcast_index(raw)
        if not isinstance(raw, faiss.IndexIDMap2) or raw.d != dim:
            raise ValueError(f"index file {path} is not an id-mapped index of dimension {dim}")
        self = cls.__new__(cls)
        self.dim = dim
        self.config = config
        self._index = raw
        if self.is_hnsw:
            faiss.downcast_index(raw.index).hnsw.efSearch = config.ef_search
        return self

    def describe(self) -> dict:
        return {"kind": self.kind_name, "ntotal": len(self), "dim": self.dim}

