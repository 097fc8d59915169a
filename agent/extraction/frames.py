"""Verb frames of the pattern extractor: naming, having, verbs with relation frames, and verbs without.

Functions of the extractor's run (``agent.extraction.patterns.Run``), like agent.extraction.copula: they resolve noun
phrases and emit triples through it. Which verb and slot give which relation is data in
agent.language.relations.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agent.extraction import copula
from agent.language import modality
from agent.language import phrase
from agent.language import relations
from agent.language import timeparse
from agent.language import vocab
from agent.extraction.ref import Ref
from agent.language.literal import looks_like_date, normalize_date, parse_number

if TYPE_CHECKING:
    from spacy.tokens import Token

    from agent.extraction.patterns import Run

#: entity labels that are circumstances (times, amounts), never the value of an open relation
_NOT_VALUES = frozenset({"DATE", "TIME", "CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT"})


def _ref(name: str, confidence: float) -> Ref:
    return Ref(name, confidence)


def named(run: Run, head: Token, subjects: list[Token], neg: bool, retract: bool) -> None:
    """ "I'm called Sam", "My dog is named Rex", "My sister is called Mary"."""
    for subj in subjects:
        for name_tok in phrase.children(head, "oprd"):
            name = phrase.value_text(name_tok)
            if subj.lower_ in vocab.FIRST_PERSON:
                run.emit(_ref(run.ctx.user, run.cfg.confidence), "name", name, neg or retract)
                continue
            owner_tok = phrase.possessor(subj)
            owner = run.np(owner_tok) if owner_tok is not None else None
            if owner is None or owner.common:
                continue
            name_of(run, owner, subj.lemma_.lower(), name, neg or retract)


def name_of(run: Run, owner: Ref, noun: str, name: str, negated: bool) -> None:
    """Facts that "``owner``'s ``noun`` is called ``name``" gives, for pets and people."""
    if noun in vocab.PET_NOUNS:
        run.emit(owner, "has_pet", noun, negated)
        run.emit(owner, "pet_name", name, negated)
        run.emit(_ref(name, owner.confidence), "is_a", noun, negated)
    elif noun in vocab.PERSON_RELATIONS:
        run.emit(owner, vocab.PERSON_RELATIONS[noun], name, negated)


def name_pronoun(run: Run, pronoun: Token, name: str, negated: bool) -> bool:
    """ "his name is Biscuit", "she's called Miso": name the latest pet or person introduced without a
    name, in this turn ("I adopted a greyhound, ...") or the turns before; True when one fitted.

    Only naming uses these referents: a named entity needs no name, so an unnamed one is the likely
    antecedent, while "he loves it" keeps the dialogue state's resolution.
    """
    low = pronoun.lower_
    if low in vocab.FIRST_PERSON or low in vocab.NOT_STORED_PERSONS:
        return False
    here = [(ref, noun) for ref, noun in reversed(run.introduced)]
    earlier = [(_ref(owner, run.cfg.resolved_confidence), noun) for owner, noun in run.ctx.unnamed]
    for owner, noun in here + earlier:
        if _fits(noun, low):
            name_of(run, owner, noun, name, negated)
            run.introduced = [(r, n) for r, n in run.introduced if (r, n) != (owner, noun)]
            return True
    return False


def _fits(noun: str, pronoun: str) -> bool:
    """Whether ``pronoun`` can refer to an unnamed ``noun``: pets are he, she or it; people by their word."""
    if noun in vocab.PET_NOUNS:
        return True
    if pronoun in vocab.THING_PRONOUNS:
        return False
    if pronoun in vocab.FEMALE_WORDS:
        return noun not in vocab.MALE_WORDS
    if pronoun in vocab.MALE_WORDS:
        return noun not in vocab.FEMALE_WORDS
    return True


def have(run: Run, head: Token, ref: Ref, neg: bool, retract: bool) -> None:
    """ "I have a dog named Rex / a sister (named Mary, who lives in Rome) / a car"."""
    negated = neg or retract
    for first in phrase.children(head, "dobj"):
        for obj in phrase.conjuncts(first):
            noun = obj.lemma_.lower()
            names = [phrase.value_text(o) for acl in phrase.children(obj, "acl")
                     if acl.lemma_.lower() in ("name", "call") for o in phrase.children(acl, "oprd")]
            names += [phrase.value_text(a) for a in phrase.children(obj, "appos") if a.pos_ == "PROPN"]
            if obj.pos_ == "PROPN":  # misparse "a [parrot called] Kiwi": the noun hangs off "called"
                for mod in phrase.children(obj, "amod", "acl"):
                    if mod.lemma_.lower() in ("name", "call"):
                        kinds = [c for c in mod.children if c.lemma_.lower() in vocab.PET_NOUNS
                                 or c.lemma_.lower() in vocab.PERSON_RELATIONS]
                        if kinds:
                            noun, names = kinds[0].lemma_.lower(), [phrase.value_text(obj)]
            if noun in vocab.PET_NOUNS:
                run.emit(ref, "has_pet", noun, negated)
                for name in names:
                    name_of(run, ref, noun, name, negated)
                if not names and not negated and run.mod.current:
                    run.introduced.append((ref, noun))  # "his name is Biscuit" may follow
            elif noun in vocab.PERSON_RELATIONS:
                for name in names:
                    name_of(run, ref, noun, name, negated)
                if not names and not negated and run.mod.current:
                    run.introduced.append((ref, noun))  # "I have a sister, her name is Ana"
                rel = vocab.PERSON_RELATIONS[noun]
                if not negated:
                    found = names[0] if names else run.ctx.safe_lookup(ref.name, rel)
                    who = _ref(found, ref.confidence) if found else _ref(
                        f"{ref.name}'s {rel.replace('_', ' ')}", min(ref.confidence, run.cfg.guessed_confidence))
                    run._relative_clauses(obj, who)
            elif noun in vocab.POSSESSION_NOUNS or obj.pos_ == "PROPN":
                run.emit(ref, "owns", phrase.value_text(obj), negated)


def dropped_i(head: Token) -> bool:
    """A chat statement with "I" left out: a sentence-root past or participle verb with no subject
    and nothing but adverbs before it ("Just moved to Seattle!"); never an imperative (base form)."""
    gerund = head.tag_ == "VBG" and (head.lemma_.lower() in modality.GOVERNORS or (  # "Planning to move to Spain"
        relations.frame_verb(head.lemma_.lower()) is not None and head.lemma_.lower() in modality.CHANGE_VERBS))
    return (head.dep_ == "ROOT" and (head.tag_ in ("VBD", "VBN") or gerund) and head.lemma_.lower() != "be"
            and all(t.dep_ in ("advmod", "punct", "intj") for t in head.doc[head.sent.start:head.i])
            and not any(c.dep_ in ("expl", "csubj", "auxpass", "aux") for c in head.children))


def verb_tagged_noun(head: Token, conj: Token) -> bool:
    """ "I live in London and work in Canary Wharf": the parser tagged the second verb a noun. It is
    one when it joins a verb, has a frame (agent.language.relations), takes a preposition and no determiner."""
    return (head.pos_ == "VERB" and conj.pos_ == "NOUN" and relations.frame_verb(conj.lemma_.lower()) is not None
            and any(c.dep_ == "prep" for c in conj.children)
            and not any(c.dep_ in ("det", "poss", "amod", "compound") for c in conj.children))


def verb(run: Run, head: Token, ref: Ref, neg: bool, retract: bool) -> None:
    """Verb + preposition/object frames from ``vocab.VERB_RELATIONS``."""
    lemma = relations.frame_verb(head.lemma_.lower()) or head.lemma_.lower()
    frames = vocab.VERB_RELATIONS[lemma]
    if lemma == "grow" and not any(c.dep_ == "prt" and c.lower_ == "up" for c in head.children):
        return
    wish = any(c.dep_ == "aux" and c.lower_ in ("would", "'d", "d") for c in head.children)
    for child in list(head.children) + _companion_preps(head) + _shared_preps(head):
        if child.dep_ in ("prep", "agent"):
            prep = "agent" if child.dep_ == "agent" else child.lower_
            for pobj in phrase.children(child, "pobj"):
                if (lemma, prep) in relations.NEEDS_NAME and pobj.pos_ != "PROPN":
                    continue
                if (lemma, prep) in relations.NEEDS_SCHOOL and not any(
                        t.lower_ in relations.SCHOOL_WORDS for t in pobj.subtree):
                    continue
                if lemma == "move" and prep == "from":  # "moved from Paris to Berlin"
                    run.values(ref, "lives_in", pobj, False, True)
                elif prep in frames and frames[prep] == "works_at" and any(
                        o.lemma_.lower() in relations.STUDY_NOUNS for o in phrase.children(head, "dobj")):
                    continue  # "started uni at Bristol": a course (below), not a job
                elif prep in frames and frames[prep] == "occupation":  # "work as a nurse at X"
                    copula.kind(run, pobj, ref, neg, retract, occupation=True)
                elif prep in frames:
                    run.values(ref, frames[prep], pobj, neg, retract)
        elif (child.dep_ == "dobj" or (child.dep_ == "acomp" and phrase.entity_span(child) is not None)) \
                and "dobj" in frames and not wish:  # "I speak Italian" sometimes parses Italian as acomp
            if (lemma, "dobj") in relations.NEEDS_NAME and child.pos_ != "PROPN":
                continue
            if (lemma, "dobj") in relations.NEEDS_NUMBER and child.pos_ != "NUM":
                continue
            if re.fullmatch(r"answers?|repl(?:y|ies)|responses?", child.lower_):
                continue  # handled by the answer-style preference rule
            run.values(ref, frames["dobj"], child, neg, retract)
        elif child.dep_ == "xcomp" and "xcomp" in frames and not wish:
            if any(c.dep_ in ("nsubj", "nsubjpass") for c in child.children):
                continue
            rel, negated = vocab.polarity(frames["xcomp"], neg, retract)
            for activity in phrase.conjuncts(child):  # "hiking and swimming": one fact each
                to = "to " if rel in relations.INFINITIVE_VALUES and activity.tag_ == "VB" else ""
                run.emit(ref, rel, to + phrase.clause_text(activity), negated)
        elif child.dep_ == "xcomp" and not neg and not phrase.children(child, "nsubj", "nsubjpass"):
            run._clause(child, [ref], retract)  # "start working at Meta": the complement holds the fact
    if "dobj" not in frames:
        course(run, head, ref, neg, retract)  # "starting a new job at Spotify"


def _shared_preps(head: Token) -> list[Token]:
    """ "born and raised in Chicago": a verb with no object of its own shares its conjunct's preposition."""
    if any(c.dep_ in ("prep", "agent", "dobj") for c in head.children):
        return []
    return [p for c in head.children if c.dep_ == "conj" and c.pos_ == "VERB" and not phrase.children(c, "nsubj")
            for p in phrase.children(c, "prep")]


