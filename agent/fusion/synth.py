"""Synthetic knowledge-base QA for training and evaluating knowledge fusion: invented people, 24
relation types, several question phrasings each, the relevant fact hidden among distractors, and
unanswerable questions whose right answer is a refusal.

Splits are disjoint by construction: entity names are built from first/last-name pools split 80/20,
question phrasings are split into training and held-out templates, and every value pool keeps a
fifth of its values out of training (the "unseen values" split).
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass

from agent.choices import Choice
from agent.errors import BadInputError

#: the answer a model must give when the knowledge does not contain the asked fact
REFUSAL = "I don't know."

_CITIES = ("Paris Berlin Madrid Rome Lisbon Vienna Prague Warsaw Oslo Stockholm Helsinki Dublin London Athens "
           "Budapest Zurich Geneva Munich Hamburg Milan Naples Seville Porto Lyon Marseille Toronto Boston "
           "Chicago Denver Seattle Austin Miami Tokyo Osaka Kyoto Seoul Beijing Shanghai Mumbai Delhi Cairo "
           "Nairobi Lagos Sydney Melbourne Auckland Lima Bogota Santiago Havana").split()
_COMPANIES = ("Acme Globex Initech Umbrella Hooli Stark Wayne Cyberdyne Soylent Tyrell Wonka Vandelay Aperture "
              "Monarch Oscorp Gringotts Dunder Pied Massive Nakatomi Virtucon Duff Krusty Bluth Sterling Prestige "
              "Gekko Olivia Zorg Ollivander Hanso Dharma Abstergo Blackmesa Contoso Fabrikam Northwind "
              "Tailspin Wingtip Litware").split()
_JOBS = ("teacher doctor nurse engineer lawyer chef pilot dentist architect baker farmer plumber electrician "
         "journalist photographer designer programmer scientist pharmacist librarian mechanic carpenter "
         "painter musician singer dancer writer translator accountant banker gardener surgeon veterinarian "
         "firefighter detective tailor barber waiter cashier geologist").split()
_FOODS = ("pizza sushi pasta tacos curry ramen paella lasagna burgers dumplings risotto falafel kebab pancakes "
          "waffles salad soup steak lobster oysters noodles burritos croissants bagels chocolate cheesecake "
          "pho goulash moussaka hummus").split()
_COLORS = "red blue green yellow purple orange pink black white grey brown teal maroon turquoise violet".split()
_LANGS = ("French German Spanish Italian Portuguese Dutch Swedish Polish Russian Greek Turkish Arabic Hindi "
          "Japanese Korean Chinese Finnish Czech Hungarian Danish").split()
_SCHOOLS = ("Oxford Cambridge Harvard Stanford Yale Princeton Columbia Cornell Berkeley Caltech Imperial ETH "
            "Sorbonne Bocconi Leiden Uppsala Heidelberg McGill Toronto Melbourne Tsinghua Kyoto Edinburgh "
            "Manchester Bristol").split()
_PETS = "dog cat parrot hamster rabbit turtle goldfish horse snake lizard ferret canary pony iguana".split()
_SPORTS = ("football tennis golf cricket rugby hockey basketball baseball volleyball swimming cycling boxing "
           "skiing surfing rowing climbing fencing archery badminton squash").split()
_BANDS = ("Queen Coldplay Radiohead Metallica Abba Oasis Blur Muse Nirvana Pixies Genesis Kiss Journey "
          "Toto Blondie Eagles Pulp Garbage Placebo Keane").split()
_BOOKS = ("Dune Emma Ulysses Beloved Hamlet Dracula Frankenstein Persuasion Middlemarch Rebecca Lolita "
          "Ivanhoe Walden Kim Heidi Matilda Coraline Watchmen Neuromancer Solaris").split()
_MOVIES = ("Alien Jaws Titanic Rocky Casablanca Vertigo Amadeus Gladiator Inception Memento Heat Fargo Psycho "
           "Up Coco Frozen Arrival Interstellar Avatar Gravity").split()
_INSTRUMENTS = ("piano guitar violin cello drums flute trumpet saxophone clarinet harp banjo ukulele "
                "accordion trombone oboe").split()
_CARS = ("Toyota Honda Ford Tesla Volvo Fiat Renault Peugeot Skoda Audi Mazda Subaru Kia Hyundai Nissan "
         "Jaguar Porsche Ferrari Mini Saab").split()
_DRINKS = "tea coffee lemonade cola milk juice cocoa beer wine whisky cider kombucha smoothies espresso".split()
_MONTHS = ("January February March April May June July August September October November December").split()
_SYL = ("ka lo mi ra ven tor sel an dri mo fen ul cas bri ne hal jo pe tri zan or vi la qui ros dal mer "
        "ny sto gar lin bel").split()


def _numbers(lo: int, hi: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(lo, hi))


@dataclass(frozen=True)
class RelationSpec:
    """One relation: the KB relation name, its values, how it is stated, and how it is asked."""

    name: str  # the relation as the KB stores it (snake_case)
    values: tuple[str, ...]  # every possible value; a fifth is kept out of training
    statement: str  # "{s} lives in {v}." — the fact as text
    train_questions: tuple[str, ...]  # phrasings used in training
    heldout_questions: tuple[str, ...]  # phrasings only used in evaluation


def _rel(name, values, statement, train, heldout) -> RelationSpec:
    return RelationSpec(name, tuple(values), statement, tuple(train), tuple(heldout))


RELATIONS: tuple[RelationSpec, ...] = (
    _rel("lives_in", _CITIES, "{s} lives in {v}.",
         ["Where does {s} live?", "Which city does {s} live in?", "What city is {s} living in?"],
         ["In which town does {s} reside?", "Where is {s}'s home?"]),
    _rel("born_in", _CITIES, "{s} was born in {v}.",
         ["Where was {s} born?", "What is {s}'s birthplace?", "In which city was {s} born?"],
         ["Which city is {s} originally from?", "Where is the birthplace of {s}?"]),
    _rel("works_at", _COMPANIES, "{s} works at {v}.",
         ["Where does {s} work?", "Which company does {s} work for?", "Who employs {s}?"],
         ["What is {s}'s employer?", "At which firm is {s} employed?"]),
    _rel("occupation", _JOBS, "{s} works as a {v}.",
         ["What does {s} do for a living?", "What is {s}'s job?", "What is the occupation of {s}?"],
         ["What is {s}'s profession?", "What line of work is {s} in?"]),
    _rel("favorite_food", _FOODS, "{s}'s favorite food is {v}.",
         ["What is {s}'s favorite food?", "Which food does {s} like best?", "What food does {s} love most?"],
         ["What dish does {s} prefer?", "Name {s}'s favourite meal."]),
    _rel("favorite_color", _COLORS, "{s}'s favorite color is {v}.",
         ["What is {s}'s favorite color?", "Which colour does {s} like best?", "What color does {s} prefer?"],
         ["What is {s}'s favourite colour?", "Which color is {s}'s favorite?"]),
    _rel("speaks", _LANGS, "{s} speaks {v}.",
         ["What language does {s} speak?", "Which language does {s} speak?", "What language can {s} speak?"],
         ["In what language does {s} talk?", "Which tongue does {s} speak?"]),
    _rel("studies_at", _SCHOOLS, "{s} studies at {v}.",
         ["Where does {s} study?", "Which university does {s} attend?", "What school does {s} go to?"],
         ["At which university is {s} a student?", "Where is {s} enrolled?"]),
    _rel("age", _numbers(18, 90), "{s} is {v} years old.",
         ["How old is {s}?", "What is {s}'s age?", "What age is {s}?"],
         ["How many years old is {s}?", "Tell me the age of {s}."]),
    _rel("has_pet", _PETS, "{s} has a {v}.",
         ["What pet does {s} have?", "What kind of pet does {s} own?", "Which animal does {s} keep as a pet?"],
         ["What animal lives with {s}?", "What is {s}'s pet?"]),
    _rel("pet_name", ("Rex Max Bella Luna Milo Coco Daisy Rocky Bailey Lucy Oscar Toby Nala Simba Ziggy Pepper "
                      "Biscuit Mochi Pickles Waffles").split(), "{s}'s pet is called {v}.",
         ["What is the name of {s}'s pet?", "What is {s}'s pet called?", "What did {s} name the pet?"],
         ["How is {s}'s pet named?", "What name does {s}'s pet have?"]),
    _rel("favorite_sport", _SPORTS, "{s}'s favorite sport is {v}.",
         ["What is {s}'s favorite sport?", "Which sport does {s} like best?", "What sport does {s} love?"],
         ["What sport is {s} a fan of?", "Which sport does {s} prefer?"]),
    _rel("favorite_band", _BANDS, "{s}'s favorite band is {v}.",
         ["What is {s}'s favorite band?", "Which band does {s} like best?", "Who is {s}'s favourite band?"],
         ["Which group does {s} listen to most?", "What band is {s} a fan of?"]),
    _rel("favorite_book", _BOOKS, "{s}'s favorite book is {v}.",
         ["What is {s}'s favorite book?", "Which book does {s} like best?", "What book does {s} love?"],
         ["Which novel is {s}'s favourite?", "What is the book {s} prefers?"]),
    _rel("favorite_movie", _MOVIES, "{s}'s favorite movie is {v}.",
         ["What is {s}'s favorite movie?", "Which film does {s} like best?", "What movie does {s} love?"],
         ["Which film is {s}'s favourite?", "What is the movie {s} prefers?"]),
    _rel("plays", _INSTRUMENTS, "{s} plays the {v}.",
         ["What instrument does {s} play?", "Which instrument does {s} play?", "What does {s} play?"],
         ["Which musical instrument does {s} know?", "What instrument can {s} play?"]),
    _rel("drives", _CARS, "{s} drives a {v}.",
         ["What car does {s} drive?", "Which car does {s} drive?", "What brand of car does {s} own?"],
         ["What make of car is {s}'s?", "Which car brand does {s} drive?"]),
    _rel("favorite_drink", _DRINKS, "{s}'s favorite drink is {v}.",
         ["What is {s}'s favorite drink?", "What does {s} like to drink?", "Which drink does {s} prefer?"],
         ["What beverage does {s} love?", "What is {s}'s drink of choice?"]),
    _rel("birth_month", _MONTHS, "{s} was born in {v}.",
         ["In which month was {s} born?", "What is {s}'s birth month?", "Which month is {s}'s birthday in?"],
         ["When in the year is {s}'s birthday?", "What month was {s} born in?"]),
    _rel("sister", (), "{s}'s sister is {v}.",
         ["Who is {s}'s sister?", "What is the name of {s}'s sister?", "What is {s}'s sister called?"],
         ["Who is the sister of {s}?", "Name {s}'s sister."]),
    _rel("brother", (), "{s}'s brother is {v}.",
         ["Who is {s}'s brother?", "What is the name of {s}'s brother?", "What is {s}'s brother called?"],
         ["Who is the brother of {s}?", "Name {s}'s brother."]),
    _rel("friend", (), "{s}'s best friend is {v}.",
         ["Who is {s}'s best friend?", "Who is {s} friends with?", "What is the name of {s}'s friend?"],
         ["Who is the best friend of {s}?", "Name {s}'s closest friend."]),
    _rel("married_to", (), "{s} is married to {v}.",
         ["Who is {s} married to?", "Who is {s}'s spouse?", "What is the name of {s}'s partner?"],
         ["Whom did {s} marry?", "Who is the spouse of {s}?"]),
    _rel("dislikes", _FOODS, "{s} dislikes {v}.",
         ["What does {s} dislike?", "What food does {s} hate?", "Which food does {s} not like?"],
         ["What can {s} not stand?", "What does {s} refuse to eat?"]),
)
_PERSON_VALUED = frozenset({"sister", "brother", "friend", "married_to"})


def _names(rng: random.Random, n: int, syllables: tuple[int, int]) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        k = rng.randint(*syllables)
        out.add("".join(rng.choice(_SYL) for _ in range(k)).capitalize())
    return sorted(out)


class Split(Choice):
    """Which part of the synthetic world a set of examples comes from."""

    TRAIN = "train"  # training entities, training phrasings, training values
    HELDOUT = "heldout"  # entities never seen in training, held-out phrasings, training values
    UNSEEN_VALUES = "unseen_values"  # held-out entities and phrasings, values never seen in training


@dataclass(frozen=True)
class SynthFact:
    """One fact of the synthetic world, with the texts its knowledge token is made of."""

    subject: str
    relation: str
    value: str

    @property
    def key_text(self) -> str:
        return key_text(self.subject, self.relation)

    @property
    def text(self) -> str:
        spec = _SPEC[self.relation]
        return spec.statement.format(s=self.subject, v=self.value)


@dataclass(frozen=True)
class Example:
    """A question over a set of facts (the relevant one, if any, among distractors) and its answer."""

    question: str
    facts: tuple[SynthFact, ...]
    answer: str  # the value, or REFUSAL
    answerable: bool
    relation: str


def key_text(subject: str, relation: str) -> str:
    """The text a knowledge token's key is embedded from: the subject and the relation in words."""
    return f"{subject} {relation.replace('_', ' ')}"


