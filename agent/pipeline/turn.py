"""One turn of an Agent: state update, preferences, extraction, retrieval, generation and write-back."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from agent.extraction.extract import ExtractionContext, Triple
from agent.language.intent import Intent
from agent.generation.llm import Message
from agent.answers.plans import plan_answer
from agent.memory.citation import leading_episode, snippets
from agent.memory.recall import Memory
from agent.profile.preference import PreferenceMatch, find_preferences
from agent.profile.preference import acknowledge as acknowledge_preferences
from agent.profile.preference import apply as apply_preferences
from agent.profile.profile import PREFERENCE_RELATIONS, Generation, generation
from agent.answers import support
from agent.pipeline import evidence
from agent.generation.prompt import (
    Exchange,
    bare_messages,
    build_messages,
    display_name,
    fit_facts,
    system_text,
    third_person,
    trim_history,
)
from agent.memory.retrieval import UsedFact
from agent.language.sentences import count_sentences, may_end
from agent.dialogue.state import Turn
from agent.pipeline.streaming import TurnStream
from agent.types import Candidate, FeedbackSignal, Reply, Timings
from agent.pipeline.writeback import acknowledge, turn_vector, write_back
from kb.facts import Fact

if TYPE_CHECKING:
    from agent.pipeline.loop import Agent

# The Agent's private pipeline: these functions read and write its state (``_history``, ``_profile``,
# ``_turn_vector``) under its lock (taken by take_turn's stages, or by Agent.feedback).


def take_turn(agent: Agent, text: str, now: float | None = None) -> TurnStream:
    """Answer ``text`` (already cleaned, said at ``now``: default the clock), yielding the reply as it
    is generated; sets ``agent.last_reply``. The agent's lock is held while the turn reads or changes
    the agent, never while the reply is read (agent/pipeline/streaming.py)."""
    return TurnStream(lambda me: _run_turn(agent, text, now, me))


@dataclass
class _Work:
    """What one turn has done so far, for its commit."""

    text: str
    t0: float = 0.0
    t1: float = 0.0
    t2: float = 0.0
    g0: float = 0.0
    turn: Turn | None = None  # set once the message is parsed and its facts extracted: a commit is due
    triples: list[Triple] = field(default_factory=list)
    used: list[UsedFact] = field(default_factory=list)
    memories: list[Memory] = field(default_factory=list)
    learned: list[Fact] = field(default_factory=list)
    superseded: list[Fact] = field(default_factory=list)
    retracted: list[Fact] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    retrieval_time: float = 0.0
    gen_time: float = 0.0
    written: bool = False
    remembered: bool = False
    knowledge: object = None
    generated: bool = False


def _run_turn(agent: Agent, text: str, now: float | None, me) -> Iterator[str]:
    w = _Work(text)
    with agent._lock:
        agent._turns.enter(me)
        try:
            stream, plan, limits = _prepare(agent, w, now)
        except BaseException:
            try:
                if w.turn is not None:
                    _commit(agent, w)
            finally:
                agent._turns.leave()
            raise
    try:
        if stream is None:  # the reply is an acknowledgement, already made
            yield w.pieces[0]
            return
        held = plan is not None and plan.action is support.Action.ANSWER  # checked whole, then given
        try:
            for piece in stream:
                w.pieces.append(piece)
                if not held:
                    yield piece
                if (limits.max_sentences and may_end(piece)
                        and count_sentences("".join(w.pieces)) >= limits.max_sentences):
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if held:
            with agent._lock:
                w.pieces[:] = [support.ground("".join(w.pieces), plan, agent.tracker.nlp, _support_config(agent))]
            yield w.pieces[0]
        w.gen_time = time.perf_counter() - w.g0
        w.generated = True
    finally:
        with agent._lock:
            try:
                _commit(agent, w)
            finally:
                agent._turns.leave()


def _prepare(agent: Agent, w: _Work, now: float | None):
    """Understand the message, store what it states, recall and compose: (the model's stream or None
    when the reply is an acknowledgement in ``w.pieces``, the answer plan, the generation limits)."""
    w.t0 = time.perf_counter()
    turn = agent.tracker.update(agent.state, agent.user, w.text, time.time() if now is None else now)
    ctx = agent.tracker.context_for(agent.state, turn)
    w.t1 = time.perf_counter()
    prefs, prefs_ack = _preferences(agent, w.text, turn)
    w.triples = extract_triples(agent, prefs.rest if prefs.changes else w.text, turn, ctx)
    w.t2 = time.perf_counter()
    w.turn = turn
    w.written = bool(prefs.changes) and not w.triples  # a preference is no world fact: no episode either
    w.remembered = not w.written and turn.intent not in (Intent.COMMAND, Intent.FEEDBACK)  # the reply too
    text = w.text
    if (w.triples and turn.intent in (Intent.STATEMENT, Intent.CORRECTION)
            and agent.config.template_acknowledgements):
        w.learned, w.superseded, w.retracted = write_back(agent, text, turn, w.triples)
        w.written = True
    if w.learned or w.superseded or w.retracted or prefs_ack:
        w.pieces.append(" ".join(p for p in (prefs_ack, acknowledge(w.learned, w.superseded, w.retracted)) if p))
        return None, None, None
    r0 = time.perf_counter()  # retrieval only when the model will answer
    w.memories = recall_for(agent, text, turn, agent.config.recall.k, now) if _wants_facts(turn) else []
    used, snippets = for_prompt(agent, text, w.memories)
    # the answer policy (agent/answers/support.py): general knowledge -> bare model, unsupported -> abstain
    plan = None
    if turn.intent is Intent.QUESTION:
        question, found = evidence.records(agent, text, turn, w.memories, asked_form(agent, text, turn))
        plan = support.plan(question, found, agent.tracker.nlp, _support_config(agent))
    if plan is not None and plan.action is not support.Action.ANSWER:
        used, snippets = [], []
    w.used = used
    turn.used_fact_ids = [u.fact.id for u in used]
    w.retrieval_time = time.perf_counter() - r0
    w.g0 = time.perf_counter()  # generation: the knowledge tokens, the prompt and the model
    limits = _limits(agent)
    if plan is not None and plan.action is support.Action.ABSTAIN:
        return iter([plan.text]), plan, limits
    said = plan_answer(agent.tracker.last_doc, [u.fact for u in used], agent.user, turn.references,
                       display_name(agent.profile)) if turn.intent is Intent.QUESTION else None
    if said is not None:  # "Where is she moving?": the plan fact's sentence (agent/answers/plans.py)
        return iter([said]), None, limits
    if plan is not None and plan.action is support.Action.BARE:
        return agent.llm.stream(bare_messages(text, agent.profile), max_new_tokens=limits.max_new_tokens), plan, limits
    messages = prompt_for(agent, text, turn, used, agent._history, snippets)
    w.knowledge = agent.fuser.tokens([u.fact for u in used], asked_form(agent, text, turn))
    return agent.fuser.stream(agent.llm, messages, limits.max_new_tokens, w.knowledge,
                              cited=bool(used) and agent.fuser.cites_text,
                              evidence=leading_episode(w.memories, agent.config.recall.evidence_ratio)), plan, limits


def _commit(agent: Agent, w: _Work) -> None:
    """Store what the turn learned (if not yet), its reply and the session; set ``agent.last_reply``."""
    turn = w.turn
    w0 = time.perf_counter()
    fused = agent.fuser.read(w.knowledge) if w.generated else ()
    if not w.written:
        w.learned, w.superseded, w.retracted = write_back(agent, w.text, turn, w.triples)
    reply_text = "".join(w.pieces).strip()
    turn.reply = reply_text
    if reply_text and w.remembered and agent.config.store_episodes:
        _store_reply(agent, turn, reply_text)
    agent._history = trim_history(agent._history + [Exchange(w.text, reply_text)], agent.config.prompt.history_turns)
    agent._save_state()
    w1 = time.perf_counter()
    agent.last_reply = Reply(
        reply_text, turn, tuple(w.used), tuple(w.learned), tuple(w.superseded + w.retracted),
        Timings(state=w.t1 - w.t0, retrieval=w.retrieval_time, generation=w.gen_time, extraction=w.t2 - w.t1,
                write_back=w1 - w0), fused=fused, memories=tuple(w.memories),
    )


def answer_candidates(agent: Agent, messages: list[Message], signal: FeedbackSignal,
                      used: Sequence[UsedFact] = (), asked: str | None = None) -> list[Candidate]:
    """Candidate answers for one feedback round; all regeneration goes through here.

    With fusion on, half the candidates come from the text path and half with the ``used`` facts
    and the feedback vector ``signal.vector`` (keyed by the ``asked`` question, its value the
    vector itself) fused as knowledge tokens; the re-ranker chooses among all of them (measured
    on examples/feedback: fused candidates alone were right first time in 15/24, text alone 24/24).
    Candidates come back unscored; feedback.rerank scores them.
    """
    from agent.pipeline.candidates import generate_candidates

    cfg = agent.config.feedback
    limits = _limits(agent)
    feedback = [(asked, signal.vector, "")] if asked else []
    tokens = agent.fuser.tokens([u.fact for u in used], asked or "", feedback)

    grounding = support.answer_plan([u.fact for u in used], asked or "", display_name(agent.profile),
                                    agent.tracker.nlp)

    def sample(n: int, seed: int) -> list[Candidate]:
        return generate_candidates(agent.llm, messages, n=n, temperature=cfg.temperature, top_p=cfg.top_p,
                                   max_new_tokens=limits.max_new_tokens or cfg.max_new_tokens,
                                   max_sentences=limits.max_sentences, seed=seed)

    def grounded(found: list[Candidate]) -> list[Candidate]:  # all grounded (agent/answers/support.py) before re-ranking
        return support.ground_candidates(found, grounding, agent.tracker.nlp, _support_config(agent))

    seed = cfg.seed + signal.round
    if tokens is None:
        return grounded(sample(cfg.candidates, seed))
    plain = sample(max(1, cfg.candidates // 2), seed)
    with agent.fuser.around(messages, tokens):
        fused = [replace(c, fused=True) for c in sample(max(1, cfg.candidates - cfg.candidates // 2), seed + 1000)]
    seen = {c.text for c in plain}
    return grounded(plain + [c for c in fused if c.text not in seen])


def _spell_out(agent: Agent, text: str, turn: Turn) -> str:
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
        shown = agent.kb.entity_display(agent.kb.resolve(entity)) or entity
        out = re.sub(rf"(?i)\b{re.escape(surface)}\b", shown[:1].upper() + shown[1:], out)
    return out


def facts_for(agent: Agent, text: str, turn: Turn) -> list[UsedFact]:
    """The facts retrieved to answer ``text`` (of ``turn``), cut to the prompt's fact budget."""
    if not _wants_facts(turn):
        return []
    used = agent.retriever.retrieve(text, turn, agent.state, agent.user, turn_vector(agent, text))
    return used[: len(fit_facts([u.fact for u in used], agent.config.prompt.fact_token_budget))]


