"""The learned recall ranker: its features, its weights file, and recall scored by it."""
from __future__ import annotations

import re

import numpy as np
import pytest

from agent.errors import BadInputError
from agent.memory.ranker import FEATURES, WEIGHTS, LinearRanker, Scoring, features, load
from agent.memory.recall import RecallConfig
from agent.pipeline.loop import AgentConfig
from kb import Episode, Hit, Kind
from tests.fakes_llm import ScriptedLLM


def _hit(text, session, role="user", cos=None, bm25=None, rank=None, t=0.0):
    e = Episode(f"e_{abs(hash((text, session)))}", "sam", text, "sam", None, t, session, 0, role)
    return Hit(kind=Kind.EPISODE, score=0.0, episode=e, vector_score=cos, keyword_rank=rank, keyword_score=bm25)


def test_features_describe_each_candidate_within_its_list():
    hits = [_hit("I adopted a greyhound called Biscuit.", "s1", cos=0.8, bm25=5.0, rank=1, t=2.0),
            _hit("Sure! Greyhounds are gentle dogs.", "s1", role="assistant", cos=0.6, t=1.0),
            _hit("The weather was nice.", "s2", bm25=1.0, rank=2, t=3.0)]
    x = features(hits, "What did you tell me about my dog?")
    assert x.shape == (3, len(FEATURES)) and x.dtype == np.float32
    col = {n: x[:, i] for i, n in enumerate(FEATURES)}
    assert col["dense"].tolist() == [1.0, 0.0, 0.0]  # min-max over the present cosines; missing -> 0
    assert col["bm25_rrank"].tolist() == [1.0, 0.0, 0.5]
    assert col["assistant"].tolist() == [0.0, 1.0, 0.0]
    assert col["assistant_asked"].tolist() == [0.0, 1.0, 0.0]  # the question asks what "you" said
    assert col["session_share"].tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert col["age_rank"].tolist() == [0.5, 1.0, 0.0]  # newest 0 .. oldest 1
    assert features([], "anything").shape == (0, len(FEATURES))


def test_the_weights_file_round_trips_and_refuses_other_features(tmp_path):
    r = load()
    assert len(r.weights) == len(FEATURES)
    assert LinearRanker.from_json(r.to_json()) == r
    stale = r.to_json().replace('"length"', '"chars"')
    with pytest.raises(BadInputError, match="retrain it with bench/train_ranker.py"):
        LinearRanker.from_json(stale, "old.json")
    with pytest.raises(BadInputError, match="not JSON"):
        LinearRanker.from_json("{", "broken.json")
    with pytest.raises(BadInputError, match=re.escape(str(tmp_path / "none.json"))):
        load(str(tmp_path / "none.json"))
    assert WEIGHTS.exists()  # packaged beside the module


def test_unknown_scoring_is_named_with_the_valid_ones():
    with pytest.raises(BadInputError, match="scoring 'neural' is not supported; valid values: learned, hand"):
        RecallConfig(scoring="neural")
    assert RecallConfig(scoring="learned").scoring is Scoring.LEARNED


def test_recall_scored_by_the_learned_ranker_finds_the_remark(agent_factory):
    agent = agent_factory("sam", ScriptedLLM(), AgentConfig(recall=RecallConfig(scoring=Scoring.LEARNED)))
    agent.chat("I adopted a rescue greyhound last week, his name is Biscuit.")
    agent.chat("The weather has been lovely all week.")
    agent.reset_session()
    top = agent.recall("What is my dog called?", k=3)
    assert "Biscuit" in top[0].text
    assert top[0].score >= top[-1].score
