"""Constrained JSON decoding for the LLM extractor: a LogitsProcessor that only lets the model write triples.

The output grammar is fixed: ``[`` then zero or more ``{"subject": "S", "relation": "R", "object":
"O", "negated": true|false}`` separated by ``, `` and then ``]``. S and O are strings without quotes,
backslashes or newlines (at most ``max_value_chars``), R is snake_case. The processor walks a small
automaton over the text generated so far: in fixed parts it forces the next token of the fixed text,
in strings it masks every token that would leave the string's alphabet, and at choices ("true" or
"false", another triple or the end) it keeps the first tokens of the options. So even the 135M model
produces output that ``LLMExtractor.parse`` accepts (it may still be wrong, never malformed).

Why a LogitsProcessor: it plugs into transformers' own ``generate`` (greedy, KV cache, stopping),
so the constraint costs a mask per step and no decoding loop of ours.
"""
from __future__ import annotations

import contextlib

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import BadInputError
from agent.validation import check, within

if TYPE_CHECKING:
    import torch

_FIELDS = ("subject", "relation", "object")
_BAD_IN_STRING = frozenset('"\\\n\r\t')


@dataclass(frozen=True)
class ConstrainedConfig:
    """Bounds of constrained extraction output."""

    max_value_chars: int = within(40, 1, 10000)  # a string this long is closed: names and values are short
    max_triples: int = within(5, 1, 1000)  # then the array is closed
    # generation stops here whatever the automaton says: 5 triples of short values take about 150
    max_new_tokens: int = within(192, 1, 8192)

    def __post_init__(self) -> None:
        check(self)  # every within() field in its range


