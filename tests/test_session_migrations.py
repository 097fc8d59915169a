"""Session and profile files written by earlier kgrow load, upgraded by numbered steps (agent/formats.py);
files from a newer kgrow are refused naming both formats. The fixtures were written by the code before
the steps existed (tests/fixtures/make_sessions_v1.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fakes_llm import ScriptedLLM

from agent.errors import StateError
from agent.formats import PROFILE, SESSION
from agent.profile.profile import Language, Tone
from kb import HashEmbedder, KBConfig, KnowledgeBase

FIXTURES = Path(__file__).parent / "fixtures" / "sessions_v1"


@pytest.fixture
def old_files(kb_path):
    """A KB directory holding sam's v1 session and profile, as an older kgrow left them."""
    KnowledgeBase.open(kb_path, embedder=HashEmbedder(64), config=KBConfig(show_progress=False)).close()
    for kind, name in (("sessions", "session-sam.json"), ("profiles", "profile-sam.json")):
        (kb_path / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / name, kb_path / kind / "sam.json")
    return kb_path


def test_a_v1_session_and_profile_resume_and_are_saved_in_the_newest_format(old_files, agent_factory):
    agent = agent_factory("sam", ScriptedLLM(["You live in Lisbon."]))
    assert [t.text for t in agent.state.turns] == ["I live in Lisbon.", "My sister Mary lives in Porto.",
                                                   "Where do I live?"]
    assert agent.state.turns[1].references == {"my": "sam"} and agent.state.focus == "mary"
    assert agent.profile.call_me == "Sammy" and agent.profile.language is Language.FRENCH
    assert agent.profile.tone is Tone.CASUAL
    agent.chat("Where does my sister live?")  # the history carries on from the old session
    assert [t.index for t in agent.state.turns] == [0, 1, 2, 3]
    agent.close()
    saved = json.loads((old_files / "sessions" / "sam.json").read_text())
    assert saved["format"] == SESSION.newest and "version" not in saved
    assert SESSION.upgrade(saved, "saved") == saved  # nothing left to upgrade


def test_every_step_runs_from_format_1():
    raw = json.loads((FIXTURES / "session-sam.json").read_text())
    assert SESSION.version(raw, "fixture") == 1
    assert SESSION.upgrade(raw, "fixture")["format"] == SESSION.newest
    profile = json.loads((FIXTURES / "profile-sam.json").read_text())
    assert PROFILE.upgrade(profile, "fixture")["format"] == PROFILE.newest


@pytest.mark.parametrize("kind, fmt", [("sessions", SESSION), ("profiles", PROFILE)])
def test_a_file_from_a_newer_kgrow_is_refused_naming_both_formats(old_files, agent_factory, kind, fmt):
    path = old_files / kind / "sam.json"
    raw = json.loads(path.read_text())
    raw.pop("version", None)
    path.write_text(json.dumps({**raw, "format": fmt.newest + 1}))
    with pytest.raises(StateError) as e:
        agent_factory("sam", ScriptedLLM())
    message = str(e.value)
    assert f"format {fmt.newest + 1}" in message and f"1 to {fmt.newest}" in message and "upgrade kgrow" in message
    assert json.loads(path.read_text())["format"] == fmt.newest + 1  # the newer file is left as it was


@pytest.mark.parametrize("bad", ["two", 0, True, None])
def test_a_format_that_is_no_version_number_is_refused(bad):
    with pytest.raises(StateError) as e:
        SESSION.upgrade({"format": bad, "state": {}}, "s.json")
    assert "s.json" in str(e.value) and repr(bad) in str(e.value)
