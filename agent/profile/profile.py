"""A user's personalisation profile: stated preferences (name to use, answer length, language, tone) plus
the profile slots learned from their own facts, stored per user as versioned JSON in the KB directory.

File: ``KB_DIR/profiles/<user>.json`` (the user id escaped like session files), written atomically::

    {"format": 1, "user": "alice", "call_me": "Sam", "length": "short", "language": "French",
     "tone": "neutral"}

Only the preferences are stored there. The slots (name, lives_in, works_at...; see
``agent.language.vocab.PROFILE_SLOTS``) come from the user's current facts in the KB (``known_slots``), so
`kgrow kb forget` or a correction can never leave a stale copy behind.
"""
from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.choices import Choice
from agent.errors import BadInputError, StateError
from agent.formats import PROFILE
from agent.language.intent import looks_like_instruction
from agent.language.vocab import PROFILE_SLOTS
from agent.validation import check, within
from kb.facts import Status
from kb.files import write_atomic

if TYPE_CHECKING:
    from kb import KnowledgeBase

__all__ = [
    "FORMAT", "PREFERENCE_RELATIONS", "AnswerLength", "Generation", "Language", "Profile", "ProfileConfig", "ProfileKey", "ProfileStore",
    "Tone", "clean_call_me", "is_slot", "known_slots", "safe_name",
]

#: the profile file's format; files of another format are refused
FORMAT = PROFILE.newest  # the format written; older files are upgraded on load
#: relations the extractors use for answer preferences; the agent routes those to the profile instead
PREFERENCE_RELATIONS = frozenset({"answer_style", "preferred_language"})
#: longest preferred name accepted ("call me ..."); it goes into the system prompt
MAX_NAME_CHARS = 40
_WORD = r"[^\W\d_](?:[^\W\d_]|['’.-])*"  # letters, with apostrophes, dots and hyphens inside
_NAME = re.compile(rf"{_WORD}(?: {_WORD}){{0,3}}")


class AnswerLength(Choice):
    """How long answers should be; NORMAL is the agent's default behaviour."""

    SHORT = "short"
    NORMAL = "normal"
    DETAILED = "detailed"


class Tone(Choice):
    """How formal answers should sound; NEUTRAL adds nothing to the prompt."""

    NEUTRAL = "neutral"
    FORMAL = "formal"
    CASUAL = "casual"


class Language(Choice):
    """Languages the agent may be asked to answer in (the model is told; small models follow it loosely)."""

    ENGLISH = "English"
    FRENCH = "French"
    GERMAN = "German"
    SPANISH = "Spanish"
    ITALIAN = "Italian"
    PORTUGUESE = "Portuguese"
    DUTCH = "Dutch"
    POLISH = "Polish"
    SWEDISH = "Swedish"
    RUSSIAN = "Russian"
    TURKISH = "Turkish"
    ARABIC = "Arabic"
    HINDI = "Hindi"
    NORWEGIAN = "Norwegian"
    DANISH = "Danish"
    FINNISH = "Finnish"
    CZECH = "Czech"
    UKRAINIAN = "Ukrainian"
    GREEK = "Greek"
    HEBREW = "Hebrew"
    VIETNAMESE = "Vietnamese"
    THAI = "Thai"
    INDONESIAN = "Indonesian"
    CHINESE = "Chinese"
    JAPANESE = "Japanese"
    KOREAN = "Korean"


class ProfileKey(Choice):
    """The preferences a user (or `kgrow kb profile --set`) can change."""

    CALL_ME = "call_me"
    LENGTH = "length"
    LANGUAGE = "language"
    TONE = "tone"

    @classmethod
    def parse(cls, value: Any) -> ProfileKey:
        try:
            return super().parse(value)
        except BadInputError:
            valid = ", ".join(k.value for k in cls)
            if isinstance(value, str) and is_slot(value.strip().lower()):
                raise BadInputError(
                    f"{value.strip()!r} is learned from what the user says, not set in the profile (tell the "
                    f"agent, or use `kgrow kb add`/`kgrow kb forget`); profile keys: {valid}") from None
            raise BadInputError(f"unknown profile key {value!r}; valid keys: {valid}") from None


