"""Noun-phrase helpers over a spaCy parse: phrase text, possessors, entity spans, relation words."""
from __future__ import annotations

from typing import TYPE_CHECKING

from agent.language.vocab import FAVORITE_WORDS

if TYPE_CHECKING:
    from spacy.tokens import Span, Token

#: left modifiers kept in a phrase's text ("Italian food", "software engineer", "New York")
_KEPT_MODIFIERS = frozenset({"compound", "amod", "nmod", "nummod", "quantmod", "flat"})
#: adjectives that are part of a relation name ("first name", "native language")
_RELATION_ADJECTIVES = FAVORITE_WORDS | {"first", "last", "full", "given", "family", "native",
                                         "middle", "maiden", "home", "phone", "email", "mother"}
#: nouns after "of" that name the relation rather than its owner ("date of birth")
_OF_RELATION_NOUNS = frozenset({"birth"})


def possessor(tok: Token) -> Token | None:
    """The owner token of a noun phrase: "my" in "my sister", "Mary" in "Mary's husband"."""
    for child in tok.children:
        if child.dep_ == "poss":
            return child
    return None


def of_owner(tok: Token) -> Token | None:
    """The owner in "the capital of France" / "a friend of mine" (the pobj of "of")."""
    for child in tok.children:
        if child.dep_ == "prep" and child.lower_ == "of":
            for pobj in child.children:
                if pobj.dep_ == "pobj" and pobj.lower_ not in _OF_RELATION_NOUNS:
                    return pobj
    return None


def owner(tok: Token) -> Token | None:
    """``possessor`` or else ``of_owner``: the token a relational noun is relative to."""
    return possessor(tok) or of_owner(tok)


def has_article(tok: Token, words: tuple[str, ...] = ("a", "an")) -> bool:
    return any(c.dep_ == "det" and c.lower_ in words for c in tok.children)


def phrase_key(tok: Token) -> str:
    """Lower-cased text from the possessor (or determiner) to the head: "my sister's husband".

    The dialogue state's references use the same keys, so both sides agree on "my sister".
    """
    left = tok.i
    for child in tok.lefts:
        if child.dep_ in ("poss", "det", "compound", "amod"):
            left = min(left, child.left_edge.i)
    return " ".join(tok.doc[left:tok.i + 1].text.lower().split())


def entity_span(tok: Token) -> Span | None:
    """The named entity containing ``tok`` if it stays inside the token's own phrase."""
    lo, hi = tok.left_edge.i, tok.right_edge.i
    for ent in tok.doc.ents:
        if ent.start <= tok.i < ent.end:
            return ent if lo <= ent.start and ent.end - 1 <= hi else None
    return None


def noun_text(tok: Token, keep_adjectives: bool = True) -> str:
    """The phrase headed by ``tok`` without determiners or possessors: "Italian food", "New York"."""
    keep = {tok.i}
    stack = [tok]
    while stack:
        t = stack.pop()
        for child in t.lefts:
            if child.dep_ in _KEPT_MODIFIERS and (keep_adjectives or child.dep_ != "amod"):
                if child.dep_ == "amod" and child.lower_ in FAVORITE_WORDS:
                    continue
                keep.add(child.i)
                stack.append(child)
    lo, hi = min(keep), max(keep)
    if hi - lo + 1 == len(keep):
        return tok.doc[lo:hi + 1].text
    return " ".join(tok.doc[i].text for i in sorted(keep))


def value_text(tok: Token) -> str:
    """A value as spoken: the entity span if any, else ``noun_text``; numbers keep their words."""
    ent = entity_span(tok)
    if ent is not None and any(c.dep_ == "compound" and c.pos_ == "PROPN" and c.i < ent.start for c in tok.children):
        return noun_text(tok)  # NER split "Honda Civic" into ORG + PRODUCT: the phrase is the value
    if tok.pos_ == "NUM" or any(c.dep_ == "nummod" for c in tok.children):
        return ent.text if ent is not None else _subtree_text(tok)  # "May 3", "3 May 1990"
    text = ent.text if ent is not None else noun_text(tok)
    if tok.pos_ == "PROPN" and tok.dep_ in ("pobj", "dobj", "attr") and any(
            c.dep_ == "case" and c.lower_ in ("'s", "’s") and c.i == tok.i + 1 for c in tok.children) \
            and not text.endswith(("'s", "’s")):
        return text + tok.doc[tok.i + 1].text  # "at Addenbrooke's", "at McDonald's": the name owns nothing
    return text


