"""Knowledge-base benchmark: ingest rate, search latency/recall/memory at 1k..1M, forget cost, LangChain ratio.

Run:  python bench/kb_bench.py                      # full run (1M takes ~10 minutes on 2 cores)
      python bench/kb_bench.py --sizes 1000,10000 --ingest 2000 --quick
Prints tables and writes bench/results/kb_bench.json. Each size is measured in a fresh child
process so that resident memory is that of one knowledge base. Vectors for the search section are
clustered around real MiniLM embeddings of generated fact sentences (uniform random vectors would
make every approximate index look broken), and stored through the normal add_facts path.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
RELS = [("lives_in", "lives in"), ("works_at", "works at"), ("likes", "likes"), ("knows", "knows"),
        ("owns", "owns"), ("studied", "studied"), ("visited", "visited"), ("plays", "plays")]
OBJECTS = ["paris", "acme", "jazz", "chess", "a red bicycle", "berlin", "physics", "tennis", "a small boat",
           "globex", "the violin", "lisbon", "gardening", "rome", "initech", "poetry", "a grey cat", "oslo"]


def sentence(i: int) -> tuple[str, str, str, str]:
    """Deterministic synthetic fact i: (subject, relation, object, text)."""
    r = random.Random(i)
    subj = f"{r.choice(NAMES)} {i}"
    rel, verb = r.choice(RELS)
    obj = r.choice(OBJECTS)
    return subj, rel, obj, f"{subj.title()} {verb} {obj}."


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


class TimedEmbedder:
    """Wraps an embedder and accumulates the seconds spent embedding."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    id = property(lambda self: self.inner.id)
    dim = property(lambda self: self.inner.dim)

    def embed_documents(self, texts):
        t = time.perf_counter()
        out = self.inner.embed_documents(texts)
        self.seconds += time.perf_counter() - t
        return out

    def embed_query(self, text):
        return self.embed_documents([text])[0]


# --------------------------------------------------------------------------- ingest


def bench_ingest(n: int, batch: int) -> dict:
    from kb import KBConfig, KnowledgeBase, NewFact, SentenceTransformerEmbedder

    emb = TimedEmbedder(SentenceTransformerEmbedder())
    emb.inner.embed_documents([sentence(-i)[3] for i in range(1, 2 * batch)])  # warm-up: thread pools, allocator
    with tempfile.TemporaryDirectory() as d:
        kb = KnowledgeBase.open(Path(d) / "kb", embedder=emb, config=KBConfig(show_progress=False))
        items = [NewFact(s, r, o, t, user=NAMES[i % 3]) for i, (s, r, o, t) in ((i, sentence(i)) for i in range(n))]
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            kb.add_facts(items[i : i + batch])
        total = time.perf_counter() - t0
        kb.close()
        # the same texts through LangChain's FAISS store on the same embedder, side by side
        lc = langchain_ingest([it.text for it in items], emb.inner, batch)
    return {"facts": n, "batch": batch, "seconds": total, "facts_per_s": n / total,
            "embed_s": emb.seconds, "storage_s": total - emb.seconds,
            "embed_share": emb.seconds / total, "langchain": lc}


def _lc_embeddings(inner):
    from langchain_core.embeddings import Embeddings

    class Wrapped(Embeddings):
        def embed_documents(self, texts):
            return inner.embed_documents(texts).tolist()

        def embed_query(self, text):
            return inner.embed_query(text).tolist()

    return Wrapped()


def langchain_ingest(texts: list[str], inner, batch: int) -> dict:
    try:
        from langchain_community.vectorstores import FAISS
    except ImportError as e:
        return {"skipped": f"langchain_community not installed ({e})"}
    emb = _lc_embeddings(inner)
    t0 = time.perf_counter()
    store = FAISS.from_texts(texts[:batch], emb)
    for i in range(batch, len(texts), batch):
        store.add_texts(texts[i : i + batch])
    total = time.perf_counter() - t0
    return {"seconds": total, "facts_per_s": len(texts) / total}


# --------------------------------------------------------------------------- search (child process)


