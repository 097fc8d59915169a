"""The feedback loop (agent/pipeline/feedback.py): corrections that supersede facts, bounded confidence changes with
history, re-ranked regeneration with a round limit, /good /bad /fix in the chat, and the feedback eval.
Fast tests run on a scripted LLM and the hash embedder; one integration test samples from the real model."""
from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes_llm import ScriptedLLM, echo_facts, fact_lines

from agent.cli import chat_cmd, main
from agent.errors import BadInputError
from agent.pipeline.feedback import (
    BAD,
    GOOD,
    Candidate,
    FeedbackConfig,
    Rating,
    make_signal,
    rerank,
)
from agent.pipeline.loop import Agent, AgentConfig
from agent.generation.prompt import PromptConfig
from kb import HashEmbedder, KBConfig, KnowledgeBase
from kb.facts import Status

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def open_agent(agent_factory):
    """open_agent(user, llm=None, config=None) -> an Agent owning a KB opened on ``kb_path``."""
    return lambda user="sam", llm=None, config=None: agent_factory(
        user, llm if llm is not None else ScriptedLLM(responder=echo_facts), config)


@pytest.fixture
def llm():
    return ScriptedLLM(responder=echo_facts)


@pytest.fixture
def agent(open_agent, llm):
    return open_agent("sam", llm)


def with_feedback(**kwargs) -> AgentConfig:
    return AgentConfig(feedback=FeedbackConfig(**kwargs))


def shown(messages) -> str:
    return "\n".join(fact_lines(messages))


def snapshot(agent: Agent):
    """Everything feedback may change: every fact version with its confidence, the history, the session."""
    facts = agent.kb.facts(history=True)
    events = [e for f in facts for e in agent.kb.history(f.id)[1]]
    return ([(f.id, f.status, f.confidence) for f in facts], sorted(map(repr, events)), len(agent.state.turns),
            agent.last_reply)


# --------------------------------------------------------------------------- corrections (acceptance)


def test_correction_supersedes_the_fact_and_the_next_answer_uses_the_corrected_one(agent, llm):
    old = agent.chat("I live in Paris.").learned_facts[0]
    asked = agent.chat("Where do I live?")
    assert "Paris" in asked.text

    result = agent.feedback(correction="No, I live in Berlin.")

    new = result.learned[0]
    assert new.triple() == ("sam", "lives_in", "berlin")
    assert [f.id for f in result.superseded] == [old.id]
    assert new.sources[0].note == f"correction of turn {asked.state.index}"
    # the regenerated answer was prompted with the corrected fact only, and is now the last reply
    assert "Berlin" in shown(llm.candidate_calls[-1]) and "Paris" not in shown(llm.candidate_calls[-1])
    assert result.reply is agent.last_reply and "Berlin" in result.reply.text
    assert [u.fact.id for u in result.reply.used_facts] == [new.id]
    # the old fact is kept in history, superseded by the new one
    versions, events = agent.kb.history(new.id)
    assert [(v.object, v.status) for v in versions] == [("paris", Status.SUPERSEDED), ("berlin", Status.ACTIVE)]
    assert versions[0].superseded_by == new.id
    assert any(e.event == "superseded" and e.fact_id == old.id for e in events)

    nxt = agent.chat("Where do I live?")
    assert "Berlin" in shown(llm.last_messages) and "Paris" not in shown(llm.last_messages)
    assert "Berlin" in nxt.text


def test_corrected_fact_is_recalled_in_a_new_session(open_agent):
    first = open_agent("sam")
    first.chat("I work at Acme.")
    first.chat("Where do I work?")
    first.feedback(correction="No, I work at Globex.")
    first.close()

    again = open_agent("sam")
    again.reset_session()
    reply = again.chat("Where do I work?")
    assert "Globex" in reply.text and "Acme" not in reply.text


def test_correcting_a_multi_valued_slot_retracts_the_fact_the_answer_used(agent):
    agent.chat("My dog's name is Rex.")
    asked = agent.chat("What is my dog's name?")
    rex = next(u.fact for u in asked.used_facts if u.fact.relation == "pet_name")

    result = agent.feedback(correction="No, my dog is called Max.")

    assert ("sam", "pet_name", "max") in [f.triple() for f in result.learned]
    assert rex.id in [f.id for f in result.superseded]
    gone = agent.kb.fact(rex.id)
    assert gone.status is Status.SUPERSEDED and gone.valid_to is not None
    _, events = agent.kb.history(rex.id)
    assert any(e.event == "retracted" and e.detail == f"correction of turn {asked.state.index}" for e in events)
    assert "Max" in result.reply.text and "Rex" not in shown(agent.llm.candidate_calls[-1])


