"""The relation vocabulary: which words name which relations, and how a triple reads as a sentence."""
from __future__ import annotations

import re

from agent.language import relations
from kb.facts import normalize_relation

#: first-person words (whole tokens, or a surface as said); all of them resolve to the speaking user.
#: The one first-person lexicon: extraction, mentions, modality, the answer policy and the prompt read it.
FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "i'm", "im", "i've", "i'd", "i'll"})
#: second-person and first-person-plural words: facts about "you" or "we" are never stored
NOT_STORED_PERSONS = frozenset({"you", "your", "yours", "yourself", "u", "ya", "we", "us", "our",
                                "ours", "ourselves", "y'all"})
#: third-person pronouns that refer to a person
PERSON_PRONOUNS = frozenset({"he", "him", "his", "himself", "she", "her", "hers", "herself"})
#: pronouns that refer to a thing
THING_PRONOUNS = frozenset({"it", "its", "itself"})
#: pronouns that refer to anyone (singular they included)
ANY_PRONOUNS = frozenset({"they", "them", "their", "theirs", "themselves"})
#: relative pronouns whose antecedent is the noun the clause hangs off
RELATIVE_PRONOUNS = frozenset({"who", "that", "which", "whom"})

# Nouns that name a person related to the owner; "my X" with X here is a person (kin, partners,
# colleagues). Values are the relation stored: synonyms collapse onto one name.
PERSON_RELATIONS: dict[str, str] = {
    "sister": "sister", "brother": "brother", "mother": "mother", "mom": "mother", "mum": "mother",
    "mommy": "mother", "mummy": "mother", "father": "father", "dad": "father", "daddy": "father",
    "husband": "husband", "wife": "wife", "spouse": "spouse", "partner": "partner",
    "boyfriend": "boyfriend", "girlfriend": "girlfriend", "fiance": "fiance", "fiancé": "fiance",
    "fiancee": "fiance", "fiancée": "fiance", "friend": "friend", "son": "son",
    "daughter": "daughter", "child": "child", "kid": "child", "baby": "child", "parent": "parent",
    "sibling": "sibling", "cousin": "cousin", "aunt": "aunt", "uncle": "uncle", "niece": "niece",
    "nephew": "nephew", "grandmother": "grandmother", "grandma": "grandmother",
    "granny": "grandmother", "grandfather": "grandfather", "grandpa": "grandfather",
    "grandson": "grandson", "granddaughter": "granddaughter", "boss": "boss", "manager": "manager",
    "colleague": "colleague", "coworker": "colleague", "roommate": "roommate",
    "flatmate": "roommate", "neighbor": "neighbor", "neighbour": "neighbor", "teacher": "teacher",
    "doctor": "doctor", "dentist": "dentist", "therapist": "therapist", "stepmother": "stepmother",
    "stepfather": "stepfather", "mentor": "mentor", "student": "student", "assistant": "assistant",
}
#: animals kept as pets ("I have a dog named Rex")
PET_NOUNS = frozenset({"dog", "cat", "puppy", "kitten", "hamster", "parrot", "rabbit", "bunny",
                       "fish", "goldfish", "turtle", "tortoise", "horse", "pony", "bird", "snake",
                       "lizard", "ferret", "budgie", "mouse", "rat", "gecko", "pig", "chinchilla",
                       "hedgehog", "canary", "iguana", "guinea", "pup", "kitty", "cockatiel", "parakeet",
                       "tortoise", "axolotl"}) | frozenset(
    # breeds are pets of their kind: "a rescue greyhound", "our new labrador" (ambiguous words such
    # as "boxer", "pointer" or "persian" are left out: "I'm a boxer" is a job)
    {"greyhound", "whippet", "lurcher", "labrador", "lab", "retriever", "terrier", "spaniel", "poodle",
     "beagle", "collie", "sheepdog", "husky", "corgi", "dachshund", "pug", "bulldog", "rottweiler",
     "dalmatian", "doberman", "pomeranian", "chihuahua", "schnauzer", "labradoodle", "cockapoo", "cavapoo",
     "goldendoodle", "staffie", "mutt", "mongrel", "tabby", "moggy", "ragdoll"})
