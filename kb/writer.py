"""The write path of facts: validation, hashing, near-duplicate merging, supersession and confidence."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from kb.config import AddResult, KBConfig, NewFact
from kb.embeddings import Embedder
from kb.errors import InvalidInputError, NotFoundError
from kb.facts import (SHARED, Fact, Source, Status, clean_confidence, clean_text, clean_user, default_fact_text,
                      fact_id, normalize_relation, to_timestamp)
from kb.log import Storage, from_blob, now
from kb.maintenance import IndexKeeper
from kb.vocabulary import Vocabulary

_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Prepared:
    """A validated, normalised NewFact ready to write."""

    subject: str
    subject_display: str
    relation: str
    object: str
    object_display: str
    text: str
    scope: str
    stater: str | None
    key: str
    time: float
    valid_from: float
    confidence: float
    source: Source


class FactWriter:
    """Adds facts (one transaction per batch) and changes their confidence."""

    def __init__(self, log: Storage, vocab: Vocabulary, keeper: IndexKeeper, config: KBConfig,
                 embedder: Callable[[], Embedder], dim: Callable[[], int]):
        self._log = log
        self._vocab = vocab
        self._keeper = keeper
        self._config = config
        self._embedder = embedder  # loaded on first use: a write that embeds nothing never loads a model
        self._dim = dim

    def add_facts(self, items: Sequence[NewFact], vectors: np.ndarray | None = None) -> list[AddResult]:
        """Add facts in one transaction with one batched embedding pass; all or nothing."""
        preps = [self._prepare(it, i if len(items) > 1 else None) for i, it in enumerate(items)]
        dim = self._dim()
        if vectors is not None and np.shape(vectors) != (len(items), dim):
            raise InvalidInputError(f"vectors have shape {np.shape(vectors)}; expected ({len(items)}, {dim})")
        # hash before embedding: texts whose content key is already current need no vector
        todo = sorted({p.text for p in preps if not self._log.key_active(p.key)})
        text_vec: dict[str, np.ndarray] = {}
        if vectors is not None:
            text_vec = {p.text: np.asarray(vectors[i], dtype=np.float32) for i, p in enumerate(preps)}
        elif todo:
            text_vec = dict(zip(todo, self._embedder().embed_documents(todo)))
        results: list[AddResult] = []
        new_vecs: list[tuple[int, np.ndarray]] = []
        t = now()
        with self._log.transaction():
            for p in preps:
                results.append(self._write_one(p, text_vec, new_vecs, t))
        self._keeper.add(new_vecs)
        return [replace(r, fact=self._log.fact(r.fact.id) or r.fact) for r in results]

    def set_confidence(self, fact_id: str, confidence: float, reason: str | None) -> None:
        """Change an existing fact's confidence, kept in its history with the reason."""
        old = self._log.fact(fact_id)
        assert old is not None
        c = clean_confidence(confidence)
        with self._log.transaction():
            self._log.set_confidence(fact_id, c)
            self._log.add_history(fact_id, "confidence",
                                  f"{old.confidence:.3f} -> {c:.3f}" + (f": {reason}" if reason else ""), now())

    # ----------------------------------------------------------------- one fact

    def _prepare(self, it: NewFact, index: int | None) -> Prepared:
        """Validate and normalise one NewFact (raises before anything is written)."""
        where = "" if index is None else f"fact #{index}: "
        try:
            s_disp = clean_text(it.subject, "subject")
            o_disp = clean_text(it.object, "object")
            rel = normalize_relation(clean_text(it.relation, "relation"))
            if not rel:
                raise InvalidInputError(f"relation {it.relation!r} has no letters or digits")
            subject, obj = self._vocab.resolve(s_disp), self._vocab.resolve(o_disp)
            text = clean_text(it.text, "text") if it.text is not None else default_fact_text(s_disp, rel, o_disp)
            stater = clean_user(it.user) if it.user is not None else None
            if not it.shared and stater is None:
                raise InvalidInputError("user is required for a private fact; pass user=... or shared=True")
            scope = SHARED if it.shared else stater
            t = to_timestamp(it.time, "time") if it.time is not None else now()
            vf = to_timestamp(it.valid_from, "valid_from") if it.valid_from is not None else t
            conf = clean_confidence(it.confidence)
            sid = clean_text(it.source_id, "source_id") if it.source_id is not None else None
            note = clean_text(it.note, "note") if it.note is not None else None
            eid = it.episode_id
            if eid is not None and self._log.episode(eid) is None:
                raise NotFoundError(f"episode {eid!r} does not exist; add it with add_episode first")
        except InvalidInputError as e:
            raise type(e)(where + str(e)) from None
        key = fact_id(scope, subject, rel, obj)  # type: ignore[arg-type]
        return Prepared(subject, s_disp, rel, obj, o_disp, text, scope, stater, key, t, vf, conf,  # type: ignore[arg-type]
                        Source(sid, stater, t, eid, note))

    def _write_one(self, p: Prepared, text_vec: dict[str, np.ndarray], new_vecs: list, t: float) -> AddResult:
        """Inside the caller's transaction: merge, supersede or insert one prepared fact."""
        log = self._log
        rows = log.rows_for_key(p.key)
        active = [r for r in rows if r[2] == "active"]
        if active:  # same content: one fact, one more source
            return self._merge(active[0][1], p, t, semantic=False)
        vec = text_vec.get(p.text)
        if vec is None:  # restating a fact superseded earlier in this batch: reuse its stored vector
            vec = log.key_vector(p.key, self._dim())
        slot = log.active_same_slot(p.scope, p.subject, p.relation)
        near = self._config.near_duplicate
        for _rowid, fid, _key, obj, blob in slot:
            if (near < 1.0 and blob is not None and compatible(obj, p.object)
                    and float(from_blob(blob, len(vec)) @ vec) >= near):
                return self._merge(fid, p, t, semantic=True)
        new_id = p.key if not rows else f"{p.key}-{len(rows)}"
        status, valid_to, by = Status.ACTIVE, None, None
        superseded: list[Fact] = []
        if self._vocab.is_single(p.relation):
            for _rowid, fid, _key, _obj, _blob in slot:
                old = log.fact(fid)
                assert old is not None
                if old.valid_from > p.valid_from:  # an older truth arriving late: file it as history
                    # the version that held at p.valid_from (if any) now ends there; p ends where the
                    # next version begins, so as_of still finds exactly one value at every time
                    held = log.slot_held_at(p.scope, p.subject, p.relation, p.valid_from)
                    same = [v for v in held if v.object == p.object]
                    if same:  # already known to hold then: one more source, not a new version
                        return self._merge(same[0].id, p, t, semantic=False)
                    nxt = log.slot_next_after(p.scope, p.subject, p.relation, p.valid_from)
                    assert nxt is not None
                    status, valid_to, by = Status.SUPERSEDED, nxt.valid_from, nxt.id
                    for v in held:
                        log.supersede(v.id, new_id, p.valid_from)
                        log.add_history(v.id, "superseded", f"by {new_id} (stated late)", t)
                    continue
                log.supersede(fid, new_id, p.valid_from)
                log.add_history(fid, "superseded", f"by {new_id}", t)
                superseded.append(replace(old, status=Status.SUPERSEDED, valid_to=p.valid_from, superseded_by=new_id))
        fact = Fact(new_id, p.subject, p.relation, p.object, p.text, p.scope, p.confidence, status, p.time,
                    p.valid_from, valid_to, by)
        vid = log.insert_fact(fact, p.key, vec)
        log.add_source(new_id, p.source)
        log.add_history(new_id, "created", f"restated after {rows[-1][1]}" if rows else None, t)
        log.add_entity(p.subject, p.subject_display, t)
        log.add_entity(p.object, p.object_display, t)
        if p.scope:
            log.add_user(p.scope, t)
        if p.stater:
            log.add_user(p.stater, t)
        new_vecs.append((vid, vec))
        return AddResult(fact, True, tuple(superseded))

    def _merge(self, fid: str, p: Prepared, t: float, semantic: bool) -> AddResult:
        """Record ``p`` as one more source of the existing fact ``fid``."""
        self._log.add_source(fid, p.source)
        old = self._log.fact(fid)
        assert old is not None
        if p.confidence > old.confidence:
            self._log.set_confidence(fid, p.confidence)
        self._log.add_history(fid, "restated", "near-duplicate" if semantic else None, t)
        return AddResult(old, False, (), semantic)


def compatible(a: str, b: str) -> bool:
    """Objects that may name the same thing: equal numbers, and one contains the other or they share a word."""
    if _DIGITS.findall(a) != _DIGITS.findall(b):
        return False
    if a in b or b in a:
        return True
    return bool(set(a.split()) & set(b.split()))