def _subtree_text(tok: Token) -> str:
    return tok.doc[tok.left_edge.i:tok.right_edge.i + 1].text


def subtree_text(tok: Token, drop_leading: tuple[str, ...] = ()) -> str:
    """Text of ``tok``'s whole subtree, without leading words such as "to" ("to swim" -> "swim")."""
    words = [t for t in tok.subtree if not t.is_punct or t.i not in (tok.left_edge.i, tok.right_edge.i)]
    while words and words[0].lower_ in drop_leading:
        words.pop(0)
    if not words:
        return ""
    return tok.doc[words[0].i:words[-1].i + 1].text


def clause_text(tok: Token) -> str:
    """A verb phrase without its coordinated parts, its times or a leading "to": "hiking", "to swim" ->
    "swim", "play the cello since January" -> "play the cello"."""
    skip: set[int] = set()
    for child in tok.children:
        if child.dep_ in ("conj", "cc") or (child.dep_ == "punct" and child.i > tok.i) or _is_time(child):
            skip.update(t.i for t in child.subtree)
    words = [t for t in tok.subtree if t.i not in skip]
    while words and words[0].lower_ == "to" and words[0].i != tok.i:
        words.pop(0)
    if words and words[-1].i - words[0].i + 1 == len(words):
        return tok.doc[words[0].i:words[-1].i + 1].text  # contiguous: keep the original spacing
    return " ".join(t.text for t in words)


def relation_words(tok: Token) -> str:
    """The words of a relational noun: "favourite colour", "email address", "date of birth"."""
    mods = [c.lower_ for c in tok.lefts if c.dep_ == "compound"
            or (c.dep_ in ("amod", "nmod") and c.lower_ in _RELATION_ADJECTIVES)]
    head = tok.lemma_.lower() if tok.pos_ == "NOUN" else tok.lower_
    words = " ".join(mods + [head])
    for child in tok.children:
        if child.dep_ == "prep" and child.lower_ == "of" and any(
            p.dep_ == "pobj" and p.lower_ in _OF_RELATION_NOUNS for p in child.children
        ):
            words += " of birth"
    return words


def conjuncts(tok: Token) -> list[Token]:
    """``tok`` and the tokens coordinated with it: "jazz and blues" -> [jazz, blues]."""
    out = [tok]
    for c in tok.conjuncts:
        if c.i > tok.i and c not in out:
            out.append(c)
    return out


def children(tok: Token, *deps: str) -> list[Token]:
    return [c for c in tok.children if c.dep_ in deps]


def retracts(head: Token) -> bool:
    """ "no longer", "anymore", "any more/longer", "not ... now": the fact used to hold."""
    for c in head.children:
        low = c.lower_
        if low in ("anymore", "nomore"):
            return True
        if low in ("longer", "more") and any(g.lower_ in ("no", "any") for g in c.children):
            return True
        if low in ("longer", "more") and c.i > 0 and c.doc[c.i - 1].lower_ in ("no", "any"):
            return True
    return False


def _is_time(tok: Token) -> bool:
    """A time attached to a verb: "since January", "last week", "yesterday", "for three years"."""
    if tok.dep_ == "prep":
        return any(entity_span(o) is not None and entity_span(o).label_ in ("DATE", "TIME")
                   for o in children(tok, "pobj"))
    return tok.dep_ in ("npadvmod", "advmod") and (
        tok.ent_type_ in ("DATE", "TIME") or tok.lower_ in ("yesterday", "today", "tomorrow", "tonight"))
