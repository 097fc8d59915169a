"""Shared fixtures: a tmp data directory for every test, the hash-seeded fake embedder, a fresh KB."""
from __future__ import annotations

import pytest

from kb import HashEmbedder, KBConfig, KnowledgeBase


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    """Point kgrow's data directory at a tmp folder so no test touches the user's real data."""
    home = tmp_path / "kgrow-home"
    monkeypatch.setenv("KGROW_HOME", str(home))
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
