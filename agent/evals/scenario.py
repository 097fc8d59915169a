"""Scripted evaluation conversations: the JSON scenario format, loaded into typed records and validated."""
from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from pathlib import Path

from agent.choices import Choice
from agent.errors import BadInputError

#: relations gold triples may use; ``favorite_<x>`` (any snake_case x) is allowed too
VOCABULARY: frozenset[str] = frozenset({
    "name", "lives_in", "works_at", "age", "born_on", "born_in", "likes", "dislikes", "occupation",
    "sister", "brother", "mother", "father", "husband", "wife", "spouse", "friend", "son", "daughter",
    "partner", "has_pet", "pet_name", "studies_at", "speaks", "owns", "married_to",
})
_FAVORITE = re.compile(r"favorite_[a-z]+(?:_[a-z]+)*")


class ScenarioError(BadInputError):
    """A scenario file is unreadable or malformed; the message names the file and the bad field."""


class Category(Choice):
    """What a scenario tests; the report groups its numbers by these."""

    SINGLE_HOP = "single_hop"
    UPDATE = "update"
    PRONOUN = "pronoun"
    MULTI_HOP = "multi_hop"
    DISTRACTOR = "distractor"
    MULTI_USER = "multi_user"
    NEGATION = "negation"
    SMALL_TALK_AND_QUESTIONS = "small_talk_and_questions"
    UNANSWERABLE = "unanswerable"  # about the user, but memory cannot answer: the agent must abstain
    GENERAL_KNOWLEDGE = "general_knowledge"  # not about the user: answered as the bare model would

    @property
    def about_user(self) -> bool:
        """Whether this category's questions are about the user or their world (the topic label)."""
        return self is not Category.GENERAL_KNOWLEDGE


class TurnKind(str, enum.Enum):
    """A statement the user makes (``say``) or a question whose answer is graded (``ask``)."""

    SAY = "say"
    ASK = "ask"


class Split(str, enum.Enum):
    """Which half of a set a scenario belongs to: ``dev`` may be tuned on, ``test`` never is."""

    DEV = "dev"
    TEST = "test"


class CheckKind(str, enum.Enum):
    """End-of-scenario KB checks: a triple must (``present``) or must not (``absent``) be visible to a user."""

    PRESENT = "present"
    ABSENT = "absent"


@dataclass(frozen=True)
class GoldTriple:
    """An annotated (subject, relation, object), as written in the scenario file."""

    subject: str
    relation: str
    object: str


@dataclass(frozen=True)
class ScriptTurn:
    """One user message and what it should produce."""

    kind: TurnKind
    text: str
    expect_triples: tuple[GoldTriple, ...] = ()  # say: the facts it states (ask: always none)
    expect_answer: tuple[str, ...] = ()  # ask: any one of these in the reply (case-insensitive)
    reject: tuple[str, ...] = ()  # ask: none of these may appear in the reply
    evidence: tuple[GoldTriple, ...] = ()  # ask: facts that should be among the used facts
    # ask: True = the reply must abstain ("You haven't told me..."), False = it must not; None = not graded
    abstain: bool | None = None


@dataclass(frozen=True)
class Session:
    """One conversation: a fresh process for ``user`` on the scenario's KB."""

    user: str
    turns: tuple[ScriptTurn, ...]


@dataclass(frozen=True)
class Check:
    """A statement about the KB after the last session."""

    kind: CheckKind
    user: str
    triple: GoldTriple


@dataclass(frozen=True)
class Scenario:
    """A scripted multi-session conversation with its gold annotations."""

    id: str
    category: Category
    description: str
    user: str
    sessions: tuple[Session, ...]
    checks: tuple[Check, ...]
    source: str  # the file it came from
    split: Split = Split.DEV  # dev (tuned on) or test (never tuned on)

    @property
    def questions(self) -> tuple[ScriptTurn, ...]:
        return tuple(t for s in self.sessions for t in s.turns if t.kind is TurnKind.ASK)


# --------------------------------------------------------------------------- loading


def load_scenarios(path: str | Path) -> list[Scenario]:
    """Scenarios from a ``.json`` file or from every ``*.json`` in a directory (sorted by file name)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.json"))
        if not files:
            raise ScenarioError(f"{p} holds no *.json scenario files")
    elif p.is_file():
        files = [p]
    else:
        raise ScenarioError(f"{p} does not exist; give a scenario .json file or a directory of them")
    out: list[Scenario] = []
    seen: dict[str, str] = {}
    for f in files:
        for sc in load_file(f):
            if sc.id in seen:
                raise ScenarioError(f"{f}: scenario id {sc.id!r} is also used in {seen[sc.id]}; ids must be unique")
            seen[sc.id] = str(f)
            out.append(sc)
    return out


def load_file(path: Path) -> list[Scenario]:
    """One file: a scenario object or a list of them."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{path}: not valid JSON: {e}") from None
    if isinstance(raw, dict):
        return [_scenario(raw, _Where(path, "$"))]
    if isinstance(raw, list) and raw:
        return [_scenario(item, _Where(path, f"$[{i}]")) for i, item in enumerate(raw)]
    raise ScenarioError(f"{path}: $ must be a scenario object or a non-empty list of them, got {_show(raw)}")


@dataclass(frozen=True)
class _Where:
    """A file and a JSON path inside it, for error messages."""

    file: Path
    path: str

    def at(self, key: str | int) -> _Where:
        return _Where(self.file, f"{self.path}[{key}]" if isinstance(key, int) else f"{self.path}.{key}")

    def fail(self, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.file}: {self.path}: {problem}")