class Vocabulary:
    """Token texts of a tokenizer and the masks the automaton needs, computed once per tokenizer."""

    def __init__(self, tokenizer):
        import torch

        self.tokenizer = tokenizer
        n = len(tokenizer)
        self.texts = [tokenizer.decode([i]) for i in range(n)]
        ok = [bool(t) and "\ufffd" not in t and not (set(t) & _BAD_IN_STRING) for t in self.texts]
        self.string_mask = torch.tensor(ok)
        snake = [o and all(c.islower() or c.isdigit() or c == "_" for c in t) for o, t in zip(ok, self.texts)]
        self.snake_mask = torch.tensor(snake)
        self.snake_start_mask = torch.tensor([o and t[0].isalpha() for o, t in zip(snake, self.texts)])
        self.quote = [i for i, t in enumerate(self.texts) if t == '"']
        if not self.quote:
            raise BadInputError("the tokenizer has no token for a lone '\"'; constrained decoding needs one")
        self._quoted = [(i, t[1:]) for i, t in enumerate(self.texts) if t.startswith('"') and len(t) > 1]
        self._closers: dict[str, list[int]] = {}
        self._first: dict[str, int] = {}

    def closers(self, then: str) -> list[int]:
        """Tokens that close a string followed by ``then``: the lone quote, and the quote merged with
        the start of what follows (BPE writes '",' and '", "' as one token; a model that only may
        write a lone '"' rarely closes its strings and rambles to the length limit)."""
        if then not in self._closers:
            self._closers[then] = self.quote + [i for i, rest in self._quoted if then.startswith(rest)]
        return self._closers[then]

    def first(self, text: str) -> int:
        """The first token of ``text`` as the tokenizer would write it (cached: the grammar's texts are few)."""
        if text not in self._first:
            self._first[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"][0]
        return self._first[text]


@functools.lru_cache(maxsize=4)
def _vocabulary(tokenizer) -> Vocabulary:
    return Vocabulary(tokenizer)


class TripleJSONProcessor:
    """A transformers LogitsProcessor (``__call__(input_ids, scores) -> scores``) for one prompt.

    The automaton is in one of three phases: ``fixed`` (text that must come next), ``choice`` (one
    of several texts), ``string`` (a field's value). Each phase ends by calling its continuation.
    """

    def __init__(self, vocab: Vocabulary, prompt_len: int, config: ConstrainedConfig | None = None):
        self.vocab = vocab
        self.prompt_len = prompt_len
        self.config = config or ConstrainedConfig()
        self.triples = 0
        self.done = False
        self.seen = 0  # generated tokens consumed so far
        self.phase = "fixed"
        self.fixed = ""
        self.options: list[tuple[str, str]] = []  # (option, what is still to come of it)
        self.field = ""
        self.value = ""
        self.then = None
        self._expect("[", self._array)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[0, self.prompt_len:].tolist()
        for tok in generated[self.seen:]:
            for ch in self.vocab.texts[tok]:
                self._char(ch)
        self.seen = len(generated)
        allowed = self._allowed(scores.shape[-1])
        return scores.masked_fill(~allowed.unsqueeze(0), float("-inf"))

    # ---------------------------------------------------------------- the grammar

    def _array(self) -> None:
        self._choose(('{"subject": "', "]"), self._opened)

    def _opened(self, chosen: str) -> None:
        if chosen == "]":
            self.done = True
        else:
            self._string("subject")

    #: what follows the closing quote of each field
    _AFTER = {"subject": ', "relation": "', "relation": ', "object": "', "object": ', "negated": '}

    def _closed_string(self) -> None:
        after = self._AFTER[self.field]
        if self.field == "subject":
            self._expect(after, lambda: self._string("relation"))
        elif self.field == "relation":
            self._expect(after, lambda: self._string("object"))
        else:
            self._expect(after, lambda: self._choose(("false", "true"), self._negated))

    def _negated(self, chosen: str) -> None:
        self.triples += 1
        self._expect("}", self._more)

    def _more(self) -> None:
        if self.triples >= self.config.max_triples:
            self._expect("]", self._finish)
        else:
            self._choose((', {"subject": "', "]"), self._opened)

    def _finish(self) -> None:
        self.done = True

    # ---------------------------------------------------------------- the phases

    def _expect(self, text: str, then) -> None:
        self.phase, self.fixed, self.then = "fixed", text, then

    def _choose(self, options: tuple[str, ...], then) -> None:
        self.phase, self.options, self.then = "choice", [(o, o) for o in options], then

    def _string(self, field: str) -> None:
        self.phase, self.field, self.value = "string", field, ""

    def _char(self, ch: str) -> None:
        if self.done:
            return
        if self.phase == "fixed":
            if self.fixed and ch == self.fixed[0]:
                self.fixed = self.fixed[1:]
                if not self.fixed:
                    self.then()
        elif self.phase == "choice":
            live = [(o, rest[1:]) for o, rest in self.options if rest and rest[0] == ch]
            finished = [o for o, rest in live if not rest]
            if finished:
                self.then(finished[0])
            elif live:
                self.options = live
        elif ch == '"':
            self._closed_string()
        else:
            self.value += ch

    def _allowed(self, width: int):
        import torch

        mask = torch.zeros(width, dtype=torch.bool)
        if self.done:
            eos = self.vocab.tokenizer.eos_token_id
            mask[eos if eos is not None else self.vocab.quote[0]] = True
        elif self.phase == "fixed":
            mask[self.vocab.first(self.fixed)] = True
        elif self.phase == "choice":
            for _, rest in self.options:
                mask[self.vocab.first(rest)] = True
        else:
            if len(self.value) < self.config.max_value_chars:
                base = self.vocab.string_mask
                if self.field == "relation":  # snake_case, starting with a letter
                    base = self.vocab.snake_mask if self.value else self.vocab.snake_start_mask
                k = min(width, base.shape[0])
                mask[:k] = base[:k]
            if self.value.strip() or not mask.any():  # a full string of spaces still has to close
                mask[self.vocab.closers(self._AFTER[self.field])] = True
        return mask


class ConstrainedGenerate:
    """``prompt -> text`` for LLMExtractor: greedy decoding of a HF causal LM under TripleJSONProcessor.

    Two things keep it fast on a CPU. The prompt's rules and examples are the same every call, so
    the KV cache of the longest shared prefix is kept and only the new message is encoded. And the
    JSON between the model's choices ('", "relation": "') is fed in one forward pass instead of one
    token per pass ("jump-forward"): the automaton leaves the model nothing to choose there.
    """

    def __init__(self, model, tokenizer, config: ConstrainedConfig | None = None, lock=None):
        """``lock``: the language model's (``CausalLM.lock``), held by each forward pass, so that an
        extraction never runs inside another thread's fused generation (its hooks read that turn's
        knowledge tokens)."""
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or ConstrainedConfig()
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self.vocab = _vocabulary(tokenizer)
        self._cache = None
        self._cache_ids: list[int] = []  # the tokens the kept KV cache holds
        self.forwards = 0  # model passes made, for the report's per-call cost

    @classmethod
    def of(cls, llm, config: ConstrainedConfig | None = None) -> ConstrainedGenerate:
        """For an agent.generation.llm.CausalLM (its ``model``, ``tokenizer`` and ``lock``)."""
        return cls(llm.model, llm.tokenizer, config, lock=llm.lock)

    def __call__(self, prompt: str) -> str:
        import torch

        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        proc = TripleJSONProcessor(self.vocab, len(ids), self.config)
        seq = list(ids)
        with torch.inference_mode():
            logits = self._prefill(ids)
            while len(seq) - len(ids) < self.config.max_new_tokens and not proc.done:
                if proc.phase == "fixed":  # nothing to choose: the whole fixed text in one pass
                    toks = list(self.tokenizer(proc.fixed, add_special_tokens=False)["input_ids"])
                else:
                    scores = proc(torch.tensor([seq]), logits.unsqueeze(0))
                    toks = [int(scores[0].argmax())]
                seq += toks
                proc(torch.tensor([seq]), logits.unsqueeze(0))  # let the automaton read them
                if not proc.done:
                    logits = self._forward(toks)
        text = self.tokenizer.decode(seq[len(ids):], skip_special_tokens=True)
        return text if proc.done else "[]"  # cut by max_new_tokens: an unfinished array states nothing

    def _prefill(self, ids: list[int]):
        """Logits after ``ids``, encoding only what the kept cache does not already hold."""
        from transformers import DynamicCache

        shared = 0
        for a, b in zip(self._cache_ids, ids[:-1]):  # at least the last token is always encoded
            if a != b:
                break
            shared += 1
        if self._cache is None or shared == 0:
            self._cache, shared = DynamicCache(), 0
        elif self._cache.get_seq_length() > shared:
            self._cache.crop(shared - self._cache.get_seq_length())  # negative: drop that many from the end
        self._cache_ids = ids[:shared]
        return self._forward(ids[shared:])

    def _forward(self, toks: list[int]):
        import inspect

        import torch

        # the forward's KV-cache argument: ``cache`` from transformers 5.24 on, ``past_key_values`` before
        # (agent.generation.llm.cache_arg; extraction sits below generation, so it is asked here)
        arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.forwards += 1
        with self._lock:
            out = self.model(input_ids=torch.tensor([toks], device=self.model.device), use_cache=True,
                             **{arg: self._cache})
        self._cache_ids += toks
        return out.logits[0, -1].float()
