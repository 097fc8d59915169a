"""The Agent: one user's conversation over one knowledge base, each turn run through the stage pipeline (agent/pipeline/stages.py)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from agent.answers.support import SupportConfig
from agent.dialogue.state import DialogueState, StateTracker
from agent.errors import BadInputError
from agent.extraction.extract import Extractor, ExtractorKind, build_extractor
from agent.fusion.adapter import FusionMode
from agent.fusion.fuser import AgentFusionConfig, Fuser
from agent.generation.llm import PACKAGED_SMOLLM, CausalLM, LanguageModel, LLMConfig
from agent.generation.prompt import PromptConfig
from agent.memory.ingest import ASSISTANT, IngestReport, Ingestor, Progress
from agent.memory.recall import Memory, RecallConfig, Recaller
from agent.memory.retrieval import RetrievalConfig, Retriever
from agent.pipeline.feedback import FeedbackConfig, FeedbackResult, Rating, apply_feedback
from agent.pipeline.session import Session
from agent.pipeline.stages import Parts, TurnPipeline
from agent.pipeline.streaming import TurnGate
from agent.pipeline.turn import take_turn
from agent.profile.profile import Profile, ProfileConfig, ProfileStore
from agent.validation import check, within
from agent.types import Reply, Timings  # noqa: F401 - re-exported: callers import them from here
from kb import KBConfig, KnowledgeBase
from kb.errors import KBError
from kb.facts import clean_text, clean_user


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
    max_sentences: int = within(2, 0, 100)
    # generation limits for the answer-length preferences
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    # how ratings and corrections move confidences, and how a rejected answer is regenerated
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    # knowledge fusion: retrieved facts fused into the model's hidden states (agent/fusion/fuser.py)
    fusion: AgentFusionConfig = field(default_factory=AgentFusionConfig)
    # the answer policy: which questions the bare model answers, when to abstain (agent/answers/support.py)
    support: SupportConfig = field(default_factory=SupportConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extractor", ExtractorKind.parse(self.extractor))
        check(self)  # every within() field in its range


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
        self.pipeline = TurnPipeline(Parts(kb, llm, self.tracker, self.extractor, self.retriever, self.recaller,
                                           self.fuser), self.config)
        self.profiles = ProfileStore(kb.path)  # per-user preferences under KB_DIR/profiles/
        self.session: Session | None = None  # the active user's conversation; only the pipeline's commit changes it
        self.switch_user(user)

    @property
    def user(self) -> str:
        """The active user."""
        return self.session.user if self.session is not None else ""

    @property
    def state(self) -> DialogueState:
        """The active user's dialogue state."""
        return self.session.state

    @property
    def last_reply(self) -> Reply | None:
        return self.session.last_reply

    @property
    def adapter(self):
        """The LoRA adapter attached by ``open(adapter=...)`` (agent.lora.adapters.AdapterHandle), or None."""
        return self.pipeline.adapter

    @adapter.setter
    def adapter(self, handle) -> None:
        self.pipeline.adapter = handle

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
            self.session.save()
            if self._owns_kb:
                self.kb.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions

    def switch_user(self, user: str) -> None:
        """Make ``user`` the active user, resuming their saved session if there is one."""
        with self._lock:
            self._turns.settle()
            who = clean_user(user)
            if self.session is not None:
                self.session.save()
            self.session = Session.open(self.kb, self.profiles, who, self.config.prompt.history_turns)
            if self.adapter is not None:  # another user's adapter must not answer for this one
                self.adapter.follow(who)
            self._reset_model_cache()

    def reset_session(self) -> None:
        """Start a fresh conversation (the knowledge base is kept)."""
        with self._lock:
            self._turns.settle()
            self.session.restart()
            self._reset_model_cache()

    def _reset_model_cache(self) -> None:
        self.llm.reset_cache()  # every LanguageModel has one (agent/generation/model.py)

    @property
    def profile(self) -> Profile:
        """The active user's profile: stored preferences plus the slots known from their facts."""
        return self.session.profile

    def set_profile(self, profile: Profile) -> None:
        """Store the active user's preferences (``profile.slots`` are ignored) and use them from the next reply."""
        with self._lock:
            self.session.set_preferences(profile)

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
        return take_turn(self.pipeline, self.session, self._lock, self._turns, message,
                         parse_time(now, "now") if now is not None else None)

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
            s = self.session
            turn, _ = self.tracker.read(s.state, s.user, body, at if at is not None else time.time())
            return self.pipeline.memories(s, body, turn, self.tracker.advance(s.state, turn), n, at)

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
            return apply_feedback(self.pipeline, self.session, rating, correction, note)