def prompt_for(agent: Agent, text: str, turn: Turn, used: list[UsedFact], history: list[Exchange],
               snippets: Sequence[str] = ()) -> list[Message]:
    """The messages the model answers ``text`` from: system, ``history``, the numbered ``used`` facts and
    dated ``snippets`` of earlier turns, the text."""
    profile = agent.profile
    cited = [u.fact for u in used] if agent.fuser.cites_text else []
    return build_messages(system_text(profile), history, cited, asked_form(agent, text, turn), display_name(profile),
                          snippets if agent.fuser.cites_text else ())


def recall_for(agent: Agent, text: str, turn: Turn, k: int, now: float | None = None) -> list[Memory]:
    """Agent.recall's ranking for ``text`` as ``turn`` resolved it: the fact retriever's facts (found
    on the resolved query, "my sister" -> Mary, plus the entity walk and relation cues) and hybrid
    search over facts and episodes on the words as said: episodes are stored verbatim ("I adopted
    ..."), and spelling "I" out as the user would pull every fact about them in by graph expansion."""
    vector = turn_vector(agent, text)  # one embedding per turn: the retriever and the joint search share it
    facts = agent.retriever.retrieve(text, turn, agent.state, agent.user, vector)
    return agent.recaller.recall(text, user=agent.user, k=k, now=now, query_vector=vector,
                                 facts=[(u.fact, u.score, u.why) for u in facts])


