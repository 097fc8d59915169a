"""The answer policy: general questions go to the bare model, questions about the user abstain unless a memory
supports them, and answers about the user's world are cut at their first unsupported claim.

Plain records in and out (``Question``, ``Evidence`` -> ``Plan``; answer text -> grounded text), so that the
turn pipeline (agent/pipeline/stages.py) stays the only place that generates. Words are compared through spaCy
lemmas ("lives" = "live", "studies" = "study") rather than hand-written stemming.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from agent.language import vocab
from agent.answers.grounding import GroundingConfig, claims, unsupported
from agent.answers.phrasing import abstention, second_person
from agent.validation import check, within


class Topic(str, enum.Enum):
    """What a question is about: the user and their world, or general knowledge."""

    USER = "user"
    GENERAL = "general"


class Action(str, enum.Enum):
    """What the agent does with a question."""

    BARE = "bare"  # general knowledge: the bare model, no facts cited or fused
    ABSTAIN = "abstain"  # about the user, no memory supports an answer: a one-sentence template
    ANSWER = "answer"  # about the user, supported: generate from the memories, then ground the answer


@dataclass(frozen=True)
class SupportConfig:
    """How questions are routed and answers grounded."""

    # off: every question is answered from memory as before this policy existed (for comparisons)
    enabled: bool = True
    # cut answers about the user's world at their first unsupported entity, number or date
    cut_unsupported: bool = True
    # fewest words a cut answer keeps; a shorter remainder is replaced by the best memory, rephrased
    min_cut_words: int = within(3, 1, 20)

    def __post_init__(self) -> None:
        check(self)  # every within() field in its range


@dataclass(frozen=True)
class Evidence:
    """A remembered fact as the policy sees it (the assistant's own replies are never evidence)."""

    text: str
    relation: str
    subject: str
    object: str
    score: float = 0.0


@dataclass(frozen=True)
class Question:
    """A question as the policy sees it."""

    text: str  # as the user typed it
    asked: str  # as the model is asked it (third person, names spelled out)
    name: str  # how the user is called in the memories
    first_person: bool  # the dialogue state found the user in it (I, my, me...)
    world_entities: tuple[str, ...] = ()  # entities of the user's world it names (KB-linked, resolved)
    language: str | None = None  # the profile's answer language (None: English)
    # a LoRA adapter trained on the user's facts is on: the weights remember what the KB may not hold
    # (kgrow learn), so memory's silence is no reason to abstain and the answer is not cut
    weights_remember: bool = False


@dataclass(frozen=True)
class Plan:
    """The decision for one question."""

    topic: Topic
    action: Action
    text: str = ""  # the abstention, for ABSTAIN
    support: tuple[str, ...] = ()  # texts an answer may draw its claims from (memories, question, name)
    fallback: str = ""  # the best supporting memory in the second person ("You live in Lisbon.")
    uncovered: tuple[str, ...] = field(default=(), compare=False)  # question words no memory covers
    # a name question ("what is my dog called?"): the names the memories give; an answer naming none
    # of them is replaced by the fallback ("Sam's dog is a Greyhound." names the breed, not the dog)
    names: tuple[str, ...] = ()
    checked: bool = True  # cut the answer at its first unsupported claim (off when the weights remember)


# Words a question uses for what a relation's words mean (relation parts are matched as they are too).
_SYNONYMS: dict[str, frozenset[str]] = {
    "lives": frozenset({"live", "home", "reside", "city", "town", "country", "move", "stay"}),
    "works": frozenset({"work", "job", "employer", "company", "office", "employ"}),
    "occupation": frozenset({"job", "living", "profession", "occupation", "do"}),
    "born": frozenset({"born", "birth", "birthday", "birthplace", "city", "town", "country", "place"}),
    "studies": frozenset({"study", "university", "school", "college", "student", "go"}),
    "speaks": frozenset({"speak", "language"}),
    "likes": frozenset({"like", "love", "enjoy", "fan", "music", "hobby"}),
    "dislikes": frozenset({"dislike", "hate", "avoid", "stand"}),
    "name": frozenset({"name", "call", "called"}),
    "age": frozenset({"old", "age", "year"}),
    "owns": frozenset({"own", "drive", "car", "have"}),
    "favorite": frozenset({"favorite", "favourite", "love", "like", "most", "best", "prefer"}),
    "pet": frozenset({"pet", "animal"}),
    "married": frozenset({"married", "marry", "husband", "wife", "spouse", "partner"}),
    "spouse": frozenset({"married", "marry", "husband", "wife", "spouse", "partner"}),
    "husband": frozenset({"married", "marry", "husband", "spouse"}),
    "wife": frozenset({"married", "marry", "wife", "spouse"}),
    "partner": frozenset({"partner", "boyfriend", "girlfriend"}),
    "mother": frozenset({"mother", "mom", "mum", "parent"}),
    "father": frozenset({"father", "dad", "parent"}),
    "sister": frozenset({"sister", "sibling"}),
    "brother": frozenset({"brother", "sibling"}),
    "son": frozenset({"son", "child", "kid"}),
    "daughter": frozenset({"daughter", "child", "kid"}),
    "friend": frozenset({"friend"}),
    "comes": frozenset({"from", "hometown", "grow"}),
}
#: question words that carry no topic of their own
_GENERIC = frozenset({"do", "be", "have", "get", "tell", "know", "remember", "say", "thing", "anything",
                      "something", "now", "currently", "again", "exactly", "really", "actually", "any", "kind",
                      "type", "sort", "thanks", "thank", "ok", "okay", "please", "hey", "hi", "hello", "well",
                      "oh", "so", "also", "then", "again", "just", "maybe"})
#: a memory naming one of these covers the general word ("a rescue greyhound" covers "dog")
_HYPERNYMS: dict[str, frozenset[str]] = {
    "dog": frozenset({"puppy", "pup", "greyhound", "labrador", "poodle", "terrier", "retriever", "spaniel", "beagle",
                      "bulldog", "husky", "collie", "dachshund", "shepherd", "corgi", "pug", "boxer", "whippet"}),
    "cat": frozenset({"kitten", "kitty", "tabby", "siamese", "persian"}),
    "pet": frozenset({"dog", "cat", "puppy", "kitten", "hamster", "parrot", "rabbit", "fish", "bird"}),
}
#: relations whose object is someone's (or a pet's) name: they answer "what is my sister's name?"
_NAMED_OBJECT = frozenset({"sister", "brother", "mother", "father", "husband", "wife", "spouse", "friend", "son",
                           "daughter", "partner", "boss", "manager", "married", "child", "parent", "pet"})
#: a question about the user: a first-person word (language.vocab's lexicon), "me" only when it is not the
#: object of a request ("tell me a joke" asks nothing about the user)
FIRST_PERSON = re.compile(r"(?i)(?<![\w'])(?:" + "|".join(re.escape(w) for w in sorted(vocab.FIRST_PERSON - {"me"}))
                          + r")(?![\w'])|(?<!tell )(?<!show )(?<!give )(?<!remind )(?<!let )\bme\b")
_WH_TYPE = {"when": "date", "where": "place", "who": "person", "whom": "person"}
_HOW_TYPE = {"old": "number", "many": "number", "much": "number", "long": "number"}
_DATE_WORDS = re.compile(r"(?i)\b(?:\d{1,4}|january|february|march|april|may|june|july|august|september|"
                         r"october|november|december|birthday)\b")
_PLACE_RELATION = re.compile(r"(?:_in|_at|_from|^from|lives|works|born|studies)")


def topic(question: Question) -> Topic:
    """USER when the question names the user (first person) or an entity of their world, else GENERAL."""
    if question.first_person or question.world_entities or FIRST_PERSON.search(question.text):
        return Topic.USER
    return Topic.GENERAL


def plan(question: Question, memories: Sequence[Evidence], nlp, config: SupportConfig | None = None,
         doc=None) -> Plan:
    """Route ``question``: BARE for general knowledge, ABSTAIN when no memory covers what it asks, else ANSWER.

    Support is judged on what the memories say, not on their number: recall returns memories for any
    question, so the question's topic words (nouns, verbs and names, lemmatised; "Where do I work?" ->
    work) must each be covered by a memory (its words, or its relation's meaning: works_at covers
    "job"), and a memory covering them must be of the kind the wh-word asks for (a date for "when",
    a place for "where", a person for "who"). ``doc`` is the question's parse when the caller has it
    (the turn's one parse); else it is parsed here.
    """
    cfg = config or SupportConfig()
    support = tuple(m.text for m in memories) + (question.text, question.asked, question.name)
    if not cfg.enabled:
        return Plan(Topic.USER, Action.ANSWER, support=support)
    if topic(question) is Topic.GENERAL:
        return Plan(Topic.GENERAL, Action.BARE)
    if question.weights_remember:
        return Plan(Topic.USER, Action.ANSWER, support=support, checked=False)
    if doc is None or doc.text != question.text:
        doc = nlp(question.text)
    required, optional, wh = _topic_words(doc, question.name)
    _prepare(memories, nlp)
    covers = [_covered(m, nlp) for m in memories]
    words = required or optional
    uncovered = tuple(w for w in words if not any(w in c for c in covers))
    if required:
        ok = not uncovered
    else:
        ok = bool(words) and len(uncovered) < len(words) or (not words and bool(memories))
    topical = required | optional
    answering = [m for m, c in zip(memories, covers) if topical & c or not topical]
    if ok and wh is not None:
        answering = [m for m in answering if _answers(m, wh)]
        ok = bool(answering)
    if not ok:
        return Plan(Topic.USER, Action.ABSTAIN, abstention(question.text, question.language), support,
                    uncovered=uncovered)
    fallback, names = _fallback(question.text, question.name, answering, words, nlp)
    return Plan(Topic.USER, Action.ANSWER, support=support, fallback=fallback, names=names)


def _fallback(question: str, name: str, answering: Sequence[Evidence], words: frozenset[str],
              nlp) -> tuple[str, tuple[str, ...]]:
    """(the memory covering most of the question's ``words`` in the second person, the names a name
    question's memories state); for a name question the fallback is a memory that says the name."""
    # the user's own name ("Sam's name is Sam.") is in any third-person answer, so it shows nothing
    own = {w.casefold() for w in re.findall(r"\w+", name)}
    names = tuple(n for n in _asked_names(question, answering) if n.casefold() not in own)
    if names:
        answering = [m for m in answering if any(n in m.text for n in names)] or answering
    best = max(answering, key=lambda m: (len(words & _covered(m, nlp)), m.score), default=None)
    return (second_person(best.text, name) if best else ""), names


def ground(answer: str, p: Plan, nlp, config: SupportConfig | None = None,
           grounding: GroundingConfig | None = None) -> str:
    """``answer`` cut before its first unsupported claim (at a clause boundary), or the plan's fallback
    memory when too little would be left; unchanged when every claim is supported or for BARE plans."""
    cfg = config or SupportConfig()
    if p.action is not Action.ANSWER or not p.checked or not cfg.cut_unsupported or not answer.strip():
        return answer
    found = claims(answer, p.support, nlp, grounding)
    bad = [c for c in found if not c.supported]
    if p.names and p.fallback and not any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", answer) for n in p.names):
        return p.fallback
    if not bad:
        return answer
    first = bad[0].first_missing
    after = max((c.end for c in found if c.supported and c.end <= first), default=0)
    cut = cut_before(answer, first, after)
    if len(cut.split()) >= cfg.min_cut_words and not unsupported(cut, p.support, nlp, grounding):
        return cut
    return p.fallback or cut or answer


_NAME_QUESTION = re.compile(r"(?i)\b(?:name|called|named|call)\b")
_NAME_VALUE = re.compile(r"(?:name is|named|called)\s+([A-Z][\w'-]+)")


def _asked_names(question: str, memories: Sequence[Evidence]) -> tuple[str, ...]:
    """For a question asking a name, the names the memories state ("his name is Biscuit" -> Biscuit)."""
    if not _NAME_QUESTION.search(question):
        return ()
    return tuple(dict.fromkeys(n for m in memories for n in _NAME_VALUE.findall(m.text)))


def answer_plan(facts: Sequence, asked: str, name: str, nlp=None) -> Plan:
    """An ANSWER plan for candidates of an answer (feedback regenerations): their claims may come from
    the cited ``facts`` (kb Facts or Evidence, best first), the question as ``asked`` and the user's
    ``name``. With ``nlp`` a candidate is grounded as a chat answer is: one with nothing to keep before
    its first unsupported claim, or a name question's candidate naming none of the names the facts
    state, becomes the fact covering the question best, in the second person; without ``nlp`` such a
    candidate stays as it is."""
    ev = [f if isinstance(f, Evidence) else Evidence(f, "", "", "", -i) if isinstance(f, str)
          else Evidence(f.text, f.relation, f.subject, f.object, -i) for i, f in enumerate(facts)]
    support = tuple(m.text for m in ev) + (asked, name)
    if nlp is None or not ev:
        return Plan(Topic.USER, Action.ANSWER, support=support)
    required, optional, _ = _topic_words(nlp(asked), name)
    topical = required | optional
    answering = [m for m in ev if topical & _covered(m, nlp)] or ev
    words = required or optional
    fallback, names = _fallback(asked, name, answering, words, nlp)
    return Plan(Topic.USER, Action.ANSWER, support=support, fallback=fallback, names=names)


def ground_candidates(candidates: Sequence, p: Plan, nlp, config: SupportConfig | None = None) -> list:
    """Candidate answers (with ``text`` and ``logprob`` fields) grounded for the re-ranker, so that it
    chooses among grounded answers only: each is cut at its first unsupported claim as ``ground`` cuts a
    chat answer, or becomes the plan's fallback memory. Re-ranking by support: the fallback is what
    memory says, the best-supported answer there is, so it gets the batch's highest log-prob and the
    re-ranker's similarity terms decide between it and the model's grounded answers (with the lowest,
    a one-word non-answer such as "I" won fb-04 of examples/feedback)."""
    best = max((c.logprob for c in candidates), default=0.0)
    out = []
    for c in candidates:
        text = ground(c.text, p, nlp, config)
        fell_back = bool(p.fallback) and text == p.fallback and c.text != p.fallback
        out.append(replace(c, text=text, logprob=best) if fell_back else replace(c, text=text))
    return out


_BOUNDARY = re.compile(r"[.!?](?=\s)|[,;:(]|\s-\s|\s(?:and|but|which|who|that|where|because|so|or|based)\s")


def cut_before(answer: str, position: int, after: int = 0) -> str:
    """``answer`` up to the first clause boundary past ``after`` (the end of the last supported claim) and
    before ``position`` (the first unsupported one), ended with a full stop; "" when there is none:
    "Fay's sister is Anna, a famous actress who has been performing for over 20 years." -> "Fay's sister
    is Anna." (the description between the name and the invented number goes too)."""
    ends = [m.start() for m in _BOUNDARY.finditer(answer) if after <= m.start() < position]
    if not ends:
        return ""
    head = answer[: ends[0]].rstrip(" ,;:-(")
    return head + "." if head and head[-1] not in ".!?" else head


def _topic_words(doc, name: str) -> tuple[frozenset[str], frozenset[str], str | None]:
    """(required: nouns, verbs and names; optional: adjectives, adverbs, numbers; the wh-word's answer type)."""
    required, optional = set(), set()
    names = {w.casefold() for w in re.findall(r"\w+", name)}
    wh = None
    for t in doc:
        low = t.lower_
        if wh is None and low in _WH_TYPE and t.i <= 1:
            wh = _WH_TYPE[low]
        if low == "how" and t.i <= 1 and t.i + 1 < len(doc):
            wh = _HOW_TYPE.get(doc[t.i + 1].lower_, wh)
        lemma = t.lemma_.casefold()
        if t.pos_ == "INTJ" or t.is_stop and lemma not in ("name", "call", "live", "work", "move", "do") or t.is_punct:
            continue
        if lemma in _GENERIC or low in names or t.pos_ in ("PRON", "AUX", "DET", "ADP", "PART", "CCONJ"):
            continue
        answer_type = any(c.dep_ == "det" and c.lower_ in ("what", "which") for c in t.children)
        if t.pos_ in ("NOUN", "VERB", "PROPN") and not answer_type:  # "what food": food is the answer's type
            required.add(lemma)
        elif t.pos_ in ("ADJ", "ADV", "NUM"):
            optional.add(lemma)
    return frozenset(required), frozenset(optional), wh


_COVER_CACHE: dict[tuple[str, str], frozenset[str]] = {}


#: pipes coverage does not need: lemmas come from the tagger and the attribute ruler alone, and
#: skipping the parser and NER makes a memory's parse ~2.5x cheaper (the first time it is seen)
_LEMMA_SKIPS = ("parser", "ner")


def _prepare(memories: Sequence[Evidence], nlp) -> None:
    """Cover the memories not yet covered in one batched, lemmas-only pass (a question's memories are
    mostly new texts: one pipe call instead of a full parse each)."""
    todo = list(dict.fromkeys(m.text for m in memories if (m.text, m.relation) not in _COVER_CACHE))
    if len(todo) < 2 or not hasattr(nlp, "pipe"):
        return
    skip = [n for n in _LEMMA_SKIPS if n in getattr(nlp, "pipe_names", ())]
    docs = dict(zip(todo, nlp.pipe(todo, disable=skip)))
    for m in memories:
        if m.text in docs:
            _covered(m, nlp, docs[m.text])


def _covered(m: Evidence, nlp, doc=None) -> frozenset[str]:
    """The question words ``m`` covers: its own words and lemmas, and what its relation means."""
    k = (m.text, m.relation)
    if k not in _COVER_CACHE:
        doc = doc if doc is not None else nlp(m.text)
        words = {t.lemma_.casefold() for t in doc} | {w.casefold() for w in re.findall(r"\w+", m.text)}
        for part in m.relation.casefold().split("_"):
            words.add(part)
            words |= _SYNONYMS.get(part, frozenset())
            if part in _NAMED_OBJECT:
                words |= {"name", "call", "called"}
        words |= {general for general, kinds in _HYPERNYMS.items() if kinds & words}
        if words & {"name", "named", "call", "called"}:
            words |= {"name", "call", "called"}
        if len(_COVER_CACHE) > 4096:
            _COVER_CACHE.clear()
        _COVER_CACHE[k] = frozenset(words)
    return _COVER_CACHE[k]


def _answers(m: Evidence, wh: str) -> bool:
    """Whether ``m`` can answer a when/where/who question at all (a date, a place, a person)."""
    if wh == "date":
        return bool(_DATE_WORDS.search(m.text)) or m.relation.endswith(("_on", "birthday", "date"))
    if wh == "number":
        return bool(re.search(r"\d", m.text)) or m.relation in ("age",) or bool(
            re.search(r"(?i)\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twenty|thirty|forty|fifty)\b", m.text))
    if wh == "place":
        return bool(_PLACE_RELATION.search(m.relation)) or bool(re.search(r"(?i)\b(?:in|at|from)\b", m.text))
    return m.relation in _SYNONYMS or m.relation in ("name", "married_to") or m.object[:1].isupper()
