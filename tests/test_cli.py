"""The `kgrow kb` command line, run in-process (plus one real subprocess for the entry point)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.cli.output import Output, jsonable
from kb import HashEmbedder, KBConfig, KnowledgeBase
from kb.maintenance import VerifyReport

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def kbdir(tmp_path):
    return tmp_path / "kb"


@pytest.fixture
def cli(kbdir, capsys):
    """cli(*args, kb=...) -> (exit code, stdout, stderr) of `kgrow kb --kb DIR --embedder hash:64 ARGS`."""

    def run(*args: str, kb: Path | None = None, embedder: str | None = "hash:64"):
        argv = ["kb", "--kb", str(kb or kbdir)] + (["--embedder", embedder] if embedder else []) + list(args)
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def filled(cli):
    """A KB with a superseded fact, a merged restatement and a shared fact; returns the fact ids."""
    ids = {}
    for name, args in [
        ("paris", ("add", "Alice", "lives in", "Paris", "--user", "alice", "--source", "t1",
                   "--time", "2024-01-01T00:00:00Z")),
        ("berlin", ("add", "Alice", "lives in", "Berlin", "--user", "alice", "--source", "t2",
                    "--time", "2024-06-01T00:00:00Z")),
        ("berlin2", ("add", "alice", "lives_in", "berlin", "--user", "alice", "--source", "t3")),
        ("tea", ("add", "Alice", "likes", "green tea", "--user", "alice", "--confidence", "0.8")),
        ("bob", ("add", "Bob", "likes", "chess", "--user", "bob")),
        ("capital", ("add", "Berlin", "capital of", "Germany", "--shared")),
    ]:
        code, out, err = cli(*args, "--json")
        assert code == 0, err
        rec = json.loads(out)
        ids[name] = rec["fact"]["id"]
        ids[name + ":rec"] = rec
    return ids


def lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


# ---------------------------------------------------------------------------- happy paths


def test_add_reports_created_merged_and_superseded(cli, kbdir):
    code, out, _ = cli("add", "Alice", "lives in", "Paris", "--user", "alice")
    assert code == 0 and out.startswith("created f_") and "alice lives in paris" in out.lower()
    paris = out.split()[1].rstrip(":")
    code, out, _ = cli("add", "Alice", "lives in", "Berlin", "--user", "alice")
    assert code == 0 and f"superseded {paris}" in out
    code, out, _ = cli("add", "alice", "lives_in", "berlin", "--user", "alice", "--source", "again")
    assert code == 0 and out.startswith("merged into existing fact") and "2 source(s)" in out
    assert (kbdir / "manifest.json").exists()


def test_add_json_record(filled):
    assert filled["paris:rec"]["action"] == "created"
    assert filled["berlin:rec"]["superseded"] == [filled["paris"]]
    assert filled["berlin2:rec"]["action"] == "merged" and filled["berlin2"] == filled["berlin"]
    fact = filled["tea:rec"]["fact"]
    assert fact["status"] == "active" and fact["confidence"] == 0.8
    assert fact["valid_to"] is None and fact["stated_at"].endswith("+00:00")  # times are ISO strings


def test_facts_table_history_and_filters(cli, filled):
    code, out, _ = cli("facts")
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["id", "user", "subject", "relation"]
    assert filled["berlin"] in out and filled["paris"] not in out and "(shared)" in out
    _, out, _ = cli("facts", "--history")
    assert filled["paris"] in out and "superseded" in out and "2024-01-01T00:00:00Z .. 2024-06-01T00:00:00Z" in out
    _, out, _ = cli("facts", "--as-of", "2024-03-01", "--json", "--user", "alice")
    got = lines(out)
    assert [r["id"] for r in got] == [filled["paris"]]
    _, out, _ = cli("facts", "--user", "bob", "--json")
    assert {r["id"] for r in lines(out)} == {filled["bob"], filled["capital"]}
    _, out, _ = cli("facts", "--entity", "berlin", "--relation", "capital of", "--json")
    assert [r["id"] for r in lines(out)] == [filled["capital"]]
    _, out, _ = cli("facts", "--limit", "2", "--json")
    assert len(lines(out)) == 2
    code, out, err = cli("facts", "--entity", "nobody-at-all")
    assert code == 0 and out == "" and "no facts match" in err


def test_facts_json_lines(cli, filled):
    code, out, _ = cli("facts", "--history", "--json")
    recs = lines(out)
    assert code == 0 and len(recs) == 5
    berlin = next(r for r in recs if r["id"] == filled["berlin"])
    assert berlin["status"] == "active" and [s["source_id"] for s in berlin["sources"]] == ["t2", "t3"]
    assert berlin["valid_from"] == "2024-06-01T00:00:00+00:00"


def test_search_table_and_json(cli, filled):
    code, out, _ = cli("search", "where does alice live", "-k", "3")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["rank", "score", "kind"]
    assert filled["berlin"] in out
    code, out, _ = cli("search", "where does alice live", "-k", "3", "--user", "alice", "--json")
    hits = lines(out)
    assert code == 0 and 1 <= len(hits) <= 3 and [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    top = next(h for h in hits if h["id"] == filled["berlin"])
    assert top["kind"] == "fact" and "alice" in top["via_entities"]
    assert [s["source_id"] for s in top["provenance"]] == ["t2", "t3"]
    assert top["provenance"][0]["time"] == "2024-06-01T00:00:00+00:00"
    assert filled["bob"] not in {h["id"] for h in hits}  # scoped to alice (+ shared)
    _, out, _ = cli("search", "alice", "--kind", "episode", "--json")
    assert out == ""


def test_show_entity_profile_and_neighbourhood(cli, filled):
    code, out, _ = cli("show", "ALICE", "--user", "alice")
    assert code == 0
    assert "current facts:" in out and "past facts:" in out
    past = out.split("past facts:")[1]
    assert filled["paris"] in past and filled["berlin"] in past  # superseded_by column
    code, out, _ = cli("show", "alice", "--hops", "2", "--json")
    (rec,) = lines(out)
    assert rec["entity"] == "alice" and set(rec["neighbours"]) == {"berlin", "green tea"}
    assert [f["id"] for f in rec["past"]] == [filled["paris"]] and rec["past"][0]["superseded_by"] == filled["berlin"]
    hood = rec["neighbourhood"]
    assert hood["hops"] == 2 and "germany" in hood["entities"]  # alice -> berlin -> germany
    assert filled["capital"] in {f["fact_id"] for f in hood["facts"]}
    _, out, _ = cli("show", "alice", "--hops", "1")
    assert "neighbourhood within 1 hop(s)" in out and "germany" not in out.split("neighbourhood")[1]


def test_history(cli, filled):
    code, out, _ = cli("history", filled["berlin"], "--json")
    recs = lines(out)
    assert code == 0
    assert [r["id"] for r in recs if r["type"] == "version"] == [filled["paris"], filled["berlin"]]
    events = [(r["event"], r["fact_id"]) for r in recs if r["type"] == "event"]
    assert ("superseded", filled["paris"]) in events and ("restated", filled["berlin"]) in events
    code, out, _ = cli("history", filled["paris"])
    assert code == 0 and "versions:" in out and "events:" in out


def test_stats_and_json_option_positions(cli, filled, kbdir, capsys):
    code, out, _ = cli("stats")
    assert code == 0 and "facts_active" in out and "hash-embedder-64" in out
    for argv in (["kb", "--kb", str(kbdir), "--json", "stats"], ["kb", "--kb", str(kbdir), "stats", "--json"],
                 ["kb", "stats", "--kb", str(kbdir), "--json"]):
        assert main(argv) == 0
        (rec,) = lines(capsys.readouterr().out)
        assert rec["facts_active"] == 4 and rec["facts_superseded"] == 1 and rec["embedder_dim"] == 64


def test_default_kb_dir_is_kgrow_home(_data_dir, capsys):
    assert main(["kb", "--embedder", "hash:64", "add", "x", "is", "y", "--user", "u"]) == 0
    assert (_data_dir / "kb" / "manifest.json").exists()
    capsys.readouterr()
    assert main(["kb", "stats", "--json"]) == 0  # no --embedder: the hash embedder comes from the manifest
    assert lines(capsys.readouterr().out)[-1]["path"] == str(_data_dir / "kb")


def test_forget_one_fact_entity_and_user(cli, filled, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal
    code, out, err = cli("forget", filled["tea"])  # one fact: no confirmation needed off a TTY
    assert code == 0 and out.split() == [filled["tea"]] and "forgot 1 fact" in err
    _, out, _ = cli("facts", "--json")
    assert filled["tea"] not in {r["id"] for r in lines(out)}
    code, _, err = cli("forget", "--entity", "alice")
    assert code == 2 and "--yes" in err and len(err.strip().splitlines()) == 1
    code, out, _ = cli("forget", "--entity", "alice", "--user", "alice", "--yes", "--json")
    assert code == 0 and {r["forgotten"] for r in lines(out)} == {filled["paris"], filled["berlin"]}
    code, out, _ = cli("forget", "--user", "bob", "--yes")
    assert code == 0 and out.split() == [filled["bob"]]
    _, out, _ = cli("facts", "--history", "--json")
    assert [r["id"] for r in lines(out)] == [filled["capital"]]
    assert cli("forget")[0] == 2
    assert cli("forget", filled["capital"], "--user", "alice")[0] == 2


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_forget_asks_on_a_terminal(cli, filled, monkeypatch):
    monkeypatch.setattr(sys, "stdin", _TTY("n\n"))
    code, out, err = cli("forget", "--entity", "bob")
    assert code == 1 and out == "" and "forget 1 fact(s) about 'bob'" in err and "nothing forgotten" in err
    monkeypatch.setattr(sys, "stdin", _TTY("y\n"))
    code, out, _ = cli("forget", "--entity", "bob")
    assert code == 0 and out.split() == [filled["bob"]]


def test_verify_ok_problems_and_repair(cli, filled, monkeypatch):
    code, out, _ = cli("verify")
    assert code == 0 and out.rstrip().endswith("ok")
    code, out, _ = cli("verify", "--json")
    (rec,) = lines(out)
    assert code == 0 and rec["ok"] is True and rec["facts"] == 5 and rec["repaired"] is False

    real = KnowledgeBase.verify
    calls = []

    def flaky(self):  # reports a problem until the index has been rebuilt once
        calls.append(1)
        good = real(self)
        if len(calls) == 1:
            return VerifyReport(False, good.facts, good.episodes, good.indexed, 1, 0, 0, ("1 log rows are missing",))
        return good

    monkeypatch.setattr(KnowledgeBase, "verify", flaky)
    code, out, _ = cli("verify")
    assert code == 6 and "problem: 1 log rows are missing" in out and "--repair" in out
    calls.clear()
    code, out, _ = cli("verify", "--repair", "--json")
    (rec,) = lines(out)
    assert code == 0 and rec["ok"] is True and rec["repaired"] is True and len(calls) == 2


def test_rebuild_and_reembed(cli, filled, kbdir):
    code, out, _ = cli("rebuild")
    assert code == 0 and "rebuilt the vector index from the log: 5 vectors" in out
    code, _, err = cli("rebuild", embedder="hash:32")  # a different embedder without --reembed
    assert code == 5 and "--reembed" in err
    code, out, _ = cli("rebuild", "--reembed", "--json", embedder="hash:32")
    (rec,) = lines(out)
    assert code == 0 and rec["embedder"] == "hash-embedder-32" and rec["previous_embedder"] == "hash-embedder-64"
    code, out, _ = cli("search", "alice", "--json", embedder=None)  # the manifest now names hash:32
    assert code == 0 and lines(out)
    assert cli("verify", embedder=None)[0] == 0
    assert cli("search", "alice")[0] == 5  # hash:64 no longer matches


# ---------------------------------------------------------------------------- error paths


def test_unknown_fact_id_exits_3_with_one_line(cli, filled):
    for args in (("history", "f_nope"), ("forget", "f_nope", "--yes")):
        code, out, err = cli(*args)
        assert code == 3 and out == ""
        assert err.count("\n") == 1 and err.startswith("kgrow: error: ") and "'f_nope'" in err


def test_read_command_on_missing_kb_exits_3_and_creates_nothing(cli, tmp_path):
    missing = tmp_path / "nope"
    for args in (("stats",), ("facts",), ("search", "x"), ("show", "x"), ("verify",), ("verify", "--repair"),
                 ("rebuild",), ("forget", "--user", "u", "--yes")):
        code, out, err = cli(*args, kb=missing)
        assert code == 3, args
        assert "no knowledge base at" in err and err.count("\n") == 1
    assert not missing.exists()


def test_bad_kind_exits_2_naming_valid_kinds(cli, filled):
    code, _, err = cli("search", "x", "--kind", "facts")
    assert code == 2 and "unknown kind 'facts'" in err and "fact, episode" in err
    assert cli("search", "x", "--kind", "fact,episode")[0] == 0


@pytest.mark.parametrize("value", ["2", "-0.1", "high", "nan"])
def test_bad_confidence_exits_2_and_creates_nothing(cli, kbdir, value):
    code, _, err = cli("add", "a", "b", "c", "--user", "u", "--confidence", value)
    assert code == 2 and "confidence" in err
    assert not kbdir.exists()


def test_other_usage_errors_exit_2(cli, filled, capsys):
    assert cli("add", "a", "b", "c")[0] == 2  # neither --user nor --shared
    assert cli("add", "a", "b", "c", "--user", "u", "--shared")[0] == 2
    assert cli("add", "a", "b", "c", "--user", "u", "--time", "yesterday")[0] == 2
    assert cli("search", "x", "-k", "0")[0] == 2
    assert cli("show", "alice", "--hops", "9")[0] == 2
    assert cli("--read-only", "add", "a", "b", "c", "--user", "u")[0] == 2
    assert cli("add", " ", "b", "c", "--user", "u")[0] == 2  # InvalidInputError from the KB
    assert main([]) == 2 and main(["kb"]) == 2 and main(["nosuchgroup"]) == 2
    assert main(["--help"]) == 0 and main(["kb", "add", "--help"]) == 0
    capsys.readouterr()


def test_second_writer_exits_4(cli, filled, kbdir):
    base = KnowledgeBase.open(kbdir, embedder=HashEmbedder(64), config=KBConfig(show_progress=False))
    try:
        code, out, err = cli("add", "carol", "likes", "jazz", "--user", "carol")
        assert code == 4 and out == ""
        assert err.startswith("kgrow: error: ") and "being written by pid" in err and err.count("\n") == 1
        assert cli("stats")[0] == 0  # readers are not blocked
        assert cli("search", "alice")[0] == 0
    finally:
        base.close()


def test_unexpected_error_hint_and_debug_traceback(cli, filled, monkeypatch):
    def boom(self):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(KnowledgeBase, "stats", boom)
    code, _, err = cli("stats")
    assert code == 1 and err == "kgrow: error: unexpected RuntimeError: boom second line (run with --debug for a traceback)\n"
    code, _, err = cli("stats", "--debug")
    assert code == 1 and "Traceback (most recent call last)" in err and "--debug for" not in err


def test_keyboard_interrupt_exits_130(cli, filled, monkeypatch):
    def interrupt(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(KnowledgeBase, "facts", interrupt)
    code, _, err = cli("facts")
    assert code == 130 and "interrupted" in err


# ---------------------------------------------------------------------------- export / import


def test_export_formats(cli, filled, tmp_path):
    for name, fmt in (("out.jsonl", "jsonl"), ("out.graphml", "graphml"), ("out.json", "nodelink"), ("out.csv", "csv")):
        code, out, err = cli("export", str(tmp_path / name), "--json")
        assert code == 0, err
        (rec,) = lines(out)
        assert rec["format"] == fmt and rec["records"] > 0 and (tmp_path / name).stat().st_size > 0
    code, out, _ = cli("export", str(tmp_path / "data.txt"), "--format", "jsonl", "--user", "bob")
    assert code == 0 and out.startswith("exported ")
    code, _, err = cli("export", str(tmp_path / "data.txt"))
    assert code == 2 and "--format" in err


def test_export_import_round_trip(cli, filled, tmp_path):
    dump = tmp_path / "dump.jsonl"
    assert cli("export", str(dump))[0] == 0
    copy = tmp_path / "copy"
    code, out, err = cli("import", str(dump), "--json", kb=copy)
    assert code == 0, err
    (rec,) = lines(out)
    assert rec["facts"] >= 5
    _, before, _ = cli("facts", "--history", "--json")
    _, after, _ = cli("facts", "--history", "--json", kb=copy)
    assert {r["id"] for r in lines(after)} == {r["id"] for r in lines(before)}
    assert cli("import", str(tmp_path / "missing.jsonl"), kb=copy)[0] == 3


# ---------------------------------------------------------------------------- rendering & entry point


def test_output_rendering():
    buf = io.StringIO()
    out = Output(style="rich", stream=buf)
    out.table(("id", "text"), [("f_1", "[bold]not markup[/bold]"), ("f_2", "x" * 1000)], title="facts")
    out.table(("id",), [], title="empty")
    out.kv([("a", 1.5), ("b", ("x", "y"))])
    text = buf.getvalue()
    assert "[bold]not markup[/bold]" in text and "empty: (none)" in text and "x, y" in text
    from kb.facts import Fact, Status

    f = Fact("f_1", "a", "r", "b", "a r b", "", 1.0, Status.ACTIVE, 0.0, 0.0, None)
    assert jsonable(f)["status"] == "active" and jsonable(f)["stated_at"] == "1970-01-01T00:00:00+00:00"
    assert Output(stream=io.StringIO()).style == "plain"
    wide = io.StringIO()  # wider than the (80-column) console: plain rows instead of a broken rich table
    Output(style="rich", stream=wide).table(("id", "object"), [("f_1", "y" * 200)])
    assert "─" not in wide.getvalue() and "y" * 200 in wide.getvalue()


def test_python_dash_m_agent_entry_point(tmp_path):
    env = {**os.environ, "KGROW_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    kb = str(tmp_path / "kb")
    base = [sys.executable, "-m", "agent", "kb", "--kb", kb, "--embedder", "hash:64"]
    run = subprocess.run(base + ["add", "Alice", "likes", "tea", "--user", "alice"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("created f_")
    run = subprocess.run(base + ["stats", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["facts_active"] == 1
    run = subprocess.run(base + ["history", "f_missing"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 3 and run.stderr.startswith("kgrow: error: ")
    # `import agent` stays light: no knowledge base, torch or numpy until a command needs them
    probe = "import sys, agent; assert not {'kb', 'torch', 'numpy'} & set(sys.modules), sorted(sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, timeout=60).returncode == 0
