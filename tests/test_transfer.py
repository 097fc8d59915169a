"""Export (JSONL, GraphML, node-link, CSV) and all-or-nothing JSONL import."""
from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from kb import HashEmbedder, KBConfig, KnowledgeBase
from kb.errors import ImportFormatError, IncompatibleKBError, InvalidInputError, NotFoundError
from kb.exporter import CSV_HEADER, ExportFormat
from kb.facts import Status
from kb.importer import ImportResult

QUERIES = ["where does alice live", "green tea", "Berlin", "saxophone", "jazz at acme", "capital of Germany"]
TABLES = {
    "facts": "SELECT * FROM facts ORDER BY vid",
    "episodes": "SELECT * FROM episodes ORDER BY vid",
    "sources": "SELECT fact_id, source_id, user, time, episode_id, note FROM sources ORDER BY seq",
    "history": "SELECT time, fact_id, event, detail FROM history ORDER BY seq",
    "users": "SELECT * FROM users ORDER BY name",
    "relations": "SELECT * FROM relations ORDER BY name",
    "aliases": "SELECT * FROM aliases ORDER BY alias",
    "entities": "SELECT * FROM entities ORDER BY name",
}


def _open(path: Path, dim: int = 64) -> KnowledgeBase:
    return KnowledgeBase.open(path, embedder=HashEmbedder(dim), config=KBConfig(show_progress=False))


def _tables(kb: KnowledgeBase) -> dict[str, list[tuple]]:
    return {name: kb._log.db.execute(sql).fetchall() for name, sql in TABLES.items()}


def _searches(kb: KnowledgeBase) -> list:
    out = []
    for user in (None, "alice", "bob"):
        for q in QUERIES:
            out.append([(h.kind, h.id, round(h.score, 9)) for h in kb.search(q, k=8, user=user)])
    out.append([h.id for h in kb.search("alice lives", user="alice", as_of="2023-06-01T00:00:00Z")])
    return out


@pytest.fixture
def full(kb):
    """A KB with every kind of row: statuses, shared facts, restatements, schema, forgotten user."""
    kb.ensure_user("carol")
    kb.declare_relation("likes", single_valued=False)
    kb.declare_relation("lives_near", single_valued=True)
    kb.add_alias("Big Apple", "New York City")
    ep = kb.add_episode("I moved from Paris to Berlin last spring", user="alice", source_id="s1/t1",
                        time="2024-03-01T10:00:00Z")
    kb.add_fact("Alice", "lives_in", "Paris", user="alice", time="2023-01-01T00:00:00Z", source_id="s0")
    kb.add_fact("Alice", "lives_in", "Berlin", user="alice", time="2024-03-01T10:00:00Z", episode_id=ep.id,
                source_id="s1/t1", note="moved")
    kb.add_fact("Alice", "likes", "green tea", user="alice", confidence=0.7)
    kb.add_fact("Alice", "likes", "green tea", user="alice", confidence=0.9)  # restated: a second source
    kb.add_fact("Bob", "works_at", "Acme Corp", user="bob", text="Bob works at Acme Corp and likes jazz")
    kb.add_fact("Bob", "likes", "jazz", user="bob")
    bep = kb.add_episode("Bob said he plays the saxophone", user="bob", speaker="assistant")
    kb.add_fact("Bob", "plays", "saxophone", user="bob", episode_id=bep.id)
    kb.add_fact("Berlin", "capital_of", "Germany", shared=True, user="bob", episode_id=bep.id)
    secret = kb.add_fact("Bob", "password", "hunter2", user="bob").fact
    kb.forget(secret.id)
    kb.set_confidence(kb.facts(user="bob", relation="plays")[0].id, 0.5, "unsure")
    kb.add_fact("Dave", "likes", "chess", user="dave")
    kb.add_episode("dave likes chess a lot", user="dave")
    kb.forget(user="dave")  # forgotten facts, a forgotten episode, and no users row
    return kb


def _round_trip(src: KnowledgeBase, tmp_path: Path, vectors: bool) -> tuple[KnowledgeBase, ImportResult]:
    out = tmp_path / "kb.jsonl"
    n = src.export(out, "jsonl", vectors=vectors)
    assert n == len(out.read_text(encoding="utf-8").splitlines()) - 1
    dst = _open(tmp_path / "copy")
    return dst, dst.import_(out)


