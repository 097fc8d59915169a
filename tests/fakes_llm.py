"""A scripted language model for tests of the agent loop and the chat CLI: replies come from a script,
and every prompt it is given is recorded so tests can check what the model saw."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

from agent.types import Candidate
from agent.generation.model import Capabilities, GenerationStats, Message

#: what ScriptedLLM says once its script is used up
DEFAULT_REPLY = "OK."


class ScriptedLLM:
    """Replies with the next scripted string, streamed in word-sized pieces; records every prompt.

    ``calls`` holds the message lists given to ``stream`` (one list per generation), oldest first.
    With ``responder``, a reply is computed from the messages instead once the script is used up.
    ``sample_candidates`` (the feedback loop's regeneration) returns the next list queued with
    ``add_candidates``, or else the next reply alone; ``candidate_calls`` records its prompts.
    A reply is cut after ``max_new_tokens`` words (a word is a token here). It has no weights to
    fuse knowledge into and no KV cache.
    """

    capabilities = Capabilities(sampling=True)

    def __init__(self, replies: Iterable[str] = (), default: str = DEFAULT_REPLY,
                 responder: Callable[[list[Message]], str] | None = None):
        self._replies = list(replies)
        self.default = default
        self.responder = responder
        self.calls: list[list[Message]] = []
        self.completions: list[str] = []
        self.candidate_calls: list[list[Message]] = []
        self._candidate_rounds: list[list[str | tuple[str, float]]] = []
        self.resets = 0
        self.pieces_yielded = 0
        self._stats = GenerationStats()
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return "scripted-llm"

    @property
    def last_stats(self) -> GenerationStats:
        return self._stats

    def add(self, *replies: str) -> None:
        """Queue more replies."""
        self._replies.extend(replies)

    @property
    def last_messages(self) -> list[Message]:
        assert self.calls, "the LLM was never called"
        return self.calls[-1]

    @property
    def last_user_message(self) -> str:
        return next(m.content for m in reversed(self.last_messages) if m.role == "user")

    def _next_reply(self, messages: Sequence[Message]) -> str:
        if self._replies:
            return self._replies.pop(0)
        if self.responder is not None:
            return self.responder(list(messages))
        return self.default

    def add_candidates(self, *candidates: str | tuple[str, float]) -> None:
        """Queue one feedback round's candidates: texts (log-prob -1.0, -1.1, ... in order) or (text, log-prob)."""
        self._candidate_rounds.append(list(candidates))

    def sample_candidates(self, messages: Sequence[Message], *, n: int, temperature: float, top_p: float,
                          max_new_tokens: int, max_sentences: int = 0, seed: int = 0) -> list[Candidate]:
        """The first ``n`` queued candidates of the next round (the first one plays the greedy answer)."""
        with self._lock:
            self.candidate_calls.append(list(messages))
            items = self._candidate_rounds.pop(0) if self._candidate_rounds else [self._next_reply(messages)]
        out = []
        for i, item in enumerate(items[:n]):
            text, logprob = (item, -1.0 - 0.1 * i) if isinstance(item, str) else item
            out.append(Candidate(text, logprob, len(text.split()), greedy=i == 0))
        return out

    def stream(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> Iterator[str]:
        with self._lock:
            self.calls.append(list(messages))
            reply = self._next_reply(messages)
        words = reply.split(" ")
        if max_new_tokens is not None:
            words = words[:max_new_tokens]
        self._stats = GenerationStats(prompt_tokens=sum(len(m.content.split()) for m in messages),
                                      prefill_tokens=sum(len(m.content.split()) for m in messages))
        for i, word in enumerate(words):
            self._stats.new_tokens += 1
            self.pieces_yielded += 1
            yield word if i == 0 else " " + word

    def complete(self, prompt: str, max_new_tokens: int = 128) -> str:
        self.completions.append(prompt)
        return "[]"

    def reset_cache(self) -> None:
        self.resets += 1


def fact_lines(messages: Sequence[Message]) -> list[str]:
    """The numbered fact lines ("[1] Sam lives in Paris.") of the newest user message."""
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    return [line for line in last.splitlines() if line.startswith("[") and "] " in line]


def echo_facts(messages: list[Message]) -> str:
    """A responder that answers with every fact it was shown (or "I don't know.")."""
    facts = [line.split("] ", 1)[1] for line in fact_lines(messages)]
    return " ".join(facts) if facts else "I don't know."
