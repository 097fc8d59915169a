"""Crash safety: a writer killed with SIGKILL mid-ingest loses nothing it acknowledged, and the KB
opens afterwards without manual repair; a dead writer's lock never blocks the next one."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kb import HashEmbedder, KBConfig, KBLockedError, KnowledgeBase, Status

ROOT = Path(__file__).resolve().parents[1]
BATCH = 50

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from kb import HashEmbedder, KBConfig, KnowledgeBase, NewFact

path, first, last, save_every = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
kb = KnowledgeBase.open(path, embedder=HashEmbedder(dim=64),
                        config=KBConfig(save_every=save_every, show_progress=False))
print("ready", flush=True)
if last == first:  # just hold the writer lock
    time.sleep(120)
for b in range(first, last):
    items = [NewFact(f"Person{b}x{i}", "likes", f"thing{b}x{i}", text=f"Person{b}x{i} likes thing{b}x{i}",
                     user=f"user{i % 3}", source_id=f"batch{b}") for i in range(%(batch)d)]
    if b %% 5 == 0:  # now and then a single-valued update and a forget, to vary the log
        items[0] = NewFact("Boss", "lives_in", f"City{b}", user="user0", source_id=f"batch{b}")
    res = kb.add_facts(items)
    if b %% 7 == 0:
        kb.forget(res[1].fact.id)
        print("forgot", res[1].fact.id, flush=True)
    print("batch", b, " ".join(r.fact.id for r in res), flush=True)
kb.close()
print("done", flush=True)
""".replace("%(batch)d", str(BATCH)).replace("%%", "%")


def start_child(tmp_path: Path, kb_path: Path, first: int, last: int, save_every: int = 120) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), str(ROOT), str(kb_path), str(first), str(last),
                             str(save_every)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def line_reader(proc: subprocess.Popen) -> "queue.Queue[str | None]":
    q: queue.Queue[str | None] = queue.Queue()

    def pump():
        for line in proc.stdout:  # type: ignore[union-attr]
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def ingest_then_kill(tmp_path, kb_path, first, last, want_batches, limit_s=60.0):
    """Run a child ingesting batches [first, last); SIGKILL it once ``want_batches`` are acknowledged."""
    proc = start_child(tmp_path, kb_path, first, last)
    lines = line_reader(proc)
    acked: dict[int, list[str]] = {}
    forgotten: set[str] = set()
    deadline = time.monotonic() + limit_s
    try:
        while len(acked) < want_batches:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("batch "):
                _, b, *ids = line.split()
                acked[int(b)] = ids
            elif line.startswith("forgot "):
                forgotten.add(line.split()[1])
            if time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        err = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL, err
    assert len(acked) >= min(want_batches, 5), f"child acknowledged only {len(acked)} batches: {err}"
    return acked, forgotten


def check_survivors(kb: KnowledgeBase, acked: dict[int, list[str]], forgotten: set[str]) -> None:
    for b, ids in acked.items():
        assert len(ids) == BATCH
        for fid in ids:
            f = kb.fact(fid)  # raises NotFoundError if an acknowledged write was lost
            if fid in forgotten:
                assert f.status is Status.FORGOTTEN
            elif f.relation == "lives_in":
                assert f.status in (Status.ACTIVE, Status.SUPERSEDED)
            else:
                assert f.status is Status.ACTIVE, f
    rep = kb.verify()
    assert rep.ok, rep.problems
    assert rep.missing == 0 and rep.unknown == 0
    # batches are all or nothing: every batch adds exactly BATCH new facts, so whole batches only
    st = kb.stats()
    total = st.facts_active + st.facts_superseded + st.facts_forgotten - len(kb.facts(entity="after crash"))
    assert total % BATCH == 0, f"{total} facts: a batch was partly committed"
    assert total >= BATCH * len(acked)
    # the newest acknowledged batch is searchable, by vector and by keyword
    last = max(acked)
    fid = next(i for i in acked[last][2:] if i not in forgotten)
    f = kb.fact(fid)
    hits = kb.search(f.text, k=5, user=f.user)
    assert hits and hits[0].id == fid
    assert hits[0].vector_score == pytest.approx(1.0, abs=1e-5) and hits[0].keyword_rank is not None


def test_sigkill_mid_ingest_loses_no_acknowledged_batch(tmp_path):
    kb_path = tmp_path / "kb"
    acked, forgotten = ingest_then_kill(tmp_path, kb_path, 0, 200, want_batches=40)
    emb = HashEmbedder(dim=64)
    # a second writer crash on top of the first: it resumes on the half-saved state, then dies too
    acked2, forgotten2 = ingest_then_kill(tmp_path, kb_path, 1000, 1200, want_batches=15)
    acked.update(acked2)
    forgotten |= forgotten2
    kb = KnowledgeBase.open(kb_path, embedder=emb, config=KBConfig(show_progress=False))
    try:
        for line in kb.open_report:  # only the automatic index repair may have been needed
            assert "index" in line and ("rebuild" in line or "adding them from the log" in line), line
        check_survivors(kb, acked, forgotten)
        # a single-valued relation still has exactly one current value
        assert len([f for f in kb.facts(entity="boss") if f.relation == "lives_in"]) == 1
        # and the KB goes on working as a writer
        kb.add_fact("After crash", "likes", "tea", user="user0")
        assert kb.verify().ok
    finally:
        kb.close()
    with KnowledgeBase.open(kb_path, embedder=emb, config=KBConfig(show_progress=False)) as kb:
        assert kb.open_report == []
        check_survivors(kb, acked, forgotten)


def test_killed_writer_does_not_block_the_next_writer(tmp_path):
    kb_path = tmp_path / "kb"
    emb = HashEmbedder(dim=64)
    with KnowledgeBase.open(kb_path, embedder=emb, config=KBConfig(show_progress=False)) as kb:
        kb.add_fact("Alice", "likes", "tea", user="alice")
    proc = start_child(tmp_path, kb_path, 0, 0)  # opens as writer and sleeps holding the lock
    lines = line_reader(proc)
    try:
        assert lines.get(timeout=60) == "ready", proc.stderr.read() if proc.poll() is not None else ""
        with pytest.raises(KBLockedError, match=str(proc.pid)):
            KnowledgeBase.open(kb_path, embedder=emb, config=KBConfig(show_progress=False))
        # readers are never blocked by the writer
        with KnowledgeBase.open(kb_path, embedder=emb, config=KBConfig(show_progress=False), read_only=True) as r:
            assert [f.object for f in r.facts()] == ["tea"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with KnowledgeBase.open(kb_path, embedder=emb, config=KBConfig(show_progress=False)) as kb:
        kb.add_fact("Alice", "likes", "cake", user="alice")
        assert sorted(f.object for f in kb.facts()) == ["cake", "tea"]
        assert kb.verify().ok
