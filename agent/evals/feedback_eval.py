"""Feedback evaluation: scripted wrong-answer-then-correction dialogues, measuring regeneration and recall.

Usage: ``python -m agent.evals.feedback_eval examples/feedback [--fake] [--json OUT] [--model M] [--device D]
[--limit N] [--lam L] [--mu M] [--candidates N] [--max-rounds R]``.

Each dialogue runs in a fresh temporary KB: optional shared (third-party) facts are stored first,
the user says the ``say`` lines, asks ``ask`` (the answer is normally wrong: the stored fact is),
then corrects it with ``/fix`` (``Agent.feedback(correction=fix)``). While the regenerated answer
is wrong the script rates it bad (the next round) until ``max_rounds``; a right one is rated good.
Then a fresh Agent on the same KB directory (a new process and session) asks ``ask`` again.

Measured: the answer before the correction (right %), the first regenerated answer (right %), right
within the round limit, the corrected fact recalled in the new session (answer right %, and the
corrected fact ranked above the old one in the prompt %), the old fact kept in history (stored,
and superseded or lowered in confidence), mean rounds, and seconds per regeneration. An answer is
right when it mentions one of ``expect`` and none of ``reject``.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from agent.errors import AgentError
from agent.evals.scenario_eval import EvalConfig, Runtime, canon_fact, mentions, run_args
from agent.evals.grounded import Grounding, judge, support_texts
from agent.pipeline.feedback import BAD, GOOD, FeedbackConfig
from agent.evals.scenario import GoldTriple, ScenarioError, _list, _obj, _str, _strings, _triple, _Where
from kb import KBConfig, KnowledgeBase
from kb.errors import KBError
from kb.facts import Status


@dataclass(frozen=True)
class SharedFact:
    """A third-party fact every user sees, stored before the dialogue starts (its text as given)."""

    subject: str
    relation: str
    object: str
    text: str


@dataclass(frozen=True)
class Dialogue:
    """One wrong-answer-then-correction script with its gold answer and facts."""

    id: str
    description: str
    user: str
    shared: tuple[SharedFact, ...]
    say: tuple[str, ...]  # statements before the question (they store the wrong fact, usually)
    ask: str
    fix: str  # the correction, as typed after /fix
    expect: tuple[str, ...]  # a right answer mentions one of these...
    reject: tuple[str, ...]  # ...and none of these
    old: GoldTriple  # the wrong fact the first answer rests on
    new: GoldTriple  # the fact the correction states


@dataclass(frozen=True)
class RoundResult:
    """One regeneration as it went."""

    answer: str
    right: bool
    seconds: float
    grounded: bool = False  # right and no unsupported entity, number or date (agent/answers/grounding.py)
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True)
class DialogueResult:
    """A dialogue's answers and checks; ``error`` is set when the agent raised and the run stopped early."""

    id: str
    before: str
    before_right: bool
    rounds: tuple[RoundResult, ...]
    recall: str
    recall_right: bool
    recall_ranked: bool  # the corrected fact was in the new session's prompt, above the old one if present
    old_kept: bool
    error: str | None = None

    recall_grounded: bool = False
    recall_unsupported: tuple[str, ...] = ()

    @property
    def first_right(self) -> bool:
        return bool(self.rounds) and self.rounds[0].right

    @property
    def first_grounded(self) -> bool:
        return bool(self.rounds) and self.rounds[0].grounded

    @property
    def right_within_limit(self) -> bool:
        return any(r.right for r in self.rounds)


@dataclass(frozen=True)
class FeedbackEvalReport:
    """The outcome of a run; rates are fractions of all dialogues."""

    dialogues_path: str
    model: str
    embedder: str
    fake: bool
    feedback: FeedbackConfig
    seconds: float
    dialogues: int
    before_right: float
    first_regenerated_right: float
    right_within_limit: float
    recall_right: float
    recall_ranked: float
    old_kept: float
    mean_rounds: float
    seconds_per_regeneration: float
    errors: int
    results: tuple[DialogueResult, ...]
    first_regenerated_grounded: float = 0.0  # right and nothing unsupported (issue 14)
    recall_grounded: float = 0.0
    unsupported_claim_rate: float = 0.0  # of all regenerated and recalled answers, those with an unsupported claim


# --------------------------------------------------------------------------- loading


def load_dialogues(path: str | Path) -> list[Dialogue]:
    """Dialogues from a ``.json`` file (a list of objects) or every ``*.json`` in a directory."""
    p = Path(path)
    files = sorted(p.glob("*.json")) if p.is_dir() else [p] if p.is_file() else []
    if not files:
        raise ScenarioError(f"{p} has no dialogue .json files; give a file or a directory of them")
    out: list[Dialogue] = []
    seen: set[str] = set()
    for f in files:
        try:
            raw = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise ScenarioError(f"{f}: cannot read as JSON: {e}") from None
        where = _Where(f, "$")
        for i, item in enumerate(_list(raw, where, non_empty=True)):
            d = _dialogue(item, where.at(i))
            if d.id in seen:
                raise where.at(i).at("id").fail(f"dialogue id {d.id!r} is used twice; ids must be unique")
            seen.add(d.id)
            out.append(d)
    return out


