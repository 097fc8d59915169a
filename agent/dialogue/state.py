"""Explicit dialogue state: turns with resolved mentions, the focus entity, and the user's profile.

The agent saves ``DialogueState.to_dict()`` as JSON at the end of each turn and restores it with
``DialogueState.from_dict`` on resume; the round trip is exact (``from_dict(to_dict(s)) == s``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from agent.language import vocab
from agent.errors import BadInputError
from agent.language.intent import Intent, classify
from agent.dialogue.mentions import KnownEntities, Mention, Resolve, find_mentions, same_name
from agent.extraction.triple import ExtractionContext, Lookup, Triple
from agent.validation import check, within
from kb.facts import Fact, Status, normalize_name

if TYPE_CHECKING:
    from spacy.tokens import Doc

    from agent.language.nlp import NLP

__all__ = ["DialogueState", "Mention", "StateConfig", "StateTracker", "Turn"]

#: the state's on-disk format; ``from_dict`` refuses other versions
FORMAT = 1


@dataclass(frozen=True)
class StateConfig:
    """Bounds of the dialogue state and of entity linking."""

    max_recent: int = within(20, 1, 10000)  # recent_entities kept; older entities are unlikely pronoun targets
    # turns kept in the saved state; older ones live on as KB episodes, which recall searches. Every
    # turn rewrites the session file: 500 turns cost ~19 ms a save, 64 about 2.5 ms
    max_turns: int = within(64, 1, 100000)
    max_ngram: int = within(3, 1, 10)  # longest word n-gram offered to known_entities ("new york city")
    max_candidates: int = within(200, 1, 100000)  # n-grams offered per turn: bounds the KB lookup cost of pastes
    max_chain: int = within(4, 1, 20)  # longest possessive chain followed ("my sister's husband's boss's ...")
    # turns back that a pet or person introduced without a name stays nameable ("His name is Biscuit")
    unnamed_turns: int = within(3, 1, 50)

    def __post_init__(self) -> None:
        check(self)  # every within() field in its range


@dataclass
class Turn:
    """One user utterance with what the tracker resolved in it and what the agent did with it."""

    index: int  # 0-based position in the session (keeps counting when old turns are dropped)
    user: str  # who spoke
    text: str  # what was said, verbatim
    intent: Intent
    time: float  # unix seconds
    mentions: list[Mention]  # in text order
    references: dict[str, str]  # lower-cased surface -> entity: {"i": "alice", "my sister": "mary", "she": "mary"}
    focus: str | None  # the entity this turn is mostly about (None: nothing new)
    used_fact_ids: list[str] = field(default_factory=list)  # facts retrieved to answer it
    learned_fact_ids: list[str] = field(default_factory=list)  # facts stored from it
    superseded_fact_ids: list[str] = field(default_factory=list)  # facts it replaced or retracted
    reply: str | None = None  # the assistant's answer, once given


@dataclass
class DialogueState:
    """Everything the agent remembers about the running conversation (not the KB itself)."""

    user: str
    session_id: str
    turns: list[Turn] = field(default_factory=list)
    profile: dict[str, str] = field(default_factory=dict)  # slot -> value from the user's own facts
    focus: str | None = None  # current focus entity, the first candidate for pronouns
    recent_entities: list[str] = field(default_factory=list)  # most recent first, bounded

    @classmethod
    def new(cls, user: str, session_id: str) -> DialogueState:
        """A fresh state for a new session of ``user``."""
        if not isinstance(user, str) or not user.strip():
            raise BadInputError(f"user must be a non-empty string, got {user!r}")
        if not isinstance(session_id, str) or not session_id.strip():
            raise BadInputError(f"session_id must be a non-empty string, got {session_id!r}")
        return cls(user, session_id)

    @property
    def current(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    def entities(self) -> list[str]:
        """Entities of the current turn (resolved, in text order), then the focus, then recent ones."""
        out: list[str] = []
        if self.turns:
            out += [m.entity for m in self.turns[-1].mentions if m.label != UNNAMED]
        if self.focus:
            out.append(self.focus)
        out += self.recent_entities
        return list(dict.fromkeys(e for e in out if e))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (only str, int, float, bool, None, lists and dicts)."""
        d = asdict(self)
        for turn in d["turns"]:
            turn["intent"] = turn["intent"].value
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: Any) -> DialogueState:
        """Rebuild a state saved by ``to_dict``; raise BadInputError naming the first bad field."""
        r = _Reader(d, "state")
        if r.get("format", int) != FORMAT:
            raise BadInputError(f"state format {d.get('format')!r} is not supported; expected {FORMAT}")
        turns = [_turn(_Reader(t, f"state.turns[{i}]")) for i, t in enumerate(r.get("turns", list))]
        profile = r.get("profile", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in profile.items()):
            raise BadInputError("state.profile must map strings to strings")
        recent = r.get("recent_entities", list)
        if not all(isinstance(e, str) for e in recent):
            raise BadInputError("state.recent_entities must be a list of strings")
        return cls(r.get("user", str), r.get("session_id", str), turns, dict(profile),
                   r.get("focus", str, optional=True), list(recent))


