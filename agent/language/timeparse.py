"""Relative times in a clause ("next month", "yesterday", "since January") resolved against the turn's time.

Why dateparser: it is a maintained library that reads the many ways people write dates and
relative times ("last week", "in June", "two years ago", "on Monday") and reports the period the
phrase names (day, week, month, year); hand-written date rules would only cover the forms their
author thought of. spaCy finds the phrase (DATE entities and time adverbs in the clause), dateparser
resolves it; the result is an ISO prefix as precise as the phrase ("2026-12", "2026-11-26", "2027").
Durations ("for ten years", "34 years old") are not points in time and are skipped.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.tokens import Token

#: prepositions whose object is a point in time ("in June", "since January"); "for ten years" is a duration
_TIME_PREPS = frozenset({"in", "on", "since", "from", "at", "by", "until", "till", "after", "before"})
#: phrases that are times but name no resolvable moment; they mean "now" or nothing
VAGUE = _VAGUE = frozenset({"these days", "nowadays", "today", "now", "right now", "currently", "at the moment",
                    "someday", "one day", "soon", "a while", "the moment"})
#: words dateparser does not need ("since January" -> "January", "in June" -> "June")
_LEADING = ("since ", "in ", "on ", "from ", "by ", "until ", "at ", "the ", "this past ")
_ISO_LEN = {"year": 4, "month": 7}


@dataclass(frozen=True)
class When:
    """A resolved time phrase: the ISO prefix it names and where it lies from the turn's time."""

    iso: str  # "2026-12", "2026-11-26", "2027"
    future: bool  # strictly after the turn's period of the same precision
    past: bool  # strictly before it
    since: bool  # "since X": the fact holds from X on
    phrase: str  # the words it came from

    def start(self) -> float:
        """Unix seconds (UTC) of the start of the named period."""
        return start_of(self.iso)


def start_of(iso: str) -> float:
    """Unix seconds (UTC) at the start of the period an ISO prefix names ("2026-12" -> 2026-12-01)."""
    parts = [int(x) for x in iso.split("-")] + [1, 1]
    return datetime(parts[0], parts[1], parts[2], tzinfo=timezone.utc).timestamp()


@functools.lru_cache(maxsize=8)
def _parser(prefer: str, base: datetime):
    """A parser for one turn time (about 18 ms to build, so one per turn time and direction is kept)."""
    from dateparser.date import DateDataParser  # imported on first use: it loads its language data

    return DateDataParser(languages=["en"], settings={"PREFER_DATES_FROM": prefer, "RETURN_TIME_AS_PERIOD": True,
                                                      "RELATIVE_BASE": base})


def resolve(phrase: str, now: float, prefer: str = "past") -> When | None:
    """The time ``phrase`` names, read at unix time ``now``; None for vague phrases or non-times."""
    # to the minute: parsers and answers are cached per base time, and no phrase people use is finer
    found = _resolve(" ".join(phrase.lower().split()).strip(" ,."), now // 60 * 60, prefer)
    return found if found is None or found.phrase == phrase else replace(found, phrase=phrase)


@functools.lru_cache(maxsize=2048)
def _resolve(text: str, now: float, prefer: str) -> When | None:
    """``resolve`` on a normalised phrase, cached (dateparser takes ~5 ms a phrase; people repeat them)."""
    phrase = text
    if not text or text in _VAGUE:
        return None
    since = text.startswith("since ")
    for lead in _LEADING:
        if text.startswith(lead) and len(text) > len(lead):
            text = text[len(lead):]
    if text in _VAGUE:
        return None
    base = datetime.fromtimestamp(now, tz=timezone.utc).replace(tzinfo=None)
    # "since January" starts in the past whatever the clause's tense ("I've been learning ... since January")
    parser = _parser("future" if prefer == "future" and not since else "past", base)
    try:
        data = parser.get_date_data(text)
    except Exception:  # noqa: BLE001 - dateparser raises assorted errors on odd input: no time then
        return None
    if data is None or data.date_obj is None:
        return None
    period = data.period or "day"
    n = _ISO_LEN.get(period, 10)
    iso = data.date_obj.strftime("%Y-%m-%d")[:n]
    here = base.strftime("%Y-%m-%d")[:n]
    return When(iso, iso > here, iso < here, since, phrase)


def clause_time(head: Token, now: float, prefer: str = "past") -> When | None:
    """The first resolvable time phrase attached to the clause headed by ``head``."""
    for phrase in _phrases(head):
        found = resolve(phrase, now, prefer)
        if found is not None:
            return found
    return None


def _phrases(head: Token) -> list[str]:
    """Time phrases of the clause: DATE entities and npadvmod/prep attachments outside nested clauses."""
    own = _own_tokens(head)
    out: list[str] = []
    for ent in head.doc.ents:
        if ent.label_ not in ("DATE", "TIME") or not any(t.i in own for t in ent):
            continue
        root, gov = ent.root, ent.root.head
        if root.dep_ == "pobj" and gov.lower_ not in _TIME_PREPS:
            continue  # "for ten years" is a duration
        if root.dep_ not in ("pobj", "npadvmod", "advmod", "tmod", "nmod", "obl"):
            continue  # "I'm 34", "my birthday is May 3": the date is the value, not the clause's time
        lead = "since " if root.dep_ == "pobj" and gov.lower_ == "since" else ""
        ago = ent.end < len(head.doc) and head.doc[ent.end].lower_ == "ago" and "ago" not in ent.text.lower()
        out.append(lead + ent.text + (" ago" if ago else ""))
    for child in head.children:
        if child.dep_ in ("npadvmod", "advmod") and child.lower_ in ("yesterday", "tomorrow", "tonight"):
            out.append(child.lower_)
    return out


def _own_tokens(head: Token) -> set[int]:
    """Token indices of ``head``'s clause, without coordinated or embedded clauses."""
    skip: set[int] = set()
    for child in head.children:
        if child.dep_ in ("conj", "ccomp", "advcl", "parataxis", "relcl") and child.pos_ in ("VERB", "AUX"):
            skip.update(t.i for t in child.subtree)
    return {t.i for t in head.subtree if t.i not in skip}
