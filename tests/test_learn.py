"""`kgrow learn`: question/answer pairs from facts, config validation, refusing too few facts without
writing anything, the versioned adapter store, and, on a tiny randomly initialised Llama model with
the real tokenizer, training, attaching and detaching adapters (detached = bit-identical logits)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from fakes_llm import ScriptedLLM
from tiny_models import byte_tokenizer, save_tiny_llama

from agent.lora.adapters import (
    AdapterMeta,
    AdapterStore,
    attach,
    fingerprint,
    has_lora,
    read_adapter,
)
from agent.cli import main
from agent.errors import BadInputError, ModelLoadError
from agent.lora.learn import LLAMA_PROJECTIONS, LearnConfig, learn, learnable_facts, plan
from agent.generation.llm import CausalLM, LLMConfig, Message, convert_packaged
from agent.lora.probes import ANCHORS, PROBES
from agent.lora.questions import contains, held_out_pairs, qa_pairs, questions_for
from kb import HashEmbedder, KBConfig, KnowledgeBase
from kb.errors import NotFoundError

# --------------------------------------------------------------------------- helpers


def make_kb(path: Path, facts: list[tuple[str, str, str, str]], user: str = "sam") -> Path:
    """A KB at ``path`` with (subject, relation, object, text) facts of ``user``."""
    with KnowledgeBase.open(path, embedder=HashEmbedder(64), config=KBConfig(show_progress=False)) as kb:
        kb.ensure_user(user)
        for s, r, o, t in facts:
            kb.add_fact(s, r, o, text=t, user=user)
    return path


THREE = [("sam", "lives_in", "Lisbon", "Sam lives in Lisbon."),
         ("sam", "works_at", "Siemens", "Sam works at Siemens."),
         ("sam", "sister", "Mary", "Sam's sister is Mary.")]


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and modification time, except SQLite's -wal/-shm
    companions, which any reader of a WAL-mode database creates (empty) without changing data."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def fake_meta(user: str = "sam", base: str = "base-a", print_: str = "fp-a") -> AdapterMeta:
    return AdapterMeta(format=1, version=0, user=user, base_model=base, base_fingerprint=print_,
                       created="2025-01-01T00:00:00+00:00", fact_ids=("f_1",), fact_texts=("Sam lives in Lisbon.",),
                       pairs=3, steps=10, train_seconds=1.0, closed_book_before=0.0, closed_book_after=1.0,
                       changed_fraction=0.0, probe_set_version=1, settings={})


def write_dummy(d: Path) -> None:
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"not really weights")


@pytest.fixture
def cli(capsys):
    def run(*args: str):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err
    return run


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("kwargs, words", [
    ({"rank": 0}, ["rank=0", "1..256"]),
    ({"epochs": 0}, ["epochs=0"]),
    ({"learning_rate": 0}, ["learning_rate=0"]),
    ({"dropout": 1.0}, ["dropout=1.0"]),
    ({"max_changed_fraction": 1.5}, ["max_changed_fraction=1.5", "0.0..1.0"]),
    ({"phrasings": 4}, ["phrasings=4", "1..3"]),
    ({"min_facts": 0}, ["min_facts=0"]),
    ({"replay": -1}, ["replay=-1", "0..10"]),
    ({"target_modules": ("qkv",)}, ["'qkv'", "q_proj", "down_proj"]),
    ({"target_modules": ()}, ["target_modules is empty", "q_proj"]),
    ({"target_modules": ("q_proj", "q_proj")}, ["twice"]),
])
def test_config_rejects_bad_values_naming_them(kwargs, words):
    with pytest.raises(BadInputError) as e:
        LearnConfig(**kwargs)
    for w in words:
        assert w in str(e.value)


def test_probes_are_never_trained_on():
    assert len(PROBES) == 30 and len(set(PROBES)) == 30
    assert not set(PROBES) & set(ANCHORS), "a replay anchor that is also a probe would hide locality damage"


def test_default_config_targets_llama_attention():
    c = LearnConfig()
    assert c.target_modules == ("q_proj", "v_proj") and set(c.target_modules) <= set(LLAMA_PROJECTIONS)
    assert 0 < c.max_changed_fraction < 1


# --------------------------------------------------------------------------- question/answer pairs


def test_pairs_ask_about_the_named_subject_and_answer_with_the_object(kb):
    kb.add_fact("sam", "lives_in", "lisbon", text="Sam lives in Lisbon.", user="sam")
    kb.add_fact("sam", "name", "sam", text="Sam's name is Sam.", user="sam")
    kb.add_fact("mary", "lives_in", "rome", text="Mary lives in Rome.", user="sam")
    pairs = qa_pairs(kb.facts(user="sam"), "sam", "Sam", phrasings=3)
    by_question = {p.question: p for p in pairs}
    assert by_question["Where does Sam live?"].answer == "Sam lives in Lisbon."
    assert by_question["Where does Sam live?"].primary
    assert by_question["Where does Mary live?"].expected == "Rome"
    assert not by_question["In which city does Sam live?"].primary
    assert len(pairs) == 6  # the name fact would give its answer away, so it gives no pair
    assert all(contains(p.answer, p.expected) for p in pairs)


def test_held_out_questions_are_phrasings_never_trained_on(kb):
    kb.add_fact("sam", "lives_in", "lisbon", text="Sam lives in Lisbon.", user="sam")
    kb.add_fact("sam", "works_at", "acme", text="Sam works at Acme.", user="sam")
    facts = kb.facts(user="sam")
    trained = {p.question for p in qa_pairs(facts, "sam", "Sam", phrasings=2)}
    held = held_out_pairs(facts, "sam", "Sam", phrasings=2)
    assert [p.question for p in held] == ["Where is Sam's home?", "Who is Sam's employer?"]
    assert not trained & {p.question for p in held} and not any(p.primary for p in held)
    assert held_out_pairs(facts, "sam", "Sam", phrasings=3) == []  # every phrasing is trained


def test_the_user_is_called_by_the_name_the_prompts_use(kb):
    kb.add_fact("me", "works_at", "acme", text="Me works at Acme.", user="me")
    [p] = qa_pairs(kb.facts(user="me"), "me", "Sam", phrasings=1)
    assert (p.question, p.answer, p.expected) == ("Where does Sam work?", "Sam works at Acme.", "Acme")


def test_relations_without_templates_get_person_or_noun_questions():
    assert questions_for("sister", "Sam")[0] == "Who is Sam's sister?"
    assert questions_for("favorite_color", "Sam")[0] == "What is Sam's favorite color?"
    assert questions_for("lives_in", "James")[2] == "Where is James' home?"


def test_closed_book_answers_match_whole_words_only():
    assert contains("She lives in Rome, Italy.", "rome")
    assert not contains("Romeo lives in Verona.", "Rome")
    assert contains("Sam is 34 years old.", "34") and not contains("Sam is 345.", "34")


def test_learnable_facts_are_the_users_own_and_shared_ones_they_stated(kb):
    kb.add_fact("sam", "lives_in", "lisbon", user="sam")
    kb.add_fact("bob", "lives_in", "oslo", user="bob")
    kb.add_fact("earth", "shape", "round", user="sam", shared=True)
    kb.add_fact("moon", "shape", "round", user="bob", shared=True)
    got = {(f.subject, f.object) for f in learnable_facts(kb, "sam")}
    assert got == {("sam", "lisbon"), ("earth", "round")}


# --------------------------------------------------------------------------- too few facts, bad input


def test_too_few_facts_is_refused_naming_the_numbers_and_nothing_is_written(tmp_path, cli):
    kbdir = make_kb(tmp_path / "kb", THREE[:2])
    before = snapshot(kbdir)
    code, out, err = cli("learn", "--kb", str(kbdir), "--user", "sam")
    assert code == 2 and out == ""
    assert "2 learnable fact(s)" in err and "at least 3" in err
    assert snapshot(kbdir) == before and not (kbdir / "adapters").exists()


def test_plan_counts_only_facts_that_give_questions(tmp_path):
    kbdir = make_kb(tmp_path / "kb", THREE[:2] + [("sam", "name", "sam", "Sam's name is Sam.")])
    with KnowledgeBase.open(kbdir, read_only=True) as kb:
        with pytest.raises(BadInputError) as e:
            plan(kb, "sam", LearnConfig())
        assert "2 learnable fact(s) (1 more only restate" in str(e.value)
        assert len(plan(kb, "sam", LearnConfig(min_facts=2)).facts) == 2


@pytest.mark.parametrize("args, code, words", [
    (["--user", "nobody"], 3, ["unknown user 'nobody'"]),
    (["--max-changed", "2"], 2, ["'2'", "fraction from 0 to 1"]),
    (["--targets", "attn"], 2, ["'attn'", "q_proj"]),
    (["--phrasings", "9"], 2, ["phrasings=9", "1..3"]),
    (["--list", "--epochs", "3"], 2, ["--list takes only", "--epochs"]),
    (["--remove", "v7"], 3, ["no adapter v7"]),
    (["--remove", "seven"], 2, ["'seven'", "latest or vN"]),
])
def test_cli_bad_input_is_one_clear_error(tmp_path, cli, args, code, words):
    kbdir = make_kb(tmp_path / "kb", THREE)
    before = snapshot(kbdir)
    got, out, err = cli("learn", "--kb", str(kbdir), *args)
    assert got == code, err
    assert out == ""  # one error line on stderr, nothing on stdout
    for w in words:
        assert w in err
    assert snapshot(kbdir) == before


def test_learn_on_a_missing_kb_does_not_create_it(tmp_path, cli):
    code, _, err = cli("learn", "--kb", str(tmp_path / "nothing"), "--user", "sam")
    assert code == 3 and "no knowledge base" in err
    assert not (tmp_path / "nothing").exists()


# --------------------------------------------------------------------------- the store


def test_store_versions_list_latest_and_remove(tmp_path, cli):
    store = AdapterStore(tmp_path / "kb")
    assert store.list("sam") == []
    v1 = store.add(fake_meta(), write_dummy)
    v2 = store.add(fake_meta(), write_dummy)
    store.add(fake_meta(user="bob"), write_dummy)
    assert (v1.name, v2.name) == ("v1", "v2")
    assert [a.name for a in store.list("sam")] == ["v1", "v2"]
    assert store.get("sam", "latest").path == v2.path == tmp_path / "kb" / "adapters" / "sam" / "v2"
    assert read_adapter(v1.path).meta == v1.meta
    assert not list((tmp_path / "kb" / "adapters" / "sam").glob(".tmp*"))

    code, out, _ = cli("learn", "--kb", str(tmp_path / "kb"), "--user", "sam", "--list", "--json")
    assert code == 0 and [json.loads(line)["name"] for line in out.splitlines()] == ["v1", "v2"]
    code, out, _ = cli("learn", "--kb", str(tmp_path / "kb"), "--user", "sam", "--remove", "v1")
    assert code == 0 and "removed adapter v1 of sam" in out
    assert [a.name for a in store.list("sam")] == ["v2"] and not v1.path.exists()
    assert store.add(fake_meta(), write_dummy).name == "v3"
    store.remove("sam", "latest")  # v3 gone: the next one is v4, never a second, different v3
    assert store.add(fake_meta(), write_dummy).name == "v4"
    with pytest.raises(NotFoundError) as e:
        store.get("sam", "v1")
    assert "no adapter v1" in str(e.value) and "v2, v4" in str(e.value)
    assert [a.name for a in store.list("bob")] == ["v1"]  # other users' adapters are untouched


def test_store_resolves_a_path_and_refuses_other_directories(tmp_path):
    store = AdapterStore(tmp_path / "kb")
    a = store.add(fake_meta(), write_dummy)
    assert store.resolve(str(a.path), "anyone").meta.user == "sam"
    with pytest.raises(NotFoundError) as e:
        store.resolve(str(tmp_path), "sam")
    assert "not a kgrow adapter directory" in str(e.value)
    with pytest.raises(NotFoundError) as e:
        store.resolve("latest", "bob")
    assert "no adapters" in str(e.value) and "kgrow learn --user bob" in str(e.value)


def test_a_failed_weight_write_leaves_no_version(tmp_path):
    store = AdapterStore(tmp_path / "kb")

    def broken(d: Path) -> None:
        write_dummy(d)
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.add(fake_meta(), broken)
    assert store.list("sam") == [] and not list(store.user_dir("sam").iterdir())


def test_unknown_metadata_format_is_refused(tmp_path):
    store = AdapterStore(tmp_path / "kb")
    a = store.add(fake_meta(), write_dummy)
    meta = json.loads((a.path / "kgrow-adapter.json").read_text())
    (a.path / "kgrow-adapter.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ModelLoadError) as e:
        store.list("sam")
    assert "format 99" in str(e.value)


# --------------------------------------------------------------------------- a tiny real model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny Llama on the byte-level tokenizer (a byte per token: prompts are ~4x longer)."""
    return save_tiny_llama(byte_tokenizer(), tmp_path_factory.mktemp("tiny-llama"), max_positions=4096)


