"""Consolidation by gradient: fine-tune a LoRA adapter on a user's facts, accepted only if it learned
them closed-book without changing the answers to unrelated prompts.

Flow (``kgrow learn``): ``plan`` reads the user's current facts and turns them into question/answer
pairs (agent.questions), refusing too few facts before anything is loaded or written; ``learn``
measures closed-book accuracy and the locality probes' answers on the base model, swaps LoRA layers
into ``llm.model`` (peft, in place; the base weights are frozen and only read), trains them on the
pairs with the model's chat template and the loss on the answer tokens only, plus a KL term that
holds the model's answers to unrelated replay anchors (agent.lora.probes.ANCHORS) where the base model
had them, measures again with the LoRA in place, and stores the adapter (agent.adapters) only if
closed-book accuracy rose and at most ``max_changed_fraction`` of the probes changed. A rejected
adapter is not written anywhere; the report still carries every number. The LoRA layers are removed
again before ``learn`` returns.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from agent.lora.adapters import (
    FORMAT_VERSION,
    AdapterMeta,
    AdapterStore,
    _forget_peft,
    fingerprint,
    has_lora,
)
from agent.errors import BadInputError, ModelLoadError
from agent.generation.greedy import end_tokens, greedy_batch, greedy_ids
from agent.generation.llm import Message
from agent.generation.model import require
from agent.lora.probes import ANCHORS, PROBE_SET_VERSION, PROBES
from agent.profile.profile import load_profile
from agent.generation.prompt import display_name, system_text
from agent.lora.records import ClosedBookAnswer, LearnPlan, LearnReport, ProbeChange
from agent.lora.questions import MAX_PHRASINGS, held_out_pairs, qa_pairs
from agent.validation import check, within
from kb.facts import Fact, iso

#: Llama-style projection names LoRA may target (SmolLM2, Llama, Mistral, Qwen use these)
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LearnConfig:
    """How an adapter is trained and when it is accepted."""

    # LoRA rank: the update's capacity; 8 facts reach 100% closed-book with rank 8 (and with 4)
    rank: int = within(8, 1, 256)
    # LoRA scaling is alpha / rank; 2x rank is the usual choice
    alpha: float = within(16.0, 0.001, 1024.0)
    # dropout on the LoRA input; 0 because a handful of pairs is to be memorised, not generalised
    dropout: float = within(0.0, 0.0, 0.99)
    # where LoRA goes: attention queries and values (the usual LoRA choice); on SmolLM2-135M they
    # take 8 facts from 0% to 100% closed-book
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    # passes over the pairs; 8 facts x 2 phrasings = 32 steps, 100% closed-book on SmolLM2-135M
    epochs: int = within(8, 1, 100)
    # AdamW step size for the LoRA weights (2e-3 reached 88%, 1e-3 50% in the same steps with replay)
    learning_rate: float = within(3e-3, 1e-09, 1.0)
    # pairs per optimiser step
    batch_size: int = within(4, 1, 256)
    # seeds LoRA initialisation and the pair order: same facts + seed -> same adapter
    seed: int = within(0, 0, 4294967295)
    # fewer facts are not worth an adapter (and too little to measure accuracy on)
    min_facts: int = within(3, 1, 10000)
    # reject the adapter when more than this share of the locality probes change their answer. Twice
    # the noise floor: in bf16, merely batching the probes or running the same base model in fp32
    # changes 5-6 of the 30 answers within 12 tokens (0.2); measured on SmolLM2-135M with 8 facts,
    # this recipe changes 0.33-0.37, without replay 1.0, with hard-label replay 0.87-0.9
    max_changed_fraction: float = within(0.4, 0.0, 1.0)
    # replay anchors (agent.lora.probes.ANCHORS with the base model's answers) per fact pair in each step;
    # their KL to the base model keeps unrelated answers in place (0 = no replay; see agent/lora/probes.py)
    replay: float = within(4.0, 0.0, 10.0)
    # weight of that KL term against the fact pairs' cross-entropy (1: 26/30 probes changed, 20: 11/30)
    locality_weight: float = within(20.0, 0.0, 1000.0)
    # question phrasings per fact trained on (1..MAX_PHRASINGS); the first is the closed-book test
    # question, the next untrained one (if any) measures whether other wordings are answered too
    phrasings: int = 2
    # a probe counts as changed when its first this-many generated tokens differ
    probe_tokens: int = within(12, 1, 256)
    # generation cap for closed-book answers (an answer is one short sentence)
    answer_tokens: int = within(24, 1, 256)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        check(self)  # every within() field in its range
        if not 1 <= self.phrasings <= MAX_PHRASINGS:
            raise BadInputError(f"LearnConfig.phrasings={self.phrasings!r} is invalid; give an integer in 1..{MAX_PHRASINGS}")
        if not self.target_modules:
            raise BadInputError(f"target_modules is empty; choose from {', '.join(LLAMA_PROJECTIONS)}")
        for m in self.target_modules:
            if m not in LLAMA_PROJECTIONS:
                raise BadInputError(f"target module {m!r} is unknown; choose from {', '.join(LLAMA_PROJECTIONS)}")
        if len(set(self.target_modules)) != len(self.target_modules):
            raise BadInputError(f"target_modules {self.target_modules} names a module twice")


# ---------------------------------------------------------------------------- planning


def learnable_facts(kb, user: str) -> list[Fact]:
    """The user's current facts: their own, and shared facts they stated themselves."""
    out = []
    for f in kb.facts(user=user):  # NotFoundError names an unknown user
        if f.user == user or (f.shared and any(s.user == user for s in f.sources)):
            out.append(f)
    return out


