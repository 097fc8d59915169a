"""Modality of a clause from its dependency parse: asserted now, past, plan, hypothetical/wish, reported, question.

Only asserted and past statements become current facts; a plan is stored as a plan; the rest is
not stored. The decision reads the clause's own markers (modal auxiliaries, "going to", "if",
progressive verbs of change with a future time) and the verbs that govern it ("want to", "plan to",
"my friend thinks ..."). The word tables below are the rules: data, read by one small function.
Negation is not a modality here: the extractor keeps it as the triple's polarity (a negated plan
or wish is simply not stored).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agent.choices import Choice
from agent.language import vocab
from agent.language.timeparse import When, clause_time

if TYPE_CHECKING:
    from spacy.tokens import Span, Token


class Modality(Choice):
    """How a clause presents its content."""

    ASSERTED = "asserted"  # holds now ("I live in Porto", "I've lived here since May")
    PAST = "past"  # happened ("I moved to Berlin last month"): current, with its time
    PLAN = "plan"  # intended or scheduled ("I'm moving to Denver next month", "I'll start Monday")
    HYPOTHETICAL = "hypothetical"  # possible, wished, imagined, conditional, or said in sarcasm
    REPORTED = "reported"  # someone else's claim or wish ("my friend thinks I live in Madrid")
    QUESTION = "question"

    @property
    def current(self) -> bool:
        """Whether a fact said this way holds now (and may supersede)."""
        return self in (Modality.ASSERTED, Modality.PAST)

    @property
    def stored(self) -> bool:
        """Whether a fact said this way is stored at all (current facts and plans)."""
        return self in (Modality.ASSERTED, Modality.PAST, Modality.PLAN)


# Which wins when several markers apply: the least committal reading.
_RANK = {Modality.ASSERTED: 0, Modality.PAST: 1, Modality.PLAN: 2, Modality.HYPOTHETICAL: 3,
         Modality.REPORTED: 4, Modality.QUESTION: 5}

#: modal auxiliaries -> modality of their clause ("can" states an ability: asserted)
MODALS: dict[str, Modality] = {
    "will": Modality.PLAN, "'ll": Modality.PLAN, "ll": Modality.PLAN, "shall": Modality.PLAN,
    "wo": Modality.PLAN, "gon": Modality.PLAN, "gonna": Modality.PLAN,
    "might": Modality.HYPOTHETICAL, "may": Modality.HYPOTHETICAL, "could": Modality.HYPOTHETICAL,
    "would": Modality.HYPOTHETICAL, "'d": Modality.HYPOTHETICAL, "d": Modality.HYPOTHETICAL,
    "should": Modality.HYPOTHETICAL, "must": Modality.HYPOTHETICAL, "ought": Modality.HYPOTHETICAL,
}
#: subordinators that make a clause conditional or open
CONDITIONAL_MARKS = frozenset({"if", "unless", "whether", "once", "when", "as if", "though", "although"})
#: verbs whose open complement ("to move", "moving") takes this modality ("going" is "going to")
GOVERNORS: dict[str, Modality] = {
    "go": Modality.PLAN, "plan": Modality.PLAN, "intend": Modality.PLAN, "schedule": Modality.PLAN,
    "decide": Modality.PLAN, "arrange": Modality.PLAN, "prepare": Modality.PLAN, "set": Modality.PLAN,
    "about": Modality.PLAN, "expect": Modality.PLAN, "promise": Modality.PLAN,
    "want": Modality.HYPOTHETICAL, "hope": Modality.HYPOTHETICAL, "wish": Modality.HYPOTHETICAL,
    "dream": Modality.HYPOTHETICAL, "consider": Modality.HYPOTHETICAL, "think": Modality.HYPOTHETICAL,
    "try": Modality.HYPOTHETICAL, "need": Modality.HYPOTHETICAL, "suppose": Modality.HYPOTHETICAL,
    "imagine": Modality.HYPOTHETICAL, "pretend": Modality.HYPOTHETICAL, "let": Modality.HYPOTHETICAL,
    "like": Modality.HYPOTHETICAL, "love": Modality.HYPOTHETICAL, "prefer": Modality.HYPOTHETICAL,
    "rather": Modality.HYPOTHETICAL, "aim": Modality.HYPOTHETICAL, "seek": Modality.HYPOTHETICAL,
    "ask": Modality.REPORTED, "tell": Modality.REPORTED, "advise": Modality.REPORTED,
    "use": Modality.ASSERTED, "stop": Modality.ASSERTED, "quit": Modality.ASSERTED,
    "start": Modality.ASSERTED, "begin": Modality.ASSERTED, "keep": Modality.ASSERTED,
    "continue": Modality.ASSERTED, "happen": Modality.ASSERTED, "get": Modality.ASSERTED,
}
#: verbs that attribute a clause to their subject; with a first-person subject it is the user's own hedge
ATTRIBUTION = frozenset({"think", "believe", "say", "assume", "claim", "reckon", "suppose", "guess",
                         "insist", "tell", "want", "expect", "feel", "hope", "wish", "imagine", "doubt",
                         "suspect", "fear", "worry", "hear", "read", "pretend", "dream", "bet", "swear",
                         "argue", "mention", "write", "ask", "wonder", "know", "remember", "forget"})
#: of those, the ones that keep a first-person speaker's complement asserted ("I think I'm 34")
FIRST_PERSON_ASSERTS = frozenset({"think", "believe", "guess", "suppose", "assume", "reckon", "say", "tell",
                                  "mention", "write", "know", "remember", "forget", "swear", "bet", "feel",
                                  "note", "notice", "realize", "realise"})
#: progressive verbs of change that announce a plan ("I'm moving to Denver")
CHANGE_VERBS = frozenset({"move", "relocate", "start", "join", "leave", "emigrate", "transfer", "switch",
                          "head", "retire", "marry", "begin"})
#: adverbs that turn a plan into a maybe ("maybe I'll ...", "one day I'll ...")
HEDGE_ADVERBS = frozenset({"maybe", "perhaps", "possibly", "someday", "eventually", "hopefully"})
#: openers of a sarcastic or mocking statement: nothing in it is meant literally
SARCASM = re.compile(r"^\W*(?:yeah,?\s+right|oh,?\s+(?:great|sure|yeah|wonderful|fantastic|joy)|"
                     r"sure,?\s+and\b|as\s+if\b|like\s+i\s+(?:would|could|care))", re.IGNORECASE)
_FIRST_PERSON = vocab.FIRST_PERSON | vocab.FIRST_PERSON_PLURAL  # "we think" is the speaker's belief too


def _rank_max(a: Modality, b: Modality) -> Modality:
    return a if _RANK[a] >= _RANK[b] else b


def combine(*mods: Modality) -> Modality:
    """The least committal of ``mods`` (a plan inside a wish is a wish)."""
    out = Modality.ASSERTED
    for m in mods:
        out = _rank_max(out, m)
    return out


def _subject(head: Token) -> Token | None:
    return next((c for c in head.children if c.dep_ in ("nsubj", "nsubjpass", "expl")), None)


def _first_person(tok: Token | None) -> bool:
    return tok is not None and tok.lower_ in _FIRST_PERSON


def sentence_modality(sent: Span) -> Modality:
    """What the sentence as a whole does: QUESTION, HYPOTHETICAL (sarcasm), or ASSERTED."""
    text = sent.text.strip()
    if text.rstrip(" \"')").endswith("?"):
        return Modality.QUESTION
    if SARCASM.match(text):
        return Modality.HYPOTHETICAL
    return Modality.ASSERTED


def own_modality(head: Token, now: float | None, planned: bool = False) -> tuple[Modality, When | None]:
    """The modality the clause headed by ``head`` carries by itself, and its resolved time (read as
    a future time when the clause is ``planned`` by a verb above it: "going to start in January")."""
    mod = Modality.ASSERTED
    auxes = [c for c in head.children if c.dep_ in ("aux", "auxpass")]
    for a in auxes:
        found = MODALS.get(a.lower_)
        if found is not None:
            mod = _rank_max(mod, found)
    if any(c.dep_ == "mark" and c.lower_ in CONDITIONAL_MARKS for c in head.children):
        mod = _rank_max(mod, Modality.HYPOTHETICAL)
    if mod is Modality.PLAN and any(c.lower_ in HEDGE_ADVERBS for c in head.children):
        mod = Modality.HYPOTHETICAL
    subject = _subject(head)
    progressive = head.tag_ == "VBG" and (any(a.lemma_ == "be" for a in auxes) or (  # "my brother's moving":
        subject is not None and any(c.dep_ == "case" for c in subject.children)))  # the parser took 's for a possessive
    simple_past = head.tag_ == "VBD" or (head.tag_ == "VBN" and any(a.tag_ == "VBD" for a in auxes)
                                          and not any(a.lemma_ == "have" for a in auxes))
    when = None
    if now is not None:
        prefer = "future" if (planned or mod is Modality.PLAN or progressive or head.tag_ in ("VB", "VBP", "VBZ")) \
            and not simple_past else "past"
        when = clause_time(head, now, prefer)
    if mod is Modality.ASSERTED:
        if progressive and (head.lemma_.lower() in CHANGE_VERBS or (when is not None and when.future)):
            mod = Modality.PLAN  # "I'm moving to Vienna", "she's starting at Lego next week"
        elif when is not None and when.future and not simple_past:
            mod = Modality.PLAN  # "I start at Google next Monday"
        elif simple_past:
            mod = Modality.PAST
    return mod, when


def governed_modality(head: Token) -> Modality:
    """The modality the verbs above ``head`` impose on it ("want to move", "my friend thinks I ...")."""
    mod = Modality.ASSERTED
    tok = head
    while tok.dep_ in ("xcomp", "ccomp", "conj", "advcl", "acomp", "pcomp") and tok.head is not tok:
        gov = tok.head
        if tok.dep_ == "pcomp":  # "planning on moving", "thinking of moving": the verb above the preposition
            if gov.dep_ != "prep" or gov.head is gov:
                break
            gov = gov.head
        lemma = gov.lemma_.lower()
        if tok.dep_ in ("xcomp", "pcomp") or (tok.dep_ == "ccomp" and not _subject(tok)):
            found = GOVERNORS.get(lemma)
            if lemma == "go" and gov.tag_ != "VBG":
                found = None  # "go to school" is no "going to"
            if lemma in ("like", "love", "prefer") and not any(
                    MODALS.get(a.lower_) is Modality.HYPOTHETICAL for a in gov.children if a.dep_ == "aux"):
                found = None  # "I love to swim" states a liking; "I'd love to" wishes
            mod = _rank_max(mod, found if found is not None else Modality.HYPOTHETICAL)
        elif tok.dep_ == "ccomp":
            subj = _subject(gov)
            if lemma in ATTRIBUTION:  # the speaker's own "I think", "remember that": theirs to assert
                if not ((subj is None or _first_person(subj)) and lemma in FIRST_PERSON_ASSERTS):
                    mod = _rank_max(mod, Modality.REPORTED if subj is not None and not _first_person(subj)
                                    else Modality.HYPOTHETICAL)
            elif lemma in GOVERNORS and GOVERNORS[lemma] is not Modality.ASSERTED:
                mod = _rank_max(mod, GOVERNORS[lemma])  # "wants me to keep ..." parsed as ccomp
        elif tok.dep_ == "advcl" and any(c.dep_ == "mark" and c.lower_ in CONDITIONAL_MARKS for c in tok.children):
            mod = _rank_max(mod, Modality.HYPOTHETICAL)
        if tok.dep_ == "conj" and _subject(tok) is None:  # "I might move and work there": shared modal
            own, _ = own_modality(gov, None)
            if own in (Modality.HYPOTHETICAL, Modality.REPORTED):
                mod = _rank_max(mod, own)
        tok = gov
    return mod


def states_current_fact(doc) -> bool:
    """Whether any clause of ``doc`` asserts something as holding now or in the past.

    For extractors that do not read clauses themselves (the LLM extractor): an utterance that only
    plans, wishes, imagines, reports or asks ("I might move to Berlin", "my friend thinks I live in
    Madrid") has nothing to store as a current fact. Verbs that only carry another clause ("thinks",
    "want", "going") are not clauses of their own here.
    """
    for sent in doc.sents:
        if sentence_modality(sent) is not Modality.ASSERTED:
            continue
        for tok in sent:
            if tok.pos_ not in ("VERB", "AUX") or tok.dep_ not in ("ROOT", "conj", "ccomp", "xcomp", "advcl", "relcl"):
                continue
            if any(c.dep_ in ("ccomp", "xcomp") for c in tok.children) and (
                    tok.lemma_.lower() in GOVERNORS or tok.lemma_.lower() in ATTRIBUTION):
                continue
            if combine(own_modality(tok, None)[0], governed_modality(tok)).current:
                return True
    return False


def asked_plan_relations(doc) -> frozenset[str]:
    """The plan relations a question asks for: its verb said as a plan ("Where is she moving?", "Where
    will you work?", "Where does he plan to study?") mapped through the relation frames (move ->
    lives_in -> plans_to_move_to); empty when the question asks about the present or the past."""
    from agent.language.relations import VERB_RELATIONS, frame_verb, plan_relation

    found: set[str] = set()
    for sent in doc.sents:
        if sentence_modality(sent) is not Modality.QUESTION:
            continue
        for tok in sent:
            verb = frame_verb(tok.lemma_.lower()) if tok.pos_ in ("VERB", "AUX") else None
            if verb is None or combine(own_modality(tok, None)[0], governed_modality(tok)) is not Modality.PLAN:
                continue
            found.update(p for r in VERB_RELATIONS[verb].values() if (p := plan_relation(r)) is not None)
    return frozenset(found)
