"""Scripted stand-ins for the language model, for fast tests of the agent loop and the eval harness."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from agent.types import Candidate
from agent.generation.model import Capabilities, GenerationStats, Message

#: the answer EchoLLM gives when the prompt carries no numbered facts
DONT_KNOW = "I don't know."


class EchoLLM:
    """Answers by echoing the first numbered fact ("[1] ...") of the last user message; extracts nothing.

    Its feedback candidates are the numbered facts in prompt order. It samples (scripted candidates) but
    has no weights to fuse knowledge into and no KV cache.
    """

    capabilities = Capabilities(sampling=True)

    def __init__(self) -> None:
        self._stats = GenerationStats()
        self.calls = 0

    @property
    def id(self) -> str:
        return "echo-llm"

    @property
    def last_stats(self) -> GenerationStats:
        return self._stats

    def stream(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> Iterator[str]:
        self.calls += 1
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        answer = next((line[4:].strip() for line in last.splitlines() if line.startswith("[1] ")), "") or DONT_KNOW
        if max_new_tokens is not None:  # a word is a token here
            answer = " ".join(answer.split(" ")[:max_new_tokens])
        self._stats = GenerationStats(new_tokens=len(answer.split()))
        yield answer

    def sample_candidates(self, messages: Sequence[Message], *, n: int, temperature: float, top_p: float,
                          max_new_tokens: int, max_sentences: int = 0, seed: int = 0) -> list[Candidate]:
        """One candidate per numbered fact, in prompt order ("[1]" is the greedy one and the most probable)."""
        self.calls += 1
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        facts = [line.split("] ", 1)[1].strip() for line in last.splitlines() if line.startswith("[") and "] " in line]
        return [Candidate(text, -0.1 * (i + 1), len(text.split()), greedy=i == 0)
                for i, text in enumerate((facts or [DONT_KNOW])[:n])]

    def complete(self, prompt: str, max_new_tokens: int = 128) -> str:
        return "[]"

    def reset_cache(self) -> None:
        self._stats = GenerationStats()