def plan(kb, user: str, config: LearnConfig) -> LearnPlan:
    """The pairs for ``user``; BadInputError (nothing loaded, nothing written) with too few facts."""
    facts = learnable_facts(kb, user)
    profile = load_profile(kb, user)  # the name and preferences the chat's prompts use
    name = display_name(profile)
    pairs = qa_pairs(facts, user, name, config.phrasings)
    used = {p.fact_id for p in pairs}
    kept = tuple(f for f in facts if f.id in used)
    if len(kept) < config.min_facts:
        skipped = len(facts) - len(kept)
        extra = f" ({skipped} more only restate the user's name)" if skipped else ""
        raise BadInputError(
            f"user {user!r} has {len(kept)} learnable fact(s){extra}; `kgrow learn` needs at least "
            f"{config.min_facts} (min_facts): tell the agent more about yourself first, e.g. `kgrow chat "
            f"--user {user}`, or lower --min-facts")
    held = tuple(held_out_pairs(kept, user, name, config.phrasings))
    return LearnPlan(user, name, system_text(profile), kept, tuple(pairs), held)


# ---------------------------------------------------------------------------- measuring


def _prompt(llm, system: str, text: str) -> list[int]:
    return llm.chat_ids([Message("system", system), Message("user", text)])


def closed_book(llm, plan_: LearnPlan, config: LearnConfig) -> list[str]:
    """Greedy answers with no facts in the prompt: each fact's test question, then its held-out one."""
    asked = [p for p in plan_.pairs if p.primary] + list(plan_.held_out)
    return greedy_batch(llm, [_prompt(llm, plan_.system, p.question) for p in asked], config.answer_tokens)


def probe_answers(llm, system: str, probes: Sequence[str], config: LearnConfig) -> list[str]:
    """The first ``probe_tokens`` greedy tokens of the answer to each probe (as text)."""
    return greedy_batch(llm, [_prompt(llm, system, p) for p in probes], config.probe_tokens)


# ---------------------------------------------------------------------------- training


def _examples(llm, plan_: LearnPlan) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per pair: the chat-template prompt, then the answer and the end-of-turn
    token; labels are -100 (ignored) on the prompt so the loss covers the answer only."""
    tok = llm.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    end = im_end if im_end in end_tokens(tok) else tok.eos_token_id  # how the chat template closes a turn
    out = []
    for p in plan_.pairs:
        prompt = _prompt(llm, plan_.system, p.question)
        answer = list(tok(p.answer, add_special_tokens=False)["input_ids"]) + ([end] if end is not None else [])
        out.append((prompt + answer, [-100] * len(prompt) + answer))
    return out


def _anchor_examples(llm, system: str, anchors: Sequence[str], config: LearnConfig) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per replay anchor: the prompt, then the base model's own greedy answer
    (the end-of-turn token included when it ended within ``answer_tokens``)."""
    if not anchors or config.replay == 0:
        return []
    tok = llm.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    end = im_end if im_end in end_tokens(tok) else tok.eos_token_id
    prompts = [_prompt(llm, system, a) for a in anchors]
    out = []
    for prompt, (answer, ended) in zip(prompts, greedy_ids(llm, prompts, config.answer_tokens)):
        answer = answer + ([end] if ended and end is not None else [])
        if answer:
            out.append((prompt + answer, [-100] * len(prompt) + answer))
    return out


