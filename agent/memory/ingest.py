"""Ingesting a chat history: every turn becomes an episode, human turns also give facts, session by session.

The write path is the live chat's: episodes in one batched ``add_episodes`` per session (one
embedding pass), then the same extractor and ``add_facts`` with provenance to each turn's
``source_id``. Ids are content hashes, so a re-run adds nothing and resumes an interrupted import.
"""
from __future__ import annotations

import hashlib
import time as _time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from agent.errors import BadInputError
from agent.language.intent import Intent, classify
from agent.extraction.triple import ExtractionContext, Extractor, Triple
from kb import KnowledgeBase, NewEpisode, NewFact, Role
from kb.errors import KBError
from kb.facts import to_timestamp

#: the speaker name that means the agent itself in imported chats (override with ``assistant=``)
ASSISTANT = "assistant"
#: characters of a turn that are parsed for facts: a pasted document is stored whole but not parsed whole
PARSE_CHARS = 10_000
#: turns embedded in one pass ahead of the sessions that store them (a few sessions' worth)
EMBED_AHEAD = 256


@dataclass(frozen=True)
class ChatTurn:
    """One turn of a chat history to ingest."""

    speaker: str  # who said it: the user (``me``), the assistant, or anyone else
    text: str
    time: object = None  # datetime, ISO string or unix seconds; default: the session's, else now
    session: str | None = None  # turns with the same session form one conversation; None: one per call
    source_id: str | None = None  # the caller's id of the turn; default "<session>/turn/<position>"

    @classmethod
    def coerce(cls, item: "ChatTurn | Mapping[str, object]", where: str) -> "ChatTurn":
        """A ChatTurn from itself or a mapping with the same keys; errors name ``where`` and the field."""
        if isinstance(item, ChatTurn):
            return item
        if not isinstance(item, Mapping):
            raise BadInputError(f"{where}: a turn must be a ChatTurn or a mapping, got {type(item).__name__}")
        unknown = set(item) - {"speaker", "text", "time", "session", "source_id"}
        if unknown:
            raise BadInputError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                                "valid fields: speaker, text, time, session, source_id")
        for key in ("speaker", "text"):
            if not isinstance(item.get(key), str) or not str(item.get(key)).strip():
                raise BadInputError(f"{where}: field {key!r} must be a non-empty string, got {item.get(key)!r}")
        for key in ("session", "source_id"):
            if item.get(key) is not None and not isinstance(item.get(key), str):
                raise BadInputError(f"{where}: field {key!r} must be a string or null, got {item.get(key)!r}")
        return cls(str(item["speaker"]), str(item["text"]), item.get("time"), item.get("session"),
                   item.get("source_id"))


@dataclass(frozen=True)
class IngestReport:
    """What one ingest call stored."""

    sessions: int
    turns: int
    episodes_new: int  # episodes the KB did not have before (0 on a re-run)
    facts_learned: int
    facts_superseded: int
    speakers: tuple[str, ...]
    seconds: float
    failed_session: str | None = None  # set when a session failed; earlier sessions stay stored
    error: str | None = None
    sessions_done: tuple[str, ...] = field(default=())


Progress = Callable[[int, int], None]  # (turns done, turns in all)


def parse_time(value: object, where: str) -> float:
    """Unix seconds from a datetime, unix seconds, ISO-8601 or LongMemEval's '2023/05/30 (Tue) 23:40'."""
    if isinstance(value, str):
        s = value.strip()
        for fmt in ("%Y/%m/%d (%a) %H:%M", "%Y/%m/%d %H:%M", "%Y/%m/%d"):
            try:
                return datetime.strptime(s, fmt).timestamp()
            except ValueError:
                pass
    try:
        return to_timestamp(value, "time")
    except KBError:
        raise BadInputError(
            f"{where}: unparsable time {value!r}; accepted: unix seconds, ISO-8601 ('2024-05-01T10:00:00'), "
            "'2023/05/30 (Tue) 23:40', '2023/05/30 23:40' or '2023/05/30'") from None


