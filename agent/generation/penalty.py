"""The repetition penalty, defined once: the tokens generated so far (never the prompt's) become less likely."""
from __future__ import annotations


def penalize(scores, generated, penalty: float):
    """``scores`` (batch, vocab) float logits with each row's ``generated`` (batch, n) token ids made
    less likely: a positive logit divided by ``penalty``, a negative one multiplied (CTRL's rule, as in
    transformers' RepetitionPenaltyLogitsProcessor, but over the reply only). Repeated ids are fine."""
    import torch

    if penalty <= 1.0 or generated.shape[-1] == 0:
        return scores
    picked = scores.gather(1, generated)
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return scores.scatter(1, generated, picked)


def processor(penalty: float, prompt_len: int):
    """``penalize`` as a transformers LogitsProcessor for ``generate``: ids past ``prompt_len`` are the reply."""
    from transformers import LogitsProcessor

    class GeneratedRepetitionPenalty(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return penalize(scores, input_ids[:, prompt_len:], penalty)

    return GeneratedRepetitionPenalty()
