"""The agent's side of knowledge fusion: finding the adapter for the loaded model, switching fusion on
and off, turning a turn's facts (and feedback) into knowledge tokens, and explaining what was read."""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agent.errors import BadInputError, ModelLoadError
from agent.fusion.adapter import FusionMode, KnowledgeTokens
from agent.fusion.files import load_adapter, matching_adapter, packaged_adapter_dir
from agent.fusion.knowledge import KnowledgeEncoder
from agent.fusion.synth import is_refusal
from kb.facts import Fact, normalize_name


@dataclass(frozen=True)
class AgentFusionConfig:
    """How the agent uses knowledge fusion."""

    # AUTO: on when an adapter trained for the loaded model and the KB's embedder is found
    mode: FusionMode = FusionMode.AUTO
    # adapter directory (None: the one packaged for SmolLM2-135M-Instruct + MiniLM)
    adapter: str | None = None
    # keep citing the facts as text while fusing them (scenario eval: see README "Knowledge fusion")
    with_text: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", FusionMode.parse(self.mode))
        if self.adapter is not None and not Path(self.adapter).expanduser().exists():
            raise BadInputError(f"fusion adapter directory {self.adapter!r} does not exist")


@dataclass(frozen=True)
class FusedFact:
    """How much attention the model paid to one knowledge token while answering."""

    label: str  # the fact id (or "feedback")
    text: str
    weight: float  # share of the attention mass, averaged over fused layers and heads


