"""Import a JSONL export: validate every line first, then write it all in one transaction, or nothing."""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from kb.embeddings import Embedder
from kb.errors import ImportFormatError, IncompatibleKBError, InvalidInputError, NotFoundError
from kb.exporter import EXPORT_VERSION, FORMAT_NAME, VECTOR_ENCODING
from kb.facts import Episode, Fact, Role, Source, Status, fact_id, iso, to_timestamp
from kb.log import Storage
from kb.maintenance import IndexKeeper
from kb.manifest import Manifest

#: texts embedded per embedder call when the file carries no usable vectors
EMBED_BATCH = 256
_FACT_ID = re.compile(r"f_[0-9a-f]{24}(-[0-9]+)?")
_EPISODE_ID = re.compile(r"e_[0-9a-f]{24}")


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote; ``skipped`` counts facts and episodes whose id the KB already had."""

    facts: int
    episodes: int
    sources: int
    skipped: int
    reembedded: int  # facts and episodes embedded here because the file had no usable vector


@dataclass(frozen=True)
class _Header:
    embedder_id: str
    dim: int


# ------------------------------------------------------------------------------------------ field checks
# Each check takes (value, line, field), returns the value as stored, or raises ImportFormatError.


def _show(v: object) -> str:
    return f"{type(v).__name__} {v!r:.60}"


def _is_text(v: object) -> bool:
    return isinstance(v, str) and bool(v.strip()) and "\x00" not in v


def _check(ok: Callable[[object], bool], expect: str, convert: Callable = lambda v: v) -> Callable:
    def check(v: object, no: int, name: str) -> object:
        if not ok(v):
            raise ImportFormatError(no, name, f"must be {expect}, got {_show(v)}")
        return convert(v)
    return check


def _time(v: object, no: int, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ImportFormatError(no, name, f"must be unix seconds or an ISO-8601 string, got {_show(v)}")
    try:
        t = to_timestamp(v, name)
        iso(t)  # in datetime's range: later exports must be able to print it
        return t
    except (InvalidInputError, OverflowError, ValueError, OSError) as e:
        raise ImportFormatError(no, name, str(e) if isinstance(e, InvalidInputError) else f"{v!r} is out of range") from None


_STATUSES = tuple(s.value for s in Status)
_ROLES = tuple(r.value for r in Role)
_CHECKS: dict[str, Callable[[object, int, str], object]] = {
    "text": _check(_is_text, "a non-empty string without NUL"),
    "scope": _check(lambda v: v == "" or _is_text(v), 'a user name, or "" for a shared fact'),
    "time": _time,
    # the range test also rejects NaN and infinity, and never turns a huge int into a float
    "confidence": _check(lambda v: type(v) in (int, float) and 0.0 <= v <= 1.0, "a number in [0, 1]", float),
    "bool": _check(lambda v: isinstance(v, bool), "true or false"),
    "status": _check(lambda v: v in _STATUSES, f"one of {', '.join(_STATUSES)}"),
    "episode_status": _check(lambda v: v in ("active", "forgotten"), "active or forgotten"),
    "fact_id": _check(lambda v: isinstance(v, str) and bool(_FACT_ID.fullmatch(v)), "a fact id (f_ + 24 hex digits [+ -n])"),
    "episode_id": _check(lambda v: isinstance(v, str) and bool(_EPISODE_ID.fullmatch(v)), "an episode id (e_ + 24 hex digits)"),
    "position": _check(lambda v: type(v) is int and v >= 0, "an integer >= 0"),
    "role": _check(lambda v: v in _ROLES, f"one of {', '.join(_ROLES)}"),
}
# field -> check per record type; a trailing "?" means the field may be null or absent
_SPECS: dict[str, dict[str, str]] = {
    "user": {"name": "text", "created": "time"},
    "relation": {"name": "text", "single_valued": "bool"},
    "alias": {"alias": "text", "canonical": "text"},
    "entity": {"name": "text", "display": "text", "first_seen": "time"},
    "episode": {"id": "episode_id", "user": "text", "speaker": "text", "text": "text", "source_id": "text?",
                "time": "time", "status": "episode_status",
                # added in export format 1 by schema 2; absent in older exports
                "session": "text?", "position": "position?", "role": "role?"},
    "fact": {"id": "fact_id", "user": "scope", "subject": "text", "relation": "text", "object": "text",
             "text": "text", "confidence": "confidence", "status": "status", "stated_at": "time",
             "valid_from": "time", "valid_to": "time?", "superseded_by": "fact_id?"},
    "source": {"fact_id": "fact_id", "source_id": "text?", "user": "text?", "time": "time",
               "episode_id": "episode_id?", "note": "text?"},
    "history": {"fact_id": "fact_id", "time": "time", "event": "text", "detail": "text?"},
}


def _vector(v: object, no: int, dim: int) -> np.ndarray:
    """Base64 of ``dim`` float32 little-endian values -> (dim,) float32 array."""
    try:
        raw = base64.b64decode(v, validate=True) if isinstance(v, str) else None
    except (binascii.Error, ValueError):
        raw = None
    if raw is None:
        raise ImportFormatError(no, "vector", f"must be base64 text ({VECTOR_ENCODING}), got {_show(v)}")
    if len(raw) != 4 * dim:
        raise ImportFormatError(no, "vector", f"holds {len(raw) / 4:g} float32 values; the header's dimension is {dim}")
    vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(vec).all():
        raise ImportFormatError(no, "vector", "contains NaN or infinity")
    return vec


# ------------------------------------------------------------------------------------------ parsing


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) of every non-blank line; split on b"\\n" only, as the exporter writes."""
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ImportFormatError(no, "encoding", f"is not valid UTF-8 (byte 0x{raw[e.start]:02x} at "
                                        f"column {e.start + 1}); export files are UTF-8") from None
            if not text.strip():
                continue
            try:
                rec = json.loads(text, parse_constant=_no_constant)
            except (ValueError, RecursionError) as e:
                raise ImportFormatError(no, "json", f"is not valid JSON ({e})") from None
            if not isinstance(rec, dict):
                raise ImportFormatError(no, "json", f"must be a JSON object, got {type(rec).__name__}")
            yield no, rec


