"""Train the learned recall ranker (agent/memory/ranker.py) on the LongMemEval dev split, with grouped cross-validation.

    python bench/train_ranker.py --kbs DIR            # DIR: the KBs `bench/memory_eval.py --kbs DIR` ingested
    python bench/train_ranker.py --kbs DIR --write    # also write agent/memory/weights/ranker-v1.json

For every question the hand-scored recall's search candidates are captured with their features;
a candidate is positive when it came from an evidence turn. Questions are split into --folds
groups: each group is recalled with a ranker fitted on the other groups only (so every number in
the table is out-of-fold), next to the hand fusion in the same run. The shipped weights are then
fitted on every question. scikit-learn's LogisticRegression does the fitting (a well-kept solver;
the model is a dozen weights, stored as JSON).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.memory import recall as recall_mod  # noqa: E402
from agent.memory.ranker import FEATURES, WEIGHTS, LinearRanker, Scoring, features  # noqa: E402
from agent.memory.recall import RecallConfig  # noqa: E402
from agent.pipeline.loop import Agent, AgentConfig  # noqa: E402
from bench.embed_cache import CachedEmbedder  # noqa: E402
from bench.memory_eval import (DATA, KS, NoLLM, asked_at, evidence, load_items, print_table, ranked_turns,  # noqa: E402
                               scores, summarise)
from kb import KBConfig, KnowledgeBase  # noqa: E402


def open_agent(where: Path, embedder, nlp, recall: RecallConfig) -> Agent:
    kb = KnowledgeBase.open(where, embedder=embedder, config=KBConfig(show_progress=False))
    return Agent(kb, NoLLM(), "user", AgentConfig(recall=recall), nlp=nlp, owns_kb=True, fusion="off")


def candidates(items, kbs: Path, embedder, nlp) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per question: (features (n, F), labels (n,)) of the hand-scored recall's search candidates."""
    seen: list[tuple] = []
    fuse = recall_mod.Recaller._fuse

    def spy(self, hits, query):
        seen.append((list(hits), query))
        return fuse(self, hits, query)

    recall_mod.Recaller._fuse = spy
    out = []
    try:
        for item in items:
            seen.clear()
            with open_agent(kbs / item["question_id"], embedder, nlp, RecallConfig()) as agent:
                agent.recall(item["question"], k=max(KS) * 2, now=asked_at(item))
            gold = evidence(item)
            hits, query = seen[-1] if seen else ([], item["question"])
            src = [h.episode.source_id if h.episode is not None else None for h in hits]
            fact_src = [tuple(s.source_id for s in h.fact.sources) if h.fact is not None else () for h in hits]
            y = np.array([float((s in gold) or any(f in gold for f in fs)) for s, fs in zip(src, fact_src)])
            out.append((features(hits, query), y))
    finally:
        recall_mod.Recaller._fuse = fuse
    return out


def fit(data: list[tuple[np.ndarray, np.ndarray]], c: float, note: str) -> LinearRanker:
    """Pairwise (RankNet-style, linear): a logistic regression on differences between an evidence
    candidate and a non-evidence one of the same question, so only the order within a question is
    learned, not how many candidates a question has. Negatives: every non-evidence candidate."""
    from sklearn.linear_model import LogisticRegression

    x_all = np.concatenate([d[0] for d in data])
    mean, scale = x_all.mean(axis=0), x_all.std(axis=0)
    scale[scale < 1e-6] = 1.0
    diffs = []
    for x, y in data:
        z = (x - mean) / scale
        pos, neg = z[y > 0], z[y == 0]
        if len(pos) and len(neg):
            diffs.append((pos[:, None, :] - neg[None, :, :]).reshape(-1, z.shape[1]))
    d = np.concatenate(diffs)
    xs = np.concatenate([d, -d])
    ys = np.concatenate([np.ones(len(d)), np.zeros(len(d))])
    model = LogisticRegression(C=c, max_iter=2000, fit_intercept=False).fit(xs, ys)
    return LinearRanker(tuple(map(float, mean)), tuple(map(float, scale)), tuple(map(float, model.coef_[0])),
                        0.0, note)


def evaluate(items, kbs: Path, embedder, nlp, recall: RecallConfig) -> list[dict]:
    rows = []
    for item in items:
        with open_agent(kbs / item["question_id"], embedder, nlp, recall) as agent:
            mems = agent.recall(item["question"], k=max(KS) * 2, now=asked_at(item))
        row = {"id": item["question_id"], "type": item["question_type"], "latency_ms": 0.0,
               "ranked": ranked_turns(mems, max(KS))}
        gold = evidence(item)
        if gold and not item["question_id"].endswith("_abs"):
            row.update(scores(row["ranked"], gold, set(item["answer_session_ids"])))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--unpack", type=Path, default=Path(tempfile.gettempdir()) / "kgrow-longmemeval-dev")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "kgrow-embed-cache.sqlite")
    ap.add_argument("--kbs", type=Path, required=True, help="the KBs bench/memory_eval.py --kbs ingested")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    ap.add_argument("--write", action="store_true", help=f"write the weights fitted on every question to {WEIGHTS}")
    ap.add_argument("--json", type=Path, help="write the cross-validated and hand tables here")
    args = ap.parse_args(argv)
    from agent.language.nlp import load_nlp
    from kb.embeddings import SentenceTransformerEmbedder

    items = [it for it in load_items(args.data, args.unpack) if (args.kbs / it["question_id"] / "INGESTED.json").exists()]
    embedder = CachedEmbedder(SentenceTransformerEmbedder(), args.cache)
    nlp = load_nlp()
    data = candidates(items, args.kbs, embedder, nlp)
    print(f"{len(items)} questions, {sum(len(d[1]) for d in data)} candidates, "
          f"{int(sum(d[1].sum() for d in data))} from evidence turns", file=sys.stderr)
    hand = evaluate(items, args.kbs, embedder, nlp, RecallConfig())
    fold_of = [i % args.folds for i in range(len(items))]  # items are sorted by id: an arbitrary, fixed split
    learned: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in range(args.folds):
            train = [d for d, g in zip(data, fold_of) if g != f]
            ranker = fit(train, args.c, f"fold {f}")
            path = Path(tmp) / f"fold{f}.json"
            path.write_text(ranker.to_json())
            test = [it for it, g in zip(items, fold_of) if g == f]
            learned += evaluate(test, args.kbs, embedder, nlp,
                                replace(RecallConfig(), scoring=Scoring.LEARNED, ranker_path=str(path)))
    order = {it["question_id"]: i for i, it in enumerate(items)}
    learned.sort(key=lambda r: order[r["id"]])
    print("\nhand fusion (RecallConfig scoring=hand)")
    print_table(summarise(hand))
    print(f"\nlearned ranker, {args.folds}-fold cross-validated (each question ranked by a model that never saw it)")
    print_table(summarise(learned))
    full = fit(data, args.c, f"LongMemEval_S dev split, {len(items)} questions, C={args.c}")
    print("\nweights (standardised features):")
    for name, w in zip(FEATURES, full.weights):
        print(f"  {name:18s} {w:+.3f}")
    if args.write:
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        from kb.files import write_text_atomic

        write_text_atomic(WEIGHTS, full.to_json() + "\n")
        print(f"wrote {WEIGHTS}")
    if args.json:
        args.json.write_text(json.dumps({"hand": summarise(hand), "learned_cv": summarise(learned),
                                         "folds": args.folds, "c": args.c, "features": list(FEATURES),
                                         "weights": list(full.weights)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
