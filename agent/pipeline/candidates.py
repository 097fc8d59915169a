"""Candidate answers for the feedback loop, from any language model that declares the sampling capability."""
from __future__ import annotations

from collections.abc import Sequence

from agent.generation.model import CandidateSampler, LanguageModel, Message, require
from agent.generation.sampling import OVERSAMPLE, check_request, sample_candidates  # noqa: F401 - re-exported
from agent.types import Candidate


def generate_candidates(llm: LanguageModel, messages: Sequence[Message], *, n: int, temperature: float,
                        top_p: float, max_new_tokens: int, max_sentences: int, seed: int) -> list[Candidate]:
    """Up to ``n`` distinct candidates from ``llm`` (greedy first); an error naming the model when it cannot sample."""
    require(llm, "sampling", "candidate answers (feedback regeneration)")
    check_request(n, max_new_tokens)
    sampler: CandidateSampler = llm  # type: ignore[assignment] - promised by capabilities.sampling
    return list(sampler.sample_candidates(messages, n=n, temperature=temperature, top_p=top_p,
                                          max_new_tokens=max_new_tokens, max_sentences=max_sentences, seed=seed))