def test_a_users_correction_of_a_shared_fact_holds_for_them_without_touching_other_users(open_agent, llm):
    agent = open_agent("sam", llm)
    shared = agent.kb.add_fact("mary", "lives_in", "paris", text="Mary lives in Paris.", shared=True).fact
    agent.chat("Where does Mary live?")

    result = agent.feedback(correction="Mary lives in Rome.")

    lines = fact_lines(llm.candidate_calls[-1])
    assert "Rome" in lines[0] and not any("Paris" in line for line in lines)  # sam's own fact hides the shared one
    assert "Rome" in result.reply.text
    assert agent.kb.fact(shared.id).status is Status.ACTIVE  # shared knowledge is not one user's to retract
    assert agent.kb.fact(shared.id).confidence < shared.confidence

    agent.switch_user("bob")
    agent.chat("Where does Mary live?")
    assert "Paris" in shown(llm.last_messages) and "Rome" not in shown(llm.last_messages)


# --------------------------------------------------------------------------- confidence


def test_ratings_move_the_used_facts_confidence_within_bounds_and_keep_history(open_agent):
    agent = open_agent("sam", config=with_feedback(step_down=0.5, step_up=0.3, min_confidence=0.2,
                                                    max_confidence=0.95, max_rounds=10))
    fact = agent.chat("I live in Paris.").learned_facts[0]
    assert fact.confidence == pytest.approx(0.9)
    agent.chat("Where do I live?")

    seen = [agent.feedback(rating=BAD).confidence_changes for _ in range(3)]
    assert [[(c.old, c.new) for c in changes] for changes in seen] == [[(0.9, 0.4)], [(0.4, 0.2)], []]
    assert agent.kb.fact(fact.id).confidence == pytest.approx(0.2)  # never below min_confidence

    up = [agent.feedback(rating=GOOD).confidence_changes for _ in range(4)]
    assert [c.new for changes in up for c in changes] == pytest.approx([0.5, 0.8, 0.95])
    assert up[-1] == ()  # never above max_confidence

    _, events = agent.kb.history(fact.id)
    moves = [e.detail for e in events if e.event == "confidence"]
    assert len(moves) == 5
    assert moves[0].startswith("0.900 -> 0.400: reply to turn 1 rated 1/5 (bad)")
    assert moves[-1].startswith("0.800 -> 0.950") and "5/5 (good)" in moves[-1]


def test_milder_ratings_move_half_as_far_and_neutral_not_at_all(agent):
    fact = agent.chat("I work at Acme.").learned_facts[0]
    agent.chat("Where do I work?")
    assert agent.feedback(rating=3).confidence_changes == ()
    (down,) = agent.feedback(rating=2).confidence_changes
    assert down.new == pytest.approx(0.9 - 0.125)
    (up,) = agent.feedback(rating="4").confidence_changes
    assert up.new == pytest.approx(down.new + 0.05)
    assert agent.kb.fact(fact.id).confidence == pytest.approx(up.new)


def test_a_correction_does_not_lower_a_fact_it_restates(agent):
    fact = agent.chat("I live in Paris.").learned_facts[0]
    agent.chat("Where do I live?")
    result = agent.feedback(correction="I live in Paris.")
    assert result.learned == () and result.superseded == ()
    assert fact.id not in [c.fact_id for c in result.confidence_changes]
    assert agent.kb.fact(fact.id).confidence == pytest.approx(0.9)


def test_bad_rating_of_an_acknowledgement_lowers_what_was_stored_and_regenerates_nothing(agent, llm):
    learned = agent.chat("I live in Paris.").learned_facts[0]
    result = agent.feedback(rating="bad", note="I said Paris, Texas")
    assert result.reply is None and result.round is None and not result.limit_reached
    assert [(c.fact_id, c.old, c.new) for c in result.confidence_changes] == [(learned.id, 0.9, pytest.approx(0.65))]
    assert llm.candidate_calls == []


def test_retrieval_ranks_equally_relevant_facts_by_confidence(agent, llm):
    a = agent.chat("My favorite food is sushi.").learned_facts[0]
    b = agent.chat("My favorite drink is tea.").learned_facts[0]
    def facts_cited() -> list[str]:  # the numbered fact lines, not the dated snippets of earlier turns
        return [line for line in fact_lines(llm.last_messages) if " said: " not in line]

    agent.chat("What do I like?")
    order = facts_cited()
    first = a if "sushi" in order[0] else b
    agent.kb.set_confidence(first.id, 0.1)
    agent.chat("What do I like?")
    assert first.text.rstrip(".") in facts_cited()[-1]