def _header(no: int, rec: dict, path: Path) -> _Header:
    if rec.get("type") != "header":
        raise ImportFormatError(no, "type", f"the first record must be the export header (type 'header'), "
                                f"got {rec.get('type')!r}")
    if rec.get("format") != FORMAT_NAME:
        raise ImportFormatError(no, "format", f"is {rec.get('format')!r}, not {FORMAT_NAME!r}: not a kgrow export")
    version = rec.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ImportFormatError(no, "version", f"must be a positive integer, got {_show(version)}")
    if version > EXPORT_VERSION:
        raise IncompatibleKBError(f"{path} is export format version {version}, newer than this kgrow reads "
                                  f"(<= {EXPORT_VERSION}); upgrade kgrow to import it")
    emb = rec.get("embedder")
    dim = emb.get("dim") if isinstance(emb, dict) else None
    if not isinstance(emb, dict) or not isinstance(emb.get("id"), str) or type(dim) is not int or dim < 1:
        raise ImportFormatError(no, "embedder", f'must be {{"id": str, "dim": positive int}}, got {emb!r:.80}')
    return _Header(emb["id"], dim)


def _record(no: int, rec: dict, dim: int) -> dict:
    """The record with every field checked and converted (times to unix seconds, vector to an array)."""
    if "type" not in rec:
        raise ImportFormatError(no, "type", "is missing")
    t = rec["type"]
    spec = _SPECS.get(t) if isinstance(t, str) else None
    if spec is None:
        why = "a second header; only line 1 may be one" if t == "header" else f"unknown record type {t!r}"
        raise ImportFormatError(no, "type", f"{why}; valid types: {', '.join(_SPECS)}")
    out: dict = {"type": t}
    for name, kind in spec.items():
        v = rec.get(name)
        if v is None and kind.endswith("?"):
            out[name] = None
        elif v is None:
            raise ImportFormatError(no, name, "is missing" if name not in rec else "must not be null")
        else:
            out[name] = _CHECKS[kind.rstrip("?")](v, no, name)
    if t in ("fact", "episode") and rec.get("vector") is not None:
        out["vector"] = _vector(rec["vector"], no, dim)
    return out


def _validate(path: Path) -> _Header:
    """Pass 1: check every line and every reference without writing; raise at the first bad record."""
    header: _Header | None = None
    ids: dict[str, set[str]] = {"fact": set(), "episode": set()}
    later: list[tuple[int, str, str, str]] = []  # (line, field, kind, id) referring ahead: checked at the end
    counts: Counter[str] = Counter()
    declared: object = None
    head_no = 1
    for no, raw in _lines(path):
        if header is None:
            header, head_no, declared = _header(no, raw, path), no, raw.get("counts")
            continue
        r = _record(no, raw, header.dim)
        counts[r["type"]] += 1
        if r["type"] in ids:
            if r["id"] in ids[r["type"]]:
                raise ImportFormatError(no, "id", f"{r['id']!r} appears twice in the file")
            ids[r["type"]].add(r["id"])
        refs = [("superseded_by", "fact")] if r["type"] == "fact" else []
        refs += [("fact_id", "fact"), ("episode_id", "episode")] if r["type"] in ("source", "history") else []
        for name, kind in refs:
            if r.get(name) is not None and r[name] not in ids[kind]:
                later.append((no, name, kind, r[name]))
    if header is None:
        raise ImportFormatError(1, "header", "the file is empty; a kgrow export starts with a header line")
    for no, name, kind, ref in later:
        if ref not in ids[kind]:
            raise ImportFormatError(no, name, f"refers to {kind} {ref!r}, which is not in the file")
    # the header's counts catch a file cut short at a line boundary (e.g. an interrupted copy)
    if isinstance(declared, dict) and {k: v for k, v in declared.items() if v} != dict(counts):
        raise ImportFormatError(head_no, "counts", f"declare {declared} records but the file holds {dict(counts)}; "
                                "it is truncated or was edited")
    return header