def is_slot(relation: str) -> bool:
    """Whether facts with ``relation`` about the user are kept as profile slots."""
    return relation in PROFILE_SLOTS or relation.startswith("favorite_")


def clean_call_me(value: Any) -> str:
    """A preferred name: 1-4 words of letters (apostrophes, dots, hyphens inside), at most 40 characters.

    It is written into the system prompt, so anything that reads like an instruction is refused.
    """
    if not isinstance(value, str):
        raise BadInputError(f"call_me must be a name (text), got {type(value).__name__}")
    name = " ".join(value.split())
    if (not name or len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name)
            or looks_like_instruction(name)):
        raise BadInputError(f"call_me {value!r:.60} is not a name; give 1-4 words of letters, at most "
                            f"{MAX_NAME_CHARS} characters (e.g. Sam, Mary Jane, O'Neil)")
    return name


@dataclass(frozen=True)
class Profile:
    """One user's personalisation: preferences (stored) and slots learned from their facts (derived)."""

    user: str
    call_me: str | None = None  # the name to address them by ("call me Sam"); None: their stated name
    length: AnswerLength = AnswerLength.NORMAL
    language: Language | None = None  # None: whatever the model answers in (English for the default)
    tone: Tone = Tone.NEUTRAL
    # slot -> value from the user's current facts ("name": "sam", "lives_in": "lisbon"); not stored
    slots: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.user, str) or not self.user.strip():
            raise BadInputError(f"profile user must be a non-empty string, got {self.user!r}")
        if self.call_me is not None:
            object.__setattr__(self, "call_me", clean_call_me(self.call_me))
        object.__setattr__(self, "length", AnswerLength.parse(self.length))
        if self.language is not None:
            object.__setattr__(self, "language", Language.parse(self.language))
        object.__setattr__(self, "tone", Tone.parse(self.tone))
        object.__setattr__(self, "slots", dict(self.slots))

    @property
    def display_name(self) -> str:
        """How the user is named in prompts: the preferred name, else their stated name, else the user id."""
        name = self.call_me or self.slots.get("name") or self.user
        return name[:1].upper() + name[1:]

    def get(self, key: ProfileKey | str) -> str | None:
        """The value of one preference as text (None when unset)."""
        value = getattr(self, ProfileKey.parse(key).value)
        return value.value if isinstance(value, enum.Enum) else value

    def with_value(self, key: ProfileKey | str, value: str) -> Profile:
        """A copy with one preference changed; BadInputError naming the valid keys or values."""
        k = ProfileKey.parse(key)
        if k is ProfileKey.CALL_ME:
            return replace(self, call_me=clean_call_me(value))
        if k is ProfileKey.LENGTH:
            return replace(self, length=AnswerLength.parse(value))
        if k is ProfileKey.LANGUAGE:
            return replace(self, language=Language.parse(value))
        return replace(self, tone=Tone.parse(value))

    def without(self, key: ProfileKey | str) -> Profile:
        """A copy with one preference back at its default."""
        k = ProfileKey.parse(key)
        default = Profile(self.user)
        return replace(self, **{k.value: getattr(default, k.value)})

    def preferences(self) -> Profile:
        """This profile without the derived slots (what the file stores)."""
        return replace(self, slots={})

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON object (preferences only)."""
        return {"format": FORMAT, "user": self.user, **{k.value: self.get(k) for k in ProfileKey}}

    @classmethod
    def from_dict(cls, d: Any, where: str = "profile") -> Profile:
        """Rebuild a profile written by ``to_dict``; BadInputError naming the first bad field."""
        if not isinstance(d, dict):
            raise BadInputError(f"{where} must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:  # ProfileStore.load upgrades older files first (agent/formats.py)
            raise BadInputError(f"{where} has format {d.get('format')!r}; this kgrow reads format {FORMAT}")
        expected = {"format", "user", *(k.value for k in ProfileKey)}
        extra = sorted(set(d) - expected)
        if extra:
            raise BadInputError(f"{where} has unknown field(s) {', '.join(extra)}; expected {', '.join(sorted(expected))}")
        values = {k.value: d.get(k.value) for k in ProfileKey if d.get(k.value) is not None}
        return cls(d.get("user"), **values)


@dataclass(frozen=True)
class ProfileConfig:
    """How the answer-length preference maps onto generation limits (NORMAL keeps the agent's own)."""

    short_sentences: int = within(1, 1, 100)  # "keep answers short": stop after the first sentence
    short_tokens: int = within(40, 1, 4096)  # and cap decoding early: a short answer is a few words
    detailed_sentences: int = within(6, 1, 100)  # "give me detailed answers": room for an explanation
    detailed_tokens: int = within(320, 1, 4096)  # above the LLM's default cap (96), which would cut it mid-sentence

    def __post_init__(self) -> None:
        check(self)  # every within() field in its range


@dataclass(frozen=True)
class Generation:
    """Decoding limits for one reply."""

    max_sentences: int  # stop after this many sentences (0 = no limit)
    max_new_tokens: int | None  # None: the language model's own default


def generation(profile: Profile, config: ProfileConfig, normal_sentences: int) -> Generation:
    """The limits for ``profile``'s answer length; NORMAL keeps ``normal_sentences`` and the LLM default."""
    if profile.length is AnswerLength.SHORT:
        return Generation(config.short_sentences, config.short_tokens)
    if profile.length is AnswerLength.DETAILED:
        return Generation(config.detailed_sentences, config.detailed_tokens)
    return Generation(normal_sentences, None)


def safe_name(user: str) -> str:
    """A file name for ``user``: letters, digits, '-', '_' and '.' kept, anything else %-escaped."""
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in user)


