"""Knowledge tokens from facts: key and value vectors from the KB's embedder, cached by text, plus
the prompt format the fusion adapter is trained and evaluated with."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from agent.fusion.adapter import KnowledgeTokens
from agent.generation.llm import Message
from agent.fusion.synth import key_text

#: the system prompt of fusion training and evaluation (and of the agent's fusion-only prompts)
QA_SYSTEM = "Answer the question with a few words. If you do not know the answer, say \"I don't know.\""


def qa_messages(question: str, fact_texts: Sequence[str] = ()) -> list[Message]:
    """The QA prompt: the question, with the facts as text before it when given."""
    if fact_texts:
        facts = "\n".join(f"- {t}" for t in fact_texts)
        return [Message("system", QA_SYSTEM), Message("user", f"Facts:\n{facts}\n\nQuestion: {question}")]
    return [Message("system", QA_SYSTEM), Message("user", question)]


class KnowledgeEncoder:
    """Embeds key/value texts with the KB's embedder, caching vectors by text (facts repeat across turns)."""

    def __init__(self, embedder, cache_size: int = 200_000):
        self.embedder = embedder
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = cache_size

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, embedding only the texts not cached yet (in one batch)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            vecs = np.asarray(self.embedder.embed_documents(todo), dtype=np.float32)
            for t, v in zip(todo, vecs):
                self._cache[t] = v
        out = np.empty((len(texts), self.embedder.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self._cache[t]
            self._cache.move_to_end(t)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return out

    def query(self, text: str) -> np.ndarray:
        return np.asarray(self.embedder.embed_query(text), dtype=np.float32)

    def tokens(self, triples: Sequence[tuple[str, str, str]], question: str | None, start: int = 0,
               labels: Sequence[str] = (), kinds: Sequence[str] = (),
               query: np.ndarray | None = None) -> KnowledgeTokens:
        """Knowledge tokens for (subject, relation, value) triples, read from token ``start`` on."""
        keys = self.vectors([key_text(s, r) for s, r, _ in triples]) if triples else np.zeros((0, self.embedder.dim),
                                                                                                np.float32)
        values = self.vectors([v for _, _, v in triples]) if triples else keys.copy()
        if query is None and question is not None:
            query = self.query(question)
        return KnowledgeTokens(keys, values, query, tuple(labels), start, tuple(kinds),
                               tuple(v for _, _, v in triples))
