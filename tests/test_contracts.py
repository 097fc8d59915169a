"""Contract tests: every LanguageModel (the real CausalLM and each fake) and every Extractor keeps the promises its callers rely on."""
from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BadInputError
from agent.extraction.extract import build_extractor
from agent.extraction.llm_extractor import LLMExtractor
from agent.extraction.patterns import PatternExtractor
from agent.extraction.triple import ExtractionContext, Extractor, Triple
from agent.generation.fakes import EchoLLM
from agent.generation.model import (CandidateSampler, Capabilities, FusableModel, GenerationStats, LanguageModel,
                                    Message, TransformersModel, require)
from agent.pipeline.candidates import generate_candidates
from agent.types import Candidate
from fakes_llm import ScriptedLLM

ROOT = Path(__file__).resolve().parent.parent
FACTS = ["Sam lives in Paris.", "Sam works at Acme.", "Sam has a dog named Rex."]
MESSAGES = [Message("system", "Answer the user's question in one short sentence using the facts about them."),
            Message("user", "Facts about me (I am Sam):\n" + "\n".join(f"[{i}] {f}" for i, f in enumerate(FACTS, 1))
                    + "\n\nWhere does Sam live?")]
LATER = MESSAGES + [Message("assistant", "Sam lives in Paris."), Message("user", "And where does Sam work?")]


# --------------------------------------------------------------------------- the implementations