def for_prompt(agent: Agent, text: str, memories: Sequence[Memory]) -> tuple[list[UsedFact], list[str]]:
    """The recalled facts that fit the prompt (numbered) and dated snippets of the best episodes."""
    chosen = sorted((m for m in memories if m.fact_rank is not None), key=lambda m: m.fact_rank)
    facts = (chosen or [m for m in memories if m.fact is not None])[: agent.config.retrieval.k]
    facts = facts[: len(fit_facts([m.fact for m in facts], agent.config.prompt.fact_token_budget))]
    used = [UsedFact(i, m.fact, m.score, m.why) for i, m in enumerate(facts, start=1)]
    return used, snippets(memories, text, agent.config.recall)


def _store_reply(agent: Agent, turn: Turn, reply: str) -> None:
    """The agent's own reply, as an episode marked the assistant's (searchable, never evidence)."""
    agent.kb.add_episode(reply, user=agent.user, speaker="assistant", role="assistant",
                         source_id=f"{agent.state.session_id}/turn/{turn.index}/reply",
                         session=agent.state.session_id, position=2 * turn.index + 1)


def asked_form(agent: Agent, text: str, turn: Turn) -> str:
    """The user's message as the model is asked it: a question in the third person, names spelled out."""
    if turn.intent is not Intent.QUESTION:
        return text
    return third_person(_spell_out(agent, text, turn), display_name(agent.profile))


