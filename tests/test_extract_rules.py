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


def pets(extractor, text: str) -> list[tuple[str, str, str]]:
    return [t for t in said(extractor, text) if t[1] in ("has_pet", "pet_name")]


@pytest.mark.parametrize("text,kind,name", [
    ("I adopted a rescue greyhound last week, his name is Biscuit.", "greyhound", "Biscuit"),
    ("We got a kitten in May, she's called Miso.", "kitten", "Miso"),
    ("My new puppy is named Rex.", "puppy", "Rex"),
    ("I adopted a cat; her name is Luna.", "cat", "Luna"),
    ("I got a puppy yesterday and her name is Bella.", "puppy", "Bella"),
    ("I rescued a labrador, he's called Bruno.", "labrador", "Bruno"),
])
def test_getting_a_pet_is_having_one_and_his_name_is_the_pets(extractor, text, kind, name):
    assert pets(extractor, text) == [("sam", "has_pet", kind), ("sam", "pet_name", name)]


def test_her_name_names_the_person_just_introduced(extractor):
    assert said(extractor, "I have a sister, her name is Ana.") == [("sam", "sister", "Ana")]
    assert said(extractor, "I have a brother; his name is Ben.") == [("sam", "brother", "Ben")]


def test_adopting_a_pet_keeps_its_time_and_a_negated_one_is_not_had(extractor):
    [pet] = [t for t in extractor.extract("I adopted a greyhound last week.", ExtractionContext("sam", now=NOW))
             if t.relation == "has_pet"]
    assert (pet.object, pet.modality, pet.time) == ("greyhound", "past", "2026-11-20")
    assert pets(extractor, "I didn't adopt a dog, his name is Rex.") == []
    assert pets(extractor, "I might adopt a greyhound next year.") == []


@pytest.mark.parametrize("turns,expected", [
    (["I adopted a rescue greyhound last week.", "His name is Biscuit."], ("sam", "pet_name", "Biscuit")),
    (["We got a kitten in May.", "I live in Leeds.", "She's called Miso."], ("sam", "pet_name", "Miso")),
    (["My mother lives in Bath.", "Her name is Ruth."], ("sam", "mother", "Ruth")),
    (["My brother Tom lives in Leeds.", "I adopted a puppy.", "His name is Max."], ("sam", "pet_name", "Max")),
])
def test_his_name_in_a_later_turn_names_the_pet_or_person_introduced_before(nlp, extractor, turns, expected):
    from agent.evals import probe_eval

    session = probe_eval.Session(nlp, extractor, NOW)
    for text in turns[:-1]:
        session.say(text)
    _, triples, _ = session.say(turns[-1])
    assert expected in [(t.subject, t.relation, t.object) for t in triples]


def test_learning_to_play_an_instrument_since_january(extractor):
    [fact] = extractor.extract("I've been learning to play the cello since January.", ExtractionContext("sam", now=NOW))
    assert (fact.subject, fact.relation, fact.object, fact.modality, fact.time) == (
        "sam", "learning", "to play the cello", "asserted", "2026-01")
    assert fact.text == "Sam is learning to play the cello."
    assert said(extractor, "I want to learn to play the cello.") == []