class _Reader:
    """Typed field access on a dict being deserialised, with errors that name the field."""

    def __init__(self, d: Any, where: str):
        if not isinstance(d, dict):
            raise BadInputError(f"{where} must be an object, got {type(d).__name__}")
        self.d, self.where = d, where

    def get(self, key: str, kind: type, optional: bool = False) -> Any:
        if key not in self.d:
            raise BadInputError(f"{self.where}.{key} is missing")
        value = self.d[key]
        if value is None and optional:
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadInputError(f"{self.where}.{key} must be {kind.__name__}, got {value!r:.60}")
        return value

    def strings(self, key: str) -> list[str]:
        values = self.get(key, list)
        if not all(isinstance(v, str) for v in values):
            raise BadInputError(f"{self.where}.{key} must be a list of strings")
        return list(values)


def _turn(r: _Reader) -> Turn:
    mentions = []
    for i, m in enumerate(r.get("mentions", list)):
        mr = _Reader(m, f"{r.where}.mentions[{i}]")
        mentions.append(Mention(mr.get("text", str), mr.get("entity", str), mr.get("label", str),
                                mr.get("start", int), mr.get("end", int)))
    refs = r.get("references", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in refs.items()):
        raise BadInputError(f"{r.where}.references must map strings to strings")
    return Turn(r.get("index", int), r.get("user", str), r.get("text", str), Intent.parse(r.get("intent", str)),
                r.get("time", float), mentions, dict(refs), r.get("focus", str, optional=True),
                r.strings("used_fact_ids"), r.strings("learned_fact_ids"), r.strings("superseded_fact_ids"),
                r.get("reply", str, optional=True))


class StateTracker:
    """Updates a DialogueState turn by turn: intent, mentions, references, focus, profile."""

    def __init__(self, nlp: NLP, known_entities: KnownEntities, lookup: Lookup,
                 config: StateConfig | None = None, resolve: Resolve = same_name):
        self.nlp = nlp
        self.known_entities = known_entities  # candidates -> those naming a KB entity
        self.lookup = lookup  # (subject, relation) -> current object for this user, or None
        self.resolve = resolve  # alias -> canonical entity name (KnowledgeBase.resolve); identity by default
        self.config = config or StateConfig()
        self.last_doc: Doc | None = None  # parse of the last ``update``'s text (``read`` returns its own)

    def read(self, state: DialogueState, user: str, text: str, time: float) -> tuple[Turn, Doc]:
        """Parse ``text`` and resolve its mentions against ``state``: the new turn (not yet in the state,
        which is left unchanged) and the parse, which the extractor reuses."""
        if not isinstance(text, str):
            raise BadInputError(f"utterance must be a string, got {type(text).__name__}")
        if not isinstance(user, str) or not user.strip():
            raise BadInputError(f"user must be a non-empty string, got {user!r}")
        doc = self.nlp(text)
        history = [m for t in reversed(state.turns) for m in reversed(t.mentions)]
        found = find_mentions(doc, user, history, state.focus, self.known_entities, self.lookup, self.resolve,
                              self.config.max_ngram, self.config.max_candidates, self.config.max_chain)
        index = state.turns[-1].index + 1 if state.turns else 0
        turn = Turn(index, user, text, classify(text, doc), float(time), found.mentions,
                    found.references, _focus(doc, found.mentions))
        return turn, doc

    def advance(self, state: DialogueState, turn: Turn) -> DialogueState:
        """The state once ``turn`` is part of it: a new DialogueState (``state`` itself is unchanged),
        with the turn appended (older ones dropped past ``max_turns``), the focus and recent entities."""
        turns = (state.turns + [turn])[-self.config.max_turns:]
        new = [m.entity for m in reversed(turn.mentions) if m.label != "SELF" and m.entity != turn.user]
        recent = list(dict.fromkeys(new + state.recent_entities))[: self.config.max_recent]
        return replace(state, turns=turns, profile=dict(state.profile), focus=turn.focus or state.focus,
                       recent_entities=recent)

    def update(self, state: DialogueState, user: str, text: str, time: float) -> Turn:
        """``read`` then ``advance`` in place: ``state`` takes the new turn, which is returned (for
        callers that keep one state object, like the probe evaluation)."""
        turn, doc = self.read(state, user, text, time)
        self.last_doc = doc
        after = self.advance(state, turn)
        state.turns, state.focus, state.recent_entities = after.turns, after.focus, after.recent_entities
        return turn

    def resolve_again(self, state: DialogueState, turn: Turn) -> Turn:
        """A copy of ``turn`` with its mentions and references resolved against the KB as it is now.

        The feedback loop answers a question again after a correction, which may have changed what
        "my favorite food" or "my sister" refers to; ``state`` and ``last_doc`` are left unchanged.
        """
        history = [m for t in reversed(state.turns) if t.index < turn.index for m in reversed(t.mentions)]
        found = find_mentions(self.nlp(turn.text), turn.user, history, state.focus, self.known_entities,
                              self.lookup, self.resolve, self.config.max_ngram, self.config.max_candidates,
                              self.config.max_chain)
        return replace(turn, mentions=found.mentions, references=found.references)

    def context_for(self, state: DialogueState, turn: Turn) -> ExtractionContext:
        """The extraction context of ``turn``: its speaker, its references, the KB lookup."""
        refs = {" ".join(k.lower().split()): v for k, v in turn.references.items()}
        earlier = [t for t in state.turns if t.index < turn.index][-self.config.unnamed_turns:]
        unnamed = tuple(dict.fromkeys(_owner_noun(m.entity) for t in reversed(earlier)
                                      for m in reversed(t.mentions) if m.label == UNNAMED))
        return ExtractionContext(turn.user, refs, self.lookup, unnamed=unnamed)

    def apply_learned(self, state: DialogueState, items: Iterable[Triple | Fact]) -> None:
        """Update profile slots from facts about the user: set on new ones, clear on retractions.

        The object of a person-valued relation ("my sister is called Emma") is a person from now on,
        whatever the NER said of it, so a later "she" can refer to it.
        """
        me = normalize_name(state.user)
        items = list(items)
        last = state.turns[-1] if state.turns else None
        for item in items:
            if last is not None and item.relation in vocab.PERSON_VALUED:
                for m in last.mentions:
                    if m.entity == normalize_name(item.object) and m.label not in ("PERSON", "SELF"):
                        m.label = "PERSON"
                if not any(m.entity == normalize_name(item.object) for m in last.mentions) and not getattr(item, "negated", False):
                    at = max(0, last.text.lower().find(item.object.lower()))  # "a sister called Ana": the NER
                    last.mentions.append(Mention(item.object, normalize_name(item.object), "PERSON",  # missed her
                                                 at, at + len(item.object)))
        if last is not None:
            _note_unnamed(state, last, items)
        for item in items:
            if normalize_name(item.subject) != me:
                continue
            slot = item.relation
            if slot not in vocab.PROFILE_SLOTS and not slot.startswith("favorite_"):
                continue
            removed = item.negated if isinstance(item, Triple) else item.status is not Status.ACTIVE
            if not removed:
                state.profile[slot] = item.object
            elif normalize_name(state.profile.get(slot, "")) == normalize_name(item.object):
                del state.profile[slot]