def _companion_preps(head: Token) -> list[Token]:
    """Prepositions the parser hung on a companion: "I live with my wife in Austin" ("in" under "wife")."""
    return [p for w in phrase.children(head, "prep") if w.lower_ in relations.COMPANION_PREPS
            for o in phrase.children(w, "pobj") for p in phrase.children(o, "prep") if p.lower_ != "of"]


def course(run: Run, head: Token, ref: Ref, neg: bool, retract: bool) -> bool:
    """A job or a course taken as object: "got a job at Netflix", "quit my job at Amazon", "starting a
    new job at Spotify", "doing a PhD at Oxford". True when the object was one."""
    ending = retract or head.lemma_.lower() in relations.JOB_ENDING_VERBS
    for obj in phrase.children(head, "dobj"):
        noun = obj.lemma_.lower()
        if noun not in relations.JOB_NOUNS and noun not in relations.STUDY_NOUNS:
            continue
        job = noun in relations.JOB_NOUNS
        for prep in phrase.children(obj, "prep") + phrase.children(head, "prep"):
            for pobj in phrase.children(prep, "pobj") if prep.lower_ in (("at", "with", "for") if job else ("at", "in")) else []:
                if job:
                    run.values(ref, "works_at", pobj, neg, ending)
                elif pobj.pos_ == "PROPN":
                    run.values(ref, "studies_at", pobj, neg, retract)
        return True
    return False


