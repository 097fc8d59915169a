"""How recalled episodes are cited to the model: dated snippets, and the turn a fused answer must agree with."""
from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from agent.memory.recall import Memory, RecallConfig, snippet

_ASKS_ASSISTANT = re.compile(r"(?i)\b(?:you|your|yours|yourself)\b")


def snippets(memories: Sequence[Memory], text: str, cfg: RecallConfig) -> list[str]:
    """Dated snippets of the best recalled turns for a prompt answering ``text``. The turn a cited fact
    came from is shown too (an extracted fact can lose what is asked: 'his name is Biscuit'); stale
    turns never; the assistant's own turns, no evidence about the user's world, only when the
    question asks what the assistant said ("what did you recommend?")."""
    mine = bool(_ASKS_ASSISTANT.search(text))
    eps = [m for m in memories if m.episode is not None and m.text != text and not m.stale
           and not only_asks(m.text) and (mine or m.role != "assistant")]
    return [dated(m, text, cfg.snippet_chars) for m in eps[: cfg.prompt_episodes]]


def only_asks(text: str) -> bool:
    """An earlier turn that is one question and tells nothing ("Where do I live?"): recalled, since it
    shows what was asked when, but no evidence for an answer."""
    t = text.strip()
    return t.endswith("?") and not _SENTENCE_END.search(t[:-1])


_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def dated(m: Memory, query: str, max_chars: int) -> str:
    """'On 2024-05-01 I said: ...' (or 'you said', 'Mia said'): when, who, and the best window."""
    day = datetime.fromtimestamp(m.time).strftime("%Y-%m-%d")
    who = "you said" if m.role == "assistant" else "I said" if m.role == "user" else f"{m.speaker} said"
    return f"On {day} {who}: {snippet(m.text, query, max_chars)}"


def leading_episode(memories: Sequence[Memory], ratio: float) -> str | None:
    """The text of the best human turn recalled when it scores at least ``ratio`` of the best memory
    (an earlier turn about as relevant as any fact), else None."""
    if not memories:
        return None
    best = memories[0].score
    for m in memories:
        if m.score < ratio * best:
            return None
        if m.episode is not None and not m.stale and m.role != "assistant" and not only_asks(m.text):
            return m.text
    return None
