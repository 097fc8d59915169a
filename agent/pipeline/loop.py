"""The agent loop: state update, retrieval, generation, fact extraction and write-back, one turn at a time."""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

from agent.errors import BadInputError, StateError
from agent.extraction.extract import ExtractionContext, Extractor, ExtractorKind, Triple, build_extractor
from agent.formats import SESSION
from agent.types import Reply, Timings  # noqa: F401 - re-exported: callers import them from here
from agent.pipeline.feedback import (Candidate, FeedbackConfig, FeedbackResult, FeedbackRound, FeedbackSignal, Rating,
                            apply_feedback)
from agent.generation.llm import PACKAGED_SMOLLM, CausalLM, LanguageModel, LLMConfig, Message
from agent.profile.profile import Profile, ProfileConfig, ProfileStore, known_slots
from agent.generation.prompt import Exchange, PromptConfig, trim_history
from agent.fusion.fuser import AgentFusionConfig, FusedFact, Fuser
from agent.fusion.adapter import FusionMode
from agent.memory.ingest import ASSISTANT, IngestReport, Ingestor, Progress
from agent.memory.recall import Memory, RecallConfig, Recaller
from agent.memory.retrieval import RetrievalConfig, Retriever, UsedFact
from agent.dialogue.state import DialogueState, StateTracker, Turn
from agent.pipeline.streaming import TurnGate
from agent.pipeline.turn import (answer_candidates, asked_form, extract_triples, facts_for, prompt_for, recall_for,
                        take_turn, write_back)
from kb import KBConfig, KnowledgeBase
from kb.errors import KBError
from kb.facts import Fact, clean_text, clean_user
from kb.files import write_text_atomic


