"""The agent loop: state update, retrieval, generation, fact extraction and write-back, one turn at a time."""
from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from agent.errors import BadInputError, StateError
from agent.extract import ExtractionContext, Extractor, ExtractorKind, LLMExtractor, PatternExtractor, Triple
from agent.intent import Intent
from agent.llm import PACKAGED_SMOLLM, CausalLM, LanguageModel, LLMConfig
from agent.prompt import (Exchange, PromptConfig, build_messages, display_name, fit_facts, system_text,
                          third_person, trim_history)
from agent.retrieval import RetrievalConfig, Retriever, UsedFact
from agent.state import DialogueState, StateTracker, Turn
from kb import KBConfig, KnowledgeBase, NewFact
from kb.errors import KBError
from kb.facts import Fact, clean_text, clean_user

STATE_VERSION = 1


@dataclass(frozen=True)
class AgentConfig:
    """Everything that shapes one agent's behaviour."""

    # the language model and its decoding
    llm: LLMConfig = field(default_factory=LLMConfig)
    # how facts are found for a turn
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    # how much history and how many fact tokens go into the prompt
    prompt: PromptConfig = field(default_factory=PromptConfig)
    # PATTERNS (spaCy parse, no LLM) measured better than LLM JSON triples with the 135M default model
    extractor: ExtractorKind = ExtractorKind.PATTERNS
    # acknowledge a statement whose facts were learned with a template instead of the LLM: exact,
    # cites what was stored, and costs no generation (small models paraphrase facts wrongly)
    template_acknowledgements: bool = True
    # store every user utterance as an episode (the evidence facts link to)
    store_episodes: bool = True
    # stop generating after this many sentences: answers are meant to be short, and small models
    # drift once they have answered (0 = no limit)
    max_sentences: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "extractor", ExtractorKind.parse(self.extractor))
        if not 0 <= self.max_sentences <= 100:
            raise BadInputError(f"max_sentences={self.max_sentences} must be in 0..100")


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each step of one turn."""

    state: float = 0.0
    retrieval: float = 0.0
    generation: float = 0.0
    extraction: float = 0.0
    write_back: float = 0.0

    @property
    def memory_overhead(self) -> float:
        """Everything except generation."""
        return self.state + self.retrieval + self.extraction + self.write_back


@dataclass(frozen=True)
class Reply:
    """The outcome of one turn."""

    text: str
    state: Turn  # the dialogue state of this turn (intent, entities, references, focus...)
    used_facts: tuple[UsedFact, ...]  # numbered as cited in the prompt
    learned_facts: tuple[Fact, ...]  # new facts stored from the user's message
    superseded_facts: tuple[Fact, ...]  # facts those replaced or retracted
    timings: Timings = Timings()


class Agent:
    """A chat agent for one user over one knowledge base; thread-safe (one lock per agent)."""

    def __init__(self, kb: KnowledgeBase, llm: LanguageModel, user: str, config: AgentConfig | None = None,
                 nlp=None, owns_kb: bool = False):
        self.config = config or AgentConfig()
        self.kb = kb
        self.llm = llm
        self._owns_kb = owns_kb
        self._lock = threading.RLock()
        if nlp is None:
            from agent.nlp import load_nlp

            nlp = load_nlp()
        self._nlp = nlp
        self.tracker = StateTracker(nlp, self._known_entities, self._lookup_for_current_user, resolve=kb.resolve)
        self.retriever = Retriever(kb, self.config.retrieval)
        self.extractor: Extractor = (
            PatternExtractor(nlp) if self.config.extractor is ExtractorKind.PATTERNS
            else LLMExtractor(lambda prompt: llm.complete(prompt, max_new_tokens=160))
        )
        self.user = ""
        self.state: DialogueState
        self._history: list[Exchange] = []
        self.last_reply: Reply | None = None
        self._turn_vector: tuple[str, object] | None = None  # (text, embedding) of the current turn
        self.switch_user(user)

    # ------------------------------------------------------------------ construction

    @classmethod
    def open(cls, kb_dir: str | Path | None = None, *, user: str = "me", model: str = PACKAGED_SMOLLM,
             device: str = "auto", config: AgentConfig | None = None, embedder=None,
             llm: LanguageModel | None = None) -> "Agent":
        """Open the KB at ``kb_dir`` (default: kgrow's data directory) and load the model."""
        from agent.paths import default_kb_dir

        config = config or AgentConfig()
        if llm is None:
            config = replace(config, llm=replace(config.llm, model=model, device=device))
        kb = KnowledgeBase.open(Path(kb_dir) if kb_dir is not None else default_kb_dir(), embedder=embedder,
                                config=KBConfig(show_progress=True))
        try:
            kb.embedder  # load it now rather than in the middle of the first reply
            lm = llm if llm is not None else CausalLM(config.llm)
            return cls(kb, lm, user, config, owns_kb=True)
        except BaseException:
            kb.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._save_state()
            if self._owns_kb:
                self.kb.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions

    def _state_path(self, user: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in user)
        return self.kb.path / "sessions" / f"{safe}.json"

    def switch_user(self, user: str) -> None:
        """Make ``user`` the active user, resuming their saved session if there is one."""
        with self._lock:
            who = clean_user(user)
            if self.user:
                self._save_state()
            self.kb.ensure_user(who)
            self.user = who
            self.state = self._load_state(who) or DialogueState.new(who, uuid.uuid4().hex[:8])
            self._history = [Exchange(t.text, t.reply) for t in self.state.turns if t.reply is not None]
            self._history = trim_history(self._history, self.config.prompt.history_turns)
            reset = getattr(self.llm, "reset_cache", None)
            if reset is not None:
                reset()

    def reset_session(self) -> None:
        """Start a fresh conversation (the knowledge base is kept)."""
        with self._lock:
            self.state = DialogueState.new(self.user, uuid.uuid4().hex[:8])
            self._history = []
            self.last_reply = None
            reset = getattr(self.llm, "reset_cache", None)
            if reset is not None:
                reset()
            self._save_state()

    def _load_state(self, user: str) -> DialogueState | None:
        path = self._state_path(user)
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("version") != STATE_VERSION:
                raise StateError(f"{path} has state version {raw.get('version')!r}; expected {STATE_VERSION}")
            return DialogueState.from_dict(raw["state"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StateError(f"cannot restore the session in {path}: {e}; delete the file to start fresh") from None

    def _save_state(self) -> None:
        if self.kb.read_only or not self.user:
            return
        path = self._state_path(self.user)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"version": STATE_VERSION, "state": self.state.to_dict()}), encoding="utf-8")
        os.replace(tmp, path)

    # ------------------------------------------------------------------ KB helpers for the tracker

    def _known_entities(self, names: list[str]) -> list[str]:
        return self.kb._log.known_entities([self.kb.resolve(n) for n in names])

    def _lookup_for_current_user(self, subject: str, relation: str) -> str | None:
        try:
            got = self.kb.facts(user=self.user, entity=subject, relation=relation)
        except KBError:
            return None
        subj = self.kb.resolve(subject)
        for f in reversed(got):
            if f.subject == subj:
                return self.kb._log.entity_display(f.object) or f.object
        return None

    # ------------------------------------------------------------------ the turn

    def chat(self, text: str) -> Reply:
        """One turn: returns the reply with the state, the facts used, learned and superseded."""
        for _ in self.stream(text):
            pass
        assert self.last_reply is not None
        return self.last_reply

    def stream(self, text: str) -> Iterator[str]:
        """One turn, yielding the reply as it is generated; ``last_reply`` holds the full Reply after."""
        try:
            message = clean_text(text, "message")
        except KBError as e:
            raise BadInputError(str(e)) from None
        return self._turn(message)

    def _turn(self, text: str) -> Iterator[str]:
        with self._lock:
            t0 = time.perf_counter()
            turn = self.tracker.update(self.state, self.user, text, time.time())
            ctx = self.tracker.context_for(self.state, turn)
            t1 = time.perf_counter()
            triples = self._extract(text, turn, ctx)
            t2 = time.perf_counter()
            used: list[UsedFact] = []
            retrieval_time = 0.0
            learned: list[Fact] = []
            superseded: list[Fact] = []
            retracted: list[Fact] = []
            pieces: list[str] = []
            gen_time = 0.0
            written = False
            try:
                if triples and turn.intent in (Intent.STATEMENT, Intent.CORRECTION) and self.config.template_acknowledgements:
                    learned, superseded, retracted = self._write_back(text, turn, triples)
                    written = True
                if learned or superseded or retracted:
                    reply = _acknowledge(learned, superseded, retracted)
                    pieces.append(reply)
                    yield reply
                else:
                    r0 = time.perf_counter()  # retrieval only when the model will answer
                    if self._wants_facts(turn):
                        used = self.retriever.retrieve(text, turn, self.state, self.user, self._vector(text))
                    facts = fit_facts([u.fact for u in used], self.config.prompt.fact_token_budget)
                    used = used[: len(facts)]
                    turn.used_fact_ids = [u.fact.id for u in used]
                    retrieval_time = time.perf_counter() - r0
                    g0 = time.perf_counter()
                    system = system_text(self.user, self.state.profile)
                    name = display_name(self.user, self.state.profile)
                    asked = third_person(self._spell_out(text, turn), name) if turn.intent is Intent.QUESTION else text
                    messages = build_messages(system, self._history, facts, asked, name)
                    stream = self.llm.stream(messages)
                    try:
                        for piece in stream:
                            pieces.append(piece)
                            yield piece
                            if self.config.max_sentences and _sentences("".join(pieces)) >= self.config.max_sentences:
                                break
                    finally:
                        close = getattr(stream, "close", None)
                        if close is not None:
                            close()
                    gen_time = time.perf_counter() - g0
            finally:
                w0 = time.perf_counter()
                if not written:
                    learned, superseded, retracted = self._write_back(text, turn, triples)
                reply_text = "".join(pieces).strip()
                turn.reply = reply_text
                self._history = trim_history(self._history + [Exchange(text, reply_text)], self.config.prompt.history_turns)
                self._save_state()
                w1 = time.perf_counter()
                self.last_reply = Reply(
                    reply_text, turn, tuple(used), tuple(learned), tuple(superseded + retracted),
                    Timings(state=t1 - t0, retrieval=retrieval_time, generation=gen_time, extraction=t2 - t1,
                            write_back=w1 - w0),
                )

    def _spell_out(self, text: str, turn: Turn) -> str:
        """Replace pronouns and possessive chains by the entities' names: 'my sister's husband' -> 'John'.

        First-person words are left to ``third_person``, and so is a single "my X" when the question
        asks who X is ("who is my sister?" -> "who is Sam's sister?"); otherwise "where does my sister
        live?" becomes "where does Mary live?", the form in which the fact is written.
        """
        out = text
        for surface, entity in sorted(turn.references.items(), key=lambda kv: -len(kv[0])):
            low = surface.lower()
            if low in _FIRST_PERSON or len(surface) < 2:
                continue
            if (low.startswith(("my ", "mine ")) and "'s " not in low and "’s " not in low
                    and _ASKS_IDENTITY.search(text)):
                continue  # "who is my sister?" asks the relation itself: keep it for third_person
            shown = self.kb._log.entity_display(self.kb.resolve(entity)) or entity
            out = re.sub(rf"(?i)\b{re.escape(surface)}\b", shown[:1].upper() + shown[1:], out)
        return out

    def _vector(self, text: str):
        """The embedding of this turn's text, computed once and shared by search and the episode."""
        if self._turn_vector is None or self._turn_vector[0] != text:
            self._turn_vector = (text, self.kb.embedder.embed_query(text))
        return self._turn_vector[1]

    def _wants_facts(self, turn: Turn) -> bool:
        return turn.intent not in (Intent.COMMAND, Intent.FEEDBACK)

    def _extract(self, text: str, turn: Turn, ctx: ExtractionContext) -> list[Triple]:
        if turn.intent not in (Intent.STATEMENT, Intent.CORRECTION):
            return []
        return self.extractor.extract(text, ctx, doc=self.tracker.last_doc)

    def _write_back(self, text: str, turn: Turn, triples: list[Triple]) -> tuple[list[Fact], list[Fact], list[Fact]]:
        """Store the utterance and its facts with provenance; retract negated ones. Idempotent per turn."""
        source = f"{self.state.session_id}/turn/{turn.index}"
        note = f"correction in turn {turn.index}" if turn.intent is Intent.CORRECTION else None
        episode_id = None
        if self.config.store_episodes and turn.intent in (Intent.STATEMENT, Intent.CORRECTION, Intent.QUESTION):
            episode_id = self.kb.add_episode(text, user=self.user, speaker="user", source_id=source,
                                             vector=self._vector(text)).id
        learned: list[Fact] = []
        superseded: list[Fact] = []
        retracted: list[Fact] = []
        items = [NewFact(t.subject, t.relation, t.object, t.text, user=self.user, source_id=source,
                         episode_id=episode_id, confidence=t.confidence, note=note) for t in triples if not t.negated]
        if items:
            for r in self.kb.add_facts(items):
                if r.created:
                    learned.append(r.fact)
                superseded.extend(r.superseded)
        for t in (t for t in triples if t.negated):
            retracted.extend(self._retract(t, source))
        turn.learned_fact_ids = [f.id for f in learned]
        turn.superseded_fact_ids = [f.id for f in superseded + retracted]
        self.tracker.apply_learned(self.state, superseded + retracted + learned)  # clear, then set slots
        return learned, superseded, retracted

    def _retract(self, t: Triple, source: str) -> list[Fact]:
        try:
            current = self.kb.facts(user=self.user, entity=t.subject, relation=t.relation)
        except KBError:
            return []
        subj, obj = self.kb.resolve(t.subject), self.kb.resolve(t.object)
        out = []
        for f in current:
            if f.subject == subj and (f.object == obj or not t.object.strip()):
                try:
                    out.append(self.kb.retract(f.id, reason=f"negated in {source}"))
                except KBError:
                    pass
        return out


def _acknowledge(learned: list[Fact], superseded: list[Fact], retracted: list[Fact]) -> str:
    """A reply that says exactly what was stored, what it replaced, and what no longer holds."""
    parts = []
    if learned:
        parts.append("Got it, I'll remember: " + " ".join(_sentence(f.text) for f in learned))
    if superseded:
        old = "; ".join(_sentence(f.text).rstrip(".") for f in superseded)
        parts.append(f"(This replaces what I knew before: {old}.)")
    if retracted:
        old = "; ".join(_sentence(f.text).rstrip(".") for f in retracted)
        parts.append(f"Noted, this no longer holds: {old}.")
    return " ".join(parts)


_ASKS_IDENTITY = re.compile(r"(?i)\b(?:who|whom|name|called)\b")
_FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "i'm", "i've", "i'd", "i'll"})
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)|\n")


def _sentences(text: str) -> int:
    """Completed sentences in ``text`` (a sentence ends at . ! ? followed by space/end, or a newline)."""
    return len(_SENTENCE_END.findall(text.strip() + " ")) if text.strip() else 0


def _sentence(text: str) -> str:
    t = text.strip()
    t = t[:1].upper() + t[1:]
    return t if t.endswith((".", "!", "?")) else t + "."
