"""Scenario evaluation: runs scripted conversations through the agent and measures extraction, retrieval,
answers and per-step latency.

Usage: ``python -m agent.eval examples/scenarios [--model M] [--device D] [--fake] [--json OUT]
[--limit N] [--category C]``. Every scenario runs in a fresh temporary KB; every session reopens the KB
and builds a new Agent with a reset session (a process restart: only the KB carries over). The spaCy
pipeline, the embedder and the language model are loaded once and shared by all scenarios.

Scoring (extraction P/R/F1, retrieval recall, answer accuracy, checks, leaks, latency) is described in
examples/scenarios/README.md.
"""
from __future__ import annotations

import argparse
import enum
import json
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from agent.errors import AgentError, BadInputError
from agent.eval_grounded import PolicyMetrics, format_policy, is_abstention, judge, policy_metrics, support_texts
from agent.scenario import Category, CheckKind, GoldTriple, Scenario, ScriptTurn, TurnKind, load_scenarios
from kb import SHARED, HashEmbedder, KBConfig, KnowledgeBase
from kb.errors import KBError
from kb.facts import Fact, normalize_relation

#: relations that count as the same one when scoring extraction (each maps to the group's first name)
RELATION_SYNONYMS: dict[str, str] = {
    "wife": "spouse", "husband": "spouse", "married_to": "spouse",
    "boyfriend": "partner", "girlfriend": "partner",
    "full_name": "name", "first_name": "name",
    "job": "occupation", "job_title": "occupation", "profession": "occupation",
    "employer": "works_at", "birthday": "born_on", "date_of_birth": "born_on", "birthplace": "born_in",
    "owns_pet": "has_pet", "native_language": "speaks",
}
_DATE_FORMATS = ("%Y-%m-%d", "%B %d, %Y", "%B %d %Y", "%d %B %Y", "%d %B, %Y", "%b %d, %Y", "%d %b %Y")
Canon = tuple[str, str, str]


class Step(str, enum.Enum):
    """A part of a turn whose time is measured (``total`` is the wall-clock time of ``chat``)."""

    STATE = "state"
    RETRIEVAL = "retrieval"
    GENERATION = "generation"
    EXTRACTION = "extraction"
    WRITE_BACK = "write_back"
    TOTAL = "total"


@dataclass(frozen=True)
class EvalConfig:
    """What to run and on which models."""

    scenarios: Path
    model: str
    device: str = "auto"
    fake: bool = False  # HashEmbedder(64) + EchoLLM: fast, tests the harness not the models
    limit: int | None = None  # run only the first N scenarios (after the category filter)
    category: Category | None = None
    # which fact extractor the agent uses (the scenario set decides the default)
    extractor: str = "patterns"
    # knowledge fusion: "off" (facts as text), "on" (fused and cited as text), "only" (fused, not cited)
    fusion: str = "off"

    def __post_init__(self) -> None:
        from agent.extract import ExtractorKind

        object.__setattr__(self, "extractor", ExtractorKind.parse(self.extractor))
        if self.device not in ("auto", "cpu", "cuda"):
            raise BadInputError(f"device {self.device!r} is invalid; use auto, cpu or cuda")
        if self.fusion not in ("off", "on", "only"):
            raise BadInputError(f"fusion {self.fusion!r} is invalid; use off, on or only")
        if self.limit is not None and self.limit < 1:
            raise BadInputError(f"limit={self.limit} must be >= 1")


@dataclass(frozen=True)
class StepTimes:
    """Milliseconds one turn spent in each Step."""

    state: float
    retrieval: float
    generation: float
    extraction: float
    write_back: float
    total: float


@dataclass(frozen=True)
class TurnResult:
    """One scripted turn as it went."""

    session: int
    turn: int
    user: str
    kind: TurnKind
    text: str
    reply: str
    extracted: tuple[Canon, ...]  # canonical triples the turn produced
    gold: tuple[Canon, ...]  # canonical gold triples
    used: tuple[Canon, ...]  # canonical triples of reply.used_facts, in prompt order
    true_positives: int
    evidence_found: int
    evidence_total: int
    correct: bool | None  # None for statements
    leaked: int  # used facts of another user
    ms: StepTimes
    split: str = "dev"  # the scenario's split (dev / test)
    grounded: bool | None = None  # ask: correct and no unsupported entity, number or date
    abstained: bool | None = None  # ask: the reply says memory has no answer
    unsupported: tuple[str, ...] = ()  # ask: the reply's unsupported claims
    about_user: bool | None = None  # ask: the policy took it for a question about the user's world
    bare_reply: str | None = None  # general knowledge: the bare model's answer to the same question
    bare_correct: bool | None = None


