"""Tiny random Llama models saved as model directories, for tests of code that needs a real transformers
model but not a trained one (LoRA mechanics, streaming, the KV cache): built in well under a second."""
from __future__ import annotations

from pathlib import Path

import torch

# SmolLM2's chat template, without its default system prompt: the tiny models speak ChatML
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokenizer():
    """A byte-level BPE tokenizer with no merges (259 ids: 256 bytes + ChatML's control tokens).

    Built in milliseconds from the ``tokenizers`` library: reading SmolLM2's tokenizer out of the
    packaged GGUF takes 15-80 s, and the LoRA mechanics tested on the tiny model do not depend on
    which vocabulary the model speaks.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>", chat_template=CHATML)
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


def save_tiny_llama(tok, out: Path, max_positions: int) -> Path:
    """A 2-layer Llama with random weights speaking ``tok``, saved with it as a model directory.

    Embeddings start large (initializer_range 0.5) so that its logits can become confident: with the
    usual 0.02 the final RMSNorm caps every logit near 1 and nothing can be learned in a few steps.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                      tie_word_embeddings=True, initializer_range=0.5, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
