"""Schema 4: covering indexes of the scope filter's columns. Old KBs gain them on upgrade, searches
read them instead of the wide rows, and what a scope may see is unchanged (status and time updates
reach the index with the row)."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from kb import HashEmbedder, KBConfig, KnowledgeBase, NewEpisode, NewFact
from kb.facts import Kind
from kb.log import Scope

FIXTURE = Path(__file__).parent / "fixtures" / "kb_v1"
T0 = 1_700_000_000.0
SCOPE_INDEXES = {"episodes_scope", "facts_scope"}


def _open(path: Path) -> KnowledgeBase:
    return KnowledgeBase.open(path, embedder=HashEmbedder(16), config=KBConfig(show_progress=False))


def _indexes(db_path: Path) -> set[str]:
    db = sqlite3.connect(db_path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        db.close()


def test_an_old_kb_gains_the_scope_indexes_and_a_new_one_has_them(tmp_path):
    old = tmp_path / "kb_v1"
    shutil.copytree(FIXTURE, old)
    assert not SCOPE_INDEXES & _indexes(old / "kb.sqlite")
    with _open(old) as kb:
        assert kb.search("Alice lives in Berlin", user="alice", k=3, kinds=["fact"])
    assert SCOPE_INDEXES <= _indexes(old / "kb.sqlite")
    with _open(tmp_path / "new"):
        pass
    assert SCOPE_INDEXES <= _indexes(tmp_path / "new" / "kb.sqlite")


def test_visibility_checks_read_the_covering_index(tmp_path):
    with _open(tmp_path / "kb") as kb:
        kb.add_episode("hello there", user="u", time=T0)
        db = kb._log.db
        plan = " ".join(str(r) for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT vid FROM episodes INDEXED BY episodes_scope WHERE vid IN (1, 2) "
            "AND +status='active' AND +user='u'"))
        assert "COVERING INDEX episodes_scope" in plan


def test_what_a_scope_sees_follows_status_and_time(tmp_path):
    with _open(tmp_path / "kb") as kb:
        eps = kb.add_episodes([NewEpisode(f"turn {i} about the red kite", "ann" if i % 2 else "bob", time=T0 + i)
                               for i in range(10)])
        res = kb.add_facts([NewFact("Ann", "likes", "kites", user="ann", time=T0),
                            NewFact("Earth", "orbits", "Sun", shared=True, user="ann", time=T0)])
        log = kb._log
        vid = {e.text: v for v, e in log.records(list(range(1, 40, 2))).items()}
        all_vids = list(vid.values()) + [0, 2, 4]
        ann = Scope("ann", None)
        seen = log.visible(all_vids, ann, [Kind.EPISODE, Kind.FACT])
        assert {v for v in seen if v & 1} == {vid[e.text] for e in eps if e.user == "ann"}
        assert {v for v in seen if not v & 1} == {2, 4}  # ann's fact and the shared one (rows 1, 2)
        early = log.visible(all_vids, Scope("ann", T0 + 4), [Kind.EPISODE])
        assert early == {vid[e.text] for e in eps if e.user == "ann" and e.time <= T0 + 4}
        kb.forget(res[0].fact.id)
        kb.forget(user="bob")
        assert log.visible(all_vids, Scope(None, None), [Kind.EPISODE, Kind.FACT]) == seen - {2}
        hits = kb.search("red kite", k=20, user="ann")
        assert {h.episode.user for h in hits if h.episode} == {"ann"}
