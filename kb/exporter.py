"""Export a knowledge base as complete JSONL (re-importable), GraphML, networkx node-link JSON or CSV triples."""
from __future__ import annotations

import base64
import csv
import enum
import io
import json
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import networkx as nx
import numpy as np

from kb.errors import InvalidInputError, NotFoundError, choice
from kb.facts import iso
from kb.files import write_atomic
from kb.graph import FactGraph
from kb.log import Section, Storage, now
from kb.manifest import Manifest

# JSONL layout (one JSON object per line, UTF-8, split on "\n" only):
#
#   line 1  {"type": "header", "format": "kgrow-export", "version": 1, "exported_at": ISO-8601,
#            "embedder": {"id": str, "dim": int}, "user": str | null, "vector_encoding": str | null,
#            "counts": {record type: number of records of that type}}
#   then, in this order (each table in its insertion order, so an import reproduces row ids):
#           {"type": "user",     "name", "created"}
#           {"type": "relation", "name", "single_valued": bool}
#           {"type": "alias",    "alias", "canonical"}
#           {"type": "entity",   "name", "display", "first_seen"}
#           {"type": "episode",  "id", "user", "speaker", "text", "source_id", "time", "status", "session",
#                                "position", "role"[, "vector"]}
#           {"type": "fact",     "id", "user" ("" = shared), "subject", "relation", "object", "text",
#                                "confidence", "status", "stated_at", "valid_from", "valid_to",
#                                "superseded_by"[, "vector"]}
#           {"type": "source",   "fact_id", "source_id", "user", "time", "episode_id", "note"}
#           {"type": "history",  "fact_id", "time", "event", "detail"}
#
# Times are unix seconds (UTC) as JSON numbers: the exact floats the KB stores, so a round trip is
# lossless (ISO-8601 strings carry only microseconds); the importer accepts ISO-8601 strings too.
# "vector" (only with vectors=True) is base64 of the ``dim`` float32 values, little-endian: exact,
# and a third the size of a list of decimals.

#: the header's "format" value, and the newest JSONL version this code writes and reads
FORMAT_NAME = "kgrow-export"
EXPORT_VERSION = 1
VECTOR_ENCODING = "base64-float32-le"
CSV_HEADER = ("id", "user", "subject", "relation", "object", "text", "confidence", "status", "valid_from", "valid_to")


class ExportFormat(str, enum.Enum):
    """File formats of ``KnowledgeBase.export``."""

    JSONL = "jsonl"  # everything, every status; re-importable with KnowledgeBase.import_
    GRAPHML = "graphml"  # current facts as a graph, for Gephi, yEd, networkx.read_graphml
    NODELINK = "nodelink"  # current facts as networkx node-link JSON (networkx.node_link_graph)
    CSV = "csv"  # current facts, one triple per row

    @classmethod
    def parse(cls, value: "str | ExportFormat") -> "ExportFormat":
        return choice(cls, value, "export format", "valid formats", fold=True)


class Exporter:
    """Writes a KB (one user plus shared facts, or everyone) to a file, from one read snapshot."""

    def __init__(self, log: Storage, storage_order: Callable[[], np.ndarray]):
        self._log = log
        self._storage_order = storage_order  # the vector index's ids in storage order

    def export(self, path: Path, fmt: "str | ExportFormat", user: str | None, vectors: bool, manifest: Manifest) -> int:
        """Write ``path`` atomically; returns the number of records written, headers not counted: JSONL
        lines after the header, CSV rows, or graph edges (= current facts) for GraphML and node-link."""
        form = ExportFormat.parse(fmt)
        if not isinstance(vectors, bool):
            raise InvalidInputError(f"vectors={vectors!r} must be True or False")
        if vectors and form is not ExportFormat.JSONL:
            raise InvalidInputError(f"vectors=True needs the jsonl format; {form.value} files carry no vectors")
        log = self._log
        with log.snapshot():  # one read snapshot: a concurrent writer cannot make the file inconsistent
            who = log.known_user(user) if user is not None else None
            writers: dict[ExportFormat, Callable[[BinaryIO], int]] = {
                ExportFormat.JSONL: lambda fh: _write_jsonl(log, self._storage_order(), manifest, fh, who, vectors),
                ExportFormat.GRAPHML: lambda fh: _write_graphml(log, fh, who),
                ExportFormat.NODELINK: lambda fh: _write_nodelink(log, fh, who),
                ExportFormat.CSV: lambda fh: _write_csv(log, fh, who),
            }
            return _atomic(path, writers[form])


