"""Tests of the scenario set and the eval harness (run end-to-end on the fake embedder and echo LLM)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import BadInputError
from agent.evals.scenario import Category, ScenarioError, TurnKind, load_scenarios

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"
def _good() -> dict:
    return {
        "id": "t-1", "category": "single_hop", "description": "d", "user": "alice",
        "sessions": [
            [{"say": "I live in Paris.", "expect_triples": [["alice", "lives_in", "Paris"]]}],
            {"user": "bob", "turns": [{"ask": "Where do I live?", "expect_answer": [], "reject": ["Paris"]}]},
        ],
        "checks": [{"kind": "absent", "user": "bob", "triple": ["alice", "lives_in", "Paris"]}],
    }


def _write(tmp_path: Path, data: object, name: str = "s.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data), encoding="utf-8")
    return p


# --------------------------------------------------------------------------- the scenario set


def test_scenario_set_is_well_formed():
    scenarios = load_scenarios(SCENARIOS)
    assert len(scenarios) >= 32
    assert {s.category for s in scenarios} == set(Category)
    for c in Category:
        assert sum(s.category is c for s in scenarios) >= 3, c
    questions = [q for s in scenarios for q in s.questions]
    assert len(questions) >= 70
    # single-hop-style recall: the answer rests on exactly one stated fact
    assert sum(1 for q in questions if len(q.evidence) == 1 and q.expect_answer) >= 40
    for s in scenarios:
        assert 2 <= len(s.sessions) <= 4, s.id
        assert s.questions, s.id
    updates = [s for s in scenarios if s.category is Category.UPDATE]
    assert all(any(q.reject for q in s.questions) for s in updates)
    multi = [s for s in scenarios if s.category is Category.MULTI_USER]
    assert all(len({x.user for x in s.sessions}) >= 2 for s in multi)
    talk = [t for s in scenarios if s.category is Category.SMALL_TALK_AND_QUESTIONS
            for x in s.sessions for t in x.turns if t.kind is TurnKind.SAY and t.text.endswith("?")]
    assert talk and all(not t.expect_triples for t in talk)


def test_a_directory_and_a_single_file_load(tmp_path):
    one = _write(tmp_path, _good())
    (sc,) = load_scenarios(one)
    assert sc.sessions[0].user == "alice" and sc.sessions[1].user == "bob"
    assert sc.questions[0].reject == ("Paris",)
    _write(tmp_path, [dict(_good(), id="t-2")], "more.json")
    assert [s.id for s in load_scenarios(tmp_path)] == ["t-2", "t-1"]


@pytest.mark.parametrize("mutate, where, what", [
    (lambda d: d["sessions"][0][0]["expect_triples"][0].__setitem__(1, "lives"), "$.sessions[0][0].expect_triples[0][1]", "'lives'"),
    (lambda d: d.__setitem__("category", "gossip"), "$.category", "'gossip'"),
    (lambda d: d.pop("user"), "$", "'user'"),
    (lambda d: d["sessions"][1]["turns"][0].__setitem__("expect_anwser", ["x"]), "$.sessions[1].turns[0]", "'expect_anwser'"),
    (lambda d: d["sessions"][1]["turns"][0].__setitem__("reject", []), "$.sessions[1].turns[0].expect_answer", "reject"),
    (lambda d: d["sessions"][0].__setitem__(0, {"tell": "hi"}), "$.sessions[0][0]", "'say'"),
    (lambda d: d["checks"][0].__setitem__("kind", "maybe"), "$.checks[0].kind", "'maybe'"),
    (lambda d: d["sessions"].__setitem__(1, []), "$.sessions[1]", "non-empty list"),
])
def test_malformed_scenario_names_file_and_field(tmp_path, mutate, where, what):
    data = _good()
    mutate(data)
    path = _write(tmp_path, [data], "broken.json")
    with pytest.raises(ScenarioError) as info:
        load_scenarios(tmp_path)
    msg = str(info.value)
    assert str(path) in msg and where.replace("$", "$[0]", 1) in msg and what in msg
    assert isinstance(info.value, BadInputError)


def test_bad_json_and_duplicate_ids(tmp_path):
    (tmp_path / "a.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"a\.json: not valid JSON"):
        load_scenarios(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps(_good()), encoding="utf-8")
    _write(tmp_path, _good(), "b.json")
    with pytest.raises(ScenarioError, match=r"b\.json: scenario id 't-1' is also used in .*a\.json"):
        load_scenarios(tmp_path)


def test_cli_exits_non_zero_on_a_broken_file(tmp_path, capsys):
    from agent.evals.scenario_eval import main

    data = _good()
    data["sessions"] = "nope"
    _write(tmp_path, data, "bad.json")
    assert main([str(tmp_path), "--fake"]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "$.sessions" in err


# --------------------------------------------------------------------------- scoring helpers


def test_answer_matching_and_canonical_triples(tmp_path, kb):
    from agent.evals.scenario_eval import answer_ok, canon, mentions
    from agent.evals.scenario import ScriptTurn

    assert mentions("You live in Paris.", "paris") and not mentions("I remembered", "red")
    assert mentions("You hate mushrooms", "mushroom")
    q = ScriptTurn(TurnKind.ASK, "Where?", expect_answer=("Berlin",), reject=("Paris",))
    assert answer_ok(q, "In Berlin.") and not answer_ok(q, "Berlin, formerly Paris") and not answer_ok(q, "No idea")
    assert canon(kb, "Alice", "wife", "Sara") == canon(kb, "alice", "married_to", "sara")
    assert canon(kb, "Carol", "born_on", "July 4, 1988") == ("carol", "born_on", "1988-07-04")
    assert canon(kb, "erin", "occupation", "a nurse") == ("erin", "occupation", "nurse")
    assert canon(kb, "zoe", "favourite_colour", "NYC")[1:] == ("favorite_colour", "new york city")


def test_abstain_label_grades_abstentions_both_ways():
    from agent.evals.scenario_eval import answer_ok
    from agent.evals.scenario import ScriptTurn

    must = ScriptTurn(TurnKind.ASK, "Where do I work?", reject=("Lisbon",), abstain=True)
    assert answer_ok(must, "You haven't told me where you work.")
    assert not answer_ok(must, "Dana works as a freelance graphic designer.")  # invents: no abstention
    assert not answer_ok(must, "Lisbon")
    never = ScriptTurn(TurnKind.ASK, "What is the capital of France?", expect_answer=("Paris",), abstain=False)
    assert answer_ok(never, "The capital of France is Paris.") and not answer_ok(never, "I don't know.")


def test_new_sets_have_labels_and_a_test_half():
    from agent.evals.scenario import Split

    scenarios = load_scenarios(SCENARIOS)
    for cat, least in ((Category.UNANSWERABLE, 60), (Category.GENERAL_KNOWLEDGE, 20)):
        qs = [(s.split, q) for s in scenarios if s.category is cat for q in s.questions]
        assert len(qs) >= least
        assert sum(split is Split.TEST for split, _ in qs) * 2 == len(qs)
        assert all(q.abstain is (cat is Category.UNANSWERABLE) for _, q in qs)
        assert all(q.expect_answer for _, q in qs if cat is Category.GENERAL_KNOWLEDGE)


def test_policy_metrics_count_per_split():
    from agent.evals.grounded import policy_metrics

    def row(cat, split="dev", correct=True, grounded=True, abstained=False, unsupported=(), bare=False):
        return {"category": cat, "split": split, "correct": correct, "grounded": grounded, "abstained": abstained,
                "unsupported": unsupported, "about_user": cat != "general_knowledge", "topic_right": True,
                "bare_correct": bare}

    p = policy_metrics([row("single_hop"), row("single_hop", grounded=False, unsupported=("Croatia",)),
                        row("unanswerable", "test", abstained=True), row("unanswerable", "test", correct=False),
                        row("general_knowledge", "test", bare=True), row("general_knowledge", "test", False, bare=True)])
    assert (p.original_contains.n, p.original_grounded.n, p.original_contains.total) == (2, 1, 2)
    assert (p.abstain_test.n, p.abstain_test.total, p.abstain_dev.total) == (1, 2, 0)
    assert (p.general_of_bare_test.n, p.general_of_bare_test.total) == (1, 2)
    assert (p.unsupported_claims.n, p.unsupported_claims.total) == (1, 3)


# --------------------------------------------------------------------------- end to end


def test_fake_run_end_to_end(tmp_path):
    from agent.evals.scenario_eval import EvalConfig, Step, evaluate, format_report, main, report_json

    src = tmp_path / "three"
    src.mkdir()
    by_cat = {s.category: s for s in load_scenarios(SCENARIOS)}
    chosen = [by_cat[c] for c in (Category.SINGLE_HOP, Category.UPDATE, Category.MULTI_USER)]
    for s in chosen:
        raw = json.loads(Path(s.source).read_text(encoding="utf-8"))
        _write(src, next(x for x in raw if x["id"] == s.id), f"{s.id}.json")
    report = evaluate(EvalConfig(src, "unused", fake=True))
    assert report.fake and report.model == "echo-llm"
    assert [m.name for m in report.categories] == ["single_hop", "update", "multi_user"]
    o = report.overall
    assert o.scenarios == 3 and o.questions == sum(len(s.questions) for s in chosen) and o.errors == 0
    assert o.turns == sum(len(x.turns) for s in chosen for x in s.sessions)
    for m in report.categories + (o,):
        for v in (m.precision, m.recall, m.f1, m.retrieval_recall, m.answer_accuracy, m.check_pass_rate):
            assert v is None or 0.0 <= v <= 1.0, m
        assert m.leaked_facts == 0
    assert o.answer_accuracy is not None and o.precision is not None
    assert o.grounded_accuracy is not None and o.answers_grounded <= o.answers_correct
    assert report.policy is not None and report.policy.original_contains.total == o.questions
    assert [s.step for s in report.latency] == list(Step)
    total = next(s for s in report.latency if s.step is Step.TOTAL)
    assert total.all_p50 is not None and 0 < total.all_p50 <= total.all_p95
    text = format_report(report)
    assert "single_hop" in text and "overall" in text and "write_back" in text
    assert "ground" in text and "original questions: grounded" in text
    data = json.loads(report_json(report))
    assert data["overall"]["name"] == "overall" and len(data["scenarios"]) == 3
    out = tmp_path / "r.json"
    assert main([str(src), "--fake", "--limit", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["overall"]["scenarios"] == 1
