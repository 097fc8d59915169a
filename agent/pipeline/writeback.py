"""What a turn stores: the utterance as an episode, its facts with provenance, retractions, and the
acknowledgement that says exactly what was stored (the write-back stage of agent/pipeline/turn.py)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent.extraction.extract import Triple
from agent.language.intent import Intent
from agent.dialogue.state import Turn
from kb import NewFact
from kb.errors import KBError
from kb.facts import Fact

if TYPE_CHECKING:
    from agent.pipeline.loop import Agent


def turn_vector(agent: Agent, text: str):
    """The embedding of this turn's text, computed once and shared by search and the episode."""
    if agent._turn_vector is None or agent._turn_vector[0] != text:
        agent._turn_vector = (text, agent.kb.embedder.embed_query(text))
    return agent._turn_vector[1]


def write_back(agent: Agent, text: str, turn: Turn, triples: list[Triple],
               note: str | None = None) -> tuple[list[Fact], list[Fact], list[Fact]]:
    """Store the utterance and its facts with provenance; retract negated ones. Idempotent per turn."""
    source = f"{agent.state.session_id}/turn/{turn.index}"
    if note is None and turn.intent is Intent.CORRECTION:
        note = f"correction in turn {turn.index}"
    episode_id = None
    if agent.config.store_episodes and turn.intent not in (Intent.COMMAND, Intent.FEEDBACK):
        episode_id = agent.kb.add_episode(text, user=agent.user, speaker=agent.user, source_id=source,
                                          vector=turn_vector(agent, text), session=agent.state.session_id,
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
    from agent.language.timeparse import start_of

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


def acknowledge(learned: list[Fact], superseded: list[Fact], retracted: list[Fact]) -> str:
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


def _sentence(text: str) -> str:
    t = text.strip()
    t = t[:1].upper() + t[1:]
    return t if t.endswith((".", "!", "?")) else t + "."
