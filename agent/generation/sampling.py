"""Candidate answers from a transformers model: the greedy decode plus distinct samples, each with its mean token log-prob.

The greedy answer is always candidate 0: once a correction is stored, the corrected fact is in the
prompt and the model's most probable answer is usually the right one; the samples add the
alternatives the re-ranker needs when the greedy answer is the one just rejected (a bare /bad).
Sampling draws twice as many sequences as it needs and keeps the first distinct ones, because a
135M model repeats itself often at moderate temperatures.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.errors import BadInputError
from agent.generation.model import Message
from agent.types import Candidate

if TYPE_CHECKING:
    import torch

    from agent.generation.model import TransformersModel

#: sampled sequences drawn per sampled candidate wanted (duplicates are dropped afterwards)
OVERSAMPLE = 2


def check_request(n: int, max_new_tokens: int) -> None:
    """Refuse a candidate request out of range, naming the value."""
    if not isinstance(n, int) or not 1 <= n <= 64:
        raise BadInputError(f"n={n!r} candidates must be in 1..64")
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= 4096:
        raise BadInputError(f"max_new_tokens={max_new_tokens!r} must be in 1..4096")


def sample_candidates(llm: TransformersModel, messages: Sequence[Message], n: int, temperature: float,
                      max_new_tokens: int, seed: int, *, top_p: float = 0.95, max_sentences: int = 0) -> list[Candidate]:
    """The greedy answer and up to n-1 distinct sampled ones, in that order, each scored by its mean log-prob.

    Decoding matches ``CausalLM.stream_ids``: the repetition penalty covers generated tokens only
    (a penalty on prompt tokens would keep the model from repeating the facts it is given), and
    generation stops after ``max_sentences`` sentences (0 = no limit). The log-probs are those of
    the raw model (no temperature, no penalty), so greedy and sampled candidates compare fairly.
    The global torch RNG is left untouched; ``llm``'s prefix KV cache is not used or changed.
    """
    import torch

    check_request(n, max_new_tokens)
    prompt = llm.chat_ids(messages)
    eos = sorted(llm.eos_token_ids)
    out: list[Candidate] = []
    seen: set[str] = set()
    with llm.lock, torch.inference_mode():
        ids = torch.tensor([prompt], device=llm.device)
        common = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos[0],
                      return_dict_in_generate=True, output_logits=True, repetition_penalty=1.0,
                      logits_processor=_processors(llm.repetition_penalty, len(prompt)),
                      stopping_criteria=_stops(llm, len(prompt), max_sentences),
                      attention_mask=torch.ones_like(ids))
        runs = [llm.model.generate(ids, do_sample=False, num_beams=1, **common)]
        if n > 1:
            devices = [llm.model.device] if llm.device == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                runs.append(llm.model.generate(ids, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                                               num_return_sequences=OVERSAMPLE * (n - 1), **common))
        for greedy, run in zip((True, False), runs):
            for text, logprob, tokens in _decode(llm, run, len(prompt)):
                key = " ".join(text.split()).casefold()
                if key in seen or len(out) >= n:
                    continue
                seen.add(key)
                out.append(Candidate(text, logprob, tokens, greedy=greedy))
    return out


def _decode(llm: TransformersModel, run, prompt_len: int) -> list[tuple[str, float, int]]:
    """(text, mean raw log-prob, tokens) per returned sequence; a sequence ends before its first end token."""
    import torch

    ends = llm.eos_token_ids
    new = run.sequences[:, prompt_len:]  # (rows, steps)
    logits = torch.stack(run.logits, dim=1).float()  # (rows, steps, vocab)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # (rows, steps)
    rows = []
    for r in range(new.shape[0]):
        toks = new[r].tolist()
        length = next((i for i, t in enumerate(toks) if t in ends), len(toks))
        text = llm.tokenizer.decode(toks[:length], skip_special_tokens=True).strip()
        mean = float(logp[r, :length].mean()) if length else float(logp[r, 0])
        rows.append((text, mean, length))
    return rows


def _processors(penalty: float, prompt_len: int):
    from transformers import LogitsProcessorList

    from agent.generation.penalty import processor

    return LogitsProcessorList([processor(penalty, prompt_len)])


def _stops(llm: TransformersModel, prompt_len: int, max_sentences: int):
    import torch as _torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from agent.language.sentences import count_sentences

    if not max_sentences:
        return StoppingCriteriaList()

    class SentenceStop(StoppingCriteria):
        """Per sequence: done once the generated text holds ``max_sentences`` sentences (as in agent/pipeline/turn.py)."""

        def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
            texts = llm.tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            return _torch.tensor([count_sentences(t) >= max_sentences for t in texts], device=input_ids.device)

    return StoppingCriteriaList([SentenceStop()])