def _bench(name: str, cls: str):
    """A stand-in model class of a bench script (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, cls)


def scripted() -> ScriptedLLM:
    llm = ScriptedLLM(default="Sam lives in Paris, with his dog Rex.")
    llm.add_candidates("Sam lives in Paris.", "Paris.", "In Paris, France.")
    return llm


def world():
    from test_grounding import WorldLLM

    return WorldLLM()


def recording():
    from test_profile import RecordingLLM

    llm = RecordingLLM(default="Sam lives in Paris, with his dog Rex.")
    llm.add_candidates("Sam lives in Paris.", "Paris.", "In Paris, France.")
    return llm


def slow():
    from test_agent import SlowLLM

    llm = SlowLLM(default="Sam lives in Paris.")
    llm.add_candidates("Sam lives in Paris.", "Paris.", "In Paris, France.")
    return llm


@dataclass(frozen=True)
class Fake:
    """A fake model and the reply it must give to MESSAGES (None: not fixed by its script)."""

    make: Callable[[], object]
    reply: str | None = None


FAKES = {
    "echo": Fake(EchoLLM, "Sam lives in Paris."),
    "scripted": Fake(scripted, "Sam lives in Paris, with his dog Rex."),
    "scripted-recording": Fake(recording, "Sam lives in Paris, with his dog Rex."),
    "scripted-slow": Fake(slow, "Sam lives in Paris."),
    "world": Fake(world, "Sam lives in Paris, Croatia."),
    "bench-stub": Fake(lambda: _bench("agent_bench", "StubLLM")(), "ok"),
    "bench-no-llm": Fake(lambda: _bench("memory_eval", "NoLLM")(), ""),
}


@pytest.fixture(scope="module")
def tiny_causal(tmp_path_factory):
    """A CausalLM on a 2-layer random Llama (fp32): the real class, fast enough for the fast suite."""
    from agent.generation.llm import CausalLM, LLMConfig
    from tiny_models import byte_tokenizer, save_tiny_llama

    path = save_tiny_llama(byte_tokenizer(), tmp_path_factory.mktemp("tiny"), max_positions=2048)
    return CausalLM(LLMConfig(model=str(path), device="cpu", bf16=False, max_new_tokens=12))


@pytest.fixture(scope="module")
def packaged_causal(model_cache):
    """The packaged SmolLM2-135M (bf16, one torch thread: a shared CPU), loaded once for this module."""
    torch = pytest.importorskip("torch")
    from agent.generation.llm import CausalLM, LLMConfig

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield CausalLM(LLMConfig(device="cpu", max_new_tokens=16, cache_dir=str(model_cache)))
    torch.set_num_threads(before)


MODELS = [*FAKES, "causal-tiny", pytest.param("causal-packaged", marks=pytest.mark.integration)]


@pytest.fixture(params=MODELS)
def case(request) -> tuple[LanguageModel, str | None]:
    """(a fresh fake or a shared CausalLM with its cache reset, the reply it must give to MESSAGES or None)."""
    if request.param in FAKES:
        fake = FAKES[request.param]
        return fake.make(), fake.reply
    llm = request.getfixturevalue("tiny_causal" if request.param == "causal-tiny" else "packaged_causal")
    llm.reset_cache()
    return llm, None


def say(llm, messages=MESSAGES, max_new_tokens=None, **kw) -> tuple[list[str], str]:
    pieces = list(llm.stream(messages, max_new_tokens=max_new_tokens, **kw))
    return pieces, "".join(pieces)


# --------------------------------------------------------------------------- LanguageModel


def test_is_a_language_model_with_an_id_and_typed_capabilities(case):
    llm, _ = case
    assert isinstance(llm, LanguageModel)
    assert isinstance(llm.id, str) and llm.id.strip()
    assert type(llm.capabilities) is Capabilities
    with pytest.raises(Exception):  # a frozen record: nobody can grant a model an ability at run time
        llm.capabilities.fusion = True
    assert isinstance(llm.last_stats, GenerationStats)


def test_capabilities_are_honest(case):
    """A flag is set exactly when the model has the members that flag promises."""
    llm, _ = case
    caps = llm.capabilities
    assert caps.sampling == isinstance(llm, CandidateSampler)
    assert caps.fusion == isinstance(llm, FusableModel)
    assert caps.transformers == isinstance(llm, TransformersModel)


def test_streamed_pieces_make_up_the_reply(case):
    llm, expected = case
    pieces, reply = say(llm)
    assert pieces and all(isinstance(p, str) for p in pieces)
    if expected is not None:
        assert reply == expected
    if reply:
        assert llm.last_stats.new_tokens >= 1  # the stats describe this call
    llm.reset_cache()
    assert say(llm)[1] == reply  # greedy: the same prompt gives the same reply


def test_max_new_tokens_is_honoured(case):
    llm, _ = case
    full = say(llm)[1]
    llm.reset_cache()
    short = say(llm, max_new_tokens=2)[1]
    assert llm.last_stats.new_tokens <= 2
    assert full.startswith(short)  # the same reply, cut
    if not llm.capabilities.transformers:  # the fakes count a word as a token
        assert len(short.split()) <= 2


def test_complete_returns_text(case):
    llm, _ = case
    assert isinstance(llm.complete("The capital of France is", max_new_tokens=4), str)


def test_prefix_cache_is_reused_only_when_declared_and_reset_forgets_it(case):
    llm, _ = case
    say(llm)
    say(llm, LATER)
    reused = llm.last_stats.reused_tokens
    if llm.capabilities.prefix_cache:
        assert 0 < reused < llm.last_stats.prompt_tokens
        llm.reset_cache()
        say(llm, LATER)
        assert llm.last_stats.reused_tokens == 0
    else:
        assert reused == 0
        llm.reset_cache()  # still there: a no-op without a cache


def test_candidate_sampling_works_when_declared_and_is_refused_by_name_otherwise(case):
    llm, _ = case
    ask = dict(n=3, temperature=1.0, top_p=0.95, max_new_tokens=8, max_sentences=0, seed=7)
    if not llm.capabilities.sampling:
        with pytest.raises(BadInputError, match=f"'sampling'.*{llm.id!r}"):
            generate_candidates(llm, MESSAGES, **ask)
        return
    cands = generate_candidates(llm, MESSAGES, **ask)
    assert len(cands) == 3 and all(isinstance(c, Candidate) for c in cands)
    assert cands[0].greedy and not any(c.greedy for c in cands[1:])
    assert len({" ".join(c.text.split()).casefold() for c in cands}) == 3  # distinct
    assert all(math.isfinite(c.logprob) and c.logprob <= 0 and c.tokens >= 0 for c in cands)
    with pytest.raises(BadInputError, match="n=0"):
        generate_candidates(llm, MESSAGES, **{**ask, "n": 0})


def test_fusion_reads_knowledge_when_declared_and_detaches_cleanly(case):
    llm, _ = case
    if not llm.capabilities.fusion:
        with pytest.raises(BadInputError, match="'fusion'"):
            require(llm, "fusion", "fusion adapters")
        return
    import torch

    from agent.fusion.adapter import FusionConfig, KnowledgeTokens, build_adapter

    e = 32
    adapter = build_adapter(FusionConfig(base_model=llm.id, hidden_size=llm.hidden_size, embedder="fake", embed_dim=e,
                                         layers=(0, 1), heads=2, head_dim=8, value_hidden=16, copy_tokens=0))
    with torch.no_grad():
        for f in adapter.fused.values():
            f.gate.fill_(2.0)
    rng = np.random.default_rng(0)
    tokens = KnowledgeTokens(rng.normal(size=(3, e)).astype(np.float32), rng.normal(size=(3, e)).astype(np.float32),
                             rng.normal(size=e).astype(np.float32))
    base = say(llm)[1]
    llm.reset_cache()
    fused = llm.attach_fusion(adapter)
    try:
        assert llm.fusion is fused
        assert llm.fusion_start(MESSAGES) > 0  # the system prompt is encoded as without fusion
        pieces, _ = say(llm, knowledge=tokens)
        assert all(isinstance(p, str) for p in pieces)
        assert fused.last_attention  # the fused layers read the knowledge tokens
    finally:
        llm.detach_fusion()
        llm.reset_cache()
    assert llm.fusion is None
    assert say(llm)[1] == base  # detached: the base model again


def test_transformers_members_work_when_declared(case):
    llm, _ = case
    if not llm.capabilities.transformers:
        with pytest.raises(BadInputError, match="'transformers'"):
            require(llm, "transformers", "LoRA adapters")
        return
    from agent.generation.greedy import greedy_batch

    assert llm.eos_token_ids and all(isinstance(t, int) for t in llm.eos_token_ids)
    assert 1.0 <= llm.repetition_penalty <= 2.0
    assert llm.lock.acquire(blocking=False)  # free between calls: no lock is held across a yield
    llm.lock.release()
    reply = say(llm, max_new_tokens=6)[1]
    # batched greedy decoding (LoRA measurements) takes the lock, stops at the same end tokens and
    # applies the same penalty: it decodes what the chat streams
    assert greedy_batch(llm, [llm.chat_ids(MESSAGES)], 6) == [reply.strip()]


def test_an_unknown_capability_is_refused_naming_the_valid_ones():
    with pytest.raises(BadInputError, match="'telepathy'.*fusion, sampling, prefix_cache, transformers"):
        Capabilities().has("telepathy")


# --------------------------------------------------------------------------- Extractor

CONTEXT = ExtractionContext("sam", references={"she": "mary"})


def scripted_generate(prompt: str) -> str:
    """An LLM's answer to the extraction prompt: first-person facts as JSON, nothing for anything else."""
    utterance = prompt.rsplit("Message:", 1)[-1]  # the message asked about, after the few-shot examples
    if "I live in Paris" in utterance:
        return '[{"subject": "I", "relation": "lives in", "object": "Paris", "negated": false}]'
    return "[]"