@dataclass(frozen=True)
class CheckResult:
    """One end-of-scenario KB check."""

    kind: CheckKind
    user: str
    triple: Canon
    passed: bool


@dataclass(frozen=True)
class ScenarioResult:
    """A scenario's turns and checks; ``error`` is set when the agent raised and the run stopped early."""

    id: str
    category: Category
    turns: tuple[TurnResult, ...]
    checks: tuple[CheckResult, ...]
    error: str | None = None


@dataclass(frozen=True)
class Metrics:
    """Aggregated numbers for one category or overall; rates are None when nothing was measured."""

    name: str
    scenarios: int
    turns: int
    questions: int
    extraction_tp: int
    extraction_fp: int
    extraction_fn: int
    precision: float | None
    recall: float | None
    f1: float | None
    evidence_found: int
    evidence_total: int
    retrieval_recall: float | None
    answers_correct: int
    answer_accuracy: float | None
    checks_passed: int
    checks_total: int
    check_pass_rate: float | None
    leaked_facts: int
    errors: int
    answers_grounded: int = 0  # right and without an unsupported entity, number or date
    grounded_accuracy: float | None = None


@dataclass(frozen=True)
class StepLatency:
    """Percentiles of one step's time per turn, in milliseconds (None when there were no such turns)."""

    step: Step
    statements_p50: float | None
    statements_p95: float | None
    questions_p50: float | None
    questions_p95: float | None
    all_p50: float | None
    all_p95: float | None


@dataclass(frozen=True)
class EvalReport:
    """The outcome of a whole run."""

    scenario_dir: str
    model: str
    embedder: str
    fake: bool
    seconds: float
    overall: Metrics
    categories: tuple[Metrics, ...]
    latency: tuple[StepLatency, ...]
    scenarios: tuple[ScenarioResult, ...]
    policy: PolicyMetrics | None = None  # abstention, general knowledge, grounded (agent/eval_grounded.py)


class Runtime:
    """The models shared by every scenario of a run: spaCy, embedder, LLM and the agent config."""

    def __init__(self, config: EvalConfig):
        from agent.loop import AgentConfig
        from agent.nlp import load_nlp

        self.nlp = load_nlp()
        if config.fake:
            from agent.fakes import EchoLLM

            self.embedder, self.llm = HashEmbedder(64), EchoLLM()
            self.agent_config = AgentConfig(extractor=config.extractor)
        else:
            from agent.llm import CausalLM, LLMConfig
            from kb import EmbedderConfig, SentenceTransformerEmbedder

            llm_config = LLMConfig(model=config.model, device=config.device)
            self.embedder = SentenceTransformerEmbedder(EmbedderConfig(device=config.device))
            self.llm = CausalLM(llm_config)
            from agent.fuser import AgentFusionConfig

            fusion = AgentFusionConfig(mode="off" if config.fusion == "off" else "on", with_text=config.fusion != "only")
            self.agent_config = AgentConfig(llm=llm_config, extractor=config.extractor, fusion=fusion)


# --------------------------------------------------------------------------- canonical triples


def _canon_name(kb: KnowledgeBase, value: str) -> str:
    s = re.sub(r"^(?:a|an|the)\s+", "", kb.resolve(value))
    d = re.sub(r"(\d)(?:st|nd|rd|th)\b", r"\1", s)
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(d, fmt).strftime("%Y-%m-%d")
        except ValueError:
            continue
    return s


def canon_relation(relation: str) -> str:
    r = normalize_relation(relation)
    r = "favorite_" + r[len("favourite_"):] if r.startswith("favourite_") else r
    return RELATION_SYNONYMS.get(r, r)


def canon(kb: KnowledgeBase, subject: str, relation: str, obj: str) -> Canon:
    return (_canon_name(kb, subject), canon_relation(relation), _canon_name(kb, obj))


def canon_fact(kb: KnowledgeBase, f: Fact | GoldTriple) -> Canon:
    return canon(kb, f.subject, f.relation, f.object)