def _dialogue(raw: object, where: _Where) -> Dialogue:
    d = _obj(raw, where, {"id", "description", "user", "ask", "fix", "expect", "old", "new"},
             {"shared", "say", "reject"})
    shared = []
    for i, s in enumerate(_list(d.get("shared", []), where.at("shared"))):
        sw = where.at("shared").at(i)
        sd = _obj(s, sw, {"triple", "text"}, set())
        t = _triple(sd["triple"], sw.at("triple"))
        shared.append(SharedFact(t.subject, t.relation, t.object, _str(sd["text"], sw.at("text"))))
    expect = _strings(d["expect"], where.at("expect"))
    if not expect:
        raise where.at("expect").fail("is empty; give the words a right answer mentions")
    return Dialogue(_str(d["id"], where.at("id")), _str(d["description"], where.at("description")),
                    _str(d["user"], where.at("user")), tuple(shared), _strings(d.get("say", []), where.at("say")),
                    _str(d["ask"], where.at("ask")), _str(d["fix"], where.at("fix")), expect,
                    _strings(d.get("reject", []), where.at("reject")), _triple(d["old"], where.at("old")),
                    _triple(d["new"], where.at("new")))


# --------------------------------------------------------------------------- running


def right(d: Dialogue, answer: str) -> bool:
    return any(mentions(answer, e) for e in d.expect) and not any(mentions(answer, r) for r in d.reject)


def run_dialogue(d: Dialogue, rt: Runtime) -> DialogueResult:
    """Run one dialogue in a fresh temporary KB; an exception ends it with ``error`` set."""
    from agent.pipeline.loop import Agent

    before, rounds, recall, recall_ok, ranked, kept = "", [], "", False, False, False
    with tempfile.TemporaryDirectory(prefix="kgrow-feedback-eval-") as tmp:
        path = Path(tmp) / "kb"
        try:
            with KnowledgeBase.open(path, embedder=rt.embedder, config=KBConfig(show_progress=False)) as kb:
                for s in d.shared:
                    kb.add_fact(s.subject, s.relation, s.object, text=s.text, shared=True, source_id="eval-setup")
                rt.llm.reset_cache()
                agent = Agent(kb, rt.llm, d.user, rt.agent_config, nlp=rt.nlp)
                agent.reset_session()
                try:
                    for line in d.say:
                        agent.chat(line)
                    before = agent.chat(d.ask).text
                    result = agent.feedback(correction=d.fix)
                    while result.reply is not None:
                        ok = right(d, result.reply.text)
                        g = _judge(agent, result.reply, d, ok, rt)
                        rounds.append(RoundResult(result.reply.text, ok, round(result.round.seconds, 3), g.grounded,
                                                  g.unsupported))
                        if ok:
                            agent.feedback(rating=GOOD)
                            break
                        result = agent.feedback(rating=BAD)
                finally:
                    agent.close()
            with KnowledgeBase.open(path, embedder=rt.embedder, config=KBConfig(show_progress=False)) as kb:
                rt.llm.reset_cache()
                agent = Agent(kb, rt.llm, d.user, rt.agent_config, nlp=rt.nlp)
                agent.reset_session()
                try:
                    reply = agent.chat(d.ask)
                    recall_g = _judge(agent, reply, d, right(d, reply.text), rt)
                finally:
                    agent.close()
                recall, recall_ok = reply.text, right(d, reply.text)
                used = [canon_fact(kb, u.fact) for u in reply.used_facts]
                new, old = canon_fact(kb, d.new), canon_fact(kb, d.old)
                ranked = new in used and (old not in used or used.index(new) < used.index(old))
                kept = _old_kept(kb, d)
        except Exception as e:  # noqa: BLE001 - a measurement run records the failure and goes on
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            return DialogueResult(d.id, before, right(d, before), tuple(rounds), recall, recall_ok, ranked, kept,
                                  detail)
    return DialogueResult(d.id, before, right(d, before), tuple(rounds), recall, recall_ok, ranked, kept,
                          recall_grounded=recall_g.grounded, recall_unsupported=recall_g.unsupported)


def _judge(agent, reply, d: Dialogue, ok: bool, rt: Runtime) -> Grounding:
    """The grounded verdict of ``reply`` against what was in front of the model (agent/evals/grounded.py)."""
    from agent.generation.prompt import display_name

    return judge(reply.text, ok, support_texts(reply, d.ask, display_name(agent.profile)), rt.nlp)


def _old_kept(kb: KnowledgeBase, d: Dialogue) -> bool:
    """The old fact is still stored and no longer current: superseded, or its confidence lowered."""
    old = canon_fact(kb, d.old)
    for f in kb.facts(user=d.user, history=True):
        if canon_fact(kb, f) != old:
            continue
        if f.status is Status.SUPERSEDED:
            return True
        _, events = kb.history(f.id)
        if any(e.fact_id == f.id and e.event == "confidence" for e in events):
            return True
    return False