def _batch(examples: list[tuple[list[int], list[int]]], pad: int, device: str):
    import torch

    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):  # right padding: positions of real tokens are unchanged
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return ids.to(device), mask.to(device), labels.to(device)


def _check_targets(model, config: LearnConfig, model_id: str) -> None:
    present = {name.rpartition(".")[2] for name, _ in model.named_modules()}
    missing = [m for m in config.target_modules if m not in present]
    if missing:
        have = sorted(present & set(LLAMA_PROJECTIONS)) or ["none of " + ", ".join(LLAMA_PROJECTIONS)]
        raise BadInputError(f"target module(s) {', '.join(missing)} are not in model {model_id!r}; "
                            f"it has {', '.join(have)}")


def _anchor_kl(peft_model, ids, mask, labels):
    """Mean KL(base || adapted) of the next-token distributions at the anchors' answer positions.

    Zero while the LoRA weights are zero, so it never pushes the model anywhere by itself: it only
    pulls back what the fact loss moved. (Training on the base model's greedy answers as hard labels
    instead sharpened the model on them and changed 22 of the 30 probes on its own, no facts involved.)
    """
    import torch

    with torch.no_grad(), peft_model.disable_adapter():
        teacher = peft_model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    student = peft_model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    sel = labels[:, 1:] != -100  # positions that predict an answer token
    t = torch.log_softmax(teacher[sel].float(), dim=-1)
    s = torch.log_softmax(student[sel].float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def _train(llm, peft_model, facts: list, anchors: list, config: LearnConfig,
           progress: bool) -> tuple[int, float, float]:
    """Optimise the LoRA weights in place. Each step: cross-entropy on ``batch_size`` fact pairs plus
    ``locality_weight`` x the KL to the base model on ``replay`` anchors per pair (drawn in turn from
    a shuffled pool). Returns (steps, first-epoch mean loss, last-epoch mean loss)."""
    import torch
    from tqdm import tqdm

    model = llm.model
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    rng = random.Random(config.seed)
    per_epoch = math.ceil(len(facts) / config.batch_size)
    pad = llm.tokenizer.pad_token_id if llm.tokenizer.pad_token_id is not None else 0
    pool: list[int] = []
    losses: list[list[float]] = []
    model.train()
    with tqdm(total=config.epochs * per_epoch, desc="learn", unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
        for _ in range(config.epochs):
            order = list(range(len(facts)))
            rng.shuffle(order)
            epoch: list[float] = []
            for b in range(per_epoch):
                chunk = [facts[i] for i in order[b * config.batch_size:(b + 1) * config.batch_size]]
                ids, mask, labels = _batch(chunk, pad, llm.device)
                loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
                want = min(len(anchors), round(config.replay * len(chunk)))
                if want:
                    while len(pool) < want:  # every anchor once before any repeats
                        pool += rng.sample(range(len(anchors)), len(anchors))
                    picked, pool = [anchors[i] for i in pool[:want]], pool[want:]
                    loss = loss + config.locality_weight * _anchor_kl(peft_model, *_batch(picked, pad, llm.device))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                epoch.append(float(loss.detach()))
                bar.set_postfix(loss=f"{epoch[-1]:.3f}")
                bar.update(1)
            losses.append(epoch)
    model.eval()
    return config.epochs * per_epoch, sum(losses[0]) / len(losses[0]), sum(losses[-1]) / len(losses[-1])


def learn(plan_: LearnPlan, llm, config: LearnConfig, store: AdapterStore | None, *,
          probes: Sequence[str] = PROBES, anchors: Sequence[str] = ANCHORS, progress: bool = False) -> LearnReport:
    """Train, measure and (if accepted and ``store`` is given) store an adapter for ``plan_.user``.

    ``probes`` are measured and never trained on; ``anchors`` are trained on (the KL term holds the
    model to the base model's answers to them) and never measured. Keep the two disjoint.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    require(llm, "transformers", "`kgrow learn` (LoRA training)")
    model = llm.model
    if has_lora(model):
        raise BadInputError("the model has a LoRA adapter attached; learn on the base model (detach it first)")
    _check_targets(model, config, llm.id)
    if not probes:
        raise BadInputError("the locality probe set is empty; give at least one probe prompt")
    base_print = fingerprint(model)
    e0 = time.perf_counter()
    before = closed_book(llm, plan_, config)
    probes_before = probe_answers(llm, plan_.system, probes, config)
    eval_seconds = time.perf_counter() - e0
    r0 = time.perf_counter()
    replay = _anchor_examples(llm, plan_.system, anchors, config)  # the base model's answers, before any LoRA
    replay_seconds = time.perf_counter() - r0

    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    torch.manual_seed(config.seed)  # LoRA A matrices are drawn from torch's generator
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; not the user's concern
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, lora)  # swaps LoRA layers into model's modules, freezes the rest
    except (ValueError, RuntimeError) as e:
        raise ModelLoadError(f"cannot add LoRA layers to {llm.id!r}: {str(e).splitlines()[0]}") from None
    try:
        t0 = time.perf_counter()
        steps, first_loss, final_loss = _train(llm, peft_model, _examples(llm, plan_), replay, config, progress)
        train_seconds = time.perf_counter() - t0 + replay_seconds
        e1 = time.perf_counter()
        after = closed_book(llm, plan_, config)
        probes_after = probe_answers(llm, plan_.system, probes, config)
        eval_seconds += time.perf_counter() - e1
        report = _judge(plan_, llm.id, config, before, after, probes, probes_before, probes_after,
                        steps, first_loss, final_loss, train_seconds, eval_seconds)
        if report.accepted and store is not None:
            meta = AdapterMeta(
                format=FORMAT_VERSION, version=0, user=plan_.user, base_model=llm.id, base_fingerprint=base_print,
                created=iso(time.time()) or "", fact_ids=tuple(f.id for f in plan_.facts),
                fact_texts=tuple(f.text for f in plan_.facts), pairs=len(plan_.pairs), steps=steps,
                train_seconds=round(train_seconds, 3), closed_book_before=report.closed_book_before,
                closed_book_after=report.closed_book_after, changed_fraction=report.changed_fraction,
                probe_set_version=PROBE_SET_VERSION, settings=asdict(config))
            stored = store.add(meta, lambda d: peft_model.save_pretrained(str(d)))
            report = replace(report, adapter_version=stored.meta.version, adapter_path=str(stored.path))
        return report
    finally:
        peft_model.unload()  # the original linear modules go back; base weights were never written
        _forget_peft(model)
        for n, p in model.named_parameters():
            p.requires_grad_(grads.get(n, p.requires_grad))
        model.eval()
        llm.reset_cache()


def _judge(plan_: LearnPlan, model_id: str, config: LearnConfig, before: list[str], after: list[str],
           probes: Sequence[str], probes_before: list[str], probes_after: list[str], steps: int,
           first_loss: float, final_loss: float, train_seconds: float, eval_seconds: float) -> LearnReport:
    tests = [p for p in plan_.pairs if p.primary]
    n = len(tests)  # closed_book answered the test questions first, then the held-out ones
    answers = tuple(ClosedBookAnswer(p.question, p.expected, b, a) for p, b, a in zip(tests, before, after))
    held = tuple(ClosedBookAnswer(p.question, p.expected, b, a)
                 for p, b, a in zip(plan_.held_out, before[n:], after[n:]))
    acc_before = sum(a.right_before for a in answers) / len(answers)
    acc_after = sum(a.right_after for a in answers) / len(answers)
    held_before = round(sum(a.right_before for a in held) / len(held), 4) if held else None
    held_after = round(sum(a.right_after for a in held) / len(held), 4) if held else None
    changed = tuple(ProbeChange(p, b, a) for p, b, a in zip(probes, probes_before, probes_after) if a != b)
    fraction = len(changed) / len(probes)
    rose = acc_after > acc_before
    local = fraction <= config.max_changed_fraction
    numbers = (f"closed-book accuracy {acc_before:.0%} -> {acc_after:.0%}, {len(changed)}/{len(probes)} "
               f"probes changed ({fraction:.0%}, limit {config.max_changed_fraction:.0%})")
    if rose and local:
        reason = f"accepted: {numbers}"
    elif not rose:
        reason = f"rejected, closed-book accuracy did not rise: {numbers}"
    else:
        reason = f"rejected, too many unrelated answers changed: {numbers}"
    return LearnReport(
        user=plan_.user, base_model=model_id, facts=len(plan_.facts), pairs=len(plan_.pairs), steps=steps,
        first_loss=round(first_loss, 4), final_loss=round(final_loss, 4), train_seconds=round(train_seconds, 3),
        eval_seconds=round(eval_seconds, 3), closed_book_before=round(acc_before, 4),
        closed_book_after=round(acc_after, 4), answers=answers, held_out_before=held_before,
        held_out_after=held_after, held_out=held, probes=len(probes),
        changed_fraction=round(fraction, 4), changed=changed, max_changed_fraction=config.max_changed_fraction,
        accepted=rose and local, reason=reason, adapter_version=None, adapter_path=None)
