"""Every turn is memory: both sides stored, recall over facts and episodes, ingest of chat histories."""
from __future__ import annotations

import pytest

from agent.errors import BadInputError
from agent.memory.ingest import ChatTurn
from kb import Kind
from tests.fakes_llm import ScriptedLLM

T0 = 1_700_000_000.0  # 2023-11-14


def test_both_sides_of_a_chat_are_episodes_with_session_and_position(agent_factory):
    agent = agent_factory("sam", ScriptedLLM(["Nice to meet you!"]))
    agent.chat("Hello there, how are you today?")
    eps = agent.kb.episodes(user="sam")
    assert [(e.role, e.position) for e in eps] == [("user", 0), ("assistant", 1)]
    assert eps[0].session == eps[1].session == agent.state.session_id
    assert eps[1].text == "Nice to meet you!"


def test_recall_finds_an_utterance_no_fact_was_extracted_from(agent_factory):
    agent = agent_factory("sam", ScriptedLLM())
    agent.chat("I adopted a rescue greyhound last week, his name is Biscuit.")
    agent.chat("I've been learning to play the cello since January.")
    agent.reset_session()
    top = agent.recall("What is my dog called?", k=3)
    assert any("Biscuit" in m.text for m in top)
    m = next(m for m in top if "Biscuit" in m.text)
    assert m.kind in (Kind.EPISODE, Kind.FACT) and m.source_ids and m.source_ids[0].endswith("/turn/0")
    assert any("cello" in m.text for m in agent.recall("What instrument am I learning?", k=3))


def test_the_turn_cites_recalled_episodes_in_the_prompt(agent_factory):
    llm = ScriptedLLM()
    agent = agent_factory("sam", llm)
    agent.chat("I adopted a rescue greyhound last week, his name is Biscuit.")
    agent.reset_session()
    reply = agent.chat("What is my dog called?")
    assert "Biscuit" in llm.last_user_message
    assert any("Biscuit" in m.text for m in reply.memories)


def test_recall_leaves_the_dialogue_state_alone(agent_factory):
    agent = agent_factory("sam", ScriptedLLM())
    agent.chat("My sister is Mary.")
    before = agent.state.to_dict()
    agent.recall("Where does my sister live?")
    assert agent.state.to_dict() == before


def test_an_old_episode_does_not_outrank_the_fact_that_superseded_it(agent_factory):
    agent = agent_factory("sam", ScriptedLLM())
    agent.ingest([ChatTurn("sam", "I live in Paris.", T0, "s1")], me="sam")
    agent.ingest([ChatTurn("sam", "I live in Berlin.", T0 + 86400 * 30, "s2")], me="sam")
    top = agent.recall("Where do I live?", k=5)
    texts = [m.text for m in top]
    berlin = min(i for i, t in enumerate(texts) if "Berlin" in t)
    paris = [i for i, t in enumerate(texts) if "Paris" in t]
    assert all(berlin < i for i in paris)


def test_a_superseded_turn_is_recalled_but_never_answers(agent_factory):
    """The old turn stays recallable (history), marked stale, and the answer policy never cites it:
    "My name is Kim." must not become the answer once the user said "No, my name is Lee."."""
    agent = agent_factory("rae", ScriptedLLM(["Your name is Lee."]))
    agent.ingest([ChatTurn("rae", "My name is Kim.", T0, "s1")], me="rae")
    agent.ingest([ChatTurn("rae", "My name is Lee.", T0 + 86400, "s2")], me="rae")
    top = agent.recall("What is my name?", k=10)
    kim = [m for m in top if "Kim" in m.text]
    assert kim and all(m.stale for m in kim if m.kind is Kind.EPISODE)
    reply = agent.chat("What is my name?")
    plan = reply.trace.recalled.plan
    assert "Kim" not in plan.fallback and not any("Kim" in t for t in plan.support[:-3])
    assert "Kim" not in reply.text


def test_ingest_stores_every_turn_marks_roles_and_is_idempotent(agent_factory):
    agent = agent_factory("sam", ScriptedLLM())
    turns = [{"speaker": "Sam", "text": "I work at Siemens.", "time": "2023/05/30 (Tue) 23:40", "session": "a"},
             {"speaker": "assistant", "text": "You work at Google.", "session": "a"},
             {"speaker": "Mia", "text": "I live in Oslo.", "session": "a"}]
    first = agent.ingest(turns, me="Sam")
    assert (first.sessions, first.turns, first.episodes_new) == (1, 3, 3)
    eps = agent.kb.session_episodes("sam", "a")
    assert [e.role for e in eps] == ["user", "assistant", "other"]
    facts = {(f.subject, f.relation, f.object) for f in agent.kb.facts(user="sam")}
    assert ("sam", "works_at", "siemens") in facts
    assert not any(f[2] == "google" for f in facts)  # the assistant's turns are never facts
    again = agent.ingest(turns, me="Sam")
    assert again.episodes_new == 0 and again.facts_learned == 0
    assert len(agent.kb.episodes(user="sam")) == 3