class Fuser:
    """Attaches the matching adapter to a CausalLM and builds knowledge tokens for each answer."""

    def __init__(self, llm, kb, config: AgentFusionConfig):
        self.llm, self.kb, self.config = llm, kb, config
        self.available = False
        self.reason = ""
        self.encoder: KnowledgeEncoder | None = None
        self._texts: tuple[str, ...] = ()
        self._chain: tuple[tuple[str, str, str], ...] = ()  # the fused facts, normalised (s, r, o)
        self._question = ""  # the question they were fused for, as asked
        self.fell_back = False  # the last answer came from the text path (fused refusal or mid-chain)
        self._attached = None  # the FusedModel this Fuser put on the model (its hooks), until close()
        if config.mode is FusionMode.OFF:
            self.reason = "fusion is off"
            return
        if not llm.capabilities.fusion:
            self.reason = f"the language model {llm.id!r} cannot take a fusion adapter"
        else:
            directory = Path(config.adapter).expanduser() if config.adapter else packaged_adapter_dir()
            found = matching_adapter(llm.id, kb.embedder.id, directory)
            if found is None:
                self.reason = (f"no fusion adapter for model {llm.id!r} with embedder {kb.embedder.id!r} in "
                               f"{directory}; train one with `kgrow fusion train`")
            else:
                self._attached = llm.attach_fusion(load_adapter(found, llm.id, kb.embedder.id))
                llm.reset_cache()
                self.encoder = KnowledgeEncoder(kb.embedder)
                self.available = True
        if not self.available and config.mode is FusionMode.ON:
            raise ModelLoadError(f"fusion was asked for but {self.reason}")

    def close(self) -> None:
        """Take the fusion hooks this Fuser attached off the model (not another agent's, attached later)."""
        if self._attached is not None and self.llm.fusion is self._attached:  # set only on a fusable model
            self.llm.detach_fusion()
            self.llm.reset_cache()  # cached keys/values may hold fused positions
        self._attached, self.available = None, False
        self.reason = "the agent was closed"

    @property
    def enabled(self) -> bool:
        return self.available and self.llm.fusion is not None and self.llm.fusion.enabled

    def set_enabled(self, on: bool) -> None:
        """``/fusion on|off``: an error naming the reason when no adapter is attached."""
        if on and not self.available:
            raise BadInputError(f"cannot turn fusion on: {self.reason}")
        if self.available:
            self.llm.fusion.enabled = on
            self.llm.reset_cache()

    @property
    def cites_text(self) -> bool:
        """Whether facts still go into the prompt as text."""
        return not self.enabled or self.config.with_text

    def _display(self, name: str, text: str) -> str:
        """``name`` (normalised) as the fact's statement spells it ("Bob" in "Bob's name is Bob."),
        else as the KB displays the entity: the fused answer copies these tokens."""
        m = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, flags=re.IGNORECASE)
        return m.group(0) if m else (self.kb.entity_display(name) or name)

    def tokens(self, facts: Sequence[Fact], question: str,
               feedback: Sequence[tuple[str, np.ndarray, str]] = ()) -> KnowledgeTokens | None:
        """Knowledge tokens for ``facts`` plus ``feedback`` tokens given as (key text, value vector,
        value text): the feedback vector is the value, the asked question the key. None when fusion
        is off or there is nothing to fuse."""
        if not self.enabled or (not facts and not feedback):
            return None
        assert self.encoder is not None
        triples = [(self._display(f.subject, f.text), f.relation, self._display(f.object, f.text)) for f in facts]
        self._chain = tuple((normalize_name(f.subject), f.relation, normalize_name(f.object)) for f in facts)
        self._question = question
        labels = [f.id for f in facts]
        kinds = ["fact"] * len(facts)
        self._texts = tuple(f.text for f in facts)
        tokens = self.encoder.tokens(triples, question, labels=labels, kinds=kinds)
        if feedback:  # keys from the asked question's subject, values from what the feedback asks for
            keys = self.encoder.vectors([k for k, _, _ in feedback])
            values = np.stack([np.asarray(v, np.float32) for _, v, _ in feedback])
            tokens = replace(tokens, keys=np.concatenate([tokens.keys, keys]),
                             values=np.concatenate([tokens.values, values]),
                             labels=tokens.labels + tuple("feedback" for _ in feedback),
                             kinds=tokens.kinds + tuple("feedback" for _ in feedback),
                             value_texts=tokens.value_texts + tuple(t for _, _, t in feedback))
            self._texts += tuple(f"feedback: {t}" if t else "feedback (bad rating)" for _, _, t in feedback)
        return tokens

    def stream(self, llm, messages, max_new_tokens: int | None, tokens: KnowledgeTokens | None,
               cited: bool, evidence: str | None = None) -> Iterator[str]:
        """The answer with ``tokens`` fused. When the fused answer refuses, or stops in the middle of a
        chain the question goes on past (``mid_chain``), although facts are cited as text, the
        text-only answer is given instead (the adapter refuses when no key matches the question
        well; the cited text may still answer it). The text path answers too when ``evidence`` (the
        best recalled memory, an earlier turn that outranks every fact) does not contain the fused
        answer: the adapter reads facts only, and fuses the nearest one even when the question is
        answered by something said that no fact holds ("What is my dog called?" -> the user's name).
        Fused answers are a few tokens, so they are generated whole before the first piece is yielded."""
        self.fell_back = False
        if tokens is None:
            yield from llm.stream(messages, max_new_tokens=max_new_tokens)
            return
        answer = "".join(llm.stream(messages, max_new_tokens=max_new_tokens, knowledge=tokens))
        off_evidence = evidence is not None and normalize_name(answer) not in normalize_name(evidence)
        if cited and (is_refusal(answer) or self.mid_chain(answer) or off_evidence):
            self.fell_back = True
            yield from llm.stream(messages, max_new_tokens=max_new_tokens)
            return
        yield answer

    def mid_chain(self, answer: str) -> bool:
        """Whether ``answer`` stops in the middle of the chain of facts just fused (see ``mid_chain``)."""
        return mid_chain(answer, self._question, self._chain)

    @contextlib.contextmanager
    def around(self, messages, tokens: KnowledgeTokens | None) -> Iterator[None]:
        """Fuse ``tokens`` into every forward pass inside the block (for generation the agent does not
        run through ``llm.stream``, e.g. feedback candidates)."""
        if tokens is None or not self.enabled:
            yield
            return
        with self.llm.fusion.knowledge(replace(tokens, start=self.llm.fusion_start(messages))):
            yield

    def read(self, tokens: KnowledgeTokens | None) -> tuple[FusedFact, ...]:
        """Attention paid to each knowledge token in the last forward pass (mean over layers and heads)."""
        if tokens is None or not self.enabled or not self.llm.fusion.last_attention or self.fell_back:
            return ()
        maps = [a.float().mean(dim=(0, 1)) for a in self.llm.fusion.last_attention.values()]  # (N+1,) each
        mean = sum(maps) / len(maps)
        weights = mean[1:].tolist()  # column 0 is the null token ("nothing matches")
        out = [FusedFact(label, text, float(w)) for label, text, w in zip(tokens.labels, self._texts, weights)]
        return tuple(sorted(out, key=lambda f: -f.weight))


#: relations that describe an entity rather than lead on from it
_SELF_RELATIONS = frozenset({"is_a", "name"})


def mid_chain(answer: str, question: str, facts: Sequence[tuple[str, str, str]]) -> bool:
    """Whether ``answer`` names the middle of a chain of ``facts`` (normalised (subject, relation,
    object)) that ``question`` goes on past. The adapter was trained on one-hop questions; for "Who
    is Sam's sister married to?" it answers the first hop, "Mary" (sister -> Mary -> married_to).
    That is: the answer is the object of one fact and the subject of another (not one that only
    describes it: "Nala is a cat" is no hop for "What is my cat's name?"), and the question does
    not end with the relation that led to it ("Who is Sam's sister?", "What is Sam's sister's name?"
    and "What is Sam's sister called?" are answered by "Mary"). Measured on examples/scenarios: with
    this fallback to the text path multi_hop went from 3/9 to 5/9, no other category changed."""
    a = normalize_name(answer)
    if not a or not any(s == a and r not in _SELF_RELATIONS for s, r, _ in facts):
        return False
    asked = re.sub(r"(?:'s name| name| called| named)$", "", normalize_name(question))  # = the entity
    return any(o == a and not asked.endswith(r.replace("_", " ")) for _, r, o in facts)
