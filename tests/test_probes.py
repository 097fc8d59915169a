"""The frozen probe set and its scorer: the set's shape, the scoring rules, and the pattern extractor's floor."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.errors import BadInputError
from agent.evals.probe_eval import NON_FACT, Probe, ProbeEvalConfig, load_probes, score
from agent.extraction.triple import Triple

PROBES = Path(__file__).resolve().parent.parent / "examples" / "probes"


@pytest.fixture(scope="module")
def probes():
    return load_probes(PROBES)


def test_probe_set_is_big_varied_and_split_by_hash(probes):
    assert len(probes) >= 150
    assert sum(p.modality in NON_FACT for p in probes) >= 40
    assert any(p.context for p in probes)  # pronouns across turns
    ranked = sorted(probes, key=lambda p: hashlib.sha1(p.id.encode()).hexdigest())
    assert {p.id for p in ranked[: len(probes) // 3]} == {p.id for p in probes if p.split == "test"}
    for p in probes:
        assert all(g["r"] and g["o"] for g in p.gold), p.id
        if p.modality in ("asserted", "past", "negated"):
            assert p.gold, f"{p.id}: a fact probe needs gold triples"


def test_loading_refuses_a_bad_file(tmp_path):
    (tmp_path / "probes.jsonl").write_text('{"id": "x", "split": "train", "modality": "asserted"}\n')
    with pytest.raises(BadInputError, match="split must be dev"):
        load_probes(tmp_path)
    with pytest.raises(BadInputError, match="no probe file"):
        load_probes(tmp_path / "missing")


class FixedExtractor:
    """Returns the same triples for every statement: enough to check the scoring rules."""

    def __init__(self, triples):
        self.triples = triples

    def extract(self, text, context, doc=None):
        return list(self.triples)


def _probe(gold, modality="asserted", split="dev"):
    return Probe("p", split, (), "I live in the city of Porto.", tuple(gold), modality, "statement", {})


def test_match_needs_relation_polarity_and_a_containing_object(nlp):
    found = [Triple("sam", "lives_in", "the city of Porto", "Sam lives in the city of Porto."),
             Triple("sam", "employer", "Acme Ltd", "Sam's employer is Acme Ltd.")]
    gold = [{"s": "user", "r": "lives_in", "o": "Porto"}, {"s": "user", "r": "works_at", "o": "acme"},
            {"s": "user", "r": "likes", "o": "jazz", "neg": True}]
    t = score([_probe(gold)], nlp, FixedExtractor(found), ProbeEvalConfig())["dev"]
    assert (t.matched, t.extracted, t.gold) == (2, 2, 3)  # employer counts as works_at, jazz was missed
    assert t.summary()["precision"] == 1.0 and t.summary()["recall"] == pytest.approx(0.667, abs=1e-3)


def test_a_non_fact_stored_as_current_is_counted_but_a_plan_is_not(nlp):
    current = Triple("sam", "lives_in", "Berlin", "Sam lives in Berlin.")
    plan = Triple("sam", "plans_to_move_to", "Berlin", "Sam plans to move to Berlin.", modality="plan")
    wrong = score([_probe([], "hypothetical")], nlp, FixedExtractor([current]), ProbeEvalConfig())["dev"]
    right = score([_probe([], "plan")], nlp, FixedExtractor([plan]), ProbeEvalConfig())["dev"]
    assert wrong.non_fact_stored == 1 and right.non_fact_stored == 0


def test_pattern_extractor_stores_no_non_fact_and_keeps_its_floor(probes, nlp):
    """A regression floor, not a tuning target: the numbers are in bench/results/probes.json."""
    from agent.extraction.patterns import PatternExtractor

    tallies = score(probes, nlp, PatternExtractor(nlp), ProbeEvalConfig())
    for split in ("dev", "test"):
        s = tallies[split].summary()
        assert s["non_facts_stored_as_current"] == 0, split
        assert s["precision"] >= 0.9 and s["recall"] >= 0.8, (split, s)
        assert s["intent_accuracy"] >= 0.95, (split, s)