@pytest.mark.parametrize("vectors", [True, False])
def test_jsonl_round_trip_restores_identical_kb(full, tmp_path, vectors):
    dst, res = _round_trip(full, tmp_path, vectors)
    try:
        want = _tables(full)
        assert _tables(dst) == want  # same row ids, ids, statuses, times, vectors, provenance, schema
        assert res == ImportResult(len(want["facts"]), len(want["episodes"]), len(want["sources"]), 0,
                                   0 if vectors else len(want["facts"]) + len(want["episodes"]))
        assert _searches(dst) == _searches(full)
        assert dst.verify().ok, dst.verify().problems
        assert {f.status for f in dst.facts(history=True)} == {Status.ACTIVE, Status.SUPERSEDED}
        paris = next(f for f in dst.facts(user="alice", history=True) if f.object == "paris")
        assert paris.status is Status.SUPERSEDED and paris.valid_to is not None
        assert dst.history(paris.id) == full.history(paris.id)
        assert dst.fact(paris.superseded_by).sources == full.fact(paris.superseded_by).sources
        assert dst.single_valued("lives_near") and not dst.single_valued("likes")
        assert dst.resolve("big apple") == "new york city"
        assert dst.users() == ["alice", "bob", "carol"]
    finally:
        dst.close()
    again = _open(tmp_path / "copy")  # the index was saved and agrees with the log on reopen
    assert again.verify().ok and not again.open_report and _searches(again) == _searches(full)
    again.close()


def test_vectors_are_base64_float32_and_reembedded_on_other_dimension(full, tmp_path):
    out = tmp_path / "v.jsonl"
    full.export(out, vectors=True)
    recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert recs[0]["vector_encoding"] == "base64-float32-le" and recs[0]["embedder"]["dim"] == 64
    fact = next(r for r in recs if r["type"] == "fact")
    stored = full._log.db.execute("SELECT vector FROM facts WHERE id=?", (fact["id"],)).fetchone()[0]
    assert np.array_equal(np.frombuffer(base64.b64decode(fact["vector"]), "<f4"), np.frombuffer(stored, np.float32))
    small = _open(tmp_path / "small", dim=32)  # other model: the file's vectors cannot be used
    res = small.import_(out)
    assert res.reembedded == res.facts + res.episodes > 0 and small.verify().ok
    small.close()


def test_reimport_is_idempotent(full, tmp_path):
    dst, first = _round_trip(full, tmp_path, vectors=False)
    before = _tables(dst)
    second = dst.import_(tmp_path / "kb.jsonl")
    assert second == ImportResult(0, 0, 0, first.facts + first.episodes, 0)
    assert _tables(dst) == before and dst.verify().ok
    dst.close()


def test_failure_while_writing_rolls_back(full, tmp_path, monkeypatch):
    out = tmp_path / "novec.jsonl"
    full.export(out)  # no vectors: the import must embed, and the embedder fails half-way
    dst = _open(tmp_path / "dst")
    dst.add_fact("Erin", "likes", "tea", user="erin")
    before, found = _tables(dst), [h.id for h in dst.search("tea")]
    monkeypatch.setattr("kb.importer.EMBED_BATCH", 2)
    calls = iter(range(2))
    real = dst.embedder.embed_documents
    monkeypatch.setattr(dst.embedder, "embed_documents",
                        lambda texts: real(texts) if next(calls, None) is not None else 1 / 0)
    with pytest.raises(ZeroDivisionError):
        dst.import_(out)
    assert _tables(dst) == before and [h.id for h in dst.search("tea")] == found and dst.verify().ok
    dst.close()


def test_user_export_excludes_other_users_private_rows(full, tmp_path):
    out = tmp_path / "alice.jsonl"
    full.export(out, user="alice")
    recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert recs[0]["user"] == "alice"
    assert {r["user"] for r in recs if r["type"] in ("fact", "episode")} == {"alice", ""}
    assert [r["name"] for r in recs if r["type"] == "user"] == ["alice"]
    assert not any("hunter2" in line or "saxophone" in line for line in out.read_text(encoding="utf-8").splitlines())
    shared_src = [r for r in recs if r["type"] == "source" and r["episode_id"] is None]
    assert shared_src  # the shared fact's link to bob's episode was dropped, not left dangling
    dst = _open(tmp_path / "alice-kb")
    dst.import_(out)
    assert dst.verify().ok and dst.users() == ["alice"]
    assert [h.id for h in dst.search("Berlin", user="alice")] == [h.id for h in full.search("Berlin", user="alice")
                                                                  if h.kind == "episode" or h.fact.user in ("alice", "")]
    dst.close()
    full.export(tmp_path / "a.csv", "csv", user="alice")
    with (tmp_path / "a.csv").open(encoding="utf-8", newline="") as fh:
        assert {r["user"] for r in csv.DictReader(fh)} == {"alice", ""}
    with pytest.raises(NotFoundError, match="unknown user 'zed'"):
        full.export(tmp_path / "z.jsonl", user="zed")
    assert not (tmp_path / "z.jsonl").exists()