def evaluate(path: Path, config: EvalConfig, feedback: FeedbackConfig, progress=None) -> FeedbackEvalReport:
    """Load the dialogues, run them, and aggregate; ``progress(line)`` hears each dialogue."""
    dialogues = load_dialogues(path)[: config.limit] if config.limit else load_dialogues(path)
    t0 = time.perf_counter()
    rt = Runtime(config)
    rt.agent_config = replace(rt.agent_config, feedback=feedback)
    results = []
    for i, d in enumerate(dialogues, start=1):
        res = run_dialogue(d, rt)
        results.append(res)
        if progress is not None:
            line = (f"[{i}/{len(dialogues)}] {d.id}: before {'right' if res.before_right else 'wrong'}, "
                    f"{len(res.rounds)} round(s), {'right' if res.right_within_limit else 'wrong'} "
                    f"({res.rounds[-1].answer if res.rounds else '-'!r}); recall {'right' if res.recall_right else 'wrong'}")
            progress(line + (f", ERROR {res.error}" if res.error else ""))
    n = len(results)
    times = [r.seconds for res in results for r in res.rounds]
    return FeedbackEvalReport(
        str(path), rt.llm.id, rt.embedder.id, config.fake, feedback, round(time.perf_counter() - t0, 3), n,
        _rate(sum(r.before_right for r in results), n), _rate(sum(r.first_right for r in results), n),
        _rate(sum(r.right_within_limit for r in results), n), _rate(sum(r.recall_right for r in results), n),
        _rate(sum(r.recall_ranked for r in results), n), _rate(sum(r.old_kept for r in results), n),
        round(sum(len(r.rounds) for r in results) / n, 3), round(sum(times) / len(times), 3) if times else 0.0,
        sum(1 for r in results if r.error), tuple(results), _rate(sum(r.first_grounded for r in results), n),
        _rate(sum(r.recall_grounded for r in results), n), _claim_rate(results))


def _claim_rate(results: list[DialogueResult]) -> float:
    answers = [bool(x.unsupported) for r in results for x in r.rounds] + [bool(r.recall_unsupported)
                                                                            for r in results if r.recall]
    return _rate(sum(answers), len(answers))


def _rate(num: int, den: int) -> float:
    return round(num / den, 4) if den else 0.0


# --------------------------------------------------------------------------- output


def format_report(r: FeedbackEvalReport) -> str:
    """The plain-text table printed by the command."""
    fb = r.feedback
    n = r.dialogues

    def row(name: str, rate: float) -> str:
        return f"{name:<52}{rate * 100:>7.1f}%  ({round(rate * n)}/{n})"

    title = (f"kgrow feedback eval: {n} dialogues; model={r.model} embedder={r.embedder}{' (fake)' if r.fake else ''}; "
             f"λ={fb.target_weight:g} μ={fb.rejected_weight:g} candidates={fb.candidates} "
             f"temperature={fb.temperature:g} max_rounds={fb.max_rounds}; {r.seconds:.1f} s")
    lines = [title, "",
             row("answer before the correction right", r.before_right),
             row("first regenerated answer right", r.first_regenerated_right),
             row("first regenerated answer grounded", r.first_regenerated_grounded),
             row(f"right within {fb.max_rounds} round(s)", r.right_within_limit),
             row("corrected fact recalled in a new session (answer)", r.recall_right),
             row("... grounded", r.recall_grounded),
             row("corrected fact ranked above the old one (new session)", r.recall_ranked),
             row("old fact kept in history", r.old_kept),
             f"{'answers with an unsupported claim':<52}{r.unsupported_claim_rate * 100:>7.1f}%",
             f"{'mean rounds':<52}{r.mean_rounds:>8.2f}",
             f"{'seconds per regeneration':<52}{r.seconds_per_regeneration:>8.2f}"]
    errors = [(x.id, x.error) for x in r.results if x.error]
    if errors:
        lines += ["", "errors:"] + [f"  {i}: {e}" for i, e in errors]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = run_args("python -m agent.evals.feedback_eval", __doc__, "dialogues", "dialogues")
    default = FeedbackConfig()
    ap.add_argument("--lam", type=float, default=default.target_weight,
                    help="λ: weight of the similarity to the correction")
    ap.add_argument("--mu", type=float, default=default.rejected_weight,
                    help="μ: weight of the similarity to rejected answers")
    ap.add_argument("--candidates", type=int, default=default.candidates, help="candidates per round")
    ap.add_argument("--fusion", default="on", choices=["off", "on", "only"],
                    help="knowledge fusion as in `python -m agent.evals.scenario_eval` (default on, the agent's default)")
    ap.add_argument("--max-rounds", type=int, default=default.max_rounds, help="regenerations per question")
    args = ap.parse_args(argv)
    try:
        feedback = replace(default, target_weight=args.lam, rejected_weight=args.mu, candidates=args.candidates,
                           max_rounds=args.max_rounds)
        config = EvalConfig(args.dialogues, args.model, args.device, args.fake, args.limit, fusion=args.fusion)
        report = evaluate(args.dialogues, config, feedback, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except (AgentError, KBError) as e:
        print(f"agent.evals.feedback_eval: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    print(format_report(report))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(asdict(report), indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