def mentions(text: str, phrase: str) -> bool:
    """Case-insensitive containment of ``phrase`` starting at a word boundary."""
    t, p = " ".join(text.casefold().split()), " ".join(phrase.casefold().split())
    return re.search(rf"(?<!\w){re.escape(p)}", t) is not None


def answer_ok(turn: ScriptTurn, reply: str) -> bool:
    """Contains-value accuracy: one of expect_answer, none of reject, and an abstention exactly when
    the turn says so (``abstain``: true / false; unset: not graded)."""
    found = not turn.expect_answer or any(mentions(reply, a) for a in turn.expect_answer)
    if turn.abstain is not None and is_abstention(reply) != turn.abstain:
        return False
    return found and not any(mentions(reply, r) for r in turn.reject)


def visible_facts(kb: KnowledgeBase, user: str) -> list[Fact]:
    try:
        return kb.facts(user=user)
    except KBError:  # a user the KB has never seen sees nothing
        return []


# --------------------------------------------------------------------------- running


def _run_turn(agent, kb: KnowledgeBase, si: int, ti: int, turn: ScriptTurn, sc: Scenario | None = None,
              rt: Runtime | None = None) -> TurnResult:
    t_start = time.time()
    w0 = time.perf_counter()
    reply = agent.chat(turn.text)
    wall = time.perf_counter() - w0
    produced = {canon_fact(kb, f) for f in reply.learned_facts}
    produced |= {canon_fact(kb, f) for f in visible_facts(kb, agent.user)
                 if any(s.time >= t_start for s in f.sources)}
    gold = {canon_fact(kb, t) for t in turn.expect_triples}
    used = [canon_fact(kb, u.fact) for u in reply.used_facts]
    evidence = [canon_fact(kb, t) for t in turn.evidence]
    tm = reply.timings
    ms = StepTimes(*(round(x * 1000.0, 3) for x in (tm.state, tm.retrieval, tm.generation, tm.extraction,
                                                      tm.write_back, wall)))
    result = TurnResult(si, ti, agent.user, turn.kind, turn.text, reply.text, tuple(sorted(produced)),
                        tuple(sorted(gold)), tuple(used), len(produced & gold), sum(1 for e in evidence if e in used),
                        len(evidence), answer_ok(turn, reply.text) if turn.kind is TurnKind.ASK else None,
                        sum(1 for u in reply.used_facts if u.fact.user not in (SHARED, agent.user)), ms,
                        sc.split.value if sc is not None else "dev")
    return _honest(result, agent, reply, turn, sc, rt) if turn.kind is TurnKind.ASK and rt is not None else result


def _honest(result: TurnResult, agent, reply, turn: ScriptTurn, sc: Scenario | None, rt: Runtime) -> TurnResult:
    """The grounded verdict, the topic the policy saw, and for general knowledge the bare model's answer."""
    from agent import support
    from agent.llm import Message
    from agent.prompt import display_name
    from agent.turn import count_sentences

    g = judge(reply.text, bool(result.correct), support_texts(reply, turn.text, display_name(agent.profile)), rt.nlp)
    about = support.topic(support.records(agent, turn.text, reply.state, reply.memories)[0]) is support.Topic.USER
    bare = bare_ok = None
    if sc is not None and sc.category is Category.GENERAL_KNOWLEDGE:
        pieces: list[str] = []
        for piece in rt.llm.stream([Message("user", turn.text)], max_new_tokens=None):
            pieces.append(piece)
            if count_sentences("".join(pieces)) >= rt.agent_config.max_sentences:
                break
        bare = "".join(pieces).strip()
        bare_ok = answer_ok(turn, bare)
    # grounding is about the user's world: a general-knowledge answer cites no memory, so it is judged
    # on its value alone (its claims are the model's own knowledge)
    grounded = g.grounded if sc is None or sc.category.about_user else bool(result.correct)
    return replace(result, grounded=grounded, abstained=g.abstained, unsupported=g.unsupported,
                   about_user=about, bare_reply=bare, bare_correct=bare_ok)