EXTRACTORS = {
    "patterns": lambda nlp: PatternExtractor(nlp),
    "patterns-built": lambda nlp: build_extractor("patterns", nlp=nlp),
    "llm-scripted": lambda nlp: LLMExtractor(scripted_generate),
    "llm-built": lambda nlp: build_extractor("llm", generate=scripted_generate),
}


@pytest.fixture(params=list(EXTRACTORS))
def extractor(request, nlp) -> Extractor:
    return EXTRACTORS[request.param](nlp)


def test_is_an_extractor(extractor):
    assert isinstance(extractor, Extractor)


def test_first_person_is_the_contexts_user(extractor, nlp):
    text = "I live in Paris."
    for doc in (None, nlp(text)):  # with or without the caller's parse
        found = extractor.extract(text, CONTEXT, doc=doc)
        assert isinstance(found, list) and all(isinstance(t, Triple) for t in found)
        assert [(t.subject, t.relation, t.object, t.negated) for t in found] == [("sam", "lives_in", "Paris", False)]


@pytest.mark.parametrize("text", ["", "   ", "Where do I live?", "Does Mary work at Acme?"])
def test_empty_text_and_questions_give_no_facts(extractor, text):
    assert extractor.extract(text, CONTEXT) == []


@pytest.mark.parametrize("bad", [42, None, b"I live in Paris."])
def test_a_non_string_is_refused_naming_its_type(extractor, bad):
    with pytest.raises(BadInputError, match=type(bad).__name__):
        extractor.extract(bad, CONTEXT)


def test_the_same_input_gives_the_same_triples(extractor):
    text = "I live in Paris."
    assert extractor.extract(text, CONTEXT) == extractor.extract(text, CONTEXT)
