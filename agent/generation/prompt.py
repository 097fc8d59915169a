"""Prompt layout: a fixed system part, verbatim history, and the retrieved facts in the newest user message.

Layout (why): the KV cache is reused for the longest common token prefix between turns, so
everything that changes every turn (the retrieved facts) sits at the very end, inside the newest
user message; the system text and the verbatim history before it are identical from one turn to
the next. History is trimmed in chunks (from 2*N exchanges down to N) rather than one exchange per
turn, so the prefix breaks once every N turns instead of every turn.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from agent.generation.llm import Message
from agent.profile.profile import AnswerLength, Profile, Tone
from agent.validation import check, within
from kb.facts import Fact

# Wording measured on SmolLM2-135M-Instruct: framing the facts as the user's own ("Facts about me
# (I am Sam)") and a one-sentence instruction made it answer from them far more often than a longer
# rule list with "If no fact answers..." clauses, which it tended to recite back.
# The system text says nothing about who the assistant is: the model parroted any self-description
# ("I'm Quinn, a helpful assistant with a memory") in place of answers.
SYSTEM = "Answer the user's question in one short sentence using the facts about them."


@dataclass(frozen=True)
class PromptConfig:
    """How much context the model sees."""

    # past exchanges kept verbatim; trimmed back to this many once there are twice as many. 0 for the
    # packaged 135M model: it copies earlier replies instead of reading the facts (scenario eval: same
    # accuracy with 0 and 4-6; the scripted demo answered wrongly with 2-8). The dialogue state already
    # resolves pronouns and references, so the model needs no history for them; raise this for a
    # stronger --model, and the KV cache then reuses the whole conversation prefix.
    history_turns: int = within(0, 0, 64)
    # rough token budget for the facts block (1 token ~ 4 characters)
    fact_token_budget: int = within(320, 16, 8192)

    def __post_init__(self) -> None:
        check(self)  # every within() field in its range


@dataclass(frozen=True)
class Exchange:
    """One past turn as the model saw it: the user's raw text and the reply."""

    user_text: str
    reply: str


def estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


def fit_facts(facts: Sequence[Fact], budget: int) -> list[Fact]:
    """The longest prefix of ``facts`` whose numbered lines fit the token budget."""
    out, used = [], 0
    for f in facts:
        cost = estimate_tokens(f.text) + 3
        if used + cost > budget:
            break
        out.append(f)
        used += cost
    return out


def trim_history(history: list[Exchange], keep: int) -> list[Exchange]:
    """Chunked trimming: unchanged until 2*keep exchanges, then cut back to the last keep."""
    if keep == 0:
        return []
    return history[-keep:] if len(history) >= 2 * keep else history


def display_name(profile: Profile) -> str:
    """How the user is named in prompts: their preferred name, else their stated name, else their user id."""
    return profile.display_name


# Added to SYSTEM only for a non-default preference, so the default prompt (and the KV-cache prefix
# and the measured behaviour of the 135M model) stays exactly as it was.
# DETAILED replaces SYSTEM's "in one short sentence" rather than contradicting it.
SYSTEM_DETAILED = "Answer the user's question using the facts about them, then explain in a few sentences."
_LENGTH = {AnswerLength.SHORT: "Use as few words as possible."}
_TONE = {Tone.FORMAL: "Use a formal, polite tone.", Tone.CASUAL: "Use a casual, friendly tone."}


def system_text(profile: Profile) -> str:
    """The system message: fixed instructions plus the user's preferences (changes rarely).

    Only the preferences go here (how to address the user, length, language, tone), never the facts
    or slots: those reach the model as numbered fact lines, so the user's profile is all the system
    text says about them, and another user's profile never appears in it.
    """
    lines = [SYSTEM_DETAILED if profile.length is AnswerLength.DETAILED else SYSTEM]
    if profile.call_me:
        lines.append(f"Call the user {profile.display_name}.")
    if profile.length in _LENGTH:
        lines.append(_LENGTH[profile.length])
    if profile.language is not None:
        lines.append(f"Always answer in {profile.language.value}.")
    if profile.tone in _TONE:
        lines.append(_TONE[profile.tone])
    return " ".join(lines)


# First person -> third person, most specific first ("do I" before "I"). Measured on the scenario
# questions with SmolLM2-135M: asking "Where was Carol born?" next to facts that say "Carol was
# born in Lisbon." is answered from the fact 9/10 times; "Where was I born?" only 6/10.
_THIRD_PERSON = (
    (r"\bdo I\b", "does {n}"), (r"\bam I\b", "is {n}"), (r"\bwas I\b", "was {n}"), (r"\bhave I\b", "has {n}"),
    (r"\bI am\b", "{n} is"), (r"\bI'm\b", "{n} is"), (r"\bI've\b", "{n} has"), (r"\bI was\b", "{n} was"),
    (r"\b[Mm]y\b", "{n}'s"), (r"\b[Mm]ine\b", "{n}'s"), (r"\b[Mm]yself\b", "{n}"), (r"\bme\b", "{n}"), (r"\bI\b", "{n}"),
)


def third_person(question: str, name: str) -> str:
    """'Where do I live?' -> 'Where does Sam live?': the form in which the facts are written."""
    out = question
    for pattern, repl in _THIRD_PERSON:
        out = re.sub(pattern, repl.format(n=name).replace("\\", ""), out)
    return out


def bare_messages(user_text: str, profile: Profile) -> list[Message]:
    """A general-knowledge question as the bare model gets it: no facts, no system text beyond the
    user's non-default preferences (none: the model's own default system prompt)."""
    prefs = system_text(profile)[len(SYSTEM_DETAILED if profile.length is AnswerLength.DETAILED else SYSTEM):].strip()
    return ([Message("system", prefs)] if prefs else []) + [Message("user", user_text)]


def build_messages(system: str, history: Sequence[Exchange], facts: Sequence[Fact], user_text: str,
                   name: str, snippets: Sequence[str] = ()) -> list[Message]:
    """Chat messages: system, verbatim history, then the numbered facts and dated ``snippets`` of
    earlier conversations (numbered after the facts) + the new message.

    ``name`` is how the user is called in the facts (their stated name or user id).
    """
    msgs = [Message("system", system)]
    for ex in history:
        msgs.append(Message("user", ex.user_text))
        msgs.append(Message("assistant", ex.reply))
    lines = [f.text for f in facts] + list(snippets)
    if lines:
        block = "\n".join(f"[{i}] {line}" for i, line in enumerate(lines, start=1))
        head = "Facts about me" if not snippets else "What I have told you" if not facts else "Facts about me and what I have told you"
        content = f"{head} (I am {name}):\n{block}\n\n{user_text}"
    else:
        content = user_text
    msgs.append(Message("user", content))
    return msgs
