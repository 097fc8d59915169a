"""An Embedder that remembers vectors by content hash in SQLite, for benchmark iteration over the same turns.

It implements kb's Embedder protocol around any other embedder and reports the inner one's id,
so a KB built through it is the same as one built without it. Vectors are keyed by
sha256(embedder id, text) and stored as float32 blobs; ``put`` fills it from elsewhere (e.g. the same
weights run once on a lent GPU, see bench/README.md).
"""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def text_key(embedder_id: str, text: str) -> str:
    return hashlib.sha256(f"{embedder_id}\x1f{text}".encode("utf-8")).hexdigest()


class CachedEmbedder:
    """Wraps ``inner``; ``hits``/``misses`` count looked-up texts (a benchmark reports them)."""

    def __init__(self, inner, path: str | Path):
        self.inner = inner
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS vec(key TEXT PRIMARY KEY, v BLOB NOT NULL)")
        self.hits = 0
        self.misses = 0

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def get(self, texts: Sequence[str]) -> dict[int, np.ndarray]:
        keys = [text_key(self.id, t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = ",".join("?" * len(chunk))
            for k, blob in self.db.execute(f"SELECT key, v FROM vec WHERE key IN ({q})", chunk):
                found[k] = np.frombuffer(blob, dtype=np.float32)
        return {i: found[k] for i, k in enumerate(keys) if k in found}

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(text_key(self.id, t), np.asarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors)]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO vec(key, v) VALUES(?, ?)", rows)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        have = self.get(texts)
        todo = [i for i in range(len(texts)) if i not in have]
        self.hits += len(have)
        self.misses += len(todo)
        if todo:
            vecs = self.inner.embed_documents([texts[i] for i in todo])
            self.put([texts[i] for i in todo], vecs)
            have.update(zip(todo, vecs))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, v in have.items():
            out[i] = v
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def close(self) -> None:
        self.db.close()
