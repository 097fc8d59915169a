"""One turn of an Agent: state update, preferences, extraction, retrieval, generation and write-back."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from agent.extract import ExtractionContext, Triple
from agent.feedback import Candidate, FeedbackSignal
from agent.fuser import FusedFact
from agent.intent import Intent
from agent.llm import Message
from agent.citation import leading_episode, snippets
from agent.memory import Memory
from agent.preference import PreferenceMatch, find_preferences
from agent.preference import acknowledge as acknowledge_preferences
from agent.preference import apply as apply_preferences
from agent.profile import PREFERENCE_RELATIONS, Generation, generation
from agent import support
from agent.prompt import (
    Exchange,
    bare_messages,
    build_messages,
    display_name,
    fit_facts,
    system_text,
    third_person,
    trim_history,
)
from agent.retrieval import UsedFact
from agent.state import Turn
from kb import NewFact
from kb.errors import KBError
from kb.facts import Fact

if TYPE_CHECKING:
    from agent.loop import Agent

# The Agent's private pipeline: these functions read and write its state (``_history``, ``_profile``,
# ``_turn_vector``); take_turn holds its lock, and the others run under it (from take_turn or Agent.feedback).


def take_turn(agent: Agent, text: str, now: float | None = None) -> Iterator[str]:
    """Answer ``text`` (already cleaned, said at ``now``: default the clock), yielding the reply as it
    is generated; sets ``agent.last_reply``."""
    from agent.loop import Reply, Timings  # agent.loop imports this module

    with agent._lock:
        t0 = time.perf_counter()
        turn = agent.tracker.update(agent.state, agent.user, text, time.time() if now is None else now)
        ctx = agent.tracker.context_for(agent.state, turn)
        t1 = time.perf_counter()
        prefs, prefs_ack = _preferences(agent, text, turn)
        triples = extract_triples(agent, prefs.rest if prefs.changes else text, turn, ctx)
        t2 = time.perf_counter()
        used: list[UsedFact] = []
        memories: list[Memory] = []
        fused: tuple[FusedFact, ...] = ()
        retrieval_time = 0.0
        learned: list[Fact] = []
        superseded: list[Fact] = []
        retracted: list[Fact] = []
        pieces: list[str] = []
        gen_time = 0.0
        written = bool(prefs.changes) and not triples  # a preference is no world fact: no episode either
        remembered = not written and turn.intent not in (Intent.COMMAND, Intent.FEEDBACK)  # the reply too
        try:
            if (triples and turn.intent in (Intent.STATEMENT, Intent.CORRECTION)
                    and agent.config.template_acknowledgements):
                learned, superseded, retracted = write_back(agent, text, turn, triples)
                written = True
            if learned or superseded or retracted or prefs_ack:
                reply = " ".join(p for p in (prefs_ack, _acknowledge(learned, superseded, retracted)) if p)
                pieces.append(reply)
                yield reply
            else:
                r0 = time.perf_counter()  # retrieval only when the model will answer
                memories = recall_for(agent, text, turn, agent.config.recall.k, now) if _wants_facts(turn) else []
                used, snippets = for_prompt(agent, text, memories)
                # the answer policy (agent/support.py): general knowledge -> bare model, unsupported -> abstain
                plan = support.plan(*support.records(agent, text, turn, memories), agent.tracker.nlp,
                                    _support_config(agent)) if turn.intent is Intent.QUESTION else None
                if plan is not None and plan.action is not support.Action.ANSWER:
                    used, snippets = [], []
                turn.used_fact_ids = [u.fact.id for u in used]
                retrieval_time = time.perf_counter() - r0
                g0 = time.perf_counter()
                limits = _limits(agent)
                knowledge = None
                if plan is not None and plan.action is support.Action.ABSTAIN:
                    stream = iter([plan.text])
                elif plan is not None and plan.action is support.Action.BARE:
                    stream = agent.llm.stream(bare_messages(text, agent.profile), max_new_tokens=limits.max_new_tokens)
                else:
                    messages = prompt_for(agent, text, turn, used, agent._history, snippets)
                    knowledge = agent.fuser.tokens([u.fact for u in used], asked_form(agent, text, turn))
                    stream = agent.fuser.stream(agent.llm, messages, limits.max_new_tokens, knowledge,
                                                cited=bool(used) and agent.fuser.cites_text,
                                                evidence=leading_episode(memories, agent.config.recall.evidence_ratio))
                held = plan is not None and plan.action is support.Action.ANSWER  # checked whole, then given
                try:
                    for piece in stream:
                        pieces.append(piece)
                        if not held:
                            yield piece
                        if limits.max_sentences and count_sentences("".join(pieces)) >= limits.max_sentences:
                            break
                finally:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()
                if held:
                    pieces[:] = [support.ground("".join(pieces), plan, agent.tracker.nlp, _support_config(agent))]
                    yield pieces[0]
                gen_time = time.perf_counter() - g0
                fused = agent.fuser.read(knowledge)
        finally:
            w0 = time.perf_counter()
            if not written:
                learned, superseded, retracted = write_back(agent, text, turn, triples)
            reply_text = "".join(pieces).strip()
            turn.reply = reply_text
            if reply_text and remembered and agent.config.store_episodes:
                _store_reply(agent, turn, reply_text)
            agent._history = trim_history(agent._history + [Exchange(text, reply_text)],
                                          agent.config.prompt.history_turns)
            agent._save_state()
            w1 = time.perf_counter()
            agent.last_reply = Reply(
                reply_text, turn, tuple(used), tuple(learned), tuple(superseded + retracted),
                Timings(state=t1 - t0, retrieval=retrieval_time, generation=gen_time, extraction=t2 - t1,
                        write_back=w1 - w0), fused=fused, memories=tuple(memories),
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
    from agent.candidates import generate_candidates

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

    def grounded(found: list[Candidate]) -> list[Candidate]:  # all grounded (agent/support.py) before re-ranking
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


def _vector(agent: Agent, text: str):
    """The embedding of this turn's text, computed once and shared by search and the episode."""
    if agent._turn_vector is None or agent._turn_vector[0] != text:
        agent._turn_vector = (text, agent.kb.embedder.embed_query(text))
    return agent._turn_vector[1]


