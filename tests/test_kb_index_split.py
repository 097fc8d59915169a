"""Format 3: one vector index per kind. An older directory's single ``index.faiss`` is split on open,
round-trips through close and reopen with the same search results, and searches never mix kinds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kb import HashEmbedder, KBConfig, KnowledgeBase, NewEpisode, NewFact
from kb import manifest as manifest_mod
from kb.index import IndexConfig, IndexKind, VectorIndex
from kb.maintenance import INDEX_FILES, LEGACY_INDEX_FILE

FIXTURE = Path(__file__).parent / "fixtures" / "kb_v1"
T0 = 1_700_000_000.0
QUERIES = ["Person4 lives in City4", "where does person1 live", "City3", "moved recently", "sport12"]


def _open(path: Path, **kw) -> KnowledgeBase:
    cfg = KBConfig(index=IndexConfig(kind=IndexKind.FLAT), show_progress=False)
    return KnowledgeBase.open(path, embedder=HashEmbedder(32), config=cfg, **kw)


def _fill(kb: KnowledgeBase) -> None:
    kb.add_facts([NewFact(f"Person{i}", "lives_in", f"City{i % 7}", text=f"Person{i} lives in City{i % 7}",
                          user=f"user{i % 3}", time=T0 + i) for i in range(60)])
    kb.add_episodes([NewEpisode(f"Person{i} told me about sport{i}; I think Person4 moved recently", f"user{i % 3}",
                                time=T0 + i) for i in range(40)])
    kb.forget(kb.facts(entity="person5")[0].id)


def _fingerprint(kb: KnowledgeBase) -> list:
    out = []
    for q in QUERIES:
        for user in (None, "user1"):
            for kinds in (("fact",), ("episode",), ("fact", "episode")):
                hits = kb.search(q, k=8, user=user, kinds=kinds)
                out.append([(h.id, round(h.score, 9), h.vector_score and round(h.vector_score, 5)) for h in hits])
    return out


def _as_format_2(path: Path) -> None:
    """Rewrite a closed format-3 directory as format 2 wrote it: one index.faiss holding both kinds."""
    cfg = IndexConfig(kind=IndexKind.FLAT)
    legacy = VectorIndex(32, cfg)
    for name in INDEX_FILES.values():
        ids, vecs = VectorIndex.load(path / name, 32, cfg).dump()
        legacy.add(ids, vecs)
        (path / name).unlink()
    legacy.save(path / LEGACY_INDEX_FILE)
    man = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**man, "format_version": 2}))


@pytest.fixture
def format2_kb(tmp_path) -> tuple[Path, list]:
    path = tmp_path / "kb"
    with _open(path) as kb:
        _fill(kb)
        before = _fingerprint(kb)
    _as_format_2(path)
    return path, before


def test_a_format_2_kb_is_split_on_open_and_round_trips(format2_kb, capsys):
    path, before = format2_kb
    with _open(path) as kb:
        err = capsys.readouterr().err
        assert "splitting the vector index" in err and "format 2 to 3" in err
        assert kb.open_report == []  # an upgrade, not a repair
        assert not (path / LEGACY_INDEX_FILE).exists()
        assert all((path / name).exists() for name in INDEX_FILES.values())
        assert _fingerprint(kb) == before
        assert kb.verify().ok
        kb.add_episode("a new turn after the upgrade about sport12", user="user1", time=T0 + 500)
        after = _fingerprint(kb)
    assert json.loads((path / "manifest.json").read_text())["format_version"] == manifest_mod.FORMAT_VERSION
    with _open(path) as kb:  # upgraded once: the next open is quiet and finds the same
        assert capsys.readouterr().err == "" and kb.open_report == []
        assert _fingerprint(kb) == after
        rep = kb.verify()
        assert rep.ok and rep.indexed == 60 + 41 - 1  # the forgotten fact left the exact index


def test_a_split_interrupted_before_removing_the_old_file_finishes_quietly(format2_kb, capsys):
    path, before = format2_kb
    legacy = path.parent / "legacy"
    shutil.copytree(path, legacy)  # the format-2 directory, kept to take its index.faiss
    with _open(path):
        pass
    shutil.copy(legacy / LEGACY_INDEX_FILE, path / LEGACY_INDEX_FILE)  # the crash came after the per-kind files were saved
    capsys.readouterr()
    with _open(path) as kb:
        assert "splitting" not in capsys.readouterr().err and kb.open_report == []
        assert not (path / LEGACY_INDEX_FILE).exists()
        assert _fingerprint(kb) == before


def test_read_only_opening_of_a_format_2_kb_searches_and_writes_nothing(format2_kb):
    path, before = format2_kb
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file() and "sqlite" not in p.name}
    with _open(path, read_only=True) as kb:
        assert _fingerprint(kb) == before
    assert {p.name for p in path.iterdir() if p.is_file() and "sqlite" not in p.name} == set(files)
    assert all((path / n).read_bytes() == b for n, b in files.items())


def test_the_v1_fixture_splits_its_index(tmp_path, capsys):
    old = tmp_path / "kb_v1"
    shutil.copytree(FIXTURE, old)
    assert (old / LEGACY_INDEX_FILE).exists()
    with KnowledgeBase.open(old, embedder=HashEmbedder(16), config=KBConfig(show_progress=False)) as kb:
        assert "splitting the vector index" in capsys.readouterr().err
        assert kb.verify().ok and kb.open_report == []
        hits = kb.search("Alice lives in Berlin", user="alice", k=3, kinds=["fact"])
        assert "berlin" in {h.fact.object for h in hits}
    assert not (old / LEGACY_INDEX_FILE).exists() and (old / INDEX_FILES[next(iter(INDEX_FILES))]).exists()


def test_a_facts_search_among_many_episodes_finds_every_fact(tmp_path):
    """The facts' own index: a fact search never wades through episodes (nor falls back to a scan)."""
    with _open(tmp_path / "kb") as kb:
        kb.add_episodes([NewEpisode(f"filler turn number {i} about Person1 and City1", "u", time=T0 + i)
                         for i in range(600)])
        kb.add_facts([NewFact(f"Person{i}", "lives_in", f"City{i}", user="u") for i in range(3)])
        assert {len(i) for i in kb._keeper.indexes.values()} == {3, 600}
        hits = kb.search("Person1 lives in City1", k=3, user="u", kinds=["fact"])
        assert len(hits) == 3 and all(h.fact is not None and h.vector_score is not None for h in hits)
        assert kb.stats().index_vectors == 603
