"""What a turn's commit writes: the utterance as an episode, its facts with provenance, retractions, the reply; and the acknowledgement of exactly that."""
from __future__ import annotations

import time

from agent.dialogue.state import StateTracker, Turn
from agent.extraction.triple import Triple
from agent.language.intent import Intent
from agent.language.timeparse import start_of
from agent.types import Stored, Understood
from kb import KnowledgeBase, NewFact
from kb.errors import KBError
from kb.facts import Fact


class TurnWriter:
    """Writes one turn to the knowledge base (the commit stage's KB part)."""

    def __init__(self, kb: KnowledgeBase, tracker: StateTracker, store_episodes: bool):
        self.kb = kb
        self.tracker = tracker  # profile slots follow the facts written (DialogueState.profile)
        self.store_episodes = store_episodes  # AgentConfig.store_episodes: every utterance is an episode

    def store(self, user: str, u: Understood, note: str | None = None) -> Stored:
        """Store ``u``'s utterance and its facts with provenance, retract its negated ones, and update
        the profile slots of ``u.state`` (the state this turn commits). Idempotent per turn."""
        t0 = time.perf_counter()
        turn, kb = u.turn, self.kb
        source = f"{u.state.session_id}/turn/{turn.index}"
        if note is None and turn.intent is Intent.CORRECTION:
            note = f"correction in turn {turn.index}"
        episode_id = None
        if self.store_episodes and turn.intent not in (Intent.COMMAND, Intent.FEEDBACK):
            vector = u.vector if u.vector is not None else kb.embedder.embed_query(u.text)
            episode_id = kb.add_episode(u.text, user=user, speaker=user, source_id=source, vector=vector,
                                        session=u.state.session_id, position=2 * turn.index, role="user").id
        learned: list[Fact] = []
        superseded: list[Fact] = []
        known: list[Fact] = []
        items = [NewFact(t.subject, t.relation, t.object, t.text, user=user, source_id=source,
                         episode_id=episode_id, confidence=t.confidence, note=note,
                         valid_from=self._valid_from(user, t))
                 for t in u.triples if not t.negated]
        if items:
            for r in kb.add_facts(items):
                (learned if r.created else known).append(r.fact)
                superseded.extend(r.superseded)
        retracted = [f for t in u.triples if t.negated for f in self._retract(user, t, source)]
        turn.learned_fact_ids = [f.id for f in learned]
        turn.superseded_fact_ids = [f.id for f in superseded + retracted]
        self.tracker.apply_learned(u.state, superseded + retracted + learned)  # clear, then set slots
        return Stored(episode_id, tuple(learned), tuple(superseded), tuple(retracted),
                      tuple(f for f in known if f.id not in {x.id for x in learned}), time.perf_counter() - t0)

    def store_reply(self, user: str, session_id: str, turn: Turn, reply: str) -> None:
        """The agent's own reply, as an episode marked the assistant's (searchable, never evidence)."""
        self.kb.add_episode(reply, user=user, speaker="assistant", role="assistant",
                            source_id=f"{session_id}/turn/{turn.index}/reply", session=session_id,
                            position=2 * turn.index + 1)

    def _valid_from(self, user: str, t: Triple) -> float | None:
        """When a current fact became true if the turn said so ("since January", "moved here last month").

        None (= when it was said) for plans and for times ahead (search hides facts not yet valid), and
        when the date is older than the value the fact replaces: the KB would file it as history behind
        that value, while the user is telling us about a change.
        """
        if t.time is None or not t.current:
            return None
        at = start_of(t.time)
        if at > time.time():
            return None
        try:
            current = self.kb.facts(user=user, entity=t.subject, relation=t.relation)
        except KBError:
            return None
        return None if any(f.valid_from > at for f in current) else at

    def _retract(self, user: str, t: Triple, source: str) -> list[Fact]:
        try:
            current = self.kb.facts(user=user, entity=t.subject, relation=t.relation)
        except KBError:
            return []
        subj, obj = self.kb.resolve(t.subject), self.kb.resolve(t.object)
        out = []
        for f in current:
            if f.subject == subj and (f.object == obj or not t.object.strip()):
                try:
                    out.append(self.kb.retract(f.id, reason=f"negated in {source}"))
                except KBError:
                    pass  # retracted meanwhile by another writer: nothing left to retract
        return out


def acknowledge(stored: Stored) -> str:
    """A reply that says exactly what was stored, what it replaced, what no longer holds, and what was
    already known (said again: one memory with one more source)."""
    parts = []
    if stored.learned:
        parts.append("Got it, I'll remember: " + " ".join(_sentence(f.text) for f in stored.learned))
    if stored.superseded:
        old = "; ".join(_sentence(f.text).rstrip(".") for f in stored.superseded)
        parts.append(f"(This replaces what I knew before: {old}.)")
    if stored.retracted:
        old = "; ".join(_sentence(f.text).rstrip(".") for f in stored.retracted)
        parts.append(f"Noted, this no longer holds: {old}.")
    if stored.known and not parts:
        parts.append("I already knew that: " + " ".join(_sentence(f.text) for f in stored.known))
    return " ".join(parts)


def _sentence(text: str) -> str:
    t = text.strip()
    t = t[:1].upper() + t[1:]
    return t if t.endswith((".", "!", "?")) else t + "."