def _show(value: object) -> str:
    return f"{type(value).__name__} {json.dumps(value)[:60]}"


def _obj(raw: object, where: _Where, required: set[str], optional: set[str]) -> dict:
    if not isinstance(raw, dict):
        raise where.fail(f"must be an object, got {_show(raw)}")
    missing = sorted(required - raw.keys())
    if missing:
        raise where.fail(f"missing field {missing[0]!r}; required: {', '.join(sorted(required))}")
    unknown = sorted(raw.keys() - required - optional)
    if unknown:
        raise where.fail(f"unknown field {unknown[0]!r}; valid fields: {', '.join(sorted(required | optional))}")
    return raw


def _str(raw: object, where: _Where) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise where.fail(f"must be a non-empty string, got {_show(raw)}")
    return raw.strip()


def _list(raw: object, where: _Where, non_empty: bool = False) -> list:
    if not isinstance(raw, list) or (non_empty and not raw):
        raise where.fail(f"must be a {'non-empty ' if non_empty else ''}list, got {_show(raw)}")
    return raw


def _strings(raw: object, where: _Where) -> tuple[str, ...]:
    return tuple(_str(x, where.at(i)) for i, x in enumerate(_list(raw, where)))


def _triple(raw: object, where: _Where) -> GoldTriple:
    if not isinstance(raw, list) or len(raw) != 3:
        raise where.fail(f"must be a [subject, relation, object] list of 3 strings, got {_show(raw)}")
    s, r, o = (_str(x, where.at(i)) for i, x in enumerate(raw))
    if r not in VOCABULARY and not _FAVORITE.fullmatch(r):
        raise where.at(1).fail(
            f"relation {r!r} is not in the vocabulary; valid: {', '.join(sorted(VOCABULARY))}, favorite_<x>")
    return GoldTriple(s, r, o)


def _triples(raw: object, where: _Where) -> tuple[GoldTriple, ...]:
    return tuple(_triple(x, where.at(i)) for i, x in enumerate(_list(raw, where)))


def _turn(raw: object, where: _Where) -> ScriptTurn:
    if isinstance(raw, dict) and "ask" in raw:
        d = _obj(raw, where, {"ask", "expect_answer"}, {"reject", "evidence", "abstain"})
        abstain = d.get("abstain")
        if abstain is not None and not isinstance(abstain, bool):
            raise where.at("abstain").fail(f"must be true or false, got {_show(abstain)}")
        turn = ScriptTurn(TurnKind.ASK, _str(d["ask"], where.at("ask")),
                          expect_answer=_strings(d["expect_answer"], where.at("expect_answer")),
                          reject=_strings(d.get("reject", []), where.at("reject")),
                          evidence=_triples(d.get("evidence", []), where.at("evidence")), abstain=abstain)
        if abstain and turn.expect_answer:
            raise where.at("expect_answer").fail("must be empty when abstain is true (an abstention names no value)")
        if not turn.expect_answer and not turn.reject and not abstain:
            raise where.at("expect_answer").fail("is empty and so is reject; a question needs one of them")
        return turn
    if isinstance(raw, dict) and "say" in raw:
        d = _obj(raw, where, {"say", "expect_triples"}, set())
        return ScriptTurn(TurnKind.SAY, _str(d["say"], where.at("say")),
                          expect_triples=_triples(d["expect_triples"], where.at("expect_triples")))
    raise where.fail(f"a turn must be an object with 'say' (a statement) or 'ask' (a question), got {_show(raw)}")


def _session(raw: object, where: _Where, default_user: str) -> Session:
    if isinstance(raw, dict):
        d = _obj(raw, where, {"turns"}, {"user"})
        user = _str(d["user"], where.at("user")) if "user" in d else default_user
        raw, where = d["turns"], where.at("turns")
    else:
        user = default_user
    turns = _list(raw, where, non_empty=True)
    return Session(user, tuple(_turn(t, where.at(i)) for i, t in enumerate(turns)))


def _scenario(raw: object, where: _Where) -> Scenario:
    d = _obj(raw, where, {"id", "category", "description", "user", "sessions"}, {"checks", "split"})
    sid = _str(d["id"], where.at("id"))
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", sid):
        raise where.at("id").fail(f"id {sid!r} must be letters, digits, '_', '-' or '.'")
    category = _str(d["category"], where.at("category"))
    if category not in {c.value for c in Category}:
        raise where.at("category").fail(
            f"unknown category {category!r}; valid: {', '.join(c.value for c in Category)}")
    user = _str(d["user"], where.at("user"))
    sessions = tuple(_session(s, where.at("sessions").at(i), user)
                     for i, s in enumerate(_list(d["sessions"], where.at("sessions"), non_empty=True)))
    checks = []
    for i, c in enumerate(_list(d.get("checks", []), where.at("checks"))):
        cw = where.at("checks").at(i)
        cd = _obj(c, cw, {"kind", "user", "triple"}, set())
        kind = _str(cd["kind"], cw.at("kind"))
        if kind not in {k.value for k in CheckKind}:
            raise cw.at("kind").fail(f"unknown check kind {kind!r}; valid: {', '.join(k.value for k in CheckKind)}")
        checks.append(Check(CheckKind(kind), _str(cd["user"], cw.at("user")), _triple(cd["triple"], cw.at("triple"))))
    split = _str(d.get("split", Split.DEV.value), where.at("split"))
    if split not in {x.value for x in Split}:
        raise where.at("split").fail(f"unknown split {split!r}; valid: {', '.join(x.value for x in Split)}")
    return Scenario(sid, Category(category), _str(d["description"], where.at("description")), user, sessions,
                    tuple(checks), str(where.file), Split(split))
