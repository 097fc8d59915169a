"""The active user's conversation: dialogue state, stored preferences, recent exchanges and the last reply, saved atomically."""
from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

from agent.dialogue.state import DialogueState
from agent.errors import BadInputError, StateError
from agent.formats import SESSION
from agent.generation.prompt import Exchange, trim_history
from agent.profile.profile import Profile, ProfileStore, known_slots
from agent.types import Reply
from kb import KnowledgeBase
from kb.files import write_text_atomic


class Session:
    """What the agent holds for its active user between turns.

    Only the pipeline's commit stage (and feedback's, through the same commit) changes it, with
    ``advance``: the new state, history and preferences are swapped in together, then written.
    """

    def __init__(self, kb: KnowledgeBase, profiles: ProfileStore, user: str, state: DialogueState,
                 preferences: Profile, history_turns: int):
        self._kb = kb
        self._profiles = profiles
        self._history_turns = history_turns  # exchanges kept for the prompt (PromptConfig.history_turns)
        self.user = user
        self.state = state
        self.preferences = preferences  # the user's stored preferences (slots live in state.profile)
        self.history: list[Exchange] = trim_history(
            [Exchange(t.text, t.reply) for t in state.turns if t.reply is not None], history_turns)
        self.last_reply: Reply | None = None

    @classmethod
    def open(cls, kb: KnowledgeBase, profiles: ProfileStore, user: str, history_turns: int) -> Session:
        """``user``'s saved session (or a new one), their preferences, and the profile slots their facts give."""
        preferences = profiles.load(user)  # an unreadable profile stops the switch before anything changes
        kb.ensure_user(user)
        state = _load(path_for(kb, user)) or DialogueState.new(user, uuid.uuid4().hex[:8])
        state.profile = known_slots(kb, user)  # the KB is the truth (facts may be forgotten meanwhile)
        return cls(kb, profiles, user, state, preferences, history_turns)

    @property
    def profile(self) -> Profile:
        """Stored preferences plus the slots known from the user's facts."""
        return replace(self.preferences, slots=dict(self.state.profile))

    def advance(self, state: DialogueState, exchange: Exchange | None, preferences: Profile | None = None,
                reply: Reply | None = None, replaces: bool = False) -> None:
        """Take a committed turn: the new ``state``, the ``exchange`` appended to the history (with
        ``replaces``, in place of the last exchange when that asked the same: a regenerated answer),
        ``preferences`` if they changed (stored first: a failed save changes nothing), the ``reply``;
        then save."""
        if preferences is not None and preferences != self.preferences:
            self.set_preferences(preferences)
        history = self.history
        if replaces and exchange is not None and history and history[-1].user_text == exchange.user_text:
            history = history[:-1]
        if exchange is not None:
            history = trim_history(history + [exchange], self._history_turns)
        self.state, self.history = state, history
        if reply is not None:
            self.last_reply = reply
        self.save()

    def set_preferences(self, profile: Profile) -> None:
        """Store ``profile``'s preferences (its slots are ignored) for this user; raises on a failed save."""
        if profile.user != self.user:
            raise BadInputError(f"this profile belongs to {profile.user!r}, not to the active user {self.user!r}")
        self._profiles.save(profile.preferences())  # raises on failure; the old profile stays in force
        self.preferences = profile.preferences()

    def restart(self) -> None:
        """A fresh conversation for the same user (the knowledge base is kept)."""
        self.state = DialogueState.new(self.user, uuid.uuid4().hex[:8])
        self.state.profile = known_slots(self._kb, self.user)
        self.history = []
        self.last_reply = None
        self.save()

    def save(self) -> None:
        """Write the dialogue state atomically and fsynced (nothing for a read-only KB)."""
        if self._kb.read_only:
            return
        path = path_for(self._kb, self.user)
        path.parent.mkdir(exist_ok=True)
        write_text_atomic(path, json.dumps({"format": SESSION.newest, "state": self.state.to_dict()}))


def path_for(kb: KnowledgeBase, user: str) -> Path:
    """KB_DIR/sessions/USER.json, the user's name made safe for a file name."""
    safe = "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in user)
    return kb.path / "sessions" / f"{safe}.json"


def _load(path: Path) -> DialogueState | None:
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StateError(f"cannot restore the session in {path}: {e}; delete the file to start fresh") from None
    raw = SESSION.upgrade(raw, str(path))  # numbered steps (agent/formats.py); newer files are refused
    try:
        return DialogueState.from_dict(raw["state"])
    except (ValueError, KeyError, TypeError) as e:
        raise StateError(f"cannot restore the session in {path}: {e}; delete the file to start fresh") from None