def objects(run: Run, head: Token, ref: Ref, neg: bool, retract: bool) -> None:
    """A verb without frames: a job it takes or ends, a relation it ends, its open complement
    ("going to move": the modality decides), else an open relation named by the verb itself."""
    lemma = head.lemma_.lower()
    if course(run, head, ref, neg, retract):
        return
    for obj in phrase.children(head, "dobj"):
        ended = relations.ENDING_FRAMES.get((lemma, "dobj"))
        if ended is not None and obj.pos_ == "PROPN":  # "I left Microsoft"
            run.values(ref, ended, obj, neg, True)
            return
        named = relations.NOUN_FRAMES.get((lemma, obj.lemma_.lower()))
        places = [o for p in phrase.children(obj, "prep") + phrase.children(head, "prep") if p.lower_ in ("in", "at")
                  for o in phrase.children(p, "pobj")]
        if named is not None and places:  # "I've made my home in Vancouver"
            for place in places:
                run.values(ref, named, place, neg, retract)
            return
    if not neg:  # "I'm not going to move": a negated plan or wish stores nothing
        pcomps = [x for p in phrase.children(head, "prep") for x in phrase.children(p, "pcomp")
                  if x.tag_ == "VBG" and head.lemma_.lower() in modality.GOVERNORS]  # "planning on moving"
        for x in phrase.children(head, "xcomp") + pcomps:
            if not phrase.children(x, "nsubj", "nsubjpass"):
                run._clause(x, [ref], retract)
    if not run.cfg.open_relations or head.pos_ != "VERB" or head.tag_ not in ("VBP", "VBZ") \
            or phrase.children(head, "xcomp", "ccomp") or lemma in modality.GOVERNORS or lemma in modality.ATTRIBUTION:
        # open relations are standing facts said in the present ("runs a pub"); "I watched a film" is an event
        return
    slots = [("dobj", o) for o in phrase.children(head, "dobj")] + [
        (p.lower_, o) for p in phrase.children(head, "prep") for o in phrase.children(p, "pobj")]
    for slot, obj in slots:
        rel = relations.open_relation(lemma, slot)
        ent = phrase.entity_span(obj)
        if rel is None or obj.pos_ not in ("NOUN", "PROPN") or (ent is not None and ent.label_ in _NOT_VALUES):
            continue
        run.values(ref, rel, obj, neg, retract)


