"""Memory benchmark on LongMemEval_S (dev split): ingest each haystack with Agent.ingest, ask with Agent.recall.

    python bench/memory_eval.py                       # the whole dev split, recall only
    python bench/memory_eval.py --limit 20 --answers  # plus answers of the packaged model
    python bench/memory_eval.py --ingest-speed 300 --latency 50000

Prints a table per question type and writes JSON (--json). Metrics as ../shared/data/longmemeval-dev/
README.md defines them: the ranked turn ids are the source ids of the recalled memories (a fact
counts as the turns it was learned from), duplicates removed, cut at k. ``_abs`` questions are
not scored for recall. Turn embeddings are cached by content hash (--cache) so iterations only
embed new text; the cache holds what the same MiniLM weights produce (see --fill-cache).
"""
from __future__ import annotations

import argparse
import json
import re
import string
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.evals.grounded import judge, support_texts  # noqa: E402
from agent.generation.model import Capabilities, GenerationStats  # noqa: E402
from agent.memory.ingest import ChatTurn, parse_time  # noqa: E402
from agent.pipeline.loop import Agent, AgentConfig  # noqa: E402
from agent.memory.recall import RecallConfig  # noqa: E402
from bench.embed_cache import CachedEmbedder  # noqa: E402
from kb import KBConfig, KnowledgeBase  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "longmemeval-dev"
KS = (5, 10)


def load_items(data: Path, unpack: Path) -> list[dict]:
    """The dev items, unpacked once into ``unpack``; sorted by file name (stable order for --limit)."""
    if not any(unpack.glob("*.json")):
        unpack.mkdir(parents=True, exist_ok=True)
        with tarfile.open(data / "longmemeval-s-dev.tar.gz") as tar:
            tar.extractall(unpack, filter="data")
    return [json.loads(p.read_text()) for p in sorted(unpack.glob("*.json"))]


def turns_of(item: dict) -> list[ChatTurn]:
    out = []
    for sid, date, session in zip(item["haystack_session_ids"], item["haystack_dates"], item["haystack_sessions"]):
        for j, t in enumerate(session):
            if t["content"].strip():
                out.append(ChatTurn(t["role"], t["content"], date, sid, f"{sid}_{j + 1}"))
    return out


def evidence(item: dict) -> set[str]:
    return {f"{sid}_{j + 1}" for sid, session in zip(item["haystack_session_ids"], item["haystack_sessions"])
            for j, t in enumerate(session) if t.get("has_answer")}


def ranked_turns(memories, k: int) -> list[str]:
    out: list[str] = []
    for m in memories:
        for s in m.source_ids:
            if s not in out:
                out.append(s)
    return out[:k]


def asked_at(item: dict) -> float:
    """When the question is asked: LongMemEval asks it after the whole history, but its times are only
    day-precise: in 15 of the 184 dev questions ``question_date`` is earlier on the same day than some
    of the sessions (evidence included), and recall rightly hides what was said after ``now``. So the
    question is asked at the later of its own time and its last session's."""
    times = [parse_time(d, "haystack_dates") for d in item["haystack_dates"]]
    return max([parse_time(item["question_date"], "question_date"), *times])


def session_of(turn_id: str) -> str:
    return turn_id.rsplit("_", 1)[0]


def scores(ranked: list[str], gold: set[str], gold_sessions: set[str]) -> dict[str, float]:
    out = {}
    for k in KS:
        top = ranked[:k]
        hit = gold & set(top)
        out[f"all@{k}"] = float(hit == gold)
        out[f"any@{k}"] = float(bool(hit))
        out[f"frac@{k}"] = len(hit) / len(gold)
        out[f"sess@{k}"] = float(gold_sessions <= {session_of(t) for t in top})
    return out


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


class NoLLM:
    """A stand-in model for recall-only runs: recall never generates."""

    id = "none"
    capabilities = Capabilities()  # it cannot sample, fuse or cache anything
    last_stats = GenerationStats()

    def stream(self, messages, max_new_tokens=None):
        yield ""

    def complete(self, prompt, max_new_tokens=128):
        return ""

    def reset_cache(self):
        pass


