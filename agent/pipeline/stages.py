"""The turn pipeline: understand -> recall -> compose -> generate -> commit, one public object whose stages pass plain records."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from agent.answers import support
from agent.answers.plans import plan_answer
from agent.dialogue.state import DialogueState, StateTracker, Turn
from agent.extraction.triple import ExtractionContext, Extractor, Triple
from agent.fusion.fuser import Fuser
from agent.generation.llm import LanguageModel, Message
from agent.generation.prompt import Exchange, bare_messages, build_messages, display_name, fit_facts, system_text, third_person
from agent.language.intent import Intent
from agent.language.vocab import FIRST_PERSON
from agent.memory.citation import leading_episode, snippets
from agent.memory.recall import Memory, Recaller
from agent.memory.retrieval import Retriever, UsedFact
from agent.pipeline import evidence
from agent.pipeline.commit import TurnWriter, acknowledge
from agent.profile.preference import PreferenceMatch, find_preferences
from agent.profile.preference import acknowledge as acknowledge_preferences
from agent.profile.preference import apply as apply_preferences
from agent.profile.profile import PREFERENCE_RELATIONS, Profile, generation
from agent.types import Candidate, Composed, FeedbackSignal, Generated, Recalled, Reply, ReplyKind, Stored, Timings, Trace, Understood
from kb import KnowledgeBase

if TYPE_CHECKING:
    from agent.pipeline.loop import AgentConfig
    from agent.pipeline.session import Session

_ASKS_IDENTITY = re.compile(r"(?i)\b(?:who|whom|name|called)\b")


@dataclass(frozen=True)
class Parts:
    """The components one pipeline runs on (the Agent builds them once)."""

    kb: KnowledgeBase
    llm: LanguageModel
    tracker: StateTracker  # parses and resolves a message against the dialogue state
    extractor: Extractor  # facts from one utterance
    retriever: Retriever  # the fact retriever (resolved query, entity walk)
    recaller: Recaller  # episodes and facts ranked together (Agent.recall)
    fuser: Fuser  # knowledge fusion's runtime side


class TurnPipeline:
    """One turn's stages, public so that feedback, evaluations and integrations reuse them.

    Nothing before ``commit`` changes the session or the knowledge base; ``commit`` writes the turn
    (agent/pipeline/commit.py) and then advances the session in one step.
    """

    def __init__(self, parts: Parts, config: AgentConfig):
        self.parts = parts
        self.config = config
        self.writer = TurnWriter(parts.kb, parts.tracker, config.store_episodes)
        self.adapter = None  # agent.lora.adapters.AdapterHandle when a LoRA adapter is attached (Agent.open)

    @property
    def kb(self) -> KnowledgeBase:
        return self.parts.kb

    @property
    def tracker(self) -> StateTracker:
        return self.parts.tracker

    # ------------------------------------------------------------------ understand

    def understand(self, session: Session, text: str, now: float | None = None,
                   intent: Intent | None = None) -> Understood:
        """Parse and resolve ``text`` (said at ``now``; ``intent`` overrides the classifier, as a /fix
        does), read the preferences it states and extract the world facts it states."""
        p = self.parts
        t0 = time.perf_counter()
        turn, doc = p.tracker.read(session.state, session.user, text, time.time() if now is None else now)
        if intent is not None:
            turn.intent = intent
        state = p.tracker.advance(session.state, turn)
        ctx = p.tracker.context_for(state, turn)
        t1 = time.perf_counter()
        prefs, after, ack = self._preferences(session, text, turn)
        triples = self._extract(prefs.rest if prefs.changes else text, turn, ctx, doc)
        t2 = time.perf_counter()
        only_preferences = bool(prefs.changes) and not triples  # a preference is no world fact: no episode
        stored_or_recalled = turn.intent not in (Intent.COMMAND, Intent.FEEDBACK) and not only_preferences
        vector = p.kb.embedder.embed_query(text) if stored_or_recalled else None  # one embedding per turn
        return Understood(text, now, turn, doc, state, tuple(triples), after, ack, vector,
                          seconds_state=(t1 - t0) + (time.perf_counter() - t2), seconds_extraction=t2 - t1)

    def _preferences(self, session: Session, text: str, turn: Turn) -> tuple[PreferenceMatch, Profile | None, str]:
        if turn.intent is Intent.COMMAND:
            return PreferenceMatch((), text), None, ""
        found = find_preferences(text, session.preferences)
        if not found.changes:
            return found, None, ""
        before = session.preferences
        after = apply_preferences(before, found.changes)
        return found, (after if after != before else None), acknowledge_preferences(before, after)

    def _extract(self, text: str, turn: Turn, ctx: ExtractionContext, doc) -> list[Triple]:
        """World facts of statements and corrections; preferences, wishes and reports are left out."""
        if turn.intent not in (Intent.STATEMENT, Intent.CORRECTION):
            return []
        ctx = replace(ctx, now=turn.time)  # "next month" is read against the turn's time
        triples = self.parts.extractor.extract(text, ctx, doc=doc if doc.text == text else None)
        return [t for t in triples if t.relation not in PREFERENCE_RELATIONS and t.stored]

    def acknowledges(self, u: Understood) -> bool:
        """The reply is a template saying what commit stores: facts stated, or preferences changed."""
        return bool(u.preferences_ack) or bool(u.triples and self.config.template_acknowledgements)

    # ------------------------------------------------------------------ recall

    def recall(self, session: Session, u: Understood, k: int | None = None) -> Recalled:
        """The memories for ``u``, the facts and snippets that fit the prompt, and the answer plan."""
        r0 = time.perf_counter()
        turn = u.turn
        memories = self.memories(session, u.text, turn, u.state, k or self.config.recall.k, u.now, u.vector) \
            if _wants_memories(turn) else []
        used, snips = self._for_prompt(u.text, memories)
        plan = None
        if turn.intent is Intent.QUESTION:
            profile = self.profile(session, u)
            question, found = evidence.records(self.kb, session.user, profile, self.adapter_active, u.text,
                                               turn, memories, self.asked_form(profile, u.text, turn))
            plan = support.plan(question, found, self.tracker.nlp, self.support_config, doc=u.doc)
            if plan.action is not support.Action.ANSWER:
                used, snips = [], []
        return Recalled(tuple(memories), tuple(used), tuple(snips), plan, time.perf_counter() - r0)

    def memories(self, session: Session, text: str, turn: Turn, state: DialogueState, k: int,
                 now: float | None, vector=None) -> list[Memory]:
        """Agent.recall's ranking for ``text`` as ``turn`` resolved it: the fact retriever's facts (found
        on the resolved query, "my sister" -> Mary, plus the entity walk and relation cues) and hybrid
        search over facts and episodes on the words as said: episodes are stored verbatim ("I adopted
        ..."), and spelling "I" out as the user would pull every fact about them in by graph expansion."""
        p = self.parts
        vector = p.kb.embedder.embed_query(text) if vector is None else vector
        facts = p.retriever.retrieve(text, turn, state, session.user, vector)
        return p.recaller.recall(text, user=session.user, k=k, now=now, query_vector=vector,
                                 facts=[(f.fact, f.score, f.why) for f in facts])

    def _for_prompt(self, text: str, memories: Sequence[Memory]) -> tuple[list[UsedFact], list[str]]:
        """The recalled facts that fit the prompt (numbered) and dated snippets of the best episodes."""
        chosen = sorted((m for m in memories if m.fact_rank is not None), key=lambda m: m.fact_rank)
        facts = (chosen or [m for m in memories if m.fact is not None])[: self.config.retrieval.k]
        facts = facts[: len(fit_facts([m.fact for m in facts], self.config.prompt.fact_token_budget))]
        used = [UsedFact(i, m.fact, m.score, m.why) for i, m in enumerate(facts, start=1)]
        return used, snippets(memories, text, self.config.recall)

    def facts_for(self, session: Session, state: DialogueState, text: str, turn: Turn) -> list[UsedFact]:
        """The facts retrieved to answer ``text`` (of ``turn``), cut to the prompt's fact budget."""
        if not _wants_memories(turn):
            return []
        vector = self.kb.embedder.embed_query(text)
        used = self.parts.retriever.retrieve(text, turn, state, session.user, vector)
        return used[: len(fit_facts([u.fact for u in used], self.config.prompt.fact_token_budget))]

    # ------------------------------------------------------------------ compose

    def compose(self, session: Session, u: Understood, r: Recalled | None) -> Composed:
        """The reply's kind and, for the model, its prompt, knowledge tokens and limits."""
        profile = self.profile(session, u)
        limits = generation(profile, self.config.profile, self.config.max_sentences)
        if self.acknowledges(u):
            return Composed(ReplyKind.ACKNOWLEDGE, text=u.preferences_ack, limits=limits)
        plan = r.plan if r is not None else None
        used = list(r.used) if r is not None else []
        if plan is not None and plan.action is support.Action.ABSTAIN:
            return Composed(ReplyKind.FIXED, text=plan.text, limits=limits)
        if u.turn.intent is Intent.QUESTION:  # "Where is she moving?": the plan fact's sentence
            said = plan_answer(u.doc, [f.fact for f in used], session.user, u.turn.references, display_name(profile))
            if said is not None:
                return Composed(ReplyKind.FIXED, text=said, limits=limits)
        if plan is not None and plan.action is support.Action.BARE:
            return Composed(ReplyKind.BARE, messages=tuple(bare_messages(u.text, profile)), limits=limits)
        fuser = self.parts.fuser
        messages = self.prompt_for(profile, u.text, u.turn, used, session.history, r.snippets if r else ())
        asked = self.asked_form(profile, u.text, u.turn)
        return Composed(ReplyKind.MODEL, messages=tuple(messages), knowledge=fuser.tokens([f.fact for f in used], asked),
                        limits=limits, held=plan is not None and plan.action is support.Action.ANSWER,
                        evidence=leading_episode(r.memories, self.config.recall.evidence_ratio) if r else None,
                        cited=bool(used) and fuser.cites_text)

    def prompt_for(self, profile: Profile, text: str, turn: Turn, used: Sequence[UsedFact],
                   history: Sequence[Exchange], snips: Sequence[str] = ()) -> list[Message]:
        """The messages the model answers ``text`` from: system, ``history``, the numbered ``used`` facts and
        dated ``snips`` of earlier turns, the text."""
        cites = self.parts.fuser.cites_text
        return build_messages(system_text(profile), list(history), [u.fact for u in used] if cites else [],
                              self.asked_form(profile, text, turn), display_name(profile), snips if cites else ())

    def asked_form(self, profile: Profile, text: str, turn: Turn) -> str:
        """The user's message as the model is asked it: a question in the third person, names spelled out."""
        if turn.intent is not Intent.QUESTION:
            return text
        return third_person(self._spell_out(text, turn), display_name(profile))

    def _spell_out(self, text: str, turn: Turn) -> str:
        """Replace pronouns and possessive chains by the entities' names: 'my sister's husband' -> 'John'.

        First-person words are left to ``third_person``, and so is a single "my X" when the question
        asks who X is ("who is my sister?" -> "who is Sam's sister?"); otherwise "where does my sister
        live?" becomes "where does Mary live?", the form in which the fact is written.
        """
        out = text
        for surface, entity in sorted(turn.references.items(), key=lambda kv: -len(kv[0])):
            low = surface.lower()
            if low in FIRST_PERSON or len(surface) < 2:
                continue
            if (low.startswith(("my ", "mine ")) and "'s " not in low and "’s " not in low
                    and _ASKS_IDENTITY.search(text)):
                continue  # "who is my sister?" asks the relation itself: keep it for third_person
            shown = self.kb.entity_display(self.kb.resolve(entity)) or entity
            out = re.sub(rf"(?i)\b{re.escape(surface)}\b", shown[:1].upper() + shown[1:], out)
        return out

    def profile(self, session: Session, u: Understood | None = None) -> Profile:
        """The user's profile as this turn sees it: the preferences it states, else the stored ones."""
        prefs = u.preferences if u is not None and u.preferences is not None else session.preferences
        return replace(prefs, slots=dict((u.state if u is not None else session.state).profile))

    @property
    def support_config(self) -> support.SupportConfig:
        return self.config.support

    @property
    def adapter_active(self) -> bool:
        """A LoRA adapter answers for the user (the answer policy then trusts its closed-book recall)."""
        return self.adapter is not None and self.adapter.active

    # ------------------------------------------------------------------ generate

    def generate(self, c: Composed) -> Iterator[str]:
        """The reply's pieces as the model makes them (nothing for an acknowledgement)."""
        if c.kind is ReplyKind.ACKNOWLEDGE:
            return iter(())
        if c.kind is ReplyKind.FIXED:
            return iter([c.text])
        tokens = c.limits.max_new_tokens if c.limits is not None else None
        if c.kind is ReplyKind.BARE:
            return self.parts.llm.stream(list(c.messages), max_new_tokens=tokens)
        return self.parts.fuser.stream(self.parts.llm, list(c.messages), tokens, c.knowledge, cited=c.cited,
                                       evidence=c.evidence)

    def ground(self, text: str, r: Recalled | None) -> str:
        """A held answer cut to what the memories support (the plan's ANSWER action)."""
        if r is None or r.plan is None:
            return text
        return support.ground(text, r.plan, self.tracker.nlp, self.support_config)

    def candidates(self, profile: Profile, messages: Sequence[Message], signal: FeedbackSignal,
                   used: Sequence[UsedFact] = (), asked: str | None = None) -> list[Candidate]:
        """Candidate answers for one feedback round, all grounded; every regeneration goes through here.

        With fusion on, half the candidates come from the text path and half with the ``used`` facts
        and the feedback vector ``signal.vector`` (keyed by the ``asked`` question, its value the
        vector itself) fused as knowledge tokens; the re-ranker chooses among all of them (measured
        on examples/feedback: fused candidates alone were right first time in 15/24, text alone 24/24).
        Candidates come back unscored; feedback.rerank scores them.
        """
        from agent.pipeline.candidates import generate_candidates

        cfg, fuser, nlp = self.config.feedback, self.parts.fuser, self.tracker.nlp
        limits = generation(profile, self.config.profile, self.config.max_sentences)
        facts = [u.fact for u in used]
        tokens = fuser.tokens(facts, asked or "", [(asked, signal.vector, "")] if asked else [])
        grounding = support.answer_plan(facts, asked or "", display_name(profile), nlp)

        def sample(n: int, seed: int) -> list[Candidate]:
            return generate_candidates(self.parts.llm, messages, n=n, temperature=cfg.temperature, top_p=cfg.top_p,
                                       max_new_tokens=limits.max_new_tokens or cfg.max_new_tokens,
                                       max_sentences=limits.max_sentences, seed=seed)

        def grounded(found: list[Candidate]) -> list[Candidate]:  # grounded (agent/answers/support.py), then ranked
            return support.ground_candidates(found, grounding, nlp, self.support_config)

        seed = cfg.seed + signal.round
        if tokens is None:
            return grounded(sample(cfg.candidates, seed))
        plain = sample(max(1, cfg.candidates // 2), seed)
        with fuser.around(messages, tokens):
            fused = [replace(c, fused=True) for c in sample(max(1, cfg.candidates - cfg.candidates // 2), seed + 1000)]
        seen = {c.text for c in plain}
        return grounded(plain + [c for c in fused if c.text not in seen])

    # ------------------------------------------------------------------ commit

    def commit(self, session: Session, u: Understood, r: Recalled | None, c: Composed, g: Generated) -> Reply:
        """Store the turn in one KB transaction (its episode, facts and retractions, an acknowledgement's
        text made from what was stored, the reply), then advance the session: state, history,
        preferences, last reply, each file written atomically."""
        c0 = time.perf_counter()
        turn = u.turn
        used = tuple(r.used) if r is not None else ()
        with self.kb.batch():  # one KB transaction: the utterance, its facts, retractions and the reply
            stored = self.writer.store(session.user, u) if u.vector is not None or u.triples else _NOTHING
            text = g.text
            if c.kind is ReplyKind.ACKNOWLEDGE:
                text = " ".join(x for x in (c.text, acknowledge(stored)) if x) or "Noted."  # negations of nothing
            turn.reply = text
            turn.used_fact_ids = [f.fact.id for f in used]
            if text and u.vector is not None and self.config.store_episodes:
                self.writer.store_reply(session.user, u.state.session_id, turn, text)
        session.advance(u.state, Exchange(u.text, text), u.preferences)  # then the session and profile files
        trace = Trace(u, r, c, replace(g, text=text), stored)
        reply = Reply(text, turn, used, stored.learned, stored.superseded + stored.retracted,
                      timings(trace, time.perf_counter() - c0), fused=g.fused,
                      memories=r.memories if r is not None else (), trace=trace)
        session.last_reply = reply
        return reply


_NOTHING = Stored(None, (), (), (), (), 0.0)


def timings(t: Trace, commit: float) -> Timings:
    """Reply.timings from the stage records and the ``commit`` stage's seconds (KB writes and session save)."""
    u = t.understood
    return Timings(state=u.seconds_state, retrieval=t.recalled.seconds if t.recalled is not None else 0.0,
                   generation=t.generated.seconds, extraction=u.seconds_extraction, write_back=commit)


def _wants_memories(turn: Turn) -> bool:
    return turn.intent not in (Intent.COMMAND, Intent.FEEDBACK)
