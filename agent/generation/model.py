"""The language-model contract: chat messages, generation stats, the Capabilities record and the protocols every model (real or fake) implements."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, runtime_checkable

from agent.errors import BadInputError

if TYPE_CHECKING:
    import threading

    from agent.types import Candidate


@dataclass(frozen=True)
class Message:
    """One chat message in the model's chat template."""

    role: str  # "system", "user" or "assistant"
    content: str


@dataclass
class GenerationStats:
    """What the last generate() call cost."""

    prompt_tokens: int = 0  # tokens in the full prompt
    reused_tokens: int = 0  # of those, served from the KV cache of the previous call
    prefill_tokens: int = 0  # encoded in this call (prompt_tokens - reused_tokens)
    new_tokens: int = 0
    time_to_first_token: float = 0.0  # seconds
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        decode = self.seconds - self.time_to_first_token
        return (self.new_tokens - 1) / decode if self.new_tokens > 1 and decode > 0 else 0.0


@dataclass(frozen=True)
class Capabilities:
    """What a language model can do beyond streaming a reply; each flag promises the members of one protocol below.

    Callers ask ``llm.capabilities.<flag>`` (or ``require``) before using those members, never ``hasattr``.
    """

    # FusableModel: knowledge tokens fused into its hidden states by a fusion adapter (agent/fusion)
    fusion: bool = False
    # CandidateSampler: the greedy answer plus sampled alternatives, each with its mean log-prob (feedback)
    sampling: bool = False
    # the KV cache of the longest common prompt prefix is reused across calls (last_stats.reused_tokens);
    # reset_cache() drops it
    prefix_cache: bool = False
    # TransformersModel: its transformers model and tokenizer are open (LoRA, constrained decoding, batch decoding)
    transformers: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def has(self, ability: str) -> bool:
        """Whether the flag ``ability`` is set; an unknown name is an error naming the valid ones."""
        if ability not in self.names():
            raise BadInputError(f"unknown model capability {ability!r}; valid: {', '.join(self.names())}")
        return bool(getattr(self, ability))


_NEEDS = {"fusion": "a model that takes a fusion adapter", "sampling": "a model that samples candidate answers",
          "prefix_cache": "a model with a prefix KV cache", "transformers": "a transformers model (open weights)"}


def require(llm: LanguageModel, ability: str, purpose: str) -> None:
    """Refuse ``purpose`` (e.g. "LoRA adapters") unless ``llm`` declares ``ability``, naming the model and what it can do."""
    caps = llm.capabilities
    if not caps.has(ability):
        can = [n for n in caps.names() if getattr(caps, n)]
        raise BadInputError(f"{purpose} need {_NEEDS[ability]}, capability {ability!r}; {llm.id!r} has "
                            f"{', '.join(can) if can else 'none'} (agent.generation.llm.CausalLM has them all)")


@runtime_checkable
class LanguageModel(Protocol):
    """What the agent needs from every language model (the real one or a scripted fake)."""

    @property
    def id(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def last_stats(self) -> GenerationStats: ...

    def stream(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> Iterator[str]:
        """Yield the reply as text pieces, at most ``max_new_tokens`` tokens (None: the model's default)."""
        ...

    def complete(self, prompt: str, max_new_tokens: int = 128) -> str:
        """Plain completion of a raw prompt string (used by the LLM extractor)."""
        ...

    def reset_cache(self) -> None:
        """Forget any state kept between calls (a new conversation, other weights); a no-op without a cache."""
        ...


@runtime_checkable
class CandidateSampler(LanguageModel, Protocol):
    """``capabilities.sampling``: candidate answers for the feedback loop's re-ranking."""

    def sample_candidates(self, messages: Sequence[Message], *, n: int, temperature: float, top_p: float,
                          max_new_tokens: int, max_sentences: int = 0, seed: int = 0) -> list[Candidate]:
        """Up to ``n`` distinct candidates, the greedy answer first, each with its mean token log-prob."""
        ...


@runtime_checkable
class FusableModel(LanguageModel, Protocol):
    """``capabilities.fusion``: a fusion adapter reads knowledge tokens into the hidden states."""

    fusion: Any  # agent.fusion.adapter.FusedModel while an adapter is attached, else None
    hidden_size: int

    def attach_fusion(self, adapter) -> Any: ...

    def detach_fusion(self) -> None: ...

    def fusion_start(self, messages: Sequence[Message]) -> int: ...

    def stream(self, messages: Sequence[Message], max_new_tokens: int | None = None,
               knowledge=None) -> Iterator[str]: ...


@runtime_checkable
class TransformersModel(LanguageModel, Protocol):
    """``capabilities.transformers``: the transformers model, its tokenizer and the lock that guards them."""

    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    device: str

    @property
    def lock(self) -> threading.Lock:
        """Held by every forward pass of the chat; hold it while decoding or swapping weights outside it."""
        ...

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    @property
    def repetition_penalty(self) -> float: ...

    def chat_ids(self, messages: Sequence[Message]) -> list[int]: ...

    def stream_ids(self, prompt_ids: list[int], max_new_tokens: int | None = None, reuse: bool = True,
                   knowledge=None) -> Iterator[str]: ...
