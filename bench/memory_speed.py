"""Speed figures of the memory benchmark: ingest vs the models alone, and recall latency at a large KB.

Both are measured in the same process and run, side by side, as the README asks for ratios.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from agent.memory.ingest import PARSE_CHARS, ChatTurn, parse_time
from agent.pipeline.loop import Agent, AgentConfig
from kb import KBConfig, KnowledgeBase, NewEpisode, NewFact
from kb.config import EMBED_CHARS
from kb.errors import KBError


def ingest_vs_models(turns: list[ChatTurn], nlp, embedder, llm, rounds: int = 2) -> dict:
    """Seconds to parse (human turns) and embed (all turns) with the models alone, against
    Agent.ingest of the same turns into a fresh KB with the same, uncached embedder; best of ``rounds``."""
    human = [t.text[:PARSE_CHARS] for t in turns if t.speaker != "assistant"]
    texts = [t.text.strip()[:EMBED_CHARS] for t in turns]
    models, ingest = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _doc in nlp.pipe(human, batch_size=32):
            pass
        embedder.embed_documents(texts)
        models.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            kb = KnowledgeBase.open(Path(tmp) / "kb", embedder=embedder, config=KBConfig(show_progress=False))
            with Agent(kb, llm, "user", AgentConfig(), nlp=nlp, owns_kb=True, fusion="off") as agent:
                t1 = time.perf_counter()
                agent.ingest(turns, me="user")
                ingest.append(time.perf_counter() - t1)
    m, i = min(models), min(ingest)
    return {"turns": len(turns), "models_alone_s": m, "ingest_s": i, "models_turns_per_s": len(turns) / m,
            "ingest_turns_per_s": len(turns) / i, "ratio": m / i}


def recall_latency(items: list[dict], cache, embedder, nlp, llm, size: int, kbs: Path | None,
                   questions: int = 50) -> dict:
    """Recall latency on one KB of about ``size`` episodes (the dev haystacks' turns, vectors from the
    embedding cache) plus the facts extracted from them (copied from the --kbs KBs where present).
    Queries are embedded live with the uncached ``embedder``, as in a chat."""
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase.open(Path(tmp) / "kb", embedder=embedder, config=KBConfig(show_progress=False))
        n_eps = n_facts = 0
        seen: set[str] = set()
        for item in items:
            if n_eps >= size:
                break
            eps = []
            for sid, date, session in zip(item["haystack_session_ids"], item["haystack_dates"],
                                          item["haystack_sessions"]):
                if sid in seen:
                    continue
                seen.add(sid)
                at = parse_time(date, "haystack date")
                for j, t in enumerate(session):
                    if t["content"].strip():
                        role = "user" if t["role"] == "user" else "assistant"
                        eps.append(NewEpisode(t["content"], "user", "user" if role == "user" else "assistant",
                                              role, sid, j, at + j * 1e-3, f"{sid}_{j + 1}"))
            if not eps:
                continue
            vecs = cache.embed_documents([e.text.strip()[:EMBED_CHARS] for e in eps])
            kb.add_episodes(eps, vectors=vecs)
            n_eps += len(eps)
            if kbs is not None and (kbs / item["question_id"] / "INGESTED.json").exists():
                try:
                    with KnowledgeBase.open(kbs / item["question_id"], read_only=True,
                                            config=KBConfig(show_progress=False)) as src:
                        facts = [NewFact(f.subject, f.relation, f.object, f.text, user="user", time=f.stated_at)
                                 for f in src.facts(user="user")]
                except KBError:
                    facts = []
                if facts:
                    kb.add_facts(facts)
                    n_facts += len(facts)
        with Agent(kb, llm, "user", AgentConfig(), nlp=nlp, owns_kb=True, fusion="off") as agent:
            agent.recall("warm up: what did I say about my car?")
            lat, models, searched = [], [], []
            in_search = [0.0]
            search = kb.search

            def timed_search(*a, **kw):  # the KB's share of each recall: every kb.search it makes
                t = time.perf_counter()
                try:
                    return search(*a, **kw)
                finally:
                    in_search[0] += time.perf_counter() - t

            kb.search = timed_search
            for item in items[:questions]:
                now = parse_time(item["question_date"], "question_date")
                in_search[0] = 0.0
                t0 = time.perf_counter()
                agent.recall(item["question"], now=now)
                lat.append((time.perf_counter() - t0) * 1000)
                searched.append(in_search[0] * 1000)
            del kb.search  # the class method again
            for item in items[:questions]:  # the two model calls recall makes, alone, on the same questions
                t0 = time.perf_counter()
                nlp(item["question"])
                embedder.embed_query(item["question"])
                models.append((time.perf_counter() - t0) * 1000)
    rest = [a - b for a, b in zip(lat, models)]
    return {"episodes": n_eps, "facts": n_facts, "questions": len(lat),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "models_p50_ms": float(np.percentile(models, 50)),
            "without_models_p50_ms": float(np.percentile(rest, 50)),
            "without_models_p99_ms": float(np.percentile(rest, 99)),
            "kb_search_p50_ms": float(np.percentile(searched, 50)), "kb_search_p99_ms": float(np.percentile(searched, 99))}