def run(args) -> dict:
    items = load_items(args.data, args.unpack)
    if args.types:
        items = [it for it in items if it["question_type"] in args.types]
    items = items[: args.limit] if args.limit else items
    from kb.embeddings import SentenceTransformerEmbedder

    embedder = CachedEmbedder(SentenceTransformerEmbedder(), args.cache)
    from agent.language.nlp import load_nlp

    nlp = load_nlp()
    llm = NoLLM()
    if args.answers:
        from agent.generation.llm import CausalLM

        llm = CausalLM(AgentConfig().llm)
    recall_cfg = replace(RecallConfig(), **{k: v for k, v in args.recall.items()})
    config = AgentConfig(recall=recall_cfg)
    rows: list[dict] = []
    ingest_s = ingest_turns = 0.0
    for n, item in enumerate(items, 1):
        with tempfile.TemporaryDirectory() as tmp:
            where = (args.kbs / item["question_id"]) if args.kbs else Path(tmp) / "kb"
            done = where / "INGESTED.json"  # a KB kept by --kbs is ingested once, then only asked
            kb = KnowledgeBase.open(where, embedder=embedder, config=KBConfig(show_progress=False))
            agent = Agent(kb, llm, "user", config, nlp=nlp, owns_kb=True,
                          fusion=args.fusion if args.answers else "off")
            try:
                if done.exists():
                    took = json.loads(done.read_text())
                else:
                    turns = turns_of(item)
                    t0 = time.perf_counter()
                    agent.ingest(turns, me="user")
                    took = {"turns": len(turns), "seconds": time.perf_counter() - t0}
                    if args.kbs:
                        done.write_text(json.dumps(took))
                ingest_s += took["seconds"]
                ingest_turns += took["turns"]
                now = asked_at(item)
                t1 = time.perf_counter()
                mems = agent.recall(item["question"], k=max(KS) * 2, now=now)
                latency = time.perf_counter() - t1
                row = {"id": item["question_id"], "type": item["question_type"], "latency_ms": latency * 1000,
                       "ranked": ranked_turns(mems, max(KS))}
                gold = evidence(item)
                if gold and not item["question_id"].endswith("_abs"):
                    row.update(scores(row["ranked"], gold, set(item["answer_session_ids"])))
                if args.answers:
                    reply = agent.chat(item["question"], now=now)
                    row["answer"] = reply.text
                    row["correct"] = float(normalise(str(item["answer"])) in normalise(reply.text))
                    g = judge(reply.text, bool(row["correct"]), support_texts(reply, item["question"], "user"), nlp)
                    row["grounded"] = float(g.grounded)
                    row["unsupported"] = list(g.unsupported)
                rows.append(row)
            finally:
                agent.close()
        if args.progress:
            done = [r for r in rows if "any@5" in r]
            mean = np.mean([r["any@5"] for r in done]) if done else float("nan")
            print(f"\r{n}/{len(items)} any@5 so far {mean:.3f}", end="", file=sys.stderr, flush=True)
    if args.progress:
        print(file=sys.stderr)
    return {"rows": rows, "ingest_turns_per_s": ingest_turns / ingest_s if ingest_s else None,
            "cache_hits": embedder.hits, "cache_misses": embedder.misses, "recall_config": args.recall,
            "fusion": args.fusion if args.answers else None}


METRICS = [f"{m}@{k}" for k in KS for m in ("all", "any", "frac", "sess")]


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["type"]].append(r)
        groups["all"].append(r)
    out = {}
    for name, rs in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        scored = [r for r in rs if "any@5" in r]
        s = {"questions": len(rs), "scored": len(scored)}
        for m in METRICS:
            s[m] = float(np.mean([r[m] for r in scored])) if scored else float("nan")
        answered = [r for r in rs if "correct" in r]
        if answered:
            s["answer_acc"] = float(np.mean([r["correct"] for r in answered]))
            s["grounded"] = float(np.mean([r["grounded"] for r in answered]))
            s["unsupported_claims"] = float(np.mean([bool(r["unsupported"]) for r in answered]))
        s["latency_p50_ms"] = float(np.percentile([r["latency_ms"] for r in rs], 50))
        out[name] = s
    return out


