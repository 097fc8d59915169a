"""The turn pipeline's public stages: nothing before commit changes the session or the knowledge base,
driving the stages by hand gives what chat gives, and /why reads the stage records."""
from __future__ import annotations

import json

from fakes_llm import ScriptedLLM

from agent.cli.chat_cmd import why
from agent.pipeline.session import path_for
from agent.types import Generated, ReplyKind


def _snapshot(agent):
    """What a stage must not change: the session, its file, the KB's facts and episodes."""
    s = agent.session
    kb = agent.kb
    saved = path_for(kb, s.user)
    return (json.dumps(s.state.to_dict(), sort_keys=True), list(s.history), s.preferences, s.last_reply,
            saved.read_text() if saved.exists() else None, kb.stats().facts_active, kb.stats().episodes)


def test_stages_before_commit_change_nothing(agent_factory):
    agent = agent_factory("alice", ScriptedLLM(["You live in Paris."]))
    agent.chat("I live in Paris.")
    p, s = agent.pipeline, agent.session
    before = _snapshot(agent)
    for text in ("Where do I live?", "My sister Ana lives in Rome.", "Please keep your answers short."):
        u = p.understand(s, text)
        r = None if p.acknowledges(u) else p.recall(s, u)
        c = p.compose(s, u, r)
        assert _snapshot(agent) == before, text
        assert u.turn not in s.state.turns and u.turn in u.state.turns  # the next state is a new object
    assert c.kind is ReplyKind.ACKNOWLEDGE and u.preferences is not None and s.preferences != u.preferences


def test_driving_the_stages_by_hand_is_a_turn(agent_factory):
    agent = agent_factory("alice", ScriptedLLM(["You live in Paris.", "You live in Paris."]))
    agent.chat("I live in Paris.")
    p, s = agent.pipeline, agent.session
    u = p.understand(s, "Where do I live?")
    r = p.recall(s, u)
    c = p.compose(s, u, r)
    text = "".join(p.generate(c))
    reply = p.commit(s, u, r, c, Generated(text, True))
    assert reply is agent.last_reply and reply.text == text
    assert agent.state.turns[-1] is u.turn and u.turn.reply == text
    assert [m.text for m in reply.memories] == [m.text for m in r.memories]
    assert any("Paris" in f.fact.text for f in reply.used_facts)
    again = agent.chat("Where do I live?")  # the same question through chat uses the same stages
    assert [u.fact.id for u in again.used_facts] == [u.fact.id for u in reply.used_facts]


def test_a_statement_said_twice_is_acknowledged_as_known(agent_factory):
    agent = agent_factory("alice", ScriptedLLM())
    first = agent.chat("I live in Paris.")
    assert "remember" in first.text and first.learned_facts
    second = agent.chat("I live in Paris.")
    assert second.text.startswith("I already knew that") and "Paris" in second.text
    assert not second.learned_facts and second.trace.stored.known
    assert len(agent.kb.facts(user="alice", relation="lives_in")) == 1  # one memory, two sources
    assert len(agent.kb.facts(user="alice", relation="lives_in")[0].sources) == 2


def test_why_shows_each_stage(agent_factory):
    agent = agent_factory("alice", ScriptedLLM(["You live in Paris."]))
    agent.chat("I live in Paris.")
    ack = why(agent)
    assert "understand" in ack and "not needed" in ack and "1 learned" in ack
    agent.chat("Where do I live?")
    shown = why(agent)
    for stage in ("understand", "recall", "compose", "generate", "commit"):
        assert f"  {stage}" in shown, stage
    assert "intent question" in shown and "answer policy: user question" in shown


def test_a_failed_generation_still_stores_what_was_said(agent_factory):
    class Broken(ScriptedLLM):
        def stream(self, *a, **k):
            raise RuntimeError("the model fell over")

    agent = agent_factory("alice", Broken())
    try:
        agent.chat("Tell me a story about my trip to Oslo.")
    except RuntimeError:
        pass
    said = [e.text for e in agent.kb.episodes(user="alice")]
    assert "Tell me a story about my trip to Oslo." in said
    assert agent.state.turns[-1].text == "Tell me a story about my trip to Oslo."


def test_a_turn_is_stored_whole_or_not_at_all(agent_factory, monkeypatch):
    from agent.pipeline.commit import TurnWriter

    agent = agent_factory("alice", ScriptedLLM(["Nice!"]))
    kb = agent.kb
    before = (kb.stats().facts_active, kb.stats().episodes)

    def broken(self, *a, **k):
        raise RuntimeError("disk full while storing the reply")

    monkeypatch.setattr(TurnWriter, "store_reply", broken)
    try:
        agent.chat("I live in Paris.")
    except RuntimeError:
        pass
    assert (kb.stats().facts_active, kb.stats().episodes) == before  # the episode and its fact rolled back
    assert kb.verify().ok  # and the vector index holds none of their vectors
    monkeypatch.undo()
    reply = agent.chat("I live in Paris.")  # said again, it is stored whole: utterance, fact and reply
    assert reply.learned_facts and kb.stats().episodes == before[1] + 2
