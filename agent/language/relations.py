"""Relation normalisation as data: open predicates (verb + slot) onto canonical relations, plans, typos.

A predicate is a verb lemma and the slot its value fills: a preposition ("live in"), "dobj" (direct
object), "agent" (the by-phrase of a passive: "employed by") or "xcomp" ("like to swim"). FRAMES maps
predicates onto canonical relations, so "based in", "living in", "relocated to", "moved to" all
become ``lives_in`` and single-valued relations supersede correctly. A predicate that maps to
nothing is kept as an open relation (``open_relation``: "runs" for "my uncle runs a pub"); the KB
treats unknown relations as multi-valued, so open relations are searchable and never supersede.
Edit the tables, not the extractor, to teach it a new phrasing.
"""
from __future__ import annotations

# (verb lemma, slot, canonical relation). Passive participles are lemmatised to their verb.
FRAMES: tuple[tuple[str, str, str], ...] = (
    ("live", "in", "lives_in"), ("live", "at", "lives_in"), ("live", "near", "lives_near"),
    ("reside", "in", "lives_in"), ("move", "to", "lives_in"), ("move", "into", "lives_in"),
    ("relocate", "to", "lives_in"), ("base", "in", "lives_in"), ("base", "out", "lives_in"),
    ("settle", "in", "lives_in"), ("emigrate", "to", "lives_in"),
    ("work", "at", "works_at"), ("work", "for", "works_at"), ("work", "in", "works_in"),
    ("work", "as", "occupation"), ("employ", "agent", "works_at"), ("employ", "by", "works_at"),
    ("employ", "at", "works_at"), ("start", "at", "works_at"), ("join", "dobj", "works_at"),
    ("hire", "agent", "works_at"), ("hire", "by", "works_at"), ("go", "to", "studies_at"),
    ("study", "at", "studies_at"), ("study", "dobj", "studies"), ("attend", "dobj", "studies_at"),
    ("enrol", "at", "studies_at"), ("enroll", "at", "studies_at"),
    ("like", "dobj", "likes"), ("like", "xcomp", "likes"), ("love", "dobj", "likes"), ("love", "xcomp", "likes"),
    ("obsess", "with", "likes"), ("enjoy", "dobj", "likes"), ("enjoy", "xcomp", "likes"), ("adore", "dobj", "likes"),
    ("adore", "xcomp", "likes"), ("prefer", "dobj", "prefers"), ("prefer", "xcomp", "prefers"),
    ("hate", "dobj", "dislikes"), ("hate", "xcomp", "dislikes"), ("dislike", "dobj", "dislikes"),
    ("dislike", "xcomp", "dislikes"), ("detest", "dobj", "dislikes"), ("detest", "xcomp", "dislikes"),
    ("loathe", "dobj", "dislikes"), ("loathe", "xcomp", "dislikes"), ("despise", "dobj", "dislikes"),
    ("despise", "xcomp", "dislikes"),
    ("speak", "dobj", "speaks"), ("own", "dobj", "owns"), ("play", "dobj", "plays"),
    ("marry", "dobj", "married_to"), ("marry", "to", "married_to"), ("engage", "to", "engaged_to"), ("date", "dobj", "partner"), ("come", "from", "comes_from"),
    ("hail", "from", "comes_from"), ("teach", "dobj", "teaches"), ("learn", "dobj", "learning"), ("learn", "xcomp", "learning"),
    ("drive", "dobj", "drives"), ("turn", "dobj", "age"), ("grow", "in", "grew_up_in"), ("raise", "in", "grew_up_in"),
    ("bear", "on", "born_on"), ("bear", "in", "born_in"), ("teach", "at", "works_at"), ("lecture", "at", "works_at"),
    ("live", "outside", "lives_near"), ("live", "by", "lives_near"),
)
#: predicates whose value must be a name (a proper noun): "joined Shopify", not "joined a gym"
NEEDS_NAME = frozenset({("join", "dobj"), ("start", "at"), ("go", "to"), ("teach", "at"), ("lecture", "at")})
#: predicates whose value must be a number ("I turned 30", not "I turned the page")
NEEDS_NUMBER = frozenset({("turn", "dobj")})
#: predicates whose named value must also name a school ("goes to Greenfield Primary", not "to Paris")
NEEDS_SCHOOL = frozenset({("go", "to")})
#: copular "be" + preposition -> relation ("I'm from Kenya", "I'm into K-pop", "I'm with Accenture")
COPULA_PREPS: dict[str, str] = {"from": "comes_from", "into": "likes", "with": "works_at", "at": "works_at"}
#: of those, the ones that need a name as their value ("I'm with my kids" is no employer)
COPULA_NEEDS_NAME = frozenset({"with", "at"})
#: nouns that name a workplace without naming the employer: "I'm at a law firm" -> works_at
WORKPLACES = frozenset({"firm", "company", "startup", "bank", "hospital", "agency", "consultancy", "factory",
                        "bakery", "restaurant", "charity", "council", "ministry", "publisher", "studio", "clinic"})
#: words that make a named place a school: "goes to Greenfield Primary" -> studies_at
SCHOOL_WORDS = frozenset({"school", "primary", "high", "academy", "college", "university", "uni", "kindergarten",
                          "nursery", "polytechnic", "institute", "gymnasium", "lycee", "elementary"})