# ------------------------------------------------------------------------------------------ writing


def import_jsonl(log: Storage, keeper: IndexKeeper, manifest: Manifest, embedder: Callable[[], Embedder],
                 path: Path) -> ImportResult:
    """Validate ``path`` completely, then add its rows to the log in one transaction and their vectors
    to the index (the caller holds the KB's mutex)."""
    if not Path(path).is_file():
        raise NotFoundError(f"no import file at {path}")
    header = _validate(path)
    dim = manifest.embedder_dim
    # vectors of another model are not comparable even at the same dimension: re-embed those
    use_vectors = header.embedder_id == manifest.embedder_id and header.dim == dim
    n: Counter[str] = Counter()
    skipped_facts: set[str] = set()
    index_vids: list[int] = []
    pending: list[dict] = []  # facts and episodes waiting for one batched embedding call

    def flush() -> None:
        todo = [r for r in pending if not (use_vectors and "vector" in r)]
        if todo:
            for r, v in zip(todo, embedder().embed_documents([r["text"] for r in todo])):
                r["vector"] = v
            n["reembedded"] += len(todo)
        for r in pending:  # file order, so a fresh KB gets the source's row ids and tie orders
            _write(log, r, n, index_vids)
        pending.clear()

    with log.transaction():
        for no, raw in _lines(path):
            if raw.get("type") == "header":  # pass 1 proved it is the first record and the only header
                continue
            r = _record(no, raw, header.dim)
            t = r["type"]
            if t in ("fact", "episode"):
                if (log.has_fact if t == "fact" else log.has_episode)(r["id"]):
                    n["skipped"] += 1  # already here: re-importing the same file changes nothing
                    if t == "fact":
                        skipped_facts.add(r["id"])
                    continue
                pending.append(r)
                if len(pending) >= EMBED_BATCH:
                    flush()
                continue
            flush()
            if t in ("source", "history") and r["fact_id"] in skipped_facts:
                continue
            _write(log, r, n, index_vids)
        flush()
    # the log is committed (an index failure now is repaired from it on the next open). Vectors go
    # in in file order, which the exporter made the source index's order: ties then rank alike.
    for i in range(0, len(index_vids), 1024):
        chunk = index_vids[i : i + 1024]
        got = {int(v): x for ids, vecs in log.iter_vectors(dim, np.array(chunk, dtype=np.int64))
               for v, x in zip(ids, vecs)}
        keeper.add([(v, got[v]) for v in chunk])
    return ImportResult(n["fact"], n["episode"], n["source"], n["skipped"], n["reembedded"])


def _write(db: Storage, r: dict, n: Counter, index_vids: list[int]) -> None:
    """Write one record through FactLog (which keeps FTS in step); users and entities already
    present are kept, the file's relation schema and aliases win; note vector ids for the index."""
    t = r["type"]
    if t == "fact":
        f = Fact(r["id"], r["subject"], r["relation"], r["object"], r["text"], r["user"], r["confidence"],
                 Status(r["status"]), r["stated_at"], r["valid_from"], r["valid_to"], r["superseded_by"])
        vid = db.insert_fact(f, fact_id(f.user, f.subject, f.relation, f.object), r["vector"])
        if f.status is not Status.FORGOTTEN:  # superseded facts stay indexed for as_of searches
            index_vids.append(vid)
    elif t == "episode":
        role = r["role"] or (Role.ASSISTANT.value if r["speaker"] == "assistant" else Role.USER.value)
        e = Episode(r["id"], r["speaker"], r["text"], r["user"], r["source_id"], r["time"], r["session"],
                    r["position"], role)
        vid = db.insert_episode(e, r["vector"], r["status"])
        if r["status"] == "active":
            index_vids.append(vid)
    elif t == "source":
        db.add_source(r["fact_id"], Source(r["source_id"], r["user"], r["time"], r["episode_id"], r["note"]))
    elif t == "history":
        db.add_history(r["fact_id"], r["event"], r["detail"], r["time"])
    elif t == "user":
        db.add_user(r["name"], r["created"])
    elif t == "relation":
        db.set_relation(r["name"], r["single_valued"])
    elif t == "alias":
        db.set_alias(r["alias"], r["canonical"])
    else:
        db.add_entity(r["name"], r["display"], r["first_seen"])
    n[t] += 1
