"""Scenario-eval aggregation: extraction, retrieval, answer and grounded accuracy per category, the
latency percentiles of each step, and the rows agent.evals.grounded.policy_metrics reads."""
from __future__ import annotations

from agent.evals.records import Metrics, ScenarioResult, Step, StepLatency
from agent.evals.scenario import Scenario, TurnKind


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def metrics(name: str, results: list[ScenarioResult], scenarios: list[Scenario]) -> Metrics:
    """Aggregate ``results``; ``scenarios`` (the same ones) supply the question counts of unfinished runs."""
    turns = [t for r in results for t in r.turns]
    tp = sum(t.true_positives for t in turns)
    fp = sum(len(t.extracted) - t.true_positives for t in turns)
    fn = sum(len(t.gold) - t.true_positives for t in turns)
    p, r = _rate(tp, tp + fp), _rate(tp, tp + fn)
    f1 = None if p is None or r is None else (2 * p * r / (p + r) if p + r > 0 else 0.0)
    asked = [t for t in turns if t.kind is TurnKind.ASK]
    questions = sum(len(s.questions) for s in scenarios)  # unanswered questions (after an error) count as wrong
    correct = sum(1 for t in asked if t.correct)
    grounded = sum(1 for t in asked if t.grounded)
    ev_total = sum(len(q.evidence) for s in scenarios for q in s.questions)
    ev_found = sum(t.evidence_found for t in asked)
    checks = [c for r_ in results for c in r_.checks]
    checks_total = sum(len(s.checks) for s in scenarios)
    passed = sum(1 for c in checks if c.passed)
    return Metrics(name, len(results), len(turns), questions, tp, fp, fn, p, r, f1, ev_found, ev_total,
                   _rate(ev_found, ev_total), correct, _rate(correct, questions), passed, checks_total,
                   _rate(passed, checks_total), sum(t.leaked for t in turns),
                   sum(1 for x in results if x.error is not None), grounded, _rate(grounded, questions))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 3)


def latency(results: list[ScenarioResult]) -> tuple[StepLatency, ...]:
    turns = [t for r in results for t in r.turns]
    out = []
    for step in Step:
        say = [getattr(t.ms, step.value) for t in turns if t.kind is TurnKind.SAY]
        ask = [getattr(t.ms, step.value) for t in turns if t.kind is TurnKind.ASK]
        both = say + ask
        out.append(StepLatency(step, _percentile(say, 50), _percentile(say, 95), _percentile(ask, 50),
                               _percentile(ask, 95), _percentile(both, 50), _percentile(both, 95)))
    return tuple(out)



def policy_rows(results: list[ScenarioResult]) -> list[dict]:
    """One row per answered question for agent.evals.grounded.policy_metrics."""
    return [{"category": r.category.value, "split": t.split, "correct": bool(t.correct), "grounded": bool(t.grounded),
             "abstained": bool(t.abstained), "unsupported": t.unsupported, "about_user": r.category.about_user,
             "topic_right": t.about_user == r.category.about_user, "bare_correct": bool(t.bare_correct)}
            for r in results for t in r.turns if t.kind is TurnKind.ASK]