def print_table(summary: dict[str, dict[str, float]]) -> None:
    answers = ["answer_acc", "grounded", "unsupported_claims"]
    cols = ["scored"] + METRICS + (answers if any("answer_acc" in s for s in summary.values()) else [])
    cols.append("latency_p50_ms")
    print("| type | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, s in summary.items():
        cells = [f"{s[c]:.3f}" if isinstance(s.get(c), float) else str(s.get(c, "")) for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")


def speed(args) -> dict:
    """--ingest-speed and --latency: the figures of bench/memory_speed.py."""
    if not (args.ingest_speed or args.latency):
        return {}
    from agent.language.nlp import load_nlp
    from bench.memory_speed import ingest_vs_models, recall_latency
    from kb.embeddings import SentenceTransformerEmbedder

    items = load_items(args.data, args.unpack)
    nlp, plain, out = load_nlp(), SentenceTransformerEmbedder(), {}
    if args.ingest_speed:
        r = out["ingest_speed"] = ingest_vs_models(turns_of(items[0])[: args.ingest_speed], nlp, plain, NoLLM())
        print(f"ingest {r['turns']} turns: models alone (parse + embed) {r['models_turns_per_s']:.1f} turns/s, "
              f"Agent.ingest {r['ingest_turns_per_s']:.1f} turns/s: {r['ratio']:.2f}x of the models alone")
    if args.latency:
        r = out["latency"] = recall_latency(items, CachedEmbedder(plain, args.cache), plain, nlp, NoLLM(),
                                            args.latency, args.kbs)
        print(f"recall latency at {r['episodes']:,} episodes + {r['facts']:,} facts, {r['questions']} questions: "
              f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; the question's parse + embedding alone "
              f"p50 {r['models_p50_ms']:.1f} ms; recall without them p50 {r['without_models_p50_ms']:.1f} ms, "
              f"p99 {r['without_models_p99_ms']:.1f} ms")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding longmemeval-s-dev.tar.gz")
    ap.add_argument("--unpack", type=Path, default=Path(tempfile.gettempdir()) / "kgrow-longmemeval-dev")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "kgrow-embed-cache.sqlite")
    ap.add_argument("--kbs", type=Path, help="keep each question's KB here and reuse it on later runs "
                    "(ablations of recall settings then skip the ingest)")
    ap.add_argument("--limit", type=int, default=0, help="first N questions only (0: all)")
    ap.add_argument("--types", nargs="*", help="only these question types")
    ap.add_argument("--answers", action="store_true", help="also answer with the packaged model")
    ap.add_argument("--fusion", choices=["on", "off"], default="on")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a RecallConfig field for an ablation, e.g. --set neighbours=1")
    ap.add_argument("--ingest-speed", type=int, default=0, metavar="N",
                    help="also time Agent.ingest of N turns against parse + embed alone (uncached)")
    ap.add_argument("--latency", type=int, default=0, metavar="N",
                    help="also time recall on one KB of N episodes (+ the facts of the --kbs KBs)")
    ap.add_argument("--speed-only", action="store_true", help="only the speed figures")
    ap.add_argument("--json", type=Path, help="write the rows and the summary here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.progress = not args.quiet
    fields = RecallConfig.__dataclass_fields__
    args.recall = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields:
            ap.error(f"--set {item!r}: unknown field {name!r}; valid: {', '.join(fields)}")
        default = getattr(RecallConfig(), name)
        kind = str if default is None else type(default)  # ranker_path: a path or nothing
        args.recall[name] = value.lower() in ("1", "true", "yes", "on") if kind is bool else kind(value)
    out = run(args) if not args.speed_only else {"rows": []}
    summary = summarise(out["rows"])
    if out["rows"]:
        print_table(summary)
        print(f"ingest: {out['ingest_turns_per_s']:.1f} turns/s (embedding cache hits {out['cache_hits']}, "
              f"misses {out['cache_misses']})")
    out.update(speed(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, **out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
