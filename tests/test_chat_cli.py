"""`kgrow chat` and `kgrow demo` as a user drives them: in-process on a scripted LLM and the hash embedder
(fast), and once for real in subprocesses on the packaged models (integration)."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fakes_llm import ScriptedLLM, echo_facts

from agent.cli import chat_cmd, demo_cmd, main
from agent.pipeline.loop import Agent, AgentConfig
from kb import HashEmbedder, KBConfig, KnowledgeBase

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_models(monkeypatch, nlp):
    """Make `kgrow chat` and `kgrow demo` open their agent on the hash embedder and an echoing fake LLM;
    returns the list of LLMs handed out (one per agent opened)."""
    llms: list[ScriptedLLM] = []

    def open_agent(args, kb_dir=None):
        path = kb_dir if kb_dir is not None else Path(args.kb)
        kb = KnowledgeBase.open(path, embedder=HashEmbedder(64), config=KBConfig(show_progress=False))
        llms.append(ScriptedLLM(responder=echo_facts))
        return Agent(kb, llms[-1], args.user, AgentConfig(), nlp=nlp, owns_kb=True)

    monkeypatch.setattr(chat_cmd, "open_agent", open_agent)
    monkeypatch.setattr(demo_cmd, "open_agent", open_agent)
    return llms


@pytest.fixture
def chat(fake_models, kb_path, monkeypatch, capsys):
    """chat(*lines, user="sam") -> stdout lines of one `kgrow chat` run fed ``lines`` on a pipe."""

    def run(*lines: str, user: str = "sam") -> list[str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
        code = main(["chat", "--kb", str(kb_path), "--user", user])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out.splitlines()

    return run


def reopen(kb_path) -> KnowledgeBase:
    return KnowledgeBase.open(kb_path, embedder=HashEmbedder(64), config=KBConfig(show_progress=False))


# --------------------------------------------------------------------------- the line protocol


def test_one_reply_line_per_input_line(chat):
    out = chat("My name is Sam.", "", "I live in Lisbon.", "   ", "Where do I live?")
    assert len(out) == 3  # blank lines are skipped
    assert "Sam" in out[0] and "Lisbon" in out[1]
    assert "Lisbon" in out[2]


def test_a_multi_line_reply_stays_on_one_line(chat, fake_models, monkeypatch, kb_path, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Tell me a story.\nAnd another?\n"))
    real = chat_cmd.open_agent

    def rambling(args, kb_dir=None):
        agent = real(args, kb_dir)
        agent.llm.add("Once upon\na time.", "The end.")
        return agent

    monkeypatch.setattr(chat_cmd, "open_agent", rambling)
    assert main(["chat", "--kb", str(kb_path), "--user", "sam"]) == 0
    assert capsys.readouterr().out.splitlines() == ["Once upon a time.", "The end."]


def test_eof_closes_cleanly_and_keeps_what_was_learned(chat, kb_path):
    chat("My name is Sam.", "I live in Lisbon.", "I work at Initech.")
    kb = reopen(kb_path)
    try:
        report = kb.verify()
        assert report.ok, report.problems
        assert {f.triple() for f in kb.facts(user="sam")} == {
            ("sam", "name", "sam"), ("sam", "lives_in", "lisbon"), ("sam", "works_at", "initech")}
    finally:
        kb.close()
    assert (kb_path / "sessions" / "sam.json").exists()


def test_a_second_run_remembers(chat):
    chat("I live in Lisbon.")
    (answer,) = chat("Where do I live?")
    assert "Lisbon" in answer


# --------------------------------------------------------------------------- slash commands


def test_state_prints_json(chat):
    out = chat("My name is Sam.", "I live in Lisbon.", "/state")
    state = json.loads("\n".join(out[2:]))
    assert state["user"] == "sam" and state["turns"] == 2
    assert state["profile"] == {"name": "sam", "lives_in": "lisbon"}
    assert state["last_turn"]["text"] == "I live in Lisbon." and state["last_turn"]["intent"] == "statement"


def test_why_shows_the_facts_used_and_where_they_were_learned(chat):
    out = chat("/why", "I live in Lisbon.", "Where do I live?", "/why")
    assert out[0] == "(no reply yet)"
    why = "\n".join(out[3:])
    assert "facts given to the model:" in why
    assert "[1] Sam lives in Lisbon." in why
    assert "learned from sam" in why
    assert '"I live in Lisbon."' in why  # the utterance it came from
    assert "stages:" in why and "recall" in why and "commit" in why  # each stage with its time, from the records


def test_why_after_a_statement_lists_what_was_learned_and_replaced(chat):
    out = chat("I live in Lisbon.", "Actually, I moved to Porto.", "/why")
    why = "\n".join(out[2:])
    assert "learned:" in why and "Sam lives in Porto." in why
    assert "superseded:" in why and "Sam lives in Lisbon." in why


def test_facts_lists_the_users_current_facts(chat):
    out = chat("/facts", "I live in Lisbon.", "I work at Initech.", "/facts")
    assert out[0] == "(no facts yet)"
    listing = out[3:]
    assert len(listing) == 2
    assert any("Sam lives in Lisbon." in line for line in listing)
    assert any("Sam works at Initech." in line for line in listing)
    assert all(line.startswith("f_") for line in listing)  # ids first, usable with /forget


def test_forget_an_entity_and_one_fact(chat, kb_path):
    out = chat("I live in Lisbon.", "I work at Initech.", "/forget lisbon", "/facts")
    assert out[2] == "forgot 1 fact(s) about lisbon"
    assert len(out[3:]) == 1 and "Initech" in out[3]

    fact_id = out[3].split()[0]
    out = chat(f"/forget {fact_id}", "/facts", "Where do I work?")
    assert out[:2] == ["forgot 1 fact(s)", "(no facts yet)"]
    assert "Initech" not in out[2]


def test_forget_by_id_cannot_touch_another_users_fact(chat, kb_path):
    out = chat("I live in Lisbon.", "/facts")
    fact_id = out[1].split()[0]
    out = chat(f"/forget {fact_id}", "/facts", user="bob")
    assert out[0].startswith("error:") and fact_id in out[0]
    assert out[1] == "(no facts yet)"
    kb = reopen(kb_path)
    try:
        assert kb.fact(fact_id).status.value == "active"
    finally:
        kb.close()


def test_forget_errors_are_reported_and_the_chat_goes_on(chat):
    out = chat("/forget", "/forget atlantis", "/forget f_0000", "I live in Lisbon.")
    assert out[0].startswith("usage: /forget")
    assert out[1].startswith("error:") and "atlantis" in out[1]
    assert out[2].startswith("error:") and "f_0000" in out[2]
    assert "Lisbon" in out[3]


def test_user_switches_to_another_users_own_facts(chat):
    out = chat("My name is Sam.", "I live in Lisbon.", "/user", "/user bob", "/facts", "What's my name?",
               "Where do I live?", "/user sam", "What's my name?")
    assert out[2] == "current user: sam"
    assert out[3] == "now talking with bob"
    assert out[4] == "(no facts yet)"
    assert "Sam" not in out[5] and "Lisbon" not in out[6]
    assert out[7] == "now talking with sam"
    assert "Sam" in out[8]


@pytest.mark.parametrize("name, fmt", [("facts.jsonl", "jsonl"), ("facts.csv", "csv")])
def test_export_writes_the_users_facts(chat, tmp_path, name, fmt):
    target = tmp_path / name
    out = chat("I live in Lisbon.", "I work at Initech.", f"/export {target}")
    assert out[2].startswith("wrote ") and out[2].endswith(f"to {target} ({fmt})")
    text = target.read_text(encoding="utf-8")
    assert "Lisbon" in text and "Initech" in text


def test_export_without_a_file_prints_usage(chat):
    assert chat("/export") == ["usage: /export FILE"]


def test_reset_starts_a_new_session_and_keeps_knowledge(chat):
    out = chat("I live in Lisbon.", "/reset", "/state", "Where do I live?")
    assert out[1] == "new session started; what I learned is kept"
    end = out.index("}", 2)
    state = json.loads("\n".join(out[2:end + 1]))
    assert state["turns"] == 0 and state["last_turn"] is None
    assert "Lisbon" in out[end + 1]


def test_help_lists_the_commands(chat):
    out = "\n".join(chat("/help"))
    for cmd in ("/state", "/why", "/facts", "/forget", "/user", "/export", "/reset", "/quit"):
        assert cmd in out


def test_quit_stops_reading(chat, kb_path):
    out = chat("I live in Lisbon.", "/quit", "I work at Initech.")
    assert len(out) == 1
    kb = reopen(kb_path)
    try:
        assert [f.relation for f in kb.facts(user="sam")] == ["lives_in"]
        assert kb.verify().ok
    finally:
        kb.close()


def test_unknown_command_is_named(chat):
    assert chat("/frobnicate now") == ["unknown command '/frobnicate'; try /help"]


# --------------------------------------------------------------------------- demo


def test_demo_learns_recalls_after_restart_and_supersedes(fake_models, kb_path, capsys):
    assert main(["demo", "--kb", str(kb_path)]) == 0
    out = capsys.readouterr().out
    assert len(fake_models) == 2  # two sessions, two agents: the second one starts from disk
    assert "+ learned  Sam lives in Paris." in out
    session2 = out[out.index("== session 2"):]
    # the restarted agent answered from what session 1 stored
    assert "kgrow> Sam lives in Paris." in session2
    assert "~ replaced Sam lives in Paris." in session2
    assert "learned from sam" in session2
    history = session2[session2.index("history of where the user lives"):]
    assert "superseded" in history and "Sam lives in Paris." in history
    assert "active" in history and "Sam lives in Berlin." in history
    kb = reopen(kb_path)
    try:
        assert kb.verify().ok
    finally:
        kb.close()


def test_demo_without_kb_cleans_up_its_temporary_kb(fake_models, capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    kb_dir = Path(out.split("(knowledge base: ", 1)[1].split(")", 1)[0])
    assert not kb_dir.exists()


# --------------------------------------------------------------------------- the real thing


CONVERSATION = [
    "Hi there!",
    "My name is Sam.",
    "How are you today?",
    "I live in Lisbon.",
    "The weather was nice yesterday.",
    "I work at Initech.",
    "My sister is Mary.",
    "She lives in Rome.",
    "What do you think about jazz?",
    "Thanks, that's all for now.",
]


def run_chat(kb_dir: Path, lines: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "chat", "--kb", str(kb_dir), "--user", "sam"],
        input="".join(f"{line}\n" for line in lines), capture_output=True, text=True, timeout=300,
        check=False, cwd=REPO, env=dict(os.environ),
    )


@pytest.mark.integration
def test_real_chat_remembers_across_processes(tmp_path):
    kb_dir = tmp_path / "kb"
    first = run_chat(kb_dir, CONVERSATION)
    assert first.returncode == 0, first.stderr
    replies = first.stdout.splitlines()
    assert len(replies) == len(CONVERSATION), first.stdout
    assert "Lisbon" in replies[3]  # the acknowledgement names what was stored

    second = run_chat(kb_dir, ["Where do I live?"])
    assert second.returncode == 0, second.stderr
    print("first run:\n" + first.stdout + "\nsecond run:\n" + second.stdout)
    assert "lisbon" in second.stdout.lower()


def test_why_shows_recalled_turns_with_their_source(chat):
    out = chat("I adopted a rescue greyhound last week, his name is Biscuit.", "/reset",
               "What is the name of the greyhound I adopted?", "/why")
    why = "\n".join(out)
    assert "earlier turns recalled" in why, why
    recalled = why.split("earlier turns recalled", 1)[1]  # the facts learned from the turn come before
    line = next(line for line in recalled.splitlines() if "Biscuit" in line and "/turn/0" in line)
    assert re.match(r"\d+\.\d{3}  sam at ", line.strip()), line  # score, speaker, time, source