# --------------------------------------------------------------------------- re-ranking and rounds


def test_reranker_prefers_the_candidate_close_to_the_correction_and_away_from_the_rejected_answer():
    emb = HashEmbedder(64)
    cands = [Candidate("Sam lives in Paris.", -0.3, 5, greedy=True), Candidate("I am not sure.", -0.2, 4),
             Candidate("Sam lives in Berlin.", -0.6, 5), Candidate("sam  lives in BERLIN.", -0.9, 5)]
    cfg = FeedbackConfig()
    signal = make_signal(emb, cfg, 1, BAD, "Sam lives in Berlin.", ["Sam lives in Paris."])
    ranked = rerank(cands, signal, cfg, emb)

    assert ranked[0].text == "Sam lives in Berlin."
    assert len(ranked) == 3  # the case/spacing duplicate merged into the more probable one
    for c in ranked:
        assert c.score == pytest.approx(c.logprob + cfg.target_weight * c.target_sim - cfg.rejected_weight * c.rejected_sim)
    paris = next(c for c in ranked if "Paris" in c.text)
    assert paris.rejected_sim == max(c.rejected_sim for c in ranked) and paris.score < ranked[0].score
    # the plain cosine variant: the rejected answer itself has similarity 1
    plain_cos = FeedbackConfig(rejected_beyond_target=False)
    again = rerank(cands, make_signal(emb, plain_cos, 1, BAD, "Sam lives in Berlin.", ["Sam lives in Paris."]),
                   plain_cos, emb)
    assert next(c for c in again if "Paris" in c.text).rejected_sim == pytest.approx(1.0)
    # with λ = μ = 0 the most probable candidate wins: the similarity terms made the difference
    plain = FeedbackConfig(target_weight=0.0, rejected_weight=0.0)
    assert rerank(cands, make_signal(emb, plain, 1, BAD, "Sam lives in Berlin.", ["Sam lives in Paris."]),
                  plain, emb)[0].text == "I am not sure."


def test_bare_bad_rating_pushes_away_from_the_rejected_answer_only():
    emb = HashEmbedder(64)
    cfg = FeedbackConfig()
    signal = make_signal(emb, cfg, 2, BAD, None, ["Sam lives in Paris.", "Paris, France."])
    assert signal.text is None and signal.target_vector is None
    assert np.linalg.norm(signal.vector) == pytest.approx(1.0)
    ranked = rerank([Candidate("Paris, France.", -0.1, 3), Candidate("Sam lives in Lyon.", -0.2, 5)], signal, cfg, emb)
    assert ranked[0].text == "Sam lives in Lyon." and ranked[0].target_sim is None


def test_regeneration_is_chosen_by_the_reranker_and_rounds_end_at_the_limit(open_agent, llm):
    agent = open_agent("sam", llm, with_feedback(max_rounds=2))
    agent.chat("I live in Paris.")
    first = agent.chat("Where do I live?")

    llm.add_candidates(("Sam lives in Paris.", -0.2), ("Sam lives in Berlin.", -0.5))
    one = agent.feedback(correction="I live in Berlin.")
    # "Sam lives in Paris." names what the correction took back: the re-ranker sees it grounded into the
    # corrected memory, with the batch's highest log-prob (issue 14)
    assert sorted((c.text, c.logprob) for c in one.round.candidates) == [
        ("Sam lives in Berlin.", -0.5), ("You live in Berlin.", -0.2)]
    assert one.round.number == 1 and one.reply.text == one.round.chosen.text == "You live in Berlin."
    assert one.round.signal.rejected == (first.text,)

    # (no new country here: an answer about the user's world names nothing memory lacks, issue 14)
    llm.add_candidates(("You live in Berlin.", -0.1), ("Berlin is where Sam lives.", -0.4))  # a repeat loses
    two = agent.feedback(rating=BAD, note="say it differently")
    assert two.round.number == 2 and two.reply.text == "Berlin is where Sam lives."
    assert two.round.signal.rejected == ("You live in Berlin.", first.text)
    assert [r.number for r in agent.last_reply.rounds] == [1, 2]

    three = agent.feedback(rating=BAD)
    assert three.limit_reached and three.reply is None and three.round is None
    assert agent.last_reply is two.reply and len(llm.candidate_calls) == 2
    assert three.confidence_changes  # the rating still counts

    assert agent.feedback(rating=GOOD).reply is None  # a good rating ends it without regenerating
    assert agent.chat("Where do I live?").rounds == ()  # a new question starts from round 1 again


