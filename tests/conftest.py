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