def _atomic(path: Path, write: Callable[[BinaryIO], int]) -> int:
    """Write through a temp file in the target directory, fsync, rename: never a half file."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"{path} is a directory; give the path of the file to export to")
    if not path.parent.is_dir():
        raise NotFoundError(f"directory {path.parent} does not exist; create it before exporting")
    return write_atomic(path, write)


def _dumps(obj: object) -> str:
    # allow_nan=False: NaN/Infinity are not JSON; raising beats writing a file nobody can read
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _line(rec: dict) -> bytes:
    return (_dumps(rec) + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------------ JSONL


def _write_jsonl(log: Storage, order: np.ndarray, man: Manifest, fh: BinaryIO, who: str | None, vectors: bool) -> int:
    sections = {s.type: s for s in log.export_sections(who, vectors)}
    counts = {t: log.section_count(s) for t, s in sections.items()}
    fh.write(_line({
        "type": "header", "format": FORMAT_NAME, "version": EXPORT_VERSION, "exported_at": iso(now()),
        "embedder": {"id": man.embedder_id, "dim": man.embedder_dim}, "user": who,
        "vector_encoding": VECTOR_ENCODING if vectors else None, "counts": counts,
    }))
    n = 0
    for t, s in sections.items():
        if t == "fact":
            continue  # written together with the episodes, in vector-index order
        rows = (_index_order(log, order, s, sections["fact"]) if t == "episode"
                else ((s, r) for r in log.section_rows(s)))
        for sec, row in rows:
            vid = sec.kind is not None
            rec = {"type": sec.type, **dict(zip(sec.keys, row[1:] if vid else row))}
            if sec.type == "relation":
                rec["single_valued"] = bool(rec["single_valued"])
            if vectors and vid:
                rec["vector"] = _b64(row[-1], man.embedder_dim)
            fh.write(_line(rec))
            n += 1
    return n


def _index_order(log: Storage, stored: np.ndarray, episodes: Section, facts: Section) -> Iterator[tuple[Section, tuple]]:
    """Episodes and facts interleaved as the vector index stores them (``stored``: its ids in storage
    order), each table still in row-id order.

    faiss breaks score ties by storage order, so an import that adds vectors in file order ranks
    ties exactly as the source does. Rows the index lacks (forgotten) follow the row before them.
    """
    sorter = np.argsort(stored)

    def keys(s: Section) -> np.ndarray:  # (rows,) index position of each row, carried forward
        vids = log.section_vector_ids(s)
        if len(stored) == 0:
            return np.full(len(vids), -1)
        at = sorter[np.clip(np.searchsorted(stored, vids, sorter=sorter), 0, len(stored) - 1)]
        return np.maximum.accumulate(np.where(stored[at] == vids, at, -1))

    ke, kf = keys(episodes), keys(facts)
    # a stable sort of two non-decreasing runs is a merge: each table keeps its own order
    is_fact = np.argsort(np.concatenate([ke, kf]), kind="stable") >= len(ke)
    cur = {False: log.section_rows(episodes), True: log.section_rows(facts)}
    for f in is_fact.tolist():
        yield (facts if f else episodes), next(cur[f])


def _b64(blob: bytes, dim: int) -> str:
    # stored blobs are native float32; "<f4" makes the file little-endian on any machine
    vec = np.frombuffer(blob, dtype=np.float32, count=dim)
    return base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")


# ------------------------------------------------------------------------------------------ graph / CSV


def _graph(log: Storage, who: str | None) -> nx.MultiDiGraph:
    """The fact graph of ``who`` whose attributes are all str/float (GraphML and Gephi reject None)."""
    src = FactGraph.from_facts(log.list_facts(user=who), who).graph
    g = nx.MultiDiGraph(user=who or "", exported_at=iso(now()))
    for name in src.nodes:
        g.add_node(name, label=log.entity_display(name) or name)  # display name as first written
    for u, v, key, d in src.edges(keys=True, data=True):
        g.add_edge(u, v, key=key, label=d["relation"], relation=d["relation"], text=d["text"],
                   confidence=float(d["confidence"]), user=d["user"], valid_from=iso(d["valid_from"]))
    return g


def _write_graphml(log: Storage, fh: BinaryIO, who: str | None) -> int:
    g = _graph(log, who)
    nx.write_graphml(g, fh)
    return g.number_of_edges()


def _write_nodelink(log: Storage, fh: BinaryIO, who: str | None) -> int:
    # explicit edges="edges": the key networkx >= 3.4 uses, so every reader agrees on it
    g = _graph(log, who)
    fh.write(_dumps(nx.node_link_data(g, edges="edges")).encode("utf-8"))
    return g.number_of_edges()


def _write_csv(log: Storage, fh: BinaryIO, who: str | None) -> int:
    text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
    w = csv.writer(text)
    w.writerow(CSV_HEADER)
    facts = log.list_facts(user=who)
    for f in facts:
        w.writerow((f.id, f.user, f.subject, f.relation, f.object, f.text, repr(f.confidence), f.status.value,
                    iso(f.valid_from), iso(f.valid_to) or ""))
    text.flush()
    text.detach()  # hand fh back open: _atomic fsyncs and closes it
    return len(facts)
