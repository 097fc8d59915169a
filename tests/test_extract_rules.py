"""How people say where they live and work, as the general rules read it (issue 13, second round)."""
from __future__ import annotations

import pytest

from agent.extraction.extract import ExtractionContext, PatternConfig, PatternExtractor

NOW = 1795780800.0  # 2026-11-27T12:00Z, the probes' turn time


@pytest.fixture(scope="module")
def extractor(nlp):
    return PatternExtractor(nlp, PatternConfig(strict=True))


def said(extractor, text: str) -> list[tuple[str, str, str]]:
    return [(t.subject, t.relation, t.object) for t in extractor.extract(text, ExtractionContext("sam", now=NOW))
            if t.current or t.modality == "plan"]


@pytest.mark.parametrize("text,expected", [
    ("I live in London and work in Canary Wharf.", [("sam", "lives_in", "London"), ("sam", "works_in", "Canary Wharf")]),
    ("I'm a junior doctor at Addenbrooke's.", [("sam", "occupation", "doctor"), ("sam", "works_at", "Addenbrooke's")]),
    ("Home is Glasgow for me.", [("sam", "lives_in", "Glasgow")]),
    ("Our flat is in Brixton.", [("sam", "lives_in", "Brixton")]),
    ("I've made my home in Vancouver.", [("sam", "lives_in", "Vancouver")]),
    ("Just moved to Seattle!", [("sam", "lives_in", "Seattle")]),
    ("I live with my wife in Austin.", [("sam", "lives_in", "Austin")]),
    ("I'm living in Berlin at the moment.", [("sam", "lives_in", "Berlin")]),
    ("My job is at Barclays.", [("sam", "works_at", "Barclays")]),
    ("I was born and raised in Chicago.", [("sam", "born_in", "Chicago"), ("sam", "grew_up_in", "Chicago")]),
    ("tbh I'm a software dev at Monzo", [("sam", "occupation", "software dev"), ("sam", "works_at", "Monzo")]),
    ("Im from Ireland.", [("sam", "comes_from", "Ireland")]),
    ("I'm planning on moving to Lisbon.", [("sam", "plans_to_move_to", "Lisbon")]),
    ("Just started uni at Bristol.", [("sam", "studies_at", "Bristol")]),
    ("Grew up in a small town near Lyon.", [("sam", "grew_up_in", "Lyon")]),
])
def test_ways_of_saying_it(extractor, text, expected):
    assert said(extractor, text) == expected


@pytest.mark.parametrize("text", [
    "I'm thinking of moving to Spain.",  # a maybe, not a plan
    "I'm not planning on moving to Rome.",
    "I teach maths at a secondary school.",  # no employer named
    "We love jazz.",
    "Go to Paris!",  # an imperative has no dropped "I"
])
def test_nothing_current_is_read_into_these(extractor, text):
    assert [t for t in said(extractor, text) if t[1] in ("lives_in", "works_at", "plans_to_move_to", "likes")] == []


def test_a_person_named_by_a_relation_is_she_in_the_next_turn(nlp, extractor):
    from agent.evals import probe_eval

    session = probe_eval.Session(nlp, extractor, NOW)
    session.say("I have a sister called Ana.")
    _, triples, _ = session.say("She's a lawyer.")
    assert [(t.subject, t.relation, t.object) for t in triples] == [("ana", "occupation", "lawyer")]