class ProfileStore:
    """Profiles of the users of one knowledge base, one JSON file each under ``KB_DIR/profiles``."""

    def __init__(self, kb_dir: str | Path):
        self.root = Path(kb_dir) / "profiles"

    def path(self, user: str) -> Path:
        return self.root / f"{safe_name(user)}.json"

    def load(self, user: str) -> Profile:
        """The stored preferences of ``user`` (defaults when none were stored); StateError if unreadable."""
        path = self.path(user)
        if not path.exists():
            return Profile(user)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StateError(f"cannot read the profile in {path}: {e}; fix or delete the file") from None
        raw = PROFILE.upgrade(raw, str(path))  # numbered steps (agent/formats.py); newer files are refused
        try:
            profile = Profile.from_dict(raw, str(path))
        except ValueError as e:  # BadInputError is a ValueError
            raise StateError(f"cannot read the profile in {path}: {e}; fix or delete the file") from None
        if profile.user != user:
            raise StateError(f"{path} holds the profile of {profile.user!r}, not of {user!r}; delete the file")
        return profile

    def save(self, profile: Profile) -> Path:
        """Write ``profile``'s preferences atomically (a failed write raises; the old file stays)."""
        path = self.path(profile.user)
        self.root.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(profile.to_dict(), ensure_ascii=False, indent=1) + "\n").encode("utf-8")
        write_atomic(path, lambda fh: fh.write(data))
        return path

    def delete(self, user: str) -> bool:
        """Remove ``user``'s profile file; False when there was none."""
        try:
            self.path(user).unlink()
        except FileNotFoundError:
            return False
        return True


def known_slots(kb: KnowledgeBase, user: str) -> dict[str, str]:
    """Profile slots from ``user``'s own current facts about themselves (oldest first, so newer win)."""
    if user not in kb.users():
        return {}
    me = kb.resolve(user)
    out: dict[str, str] = {}
    for f in kb.facts(user=user, entity=user):
        if f.user == user and f.subject == me and f.status is Status.ACTIVE and is_slot(f.relation):
            out[f.relation] = f.object
    return out


def load_profile(kb: KnowledgeBase, user: str) -> Profile:
    """``user``'s stored preferences with the slots filled from the KB."""
    return replace(ProfileStore(kb.path).load(user), slots=known_slots(kb, user))
