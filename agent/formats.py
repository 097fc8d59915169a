"""Numbered, append-only upgrade steps of the files the agent keeps: sessions and profiles.

As in kb/log/migrations.py: step N takes format N-1 to N, and a step that has shipped is never
edited or reordered. A file names its format in a top-level ``format`` field; reading runs the steps
after it in memory (the file is rewritten in the newest format on the next save), and a file from a
newer kgrow is refused with an error naming the format found and the newest one this code reads.
tests/fixtures/sessions_v1 holds files written before these steps existed; the tests upgrade them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.errors import StateError

Step = Callable[[dict], dict]


def _session_v2_format_field(raw: dict) -> dict:
    """Format 1 named its version ``version``; from format 2 on every file says ``format``."""
    out = {k: v for k, v in raw.items() if k != "version"}
    return {**out, "format": 2}


@dataclass(frozen=True)
class FileFormat:
    """One kind of file and its upgrade steps."""

    name: str  # "session", "profile": named in errors
    steps: tuple[Step, ...]  # steps[n] upgrades format n+1 to n+2 (format 1 is the first released)

    @property
    def newest(self) -> int:
        return len(self.steps) + 1

    def version(self, raw: Any, where: str) -> int:
        """The format ``raw`` says it is in (format 1 sessions said ``version``)."""
        if not isinstance(raw, dict):
            raise StateError(f"{where} must hold a JSON object, got {type(raw).__name__}")
        found = raw.get("format", raw.get("version"))
        if isinstance(found, bool) or not isinstance(found, int) or found < 1:
            raise StateError(f"{where} has {self.name} format {found!r}; formats are whole numbers from 1 "
                             f"to {self.newest}")
        return found

    def upgrade(self, raw: Any, where: str) -> dict:
        """``raw`` in the newest format; StateError naming both formats for a file from a newer kgrow."""
        found = self.version(raw, where)
        if found > self.newest:
            raise StateError(f"{where} has {self.name} format {found}, newer than this kgrow reads (formats 1 to "
                             f"{self.newest}); upgrade kgrow")
        for step in self.steps[found - 1:]:
            raw = step(raw)
        return raw


#: a session: {"format": N, "state": DialogueState.to_dict()}
SESSION = FileFormat("session", (_session_v2_format_field,))
#: a profile: {"format": N, "user": ..., one field per ProfileKey}
PROFILE = FileFormat("profile", ())