def test_ingest_embeds_sessions_ahead_in_one_pass_and_a_rerun_embeds_nothing(agent_factory):
    """Sessions are written one transaction each, but their turns are embedded together (a bulk
    import pads fewer short batches); a re-run finds every session stored and embeds nothing."""
    agent = agent_factory("sam", ScriptedLLM())
    emb = agent.kb.embedder
    calls: list[int] = []
    real = emb.embed_documents
    emb.embed_documents = lambda texts: calls.append(len(texts)) or real(texts)  # type: ignore[method-assign]
    turns = [ChatTurn("sam", f"In session {s} I talked about topic number {i}.", T0 + s * 3600 + i, f"s{s}")
             for s in range(3) for i in range(4)]
    report = agent.ingest(turns, me="sam")
    assert report.sessions == 3 and report.episodes_new == 12
    assert calls[0] == 12  # every turn of the three sessions in the first pass
    assert len(agent.kb.session_episodes("sam", "s2")) == 4
    top = agent.recall("In session 1 I talked about topic number 2.", k=1)[0]
    assert top.text == "In session 1 I talked about topic number 2." and top.kind is Kind.EPISODE
    calls.clear()
    again = agent.ingest(turns, me="sam")
    assert again.episodes_new == 0 and sum(calls) == 0


def test_recall_hides_what_was_said_after_now(agent_factory):
    agent = agent_factory("sam", ScriptedLLM())
    agent.ingest([ChatTurn("sam", "My favourite band is Muse.", T0, "s1"),
                  ChatTurn("sam", "My favourite band is Blur now.", T0 + 86400 * 10, "s2")], me="sam")
    texts = [m.text for m in agent.recall("favourite band", now=T0 + 86400)]
    assert any("Muse" in t for t in texts) and not any("Blur" in t for t in texts)


def test_bad_ingest_input_names_what_is_valid(agent_factory):
    agent = agent_factory("sam", ScriptedLLM())
    with pytest.raises(BadInputError, match="me='Bob' is not a speaker.*'Sam', 'assistant'"):
        agent.ingest([ChatTurn("Sam", "hi"), ChatTurn("assistant", "hello")], me="Bob")
    with pytest.raises(BadInputError, match="unparsable time 'yesterday-ish'.*accepted"):
        agent.ingest([ChatTurn("Sam", "hi", "yesterday-ish")], me="Sam")
    with pytest.raises(BadInputError, match="turn 1: unknown field.*valid fields"):
        agent.ingest([{"speaker": "Sam", "txt": "hi"}], me="Sam")
    with pytest.raises(BadInputError, match="k=0 is invalid"):
        agent.recall("anything", k=0)
    assert agent.kb.episodes(user="sam") == []


NATURAL = [
    ("I adopted a rescue greyhound last week, his name is Biscuit.", "What is my dog called?", "Biscuit"),
    ("I've been learning to play the cello since January.", "What instrument am I learning?", "cello"),
]


def _told_then_asked(tmp_path, said, asked):
    from agent.pipeline.loop import Agent

    with Agent.open(tmp_path / "kb", user="dana") as agent:
        agent.chat("Hi, I'm Dana.")
        agent.chat(said)
    agent = Agent.open(tmp_path / "kb", user="dana")
    agent.reset_session()
    return agent


@pytest.mark.integration
@pytest.mark.parametrize("said, asked, value", NATURAL)
def test_a_natural_remark_is_recalled_in_a_new_session(tmp_path, said, asked, value):
    with _told_then_asked(tmp_path, said, asked) as agent:
        top = agent.recall(asked, k=3)
        assert any(value in m.text for m in top), [m.text for m in top]


@pytest.mark.integration
@pytest.mark.parametrize("said, asked, value", NATURAL)
def test_a_natural_remark_is_answered_in_a_new_session(tmp_path, said, asked, value):
    with _told_then_asked(tmp_path, said, asked) as agent:
        reply = agent.chat(asked)
        assert value.lower() in reply.text.lower(), reply.text


def test_an_earlier_question_is_recalled_but_never_cited_as_evidence(agent_factory):
    llm = ScriptedLLM()
    agent = agent_factory("sam", llm)
    agent.chat("My favourite colour is green.")
    agent.chat("What is my favourite colour?")
    agent.reset_session()
    reply = agent.chat("Do you remember my favourite colour?")
    assert any(m.text == "What is my favourite colour?" for m in reply.memories)
    assert "What is my favourite colour?" not in llm.last_user_message
