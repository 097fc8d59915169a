"""A hypothesis state machine over the dialogue state: statements, questions, pronouns, user switches,
session resets and restarts in any order, on one agent over one KB (scripted model, real spaCy parse).

Each user talks about their own people and places only, so any of the other user's names turning up
in the active user's state or prompt is a leak. Invariants checked after every step: the state and
every turn in it belong to the active user; no entity or reference of the other user; the prompt the
model last saw for this user holds none of the other user's names; turn indexes count 0, 1, 2 ...
and grow by one per turn; a reset leaves no turn, focus or recent entity behind; switching back
resumes a user's own turns.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from fakes_llm import ScriptedLLM
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.pipeline.loop import Agent
from agent.language.nlp import load_nlp
from kb import HashEmbedder, KBConfig, KnowledgeBase

# names the small spaCy model tags as proper nouns; each user's world is disjoint from the other's
WORLDS = {
    "alice": (("Anna", "Boris", "Carla"), ("Oslo", "Lima", "Cairo")),
    "bob": (("Dmitri", "Elena", "Farid"), ("Quito", "Hanoi", "Dakar")),
}
RELATIONS = ("sister", "brother", "friend")


def other(user: str) -> str:
    return "bob" if user == "alice" else "alice"


def words(user: str) -> set[str]:
    """Every name of ``user``'s world, lower-cased (entity ids are lower-cased names)."""
    people, places = WORLDS[user]
    return {w.lower() for w in people + places}


class DialogueMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="kgrow-dialogue-"))
        self.llm = ScriptedLLM(default="I am not sure.")
        self.agent = self._open("alice")
        self.turns = {"alice": 0, "bob": 0}  # turns in each user's current session
        self.last_index: int | None = None

    def _open(self, user: str) -> Agent:
        kb = KnowledgeBase.open(self.dir / "kb", embedder=HashEmbedder(64), config=KBConfig(show_progress=False))
        return Agent(kb, self.llm, user, nlp=load_nlp(), owns_kb=True)

    def _said(self, text: str) -> None:
        calls = len(self.llm.calls)
        reply = self.agent.chat(text)
        self.turns[self.agent.user] += 1
        assert reply.state.index == self.turns[self.agent.user] - 1
        if len(self.llm.calls) > calls:  # the model was asked: nothing of the other user's world in the prompt
            prompt = " ".join(m.content for m in self.llm.last_messages).lower()
            leaked = {w for w in words(other(self.agent.user)) if w in prompt}
            assert not leaked, (leaked, prompt)

    @rule(person=st.integers(0, 2), place=st.integers(0, 2))
    def lives_in(self, person, place):
        people, places = WORLDS[self.agent.user]
        self._said(f"{people[person]} lives in {places[place]}.")

    @rule(person=st.integers(0, 2), relation=st.sampled_from(RELATIONS))
    def relative(self, person, relation):
        self._said(f"My {relation} is {WORLDS[self.agent.user][0][person]}.")

    @rule(person=st.integers(0, 2))
    def where_does_one_live(self, person):
        self._said(f"Where does {WORLDS[self.agent.user][0][person]} live?")

    @rule(relation=st.sampled_from(RELATIONS))
    def where_does_my_relative_live(self, relation):
        self._said(f"Where does my {relation} live?")

    @precondition(lambda self: self.turns[self.agent.user] > 0)
    @rule()
    def pronoun(self):
        self._said("Where does she live?")

    @rule()
    def switch(self):
        self.agent.switch_user(other(self.agent.user))

    @rule()
    def reset(self):
        self.agent.reset_session()
        self.turns[self.agent.user] = 0
        assert self.agent.state.turns == [] and self.agent.state.focus is None
        assert self.agent.state.recent_entities == []

    @rule()
    def restart(self):
        user = self.agent.user
        self.agent.close()
        self.agent = self._open(user)

    @invariant()
    def state_belongs_to_the_active_user(self):
        state, user = self.agent.state, self.agent.user
        assert state.user == user
        assert all(t.user == user for t in state.turns)

    @invariant()
    def no_entity_of_the_other_user(self):
        state, foreign = self.agent.state, words(other(self.agent.user))
        seen = set(state.recent_entities) | {state.focus} | set(state.profile.values())
        for t in state.turns:
            seen |= {m.entity for m in t.mentions} | set(t.references.values()) | {t.focus}
        assert not {e for e in seen if e} & foreign, (self.agent.user, seen & foreign)

    @invariant()
    def turn_indexes_count_up_by_one(self):
        assert [t.index for t in self.agent.state.turns] == list(range(self.turns[self.agent.user]))

    def teardown(self):
        self.agent.close()
        shutil.rmtree(self.dir, ignore_errors=True)


DialogueMachine.TestCase.settings = settings(max_examples=10, stateful_step_count=10, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
TestDialogueState = DialogueMachine.TestCase