def test_graphml_loads_in_networkx(full, tmp_path):
    out = tmp_path / "g.graphml"
    n = full.export(out, "graphml")
    g = nx.read_graphml(out, force_multigraph=True)  # edge ids (= fact ids) become the keys
    want = full.graph().graph
    assert n == want.number_of_edges() == g.number_of_edges()
    assert set(g.nodes) == set(want.nodes)
    assert {k for _, _, k in g.edges(keys=True)} == {k for _, _, k in want.edges(keys=True)}
    assert g.nodes["alice"]["label"] == "Alice" and g.nodes["acme corp"]["label"] == "Acme Corp"
    edge = next(d for _, _, k, d in g.edges(keys=True, data=True) if d["relation"] == "lives_in")
    assert edge["label"] == "lives_in" and edge["user"] == "alice" and edge["valid_from"].startswith("2024-03-01")
    bob_only = tmp_path / "b.graphml"
    full.export(bob_only, "graphml", user="alice")
    assert "bob" not in nx.read_graphml(bob_only)


def test_nodelink_loads_back(full, tmp_path):
    out = tmp_path / "g.json"
    n = full.export(out, ExportFormat.NODELINK)
    g = nx.node_link_graph(json.loads(out.read_text(encoding="utf-8")), edges="edges")
    want = full.graph().graph
    assert n == g.number_of_edges() == want.number_of_edges() and g.is_multigraph() and g.is_directed()
    assert sorted(g.edges(keys=True)) == sorted(want.edges(keys=True))
    assert g.nodes["berlin"]["label"] == "Berlin"


def test_csv_has_header_and_current_facts(full, tmp_path):
    out = tmp_path / "t.csv"
    n = full.export(out, "csv")
    with out.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == CSV_HEADER
        rows = [dict(zip(CSV_HEADER, r)) for r in reader]
    current = full.facts()
    assert n == len(rows) == len(current) and [r["id"] for r in rows] == [f.id for f in current]
    assert {r["status"] for r in rows} == {"active"} and {r["valid_to"] for r in rows} == {""}
    berlin = next(r for r in rows if r["object"] == "berlin")
    assert berlin["valid_from"] == "2024-03-01T10:00:00+00:00" and float(berlin["confidence"]) == 1.0


def test_bad_format_name_names_valid_ones(full, tmp_path):
    with pytest.raises(InvalidInputError, match=r"'xml'.*jsonl, graphml, nodelink, csv"):
        full.export(tmp_path / "x", "xml")
    assert ExportFormat.parse(" GraphML ") is ExportFormat.GRAPHML
    with pytest.raises(InvalidInputError, match="jsonl"):
        full.export(tmp_path / "x", "csv", vectors=True)
    with pytest.raises(NotFoundError, match="does not exist"):
        full.export(tmp_path / "no" / "such" / "dir.jsonl")
    assert not (tmp_path / "x").exists()


def test_read_only_kb_exports(full, kb_path, tmp_path):
    full.save()
    ro = KnowledgeBase.open(kb_path, embedder=HashEmbedder(64), read_only=True, config=KBConfig(show_progress=False))
    assert ro.export(tmp_path / "ro.jsonl") == full.export(tmp_path / "rw.jsonl") > 0
    ro.close()


def test_failed_export_leaves_old_file_and_no_temp(full, tmp_path, monkeypatch):
    import kb.exporter as exporter

    out = tmp_path / "keep.jsonl"
    out.write_text("old\n", encoding="utf-8")
    calls = iter(range(5))
    real = exporter._line
    monkeypatch.setattr(exporter, "_line", lambda rec: real(rec) if next(calls, None) is not None else 1 / 0)
    with pytest.raises(ZeroDivisionError):
        full.export(out)
    assert out.read_text(encoding="utf-8") == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["kb", "keep.jsonl"]


