"""Batched greedy decoding of many independent prompts, for measurements (closed-book tests, locality probes).

Why not ``CausalLM.stream_ids`` one prompt at a time: on a CPU, decoding 30 prompts one by one costs
30 full passes over the weights per token; a batch reads them once. The decoding rule is the chat's
(greedy, the repetition penalty applied to the tokens generated so far, stop at end of turn), so the
answers read like chat answers; batching may still flip a near-tie now and then, which is why a
before/after comparison must decode both sides the same way (it does: both go through here).

Shapes: prompts are left-padded to one width (B, T) with an attention mask; positions count real
tokens only (``mask.cumsum - 1``), so a padded prompt sees the positions it would see alone.
"""
from __future__ import annotations

from typing import Sequence


def end_tokens(tokenizer) -> set[int]:
    """Token ids that end an answer: the tokenizer's EOS and the chat template's ``<|im_end|>``."""
    ends = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ends.add(im_end)
    return {e for e in ends if e is not None}


def greedy_batch(llm, prompts: Sequence[list[int]], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """The greedy answer (text) to each prompt's token ids, at most ``max_new_tokens`` tokens each."""
    tok = llm.tokenizer
    return [tok.decode(ids, skip_special_tokens=True).strip()
            for ids, _ in greedy_ids(llm, prompts, max_new_tokens, batch_size)]


def greedy_ids(llm, prompts: Sequence[list[int]], max_new_tokens: int,
               batch_size: int = 16) -> list[tuple[list[int], bool]]:
    """(generated token ids, whether it ended with an end token) for each prompt."""
    import torch
    from transformers import DynamicCache

    from agent.generation.llm import cache_arg
    from agent.generation.penalty import penalize

    model, tok = llm.model, llm.tokenizer
    penalty = float(llm.repetition_penalty)
    ends = end_tokens(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(ends), 0)
    answers: list[tuple[list[int], bool]] = []
    kv = cache_arg(model)
    with llm.lock, torch.inference_mode():  # no chat turn may run while the batch decodes
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            n, width = len(chunk), max(len(p) for p in chunk)
            ids = torch.full((n, width), pad, dtype=torch.long)
            mask = torch.zeros((n, width), dtype=torch.long)
            for i, p in enumerate(chunk):
                ids[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
            ids, mask = ids.to(llm.device), mask.to(llm.device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache()
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{kv: cache})
            generated: list[list[int]] = [[] for _ in range(n)]
            done = [False] * n
            for _ in range(max_new_tokens):
                logits = out.logits[:, -1].float()  # (B, vocab)
                for i, g in enumerate(generated):
                    if g and not done[i]:
                        logits[i] = penalize(logits[i:i + 1], torch.tensor([g], device=logits.device), penalty)[0]
                nxt = logits.argmax(-1)  # (B,)
                for i in range(n):
                    if done[i]:
                        continue
                    t = int(nxt[i])
                    if t in ends:
                        done[i] = True
                    else:
                        generated[i].append(t)
                if all(done):
                    break
                step = torch.tensor([[pad if done[i] else int(nxt[i])] for i in range(n)], device=llm.device)
                mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=mask.device)], dim=1)
                pos = pos[:, -1:] + 1
                out = model(input_ids=step, attention_mask=mask, position_ids=pos, use_cache=True,
                            **{kv: cache})
            answers += list(zip(generated, done))
    return answers
