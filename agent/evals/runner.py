"""Scenario-eval runner: the shared models, each scenario in a fresh temporary KB with a process restart
per session, each turn timed and scored, and the whole run aggregated into an EvalReport."""
from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from agent.errors import BadInputError
from agent.evals.canon import answer_ok, canon_fact, visible_facts
from agent.evals.grounded import judge, policy_metrics, support_texts
from agent.evals.metrics import latency, metrics, policy_rows
from agent.evals.records import CheckResult, EvalConfig, EvalReport, ScenarioResult, StepTimes, TurnResult
from agent.evals.scenario import Category, CheckKind, Scenario, ScriptTurn, TurnKind, load_scenarios
from kb import SHARED, HashEmbedder, KBConfig, KnowledgeBase


class Runtime:
    """The models shared by every scenario of a run: spaCy, embedder, LLM and the agent config."""

    def __init__(self, config: EvalConfig):
        from agent.pipeline.loop import AgentConfig
        from agent.language.nlp import load_nlp

        self.nlp = load_nlp()
        if config.fake:
            from agent.generation.fakes import EchoLLM

            self.embedder, self.llm = HashEmbedder(64), EchoLLM()
            self.agent_config = AgentConfig(extractor=config.extractor)
        else:
            from agent.generation.llm import CausalLM, LLMConfig
            from kb import EmbedderConfig, SentenceTransformerEmbedder

            llm_config = LLMConfig(model=config.model, device=config.device)
            self.embedder = SentenceTransformerEmbedder(EmbedderConfig(device=config.device))
            self.llm = CausalLM(llm_config)
            from agent.fusion.fuser import AgentFusionConfig

            fusion = AgentFusionConfig(mode="off" if config.fusion == "off" else "on", with_text=config.fusion != "only")
            self.agent_config = AgentConfig(llm=llm_config, extractor=config.extractor, fusion=fusion)



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
    from agent.answers import support
    from agent.generation.llm import Message
    from agent.generation.prompt import display_name
    from agent.language.sentences import count_sentences
    from agent.pipeline import evidence

    g = judge(reply.text, bool(result.correct), support_texts(reply, turn.text, display_name(agent.profile)), rt.nlp)
    trace = reply.trace  # the topic the answer policy saw (its recall stage's plan), else asked again
    plan = trace.recalled.plan if trace is not None and trace.recalled is not None else None
    if plan is None:
        p, profile = agent.pipeline, agent.profile
        question, _ = evidence.records(agent.kb, agent.user, profile, p.adapter_active, turn.text, reply.state,
                                       reply.memories, p.asked_form(profile, turn.text, reply.state))
        about = support.topic(question) is support.Topic.USER
    else:
        about = plan.topic is support.Topic.USER
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
    from agent.pipeline.loop import Agent

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