def clustered_vectors(n: int, dim: int, centres: np.ndarray, seed: int) -> np.ndarray:
    """n unit vectors scattered around real sentence embeddings (the centres)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        c = centres[rng.integers(0, len(centres), m)]
        spread = rng.uniform(0.15, 0.35, (m, 1)).astype(np.float32)
        x = c + spread * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def search_child(n: int, queries: int, centres_path: str, out_path: str) -> None:
    import faiss

    from kb import KBConfig, KnowledgeBase, NewFact
    from kb.embeddings import HashEmbedder
    from kb.log import Scope, vids

    centres = np.load(centres_path)
    dim = centres.shape[1]
    rss0 = rss_mb()
    vecs = clustered_vectors(n, dim, centres, seed=1)
    qvecs = clustered_vectors(queries, dim, centres, seed=2)
    res: dict = {"n": n}

    with tempfile.TemporaryDirectory() as d:
        kb = KnowledgeBase.open(Path(d) / "kb", embedder=HashEmbedder(dim, id="bench"), config=KBConfig(show_progress=False))
        t0 = time.perf_counter()
        step = 20_000
        for i in range(0, n, step):
            m = min(step, n - i)
            items = []
            for j in range(i, i + m):
                s, r, o, t = sentence(j)
                items.append(NewFact(s, r, o, t, user="ana" if j % 10 else "ben"))
            kb.add_facts(items, vectors=vecs[i : i + m])
        res["build_s"] = time.perf_counter() - t0
        del vecs  # the generated vectors are freed: what stays is the KB (index, SQLite cache, Python)
        res["index_kind"] = kb.stats().index_kind
        res["rss_mb"] = rss_mb() - rss0

        # exact ground truth over ana's visible vectors (every fact of hers is active here)
        ids, allv = kb._keeper.index.dump()
        rows = dict(kb._log.db.execute("SELECT vid, user FROM facts"))
        visible = np.array([rows[vids.split(int(i))[1]] in ("ana", "") for i in ids])
        vis_ids, vis_vecs = ids[visible], allv[visible]
        del allv
        faiss.omp_set_num_threads(1)
        scope = Scope("ana", None)
        from kb.facts import Kind

        kinds = (Kind.FACT,)
        lat_vec, lat_full, recall = [], [], []
        for qi, q in enumerate(qvecs):
            t = time.perf_counter()
            got = kb._search.vector_ranked(q, 10, scope, kinds)[:10]
            lat_vec.append(time.perf_counter() - t)
            truth = vis_ids[np.argsort(-(vis_vecs @ q))[:10]]
            recall.append(len({v for v, _ in got} & set(truth.tolist())) / 10)
            s, r, o, text = sentence(10_000_000 + qi)
            t = time.perf_counter()
            kb.search(f"where does {s} live? {o}", k=10, user="ana", kinds=["fact"], query_vector=q)
            lat_full.append(time.perf_counter() - t)
        res["vector_search"] = pct(lat_vec)
        res["hybrid_search"] = pct(lat_full)
        res["recall_at_10"] = float(np.mean(recall))

        # forgetting and superseding: cost per operation, and never a stale hit afterwards
        rng = np.random.default_rng(3)
        victims = [kb._log.db.execute("SELECT id, vid FROM facts WHERE vid=?", (int(v),)).fetchone()
                   for v in rng.integers(1, n, 200)]
        victims = [v for v in victims if v is not None]
        lat_forget, stale = [], 0
        for fid, vid in victims[:100]:
            t = time.perf_counter()
            kb.forget(fid)
            lat_forget.append(time.perf_counter() - t)
        lat_sup = []
        for fid, vid in victims[100:]:
            f = kb._log.fact(fid)
            if f is None or f.status.value != "active":
                continue
            t = time.perf_counter()
            kb.add_facts([NewFact(f.subject, "lives_in", f"atlantis {vid}", user=f.user)],
                         vectors=qvecs[:1])
            kb.add_facts([NewFact(f.subject, "lives_in", f"lemuria {vid}", user=f.user)], vectors=qvecs[1:2])
            lat_sup.append((time.perf_counter() - t) / 2)
        gone = {fid for fid, _ in victims[:100]}
        for fid, vid in victims[:100]:
            v = kb._log.db.execute("SELECT vector FROM facts WHERE id=?", (fid,)).fetchone()[0]
            q = np.frombuffer(v, dtype=np.float32)
            stale += sum(h.id in gone for h in kb.search("x", k=10, user=None, kinds=["fact"], query_vector=q))
        res["forget"] = pct(lat_forget)
        res["supersede"] = pct(lat_sup)
        res["stale_hits_after_forget"] = stale
        kb.close()

    # LangChain's FAISS store on the same vectors: latency of similarity_search_by_vector
    res["langchain"] = langchain_search(n, dim, centres, qvecs)
    Path(out_path).write_text(json.dumps(res))


def langchain_search(n: int, dim: int, centres: np.ndarray, qvecs: np.ndarray) -> dict:
    try:
        from langchain_community.vectorstores import FAISS
    except ImportError as e:
        return {"skipped": str(e)}
    if n > 200_000:
        return {"skipped": "LangChain's default store is an exact IndexFlatL2; measured up to 100k"}
    import faiss

    from kb.embeddings import HashEmbedder

    vecs = clustered_vectors(n, dim, centres, seed=1)
    pairs = [(sentence(i)[3], vecs[i].tolist()) for i in range(n)]
    store = FAISS.from_embeddings(pairs, _lc_embeddings(HashEmbedder(dim)))
    faiss.omp_set_num_threads(1)
    lat = []
    for q in qvecs:
        t = time.perf_counter()
        store.similarity_search_by_vector(q.tolist(), k=10)
        lat.append(time.perf_counter() - t)
    return pct(lat)


# --------------------------------------------------------------------------- driver


def make_centres(path: Path, count: int) -> None:
    from kb import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    texts = [sentence(100_000_000 + i)[3] for i in range(count)]
    np.save(path, emb.embed_documents(texts))


def table(title: str, header: list[str], rows: list[list]) -> str:
    cells = [header] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    out = [f"\n{title}", line(header), "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000,1000000",
                    help="comma-separated KB sizes for search ('' skips the search section)")
    ap.add_argument("--ingest", type=int, default=10_000, help="facts embedded with MiniLM in the ingest test")
    ap.add_argument("--batch", type=int, default=1000, help="facts per add_facts call in the ingest test")
    ap.add_argument("--queries", type=int, default=1000, help="queries per size")
    ap.add_argument("--out", type=Path, default=RESULTS / "kb_bench.json")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n, q, centres, out = args.child
        search_child(int(n), int(q), centres, out)
        return

    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()}, "search": []}
    print(f"ingest: {args.ingest} facts with the packaged MiniLM, batches of {args.batch} ...", flush=True)
    ing = bench_ingest(args.ingest, args.batch)
    report["ingest"] = ing
    lc = ing["langchain"]
    print(table("Ingest (packaged MiniLM, bf16, 2 cores)",
                ["store", "facts/s", "embed s", "storage s", "embed share"],
                [["kgrow", ing["facts_per_s"], ing["embed_s"], ing["storage_s"], ing["embed_share"]],
                 ["langchain FAISS", lc.get("facts_per_s", float("nan")), "", "", ""]]))
    if "facts_per_s" in lc:
        print(f"ratio kgrow/langchain ingest rate: {ing['facts_per_s'] / lc['facts_per_s']:.2f}x "
              "(kgrow also dedups, supersedes, writes a durable log, FTS and provenance)")

    with tempfile.TemporaryDirectory() as d:
        centres = Path(d) / "centres.npy"
        make_centres(centres, 4000)
        for n in [int(s) for s in args.sizes.split(",") if s]:
            print(f"search: building a {n:,}-fact KB in a child process ...", flush=True)
            out = Path(d) / f"s{n}.json"
            subprocess.run([sys.executable, __file__, "--child", str(n), str(args.queries), str(centres), str(out)],
                           check=True)
            report["search"].append(json.loads(out.read_text()))
    rows = []
    for r in report["search"]:
        lcs = r["langchain"]
        ratio = (lcs["p50_ms"] / r["vector_search"]["p50_ms"]) if "p50_ms" in lcs else float("nan")
        rows.append([f"{r['n']:,}", r["index_kind"], r["vector_search"]["p50_ms"], r["vector_search"]["p99_ms"],
                     r["recall_at_10"], r["hybrid_search"]["p50_ms"], r["hybrid_search"]["p99_ms"],
                     r["forget"]["p50_ms"], r["supersede"]["p50_ms"], r["stale_hits_after_forget"],
                     r["rss_mb"], r["build_s"], lcs.get("p50_ms", "-"), ratio])
    print(table("Search (k=10, one user's scope, query embedding excluded; times in ms, memory in MB)",
                ["facts", "index", "vec p50", "vec p99", "recall@10", "hybrid p50", "hybrid p99", "forget p50",
                 "supersede p50", "stale", "RSS MB", "build s", "LC p50", "LC/kgrow"], rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