#: things one "has" that mean ownership ("I have a car" -> owns car)
POSSESSION_NOUNS = frozenset({"car", "bike", "bicycle", "motorbike", "motorcycle", "scooter",
                              "house", "apartment", "flat", "condo", "boat", "laptop", "truck",
                              "van", "garden", "piano", "guitar", "cottage", "farm"})
# Nouns that name a job: "I'm a nurse" -> occupation, "Rex is a dog" -> is_a. Compound heads count
# ("software engineer" has head "engineer").
OCCUPATIONS = frozenset(["accountant", "actor", "actress", "administrator", "analyst", "architect", "artist", "assistant", "astronaut", "athlete", "attorney", "author", "baker", "banker", "barber", "barista", "bartender", "biologist", "blogger", "bookkeeper", "builder", "butcher", "carpenter", "cashier", "ceo", "chef", "chemist", "cleaner", "clerk", "coach", "consultant", "cook", "counselor", "counsellor", "dancer", "designer", "detective", "developer", "dentist", "dietitian", "director", "doctor", "driver", "economist", "editor", "electrician", "engineer", "entrepreneur", "farmer", "firefighter", "fisherman", "freelancer", "gardener", "geologist", "guard", "hairdresser", "historian", "illustrator", "instructor", "intern", "investor", "janitor", "journalist", "judge", "labourer", "laborer", "lawyer", "lecturer", "librarian", "lifeguard", "linguist", "machinist", "manager", "mechanic", "midwife", "miner", "model", "musician", "nanny", "nurse", "officer", "optician", "painter", "paramedic", "pharmacist", "photographer", "physician", "physicist", "physiotherapist", "pianist", "pilot", "plumber", "poet", "policeman", "policewoman", "politician", "postman", "producer", "professor", "programmer", "psychiatrist", "psychologist", "receptionist", "reporter", "researcher", "salesman", "saleswoman", "salesperson", "scientist", "secretary", "singer", "soldier", "student", "surgeon", "tailor", "teacher", "technician", "therapist", "translator", "tutor", "veterinarian", "vet", "waiter", "waitress", "welder", "writer", "youtuber", "streamer", "cto", "cfo", "founder", "owner", "mathematician", "statistician", "sysadmin", "tester", "pharmacologist", "dentist", "paralegal", "housekeeper", "caregiver", "carer"])
#: adjective + preposition complements that are worth a relation: "married to" -> married_to
ADJ_PREP_RELATIONS: dict[tuple[str, str], str] = {
    ("married", "to"): "married_to", ("engaged", "to"): "engaged_to",
    ("allergic", "to"): "allergic_to", ("interested", "in"): "interested_in",
    ("good", "at"): "good_at", ("afraid", "of"): "afraid_of", ("scared", "of"): "afraid_of",
    ("related", "to"): "related_to", ("fluent", "in"): "speaks", ("obsessed", "with"): "likes",
    ("crazy", "about"): "likes", ("keen", "on"): "likes", ("passionate", "about"): "likes",
    ("fond", "of"): "likes", ("employed", "by"): "works_at", ("employed", "at"): "works_at",
    ("based", "in"): "lives_in", ("native", "to"): "comes_from",
}
#: bare adjective complements worth storing ("I'm vegan" -> diet vegan); other adjectives are moods
ADJ_RELATIONS: dict[str, str] = {
    "married": "marital_status", "single": "marital_status", "divorced": "marital_status",
    "widowed": "marital_status", "engaged": "marital_status", "vegetarian": "diet",
    "vegan": "diet", "pescatarian": "diet", "retired": "employment_status",
    "unemployed": "employment_status", "pregnant": "pregnant",
}
# Verb lemma -> {preposition or "dobj"/"xcomp"/"agent" -> relation}: the data lives in agent.language.relations.
VERB_RELATIONS = relations.VERB_RELATIONS
#: verbs whose negation flips the preference instead of retracting it ("don't like" -> dislikes)
FLIP_ON_NEGATION: dict[str, str] = {"likes": "dislikes"}
# Verbs whose clausal complement may hold facts: "remember that I live in Oslo". Hedging verbs
# lower the confidence. "say"/"tell"/"mean" count only with a first-person subject ("I said ...").
REPORTING_OK = frozenset({"remember", "note", "know", "notice", "realize", "realise", "mention",
                          "forget", "keep"})
