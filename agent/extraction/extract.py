"""Fact extraction from one user utterance: the extractor kinds and the one place that builds them.

The pieces live in their own modules and are re-exported here, so callers need only this one:
``Triple``/``ExtractionContext``/``Extractor`` (agent.extraction.triple), ``PatternExtractor`` (agent.extraction.patterns,
no LLM) and ``LLMExtractor`` (agent.extraction.llm_extractor, JSON from a text-completion callable).
"""
from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import BadInputError
from agent.validation import check, within
from agent.extraction.llm_extractor import Generate, LLMExtractor, LLMExtractorConfig
from agent.extraction.patterns import PatternConfig, PatternExtractor
from agent.extraction.triple import ExtractionContext, Extractor, Lookup, Triple, dedupe, no_lookup

if TYPE_CHECKING:
    from agent.language.nlp import NLP

__all__ = [
    "ExtractionContext", "Extractor", "ExtractorKind", "Generate", "LLMExtractor", "LLMExtractorConfig",
    "BatchConfig", "Lookup", "PatternConfig", "PatternExtractor", "Triple", "build_extractor", "dedupe", "extract_many",
    "no_lookup",
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
    """The extractor of ``kind``; PATTERNS needs ``nlp``; LLM needs ``generate``, or ``llm``: an
    agent.generation.llm.CausalLM then decodes under the triple-JSON constraint (agent.extraction.constrained), any other
    language model is asked for its completion (``complete``)."""
    kind = ExtractorKind.parse(kind)
    if kind is ExtractorKind.PATTERNS:
        if nlp is None:
            raise BadInputError("the 'patterns' extractor needs a spaCy pipeline (nlp=load_nlp())")
        return PatternExtractor(nlp)
    if generate is None and llm is not None:
        if llm.capabilities.transformers:  # its transformers model and tokenizer are open: constrained JSON
            from agent.extraction.constrained import ConstrainedGenerate

            generate = ConstrainedGenerate.of(llm)
        else:  # any other LanguageModel (a fake, a remote one): its completion, validated strictly
            def generate(prompt: str) -> str:
                return llm.complete(prompt, max_new_tokens=160)
    if generate is None:
        raise BadInputError("the 'llm' extractor needs a generate(prompt) -> text callable or an llm")
    return LLMExtractor(generate)


@dataclass(frozen=True)
class BatchConfig:
    """How ``extract_many`` parses: spaCy's batched ``nlp.pipe``, optionally in forked worker processes."""

    # docs per nlp.pipe batch (and per task sent to a worker): the parser's matrix products amortise
    # over a batch; past ~64 short turns the gain is small (bench/extract_bench.py)
    batch_size: int = within(64, 1, 100_000)
    # worker processes that parse *and* extract (only triples come back, never docs); 1 works in this
    # process. More needs the "fork" start method (POSIX) and contexts that pickle (no KB lookup);
    # the agent keeps 1: forking a process that holds torch threads is not safe
    n_process: int = within(1, 1, 1024)

    def __post_init__(self) -> None:
        check(self)


def extract_many(extractor: Extractor, nlp: NLP, items: Iterable[tuple[str, ExtractionContext]],
                 config: BatchConfig | None = None) -> Iterator[list[Triple]]:
    """The facts of each (utterance, context) in ``items``, in order: the utterances are parsed in
    batches (``nlp.pipe``) and each parse is handed to ``extractor.extract``, so nothing is parsed twice."""
    config = config or BatchConfig()
    if config.n_process == 1:
        texts, contexts = itertools.tee(items)
        docs = nlp.pipe((text for text, _ in texts), batch_size=config.batch_size)
        for doc, (_, ctx) in zip(docs, contexts):
            yield extractor.extract(doc.text, ctx, doc=doc)
        return
    import multiprocessing

    global _WORKER
    _WORKER = (extractor, nlp, config.batch_size)  # inherited by the forked workers, never pickled
    chunks = _chunks(items, config.batch_size)
    with multiprocessing.get_context("fork").Pool(config.n_process) as pool:
        for found in pool.imap(_extract_chunk, chunks):
            yield from found
        pool.close()
        pool.join()
    _WORKER = None


_WORKER: tuple[Extractor, NLP, int] | None = None


def _chunks(items: Iterable[tuple[str, ExtractionContext]], size: int) -> Iterator[list[tuple[str, ExtractionContext]]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _extract_chunk(chunk: list[tuple[str, ExtractionContext]]) -> list[list[Triple]]:
    """In a worker: parse one chunk in one batch and extract from each parse."""
    extractor, nlp, batch_size = _WORKER
    docs = nlp.pipe([text for text, _ in chunk], batch_size=batch_size)
    return [extractor.extract(doc.text, ctx, doc=doc) for doc, (_, ctx) in zip(docs, chunk)]