#: the mention label of a pet or person a turn introduced without a name; its entity is "owner's noun"
UNNAMED = "UNNAMED"


def _owner_noun(entity: str) -> tuple[str, str]:
    owner, _, noun = entity.rpartition("'s ")
    return owner, noun


def _note_unnamed(state: DialogueState, turn: Turn, items: list[Triple | Fact]) -> None:
    """Keep on ``turn`` the pets and people ``items`` introduce without a name ("I adopted a greyhound",
    "My mother lives in Bath": the placeholder "sam's mother"), so that "His name is Biscuit" or "Her
    name is Ruth" in a later turn names them; forget the ones ``items`` name."""
    holding = [i for i in items if not (i.negated if isinstance(i, Triple) else i.status is not Status.ACTIVE)]
    named = {(normalize_name(i.subject), "pet") for i in holding if i.relation == "pet_name"}
    named |= {(normalize_name(i.subject), i.relation) for i in holding if i.relation in vocab.PERSON_VALUED}
    fresh: list[tuple[str, str]] = []
    for i in holding:
        subject = normalize_name(i.subject)
        if i.relation == "has_pet" and (subject, "pet") not in named:
            fresh.append((subject, normalize_name(i.object)))
        owner, noun = _owner_noun(subject)
        if owner and vocab.PERSON_RELATIONS.get(noun) and (owner, vocab.PERSON_RELATIONS[noun]) not in named:
            fresh.append((owner, noun))  # a placeholder subject: "sam's mother"
    for t in state.turns:
        t.mentions = [m for m in t.mentions if m.label != UNNAMED or not _is_named(_owner_noun(m.entity), named)]
    kept = {m.entity for m in turn.mentions if m.label == UNNAMED}
    for owner, noun in dict.fromkeys(fresh):
        if f"{owner}'s {noun}" in kept:  # the write-back reports a turn's facts again
            continue
        at = max(0, turn.text.lower().find(noun))
        turn.mentions.append(Mention(noun, f"{owner}'s {noun}", UNNAMED, at, at + len(noun)))


def _is_named(owner_noun: tuple[str, str], named: set[tuple[str, str]]) -> bool:
    owner, noun = owner_noun
    return (owner, "pet") in named if noun in vocab.PET_NOUNS else (owner, vocab.PERSON_RELATIONS.get(noun)) in named


def _focus(doc: Doc, mentions: list[Mention]) -> str | None:
    """The entity a turn is about: its first clause's subject if that is a third party, else its
    first non-self mention; None when it mentions nothing."""
    others = [m for m in mentions if m.label != "SELF"]
    if not others:
        return None
    first = next(iter(doc.sents))
    subj = next((t for t in first if t.dep_ in ("nsubj", "nsubjpass")), None)
    if subj is not None:
        covering = [m for m in others if m.start <= subj.idx < m.end]  # "my sister's husband" over "my sister"
        if covering:
            return max(covering, key=lambda m: m.end - m.start).entity
    return others[0].entity
