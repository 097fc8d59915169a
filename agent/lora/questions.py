"""Question/answer pairs from a user's facts: the training data and the closed-book test of `kgrow learn`.

Shape: one fact -> up to ``phrasings`` pairs. Each question names the subject in the third person
("Where does Sam live?"), which is the form the agent sends the model: it rewrites "Where do I
live?" with ``agent.prompt.third_person`` before generating. The answer is one short sentence that
contains the fact's object ("Sam lives in Lisbon."), worded like the agent's acknowledgements.
The first phrasing of each fact is the closed-book test question.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from agent.language.vocab import PERSON_VALUED, display, sentence
from kb.facts import Fact, normalize_name

# Question templates per relation, most natural first ("{s}" the subject, "{p}" its possessive).
# Relations missing here fall back to _NOUN_QUESTIONS, which fit noun relations (sister, email...).
_QUESTIONS: dict[str, tuple[str, ...]] = {
    "lives_in": ("Where does {s} live?", "In which city does {s} live?", "Where is {p} home?"),
    "lives_near": ("What does {s} live near?", "Near what does {s} live?", "Where does {s} live?"),
    "works_at": ("Where does {s} work?", "Which company does {s} work for?", "Who is {p} employer?"),
    "works_in": ("Where does {s} work?", "In what does {s} work?", "What is {p} line of work?"),
    "born_in": ("Where was {s} born?", "In which city was {s} born?", "What is {p} birthplace?"),
    "born_on": ("When was {s} born?", "What is {p} date of birth?", "When is {p} birthday?"),
    "birthday": ("When is {p} birthday?", "When was {s} born?", "What is {p} date of birth?"),
    "age": ("How old is {s}?", "What is {p} age?", "What age is {s}?"),
    "occupation": ("What does {s} do for a living?", "What is {p} job?", "What is {p} occupation?"),
    "job_title": ("What is {p} job title?", "What is {p} job?", "What does {s} do for a living?"),
    "studies_at": ("Where does {s} study?", "Which school does {s} attend?", "Where is {s} a student?"),
    "studies": ("What does {s} study?", "What is {s} studying?", "What subject does {s} study?"),
    "likes": ("What does {s} like?", "What does {s} enjoy?", "What is something {s} likes?"),
    "dislikes": ("What does {s} dislike?", "What does {s} not like?", "What does {s} hate?"),
    "prefers": ("What does {s} prefer?", "What is {p} preference?", "Which does {s} prefer?"),
    "speaks": ("What language does {s} speak?", "Which language does {s} speak?",
               "What languages can {s} speak?"),
    "native_language": ("What is {p} native language?", "What is {p} mother tongue?",
                        "Which language did {s} grow up speaking?"),
    "has_pet": ("What pet does {s} have?", "What kind of pet does {s} have?", "What animal does {s} keep?"),
    "pet_name": ("What is the name of {p} pet?", "What is {p} pet called?", "What is {p} pet's name?"),
    "is_a": ("What is {s}?", "What kind of thing is {s}?", "What sort of thing is {s}?"),
    "owns": ("What does {s} own?", "What does {s} have?", "What is something {s} owns?"),
    "drives": ("What does {s} drive?", "What car does {s} drive?", "What vehicle does {s} drive?"),
    "plays": ("What does {s} play?", "What game or instrument does {s} play?", "What is {s} playing?"),
    "teaches": ("What does {s} teach?", "What subject does {s} teach?", "What is {s} teaching?"),
    "learning": ("What is {s} learning?", "What does {s} study these days?", "What is {s} trying to learn?"),
    "married_to": ("Who is {s} married to?", "Who is {p} spouse?", "Whom did {s} marry?"),
    "engaged_to": ("Who is {s} engaged to?", "Who is {p} fiance?", "To whom is {s} engaged?"),
    "comes_from": ("Where does {s} come from?", "Where is {s} from?", "What is {p} home country?"),
    "home_town": ("What is {p} home town?", "Where is {s} from?", "Where does {s} come from?"),
    "grew_up_in": ("Where did {s} grow up?", "Where was {s} raised?", "In which place did {s} grow up?"),
    "allergic_to": ("What is {s} allergic to?", "What allergy does {s} have?", "Which allergy does {s} have?"),
    "interested_in": ("What is {s} interested in?", "What interests {s}?", "What is {p} interest?"),
    "good_at": ("What is {s} good at?", "What is {p} strength?", "What is {s} skilled at?"),
    "afraid_of": ("What is {s} afraid of?", "What scares {s}?", "What is {p} fear?"),
    "marital_status": ("What is {p} marital status?", "Is {s} married?", "Is {s} single or married?"),
    "diet": ("What diet does {s} follow?", "What is {p} diet?", "What does {s} eat?"),
    "employment_status": ("What is {p} employment status?", "Does {s} work?", "Is {s} employed?"),
    "nationality": ("What is {p} nationality?", "What nationality is {s}?", "Which country is {s} a citizen of?"),
    "email": ("What is {p} email address?", "What is {p} email?", "How can I email {s}?"),
    "phone": ("What is {p} phone number?", "What is {p} number?", "How can I call {s}?"),
}
#: questions about a person-valued relation ("sister" -> "Who is Sam's sister?")
_PERSON_QUESTIONS = ("Who is {p} {r}?", "What is the name of {p} {r}?", "What is {p} {r} called?")
#: questions about any other noun relation ("favorite_color" -> "What is Sam's favorite color?")
_NOUN_QUESTIONS = ("What is {p} {r}?", "Tell me {p} {r}.", "Do you know {p} {r}?")
#: most phrasings a fact can have (the length of every template tuple)
MAX_PHRASINGS = 3


@dataclass(frozen=True)
class QAPair:
    """One training pair: a question about one fact and the answer sentence that holds its object."""

    fact_id: str
    question: str  # third person, the form the agent sends ("Where does Sam live?")
    answer: str  # one short sentence containing ``expected``
    expected: str  # the fact's object as written in the answer; closed-book answers must contain it
    primary: bool  # the first phrasing of its fact: the closed-book test question


def possessive(name: str) -> str:
    return name + ("'" if name.endswith("s") else "'s")


def questions_for(relation: str, subject: str) -> tuple[str, ...]:
    """The phrasings of a question about ``relation`` of ``subject`` (already display-cased)."""
    words = relation.replace("_", " ")
    if relation in _QUESTIONS:
        templates = _QUESTIONS[relation]
    elif relation in PERSON_VALUED:
        templates = _PERSON_QUESTIONS
    else:
        templates = _NOUN_QUESTIONS
    return tuple(t.format(s=subject, p=possessive(subject), r=words) for t in templates)


def surface(value: str, text: str) -> str:
    """``value`` spelled as in ``text`` when it occurs there ("lisbon" in "Me lives in Lisbon." ->
    "Lisbon"), else display-cased: facts store normalised names, answers should read naturally."""
    m = re.search(re.escape(value), text, flags=re.IGNORECASE)
    return m.group(0) if m else display(value)


def contains(answer: str, expected: str) -> bool:
    """Whether ``answer`` states ``expected``: normalised (case, spacing, edge punctuation), on
    word boundaries, so "Rome" is not found in "Romeo"."""
    a, e = normalize_name(answer), normalize_name(expected)
    return bool(e) and re.search(rf"(?<!\w){re.escape(e)}(?!\w)", a) is not None


def qa_pairs(facts: Sequence[Fact], user: str, name: str, phrasings: int) -> list[QAPair]:
    """Pairs for ``facts`` of ``user``: the user is called ``name`` (as the agent calls them in prompts).

    Facts whose object is their own subject ("Sam's name is Sam") are skipped: the question would
    give the answer away.
    """
    return _pairs(facts, user, name, 0, phrasings)


def held_out_pairs(facts: Sequence[Fact], user: str, name: str, phrasings: int) -> list[QAPair]:
    """One pair per fact in the first phrasing ``qa_pairs(..., phrasings)`` does not train on (none
    when every phrasing is trained): whether the adapter answers questions worded differently."""
    return _pairs(facts, user, name, phrasings, phrasings + 1)


def _pairs(facts: Sequence[Fact], user: str, name: str, start: int, stop: int) -> list[QAPair]:
    me = normalize_name(user)
    out: list[QAPair] = []
    for f in facts:
        subject = name if normalize_name(f.subject) == me else surface(f.subject, f.text)
        obj = name if normalize_name(f.object) == me else surface(f.object, f.text)
        if normalize_name(obj) == normalize_name(subject):
            continue
        answer = sentence(subject, f.relation, obj)
        for i, q in enumerate(questions_for(f.relation, subject)[start:stop], start):
            out.append(QAPair(f.id, q, answer, obj, primary=i == 0))
    return out
