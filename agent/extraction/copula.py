"""Copular clauses ("X is Y"): relations between two noun phrases, and predicates about one.

Functions of the pattern extractor's run (``agent.extraction.patterns.Run``): they resolve noun phrases and
emit triples through it. See agent.extraction.patterns for the overall coverage.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agent.language import phrase
from agent.language import relations
from agent.language import vocab
from agent.extraction.ref import Ref
from agent.language.literal import parse_number

if TYPE_CHECKING:
    from spacy.tokens import Token

    from agent.extraction.patterns import Run


def relational(run: Run, head: Token, subj: Token, retract: bool) -> bool:
    """ "My sister is Mary", "Mary is my sister", "The capital of France is Paris".

    Returns True when the clause was handled as a relation between the two noun phrases.
    """
    neg = any(c.dep_ == "neg" for c in head.children)
    retract = retract or phrase.retracts(head)
    comp = next(iter(phrase.children(head, "attr", "acomp")), None)
    if comp is None:
        return _located(run, head, subj, neg, retract)
    if subj.pos_ == "NOUN" and phrase.owner(subj) is None and _for_speaker(head) \
            and vocab.relation_name(phrase.relation_words(subj)) in vocab.SPEAKER_FOR_RELATIONS:
        for value in phrase.conjuncts(comp):  # "Home is Glasgow for me"
            run.values(run.np_self(), vocab.relation_name(phrase.relation_words(subj)), value, neg, retract, whole=True)
        return True
    if subj.pos_ == "NOUN" and phrase.owner(subj) is not None:
        rel = vocab.relation_name(phrase.relation_words(subj))
        entity_valued = subj.lemma_.lower() in vocab.PERSON_RELATIONS or subj.lemma_.lower() in vocab.PET_NOUNS
        if rel is None:
            return False
        if entity_valued and ((comp.dep_ == "acomp" and comp.pos_ != "PROPN") or phrase.has_article(comp)
                              or comp.pos_ == "NUM"):
            return False  # "my sister is a doctor", "my son is 5 years old": about the person
        owner_tok = phrase.owner(subj)
        kin = owner_tok.lemma_.lower()
        if rel == "name" and owner_tok.pos_ == "NOUN" and phrase.possessor(owner_tok) is not None \
                and (kin in vocab.PERSON_RELATIONS or kin in vocab.PET_NOUNS):
            # "my mother's name is Jane" -> (alice, mother, Jane), not (alice's mother, name, Jane)
            holder = run.np(phrase.possessor(owner_tok))
            if holder is not None and not holder.common:
                run.name_of(holder, kin, phrase.value_text(comp), vocab.polarity(rel, neg, retract)[1])
            return True
        if rel == "name" and owner_tok.pos_ == "PRON" and run.name_pronoun(
                owner_tok, phrase.value_text(comp), vocab.polarity(rel, neg, retract)[1]):
            return True  # "I adopted a greyhound, his name is Biscuit"
        owner = run.np(owner_tok)
        if owner is None or owner.common:
            return True
        for value in phrase.conjuncts(comp):
            run.values(owner, rel, value, neg, retract, whole=True)
        return True
    if comp.dep_ == "attr" and comp.pos_ == "NOUN" and phrase.owner(comp) is not None:
        lemma = comp.lemma_.lower()
        if phrase.possessor(comp) is None and phrase.has_article(comp) and lemma not in vocab.PERSON_RELATIONS:
            return False  # "Paris is a city of France": not "France's city"
        rel = vocab.relation_name(phrase.relation_words(comp))
        owner = run.np(phrase.owner(comp))
        value = run.np(subj)
        if rel is None or owner is None or owner.common or value is None:
            return rel is not None
        if lemma in vocab.PET_NOUNS:  # "Rex is my dog"
            run.name_of(owner, lemma, value.name, vocab.polarity(rel, neg, retract)[1])
            return True
        run.emit(owner, rel, value.name, vocab.polarity(rel, neg, retract)[1], value.confidence)
        return True
    return False


def contracted(run: Run, root: Token) -> bool:
    """A sentence whose "'s" the parser took for a possessive: "My home's in Hamburg" (root "home",
    case "'s", a preposition) and "my name's Priya" / "Name's Tom" (root "Priya" owned by "name's").
    Returns True when it was read as the copula it is."""
    if not any(c.dep_ == "case" and c.lower_ in ("'s", "’s") for c in root.children) and not any(
            c.dep_ == "poss" and any(g.dep_ == "case" for g in c.children) for c in root.children):
        return False
    if root.pos_ == "NOUN" and phrase.children(root, "prep"):
        return _located(run, root, root, False, False)
    for noun in phrase.children(root, "poss"):
        if noun.pos_ not in ("NOUN", "PROPN") or not any(g.dep_ == "case" for g in noun.children):
            continue
        owner_tok = phrase.possessor(noun)
        owner = run.np(owner_tok) if owner_tok is not None else run.np_self()
        rel = vocab.relation_name(noun.lower_ if noun.pos_ == "PROPN" else phrase.relation_words(noun))
        if owner is None or owner.common or rel is None or rel in vocab.PERSON_RELATIONS:
            continue
        run.values(owner, rel, root, False, False, whole=True)
        return True
    return False


def _owner(run: Run, tok: Token, relation: str | None) -> Ref | None:
    """The owner of a possessed noun; "our" home is the speaker's too ("Our flat is in Brixton")."""
    if relation in vocab.SPEAKER_FOR_RELATIONS and tok.lower_ in vocab.FIRST_PERSON_PLURAL:
        return run.np_self()
    return run.np(tok)