_SPEC = {r.name: r for r in RELATIONS}


class World:
    """Seeded name and value pools with disjoint training and held-out parts."""

    def __init__(self, seed: int = 0):
        rng = random.Random(seed)
        firsts, lasts = _names(rng, 400, (2, 3)), _names(rng, 400, (2, 3))
        lasts = [n for n in lasts if n not in set(firsts)]
        rng.shuffle(firsts)
        rng.shuffle(lasts)
        cut_f, cut_l = int(len(firsts) * 0.8), int(len(lasts) * 0.8)
        self._first = {True: firsts[:cut_f], False: firsts[cut_f:]}  # True = training pool
        self._last = {True: lasts[:cut_l], False: lasts[cut_l:]}
        people = _names(random.Random(seed + 1), 160, (2, 2))
        # a fifth of all value strings is held out globally (a value shared by two relations, like a
        # food that is liked or disliked, is held out for both)
        every = sorted({v for spec in RELATIONS for v in (people if spec.name in _PERSON_VALUED else spec.values)})
        held = set(random.Random(f"{seed}-values").sample(every, len(every) // 5))
        self._values: dict[str, dict[bool, tuple[str, ...]]] = {}
        for spec in RELATIONS:
            values = sorted(people if spec.name in _PERSON_VALUED else spec.values)
            train = tuple(v for v in values if v not in held) or tuple(values[:-1])
            unseen = tuple(v for v in values if v not in train) or tuple(values[-1:])
            self._values[spec.name] = {True: train, False: unseen}

    def person(self, rng: random.Random, split: Split) -> str:
        train = split is Split.TRAIN
        return f"{rng.choice(self._first[train])} {rng.choice(self._last[train])}"

    def value(self, rng: random.Random, relation: str, split: Split) -> str:
        return rng.choice(self._values[relation][split is not Split.UNSEEN_VALUES])

    def question(self, rng: random.Random, relation: str, split: Split) -> str:
        spec = _SPEC[relation]
        return rng.choice(spec.train_questions if split is Split.TRAIN else spec.heldout_questions)

    def example(self, rng: random.Random, split: Split, distractors: int, answerable: bool) -> Example:
        """One question with ``distractors`` other facts: about the same person (other relations),
        the same relation (other people), and unrelated facts."""
        subject = self.person(rng, split)
        spec = rng.choice(RELATIONS)
        value = self.value(rng, spec.name, split)
        facts: list[SynthFact] = []
        seen = {(subject, spec.name)}
        same_person = min(distractors, rng.randint(0, 3))
        same_relation = min(distractors - same_person, rng.randint(0, 3))
        others = [r for r in RELATIONS if r.name != spec.name]
        for i in range(distractors):
            if i < same_person:
                s, r = subject, rng.choice(others).name
            elif i < same_person + same_relation:
                s, r = self.person(rng, split), spec.name
            else:
                s, r = self.person(rng, split), rng.choice(RELATIONS).name
            if (s, r) in seen:
                s = self.person(rng, split)
                if (s, r) in seen:
                    continue
            seen.add((s, r))
            facts.append(SynthFact(s, r, self.value(rng, r, split)))
        if answerable:
            facts.append(SynthFact(subject, spec.name, value))
        rng.shuffle(facts)
        question = self.question(rng, spec.name, split).format(s=subject)
        return Example(question, tuple(facts), value if answerable else REFUSAL, answerable, spec.name)

    def pool(self, split: Split, size: int, seed: int = 0) -> list[SynthFact]:
        """``size`` distinct facts of ``split``, for drawing many distractors without embedding new
        texts for every question."""
        rng = random.Random(f"pool-{seed}-{split.value}")
        facts: dict[tuple[str, str], SynthFact] = {}
        while len(facts) < size:
            for f in self.example(rng, split, 6, True).facts:
                facts.setdefault((f.subject, f.relation), f)
        return list(facts.values())[:size]

    def examples(self, n: int, split: Split, distractors: int | tuple[int, int], seed: int,
                 unanswerable: float = 0.2, pool: list[SynthFact] | None = None) -> list[Example]:
        """``n`` examples; ``distractors`` is a count or an inclusive (low, high) range. With ``pool``,
        up to 6 close distractors (same person, same relation) are generated and the rest are drawn
        from the pool (never about the asked person)."""
        split = Split.parse(split)
        if not 0.0 <= unanswerable < 1.0:
            raise BadInputError(f"unanswerable={unanswerable} must be in [0, 1)")
        rng = random.Random(f"{seed}-{split.value}")
        out = []
        for _ in range(n):
            d = distractors if isinstance(distractors, int) else rng.randint(*distractors)
            answerable = rng.random() >= unanswerable
            if pool is None:
                out.append(self.example(rng, split, d, answerable))
                continue
            e = self.example(rng, split, min(d, 6), answerable)
            extra = d - (len(e.facts) - (1 if answerable else 0))
            if extra > 0:
                taken = {(f.subject, f.relation) for f in e.facts}
                drawn = rng.sample(pool, min(len(pool), extra + 50))
                more = [f for f in drawn if (f.subject, f.relation) not in taken and f.subject not in e.question]
                facts = list(e.facts) + more[:extra]
                rng.shuffle(facts)
                e = Example(e.question, tuple(facts), e.answer, e.answerable, e.relation)
            out.append(e)
        return out


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed: the exact-match form."""
    text = text.lower().replace("\u2019", "'")
    text = "".join(" " if c in string.punctuation and c != "'" else c for c in text)
    words = [w for w in text.split() if w not in ("a", "an", "the")]
    return " ".join(words)


def is_refusal(answer: str) -> bool:
    a = normalize_answer(answer)
    return any(p in a for p in ("don't know", "do not know", "not sure", "no information", "cannot answer",
                                "can't answer", "unknown", "not known"))


def is_correct(answer: str, example: Example) -> bool:
    """Exact match of the value inside a short answer (at most 16 words); a refusal for unanswerable
    questions. An answer that lists several candidate values is not short, so it does not count."""
    norm = normalize_answer(answer)
    if not example.answerable:
        return is_refusal(answer)
    if len(norm.split()) > 16 or is_refusal(answer):
        return False
    return f" {normalize_answer(example.answer)} " in f" {norm} "