#: nouns that name a job: "a job at Netflix", "quit my job at Amazon" -> works_at
JOB_NOUNS = frozenset({"job", "position", "role", "post", "internship", "placement", "gig"})
#: nouns that name a course of study: "doing a PhD at Oxford" -> studies_at
STUDY_NOUNS = frozenset({"phd", "degree", "masters", "master", "doctorate", "course", "mba", "bachelor",
                         "bachelors", "diploma", "apprenticeship", "uni", "university", "college"})
#: nouns that stand for a home rather than name it: "moved into a place in Dublin" -> Dublin
GENERIC_PLACES = frozenset({"place", "flat", "apartment", "house", "home", "room", "town", "city", "village"})
#: relations whose value is a place: a generic place gives way to the named one ("a town near Lyon")
PLACE_RELATIONS = frozenset({"lives_in", "grew_up_in", "born_in", "comes_from", "lives_near"})
#: verbs that end the job they take as object ("quit my job at Amazon")
JOB_ENDING_VERBS = frozenset({"quit", "leave", "lose"})
#: (verb, object noun) whose "in"/"at" phrase is a relation's value: "made my home in Vancouver"
NOUN_FRAMES: dict[tuple[str, str], str] = {("make", "home"): "lives_in", ("build", "home"): "lives_in",
                                           ("set", "home"): "lives_in"}
#: verbs whose object the subject comes to have: "I adopted a greyhound" is having a pet, like "I got a puppy"
HAVING_VERBS = frozenset({"have", "get", "adopt", "rescue", "buy"})
#: verbs that give a name: "she's called Miso", "he is named Rex" (a naming clause states a fact)
NAMING_VERBS = frozenset({"call", "name"})
#: relations whose verb-phrase value keeps its "to": "learning to play the cello", not "learning play the cello"
INFINITIVE_VALUES = frozenset({"learning"})
#: verbs that end a relation with their object ("I left Microsoft")
ENDING_FRAMES: dict[tuple[str, str], str] = {("leave", "dobj"): "works_at"}
#: a canonical relation said as a plan -> the plan relation stored (never superseding the fact)
PLAN_RELATIONS: dict[str, str] = {
    "lives_in": "plans_to_move_to", "works_at": "plans_to_work_at", "studies_at": "plans_to_study_at",
    "married_to": "plans_to_marry", "learning": "plans_to_learn", "studies": "plans_to_study",
    "occupation": "plans_to_become",
}
#: verbs too light to name an open relation by themselves ("I have...", "I do...", "I make...")
LIGHT_VERBS = frozenset({"be", "have", "do", "get", "make", "take", "go", "come", "let", "give", "put",
                         "say", "tell", "know", "think", "want", "need", "see", "look", "feel", "seem",
                         "try", "use", "keep", "call", "name", "mean", "find", "start", "stop", "become",
                         "ask", "wish", "hope", "plan", "like", "love", "turn", "leave", "guess", "suppose"})
#: a relation noun placed at a name means another relation: "my job is at Barclays" -> works_at
LOCATED_RELATIONS: dict[str, str] = {"occupation": "works_at"}
#: prepositions of company: a frame's place may hang off their object ("live with my wife in Austin")
COMPANION_PREPS = frozenset({"with", "alongside"})
#: prepositions whose object is a circumstance (time, company, manner), not the predicate's value
CIRCUMSTANCE_PREPS = frozenset({"for", "with", "since", "during", "until", "before", "after", "by", "like",
                                "than", "about", "because", "despite", "without", "via", "per"})

VERB_RELATIONS: dict[str, dict[str, str]] = {}
for _verb, _slot, _rel in FRAMES:
    VERB_RELATIONS.setdefault(_verb, {})[_slot] = _rel
#: relations the plan table knows, in reverse: "plans_to_move_to" -> "lives_in"
PLANNED: dict[str, str] = {v: k for k, v in PLAN_RELATIONS.items()}


def plan_relation(relation: str) -> str | None:
    """The plan relation for ``relation`` said as a plan, or None if such plans are not stored."""
    return PLAN_RELATIONS.get(relation)


def frame_verb(lemma: str) -> str | None:
    """``lemma`` if it has frames, else the frame verb it is a one-transposition typo of ("lvie" -> "live")."""
    if lemma in VERB_RELATIONS:
        return lemma
    if len(lemma) < 4:
        return None
    for verb in VERB_RELATIONS:
        if len(verb) == len(lemma) and verb[0] == lemma[0] and sorted(verb) == sorted(lemma):
            diff = [i for i, (a, b) in enumerate(zip(verb, lemma)) if a != b]
            if len(diff) == 2 and diff[1] == diff[0] + 1:
                return verb
    return None


def open_relation(lemma: str, slot: str) -> str | None:
    """The open relation for an unmapped predicate ("run" + dobj -> "runs", "volunteer" + at ->
    "volunteers_at"), or None for light verbs and circumstantial prepositions."""
    if lemma in LIGHT_VERBS or slot in CIRCUMSTANCE_PREPS or not lemma.isalpha():
        return None
    verb = _third_person(lemma)
    return verb if slot == "dobj" else f"{verb}_{slot}"


def _third_person(lemma: str) -> str:
    if lemma.endswith(("s", "sh", "ch", "x", "z", "o")):
        return lemma + "es"
    if lemma.endswith("y") and len(lemma) > 1 and lemma[-2] not in "aeiou":
        return lemma[:-1] + "ies"
    return lemma + "s"