def facts_for(agent: Agent, text: str, turn: Turn) -> list[UsedFact]:
    """The facts retrieved to answer ``text`` (of ``turn``), cut to the prompt's fact budget."""
    if not _wants_facts(turn):
        return []
    used = agent.retriever.retrieve(text, turn, agent.state, agent.user, _vector(agent, text))
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
    vector = _vector(agent, text)  # one embedding per turn: the retriever and the joint search share it
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
    # how to answer belongs to the profile (agent.preference), never to the user's world facts; what was
    # only wished, imagined or reported is never stored (plans are, as plan relations)
    return [t for t in triples if t.relation not in PREFERENCE_RELATIONS and t.stored]


def write_back(agent: Agent, text: str, turn: Turn, triples: list[Triple],
               note: str | None = None) -> tuple[list[Fact], list[Fact], list[Fact]]:
    """Store the utterance and its facts with provenance; retract negated ones. Idempotent per turn."""
    source = f"{agent.state.session_id}/turn/{turn.index}"
    if note is None and turn.intent is Intent.CORRECTION:
        note = f"correction in turn {turn.index}"
    episode_id = None
    if agent.config.store_episodes and turn.intent not in (Intent.COMMAND, Intent.FEEDBACK):
        episode_id = agent.kb.add_episode(text, user=agent.user, speaker=agent.user, source_id=source,
                                          vector=_vector(agent, text), session=agent.state.session_id,
                                          position=2 * turn.index, role="user").id
    learned: list[Fact] = []
    superseded: list[Fact] = []
    retracted: list[Fact] = []
    items = [NewFact(t.subject, t.relation, t.object, t.text, user=agent.user, source_id=source,
                     episode_id=episode_id, confidence=t.confidence, note=note, valid_from=_valid_from(agent, t))
             for t in triples if not t.negated]
    if items:
        for r in agent.kb.add_facts(items):
            if r.created:
                learned.append(r.fact)
            superseded.extend(r.superseded)
    for t in (t for t in triples if t.negated):
        retracted.extend(_retract(agent, t, source))
    turn.learned_fact_ids = [f.id for f in learned]
    turn.superseded_fact_ids = [f.id for f in superseded + retracted]
    agent.tracker.apply_learned(agent.state, superseded + retracted + learned)  # clear, then set slots
    return learned, superseded, retracted


def _valid_from(agent: Agent, t: Triple) -> float | None:
    """When a current fact became true if the turn said so ("since January", "moved here last month").

    None (= when it was said) for plans and for times ahead (search hides facts not yet valid), and
    when the date is older than the value the fact replaces: the KB would file it as history behind
    that value, while the user is telling us about a change.
    """
    if t.time is None or not t.current:
        return None
    from agent.timeparse import start_of

    at = start_of(t.time)
    if at > time.time():
        return None
    try:
        current = agent.kb.facts(user=agent.user, entity=t.subject, relation=t.relation)
    except KBError:
        return None
    return None if any(f.valid_from > at for f in current) else at


def _retract(agent: Agent, t: Triple, source: str) -> list[Fact]:
    try:
        current = agent.kb.facts(user=agent.user, entity=t.subject, relation=t.relation)
    except KBError:
        return []
    subj, obj = agent.kb.resolve(t.subject), agent.kb.resolve(t.object)
    out = []
    for f in current:
        if f.subject == subj and (f.object == obj or not t.object.strip()):
            try:
                out.append(agent.kb.retract(f.id, reason=f"negated in {source}"))
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


def count_sentences(text: str) -> int:
    """Completed sentences in ``text`` (a sentence ends at . ! ? followed by space/end, or a newline)."""
    return len(_SENTENCE_END.findall(text.strip() + " ")) if text.strip() else 0


def _sentence(text: str) -> str:
    t = text.strip()
    t = t[:1].upper() + t[1:]
    return t if t.endswith((".", "!", "?")) else t + "."
