"""Mentions in one turn: named entities, KB links, first person, possessive chains and pronouns.

Resolution rules, deliberately simple:

- "I", "me", "my", "mine", "myself" -> the speaking user (label SELF);
- spaCy named entities keep their NER label; their entity is the normalised name;
- word n-grams (up to ``max_ngram`` words, not starting or ending with a stop word) that
  ``known_entities`` recognises become label KB, where no named entity already covers them;
  names go through ``resolve`` first (aliases -> canonical names), so "NYC" links to
  "new york city" when the KB has that alias;
- "my sister" -> lookup(user, "sister"), and chains "my sister's husband" ->
  lookup(lookup(user, "sister"), "husband"); label PERSON when the relation holds a person
  (kin, partner, boss...), else KB; unresolved chains are not mentions;
- he/she/him/her/his/hers -> the most recent person: earlier in this turn, else the current
  focus, else the history (PERSON-labelled mentions, or KB/chain ones never seen as a non-person);
  it/its -> the most recent non-person; they/them/their -> the most recent entity of any kind.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.language import phrase
from agent.language import vocab
from kb.facts import normalize_name

if TYPE_CHECKING:
    from spacy.tokens import Doc, Token

    from agent.extraction.triple import Lookup

#: candidates (normalised names) -> those that name an entity in the KB
KnownEntities = Callable[[list[str]], list[str]]
#: a name -> its canonical KB entity name (alias resolution, e.g. "nyc" -> "new york city")
Resolve = Callable[[str], str]


def same_name(name: str) -> str:
    """The identity ``Resolve``: names are linked only as spelled."""
    return name

#: NER labels that name entities worth tracking (dates, numbers, money are values, not entities)
ENTITY_LABELS = frozenset({"PERSON", "ORG", "GPE", "LOC", "NORP", "FAC", "PRODUCT", "EVENT",
                           "WORK_OF_ART", "LANGUAGE", "LAW"})
#: labels whose entities cannot be "he"/"she"
_THING_LABELS = ENTITY_LABELS - {"PERSON"}


@dataclass
class Mention:
    """One reference to an entity in a turn's text."""

    text: str  # the surface form as typed ("my sister", "She", "Paris")
    entity: str  # the normalised entity it refers to ("mary", "paris", the user id for SELF)
    label: str  # spaCy NER label, "KB" (linked KB entity), "PRONOUN", "SELF"; chains to a person: "PERSON"
    start: int  # character offset of the surface form in the turn's text
    end: int  # character offset just past it


@dataclass
class Resolution:
    """What ``find_mentions`` found in one turn."""

    mentions: list[Mention] = field(default_factory=list)  # in text order
    references: dict[str, str] = field(default_factory=dict)  # lower-cased surface -> entity


def find_mentions(doc: Doc, user: str, history: Sequence[Mention], focus: str | None,
                  known_entities: KnownEntities, lookup: Lookup, resolve: Resolve = same_name,
                  max_ngram: int = 3, max_candidates: int = 200, max_chain: int = 4) -> Resolution:
    """Mentions of ``doc`` resolved against ``history`` (earlier mentions, most recent first)."""
    finder = _Finder(doc, user, history, focus, known_entities, lookup, resolve, max_chain)
    return finder.run(max_ngram, max_candidates)