@dataclass(frozen=True)
class AgentConfig:
    """Everything that shapes one agent's behaviour."""

    # the language model and its decoding
    llm: LLMConfig = field(default_factory=LLMConfig)
    # how facts are found for a turn
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    # how facts and episodes are ranked together (Agent.recall, and every turn)
    recall: RecallConfig = field(default_factory=RecallConfig)
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
    # drift once they have answered (0 = no limit); a user's "short"/"detailed" preference overrides it
    max_sentences: int = 2
    # generation limits for the answer-length preferences
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    # how ratings and corrections move confidences, and how a rejected answer is regenerated
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    # knowledge fusion: retrieved facts fused into the model's hidden states (agent/fusion/fuser.py)
    fusion: AgentFusionConfig = field(default_factory=AgentFusionConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extractor", ExtractorKind.parse(self.extractor))
        if not 0 <= self.max_sentences <= 100:
            raise BadInputError(f"max_sentences={self.max_sentences} must be in 0..100")


class Agent:
    """A chat agent for one user over one knowledge base; thread-safe (one lock per agent)."""

    def __init__(self, kb: KnowledgeBase, llm: LanguageModel, user: str, config: AgentConfig | None = None,
                 nlp=None, owns_kb: bool = False, fusion: FusionMode | str | None = None):
        """``fusion`` (auto/on/off) overrides ``config.fusion.mode``."""
        self.config = config or AgentConfig()
        if fusion is not None:
            self.config = replace(self.config, fusion=replace(self.config.fusion, mode=FusionMode.parse(fusion)))
        self.kb = kb
        self.llm = llm
        self._owns_kb = owns_kb
        self._lock = threading.RLock()
        self._turns = TurnGate(self._lock)  # one open turn at a time; never a lock across a yield
        self.adapter = None  # agent.lora.adapters.AdapterHandle of a LoRA adapter attached by open(adapter=...)
        if nlp is None:
            from agent.language.nlp import load_nlp

            nlp = load_nlp()
        self._nlp = nlp
        self.tracker = StateTracker(nlp, self._known_entities, self._lookup_for_current_user, resolve=kb.resolve)
        self.retriever = Retriever(kb, self.config.retrieval)
        self.recaller = Recaller(kb, self.config.recall)
        self.fuser = Fuser(llm, kb, self.config.fusion)
        # the LLM extractor decodes a transformers model under the triple-JSON constraint (agent/extraction/extract.py)
        self.extractor: Extractor = build_extractor(self.config.extractor, nlp=nlp, llm=llm)
        self.user = ""
        self.state: DialogueState
        self.profiles = ProfileStore(kb.path)  # per-user preferences under KB_DIR/profiles/
        self._profile: Profile  # the active user's stored preferences (slots live in state.profile)
        self._history: list[Exchange] = []
        self.last_reply: Reply | None = None
        self._turn_vector: tuple[str, object] | None = None  # (text, embedding) of the current turn
        self.switch_user(user)

    # ------------------------------------------------------------------ construction

    @classmethod
    def open(cls, kb_dir: str | Path | None = None, *, user: str = "me", model: str = PACKAGED_SMOLLM,
             device: str = "auto", config: AgentConfig | None = None, embedder=None,
             llm: LanguageModel | None = None, adapter: str | None = None,
             fusion: FusionMode | str | None = None) -> "Agent":
        """Open the KB at ``kb_dir`` (default: kgrow's data directory) and load the model.

        ``adapter``: a LoRA adapter from `kgrow learn` to attach to the model (``latest`` or ``vN`` of
        ``user``'s adapters in this KB, or an adapter directory); ``agent.adapter`` turns it off and on.
        """
        from agent.paths import default_kb_dir

        config = config or AgentConfig()
        if llm is None:
            config = replace(config, llm=replace(config.llm, model=model, device=device))
        kb = KnowledgeBase.open(Path(kb_dir) if kb_dir is not None else default_kb_dir(), embedder=embedder,
                                config=KBConfig(show_progress=True))
        try:
            found = None
            if adapter is not None:  # resolved before any model loads, so a wrong version fails fast
                from agent.lora.adapters import AdapterStore, attach

                found = AdapterStore(kb.path).resolve(adapter, clean_user(user))
                if found.meta.user != clean_user(user):  # its weights hold another user's facts
                    raise BadInputError(f"adapter {found.path} was learned from the facts of user "
                                        f"{found.meta.user!r}, not {clean_user(user)!r}; open it with "
                                        f"user={found.meta.user!r}")
            kb.embedder  # load it now rather than in the middle of the first reply
            lm = llm if llm is not None else CausalLM(config.llm)
            agent = cls(kb, lm, user, config, owns_kb=True, fusion=fusion)
            if found is not None:
                agent.adapter = attach(lm, found)
                agent.adapter.follow(agent.user)
            return agent
        except BaseException:
            kb.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._turns.settle()  # a stream left half-read is finished first
            if self.adapter is not None:
                self.adapter.off()  # a model the caller passed in goes back as it came
            self.fuser.close()  # and without the fusion hooks
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
            self._turns.settle()
            who = clean_user(user)
            profile = self.profiles.load(who)  # an unreadable profile stops the switch before anything changes
            if self.user:
                self._save_state()
            self.kb.ensure_user(who)
            self.user = who
            self.state = self._load_state(who) or DialogueState.new(who, uuid.uuid4().hex[:8])
            self.state.profile = known_slots(self.kb, who)  # the KB is the truth (facts may be forgotten meanwhile)
            self._profile = profile
            self._history = [Exchange(t.text, t.reply) for t in self.state.turns if t.reply is not None]
            self._history = trim_history(self._history, self.config.prompt.history_turns)
            if self.adapter is not None:  # another user's adapter must not answer for this one
                self.adapter.follow(who)
            reset = getattr(self.llm, "reset_cache", None)
            if reset is not None:
                reset()

    def reset_session(self) -> None:
        """Start a fresh conversation (the knowledge base is kept)."""
        with self._lock:
            self._turns.settle()
            self.state = DialogueState.new(self.user, uuid.uuid4().hex[:8])
            self.state.profile = known_slots(self.kb, self.user)
            self._history = []
            self.last_reply = None
            reset = getattr(self.llm, "reset_cache", None)
            if reset is not None:
                reset()
            self._save_state()

    @property
    def profile(self) -> Profile:
        """The active user's profile: stored preferences plus the slots known from their facts."""
        return replace(self._profile, slots=dict(self.state.profile))

    def set_profile(self, profile: Profile) -> None:
        """Store the active user's preferences (``profile.slots`` are ignored) and use them from the next reply."""
        with self._lock:
            if profile.user != self.user:
                raise BadInputError(f"this profile belongs to {profile.user!r}, not to the active user {self.user!r}")
            self.profiles.save(profile.preferences())  # raises on failure; the old profile stays in force
            self._profile = profile.preferences()

    def _load_state(self, user: str) -> DialogueState | None:
        path = self._state_path(user)
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StateError(f"cannot restore the session in {path}: {e}; delete the file to start fresh") from None
        raw = SESSION.upgrade(raw, str(path))  # numbered steps (agent/formats.py); newer files are refused
        try:
            return DialogueState.from_dict(raw["state"])
        except (ValueError, KeyError, TypeError) as e:
            raise StateError(f"cannot restore the session in {path}: {e}; delete the file to start fresh") from None

    def _save_state(self) -> None:
        if self.kb.read_only or not self.user:
            return
        path = self._state_path(self.user)
        path.parent.mkdir(exist_ok=True)
        write_text_atomic(path, json.dumps({"format": SESSION.newest, "state": self.state.to_dict()}))  # fsynced

    # ------------------------------------------------------------------ KB helpers for the tracker

    def _known_entities(self, names: list[str]) -> list[str]:
        return self.kb.known_entities([self.kb.resolve(n) for n in names])

    def _lookup_for_current_user(self, subject: str, relation: str) -> str | None:
        try:
            got = self.kb.facts(user=self.user, entity=subject, relation=relation)
        except KBError:
            return None
        subj = self.kb.resolve(subject)
        for f in reversed(got):
            if f.subject == subj:
                return self.kb.entity_display(f.object) or f.object
        return None

    # ------------------------------------------------------------------ the turn

    def chat(self, text: str, now: object = None) -> Reply:
        """One turn: returns the reply with the state, the facts used, learned and superseded.
        ``now`` (default: the clock) is when the message is said; recall sees nothing said later."""
        for _ in self.stream(text, now=now):
            pass
        assert self.last_reply is not None
        return self.last_reply

    def stream(self, text: str, now: object = None) -> Iterator[str]:
        """One turn, yielding the reply as it is generated; ``last_reply`` holds the full Reply after."""
        from agent.memory.ingest import parse_time

        try:
            message = clean_text(text, "message")
        except KBError as e:
            raise BadInputError(str(e)) from None
        return take_turn(self, message, parse_time(now, "now") if now is not None else None)

    def recall(self, text: str, k: int | None = None, now: object = None) -> list[Memory]:
        """The memories (facts and episodes) the agent would put in front of its model for ``text``,
        best first; the dialogue state is read, not changed. ``now`` (default: the clock) is when the
        message is asked: nothing said later is recalled."""
        from agent.memory.ingest import parse_time

        body = clean_text(text, "message")
        n = self.config.recall.k if k is None else k
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1000:
            raise BadInputError(f"k={k!r} is invalid; give an integer from 1 to 1000")
        at = parse_time(now, "now") if now is not None else None
        with self._lock:
            probe = DialogueState.from_dict(self.state.to_dict())
            turn = self.tracker.update(probe, self.user, body, at if at is not None else time.time())
            return recall_for(self, body, turn, n, at)

    def ingest(self, turns, *, me: str, assistant: str = ASSISTANT, progress: Progress | None = None) -> IngestReport:
        """Store a chat history in the active user's memory: every turn as an episode, the facts of
        the human turns with provenance. ``turns`` are ChatTurn records or mappings with the keys
        speaker, text, time, session, source_id; ``me`` names the speaker who is this agent's user,
        ``assistant`` the agent; everyone else is a person the user talks with. Idempotent."""
        with self._lock:
            return Ingestor(self.kb, self.extractor, self._nlp, self.user).ingest(
                turns, me=me, assistant=assistant, progress=progress)

    def feedback(self, rating: Rating | int | str | None = None, correction: str | None = None,
                 note: str | None = None) -> FeedbackResult:
        """Rate (1..5, "good", "bad"), correct or comment on the last reply (agent/pipeline/feedback.py has the rules).

        A correction is stored like a user statement (its facts supersede what they contradict); the
        facts the reply used lose confidence for a bad rating and gain it for a good one; a bad rating
        of a generated answer regenerates it, and the new answer becomes ``last_reply`` (with the
        rounds in ``Reply.rounds``). Raises BadInputError, changing nothing, for no previous reply, an
        empty correction or note, a rating out of range, or no feedback at all.
        """
        with self._lock:
            self._turns.settle()  # the reply rated is the last one, finished
            return apply_feedback(self, rating, correction, note)

    # ------------------------------------------------------------------ the turn pipeline (agent/pipeline/turn.py)
    # the steps agent/pipeline/feedback.py reuses to store a correction and to answer a question again

    def _extract(self, text: str, turn: Turn, ctx: ExtractionContext) -> list[Triple]:
        return extract_triples(self, text, turn, ctx)

    def _write_back(self, text: str, turn: Turn, triples: list[Triple],
                    note: str | None = None) -> tuple[list[Fact], list[Fact], list[Fact]]:
        return write_back(self, text, turn, triples, note)

    def _facts_for(self, text: str, turn: Turn) -> list[UsedFact]:
        return facts_for(self, text, turn)

    def _prompt_for(self, text: str, turn: Turn, used: list[UsedFact], history: list[Exchange]) -> list[Message]:
        return prompt_for(self, text, turn, used, history)

    def _asked(self, text: str, turn: Turn) -> str:
        return asked_form(self, text, turn)

    def _candidates(self, messages: list[Message], signal: FeedbackSignal, used: Sequence[UsedFact] = (),
                    asked: str | None = None) -> list[Candidate]:
        return answer_candidates(self, messages, signal, used, asked)
