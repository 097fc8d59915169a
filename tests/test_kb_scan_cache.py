"""The log keeps a recent vector scan until the database changes: a repeated facts-only search reads
no vectors again, and a commit here or by another process is seen at once."""
from __future__ import annotations

from pathlib import Path

import pytest

from kb import HashEmbedder, KBConfig, KnowledgeBase, NewEpisode, NewFact
from kb.facts import Kind
from kb.log import Scope

T0 = 1_700_000_000.0


def _open(path: Path, **kw) -> KnowledgeBase:
    return KnowledgeBase.open(path, embedder=HashEmbedder(16), config=KBConfig(show_progress=False), **kw)


def _scan(kb: KnowledgeBase, user: str = "u") -> set[int]:
    return {int(v) for ids, _ in kb._log.scan_vectors(Kind.FACT, Scope(user, None)) for v in ids}


def test_a_repeated_scan_is_served_from_memory_until_a_commit(tmp_path, monkeypatch):
    with _open(tmp_path / "kb") as kb:
        kb.add_facts([NewFact(f"P{i}", "likes", f"h{i}", user="u") for i in range(5)])
        first = _scan(kb)
        assert len(first) == 5
        executed: list[str] = []
        real = kb._log.db

        class Spy:
            in_transaction = False

            def execute(self, sql, *a):
                executed.append(sql)
                return real.execute(sql, *a)

        monkeypatch.setattr(kb._log, "db", Spy())
        assert _scan(kb) == first
        assert not any("vector" in sql for sql in executed)  # only PRAGMA data_version was asked
        monkeypatch.undo()
        kb.add_fact("P9", "likes", "h9", user="u")
        again = _scan(kb)
        assert len(again) == 6 and first < again
        kb.forget(entity="p0")
        assert len(_scan(kb)) == 5


def test_a_reader_sees_what_another_connection_committed(tmp_path):
    path = tmp_path / "kb"
    with _open(path) as writer:
        writer.add_facts([NewFact(f"P{i}", "likes", f"h{i}", user="u") for i in range(3)])
        writer.add_episodes([NewEpisode("filler", "u", time=T0)])
        with _open(path, read_only=True) as reader:
            assert len(_scan(reader)) == 3
            writer.add_fact("P7", "likes", "h7", user="u")
            assert len(_scan(reader)) == 4
            hits = reader.search("P7 likes h7", k=3, user="u", kinds=["fact"])
            assert hits and hits[0].fact.subject == "p7"


def test_a_scan_inside_a_write_transaction_sees_its_uncommitted_writes(tmp_path):
    with _open(tmp_path / "kb") as kb:
        kb.add_facts([NewFact(f"P{i}", "likes", f"h{i}", user="u") for i in range(2)])
        assert len(_scan(kb)) == 2
        log = kb._log
        with pytest.raises(RuntimeError, match="undo"):
            with log.transaction():
                log.db.execute("UPDATE facts SET status='forgotten' WHERE vid=1")  # not committed
                assert len(_scan(kb)) == 1
                assert len(_scan(kb)) == 1
                raise RuntimeError("undo")
        assert len(_scan(kb)) == 2