class _Finder:
    """One pass over a parse: spans first (NER, KB n-grams), then tokens left to right."""

    def __init__(self, doc: Doc, user: str, history: Sequence[Mention], focus: str | None,
                 known_entities: KnownEntities, lookup: Lookup, resolve: Resolve, max_chain: int):
        self.doc = doc
        self.resolve = resolve
        self.user = user
        self.history = history
        self.focus = focus
        self.known_entities = known_entities
        self.lookup = lookup
        self.max_chain = max_chain
        self.out = Resolution()

    def run(self, max_ngram: int, max_candidates: int) -> Resolution:
        spans = self._spans(max_ngram, max_candidates)  # start token -> (end token, label, entity)
        i = 0
        while i < len(self.doc):
            if i in spans:
                end, label, entity = spans[i]
                self._add(self.doc[i:end].text, entity, label, self.doc[i].idx,
                          self.doc[end - 1].idx + len(self.doc[end - 1].text))
                i = end
                continue
            self._token(self.doc[i])
            i += 1
        return self.out

    # ------------------------------------------------------------------ spans

    def _spans(self, max_ngram: int, max_candidates: int) -> dict[int, tuple[int, str, str]]:
        spans: dict[int, tuple[int, str, str]] = {}
        taken: set[int] = set()
        for ent in self.doc.ents:
            if ent.label_ in ENTITY_LABELS:
                name = self._canonical(normalize_name(ent.text).removeprefix("the "))
                if name:
                    spans[ent.start] = (ent.end, ent.label_, name)
                    taken.update(range(ent.start, ent.end))
        grams: list[tuple[int, int, str]] = []  # longest first, then left to right
        for n in range(max_ngram, 0, -1):
            for i in range(len(self.doc) - n + 1):
                toks = self.doc[i:i + n]
                if any(t.is_punct or t.is_space or t.pos_ == "PRON" for t in toks):
                    continue
                if toks[0].is_stop or toks[-1].is_stop or toks[0].pos_ in ("DET", "ADP", "AUX", "CCONJ"):
                    continue
                grams.append((i, i + n, self._canonical(normalize_name(toks.text))))
        grams = grams[:max_candidates]
        candidates = list(dict.fromkeys([g[2] for g in grams if g[2]] + [s[2] for s in spans.values()]))
        if not candidates:
            return spans
        try:
            known = {normalize_name(k) for k in self.known_entities(candidates) if isinstance(k, str)}
        except Exception:  # noqa: BLE001 - a failing KB lookup only loses linking, not the turn
            known = set()
        for start, end, name in grams:
            if name in known and not taken.intersection(range(start, end)):
                spans[start] = (end, "KB", name)
                taken.update(range(start, end))
        return spans

    def _canonical(self, name: str) -> str:
        try:
            resolved = self.resolve(name)
        except Exception:  # noqa: BLE001 - a failing resolver means "as spelled"
            return name
        return normalize_name(resolved) if isinstance(resolved, str) and resolved.strip() else name

    # ------------------------------------------------------------------ tokens

    def _token(self, tok: Token) -> None:
        low = tok.lower_
        if low in vocab.FIRST_PERSON:
            self._add(tok.text, self.user, "SELF", tok.idx, tok.idx + len(tok.text))
        elif tok.pos_ == "PRON" and (low in vocab.PERSON_PRONOUNS or low in vocab.THING_PRONOUNS
                                     or low in vocab.ANY_PRONOUNS):
            entity = self._antecedent(low)
            if entity is not None:
                self._add(tok.text, entity, "PRONOUN", tok.idx, tok.idx + len(tok.text))
        elif tok.pos_ == "NOUN" and phrase.possessor(tok) is not None:
            entity = self._chain(tok, self.max_chain)
            if entity is not None:
                left = tok.doc[phrase.possessor(tok).left_edge.i]
                rel = vocab.relation_name(phrase.relation_words(tok)) or ""
                label = "PERSON" if rel in vocab.PERSON_VALUED else "KB"
                self._add(tok.doc[left.i:tok.i + 1].text, entity, label, left.idx, tok.idx + len(tok.text))

    def _add(self, text: str, entity: str, label: str, start: int, end: int) -> None:
        self.out.mentions.append(Mention(text, entity, label, start, end))
        key = " ".join(text.lower().split())
        if label in ("SELF", "PRONOUN") or (label in ("PERSON", "KB") and " " in key):
            self.out.references[key] = entity  # pronouns, first person, "my sister"

    def _chain(self, tok: Token, depth: int) -> str | None:
        """The entity "my sister('s husband...)" refers to, following the KB one link at a time."""
        owner_tok = phrase.possessor(tok)
        if owner_tok is None or depth <= 0:
            return None
        low = owner_tok.lower_
        if low in vocab.FIRST_PERSON:
            owner: str | None = self.user
        elif owner_tok.pos_ == "PRON":
            owner = self.out.references.get(low)
        elif owner_tok.pos_ == "NOUN" and phrase.possessor(owner_tok) is not None:
            owner = self._chain(owner_tok, depth - 1)
        else:
            ent = phrase.entity_span(owner_tok)
            owner = self._canonical(normalize_name(ent.text if ent is not None else phrase.noun_text(owner_tok)))
        rel = vocab.relation_name(phrase.relation_words(tok))
        if not owner or rel is None:
            return None
        try:
            found = self.lookup(owner, rel)
        except Exception:  # noqa: BLE001 - a failing KB lookup means "unknown"
            return None
        return normalize_name(found) if isinstance(found, str) and found.strip() else None

    def _antecedent(self, pronoun: str) -> str | None:
        """The most recent compatible entity for a third-person pronoun (see module docs)."""
        earlier = [m for m in reversed(self.out.mentions) if m.label != "SELF"]
        for m in earlier:
            if self._fits(m.entity, m.label, pronoun):
                return m.entity
        if self.focus and self._fits(self.focus, self._label_of(self.focus), pronoun):
            return self.focus
        for m in self.history:  # UNNAMED: a pet or person without a name, only named later (agent.state)
            if m.label not in ("SELF", "UNNAMED") and m.entity != self.user and self._fits(m.entity, m.label, pronoun):
                return m.entity
        return None

    def _label_of(self, entity: str) -> str:
        for m in list(reversed(self.out.mentions)) + list(self.history):
            if m.entity == entity and m.label not in ("PRONOUN",):
                return m.label
        return "KB"

    def _fits(self, entity: str, label: str, pronoun: str) -> bool:
        want_person = pronoun in vocab.PERSON_PRONOUNS
        want_thing = pronoun in vocab.THING_PRONOUNS
        if entity == self.user:
            return False
        if label == "PRONOUN":
            label = self._label_of(entity)
        if want_person:
            if self._gender(entity) not in (None, _gender_of(pronoun)):
                return False
            return label == "PERSON" or (label == "KB" and not self._seen_as(entity, _THING_LABELS))
        if want_thing:
            return label in _THING_LABELS or (label == "KB" and not self._seen_as(entity, {"PERSON"}))
        return True

    def _gender(self, entity: str) -> str | None:
        """ "f"/"m" if a pronoun or kin word ("my sister") referred to ``entity`` before, else None."""
        for m in list(reversed(self.out.mentions)) + list(self.history):
            if m.entity == entity and m.label in ("PRONOUN", "PERSON"):
                found = _gender_of(m.text.lower().split()[-1])
                if found is not None:
                    return found
        return None

    def _seen_as(self, entity: str, labels: set[str] | frozenset[str]) -> bool:
        return any(m.entity == entity and m.label in labels for m in list(self.out.mentions) + list(self.history))


def _gender_of(word: str) -> str | None:
    if word in vocab.FEMALE_WORDS:
        return "f"
    if word in vocab.MALE_WORDS:
        return "m"
    return None
