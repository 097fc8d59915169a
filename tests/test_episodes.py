"""Episodes as memory: batched writes, sessions and positions, roles, idempotence, schema upgrade."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from kb import HashEmbedder, InvalidInputError, KnowledgeBase, NewEpisode, Role
from kb.errors import IncompatibleKBError


def _kb(tmp_path):
    return KnowledgeBase.open(tmp_path / "kb", embedder=HashEmbedder(64))


def test_add_episodes_is_one_batch_with_sessions_positions_and_roles(tmp_path):
    with _kb(tmp_path) as kb:
        items = [NewEpisode("I adopted a greyhound called Biscuit.", "sam", "sam", "user", "s1", 0, "2024-05-01T10:00:00"),
                 NewEpisode("What a lovely name!", "sam", "assistant", "assistant", "s1", 1, "2024-05-01T10:00:05"),
                 NewEpisode("Biscuit loves the beach.", "sam", "mia", "other", "s1", 2, "2024-05-01T10:01:00")]
        eps = kb.add_episodes(items)
        assert [e.role for e in eps] == ["user", "assistant", "other"]
        assert [e.position for e in kb.session_episodes("sam", "s1")] == [0, 1, 2]
        assert [e.text for e in kb.session_episodes("sam", "s1", 1, 2)] == ["What a lovely name!"]
        hits = kb.search("greyhound Biscuit", k=3, user="sam", kinds=["episode"])
        assert hits[0].episode.session == "s1" and hits[0].episode.position == 0


def test_the_same_turn_twice_is_one_episode_and_no_second_embedding(tmp_path):
    with _kb(tmp_path) as kb:
        item = NewEpisode("I play the cello.", "sam", time=1_700_000_000, session="s", position=0)
        a = kb.add_episodes([item, item])
        b = kb.add_episodes([item])
        assert a[0].id == a[1].id == b[0].id
        assert len(kb.episodes(user="sam")) == 1


def test_bad_episode_input_names_the_value_and_writes_nothing(tmp_path):
    with _kb(tmp_path) as kb:
        good = NewEpisode("fine", "sam", session="s", position=0, time=1.0)
        with pytest.raises(InvalidInputError, match="position=-1 \\(item 1\\)"):
            kb.add_episodes([good, NewEpisode("bad", "sam", position=-1)])
        with pytest.raises(InvalidInputError, match="unknown role 'bot'; valid roles: user, assistant, other"):
            kb.add_episodes([NewEpisode("x", "sam", role="bot")])
        with pytest.raises(InvalidInputError, match="shape"):
            kb.add_episodes([good], vectors=np.zeros((2, 64), dtype=np.float32))
        assert kb.users() == [] or kb.episodes(user="sam") == []


def test_a_long_turn_is_stored_whole(tmp_path):
    with _kb(tmp_path) as kb:
        text = "word " * 20_000
        ep = kb.add_episode(text, user="sam")
        assert kb.episode(ep.id).text == text.strip() or kb.episode(ep.id).text == text


def test_a_newer_schema_is_a_clear_error(tmp_path):
    with _kb(tmp_path) as kb:
        kb.add_episode("hello", user="sam")
    db = sqlite3.connect(tmp_path / "kb" / "kb.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(IncompatibleKBError, match="schema version is 99, newer than this kgrow reads"):
        KnowledgeBase.open(tmp_path / "kb", embedder=HashEmbedder(64))


def test_roles_parse_and_name_the_valid_choices():
    assert Role.parse("assistant") is Role.ASSISTANT
    with pytest.raises(InvalidInputError, match="valid roles"):
        Role.parse("system")