class Ingestor:
    """Writes chat turns into one user's memory through the live chat's write path."""

    def __init__(self, kb: KnowledgeBase, extractor: Extractor, nlp, user: str):
        self.kb = kb
        self.extractor = extractor
        self.nlp = nlp
        self.user = user

    def ingest(self, turns: Iterable[ChatTurn | Mapping[str, object]], *, me: str, assistant: str = ASSISTANT,
               progress: Progress | None = None, raise_errors: bool = True) -> IngestReport:
        """Store ``turns`` session by session; ``me`` names the speaker who is this agent's user."""
        t0 = _time.perf_counter()
        items = [ChatTurn.coerce(t, f"turn {i + 1}") for i, t in enumerate(turns)]
        speakers = tuple(dict.fromkeys(t.speaker for t in items))
        if not isinstance(me, str) or me not in speakers:
            raise BadInputError(f"me={me!r} is not a speaker of these turns; speakers found: "
                                f"{', '.join(map(repr, speakers)) or 'none'}")
        sessions = _group(items)
        done: list[str] = []
        new = learned = superseded = n_turns = 0
        vectors: dict[str, np.ndarray] = {}  # text -> vector, embedded ahead across sessions
        for n, (sid, sturns) in enumerate(sessions):
            try:
                if any(t.text.strip() not in vectors for t in sturns):
                    vectors = self._embed_ahead(sessions[n:])
                a, b, c = self._session(sid, sturns, me, assistant, vectors)
            except (BadInputError, KBError) as e:
                if raise_errors:
                    raise BadInputError(f"session {sid!r}: {e}") from e
                return IngestReport(len(done), n_turns, new, learned, superseded, speakers,
                                    _time.perf_counter() - t0, sid, str(e), tuple(done))
            new, learned, superseded = new + a, learned + b, superseded + c
            n_turns += len(sturns)
            done.append(sid)
            if progress is not None:
                progress(n_turns, len(items))
        return IngestReport(len(done), n_turns, new, learned, superseded, speakers,
                            _time.perf_counter() - t0, None, None, tuple(done))

    def _embed_ahead(self, sessions: Sequence[tuple[str, list[ChatTurn]]]) -> dict[str, np.ndarray]:
        """The vectors of the next sessions' turns (about EMBED_AHEAD of them), in one embedding pass:
        sessions are written one transaction each, but embedding them one by one pads short batches
        (the models alone embed 200 turns ~1.4x faster in one pass). Sessions already stored whole
        (a re-run resuming) are skipped."""
        texts: list[str] = []
        for sid, turns in sessions:
            if len(texts) >= EMBED_AHEAD:
                break
            try:
                if len(self.kb.session_episodes(self.user, sid)) >= len(turns):
                    continue
            except KBError:  # a user the KB does not know yet
                pass
            texts += [t.text.strip() for t in turns]
        texts = list(dict.fromkeys(texts))
        return dict(zip(texts, self.kb.episode_vectors(texts))) if texts else {}

    def _session(self, sid: str, turns: Sequence[ChatTurn], me: str, assistant: str,
                 vectors: dict[str, np.ndarray]) -> tuple[int, int, int]:
        """One session: episodes in one batch, then the facts of its human turns; (new, learned, superseded)."""
        base: float | None = None
        eps: list[NewEpisode] = []
        for pos, t in enumerate(turns):
            where = f"session {sid!r}, turn {pos + 1}"
            if t.time is not None:
                at = base = parse_time(t.time, where)
            else:  # a turn without a time follows the one before it by a millisecond, keeping the order
                base = at = _time.time() if base is None else base + 1e-3
            role = Role.USER if t.speaker == me else Role.ASSISTANT if t.speaker == assistant else Role.OTHER
            speaker = self.user if role is Role.USER else t.speaker
            eps.append(NewEpisode(t.text, self.user, speaker, role.value, sid, pos, at,
                                  t.source_id or f"{sid}/turn/{pos}"))
        try:
            before = {e.id for e in self.kb.session_episodes(self.user, sid)}
        except KBError:  # a user the KB does not know yet
            before = set()
        known = [vectors.get(t.text.strip()) for t in turns]
        stored = self.kb.add_episodes(eps, np.stack(known) if all(v is not None for v in known) else None)
        new = sum(1 for e in stored if e.id not in before)
        facts = self._facts(eps, stored)
        learned = superseded = 0
        if facts:
            for r in self.kb.add_facts(facts):
                learned += int(r.created)
                superseded += len(r.superseded)
        return new, learned, superseded

    def _facts(self, eps: Sequence[NewEpisode], stored: Sequence) -> list[NewFact]:
        """Facts stated in the human turns (never the assistant's), each linked to its episode."""
        human = [i for i, e in enumerate(eps) if e.role != Role.ASSISTANT.value]
        docs = self.nlp.pipe([eps[i].text[:PARSE_CHARS] for i in human], batch_size=32)
        out: list[NewFact] = []
        for i, doc in zip(human, docs):
            e = eps[i]
            ctx = ExtractionContext(self.user if e.role == Role.USER.value else e.speaker)
            for triple in self._statements(doc, ctx):
                if triple.negated:
                    continue  # a retraction in an old chat is not replayed against today's facts
                out.append(NewFact(triple.subject, triple.relation, triple.object, triple.text, user=self.user,
                                   source_id=e.source_id, episode_id=stored[i].id, time=e.time,
                                   confidence=triple.confidence))
        return out

    def _statements(self, doc, ctx: ExtractionContext) -> list[Triple]:
        """Triples of the statement sentences of one turn (a turn that asks something may also tell)."""
        intent = classify(doc.text, doc)
        if intent in (Intent.STATEMENT, Intent.CORRECTION):
            return self._extract(doc.text, ctx, doc)
        if intent is not Intent.QUESTION:
            return []
        out: list[Triple] = []
        for sent in doc.sents:
            text = sent.text.strip()
            if text and not text.endswith("?") and classify(text) is Intent.STATEMENT:
                out.extend(self._extract(text, ctx, sent.as_doc()))
        return out

    def _extract(self, text: str, ctx: ExtractionContext, doc) -> list[Triple]:
        try:
            return self.extractor.extract(text, ctx, doc=doc)
        except BadInputError:
            return []  # an unparsable turn stays an episode; its facts are just not extracted


def _group(items: Sequence[ChatTurn]) -> list[tuple[str, list[ChatTurn]]]:
    """Consecutive turns with the same session form one session; turns without one share a session
    named by a hash of their content, so re-ingesting the same turns finds the same session."""
    groups: list[tuple[str | None, list[ChatTurn]]] = []
    for t in items:
        if groups and groups[-1][0] == t.session:
            groups[-1][1].append(t)
        else:
            groups.append((t.session, [t]))
    out = []
    for sid, turns in groups:
        if sid is None:
            h = hashlib.sha256("\x1f".join(f"{t.speaker}\x1e{t.text}" for t in turns).encode()).hexdigest()
            sid = "import-" + h[:12]
        out.append((sid, turns))
    return out
