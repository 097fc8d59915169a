"""Scenario evaluation: runs scripted conversations through the agent and measures extraction, retrieval,
answers and per-step latency.

Usage: ``python -m agent.evals.scenario_eval examples/scenarios [--model M] [--device D] [--fake] [--json OUT]
[--limit N] [--category C]``. Every scenario runs in a fresh temporary KB; every session reopens the KB
and builds a new Agent with a reset session (a process restart: only the KB carries over). The spaCy
pipeline, the embedder and the language model are loaded once and shared by all scenarios.

Scoring (extraction P/R/F1, retrieval recall, answer accuracy, checks, leaks, latency) is described in
examples/scenarios/README.md. This module is the command and the report's text; the parts live in
agent/evals/records.py (config and results), eval_canon.py (canonical triples, answer matching),
eval_runner.py (running scenarios) and eval_metrics.py (aggregation), re-exported here.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from agent.errors import AgentError
from agent.evals.canon import answer_ok, canon, canon_fact, canon_relation, mentions, visible_facts
from agent.evals.grounded import format_policy
from agent.evals.metrics import latency, metrics, policy_rows
from agent.evals.records import (Canon, CheckResult, EvalConfig, EvalReport, Metrics, ScenarioResult, Step,
                                StepLatency, StepTimes, TurnResult)
from agent.evals.runner import Runtime, evaluate, run_scenario
from agent.evals.scenario import Category
from kb.errors import KBError

__all__ = ["Canon", "CheckResult", "EvalConfig", "EvalReport", "Metrics", "Runtime", "ScenarioResult", "Step",
           "StepLatency", "StepTimes", "TurnResult", "answer_ok", "canon", "canon_fact", "canon_relation",
           "evaluate", "format_report", "latency", "main", "mentions", "metrics", "policy_rows", "report_json",
           "run_scenario", "visible_facts"]


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_report(report: EvalReport) -> str:
    """The plain-text table printed by the command."""
    o = report.overall
    title = (f"kgrow scenario eval: {o.scenarios} scenarios, {o.turns} turns, {o.questions} questions; "
             f"model={report.model} embedder={report.embedder}{' (fake)' if report.fake else ''}; "
             f"{report.seconds:.1f} s")
    lines = [title, ""]
    head = (f"{'category':<26}{'scen':>5}{'turns':>6}{'qs':>5}{'ext P':>8}{'ext R':>8}{'ext F1':>8}"
            f"{'retr R':>8}{'answer':>8}{'ground':>8}{'checks':>8}{'leaks':>6}{'errors':>7}")
    lines += [head, "-" * len(head)]
    for m in report.categories + (o,):
        if m is o:
            lines.append("-" * len(head))
        lines.append(f"{m.name:<26}{m.scenarios:>5}{m.turns:>6}{m.questions:>5}{_f(m.precision):>8}"
                     f"{_f(m.recall):>8}{_f(m.f1):>8}{_f(m.retrieval_recall):>8}{_f(m.answer_accuracy):>8}"
                     f"{_f(m.grounded_accuracy):>8}"
                     f"{f'{m.checks_passed}/{m.checks_total}':>8}{m.leaked_facts:>6}{m.errors:>7}")
    summary = (f"extraction: {o.extraction_tp} correct, {o.extraction_fp} spurious, {o.extraction_fn} missed; "
               f"retrieval: {o.evidence_found}/{o.evidence_total} evidence facts used; "
               f"answers: {o.answers_correct}/{o.questions} right, {o.answers_grounded}/{o.questions} grounded")
    lines += ["", summary, ""]
    if report.policy is not None:
        lines += [format_policy(report.policy), ""]
    lhead = (f"{'latency per turn (ms)':<24}{'statements p50':>16}{'p95':>9}{'questions p50':>16}{'p95':>9}"
             f"{'all p50':>10}{'p95':>9}")
    lines += [lhead, "-" * len(lhead)]
    for s in report.latency:
        lines.append(f"{s.step.value:<24}{_f(s.statements_p50, 1):>16}{_f(s.statements_p95, 1):>9}"
                     f"{_f(s.questions_p50, 1):>16}{_f(s.questions_p95, 1):>9}{_f(s.all_p50, 1):>10}"
                     f"{_f(s.all_p95, 1):>9}")
    errors = [(r.id, r.error) for r in report.scenarios if r.error]
    if errors:
        lines += ["", "errors:"] + [f"  {sid}: {err}" for sid, err in errors]
    return "\n".join(lines)


def report_json(report: EvalReport) -> str:
    return json.dumps(asdict(report), indent=1, ensure_ascii=False)


def run_args(prog: str, doc: str, inputs: str, what: str) -> argparse.ArgumentParser:
    """The options every evaluation run shares: its ``inputs`` (files or a directory of ``what``), the
    model, the device, the fake harness, the JSON report and a limit (the feedback eval uses it too)."""
    from agent.generation.llm import PACKAGED_SMOLLM

    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    ap.add_argument(inputs, type=Path, help=f"a {what[:-1]} .json file or a directory of them")
    ap.add_argument("--model", default=PACKAGED_SMOLLM, help="LLM: the packaged default, a hub name or a path")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--fake", action="store_true", help="hash embedder + echo LLM: tests the harness quickly")
    ap.add_argument("--json", type=Path, dest="json_out", metavar="OUT", help="also write the full report here")
    ap.add_argument("--limit", type=int, metavar="N", help=f"run only the first N {what}")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = run_args("python -m agent.evals.scenario_eval", __doc__, "scenarios", "scenarios")
    ap.add_argument("--category", metavar="C", help=f"only one category: {', '.join(c.value for c in Category)}")
    ap.add_argument("--extractor", default="patterns", choices=["patterns", "llm"],
                    help="fact extractor: spaCy patterns (default) or LLM JSON triples")
    ap.add_argument("--fusion", default="off", choices=["off", "on", "only"],
                    help="knowledge fusion: off (facts as text, default), on (fused + text), only (fused, no text)")
    args = ap.parse_args(argv)
    try:
        config = EvalConfig(args.scenarios, args.model, args.device, args.fake, args.limit,
                            Category.parse(args.category) if args.category else None, args.extractor, args.fusion)
        report = evaluate(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except AgentError as e:
        print(f"agent.evals.scenario_eval: error: {e}", file=sys.stderr)
        return e.exit_code
    except KBError as e:
        print(f"agent.evals.scenario_eval: error: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(report_json(report), encoding="utf-8")
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