HEDGING = frozenset({"think", "believe", "guess", "suppose", "assume", "reckon"})
SELF_REPORTING = frozenset({"say", "tell", "mean", "mention", "write"})
#: nouns in "my X is Y" that get a canonical relation name
NOUN_RELATIONS: dict[str, str] = {
    "job": "occupation", "profession": "occupation", "occupation": "occupation",
    "hometown": "home_town", "birthplace": "born_in", "e-mail": "email", "mail": "email",
    "surname": "last_name", "nickname": "nickname", "dob": "born_on", "birthdate": "born_on",
    "employer": "works_at", "company": "works_at", "workplace": "works_at", "school": "studies_at",
    "university": "studies_at", "college": "studies_at", "nationality": "nationality",
    "language": "language", "colour": "color", "favourite": "favorite", "neighbour": "neighbor",
    "pet": "has_pet", "home": "lives_in", "house": "lives_in", "flat": "lives_in", "apartment": "lives_in",
}
#: relations "we"/"our" hold for the speaker too: a shared home ("our flat", "home is X for me") and the
#: household's pets ("we got a kitten")
SPEAKER_FOR_RELATIONS = frozenset({"lives_in", "has_pet", "pet_name"})
#: "our flat": a possessor that includes the speaker
FIRST_PERSON_PLURAL = frozenset({"our", "we", "us"})
#: multi-word nouns: "first name" -> name, "email address" -> email
PHRASE_RELATIONS: dict[str, str] = {
    "first name": "name", "given name": "name", "full name": "full_name", "last name": "last_name",
    "family name": "last_name", "email address": "email", "phone number": "phone",
    "home town": "home_town", "date of birth": "born_on", "place of birth": "born_in",
    "mother tongue": "native_language", "native language": "native_language",
    "job title": "job_title",
}
#: words that may start a "favorite" relation
FAVORITE_WORDS = frozenset({"favorite", "favourite", "fave", "fav"})
#: words that show a referent is female or male; "he" never resolves to someone called "she"
FEMALE_WORDS = frozenset({"she", "her", "hers", "herself", "sister", "mother", "mom", "mum", "wife",
                          "daughter", "girlfriend", "aunt", "niece", "grandmother", "grandma",
                          "granddaughter", "stepmother", "fiancee", "fiancée"})
MALE_WORDS = frozenset({"he", "him", "his", "himself", "brother", "father", "dad", "husband", "son",
                        "boyfriend", "uncle", "nephew", "grandfather", "grandpa", "grandson",
                        "stepfather", "fiance", "fiancé"})
#: relations that hold a person (pronoun resolution and sentence wording use it)
PERSON_VALUED = frozenset(PERSON_RELATIONS.values()) | {"married_to", "engaged_to", "partner"}
#: the relation names that ``relation_name`` will never produce: they would steer the assistant
BLOCKED_RELATIONS = frozenset({"ignore", "instruction", "instructions", "system", "prompt",
                               "system_prompt", "command", "say", "role", "rule", "rules", "jailbreak"})

_RELATION_OK = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def relation_name(words: str) -> str | None:
    """Canonical snake_case relation for a noun phrase ("favourite colour" -> favorite_color).

    Returns None for anything that is not a plausible relation name (empty, digits first, longer
    than 64 characters, blocked names like "ignore").
    """
    text = " ".join(words.lower().split())
    if text in PHRASE_RELATIONS:
        return PHRASE_RELATIONS[text]
    parts = [NOUN_RELATIONS.get(w, w) if w not in PERSON_RELATIONS else PERSON_RELATIONS[w]
             for w in text.split()]
    if parts and parts[0] in FAVORITE_WORDS:
        parts[0] = "favorite"
    rel = normalize_relation(" ".join(parts))
    if not _RELATION_OK.match(rel) or rel in BLOCKED_RELATIONS:
        return None
    return rel


def valid_relation(relation: str) -> str | None:
    """``relation`` normalised to snake_case if it is a storable relation name, else None."""
    rel = normalize_relation(relation) if isinstance(relation, str) else ""
    if not _RELATION_OK.match(rel) or rel in BLOCKED_RELATIONS:
        return None
    return rel


