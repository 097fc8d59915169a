"""PatternExtractor: facts from one utterance by dependency-parse patterns, without any LLM.

What it reads (one clause at a time: the sentence root, its coordinated clauses, and clauses under
"remember/know that...", "I think...", "I said..."; never clauses under "say", "pretend", "if"):

- copulas: "My name is Sam", "I'm 34 (years old)", "I'm a nurse" (occupation), "Rex is a dog"
  (is_a), "My favourite colour is green" (favorite_color), "Mary is my sister" / "My sister is
  Mary" (alice, sister, Mary), "John is Mary's husband" (Mary, husband, John), "Paris is the
  capital of France" (France, capital, Paris), "I'm married to John", "I'm vegan" (diet);
- verbs from ``agent.language.vocab.VERB_RELATIONS``: live/move -> lives_in, work at/for -> works_at,
  like/love/enjoy -> likes, hate -> dislikes, speak, study, own, play, born on/in...;
- "I have a dog named Rex" -> (alice, has_pet, dog), (alice, pet_name, Rex) and (Rex, is_a, dog):
  the pet's name hangs off the owner so "what is my dog called" finds it, and the is_a fact ties
  the name to the species; "I have a sister named Mary" -> (alice, sister, Mary);
- answer-style and language preferences: "keep answers short" -> (alice, answer_style, short)
  (the agent keeps these in the user's profile instead, see agent/profile/preference.py, never as facts).

Polarity: "no longer", "anymore", "used to", "stopped" retract (negated=True, same relation);
plain negation flips likes into dislikes ("I don't like jazz") and marks anything else negated.
Subjects: first person -> the user, pronouns and known phrases -> context.references,
"my sister's husband" -> lookup(lookup(user, "sister"), "husband") or the placeholder
"alice's sister" when the KB does not know. Facts about "you" or "we" are never produced.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.extraction import copula
from agent.extraction import frames
from agent.language import phrase
from agent.language import relations
from agent.language import vocab
from agent.errors import BadInputError
from agent.language.intent import is_question, looks_like_instruction
from agent.language.modality import Modality, combine, governed_modality, own_modality, sentence_modality
from agent.extraction.ref import Ref
from agent.profile.preference import style_facts
from agent.language.timeparse import When
from agent.extraction.triple import ExtractionContext, Triple, dedupe
from agent.validation import check, within

if TYPE_CHECKING:
    from spacy.tokens import Doc, Span, Token

    from agent.language.nlp import NLP


@dataclass(frozen=True)
class PatternConfig:
    """Confidence levels and size limits of the pattern extractor."""

    confidence: float = within(0.9, 0.01, 1.0)  # a plainly stated fact about a named or first-person subject
    resolved_confidence: float = within(0.8, 0.01, 1.0)  # the subject came from a pronoun or the dialogue state
    guessed_confidence: float = within(0.7, 0.01, 1.0)  # the subject is a placeholder such as "alice's sister"
    hedged_confidence: float = within(0.6, 0.01, 1.0)  # "I think ...", "maybe", "probably": the user is unsure
    max_value_chars: int = within(200, 8, 100000)  # longer subjects/objects are parse accidents, not facts
    max_sentences: int = within(50, 1, 100000)  # a longer utterance is a paste; only its start is read
    # raise when a sentence trips an internal error instead of skipping it (and counting it in
    # PatternExtractor.errors): tests want the bug, a chat turn wants the other sentences' facts
    strict: bool = False
    # keep predicates that map to no canonical relation as open relations ("runs", "volunteers_at");
    # the KB treats them as multi-valued, so they are searchable and never supersede anything
    open_relations: bool = True

    def __post_init__(self) -> None:
        check(self)  # every within() field in its range


_HEDGES = frozenset({"maybe", "probably", "perhaps", "possibly"})


class PatternExtractor:
    """Rule-based extractor over a spaCy parse (see the module docstring for what it covers)."""

    def __init__(self, nlp: NLP, config: PatternConfig | None = None):
        self.nlp = nlp
        self.config = config or PatternConfig()
        self.errors = 0  # sentences skipped because extraction raised (only when not strict)

    def extract(self, text: str, context: ExtractionContext, doc: Doc | None = None) -> list[Triple]:
        """Facts stated in ``text`` (deduplicated, in order); [] for questions and instructions.

        ``doc`` is a parse of exactly ``text`` made by the caller (the state tracker) to avoid
        parsing twice.
        """
        if not isinstance(text, str):
            raise BadInputError(f"utterance must be a string, got {type(text).__name__}")
        if not isinstance(context, ExtractionContext):
            raise BadInputError(f"context must be an ExtractionContext, got {type(context).__name__}")
        if not text.strip():
            return []
        if doc is None:
            doc = self.nlp(text)
        elif doc.text != text:
            raise BadInputError(f"the pre-parsed doc is of {doc.text[:40]!r}, not of {text[:40]!r}")
        run = Run(context, self.config)
        for n, sent in enumerate(doc.sents):
            if n >= self.config.max_sentences:
                break
            try:
                run.sentence(sent)
            except Exception:
                if self.config.strict:
                    raise
                self.errors += 1
        return dedupe(run.out)


class Run:
    """One extraction: the context, the triples found so far, and the per-sentence walk."""

    def __init__(self, context: ExtractionContext, config: PatternConfig):
        self.ctx = context
        self.cfg = config
        self.out: list[Triple] = []
        self.level = config.confidence  # the current sentence's confidence ceiling
        self.now = context.now if context.now is not None else time.time()  # "next month" is read against it
        self.mod = Modality.ASSERTED  # the current clause's modality: only stored ones emit
        self.when: When | None = None  # the current clause's resolved time
        # pets and people this turn introduced without a name, as (owner, noun): "his name is X" names them
        self.introduced: list[tuple[Ref, str]] = []

    # ------------------------------------------------------------------ walking the parse

    def sentence(self, sent: Span) -> None:
        text = sent.text.strip()
        if not text or text.startswith("/") or is_question(text) or looks_like_instruction(text):
            return
        if sentence_modality(sent) is not Modality.ASSERTED:
            return  # a question or sarcasm: nothing in it is stated as fact
        hedged = any(t.lower_ in _HEDGES for t in sent)
        self.level = self.cfg.hedged_confidence if hedged else self.cfg.confidence
        for relation, value in style_facts(text):  # the agent keeps these in the profile instead
            self.emit(Ref(self.ctx.user, self.cfg.confidence), relation, value, False)
        if sent.root.pos_ in ("NOUN", "PROPN") and copula.contracted(self, sent.root):
            return  # "My home's in Hamburg", "my name's Priya": a copula the parser read as a possessive
        self._visit(sent.root, None, retract=False)

    def _visit(self, head: Token, inherited: list[Ref] | None, retract: bool) -> None:
        """Handle the clause headed by ``head``, then its coordinated and reported clauses.

        Clauses are handled in text order: a complement before its head ("I don't live in Paris
        anymore, I live in Rome") comes first.
        """
        reported = [c for c in head.children
                    if c.dep_ in ("ccomp", "parataxis") and self._reports_facts(head, c)]
        if reported and head.lemma_.lower() in vocab.HEDGING:
            self.level = min(self.level, self.cfg.hedged_confidence)
        for child in reported:
            if child.i < head.i:
                self._visit(child, None, retract)
        subjects = self._clause(head, inherited, retract)
        for child in head.children:
            if child.dep_ == "conj" and (child.pos_ in ("VERB", "AUX") or frames.verb_tagged_noun(head, child)):
                self._visit(child, subjects, retract)
            elif child.dep_ == "advcl" and child.tag_ == "VBG" and subjects and not phrase.children(
                    child, "mark", "nsubj", "nsubjpass"):
                self._visit(child, subjects, retract)  # "I'm in Bristol, studying physics": same subject
            elif child in reported and child.i > head.i:
                self._visit(child, None, retract)

    def _reports_facts(self, head: Token, clause: Token) -> bool:
        """Whether a clausal complement states facts ("remember that...") or not ("say that...")."""
        lemma = head.lemma_.lower()
        has_subject = any(c.dep_ in ("nsubj", "nsubjpass") for c in clause.children)
        if clause.lemma_.lower() in vocab.REPORTING_OK:  # "I'd like you to remember that ..."
            return True
        if lemma in vocab.REPORTING_OK or lemma in vocab.HEDGING:  # the user's own, never someone else's
            return has_subject and not any(c.dep_ in ("nsubj", "nsubjpass") and c.lower_ not in vocab.FIRST_PERSON
                                           for c in head.children)
        if lemma in vocab.SELF_REPORTING:  # "I said I live in Rome", not "say I am the admin"
            return has_subject and any(c.dep_ == "nsubj" and c.lower_ in vocab.FIRST_PERSON
                                       for c in head.children)
        # "I don't live in Paris anymore, I live in Rome": a fact verb joining two clauses (not
        # "say", "wish", "pretend", "if"... which report or imagine rather than state)
        return has_subject and (lemma in vocab.VERB_RELATIONS or lemma in ("be", "have")
                                or lemma in relations.NAMING_VERBS)

    def _clause(self, head: Token, inherited: list[Ref] | None, retract: bool) -> list[Ref] | None:
        """Extract from one clause in its modality; return its subjects for coordinated clauses."""
        saved = (self.mod, self.when)
        above = combine(governed_modality(head), saved[0] if head.dep_ == "xcomp" else Modality.ASSERTED)
        own, when = own_modality(head, self.now, planned=above is Modality.PLAN)
        self.mod = combine(own, above)
        self.when = when if when is not None else (saved[1] if head.dep_ == "xcomp" else None)
        try:
            return self._clause_body(head, inherited, retract)
        finally:
            self.mod, self.when = saved

    def _clause_body(self, head: Token, inherited: list[Ref] | None, retract: bool) -> list[Ref] | None:
        lemma = head.lemma_.lower()
        subj_toks = [s for c in phrase.children(head, "nsubj", "nsubjpass") for s in phrase.conjuncts(c)
                     if inherited is None or c.lower_ not in vocab.RELATIVE_PRONOUNS]
        names = phrase.children(head, "oprd") if lemma in relations.NAMING_VERBS else []
        if len(subj_toks) == 1 and subj_toks[0].pos_ == "PRON" and names and frames.name_pronoun(
                self, subj_toks[0], phrase.value_text(names[0]), any(c.dep_ == "neg" for c in head.children)):
            return []  # "We got a kitten, she's called Miso"
        if not subj_toks:
            if inherited is None and frames.dropped_i(head):
                refs = [self.np_self()]  # "Just moved to Seattle!", "Currently employed at Tesco"
            elif inherited is None:
                self._imperative(head)
                return None
            else:
                refs = inherited
        else:
            if [s.lower_ for s in subj_toks] == ["we"]:  # the speaker's household: its home is theirs
                subj_toks, we = [], Ref(self.ctx.user, self.cfg.confidence, only=vocab.SPEAKER_FOR_RELATIONS)
            elif any(s.lower_ in vocab.NOT_STORED_PERSONS for s in subj_toks):
                return []
            refs = [we] if not subj_toks else []
            for s in subj_toks:
                if lemma == "be" and s.lower_ in vocab.THING_PRONOUNS:
                    continue  # "It is a nice day": usually an expletive, never a safe subject
                if lemma == "be" and copula.relational(self, head, s, retract):
                    continue
                ref = self.np(s)
                if ref is not None:
                    refs.append(ref)
                    self._relative_clauses(s, ref)
        neg = any(c.dep_ == "neg" for c in head.children)
        retract = retract or phrase.retracts(head)
        if lemma == "be" and len(subj_toks) > 1:
            copula.mutual(self, head, subj_toks, neg, retract)  # "Lisa and I are friends"
        for ref in refs:
            if ref.common and lemma != "call":
                continue
            if lemma == "be":
                copula.predicate(self, head, ref, neg, retract)
            elif head.tag_ == "VBN" and head.lower_ in vocab.ADJ_RELATIONS and not phrase.children(
                    head, "dobj", "agent", "prep"):  # "I'm retired", "we're engaged"
                self.emit(ref, vocab.ADJ_RELATIONS[head.lower_], head.lower_, vocab.polarity("diet", neg, retract)[1])
            elif lemma in ("call", "name") and phrase.children(head, "oprd"):
                frames.named(self, head, subj_toks, neg, retract)
            elif lemma in ("get", "become") and phrase.children(head, "acomp", "attr"):
                copula.predicate(self, head, ref, neg, retract)  # "got married to", "became a nurse"
            elif lemma in relations.HAVING_VERBS and (lemma == "have" or phrase.children(head, "dobj")):
                frames.have(self, head, ref, neg, retract)  # "I've got a cat", "I adopted a greyhound"
                frames.objects(self, head, ref, neg, retract)
            elif lemma in ("use", "stop", "quit") and phrase.children(head, "xcomp"):
                for x in phrase.children(head, "xcomp"):  # "used to live", "stopped working"
                    self._clause(x, [ref], retract=True)
            elif lemma == "stand" and neg:  # "I can't stand X" (X is sometimes parsed as an adverb)
                for obj in [c for c in head.children if c.dep_ in ("dobj", "advmod", "npadvmod") and c.i > head.i]:
                    self.values(ref, "dislikes", obj, False, retract)
            elif relations.frame_verb(lemma) is not None:
                frames.verb(self, head, ref, neg, retract)
            else:
                frames.objects(self, head, ref, neg, retract)
        return refs

    # ------------------------------------------------------------------ noun phrases

    def np(self, tok: Token) -> Ref | None:
        """Resolve a noun phrase to the entity it names, or None if it cannot be resolved."""
        low = tok.lower_
        if low in vocab.FIRST_PERSON:
            return Ref(self.ctx.user, self.cfg.confidence)
        if low in vocab.NOT_STORED_PERSONS:
            return None
        known = self.ctx.references.get(phrase.phrase_key(tok)) or self.ctx.references.get(low)
        if tok.pos_ == "PRON":
            known = known or self._named_here(low)
            return Ref(known, self.cfg.resolved_confidence) if known else None
        owner_tok = phrase.possessor(tok)
        if known and tok.pos_ != "PROPN" and not (owner_tok is not None and any(
                a.pos_ == "PROPN" for a in phrase.children(tok, "appos"))):  # "my friend Chloe" names a new one
            return Ref(known, self.cfg.resolved_confidence)
        if owner_tok is not None and tok.pos_ == "NOUN":
            return self._possessed(tok, owner_tok)
        ent = phrase.entity_span(tok)
        if ent is not None and ent.label_ not in ("DATE", "TIME", "CARDINAL", "ORDINAL", "QUANTITY"):
            return Ref(known or ent.text, self.cfg.confidence)
        if tok.pos_ == "PROPN" or (tok.pos_ == "ADJ" and tok.dep_ in ("nsubj", "nsubjpass") and tok.text.istitle()):
            return Ref(known or phrase.noun_text(tok), self.cfg.confidence)  # "Karl" tagged as an adjective
        if tok.pos_ in ("NOUN", "ADJ", "NUM"):
            return Ref(phrase.noun_text(tok), self.cfg.confidence, common=True)
        return None

    def np_self(self) -> Ref:
        """The speaking user, as a subject ("Name's Tom" is about the speaker)."""
        return Ref(self.ctx.user, self.cfg.confidence)

    def _named_here(self, pronoun: str) -> str | None:
        """ "His wife is called Nina and she ...": the last person this utterance named, when the
        dialogue state had no antecedent for ``pronoun`` (the NER does not always see a name)."""
        if pronoun not in vocab.PERSON_PRONOUNS:
            return None
        want = "f" if pronoun in vocab.FEMALE_WORDS else "m"
        for t in reversed(self.out):
            if t.relation in vocab.PERSON_VALUED and t.current:
                gender = "f" if t.relation in vocab.FEMALE_WORDS else "m" if t.relation in vocab.MALE_WORDS else None
                if gender in (None, want):
                    return t.object
        return None

    def _possessed(self, tok: Token, owner_tok: Token) -> Ref | None:
        """ "my sister" -> the KB's answer to lookup(user, "sister"), else "alice's sister"."""
        owner = self.np(owner_tok)
        rel = vocab.relation_name(phrase.relation_words(tok))
        if owner is None or owner.common or rel is None:
            return None
        for appos in phrase.children(tok, "appos"):  # "my sister Mary" names her on the way
            if appos.pos_ == "PROPN":
                name = phrase.value_text(appos)
                self.emit(owner, rel, name, negated=False)
                return Ref(name, owner.confidence)
        found = self.ctx.safe_lookup(owner.name, rel)
        if found:
            return Ref(found, min(owner.confidence, self.cfg.resolved_confidence))
        # placeholder named by the canonical relation, so "my mom" and "my mother" agree
        return Ref(f"{owner.name}'s {rel.replace('_', ' ')}", min(owner.confidence, self.cfg.guessed_confidence))

    def _relative_clauses(self, tok: Token, ref: Ref) -> None:
        """ "a sister who lives in Rome": the relative clause is about ``ref``."""
        for rel in phrase.children(tok, "relcl"):
            if any(c.dep_ in ("nsubj", "nsubjpass") and c.lower_ in vocab.RELATIVE_PRONOUNS
                   for c in rel.children):
                self._clause(rel, [ref], retract=False)

    # ------------------------------------------------------------------ clause patterns

    def name_of(self, owner: Ref, noun: str, name: str, negated: bool) -> None:
        """Facts that "``owner``'s ``noun`` is called ``name``" gives (agent.extraction.frames.name_of)."""
        frames.name_of(self, owner, noun, name, negated)

    def name_pronoun(self, pronoun: Token, name: str, negated: bool) -> bool:
        """ "his name is ``name``": name the pet or person just introduced (agent.extraction.frames.name_pronoun)."""
        return frames.name_pronoun(self, pronoun, name, negated)

    def _imperative(self, head: Token) -> None:
        """ "Call me Sam" (no subject): the only imperative that states a fact about the user."""
        if head.lemma_.lower() == "call" and any(c.dep_ == "dobj" and c.lower_ == "me" for c in head.children):
            for name_tok in phrase.children(head, "oprd"):
                self.emit(Ref(self.ctx.user, self.cfg.confidence), "name", phrase.value_text(name_tok), False)

    # ------------------------------------------------------------------ output

    def values(self, ref: Ref, relation: str, tok: Token, neg: bool, retract: bool, whole: bool = False) -> None:
        """Emit (ref, relation, value) for ``tok`` and its conjuncts (agent.extraction.frames.values)."""
        frames.values(self, ref, relation, tok, neg, retract, whole)

    def emit(self, ref: Ref, relation: str, obj: str, negated: bool, confidence: float | None = None) -> None:
        """Append a triple if it is well formed (sizes, relation name, subject != object) and said in a
        stored modality; a plan becomes its plan relation with the plan's time in its sentence."""
        if not self.mod.stored:
            return
        rel = vocab.valid_relation(relation)
        if ref.only is not None and rel not in ref.only:
            return
        if self.mod is Modality.PLAN and rel is not None:
            if negated:
                return
            rel = relations.plan_relation(rel)
        obj = " ".join(obj.split()).strip(" ,;:")
        if rel is None or not obj or not ref.name.strip():
            return
        if len(obj) > self.cfg.max_value_chars or len(ref.name) > self.cfg.max_value_chars:
            return
        if (obj.lower() == ref.name.lower() and rel != "name") or obj.lower() in vocab.NOT_STORED_PERSONS:
            return
        conf = min(self.level, ref.confidence, confidence if confidence is not None else 1.0)
        when = self.when.iso if self.when is not None else None
        text = vocab.sentence(ref.name, rel, obj, negated)
        if self.mod is Modality.PLAN and when:
            text = f"{text[:-1]} ({when})."
        self.out.append(Triple(ref.name, rel, obj, text, negated, conf, modality=self.mod.value, time=when))
