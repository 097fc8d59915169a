"""Grounding check: which named entities, numbers and dates in an answer no memory or question supports.

Claims are found with spaCy (named entities from the NER, plus proper nouns and numbers the NER
missed: the small English model drops entities in short, lower-context answers such as "Eli's dog is
Max."), because a hand-rolled capitalisation rule cannot tell "Pizza is..." (a common noun at the
start of a sentence) from "...in the UK." A claim is supported when each of its key words (numbers,
proper nouns, words of a named entity) occurs in the support: the texts of the memories the answer
was given from, the question, and the user's name. Words are compared case-folded, with number words
as digits ("seven" = "7"), ordinals as numbers ("4th" = "4"), leading zeros dropped and numeric
day-month dates matched against spelled ones ("06-05" = "June 5"). Generic designators ("Inc",
"University") add no new referent and are never key words ("Apple Inc." is supported by "Apple").
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.errors import BadInputError

#: spaCy NER labels and the kind of claim each one is
_KINDS = {
    "PERSON": "entity", "NORP": "entity", "FAC": "entity", "ORG": "entity", "GPE": "entity", "LOC": "entity",
    "PRODUCT": "entity", "EVENT": "entity", "WORK_OF_ART": "entity", "LAW": "entity", "LANGUAGE": "entity",
    "DATE": "date", "TIME": "date", "PERCENT": "number", "MONEY": "number", "QUANTITY": "number",
    "ORDINAL": "number", "CARDINAL": "number",
}
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
                      "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000"})
_MONTHS = ("january february march april may june july august september october november december").split()
_MONTH_ABBR = {m[:3]: m for m in _MONTHS} | {"sept": "september"}
_ORDINAL = re.compile(r"^(\d+)(?:st|nd|rd|th)$")
_NUMERIC_DATE = re.compile(r"^(\d{1,2})[-/.](\d{1,2})$")
_DATE_IN_TEXT = re.compile(r"(?<![\w-])\d{1,2}[-/.]\d{1,2}(?![\w-])")
_WORD = re.compile(r"\w+(?:[-/.]\w+)*", re.UNICODE)


@dataclass(frozen=True)
class GroundingConfig:
    """What counts as a claim."""

    # NER labels checked (None: all of _KINDS); e.g. leave out ORDINAL to allow "first"/"second"
    labels: frozenset[str] | None = None
    # words never counted as key words: generic designators that name no new referent
    generic: frozenset[str] = field(default_factory=lambda: frozenset({
        "inc", "corp", "corporation", "ltd", "llc", "co", "company", "university", "college", "school",
        "city", "town", "street", "mr", "mrs", "ms", "dr", "one", "i", "you"}))
    # also check proper nouns and numbers outside any entity (the small NER model misses many)
    bare_tokens: bool = True

    def __post_init__(self) -> None:
        if self.labels is not None:
            unknown = sorted(set(self.labels) - _KINDS.keys())
            if unknown:
                raise BadInputError(f"unknown entity label {unknown[0]!r}; valid labels: {', '.join(sorted(_KINDS))}")


@dataclass(frozen=True)
class Claim:
    """A named entity, number or date in an answer, and the key words of it no support mentions."""

    text: str
    kind: str  # "entity", "number" or "date"
    label: str  # the spaCy label, or PROPN / NUM for a token outside any entity
    start: int  # character offsets in the answer
    end: int
    missing: tuple[str, ...]  # key words not in the support (empty: supported)
    first_missing: int  # character offset of the first missing key word (== start when supported)

    @property
    def supported(self) -> bool:
        return not self.missing


def key(word: str) -> str:
    """A word as it is compared: case-folded, possessive dropped, numbers and months normalised."""
    w = word.casefold().strip(".,;:!?\"'()[]")
    w = re.sub(r"['’]s$", "", w)
    if w in _NUMBER_WORDS:
        return _NUMBER_WORDS[w]
    if w in _MONTH_ABBR:
        return _MONTH_ABBR[w]
    m = _ORDINAL.match(w)
    if m:
        w = m.group(1)
    if w.isdigit():
        return str(int(w))
    m = _NUMERIC_DATE.match(w)
    if m:
        return f"{int(m.group(1))}-{int(m.group(2))}"
    return w


def support_keys(texts: Iterable[str]) -> frozenset[str]:
    """Every key word of ``texts``, plus numeric forms of spelled dates ("June 5" -> "6-5" and "5-6")."""
    out: set[str] = set()
    for text in texts:
        words = [key(w) for w in _WORD.findall(text or "")]
        for w in words:
            out.add(w)
            out.update(key(p) for p in re.split(r"[-/.]", w) if p)  # "1988-07-04" -> 1988, 7, 4
        dated = [w for w in words if w not in ("of", "the")]  # "the 4th of July"
        for a, b in zip(dated, dated[1:]):
            month, day = (a, b) if a in _MONTHS else (b, a) if b in _MONTHS else (None, None)
            if month and day and day.isdigit():
                m = _MONTHS.index(month) + 1
                out.update({f"{m}-{day}", f"{day}-{m}"})
    return frozenset(out)


def claims(answer: str, support: Sequence[str], nlp, config: GroundingConfig | None = None) -> list[Claim]:
    """Every claim in ``answer`` (named entities, numbers, dates) with what of it ``support`` lacks, in text order."""
    cfg = config or GroundingConfig()
    keys = support_keys(support)
    # spaCy splits "06-05" into three tokens: a numeric date is judged whole, its tokens with it
    dated = {i for m in _DATE_IN_TEXT.finditer(answer) if key(m.group(0)) in keys for i in range(m.start(), m.end())}
    keys = keys | {f"@{i}" for i in dated}
    doc = nlp(answer)
    out: list[Claim] = []
    covered: set[int] = set()
    labels = cfg.labels if cfg.labels is not None else frozenset(_KINDS)
    for ent in doc.ents:
        if ent.label_ not in labels:
            continue
        covered.update(range(ent.start, ent.end))
        words = [t for t in ent if _is_key(t, cfg, in_entity=True)]
        if words:
            out.append(_claim(ent.text, _KINDS[ent.label_], ent.label_, ent.start_char, ent.end_char, words, keys))
    if cfg.bare_tokens:
        for t in doc:
            if t.i in covered or not _is_key(t, cfg, in_entity=False):
                continue
            kind, label = ("number", "NUM") if t.like_num or t.pos_ == "NUM" else ("entity", "PROPN")
            out.append(_claim(t.text, kind, label, t.idx, t.idx + len(t.text), [t], keys))
    return sorted(out, key=lambda c: c.start)


def unsupported(answer: str, support: Sequence[str], nlp, config: GroundingConfig | None = None) -> list[Claim]:
    """The claims of ``answer`` that ``support`` (memories, question, the user's name) does not back."""
    return [c for c in claims(answer, support, nlp, config) if not c.supported]


def grounded(answer: str, expected: Sequence[str], support: Sequence[str], nlp,
             contains=None, config: GroundingConfig | None = None) -> bool:
    """The ``grounded`` metric: ``answer`` holds one of ``expected`` (any, when empty) and has no unsupported
    claim. ``contains(text, phrase)`` decides "holds" (default: case-insensitive substring)."""
    has = contains or (lambda text, phrase: phrase.casefold() in text.casefold())
    if expected and not any(has(answer, e) for e in expected):
        return False
    return not unsupported(answer, support, nlp, config)


def _is_key(t, cfg: GroundingConfig, in_entity: bool) -> bool:
    """Whether token ``t`` carries a claim: a number, a proper noun, or a capitalised word of an entity."""
    if t.is_punct or t.is_space or key(t.text) in cfg.generic or not re.search(r"\w", t.text):
        return False
    if t.like_num or t.pos_ == "NUM" or _ORDINAL.match(t.text.lower()) or _NUMERIC_DATE.match(t.text):
        return key(t.text) not in cfg.generic
    if t.is_stop:
        return False
    if t.pos_ == "PROPN":
        return True
    return in_entity and (t.text[:1].isupper() or t.lower_ in _MONTHS)


def _claim(text: str, kind: str, label: str, start: int, end: int, words, keys: frozenset[str]) -> Claim:
    missing = [t for t in words if key(t.text) not in keys and f"@{t.idx}" not in keys]
    return Claim(text, kind, label, start, end, tuple(key(t.text) for t in missing),
                 missing[0].idx if missing else start)
