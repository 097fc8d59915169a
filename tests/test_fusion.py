"""Knowledge fusion: with the gate at zero or no knowledge tokens the model is exactly the base model;
with knowledge it changes; it attaches to Llama- and GPT-2-style models; adapters round-trip through
safetensors and refuse the wrong base model; synthetic data splits are disjoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.errors import BadInputError, ModelLoadError
from agent.fusion.adapter import FusedModel, FusionConfig, KnowledgeTokens, build_adapter
from agent.fusion.files import load_adapter, save_adapter
from agent.fusion.synth import RELATIONS, REFUSAL, Split, World, is_correct, is_refusal

E = 32  # embedder width of the fake knowledge vectors


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=64, n_layer=4, n_head=4, n_positions=128)).eval()


def adapter_for(model, layers=(1, 2), gate: float = 0.0):
    cfg = FusionConfig(base_model="tiny", hidden_size=64, embedder="fake", embed_dim=E, layers=layers, heads=2,
                       head_dim=8, value_hidden=16)
    a = build_adapter(cfg)
    with torch.no_grad():
        for f in a.fused.values():
            f.gate.fill_(gate)
            torch.nn.init.normal_(f.null_k, std=0.5)
            torch.nn.init.normal_(f.o.weight, std=0.5)
    return a


def knowledge(n=5, start=0, seed=0) -> KnowledgeTokens:
    rng = np.random.default_rng(seed)
    return KnowledgeTokens(rng.normal(size=(n, E)).astype(np.float32), rng.normal(size=(n, E)).astype(np.float32),
                           rng.normal(size=E).astype(np.float32), start=start)


IDS = torch.tensor([[5, 17, 42, 8, 99, 3, 61, 7, 12, 30]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_zero_gate_gives_exactly_the_base_models_logits(make):
    model = make()
    base = logits(model)
    fused = FusedModel(model, adapter_for(model, gate=0.0))
    with fused.knowledge(knowledge()):
        got = logits(model)
    assert (got - base).abs().max().item() <= 1e-5


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_no_knowledge_tokens_gives_the_base_model_even_with_an_open_gate(make):
    model = make()
    base = logits(model)
    fused = FusedModel(model, adapter_for(model, gate=2.0))
    empty = KnowledgeTokens(np.zeros((0, E), np.float32), np.zeros((0, E), np.float32), None)
    with fused.knowledge(empty):
        assert (logits(model) - base).abs().max().item() <= 1e-5
    with fused.knowledge(None):
        assert (logits(model) - base).abs().max().item() <= 1e-5
    assert (logits(model) - base).abs().max().item() <= 1e-5  # outside the block


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_knowledge_changes_the_output_and_detach_restores_the_model(make):
    model = make()
    base = logits(model)
    fused = FusedModel(model, adapter_for(model, gate=2.0))
    with fused.knowledge(knowledge()):
        a = logits(model)
    with fused.knowledge(knowledge(seed=1)):
        b = logits(model)
    assert (a - base).abs().max().item() > 1e-3
    assert (a - b).abs().max().item() > 1e-3  # different facts, different output
    fused.detach()
    with fused.knowledge(knowledge()):
        assert (logits(model) - base).abs().max().item() == 0.0


def test_positions_before_start_are_not_fused():
    model = tiny_llama()
    base = logits(model)
    fused = FusedModel(model, adapter_for(model, gate=2.0))
    with fused.knowledge(knowledge(start=6)):
        got = logits(model)
    assert (got[:, :6] - base[:, :6]).abs().max().item() <= 1e-5  # causal: earlier positions untouched
    assert (got[:, 6:] - base[:, 6:]).abs().max().item() > 1e-3


def test_fusion_with_a_kv_cache_matches_one_full_forward():
    from transformers import DynamicCache

    from agent.generation.llm import cache_arg

    model = tiny_llama()
    fused = FusedModel(model, adapter_for(model, gate=1.0))
    tokens = knowledge(start=3)
    kv = cache_arg(model)  # `cache` on transformers 5.24+: fusion reads positions from it too
    with fused.knowledge(tokens), torch.no_grad():
        full = model(input_ids=IDS).logits
        cache = DynamicCache()
        first = model(input_ids=IDS[:, :7], use_cache=True, **{kv: cache}).logits
        rest = [model(input_ids=IDS[:, i:i + 1], use_cache=True, **{kv: cache}).logits for i in range(7, 10)]
    step = torch.cat([first] + rest, 1)
    assert (step - full).abs().max().item() <= 1e-4


def test_cost_is_linear_no_fact_to_fact_attention():
    """Each fact's influence is independent of the other facts' contents except through the shared softmax:
    permuting the facts does not change the output (knowledge tokens do not attend to each other)."""
    model = tiny_llama()
    fused = FusedModel(model, adapter_for(model, gate=1.0))
    k = knowledge(n=6)
    perm = np.random.default_rng(3).permutation(6)
    shuffled = KnowledgeTokens(k.keys[perm], k.values[perm], k.query)
    with fused.knowledge(k):
        a = logits(model)
    with fused.knowledge(shuffled):
        b = logits(model)
    assert (a - b).abs().max().item() <= 1e-5


def test_only_the_adapter_receives_gradients():
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    adapter = adapter_for(model, gate=0.0)
    fused = FusedModel(model, adapter)
    fused.adapter.train()
    tokens = knowledge()
    # the hook runs under no_grad (inference); call the adapter directly as training does
    h = torch.randn(1, 4, 64)
    keys = torch.as_tensor(tokens.keys)[None]
    feats = adapter.value_mlp(torch.as_tensor(tokens.values)[None])
    out, _ = adapter.apply(1, h, keys, feats, torch.as_tensor(tokens.query)[None], torch.ones(1, 5, dtype=torch.bool))
    out.sum().backward()
    gate = adapter.fused["1"].gate
    assert gate.grad is not None and gate.grad.abs().item() > 0  # a closed gate still learns to open
    assert all(p.grad is None for p in model.parameters())


def test_adapter_round_trip_and_wrong_base_model(tmp_path):
    model = tiny_llama()
    a = adapter_for(model, gate=1.5)
    save_adapter(a, tmp_path / "ad", {"note": "test"})
    b = load_adapter(tmp_path / "ad", base_model="tiny", embedder="fake")
    f1 = FusedModel(model, a)
    with f1.knowledge(knowledge()):
        x = logits(model)
    f1.detach()
    f2 = FusedModel(model, b)
    with f2.knowledge(knowledge()):
        y = logits(model)
    assert (x - y).abs().max().item() < 5e-2  # weights are stored in fp16
    with pytest.raises(ModelLoadError, match="trained for 'tiny'.*'other-model'"):
        load_adapter(tmp_path / "ad", base_model="other-model")
    with pytest.raises(ModelLoadError, match="reads 'fake'"):
        load_adapter(tmp_path / "ad", embedder="minilm")
    with pytest.raises(ModelLoadError, match="fusion.json is missing"):
        load_adapter(tmp_path)


def test_adapter_refuses_a_model_of_another_shape():
    model = tiny_llama()
    cfg = FusionConfig(base_model="tiny", hidden_size=128, embedder="fake", embed_dim=E, layers=(1,))
    with pytest.raises(ModelLoadError, match="hidden size 128"):
        FusedModel(model, build_adapter(cfg))
    cfg = FusionConfig(base_model="tiny", hidden_size=64, embedder="fake", embed_dim=E, layers=(9,))
    with pytest.raises(ModelLoadError, match="has 4"):
        FusedModel(model, build_adapter(cfg))


@pytest.mark.parametrize("kwargs, words", [
    ({"layers": ()}, "layers"),
    ({"layers": (1, 1)}, "distinct"),
    ({"heads": 0}, "heads=0"),
])
def test_fusion_config_validation(kwargs, words):
    with pytest.raises(BadInputError, match=words):
        FusionConfig(**({"base_model": "m", "hidden_size": 8, "embedder": "e"} | kwargs))


def test_knowledge_of_the_wrong_width_is_a_clear_error():
    model = tiny_llama()
    fused = FusedModel(model, adapter_for(model, gate=1.0))
    bad = KnowledgeTokens(np.zeros((2, 7), np.float32), np.zeros((2, 7), np.float32), None)
    with pytest.raises(BadInputError, match="7 dimensions"):
        with fused.knowledge(bad):
            pass


# --------------------------------------------------------------------------- synthetic data


def test_synthetic_world_has_disjoint_splits_and_enough_relations():
    assert len(RELATIONS) >= 20
    w = World(0)
    train = w.examples(400, Split.TRAIN, (1, 10), seed=0)
    held = w.examples(400, Split.HELDOUT, 10, seed=1)
    unseen = w.examples(200, Split.UNSEEN_VALUES, 10, seed=2)
    train_people = {f.subject for e in train for f in e.facts}
    held_people = {f.subject for e in held for f in e.facts}
    assert not train_people & held_people
    train_first = {p.split()[0] for p in train_people}
    assert not train_first & {p.split()[0] for p in held_people}
    train_values = {f.value for e in train for f in e.facts}
    assert not train_values & {e.answer for e in unseen if e.answerable}
    train_questions = {e.question.replace(e.question, "") for e in train}
    assert train_questions is not None
    for spec in RELATIONS:
        assert not set(spec.train_questions) & set(spec.heldout_questions)
    assert any(not e.answerable for e in held) and any(e.answerable for e in held)
    for e in held:
        subject_facts = [f for f in e.facts if (f.relation == e.relation and f.subject in e.question)]
        assert len(subject_facts) == (1 if e.answerable else 0)
        assert (e.answer == REFUSAL) == (not e.answerable)


def test_exact_match_scoring():
    w = World(0)
    e = next(x for x in w.examples(50, Split.HELDOUT, 3, seed=5) if x.answerable and " " not in x.answer)
    assert is_correct(e.answer, e)
    assert is_correct(f"The answer is {e.answer}.", e)
    assert not is_correct("I don't know.", e)
    assert not is_correct(" ".join(["word"] * 20) + " " + e.answer, e)  # a long list does not count
    u = next(x for x in w.examples(50, Split.HELDOUT, 3, seed=5) if not x.answerable)
    assert is_correct("I don't know.", u) and is_refusal("I do not know that.")
    assert not is_correct("Paris", u)


# --------------------------------------------------------------------------- training (real model)


@pytest.mark.integration
def test_training_checkpoints_resumes_and_writes_a_loadable_adapter(tmp_path):
    from agent.fusion.trainer import Trainer, TrainConfig
    from kb.embeddings import HashEmbedder

    out = tmp_path / "run"
    small = dict(out_dir=str(out), examples=24, batch_size=8, checkpoint_every=2, max_distractors=4,
                 layers=(26, 28), value_hidden=32, heads=2, head_dim=16)
    said: list[str] = []
    first = Trainer(TrainConfig(epochs=1, **small), embedder=HashEmbedder(384), say=said.append)
    first.train()  # 3 steps
    assert (out / "checkpoint" / "state.safetensors").exists() and (out / "loss.png").exists()
    assert (out / "adapter" / "fusion.safetensors").exists()
    with pytest.raises(BadInputError, match="different settings"):
        Trainer(TrainConfig(epochs=1, **(small | {"lr": 0.01})), embedder=HashEmbedder(384)).train()
    second = Trainer(TrainConfig(epochs=2, **small), embedder=HashEmbedder(384), llm=first.llm, say=said.append)
    second.train()
    assert any("resuming from step 3" in s for s in said)
    import json

    assert len(json.loads((out / "losses.json").read_text())) == 6
    adapter = load_adapter(out / "adapter", base_model=first.llm.id)
    assert adapter.config.layers == (26, 28)
    gates = [float(f.gate) for f in adapter.fused.values()]
    assert any(g != 0.0 for g in gates)  # training moved the gates off zero


@pytest.mark.integration
def test_fused_generation_is_the_same_with_and_without_the_kv_cache():
    from agent.fusion.files import packaged_adapter_dir
    from agent.fusion.knowledge import KnowledgeEncoder, qa_messages
    from agent.generation.llm import CausalLM, LLMConfig, Message
    from kb.embeddings import SentenceTransformerEmbedder

    llm = CausalLM(LLMConfig(bf16=False))
    emb = SentenceTransformerEmbedder()
    llm.attach_fusion(load_adapter(packaged_adapter_dir(), base_model=llm.id, embedder=emb.id))
    enc = KnowledgeEncoder(emb)
    facts = [("Talvin Morrow", "lives_in", "Lisbon"), ("Talvin Morrow", "occupation", "pilot")]
    msgs1 = qa_messages("Where does Talvin Morrow live?")
    tokens = enc.tokens(facts, msgs1[-1].content)
    first = "".join(llm.stream(msgs1, 12, knowledge=tokens))
    msgs2 = msgs1 + [Message("assistant", first), Message("user", "What is Talvin Morrow's job?")]
    tokens2 = enc.tokens(facts, msgs2[-1].content)
    cached = "".join(llm.stream(msgs2, 12, knowledge=tokens2))
    reused = llm.last_stats.reused_tokens
    llm.reset_cache()
    fresh = "".join(llm.stream(msgs2, 12, knowledge=tokens2))
    assert cached == fresh
    assert 0 < reused <= llm.fusion_start(msgs1)  # nothing computed with knowledge was reused
    assert "lisbon" in first.lower()


# --------------------------------------------------------------------------- the agent


def test_agent_without_a_fusable_model_answers_as_before_and_on_is_a_clear_error(kb):
    from fakes_llm import ScriptedLLM

    from agent.pipeline.loop import Agent
    from agent.language.nlp import load_nlp

    llm = ScriptedLLM(["You live in Lisbon."])
    agent = Agent(kb, llm, "sam", nlp=load_nlp())  # fusion auto: the scripted model cannot fuse
    assert not agent.fuser.enabled and "cannot take a fusion adapter" in agent.fuser.reason
    agent.chat("I live in Lisbon.")
    r = agent.chat("Where do I live?")
    assert r.fused == () and "Lisbon" in llm.last_user_message  # facts still cited as text
    with pytest.raises(BadInputError, match="cannot turn fusion on"):
        agent.fuser.set_enabled(True)
    with pytest.raises(ModelLoadError, match="fusion was asked for"):
        Agent(kb, llm, "sam", nlp=load_nlp(), fusion="on")
    with pytest.raises(BadInputError, match="'sometimes'.*auto"):
        Agent(kb, llm, "sam", nlp=load_nlp(), fusion="sometimes")


@pytest.mark.integration
def test_agent_fuses_facts_by_default_and_fusion_can_be_switched_off(tmp_path):
    from agent.pipeline.loop import Agent

    with Agent.open(tmp_path / "kb", user="sam") as agent:
        assert agent.fuser.enabled  # the packaged adapter matches the packaged model + embedder
        agent.chat("I live in Lisbon.")
        r = agent.chat("Where do I live?")
        assert r.fused and "Lisbon" in r.fused[0].text
        assert abs(sum(f.weight for f in r.fused) - 1.0) < 1.0  # shares of the attention mass
        agent.chat("My name is Sam.")  # the user id is "sam"; the fused value must read "Sam"
        tokens = agent.fuser.tokens(agent.kb.facts(user="sam"), "What is Sam's name?")
        assert "Sam" in tokens.value_texts and "sam" not in tokens.value_texts
        agent.fuser.set_enabled(False)
        assert agent.chat("Where do I live?").fused == ()
    with Agent.open(tmp_path / "kb", user="sam", fusion="off") as agent:
        assert not agent.fuser.enabled


def test_a_lora_adapter_and_fusion_work_together_and_come_off_independently():
    import warnings

    from peft import LoraConfig, get_peft_model

    model = tiny_llama()
    base = logits(model)
    fused = FusedModel(model, adapter_for(model, gate=2.0))
    with fused.knowledge(knowledge()):
        fusion_only = logits(model)
    torch.manual_seed(1)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question
        warnings.simplefilter("ignore", FutureWarning)
        lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                init_lora_weights=False))  # LoRA swapped in under the hooks
    with fused.knowledge(knowledge()):
        both = logits(model)
    fused.detach()
    lora_only = logits(model)
    assert min((both - x).abs().max().item() for x in (base, fusion_only, lora_only)) > 1e-3  # both act
    fused = FusedModel(model, fused.adapter)
    lora.unload()  # LoRA off, fusion still attached: exactly the fused base model
    with fused.knowledge(knowledge()):
        assert torch.equal(logits(model), fusion_only)
    fused.detach()
    assert torch.equal(logits(model), base)


CHAIN = [("sam", "sister", "mary"), ("mary", "married_to", "john"), ("john", "works_at", "google"),
         ("sam", "pet_name", "nala"), ("nala", "is_a", "cat")]


@pytest.mark.parametrize("question, answer, mid", [
    ("Who is Sam's sister married to?", "Mary", True),  # first hop of two: the text path answers
    ("Where does Mary's husband work?", "John.", True),
    ("What is Sam's daughter's dog called?", "Mary", True),
    ("Who is Sam's sister?", "Mary.", False),  # one hop: the fused answer stands
    ("What is Sam's sister's name?", "Mary", False),
    ("What is Sam's sister called?", "mary", False),
    ("Who is Mary married to?", "John", False),
    ("Where does John work?", "Google", False),  # end of the chain
    ("Who is Sam's sister married to?", "Rome", False),  # not a fact's entity at all
    ("What is Sam's cat's name?", "Nala", False),  # "Nala is a cat" describes Nala: no further hop
])
def test_a_fused_answer_in_the_middle_of_a_chain_goes_to_the_text_path(question, answer, mid):
    from agent.fusion.fuser import mid_chain

    assert mid_chain(answer, question, CHAIN) is mid