def _support_config(agent: Agent) -> support.SupportConfig:
    """The answer policy's settings (``AgentConfig.support`` once the config carries one)."""
    return getattr(agent.config, "support", None) or support.SupportConfig()


def _limits(agent: Agent) -> Generation:
    """How long the active user's answers may be (their length preference, else the config)."""
    return generation(agent.profile, agent.config.profile, agent.config.max_sentences)


def _wants_facts(turn: Turn) -> bool:
    return turn.intent not in (Intent.COMMAND, Intent.FEEDBACK)


def _preferences(agent: Agent, text: str, turn: Turn) -> tuple[PreferenceMatch, str]:
    """Apply and store the preferences stated in ``text``; returns them and their acknowledgement."""
    if turn.intent is Intent.COMMAND:
        return PreferenceMatch((), text), ""
    found = find_preferences(text, agent._profile)
    if not found.changes:
        return found, ""
    before = agent._profile
    after = apply_preferences(before, found.changes)
    if after != before:
        agent.set_profile(after)
    return found, acknowledge_preferences(before, after)


def extract_triples(agent: Agent, text: str, turn: Turn, ctx: ExtractionContext) -> list[Triple]:
    """The world facts stated in ``text`` (statements and corrections only; preferences are left out)."""
    if turn.intent not in (Intent.STATEMENT, Intent.CORRECTION):
        return []
    doc = agent.tracker.last_doc  # the parse of the whole message; text may be what preferences left
    ctx = replace(ctx, now=turn.time)  # "next month" is read against the turn's time
    triples = agent.extractor.extract(text, ctx, doc=doc if doc is not None and doc.text == text else None)
    # how to answer belongs to the profile (agent.profile.preference), never to the user's world facts; what was
    # only wished, imagined or reported is never stored (plans are, as plan relations)
    return [t for t in triples if t.relation not in PREFERENCE_RELATIONS and t.stored]

_ASKS_IDENTITY = re.compile(r"(?i)\b(?:who|whom|name|called)\b")
_FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "i'm", "i've", "i'd", "i'll"})
