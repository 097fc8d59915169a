"""Shared fixtures: a tmp data directory for every test, the hash-seeded fake embedder, a fresh KB."""
from __future__ import annotations

import pytest

from kb import HashEmbedder, KBConfig, KnowledgeBase


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """One converted-model cache per test session (the packaged GGUF is converted once, ~15 s)."""
    return tmp_path_factory.mktemp("kgrow-cache")


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch, model_cache):
    """Point kgrow's data and cache directories at tmp folders so no test touches the user's real data."""
    home = tmp_path / "kgrow-home"
    monkeypatch.setenv("KGROW_HOME", str(home))
    monkeypatch.setenv("KGROW_CACHE", str(model_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture
def embedder():
    return HashEmbedder(dim=64)


@pytest.fixture
def kb_path(tmp_path):
    return tmp_path / "kb"


@pytest.fixture
def kb(kb_path, embedder):
    base = KnowledgeBase.open(kb_path, embedder=embedder, config=KBConfig(show_progress=False))
    yield base
    base.close()


@pytest.fixture(scope="session")
def nlp():
    """The packaged spaCy pipeline, loaded once per session (it is only read)."""
    from agent.language.nlp import load_nlp

    return load_nlp()


@pytest.fixture
def agent_factory(kb_path, nlp):
    """agent_factory(user, llm, config=None) -> an Agent owning a KB opened on ``kb_path``
    (hash embedder); every agent still open is closed after the test."""
    from agent.pipeline.loop import Agent, AgentConfig

    opened: list[Agent] = []

    def make(user: str, llm, config: AgentConfig | None = None) -> Agent:
        kb = KnowledgeBase.open(kb_path, embedder=HashEmbedder(64), config=KBConfig(show_progress=False))
        agent = Agent(kb, llm, user, config or AgentConfig(), nlp=nlp, owns_kb=True)
        opened.append(agent)
        return agent

    yield make
    for agent in opened:
        if not agent.kb.closed:
            agent.close()
