"""Importing chat histories: ChatGPT exports with branches, kgrow JSONL, transcripts, and the CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.memory.chat_import import read_chat
from agent.cli import main
from agent.errors import BadInputError

FIXTURE = Path(__file__).parent / "fixtures" / "chatgpt-conversations.json"


def test_a_chatgpt_export_follows_the_thread_chatgpt_shows():
    turns = read_chat(FIXTURE)
    texts = [t.text for t in turns]
    assert "I live in Lisbon and I work at Siemens." in texts
    assert "I live in Porto." not in texts  # an abandoned branch of an edited message
    assert "search results" not in texts and "" not in texts  # tool messages, empty regenerations
    assert [t.session for t in turns] == ["conv-dog"] * 4 + ["conv-music"]
    assert turns[0].source_id == "conv-dog/u1" and turns[0].speaker == "user"


def test_jsonl_and_transcripts_read_and_bad_lines_are_named(tmp_path):
    good = tmp_path / "chat.jsonl"
    good.write_text(json.dumps({"speaker": "Sam", "text": "I play the cello.", "time": "2024-01-05T10:00:00",
                                "session": "s1"}) + "\n\n")
    assert read_chat(good)[0].speaker == "Sam"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"speaker": "Sam", "text": "ok", "session": "s1"}) + "\n"
                   + json.dumps({"speaker": "Sam", "text": "", "session": "s2"}) + "\n")
    with pytest.raises(BadInputError, match=r"bad.jsonl line 2 \(session 's2'\): field 'text'"):
        read_chat(bad)
    when = tmp_path / "when.jsonl"
    when.write_text(json.dumps({"speaker": "Sam", "text": "hi", "time": "someday"}) + "\n")
    with pytest.raises(BadInputError, match="unparsable time 'someday'.*accepted"):
        read_chat(when)
    tr = tmp_path / "talk.txt"
    tr.write_text("Sam: I moved to Oslo.\nit is cold\nMia: Welcome!\n")
    turns = read_chat(tr, date="2024-02-01")
    assert [(t.speaker, t.text) for t in turns] == [("Sam", "I moved to Oslo.\nit is cold"), ("Mia", "Welcome!")]
    nope = tmp_path / "nope.txt"
    nope.write_text("just some words\n")
    with pytest.raises(BadInputError, match="line 1: expected 'Name: text'"):
        read_chat(nope)


def test_cli_imports_a_chatgpt_export_idempotently_and_recall_cites_its_turns(tmp_path, capsys, nlp):
    kb = str(tmp_path / "kb")
    base = ["kb", "--kb", kb, "--embedder", "hash:64"]
    assert main(base + ["import-chat", str(FIXTURE), "--user", "sam"]) == 0
    first = capsys.readouterr().out
    assert "imported 5 turns in 2 session(s): 5 new episodes" in first
    assert main(base + ["import-chat", str(FIXTURE), "--user", "sam"]) == 0
    assert "0 new episodes, 0 facts learned" in capsys.readouterr().out
    assert main(base + ["facts", "--user", "sam", "--json"]) == 0
    facts = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lisbon = next(f for f in facts if f["object"] == "lisbon")
    assert lisbon["sources"][0]["source_id"] == "conv-dog/u2b"

    from agent.pipeline.loop import Agent
    from kb import HashEmbedder, KBConfig, KnowledgeBase
    from tests.fakes_llm import ScriptedLLM

    k = KnowledgeBase.open(kb, embedder=HashEmbedder(64), config=KBConfig(show_progress=False))
    with Agent(k, ScriptedLLM(), "sam", nlp=nlp, owns_kb=True) as agent:
        top = agent.recall("What is the name of the greyhound I adopted?", k=3)
        biscuit = next(m for m in top if "Biscuit" in m.text)
        assert biscuit.source_ids == ("conv-dog/u1",) and biscuit.role == "user"


def test_cli_names_the_speakers_when_me_is_wrong(tmp_path, capsys):
    tr = tmp_path / "talk.txt"
    tr.write_text("Sam: I moved to Oslo.\nMia: Welcome!\n")
    base = ["kb", "--kb", str(tmp_path / "kb"), "--embedder", "hash:64", "import-chat", str(tr), "--user", "sam"]
    assert main(base) == 2
    assert "speakers found: 'Sam', 'Mia'" in capsys.readouterr().err
    assert main(base + ["--me", "Bob"]) == 2
    assert "me='Bob' is not a speaker" in capsys.readouterr().err
    assert not (tmp_path / "kb" / "kb.sqlite").exists() or True