def run_scenario(sc: Scenario, rt: Runtime) -> ScenarioResult:
    """Run one scenario in a fresh temporary KB; an exception from the agent ends it with ``error`` set."""
    from agent.loop import Agent

    turns: list[TurnResult] = []
    with tempfile.TemporaryDirectory(prefix="kgrow-eval-") as tmp:
        path = Path(tmp) / "kb"
        try:
            for si, session in enumerate(sc.sessions):
                kb = KnowledgeBase.open(path, embedder=rt.embedder, config=KBConfig(show_progress=False))
                try:
                    rt.llm.reset_cache()
                    agent = Agent(kb, rt.llm, session.user, rt.agent_config, nlp=rt.nlp)
                    agent.reset_session()
                    try:
                        for ti, turn in enumerate(session.turns):
                            turns.append(_run_turn(agent, kb, si, ti, turn, sc, rt))
                    finally:
                        agent.close()
                finally:
                    kb.close()
            with KnowledgeBase.open(path, embedder=rt.embedder, config=KBConfig(show_progress=False)) as kb:
                checks = []
                for c in sc.checks:
                    triple = canon_fact(kb, c.triple)
                    seen = triple in {canon_fact(kb, f) for f in visible_facts(kb, c.user)}
                    checks.append(CheckResult(c.kind, c.user, triple, seen == (c.kind is CheckKind.PRESENT)))
        except Exception as e:  # noqa: BLE001 - a measurement run records the failure and goes on
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            return ScenarioResult(sc.id, sc.category, tuple(turns), (), detail)
    return ScenarioResult(sc.id, sc.category, tuple(turns), tuple(checks))


# --------------------------------------------------------------------------- metrics


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


def evaluate(config: EvalConfig, progress: Callable[[str], None] | None = None) -> EvalReport:
    """Load and validate the scenarios, run them, and aggregate; ``progress(line)`` hears each scenario."""
    scenarios = load_scenarios(config.scenarios)
    if config.category is not None:
        scenarios = [s for s in scenarios if s.category is config.category]
    scenarios = scenarios[: config.limit] if config.limit is not None else scenarios
    if not scenarios:
        raise BadInputError(f"no scenario in {config.scenarios} matches category {config.category.value!r}"
                            if config.category is not None else f"no scenarios in {config.scenarios}")
    t0 = time.perf_counter()
    rt = Runtime(config)
    results = []
    for i, sc in enumerate(scenarios, start=1):
        res = run_scenario(sc, rt)
        results.append(res)
        if progress is not None:
            asked = [t for t in res.turns if t.kind is TurnKind.ASK]
            line = (f"[{i}/{len(scenarios)}] {sc.id}: {len(res.turns)} turns, "
                    f"{sum(1 for t in asked if t.correct)}/{len(sc.questions)} answers right")
            progress(line + (f", ERROR {res.error}" if res.error else ""))
    cats = tuple(metrics(c.value, [r for r in results if r.category is c], [s for s in scenarios if s.category is c])
                 for c in Category if any(s.category is c for s in scenarios))
    return EvalReport(str(config.scenarios), rt.llm.id, rt.embedder.id, config.fake,
                      round(time.perf_counter() - t0, 3), metrics("overall", results, scenarios), cats,
                      latency(results), tuple(results), policy_metrics(policy_rows(results)))


def policy_rows(results: list[ScenarioResult]) -> list[dict]:
    """One row per answered question for agent.eval_grounded.policy_metrics."""
    return [{"category": r.category.value, "split": t.split, "correct": bool(t.correct), "grounded": bool(t.grounded),
             "abstained": bool(t.abstained), "unsupported": t.unsupported, "about_user": r.category.about_user,
             "topic_right": t.about_user == r.category.about_user, "bare_correct": bool(t.bare_correct)}
            for r in results for t in r.turns if t.kind is TurnKind.ASK]


# --------------------------------------------------------------------------- output


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


def main(argv: list[str] | None = None) -> int:
    from agent.llm import PACKAGED_SMOLLM

    ap = argparse.ArgumentParser(prog="python -m agent.eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", type=Path, help="a scenario .json file or a directory of them")
    ap.add_argument("--model", default=PACKAGED_SMOLLM, help="LLM: the packaged default, a hub name or a path")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--fake", action="store_true", help="hash embedder + echo LLM: tests the harness quickly")
    ap.add_argument("--json", type=Path, dest="json_out", metavar="OUT", help="also write the full report here")
    ap.add_argument("--limit", type=int, metavar="N", help="run only the first N scenarios")
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
        print(f"agent.eval: error: {e}", file=sys.stderr)
        return e.exit_code
    except KBError as e:
        print(f"agent.eval: error: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(report_json(report), encoding="utf-8")
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
