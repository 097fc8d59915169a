"""Agent.close() gives the model back as it came: the fusion hooks it attached come off, the logits are
the base model's again (a tiny random Llama with a fresh fusion adapter; no packaged weights)."""
from __future__ import annotations

import pytest
import torch
from tiny_models import byte_tokenizer, save_tiny_llama

from agent.fusion.fuser import AgentFusionConfig
from agent.fusion.adapter import FusionConfig, FusionMode, build_adapter
from agent.fusion.files import save_adapter
from agent.generation.llm import CausalLM, LLMConfig, Message
from agent.pipeline.loop import Agent, AgentConfig
from kb import HashEmbedder, KBConfig, KnowledgeBase


def hooks(model) -> int:
    """Forward pre-hooks on the model and on every module inside it."""
    return sum(len(m._forward_pre_hooks) for m in model.modules())


def logits(llm: CausalLM) -> torch.Tensor:
    ids = torch.tensor([llm.chat_ids([Message("user", "Where does Sam live?")])])
    with torch.no_grad():
        return llm.model(input_ids=ids).logits.clone()


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> CausalLM:
    path = save_tiny_llama(byte_tokenizer(), tmp_path_factory.mktemp("tiny"), max_positions=2048)
    return CausalLM(LLMConfig(model=str(path), device="cpu", bf16=False, max_new_tokens=8))


def test_close_detaches_the_fusion_hooks_it_attached(tiny_lm, tmp_path, nlp):
    embedder = HashEmbedder(64)
    adapter = build_adapter(FusionConfig(base_model=tiny_lm.id, hidden_size=64, embedder=embedder.id, embed_dim=64,
                                         layers=(0, 1), heads=2, head_dim=8, value_hidden=16))
    directory = save_adapter(adapter, tmp_path / "fusion")
    base, before = logits(tiny_lm), hooks(tiny_lm.model)
    kb = KnowledgeBase.open(tmp_path / "kb", embedder=embedder, config=KBConfig(show_progress=False))
    config = AgentConfig(fusion=AgentFusionConfig(mode=FusionMode.ON, adapter=str(directory)))
    agent = Agent(kb, tiny_lm, "sam", config, nlp=nlp, owns_kb=True)
    assert agent.fuser.enabled and hooks(tiny_lm.model) > before  # attached: one hook per fused layer + one
    agent.chat("I live in Lisbon.")
    agent.chat("Where do I live?")
    agent.close()
    assert tiny_lm.fusion is None and hooks(tiny_lm.model) == before
    assert torch.equal(logits(tiny_lm), base)
    assert not agent.fuser.enabled