def test_regenerated_answer_continues_the_conversation(open_agent, llm, kb_path):
    agent = open_agent("sam", llm, AgentConfig(prompt=PromptConfig(history_turns=4)))
    agent.chat("I live in Paris.")
    asked = agent.chat("Where do I live?")
    llm.add_candidates("Sam lives in Berlin.")
    agent.feedback(correction="No, I live in Berlin.")
    # the rejected exchange is not shown when regenerating it
    assert "Sam lives in Paris." not in [m.content for m in llm.candidate_calls[-1] if m.role == "assistant"]

    agent.chat("Thanks, and where do I live?")  # (a question memory can answer: one about work abstains)
    history = [m.content for m in llm.last_messages if m.role == "assistant"]
    assert "Sam lives in Berlin." in history and "Sam lives in Paris." not in history
    turns = agent.state.turns
    assert turns[asked.state.index].reply == "Sam lives in Berlin."
    correction = turns[asked.state.index + 1]
    assert correction.text == "No, I live in Berlin." and correction.intent.value == "correction"
    agent.close()
    resumed = open_agent("sam", llm)  # the saved session has the regenerated answer too
    assert resumed.state.turns[asked.state.index].reply == "Sam lives in Berlin."


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, words", [
    (dict(correction=""), "correction is empty"),
    (dict(correction="   "), "correction is empty"),
    (dict(note="\n"), "note is empty"),
    (dict(rating=0), "rating 0 is out of range"),
    (dict(rating=6), "rating 6 is out of range"),
    (dict(rating=2.5), "rating 2.5 is out of range"),
    (dict(rating=True), "rating True is out of range"),
    (dict(rating="great"), "rating 'great' is not a rating"),
    (dict(), "needs a rating"),
    (dict(rating="good", correction="I live in Berlin."), "says the answer was right"),
])
def test_bad_feedback_is_refused_and_changes_nothing(agent, llm, kwargs, words):
    agent.chat("I live in Paris.")
    agent.chat("Where do I live?")
    before = snapshot(agent)
    with pytest.raises(BadInputError, match=words):
        agent.feedback(**kwargs)
    assert snapshot(agent) == before
    assert llm.candidate_calls == []


def test_feedback_without_a_previous_reply_is_refused(open_agent):
    agent = open_agent("sam")
    with pytest.raises(BadInputError, match="no previous reply"):
        agent.feedback(rating=BAD)
    agent.chat("I live in Paris.")
    agent.switch_user("bob")  # the last reply was sam's, not bob's
    with pytest.raises(BadInputError, match="no previous reply"):
        agent.feedback(correction="I live in Rome.")
    assert agent.kb.facts(user="bob") == [] and len(agent.state.turns) == 0


def test_config_and_rating_validation_name_the_bad_value():
    with pytest.raises(BadInputError, match="candidates=0"):
        FeedbackConfig(candidates=0)
    with pytest.raises(BadInputError, match=r"min_confidence < max_confidence"):
        FeedbackConfig(min_confidence=0.9, max_confidence=0.5)
    with pytest.raises(BadInputError, match="max_rounds=0"):
        FeedbackConfig(max_rounds=0)
    assert Rating.parse("good") == GOOD and Rating.parse(" BAD ") == BAD and Rating.parse("4") == Rating(4)
    assert str(Rating(2)) == "2/5 (poor)"


# --------------------------------------------------------------------------- the chat's slash commands


