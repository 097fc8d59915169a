"""Answers to questions about plans ("Where is she moving?"), phrased from the stored plan fact.

Why a template: the fusion adapter was trained on current-fact relations only; given a plan fact it
garbled the answer ("Den?||"), and the text path of the 135M model mixed the plan into the current
fact ("Emma lives in Denver next month."). A plan fact already carries its sentence and date
("Emma plans to move to Denver (2026-12)."), so the agent answers with it, as it acknowledges
facts, without asking the model. Which plan a question asks for comes from the extractor's own
machinery (agent.language.modality.asked_plan_relations: the verb's modality and relation frames).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from agent.language import vocab
from agent.language.modality import asked_plan_relations
from agent.answers.phrasing import second_person
from kb.facts import normalize_name

if TYPE_CHECKING:
    from spacy.tokens import Doc

    from kb.facts import Fact


def asked_subjects(doc: Doc, user: str, references: Mapping[str, str]) -> set[str]:
    """The entities (normalised) the question's clauses are about: "I" is the user, a pronoun or
    phrase is what the dialogue state resolved it to, a name is itself; "you" is nobody here."""
    out: set[str] = set()
    refs = {" ".join(k.lower().split()): v for k, v in references.items()}
    for tok in doc:
        if tok.dep_ not in ("nsubj", "nsubjpass"):
            continue
        low = tok.lower_
        if low in vocab.FIRST_PERSON:
            out.add(normalize_name(user))
        elif low in refs:
            out.add(normalize_name(refs[low]))
        elif tok.pos_ == "PROPN":
            out.add(normalize_name(" ".join(t.text for t in tok.subtree if t.pos_ == "PROPN")))
    return out


def plan_answer(doc: Doc, facts: Sequence[Fact], user: str, references: Mapping[str, str],
                name: str) -> str | None:
    """The answer to ``doc`` (a question) from the first of ``facts`` that states the plan it asks
    about, for the entity it asks about; None when it asks no plan or none of ``facts`` answers it."""
    wanted = asked_plan_relations(doc)
    if not wanted:
        return None
    subjects = asked_subjects(doc, user, references)
    me = normalize_name(user)
    for f in facts:
        if f.relation in wanted and normalize_name(f.subject) in subjects:
            text = f.text or vocab.sentence(f.subject, f.relation, f.object, False)
            return second_person(text, name) if normalize_name(f.subject) == me else text
    return None