def _for_speaker(head: Token) -> bool:
    """Whether the clause says "for me" ("Home is Glasgow for me")."""
    return any(p.lower_ == "for" and any(o.lower_ in vocab.FIRST_PERSON for o in phrase.children(p, "pobj"))
               for p in phrase.children(head, "prep"))


def _located(run: Run, head: Token, subj: Token, neg: bool, retract: bool) -> bool:
    """ "My home is in Hamburg", "my birthday's on 12 August": a possessed noun and a place or date."""
    noun = subj.lemma_.lower()
    if subj.pos_ != "NOUN" or phrase.possessor(subj) is None or noun in vocab.PERSON_RELATIONS \
            or noun in vocab.PET_NOUNS:
        return False  # "my sister is in Rome" says where she is today, not a relation
    rel = vocab.relation_name(phrase.relation_words(subj))
    owner = _owner(run, phrase.possessor(subj), rel)
    pobjs = [o for p in phrase.children(head, "prep") if p.lower_ in ("in", "at", "on")
             for o in phrase.children(p, "pobj")]
    if rel is None or owner is None or owner.common or not pobjs:
        return False
    for pobj in pobjs:  # "my job is at Barclays": a job located at a name is a workplace
        at = relations.LOCATED_RELATIONS.get(rel) if pobj.pos_ == "PROPN" else None
        run.values(owner, at or rel, pobj, neg, retract, whole=True)
    return True


def predicate(run: Run, head: Token, ref: Ref, neg: bool, retract: bool) -> None:
    """ "X is a nurse / 34 / vegan / married to Y / from Z / Sam"."""
    for comp in phrase.children(head, "attr", "acomp"):
        lemma = comp.lemma_.lower()
        for old in [a for a in phrase.children(comp, "amod") if a.lower_ == "old"] if comp.pos_ == "NOUN" else []:
            for years in phrase.children(old, "npadvmod"):  # "a 32-year-old architect": the age, then the job
                _age(run, phrase.subtree_text(years), ref, neg, retract)
        ent = phrase.entity_span(comp)
        if ent is not None and ent.label_ == "NORP" and comp.dep_ == "acomp":  # "I'm Canadian"
            run.emit(ref, "nationality", ent.text, vocab.polarity("nationality", neg, retract)[1])
        elif comp.dep_ == "acomp" and comp.pos_ != "PROPN":  # "Hi, I'm Sam" parses Sam as acomp
            _adjective(run, comp, ref, neg, retract)
        elif comp.pos_ == "NUM" or (comp.pos_ == "NOUN" and lemma in ("year", "yr")):
            _age(run, phrase.subtree_text(comp), ref, neg, retract)
        elif lemma == "fan":  # "I'm a big fan of jazz"
            pobj = phrase.of_owner(comp)
            for liked in [pobj] if pobj is not None else phrase.children(comp, "compound"):
                run.values(ref, "likes", liked, neg, retract)  # "a fan of jazz", "a big Beatles fan"
        elif comp.pos_ == "NOUN" and lemma in vocab.ADJ_RELATIONS:
            run.emit(ref, vocab.ADJ_RELATIONS[lemma], lemma, vocab.polarity("diet", neg, retract)[1])
        elif comp.pos_ == "NOUN" and phrase.owner(comp) is None:
            for value in phrase.conjuncts(comp):
                kind(run, value, ref, neg, retract)
        elif comp.pos_ == "PROPN" and ref.name == run.ctx.user and phrase.owner(comp) is None:
            run.emit(ref, "name", phrase.value_text(comp), vocab.polarity("name", neg, retract)[1])
    for prep in phrase.children(head, "prep"):
        pobjs = phrase.children(prep, "pobj")
        rel = relations.COPULA_PREPS.get(prep.lower_)  # "from Kenya", "into K-pop", "with Accenture"
        for pobj in pobjs if rel is not None else []:
            if prep.lower_ not in relations.COPULA_NEEDS_NAME or pobj.pos_ == "PROPN" \
                    or pobj.lemma_.lower() in relations.WORKPLACES:  # "I'm at a law firm"
                run.values(ref, rel, pobj, neg, retract)


