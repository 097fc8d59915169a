"""Fact extraction from one user utterance: the extractor kinds and the one place that builds them.

The pieces live in their own modules and are re-exported here, so callers need only this one:
``Triple``/``ExtractionContext``/``Extractor`` (agent.triple), ``PatternExtractor`` (agent.patterns,
no LLM) and ``LLMExtractor`` (agent.llm_extractor, JSON from a text-completion callable).
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from agent.errors import BadInputError
from agent.llm_extractor import Generate, LLMExtractor, LLMExtractorConfig
from agent.patterns import PatternConfig, PatternExtractor
from agent.triple import ExtractionContext, Extractor, Lookup, Triple, dedupe, no_lookup

if TYPE_CHECKING:
    from agent.nlp import NLP

__all__ = [
    "ExtractionContext", "Extractor", "ExtractorKind", "Generate", "LLMExtractor", "LLMExtractorConfig",
    "Lookup", "PatternConfig", "PatternExtractor", "Triple", "build_extractor", "dedupe", "no_lookup",
]


class ExtractorKind(str, enum.Enum):
    """Which extractor the agent uses: dependency patterns (offline, fast) or an LLM."""

    PATTERNS = "patterns"
    LLM = "llm"

    @classmethod
    def parse(cls, value: str | ExtractorKind) -> ExtractorKind:
        try:
            return cls(value)
        except ValueError:
            raise BadInputError(
                f"unknown extractor kind {value!r}; valid kinds: {', '.join(k.value for k in cls)}"
            ) from None


def build_extractor(kind: ExtractorKind | str, *, nlp: NLP | None = None,
                    generate: Generate | None = None, llm=None) -> Extractor:
    """The extractor of ``kind``; PATTERNS needs ``nlp``; LLM needs ``generate``, or ``llm`` (an
    agent.llm.CausalLM), which then decodes under the triple-JSON constraint (agent.constrained)."""
    kind = ExtractorKind.parse(kind)
    if kind is ExtractorKind.PATTERNS:
        if nlp is None:
            raise BadInputError("the 'patterns' extractor needs a spaCy pipeline (nlp=load_nlp())")
        return PatternExtractor(nlp)
    if generate is None and llm is not None:
        from agent.constrained import ConstrainedGenerate

        generate = ConstrainedGenerate.of(llm)
    if generate is None:
        raise BadInputError("the 'llm' extractor needs a generate(prompt) -> text callable or an llm")
    return LLMExtractor(generate)