# ----------------------------------------------------------------------------------- malformed imports


def _edit_fact(edit):
    """Apply ``edit`` to the JSON of the file's last fact record; returns (line number, new bytes)."""
    def apply(lines: list[bytes]) -> int:
        i = max(i for i, b in enumerate(lines) if json.loads(b)["type"] == "fact")
        rec = json.loads(lines[i])
        edit(rec)
        lines[i] = json.dumps(rec).encode()
        return i + 1
    return apply


def _replace_last(raw: bytes):
    def apply(lines: list[bytes]) -> int:
        lines[-1] = raw
        return len(lines)
    return apply


BAD = {
    "bad json": ("json", _replace_last(b'{"type": "history", "fact_id": ')),
    "not an object": ("json", _replace_last(b"[1, 2]")),
    "missing field": ("subject", _edit_fact(lambda r: r.pop("subject"))),
    "wrong type": ("text", _edit_fact(lambda r: r.update(text=42))),
    "bad status": ("status", _edit_fact(lambda r: r.update(status="deleted"))),
    "confidence 2.0": ("confidence", _edit_fact(lambda r: r.update(confidence=2.0))),
    "bad time": ("valid_from", _edit_fact(lambda r: r.update(valid_from="yesterday"))),
    "bad id": ("id", _edit_fact(lambda r: r.update(id="fact-1"))),
    "wrong vector dim": ("vector", _edit_fact(lambda r: r.update(
        vector=base64.b64encode(np.ones(63, "<f4").tobytes()).decode()))),
    "bad base64": ("vector", _edit_fact(lambda r: r.update(vector="not base64!"))),
    "NaN vector": ("vector", _edit_fact(lambda r: r.update(
        vector=base64.b64encode(np.full(64, np.nan, "<f4").tobytes()).decode()))),
    "unknown type": ("type", _replace_last(b'{"type": "fact2"}')),
    "second header": ("type", _replace_last(b'{"type": "header"}')),
    "non-utf8": ("encoding", _replace_last(b'{"type": "user", "name": "\xff\xfe", "created": 0}')),
    "NaN": ("json", _edit_fact(lambda r: r.update(confidence=float("nan")))),
    "dangling source": ("fact_id", _replace_last(
        b'{"type": "source", "fact_id": "f_000000000000000000000000", "time": 0}')),
    "dangling superseded_by": ("superseded_by", _edit_fact(lambda r: r.update(superseded_by="f_" + "1" * 24))),
    "duplicate id": ("id", lambda lines: (lines.append(next(b for b in lines if b'"type":"fact"' in b)), len(lines))[1]),
    "truncated": ("counts", lambda lines: (lines.pop(), 1)[1]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_line_raises_and_changes_nothing(full, tmp_path, case):
    src = tmp_path / "good.jsonl"
    full.export(src, vectors=True)
    lines = src.read_bytes().splitlines()
    field, mutate = BAD[case]
    line = mutate(lines)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    dst = _open(tmp_path / "dst")
    dst.add_fact("Erin", "likes", "tea", user="erin", text="Erin likes green tea")
    before, found = _tables(dst), [h.id for h in dst.search("green tea")]
    with pytest.raises(ImportFormatError) as err:
        dst.import_(bad)
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    assert _tables(dst) == before and [h.id for h in dst.search("green tea")] == found
    assert dst.verify().ok
    dst.close()


def test_empty_newer_and_foreign_files(kb, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(ImportFormatError) as err:
        kb.import_(empty)
    assert err.value.line == 1
    empty.write_bytes(b"\n  \n")
    with pytest.raises(ImportFormatError, match="line 1"):
        kb.import_(empty)
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"type": "header", "format": "kgrow-export", "version": 99,
                                 "embedder": {"id": "x", "dim": 64}}) + "\n", encoding="utf-8")
    with pytest.raises(IncompatibleKBError, match="version 99"):
        kb.import_(newer)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"type": "fact", "id": "f_1"}\n', encoding="utf-8")
    with pytest.raises(ImportFormatError) as err:
        kb.import_(foreign)
    assert (err.value.line, err.value.field) == (1, "type")
    with pytest.raises(NotFoundError):
        kb.import_(tmp_path / "missing.jsonl")
    assert kb.facts(history=True) == [] and kb.verify().ok