@pytest.fixture
def chat(monkeypatch, kb_path, capsys, nlp):
    """chat(*lines) -> stdout lines of one `kgrow chat --user sam` run fed ``lines`` on a pipe."""

    def open_agent(args, kb_dir=None):
        kb = KnowledgeBase.open(Path(args.kb), embedder=HashEmbedder(64), config=KBConfig(show_progress=False))
        return Agent(kb, ScriptedLLM(responder=echo_facts), args.user, AgentConfig(), nlp=nlp, owns_kb=True)

    monkeypatch.setattr(chat_cmd, "open_agent", open_agent)

    def run(*lines: str) -> list[str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
        code = main(["chat", "--kb", str(kb_path), "--user", "sam"])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out.splitlines()

    return run


def test_fix_prints_the_new_answer_and_what_changed_and_why_shows_the_round(chat):
    out = chat("I live in Lisbon.", "Where do I live?", "/fix No, I live in Porto.", "/why")
    assert "Lisbon" in out[1]
    assert out[2] == "Sam lives in Porto."  # the new answer comes first, like any reply line
    assert "learned: Sam lives in Porto." in out and "superseded: Sam lives in Lisbon." in out
    assert "confidence: Sam lives in Lisbon. 0.90 -> 0.65" in out
    why = "\n".join(out[out.index("facts given to the model:"):])
    assert "[1] Sam lives in Porto." in why and "correction of turn 1" in why
    assert "feedback rounds" in why and "round 1: rated 1/5 (bad)" in why
    assert 'asked for "Sam live in Porto."' in why and 'rejected "Sam lives in Lisbon."' in why
    chosen = [line for line in why.splitlines() if line.startswith("   * ")]
    assert len(chosen) == 1 and "Porto" in chosen[0] and "log-prob" in chosen[0]


def test_good_and_bad_report_confidence_changes(chat):
    out = chat("I work at Initech.", "Where do I work?", "/good", "/bad wrong company")
    assert "Initech" in out[1]
    assert out[2] == "(thanks: rated 5/5 (good))" and out[3] == "confidence: Sam works at Initech. 0.90 -> 1.00"
    assert "Initech" in out[4]  # the regenerated answer (the only fact there is)
    assert "confidence: Sam works at Initech. 1.00 -> 0.75" in out


def test_feedback_errors_are_one_line_and_the_chat_goes_on(chat):
    out = chat("/bad", "/fix", "I live in Lisbon.", "/good 7", "Where do I live?")
    assert out[0].startswith("error: there is no previous reply")
    assert out[1].startswith("usage: /fix")
    assert "Lisbon" in out[2] and "Lisbon" in out[4]
    assert out[3].startswith("(thanks")  # "/good 7": the 7 is a note, the rating is good


def test_help_lists_the_feedback_commands(chat):
    help_text = "\n".join(chat("/help"))
    for cmd in ("/good", "/bad [NOTE]", "/fix CORRECTION"):
        assert cmd in help_text


# --------------------------------------------------------------------------- the evaluation


def test_feedback_eval_runs_on_the_fake_models(tmp_path, capsys):
    from agent.evals.feedback_eval import load_dialogues
    from agent.evals.feedback_eval import main as eval_main

    dialogues = load_dialogues(REPO / "examples" / "feedback")
    assert len(dialogues) >= 20 and len({d.new.relation for d in dialogues}) >= 12
    out = tmp_path / "fb.json"
    assert eval_main([str(REPO / "examples" / "feedback"), "--fake", "--limit", "4", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "first regenerated answer right" in table and "old fact kept in history" in table
    report = json.loads(out.read_text())
    assert report["dialogues"] == 4 and report["errors"] == 0
    assert report["old_kept"] == 1.0 and report["recall_right"] == 1.0  # the echo LLM repeats fact [1]
    assert all(r["rounds"] for r in report["results"])


def test_feedback_eval_names_a_malformed_dialogue(tmp_path):
    from agent.evals.feedback_eval import load_dialogues

    bad = tmp_path / "d.json"
    bad.write_text(json.dumps([{"id": "x", "description": "d", "user": "u", "ask": "Where?", "fix": "",
                                "expect": ["a"], "old": ["u", "lives_in", "a"], "new": ["u", "lives_in", "b"]}]))
    with pytest.raises(BadInputError, match=r"d.json: \$\[0\]\.fix: must be a non-empty string"):
        load_dialogues(bad)


# --------------------------------------------------------------------------- the real model


@pytest.mark.integration
def test_sample_candidates_returns_distinct_scored_answers(model_cache):
    torch = pytest.importorskip("torch")
    from agent.pipeline.candidates import sample_candidates
    from agent.generation.llm import CausalLM, LLMConfig, Message

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_llm: contended threads are far slower on a small shared CPU
    try:
        lm = CausalLM(LLMConfig(device="cpu", max_new_tokens=24, cache_dir=str(model_cache)))
        msgs = [Message("system", "Answer the user's question in one short sentence using the facts about them."),
                Message("user", "Facts about me (I am Sam):\n[1] Sam lives in Berlin.\n\nWhere does Sam live?")]
        greedy = "".join(lm.stream(msgs)).strip()
        rng = torch.get_rng_state()
        cands = sample_candidates(lm, msgs, 3, 1.0, 24, seed=7)
        assert torch.equal(rng, torch.get_rng_state())  # the global RNG is left alone
        again = sample_candidates(lm, msgs, 3, 1.0, 24, seed=7)
    finally:
        torch.set_num_threads(threads)
    assert cands[0].greedy and cands[0].text == greedy  # decoded exactly like a chat reply
    assert len(cands) == 3 and len({" ".join(c.text.split()).casefold() for c in cands}) == 3
    assert all(math.isfinite(c.logprob) and c.logprob <= 0 and c.tokens > 0 for c in cands)
    assert [c.text for c in again] == [c.text for c in cands]  # same seed, same candidates
