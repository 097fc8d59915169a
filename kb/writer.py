"""The write path of facts: validation, hashing, near-duplicate merging and supersession."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from kb.config import AddResult, NewFact
from kb.errors import InvalidInputError, NotFoundError
from kb.facts import (SHARED, Fact, Source, Status, clean_confidence, clean_text, clean_user, default_fact_text,
                      fact_id, normalize_relation, to_timestamp)
from kb.log import FactLog, from_blob, now

if TYPE_CHECKING:
    from kb.store import KnowledgeBase

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


def key_active(db: FactLog, key: str) -> bool:
    """True if a current fact has this content key (then the new statement needs no embedding)."""
    return any(st == "active" for _, _, st in db.rows_for_key(key))

def prepare(kb: "KnowledgeBase", it: NewFact, index: int | None) -> Prepared:
    """Validate and normalise one NewFact (raises before anything is written)."""
    where = "" if index is None else f"fact #{index}: "
    try:
        s_disp = clean_text(it.subject, "subject")
        o_disp = clean_text(it.object, "object")
        rel = normalize_relation(clean_text(it.relation, "relation"))
        if not rel:
            raise InvalidInputError(f"relation {it.relation!r} has no letters or digits")
        subject, obj = kb.resolve(s_disp), kb.resolve(o_disp)
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
        if eid is not None and kb._log.episode(eid) is None:
            raise NotFoundError(f"episode {eid!r} does not exist; add it with add_episode first")
    except InvalidInputError as e:
        raise type(e)(where + str(e)) from None
    key = fact_id(scope, subject, rel, obj)  # type: ignore[arg-type]
    return Prepared(subject, s_disp, rel, obj, o_disp, text, scope, stater, key, t, vf, conf,  # type: ignore[arg-type]
                     Source(sid, stater, t, eid, note))

def write_one(kb: "KnowledgeBase", p: Prepared, text_vec: dict[str, np.ndarray], new_vecs: list, t: float) -> AddResult:
    """Inside the caller's transaction: merge, supersede or insert one prepared fact."""
    rows = kb._log.rows_for_key(p.key)
    active = [r for r in rows if r[2] == "active"]
    if active:  # same content: one fact, one more source
        return merge(kb, active[0][1], p, t, semantic=False)
    vec = text_vec.get(p.text)
    if vec is None:  # restating a fact superseded earlier in this batch: reuse its stored vector
        blob = kb._log.db.execute("SELECT vector FROM facts WHERE key=? ORDER BY vid DESC", (p.key,)).fetchone()
        vec = from_blob(blob[0], kb.manifest.embedder_dim)
    slot = kb._log.active_same_slot(p.scope, p.subject, p.relation)
    for _rowid, fid, _key, obj, blob in slot:
        if (kb.config.near_duplicate < 1.0 and blob is not None and compatible(obj, p.object)
                and float(from_blob(blob, len(vec)) @ vec) >= kb.config.near_duplicate):
            return merge(kb, fid, p, t, semantic=True)
    new_id = p.key if not rows else f"{p.key}-{len(rows)}"
    status, valid_to, by = Status.ACTIVE, None, None
    superseded: list[Fact] = []
    if p.relation in kb._single:
        for _rowid, fid, _key, _obj, _blob in slot:
            old = kb._log.fact(fid)
            assert old is not None
            if old.valid_from > p.valid_from:  # an older truth arriving late: file it as history
                # the version that held at p.valid_from (if any) now ends there; p ends where the
                # next version begins, so as_of still finds exactly one value at every time
                held = kb._log.facts_where(
                    "user=? AND subject=? AND relation=? AND status='superseded' AND valid_from<=? AND valid_to>?",
                    (p.scope, p.subject, p.relation, p.valid_from, p.valid_from), with_sources=False)
                same = [v for v in held if v.object == p.object]
                if same:  # already known to hold then: one more source, not a new version
                    return merge(kb, same[0].id, p, t, semantic=False)
                nxt = kb._log.facts_where(
                    "user=? AND subject=? AND relation=? AND status!='forgotten' AND valid_from>?",
                    (p.scope, p.subject, p.relation, p.valid_from), order="valid_from, vid", limit=1,
                    with_sources=False)[0]
                status, valid_to, by = Status.SUPERSEDED, nxt.valid_from, nxt.id
                for v in held:
                    kb._log.supersede(v.id, new_id, p.valid_from)
                    kb._log.add_history(v.id, "superseded", f"by {new_id} (stated late)", t)
                continue
            kb._log.supersede(fid, new_id, p.valid_from)
            kb._log.add_history(fid, "superseded", f"by {new_id}", t)
            superseded.append(replace(old, status=Status.SUPERSEDED, valid_to=p.valid_from, superseded_by=new_id))
    fact = Fact(new_id, p.subject, p.relation, p.object, p.text, p.scope, p.confidence, status, p.time,
                p.valid_from, valid_to, by)
    rowid = kb._log.insert_fact(fact, p.key, vec)
    kb._log.add_source(new_id, p.source)
    kb._log.add_history(new_id, "created", f"restated after {rows[-1][1]}" if rows else None, t)
    kb._log.add_entity(p.subject, p.subject_display, t)
    kb._log.add_entity(p.object, p.object_display, t)
    if p.scope:
        kb._log.add_user(p.scope, t)
    if p.stater:
        kb._log.add_user(p.stater, t)
    new_vecs.append((2 * rowid, vec))
    return AddResult(fact, True, tuple(superseded))

def merge(kb: "KnowledgeBase", fid: str, p: Prepared, t: float, semantic: bool) -> AddResult:
    """Record ``p`` as one more source of the existing fact ``fid``."""
    kb._log.add_source(fid, p.source)
    old = kb._log.fact(fid)
    assert old is not None
    if p.confidence > old.confidence:
        kb._log.set_confidence(fid, p.confidence)
    kb._log.add_history(fid, "restated", "near-duplicate" if semantic else None, t)
    return AddResult(old, False, (), semantic)


def compatible(a: str, b: str) -> bool:
    """Objects that may name the same thing: equal numbers, and one contains the other or they share a word."""
    if _DIGITS.findall(a) != _DIGITS.findall(b):
        return False
    if a in b or b in a:
        return True
    return bool(set(a.split()) & set(b.split()))


