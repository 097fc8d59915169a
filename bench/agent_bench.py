"""Agent benchmark: per-turn memory overhead at up to 1M facts, KV-cache reuse, generation speed.

Run:  python bench/agent_bench.py                   # 1M facts (~6 minutes to build on 2 cores)
      python bench/agent_bench.py --facts 20000 --turns 10
Prints tables and writes bench/results/agent_bench.json.

1. Overhead: every step of a turn except LLM generation (state update with spaCy, query embedding
   with the packaged MiniLM, hybrid search, capped 2-hop walk, prompt assembly, extraction,
   write-back) over a scripted conversation against a KB holding N facts (their vectors
   precomputed, clustered around real MiniLM embeddings). The LLM is a stub here so only memory
   costs are timed.
2. KV-cache reuse: time to first token at turns 1, 5, 10, 20 of one conversation, with the prefix
   cache and with it reset before every turn, in the same run.
3. Generation speed of the default model, bf16 and fp32, on this machine's device.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from kb_bench import clustered_vectors, pct, sentence, table  # noqa: E402

STATEMENTS = ["My name is Sam.", "I live in Paris.", "I work at Acme.", "My sister is Mary.", "She lives in Rome.",
              "I like jazz.", "Mary works at Globex.", "My favourite colour is green.", "I have a dog named Rex.",
              "Actually, I moved to Berlin."]
QUESTIONS = ["Where do I live?", "Where does my sister live?", "What do I like?", "Where does Mary work?",
             "What is my name?", "Who is my sister?", "What is my favourite colour?", "Where do I work?"]


class StubLLM:
    """Answers instantly: isolates the memory work of a turn from generation."""

    id = "stub"

    def __init__(self) -> None:
        from agent.generation.model import Capabilities, GenerationStats

        self.capabilities = Capabilities()  # it cannot sample, fuse or cache anything
        self.last_stats = GenerationStats()

    def stream(self, messages, max_new_tokens=None) -> Iterator[str]:
        self.last_stats = type(self.last_stats)(new_tokens=1)
        yield "ok"

    def complete(self, prompt: str, max_new_tokens: int = 128) -> str:
        return "[]"

    def reset_cache(self) -> None:
        pass


def overhead(n_facts: int, turns: int) -> dict:
    from agent.pipeline.loop import Agent
    from agent.language.nlp import load_nlp
    from kb import KBConfig, KnowledgeBase, NewFact, SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    centres = emb.embed_documents([sentence(100_000_000 + i)[3] for i in range(2000)])
    nlp = load_nlp()
    out: dict = {"facts": n_facts}
    with tempfile.TemporaryDirectory() as d:
        kb = KnowledgeBase.open(Path(d) / "kb", embedder=emb, config=KBConfig(show_progress=False))
        t0 = time.perf_counter()
        step = 20_000
        for i in range(0, n_facts, step):
            m = min(step, n_facts - i)
            items = [NewFact(*sentence(j)[:3], sentence(j)[3], user="sam" if j % 2 else "other") for j in range(i, i + m)]
            kb.add_facts(items, vectors=clustered_vectors(m, emb.dim, centres, seed=i))
        out["build_s"] = time.perf_counter() - t0
        agent = Agent(kb, StubLLM(), "sam", nlp=nlp)
        script = [STATEMENTS[i % len(STATEMENTS)] if i % 2 == 0 else QUESTIONS[i % len(QUESTIONS)] for i in range(turns)]
        agent.chat("Hello!")  # warm-up: first spaCy and embedder calls allocate
        steps: dict[str, list[float]] = {k: [] for k in ("state", "retrieval", "extraction", "write_back", "total")}
        for line in script:
            r = agent.chat(line)
            t = r.timings
            for k in ("state", "retrieval", "extraction", "write_back"):
                steps[k].append(getattr(t, k))
            steps["total"].append(t.memory_overhead)
        out["steps"] = {k: pct(v) for k, v in steps.items()}
        kb.close()
    return out


def kv_reuse(turns: Sequence[int], device: str) -> dict:
    from agent.generation.llm import CausalLM, LLMConfig
    from agent.profile.profile import Profile
    from agent.generation.prompt import Exchange, build_messages, system_text, trim_history
    from kb.facts import Fact, Status

    llm = CausalLM(LLMConfig(device=device, max_new_tokens=24))
    fact = Fact("f_x", "sam", "lives_in", "paris", "Sam lives in Paris.", "sam", 1.0, Status.ACTIVE, 0.0, 0.0, None)
    res = {}
    for mode in ("reuse", "no_reuse"):
        history: list[Exchange] = []
        ttft = {}
        for turn in range(1, max(turns) + 1):
            q = f"Question {turn}: {QUESTIONS[turn % len(QUESTIONS)]} Please also remember the number {turn * 7}."
            msgs = build_messages(system_text(Profile("sam")), history, [fact], q, "Sam")
            if mode == "no_reuse":
                llm.reset_cache()
            reply = "".join(llm.stream(msgs))
            if turn in turns:
                s = llm.last_stats
                ttft[turn] = {"ttft_ms": s.time_to_first_token * 1e3, "prompt_tokens": s.prompt_tokens,
                              "encoded_tokens": s.prefill_tokens}
            history = trim_history(history + [Exchange(q, reply)], 32)  # keep everything: history grows
        res[mode] = ttft
    return res


def generation_speed(device: str) -> list[dict]:
    from agent.generation.llm import CausalLM, LLMConfig, Message

    rows = []
    for bf16 in (True, False):
        llm = CausalLM(LLMConfig(device=device, bf16=bf16, max_new_tokens=128, repetition_penalty=1.0))
        msgs = [Message("system", "You are a helpful assistant."),
                Message("user", "Write a long story about a cat who learns to sail across the sea.")]
        "".join(llm.stream(msgs))  # warm-up
        llm.reset_cache()
        "".join(llm.stream(msgs))
        s = llm.last_stats
        rows.append({"dtype": "bf16" if bf16 else "fp32", "device": llm.device, "new_tokens": s.new_tokens,
                     "tokens_per_s": s.tokens_per_s, "ttft_ms": s.time_to_first_token * 1e3})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--facts", type=int, default=1_000_000, help="facts in the KB for the overhead test")
    ap.add_argument("--turns", type=int, default=200, help="turns in the overhead test")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "agent_bench.json")
    args = ap.parse_args()
    import torch

    report: dict = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                                "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}}
    if not args.skip_overhead:
        print(f"overhead: building a {args.facts:,}-fact KB and running {args.turns} turns ...", flush=True)
        ov = overhead(args.facts, args.turns)
        report["overhead"] = ov
        print(table(f"Per-turn memory overhead with {args.facts:,} facts (ms; generation excluded)",
                    ["step", "p50", "p99", "mean"],
                    [[k, v["p50_ms"], v["p99_ms"], v["mean_ms"]] for k, v in ov["steps"].items()]))
    print("kv cache: one conversation with and without prefix reuse ...", flush=True)
    turns = [1, 5, 10, 20]
    kv = kv_reuse(turns, args.device)
    report["kv_cache"] = kv
    rows = []
    for t in turns:
        a, b = kv["reuse"][t], kv["no_reuse"][t]
        rows.append([t, b["prompt_tokens"], a["encoded_tokens"], a["ttft_ms"], b["ttft_ms"], b["ttft_ms"] / a["ttft_ms"]])
    print(table("Time to first token (ms), same run", ["turn", "prompt tokens", "encoded w/ reuse", "reuse",
                                                        "no reuse", "speed-up"], rows))
    print("generation speed ...", flush=True)
    gen = generation_speed(args.device)
    report["generation"] = gen
    print(table("Generation, default model, greedy", ["dtype", "device", "tokens", "tokens/s", "ttft ms"],
                [[g["dtype"], g["device"], g["new_tokens"], g["tokens_per_s"], g["ttft_ms"]] for g in gen]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