@pytest.fixture(scope="session")
def tiny_smollm(model_cache, tmp_path_factory) -> Path:
    """The tiny Llama on SmolLM2's own tokenizer and chat template (converts the packaged model)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(convert_packaged(LLMConfig(cache_dir=str(model_cache))))
    return save_tiny_llama(tok, tmp_path_factory.mktemp("tiny-smollm"), max_positions=512)


def load_tiny(path: Path) -> CausalLM:
    return CausalLM(LLMConfig(model=str(path), device="cpu", bf16=False, max_new_tokens=24))


def logits(llm: CausalLM) -> torch.Tensor:
    ids = torch.tensor([llm.chat_ids([Message("user", "Where does Sam live?")])])
    with torch.no_grad():
        return llm.model(input_ids=ids).logits.clone()


def random_adapter(llm: CausalLM, store: AdapterStore, user: str = "sam"):
    """A stored adapter with non-zero LoRA weights (peft's random init of both matrices) for ``llm``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(llm.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False, task_type="CAUSAL_LM"))
    meta = fake_meta(user, base=llm.id, print_=fingerprint(llm.model))
    try:
        return store.add(meta, lambda d: peft_model.save_pretrained(str(d)))
    finally:
        peft_model.unload()
        vars(llm.model).pop("peft_config", None)


def test_detach_restores_bit_identical_logits(tiny_model, tmp_path):
    llm = load_tiny(tiny_model)
    model, layers = llm.model, list(llm.model.model.layers)
    base = logits(llm)
    adapter = random_adapter(llm, AdapterStore(tmp_path / "kb"))
    assert torch.equal(logits(llm), base) and not has_lora(model)

    handle = attach(llm, adapter)
    with_adapter = logits(llm)
    assert not torch.equal(with_adapter, base)
    # the model object and its decoder layers are the same objects (hooks on them keep working)
    assert llm.model is model and list(llm.model.model.layers) == layers and has_lora(model)
    handle.off()
    assert torch.equal(logits(llm), base) and not has_lora(model)
    handle.on()
    assert torch.equal(logits(llm), with_adapter)
    with pytest.raises(BadInputError):
        attach(llm, adapter)  # one adapter at a time
    handle.off()
    assert torch.equal(logits(llm), base)


def test_an_adapter_answers_only_for_its_own_user(tiny_model, tmp_path):
    from agent.pipeline.loop import Agent

    llm = load_tiny(tiny_model)
    base = logits(llm)
    kbdir = make_kb(tmp_path / "kb", THREE)
    adapter = random_adapter(llm, AdapterStore(kbdir))  # sam's
    agent = Agent.open(kbdir, user="sam", llm=llm, embedder=HashEmbedder(64), adapter="latest")
    try:
        assert agent.adapter.active
        with_adapter = logits(llm)
        agent.switch_user("bob")  # bob must not get answers from weights trained on sam's facts
        assert not agent.adapter.active and torch.equal(logits(llm), base)
        with pytest.raises(BadInputError) as e:
            agent.adapter.on()
        assert "'sam'" in str(e.value) and "'bob'" in str(e.value)
        agent.switch_user("sam")
        assert agent.adapter.active and torch.equal(logits(llm), with_adapter)
        agent.adapter.off()  # turned off by sam: it stays off across a switch and back
        agent.switch_user("bob")
        agent.switch_user("sam")
        assert not agent.adapter.active
    finally:
        agent.close()
    assert torch.equal(logits(llm), base)
    with pytest.raises(BadInputError) as e:  # sam's adapter given by path to bob's chat
        Agent.open(kbdir, user="bob", llm=llm, embedder=HashEmbedder(64), adapter=str(adapter.path))
    assert "'sam'" in str(e.value) and "'bob'" in str(e.value)


def test_an_adapter_for_another_base_model_is_refused_naming_both(tiny_model, tmp_path):
    llm = load_tiny(tiny_model)
    adapter = random_adapter(llm, AdapterStore(tmp_path / "kb"))
    other = load_tiny(tiny_model)
    with torch.no_grad():
        other.model.model.embed_tokens.weight[0, 0] += 1.0  # another model under the same name
    with pytest.raises(ModelLoadError) as e:
        attach(other, adapter)
    assert fingerprint(llm.model) in str(e.value) and fingerprint(other.model) in str(e.value)
    assert not has_lora(other.model)


def test_a_rejected_adapter_is_not_stored_and_the_model_is_left_as_it_was(tiny_model, tmp_path):
    kbdir = make_kb(tmp_path / "kb", THREE)
    llm = load_tiny(tiny_model)
    base = logits(llm)
    config = LearnConfig(epochs=1, learning_rate=1e-6, phrasings=1)
    with KnowledgeBase.open(kbdir, read_only=True) as kb:
        the_plan = plan(kb, "sam", config)
    store = AdapterStore(kbdir)
    report = learn(the_plan, llm, config, store, probes=("What is 7 plus 5?", "Hello!"))
    assert not report.accepted and "rejected" in report.reason
    assert report.closed_book_after <= report.closed_book_before
    assert report.adapter_version is None and store.list("sam") == []
    assert torch.equal(logits(llm), base) and not has_lora(llm.model)
    assert all(p.requires_grad for p in llm.model.parameters())  # as loaded


@pytest.mark.integration  # converts the packaged model for its tokenizer, then trains 60 epochs (~80 s)
def test_kgrow_learn_end_to_end_then_chat_with_the_adapter(tiny_smollm, tmp_path, cli):
    from agent.pipeline.loop import Agent

    kbdir = make_kb(tmp_path / "kb", THREE)
    # a random 2-layer model needs every projection and many steps to memorise anything, and its
    # "own answers" are noise, so there is nothing to replay; the probes change freely (limit 1)
    everything = ",".join(LLAMA_PROJECTIONS)
    code, out, err = cli("learn", "--kb", str(kbdir), "--user", "sam", "--model", str(tiny_smollm), "--device", "cpu",
                         "--epochs", "60", "--lr", "0.05", "--phrasings", "1", "--batch-size", "1",
                         "--targets", everything, "--replay", "0", "--max-changed", "1", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["accepted"] and report["adapter_version"] == 1
    assert report["closed_book_after"] > report["closed_book_before"]
    assert report["probes"] == 30 and 0 <= report["changed_fraction"] <= 1
    # trained on phrasing 1 only, so phrasing 2 of each fact is measured as held out
    assert len(report["held_out"]) == len(report["answers"]) and report["held_out_after"] is not None
    [stored] = AdapterStore(kbdir).list("sam")
    assert stored.meta.closed_book_after == report["closed_book_after"]
    assert (stored.path / "adapter_model.safetensors").is_file()

    # a fresh KB with no facts (one each: a chat stores its turns): whatever the agent knows about Sam
    # now comes from the adapter
    def ask(adapter: str | None) -> tuple[str, Agent]:
        agent = Agent.open(tmp_path / ("empty-lora" if adapter else "empty"), user="sam", model=str(tiny_smollm), device="cpu",
                           embedder=HashEmbedder(64), adapter=adapter)
        return agent.chat("Where do I live?").text, agent

    base_text, base_agent = ask(None)
    base_agent.close()
    text, agent = ask(str(stored.path))
    try:
        assert agent.last_reply.used_facts == ()
        # the adapter answers in chat (no fact was recalled); a random 2-layer model memorises the learn
        # run's closed-book prompts (measured above: closed_book_after > before), not the chat prompt's
        # wording, so its chat answer is "Sam LNG Mary at..." rather than Lisbon: what is checked here is
        # that the adapter is what answers, and that detaching it gives the base model back exactly
        assert text != base_text
        agent.adapter.off()
        assert agent.chat("Where do I live?").text == base_text  # detached: the base model's answer exactly
    finally:
        agent.close()


def test_an_adapter_needs_a_transformers_model_and_a_failed_open_closes_the_kb(tmp_path):
    from agent.pipeline.loop import Agent

    kbdir = make_kb(tmp_path / "kb", THREE)
    AdapterStore(kbdir).add(fake_meta(), write_dummy)
    with pytest.raises(BadInputError) as e:
        Agent.open(kbdir, user="sam", llm=ScriptedLLM(), embedder=HashEmbedder(64), adapter="latest")
    assert "transformers model" in str(e.value) and "scripted-llm" in str(e.value)
    KnowledgeBase.open(kbdir, embedder=HashEmbedder(64)).close()  # the writer lock was released
