"""The learned ranker: a logistic regression over each search candidate's features, replacing hand-set fusion weights.

Why a linear model: the hand-tuned fusion (0.6 dense + 0.4 BM25, a graph vote, a human-turn weight)
is already a linear score over a few features; learning the weights, and adding features the hand
formula could not weigh (ranks, the candidate's session, its role against a question asking what
"you" said), is the reranking stage the memory issue asks for without a cross-encoder, which no
package ships. It costs microseconds per candidate. Trained by ``bench/train_ranker.py`` on the
LongMemEval dev split (labels: the evidence turns), with grouped cross-validation reported in the
README; the weights ship as JSON (never pickled) beside this module.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from agent.choices import Choice
from agent.errors import BadInputError
from kb import Hit, Role

#: the features, in the order of a feature matrix's columns (a weights file names them: it must match)
FEATURES = (
    "dense",  # cosine, min-max normalised over the candidates (0 when the vector list missed it)
    "bm25",  # BM25, min-max normalised likewise
    "cosine",  # the raw cosine (absolute closeness, which min-max throws away)
    "dense_rrank",  # 1 / rank in the dense list
    "bm25_rrank",  # 1 / rank in the keyword list
    "graph",  # reached from the question's entities in the fact graph
    "fact",  # a fact rather than an utterance
    "assistant",  # said by the assistant
    "assistant_asked",  # said by the assistant, and the question asks what "you" said or suggested
    "length",  # log characters / 10: long turns match many words by chance
    "session_share",  # share of the candidates from the same session
    "session_best",  # best dense + BM25 of the other candidates of the same session
    "age_rank",  # 0 for the newest candidate .. 1 for the oldest
)
_ASKS_YOU = re.compile(r"(?i)\b(?:you|your)\b")
WEIGHTS = Path(__file__).with_name("weights") / "ranker-v1.json"


class Scoring(Choice):
    """How recall scores its search candidates."""

    LEARNED = "learned"  # the packaged (or RecallConfig.ranker_path) logistic regression
    HAND = "hand"  # the convex dense/BM25 fusion with hand-set weights (RecallConfig.dense_share ...)


def features(hits: Sequence[Hit], query: str) -> np.ndarray:
    """(len(hits), len(FEATURES)) float32: each candidate's features within this candidate list."""
    n = len(hits)
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    if n == 0:
        return x
    dense = minmax([h.vector_score for h in hits])
    bm25 = minmax([h.keyword_score for h in hits])
    by_cos = sorted((i for i, h in enumerate(hits) if h.vector_score is not None), key=lambda i: -hits[i].vector_score)
    dense_rank = {i: r for r, i in enumerate(by_cos, start=1)}
    asks_you = bool(_ASKS_YOU.search(query))
    sessions: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hits):
        if h.episode is not None and h.episode.session is not None:
            sessions[h.episode.session].append(i)
    times = np.array([(h.episode.time if h.episode is not None else h.fact.valid_from) for h in hits])  # type: ignore[union-attr]
    order = np.argsort(-times, kind="stable")
    age = np.empty(n, dtype=np.float32)
    age[order] = np.arange(n, dtype=np.float32) / max(n - 1, 1)
    combined = [d + b for d, b in zip(dense, bm25)]
    for i, h in enumerate(hits):
        ep = h.episode
        assistant = ep is not None and ep.role == Role.ASSISTANT.value
        mates = sessions.get(ep.session, []) if ep is not None and ep.session is not None else []
        x[i] = (dense[i], bm25[i], h.vector_score or 0.0, 1.0 / dense_rank[i] if i in dense_rank else 0.0,
                1.0 / h.keyword_rank if h.keyword_rank else 0.0, 1.0 if h.via_entities else 0.0,
                1.0 if h.fact is not None else 0.0, 1.0 if assistant else 0.0, 1.0 if assistant and asks_you else 0.0,
                math.log1p(len(h.text)) / 10.0, len(mates) / n,
                max((combined[j] for j in mates if j != i), default=0.0), age[i])
    return x


@dataclass(frozen=True)
class LinearRanker:
    """score = ((x - mean) / scale) @ weights + bias; higher is better."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    trained_on: str = ""  # what it was fit on, for the record

    def __post_init__(self) -> None:
        n = len(FEATURES)
        for name in ("mean", "scale", "weights"):
            if len(getattr(self, name)) != n:
                raise BadInputError(f"ranker {name} has {len(getattr(self, name))} values; expected {n} ({', '.join(FEATURES)})")
        if any(s <= 0 for s in self.scale):
            raise BadInputError(f"ranker scale must be > 0 everywhere, got {self.scale}")

    def logit(self, x: np.ndarray) -> np.ndarray:
        """(n,) scores: higher ranks first (pairwise-trained, so only their order within a list means much)."""
        return ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.weights) + self.bias

    def to_json(self) -> str:
        return json.dumps({"format": 1, "features": list(FEATURES), "mean": list(self.mean), "scale": list(self.scale),
                           "weights": list(self.weights), "bias": self.bias, "trained_on": self.trained_on}, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "ranker") -> LinearRanker:
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise BadInputError(f"{where} is not JSON: {e}") from None
        if not isinstance(raw, dict) or raw.get("format") != 1:
            raise BadInputError(f"{where}: format {raw.get('format') if isinstance(raw, dict) else None!r} "
                                "is not supported; expected 1")
        if raw.get("features") != list(FEATURES):
            raise BadInputError(f"{where} was trained on features {raw.get('features')!r}; this version computes "
                                f"{list(FEATURES)}: retrain it with bench/train_ranker.py")
        try:
            return cls(tuple(map(float, raw["mean"])), tuple(map(float, raw["scale"])),
                       tuple(map(float, raw["weights"])), float(raw["bias"]), str(raw.get("trained_on", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(f"{where}: bad or missing field ({e})") from None


@lru_cache(maxsize=8)
def load(path: str | None = None) -> LinearRanker:
    """The ranker in ``path`` (default: the packaged weights), read once per process."""
    p = Path(path) if path else WEIGHTS
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInputError(f"cannot read the ranker weights {str(p)!r}: {e.strerror or e}") from None
    return LinearRanker.from_json(text, str(p))


def minmax(values: Sequence[float | None]) -> list[float]:
    """``values`` scaled onto [0, 1] over those present; a missing value is 0."""
    present = [v for v in values if v is not None]
    if not present:
        return [0.0] * len(values)
    lo, hi = min(present), max(present)
    span = hi - lo
    return [0.0 if v is None else (1.0 if span <= 0 else (v - lo) / span) for v in values]
