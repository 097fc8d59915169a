"""Vector ids, the one place that encodes them: fact row r is vector id 2r, episode row r is 2r + 1.

The FAISS index stores only these ids; the log decodes them back to rows, so no other module
needs to know the encoding (kb.log's query methods take and return vector ids).
"""
from __future__ import annotations

import numpy as np

from kb.facts import Kind

#: the low bit of a vector id: 0 for a fact row, 1 for an episode row
_TAG = {Kind.FACT: 0, Kind.EPISODE: 1}
#: SQL column expression turning a table's rowid into its vector id
SQL_VID = {"facts": "vid * 2", "episodes": "vid * 2 + 1"}


def fact_vid(rowid: int) -> int:
    return 2 * rowid


def episode_vid(rowid: int) -> int:
    return 2 * rowid + 1


def encode(kind: Kind, rowid: int) -> int:
    return 2 * rowid + _TAG[kind]


def split(vid: int) -> tuple[Kind, int]:
    """(kind, row id) of a vector id."""
    return (Kind.EPISODE, vid >> 1) if vid & 1 else (Kind.FACT, vid >> 1)


def encode_many(kind: Kind, rowids) -> np.ndarray:
    """(n,) int64 vector ids of row ids of one table."""
    return np.asarray(rowids, dtype=np.int64) * 2 + _TAG[kind]


def of_kind(vector_ids: np.ndarray, kind: Kind) -> np.ndarray:
    """(n,) bool mask of the ids among the int64 array ``vector_ids`` that are rows of ``kind``."""
    return (np.asarray(vector_ids, dtype=np.int64) & 1) == _TAG[kind]


def rows_of(vector_ids: np.ndarray, kind: Kind) -> list[int]:
    """The row ids of ``kind`` among the int64 array ``vector_ids``, in the given order."""
    ids = np.asarray(vector_ids, dtype=np.int64)
    return (ids[of_kind(ids, kind)] >> 1).tolist()


def partition(vids) -> tuple[list[int], list[int]]:
    """(fact row ids, episode row ids) of a sequence of vector ids, each in the given order."""
    fr: list[int] = []
    er: list[int] = []
    for v in vids:
        v = int(v)
        (er if v & 1 else fr).append(v >> 1)
    return fr, er
