"""KnowledgeBase.batch(): the writes of one block (a chat turn's commit) are stored together or not at
all, the vector index included; a write that fails inside is undone alone; a process killed inside
the block leaves nothing of it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kb import HashEmbedder, KBConfig, KnowledgeBase, NewFact
from kb.errors import KBError

ROOT = Path(__file__).resolve().parents[1]
QUIET = KBConfig(show_progress=False)


def _open(path: Path) -> KnowledgeBase:
    return KnowledgeBase.open(path, embedder=HashEmbedder(64), config=QUIET)


def _seen(kb: KnowledgeBase) -> tuple:
    s = kb.stats()
    return s.facts_active, s.facts_superseded, s.episodes


def test_a_batch_stores_episode_facts_and_retraction_together(tmp_path):
    with _open(tmp_path / "kb") as kb:
        old = kb.add_fact("sam", "works_at", "Acme", user="sam").fact
        with kb.batch():
            ep = kb.add_episode("I moved to Berlin and I quit Acme.", user="sam", source_id="s/turn/1")
            kb.add_facts([NewFact("sam", "lives_in", "Berlin", user="sam", source_id="s/turn/1", episode_id=ep.id)])
            kb.retract(old.id, reason="negated in s/turn/1")
            kb.add_episode("Noted.", user="sam", speaker="assistant", role="assistant", source_id="s/turn/1/reply")
        assert _seen(kb) == (1, 1, 2)
        assert kb.search("Berlin", k=3, user="sam")[0].fact.object == "berlin"  # the vectors were indexed
        assert kb.verify().ok
    with _open(tmp_path / "kb") as kb:  # and it all survived a reopen
        assert _seen(kb) == (1, 1, 2) and kb.verify().ok


def test_a_batch_that_raises_stores_nothing_not_even_vectors(tmp_path):
    with _open(tmp_path / "kb") as kb:
        kb.add_fact("sam", "likes", "jazz", user="sam")
        before = _seen(kb)
        with pytest.raises(RuntimeError):
            with kb.batch():
                kb.add_episode("I live in Oslo.", user="sam", source_id="s/turn/2")
                kb.add_facts([NewFact("sam", "lives_in", "Oslo", user="sam")])
                raise RuntimeError("the turn failed after its writes")
        assert _seen(kb) == before
        assert all(h.fact is None or h.fact.object != "oslo" for h in kb.search("Oslo", k=5, user="sam"))
        rep = kb.verify()
        assert rep.ok and rep.unknown == 0 and rep.missing == 0


def test_a_failed_write_inside_a_batch_is_undone_alone(tmp_path):
    with _open(tmp_path / "kb") as kb:
        with kb.batch():
            kb.add_fact("sam", "lives_in", "Rome", user="sam")
            with pytest.raises(KBError):
                kb.retract("f_does_not_exist")
            kb.add_fact("sam", "likes", "tea", user="sam")
        assert {f.object for f in kb.facts(user="sam")} == {"rome", "tea"}
        assert kb.verify().ok


CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from kb import HashEmbedder, KBConfig, KnowledgeBase, NewFact
kb = KnowledgeBase.open(sys.argv[2], embedder=HashEmbedder(64), config=KBConfig(show_progress=False, save_every=1))
kb.add_fact("sam", "likes", "jazz", user="sam")
with kb.batch():
    kb.add_episode("I live in Oslo.", user="sam", source_id="s/turn/1")
    kb.add_facts([NewFact("sam", "lives_in", "Oslo", user="sam") for _ in range(1)])
    print("inside", flush=True)
    os._exit(9)  # killed mid-turn: no commit, no index save
"""


def test_a_process_killed_inside_a_batch_leaves_nothing_of_it(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(ROOT), str(tmp_path / "kb")], capture_output=True,
                          text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert proc.returncode == 9 and "inside" in proc.stdout, proc.stderr
    with _open(tmp_path / "kb") as kb:
        assert [f.object for f in kb.facts(user="sam")] == ["jazz"]
        assert kb.stats().episodes == 0
        assert kb.verify().ok
