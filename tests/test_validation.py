"""Config validation in one place: every bounded field of every agent config is checked, and the error names
the config, the field, the bad value and the valid range."""
from __future__ import annotations

import dataclasses

import pytest

from agent.answers.support import SupportConfig
from agent.dialogue.state import StateConfig
from agent.errors import BadInputError
from agent.evals.fusion_eval import EvalConfig as FusionEvalConfig
from agent.evals.probe_eval import ProbeEvalConfig
from agent.extraction.extract import BatchConfig
from agent.fusion.adapter import FusionConfig
from agent.extraction.constrained import ConstrainedConfig
from agent.extraction.llm_extractor import LLMExtractorConfig
from agent.extraction.patterns import PatternConfig
from agent.fusion.trainer import TrainConfig
from agent.generation.llm import LLMConfig
from agent.lora.learn import LearnConfig
from agent.generation.prompt import PromptConfig
from agent.memory.recall import RecallConfig
from agent.memory.retrieval import RetrievalConfig
from agent.pipeline.feedback import FeedbackConfig
from agent.pipeline.loop import AgentConfig
from agent.profile.profile import ProfileConfig

CONFIGS = [AgentConfig, BatchConfig, ConstrainedConfig, FeedbackConfig, FusionConfig, FusionEvalConfig, LearnConfig,
           LLMConfig, LLMExtractorConfig, PatternConfig, ProbeEvalConfig, PromptConfig, ProfileConfig, RecallConfig,
           RetrievalConfig, StateConfig, SupportConfig, TrainConfig]
#: the fields without a default, per config
REQUIRED = {"TrainConfig": {"out_dir": "unused"},
            "FusionConfig": {"base_model": "m", "hidden_size": 64, "embedder": "e"}}


def _bounded(cls):
    return [(f.name, f.metadata["range"]) for f in dataclasses.fields(cls) if "range" in f.metadata]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_bounded_field_refuses_values_outside_its_range(cls):
    fields = _bounded(cls)
    assert fields, f"{cls.__name__} declares no bounded field"
    required = REQUIRED.get(cls.__name__, {})
    cls(**required)  # the defaults are valid
    for name, (lo, hi) in fields:
        integral = isinstance(lo, int) and isinstance(hi, int)
        for bad in (lo - 1, hi + 1, True, "3"):
            with pytest.raises(BadInputError) as e:
                cls(**{**required, name: bad})
            msg = str(e.value)
            assert f"{cls.__name__}.{name}={bad!r}" in msg and f"{lo}..{hi}" in msg, msg
        for edge in (lo, hi):  # the range is inclusive (a rule relating two fields may still refuse an edge)
            try:
                cls(**{**required, name: edge})
            except BadInputError as e:
                assert f"{name}={edge!r} is invalid" not in str(e), str(e)
        if integral:
            with pytest.raises(BadInputError, match="an integer"):
                cls(**{**required, name: lo + 0.5})