def _adjective(run: Run, comp: Token, ref: Ref, neg: bool, retract: bool) -> None:
    lemma = comp.lower_ if comp.tag_ == "VBN" else comp.lemma_.lower()  # "engaged", not "engage"
    if lemma == "old":  # "34 years old"
        for mod in phrase.children(comp, "npadvmod"):
            _age(run, phrase.subtree_text(mod), ref, neg, retract)
        return
    for prep in phrase.children(comp, "prep"):
        rel = vocab.ADJ_PREP_RELATIONS.get((lemma, prep.lower_))
        if rel is not None:
            for pobj in phrase.children(prep, "pobj"):
                run.values(ref, rel, pobj, neg, retract)
            return
    if lemma in vocab.ADJ_RELATIONS:
        run.emit(ref, vocab.ADJ_RELATIONS[lemma], lemma, vocab.polarity("diet", neg, retract)[1])


def _age(run: Run, text: str, ref: Ref, neg: bool, retract: bool) -> None:
    words = re.sub(r"\b(?:years?|yrs?|old)\b", " ", text.lower()).strip(" -")  # "32-year(-old)"
    n = parse_number(words)
    if n is not None and 0 < n < 130:
        run.emit(ref, "age", str(n), vocab.polarity("age", neg, retract)[1])


def kind(run: Run, noun: Token, ref: Ref, neg: bool, retract: bool, occupation: bool = False) -> None:
    """ "a nurse" -> occupation (plus works_at for "a nurse at X"), "a dog" -> is_a."""
    _, negated = vocab.polarity("occupation", neg, retract)
    employer = any(p.lower_ in ("at", "for", "with") and any(o.pos_ == "PROPN" for o in phrase.children(p, "pobj"))
                   for p in phrase.children(noun, "prep"))  # "a software dev at Monzo": a role at a named employer
    if occupation or employer or noun.lemma_.lower() in vocab.OCCUPATIONS:
        run.emit(ref, "occupation", phrase.noun_text(noun, keep_adjectives=False), negated)
        for prep in phrase.children(noun, "prep"):
            if prep.lower_ in ("at", "for", "with"):
                for pobj in phrase.children(prep, "pobj"):
                    if prep.lower_ != "with" or pobj.pos_ == "PROPN":  # "an engineer with Rolls-Royce"
                        run.values(ref, "works_at", pobj, neg, retract)
    elif phrase.has_article(noun):
        run.emit(ref, "is_a", phrase.noun_text(noun), negated)


def mutual(run: Run, head: Token, subjects: list[Token], neg: bool, retract: bool) -> None:
    """ "Lisa and I are friends" -> (user, friend, Lisa): a plural relation noun between subjects."""
    me = [s for s in subjects if s.lower_ in vocab.FIRST_PERSON]
    for comp in phrase.children(head, "attr"):
        kin = vocab.PERSON_RELATIONS.get(comp.lemma_.lower())
        if not me or kin is None or phrase.owner(comp) is not None:
            continue
        for other in subjects:
            ref = run.np(other) if other not in me else None
            if ref is not None and not ref.common:
                run.emit(run.np(me[0]), kin, ref.name, vocab.polarity(kin, neg, retract)[1])