def polarity(relation: str, neg: bool, retract: bool) -> tuple[str, bool]:
    """(relation, negated) for a clause: retraction keeps the relation, plain "not" may flip it."""
    if retract:
        return relation, True
    if neg:
        flipped = FLIP_ON_NEGATION.get(relation)
        return (flipped, False) if flipped else (relation, True)
    return relation, False


# --------------------------------------------------------------------------- sentences

# "{s}" subject, "{o}" object, "{a}" the article for the object. Relations missing here read as
# "{s}'s <relation words> is {o}." which fits nouns: sister, favorite_color, email...
_TEMPLATES: dict[str, str] = {
    "lives_in": "{s} lives in {o}.", "lives_near": "{s} lives near {o}.",
    "works_at": "{s} works at {o}.", "works_in": "{s} works in {o}.",
    "age": "{s} is {o} years old.", "born_on": "{s} was born on {o}.",
    "born_in": "{s} was born in {o}.", "likes": "{s} likes {o}.", "dislikes": "{s} dislikes {o}.",
    "prefers": "{s} prefers {o}.", "occupation": "{s} is {a} {o}.", "is_a": "{s} is {a} {o}.",
    "has_pet": "{s} has {a} {o}.", "pet_name": "{s} has a pet named {o}.",
    "speaks": "{s} speaks {o}.", "studies_at": "{s} studies at {o}.", "studies": "{s} studies {o}.",
    "owns": "{s} owns {a} {o}.", "married_to": "{s} is married to {o}.",
    "engaged_to": "{s} is engaged to {o}.", "comes_from": "{s} comes from {o}.",
    "grew_up_in": "{s} grew up in {o}.", "plays": "{s} plays {o}.", "teaches": "{s} teaches {o}.",
    "learning": "{s} is learning {o}.", "drives": "{s} drives {a} {o}.",
    "allergic_to": "{s} is allergic to {o}.", "interested_in": "{s} is interested in {o}.",
    "good_at": "{s} is good at {o}.", "afraid_of": "{s} is afraid of {o}.",
    "related_to": "{s} is related to {o}.", "marital_status": "{s} is {o}.", "diet": "{s} is {o}.",
    "employment_status": "{s} is {o}.", "capital": "The capital of {s} is {o}.",
    "answer_style": "{s} prefers {o} answers.", "plans_to_move_to": "{s} plans to move to {o}.",
    "plans_to_work_at": "{s} plans to work at {o}.", "plans_to_study_at": "{s} plans to study at {o}.",
    "plans_to_marry": "{s} plans to marry {o}.", "plans_to_learn": "{s} plans to learn {o}.",
    "plans_to_study": "{s} plans to study {o}.", "plans_to_become": "{s} plans to become {a} {o}.",
    "nationality": "{s} is {o}.",
    "preferred_language": "{s} prefers to be answered in {o}.",
}


def display(name: str) -> str:
    """A name as it starts a sentence: an all-lower-case id gets a capital ("alice" -> "Alice")."""
    return name[:1].upper() + name[1:] if name[:1].islower() else name


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def sentence(subject: str, relation: str, obj: str, negated: bool = False) -> str:
    """A short self-contained sentence for a triple: ("alice", "lives_in", "Paris") -> "Alice lives in Paris."."""
    s = display(subject)
    template = _TEMPLATES.get(relation, "{s}'s " + relation.replace("_", " ") + " is {o}.")
    if relation in ("occupation", "is_a", "has_pet", "owns", "drives") and (
        obj[:1].isupper() or obj.endswith("s")
    ):
        template = template.replace("{a} ", "")  # "Alice owns Tesla."-style names and plurals
    text = template.format(s=s, o=obj, a=article(obj))
    if negated:  # one wording for both "no longer true" (retraction) and "not true"
        return "It is not the case that " + (text if text.startswith(s) else text[:1].lower() + text[1:])
    return text


#: relations about the user kept as profile slots (single values; "favorite_*" counts too)
PROFILE_SLOTS = frozenset({
    "name", "nickname", "full_name", "last_name", "age", "lives_in", "home_town", "comes_from",
    "works_at", "occupation", "job_title", "born_on", "born_in", "birthday", "studies_at",
    "married_to", "spouse", "partner", "wife", "husband", "marital_status", "diet", "email",
    "native_language", "preferred_language", "answer_style", "employment_status",
})