#: entity labels of amounts, never values of relations other than dated ones
_AMOUNTS = frozenset({"CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT"})
#: relations whose values are dates or numbers
_DATED = frozenset({"age", "born_on", "birthday", "date_of_birth", "born_in", "height", "weight"})

def values(run: Run, ref: Ref, relation: str, tok: Token, neg: bool, retract: bool,
            whole: bool = False) -> None:
    """Emit (ref, relation, value) for ``tok`` and its conjuncts, with the clause's polarity.

    A negated apposition ("in Rome, not Paris") emits the negated value too. ``whole`` keeps
    numbers and dates as their full phrase (for "my birthday is May 3").
    """
    rel, negated = vocab.polarity(relation, neg, retract)
    for value_tok in (phrase.conjuncts(tok) if not whole else [tok]):
        value = value_of(run, value_tok, rel)
        if value:
            run.emit(ref, rel, value, negated)
        for appos in phrase.children(value_tok, "appos"):
            # "not" hangs off either the apposition or the value before it
            if any(c.dep_ == "neg" and (c.head is appos or c.i < appos.i) for c in appos.children) or \
                    any(c.dep_ == "neg" and value_tok.i < c.i < appos.i for c in value_tok.children):
                other = value_of(run, appos, rel)
                if other:
                    run.emit(ref, rel, other, True)

def value_of(run: Run, tok: Token, relation: str) -> str | None:
    """The object string for ``tok``: resolved pronoun, normalised number or date, or text."""
    if tok.lower_ in vocab.FIRST_PERSON:
        return run.ctx.user
    if tok.pos_ == "PRON" or tok.lower_ in vocab.NOT_STORED_PERSONS:
        ref = run.np(tok)
        return ref.name if ref is not None else None
    if phrase.possessor(tok) is not None and tok.pos_ == "NOUN":
        ref = run.np(tok)
        return ref.name if ref is not None else None
    named = [o for acl in phrase.children(tok, "acl") if acl.lemma_.lower() in ("call", "name")
             for o in phrase.children(acl, "oprd")]
    if named and tok.pos_ == "NOUN":  # "a startup called Loom" -> Loom
        tok = named[0]
    if relation in relations.PLACE_RELATIONS and tok.lemma_.lower() in relations.GENERIC_PLACES:  # "a place in Dublin"
        inner = [o for p in phrase.children(tok, "prep") if p.lower_ in ("in", "at", "near")
                 for o in phrase.children(p, "pobj")]
        tok = inner[0] if inner else tok
    if relation not in _DATED and phrase.subtree_text(tok).lower() in timeparse.VAGUE:
        return None  # "living in Berlin at the moment": a time, not a place
    ent = phrase.entity_span(tok)
    if ent is not None and relation not in _DATED and (ent.label_ in _AMOUNTS or (
            ent.label_ in ("DATE", "TIME") and tok.dep_ == "pobj")):
        return None  # "working at IBM for ten years": a duration is no employer ("I hate Mondays" is fine)
    text = tok.text if relation == "age" and tok.pos_ == "NUM" else phrase.value_text(tok)
    if relation == "age":
        n = parse_number(re.sub(r"\b(?:years?|old)\b", " ", text.lower()))
        return str(n) if n is not None else None
    if relation in ("born_on", "birthday", "date_of_birth") or (
        relation == "born_in" and looks_like_date(text)
    ):
        return normalize_date(text)
    return text
