"""Numbered upgrades: a KB directory written by the previous kgrow (tests/fixtures/kb_v1, made at commit
ceebc12 by tests/fixtures/make_kb_v1.py) opens with today's code, upgraded in one transaction, with a message."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from kb import HashEmbedder, IncompatibleKBError, KBConfig, KnowledgeBase, Status
from kb import manifest as manifest_mod
from kb.log import SCHEMA_VERSION, migrations

FIXTURE = Path(__file__).parent / "fixtures" / "kb_v1"
# every table the old schema had, with the columns it had: all rows must survive the upgrade as they were
OLD_TABLES = {
    "facts": "SELECT vid, id, key, user, subject, relation, object, text, confidence, status, stated_at, valid_from, "
             "valid_to, superseded_by, vector FROM facts ORDER BY vid",
    "episodes": "SELECT vid, id, user, speaker, text, source_id, time, status, vector FROM episodes ORDER BY vid",
    "sources": "SELECT * FROM sources ORDER BY seq",
    "history": "SELECT * FROM history ORDER BY seq",
    "users": "SELECT * FROM users ORDER BY name",
    "relations": "SELECT * FROM relations ORDER BY name",
    "aliases": "SELECT * FROM aliases ORDER BY alias",
    "entities": "SELECT * FROM entities ORDER BY name",
}


def _rows(db_path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _tables(kb_dir: Path) -> dict[str, list[tuple]]:
    return {t: _rows(kb_dir / "kb.sqlite", sql) for t, sql in OLD_TABLES.items()}


@pytest.fixture
def old_kb(tmp_path) -> Path:
    """A copy of the committed fixture (the fixture itself is never written)."""
    dst = tmp_path / "kb_v1"
    shutil.copytree(FIXTURE, dst)
    return dst


def _open(path: Path, **kw) -> KnowledgeBase:
    return KnowledgeBase.open(path, embedder=HashEmbedder(16), config=KBConfig(show_progress=False), **kw)


def test_the_fixture_is_the_old_format(old_kb):
    assert _rows(old_kb / "kb.sqlite", "SELECT value FROM meta WHERE key='schema_version'") == [("1",)]
    assert json.loads((old_kb / "manifest.json").read_text())["format_version"] == 1
    assert "session" not in {r[1] for r in _rows(old_kb / "kb.sqlite", "PRAGMA table_info(episodes)")}


def test_opening_an_old_kb_upgrades_it_and_keeps_every_row(old_kb, capsys):
    before = _tables(old_kb)
    assert len(before["facts"]) == 11 and len(before["episodes"]) == 4 and len(before["history"]) >= 16
    with _open(old_kb) as kb:
        err = capsys.readouterr().err
        assert f"upgraded the knowledge base schema of {old_kb} from version 1 to {SCHEMA_VERSION}" in err
        assert f"manifest of {old_kb} from format 1 to {manifest_mod.FORMAT_VERSION}" in err
        assert kb.open_report == []  # the index still matches the log: nothing to rebuild
        # what the old KB knew, through today's API
        assert {f.object for f in kb.facts(user="alice")} >= {"berlin", "jazz", "oolong", "france"}
        past = [f for f in kb.facts(user="alice", history=True) if f.status is Status.SUPERSEDED]
        assert {f.object for f in past} == {"paris", "green tea"}
        jazz = kb.facts(user="alice", relation="likes")[0]
        assert [s.source_id for s in jazz.sources] == ["s1/t0", "s2/t1"]
        forgotten = [f for f in kb.facts() if f.object == "chess"]
        assert forgotten == [] and kb.stats().facts_forgotten == 1
        assert kb.resolve("Big Apple") == "new york city" and kb.single_valued("favorite_tea")
        assert kb.facts(user="bob", relation="works_at")[0].confidence == pytest.approx(0.6)
        # episodes gained session, position and role; the assistant's turn is marked as such
        roles = {e.text: e.role for e in kb.episodes(user="alice")}
        assert roles["Noted: you live in Paris."] == "assistant" and roles["I moved to Berlin."] == "user"
        assert all(e.session is None and e.position is None for e in kb.episodes())
        hits = kb.search("Alice lives in Berlin", user="alice", k=3, kinds=["fact"])
        assert "berlin" in {h.fact.object for h in hits} and "paris" not in {h.fact.object for h in hits}
        assert kb.verify().ok
        # and it goes on working: a new episode with a session, a new fact
        kb.add_episode("I started learning the cello.", user="alice", session="s3", position=0)
        kb.add_fact("Alice", "plays", "cello", user="alice")
    after = _tables(old_kb)
    for table, rows in before.items():  # every old row is still there, unchanged (new ones were added)
        assert set(rows) <= set(after[table]), table
    assert after["facts"][: len(before["facts"])] == before["facts"]
    assert _rows(old_kb / "kb.sqlite", "SELECT value FROM meta WHERE key='schema_version'") == [(str(SCHEMA_VERSION),)]
    man = json.loads((old_kb / "manifest.json").read_text())
    assert man["format_version"] == manifest_mod.FORMAT_VERSION and man["written_by"].startswith("kgrow")
    with _open(old_kb) as kb:  # upgraded once: the next open says nothing
        assert capsys.readouterr().err == "" and len(kb.facts(user="alice", relation="plays")) == 1


def test_a_failing_upgrade_step_leaves_the_kb_as_it_was(old_kb, monkeypatch):
    files = {p.name: p.read_bytes() for p in old_kb.iterdir()}
    real = migrations.STEPS[0]

    def broken(db):
        real(db)  # the real step runs, then the upgrade fails half way
        raise RuntimeError("disk on fire (simulated)")

    monkeypatch.setattr(migrations, "STEPS", (broken, *migrations.STEPS[1:]))
    with pytest.raises(RuntimeError, match="disk on fire"):
        _open(old_kb)
    monkeypatch.undo()
    assert _rows(old_kb / "kb.sqlite", "SELECT value FROM meta WHERE key='schema_version'") == [("1",)]
    assert "session" not in {r[1] for r in _rows(old_kb / "kb.sqlite", "PRAGMA table_info(episodes)")}
    assert (old_kb / "manifest.json").read_bytes() == files["manifest.json"]
    with _open(old_kb) as kb:  # the lock was released, and a working upgrade goes through
        assert len(kb.facts(history=True)) == 10


def test_an_old_kb_opened_read_only_says_how_to_upgrade_and_writes_nothing(old_kb):
    files = {p.name: p.read_bytes() for p in old_kb.iterdir()}
    with pytest.raises(IncompatibleKBError, match="schema version is 1, older .* open it once for writing"):
        _open(old_kb, read_only=True)
    assert {name: (old_kb / name).read_bytes() for name in files} == files  # (SQLite may add its -shm file)


def test_manifest_steps_are_numbered_and_a_newer_format_names_its_writer(tmp_path):
    assert len(manifest_mod.STEPS) == manifest_mod.FORMAT_VERSION - 1
    v1 = json.loads((FIXTURE / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(v1))
    loaded = manifest_mod.load(tmp_path)
    assert loaded.upgraded_from == 1 and loaded.manifest.format_version == manifest_mod.FORMAT_VERSION
    assert loaded.manifest.embedder_id == "hash-embedder-16" and loaded.manifest.created == v1["created"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == v1  # load alone writes nothing
    newer = {**v1, "format_version": manifest_mod.FORMAT_VERSION + 1, "written_by": "kgrow 9.0"}
    (tmp_path / "manifest.json").write_text(json.dumps(newer))
    with pytest.raises(IncompatibleKBError, match=r"format version \d+ \(written by kgrow 9.0\), newer than"):
        manifest_mod.load(tmp_path)


def test_an_upgraded_kb_finds_other_word_forms_of_what_was_said(old_kb):
    """Schema 3 rebuilds keyword search with a stemmer over what the old KB held: a word form that
    was never said ("likes" was; "liking" is asked) still finds the fact by keyword alone."""
    with _open(old_kb) as kb:
        hits = kb.search("liking", k=5, user="alice", kinds=("fact",))
        assert any(h.fact is not None and h.fact.object == "jazz" and h.keyword_rank for h in hits)
