"""The feedback loop: ratings and corrections of the last reply, bounded confidence updates, and re-ranked regeneration.

``Agent.feedback(rating=..., correction=..., note=...)`` calls ``apply_feedback`` here. One call:

1. validates everything first (no previous reply, empty correction or note, a rating outside 1..5,
   nothing given, a "good" rating next to a correction): ``BadInputError``, nothing changed;
2. stores a correction as a user statement of its own turn (same extraction and write-back as a
   chat turn), so its facts supersede the single-valued facts they contradict; a used fact of the
   rejected answer in the same (subject, relation) slot with another object is retracted too
   (multi-valued relations: "my dog is called Max" after an answer built on "...named Rex"). Every
   fact and retraction records "correction of turn N" (N = the rated turn) as its provenance note;
3. moves the confidence of the facts the rated reply rested on (its used facts; for a template
   acknowledgement, the facts it stored) down for ratings 1-2 and up for 4-5, within
   [min_confidence, max_confidence]; each change is kept in the fact's history with the reason.
   Facts the correction restates are not lowered. Retrieval ranks by confidence, so the next
   answer prefers what was confirmed;
4. for a bad rating of a generated answer, builds the prompt for the same question again (after
   the correction is stored, so retrieval sees it), generates candidates through
   ``Agent._candidates`` and re-ranks them (``rerank``): the best becomes the new last reply, in
   the dialogue state and the history. A later bad rating of that answer starts the next round, up
   to ``max_rounds``; the rounds are kept on ``Reply.rounds`` for ``/why``.
"""
from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from agent.errors import AgentError, BadInputError
from agent.validation import check, within
from agent.language.intent import Intent
from agent.types import (BAD, GOOD, RATING_MAX, RATING_MIN, Candidate, FeedbackRound, FeedbackSignal, Rating,  # noqa: F401
                         Reply, Timings)  # the records live in agent/types.py; re-exported here
from agent.generation.prompt import Exchange, display_name, third_person
from kb.errors import KBError
from kb.facts import Fact, Status, clean_text, normalize_relation

if TYPE_CHECKING:
    from agent.dialogue.state import DialogueState, Turn
    from agent.pipeline.loop import AgentConfig
    from agent.pipeline.session import Session
    from agent.pipeline.stages import TurnPipeline
    from kb import KnowledgeBase
    from kb.embeddings import Embedder

# the "no, ..." that opens many corrections: it says the old answer was wrong, not what the new one is
_CORRECTION_LEAD = re.compile(r"(?i)^(?:no|nope|actually|wrong|incorrect|not quite|that's (?:wrong|not right|"
                              r"incorrect))\b[\s,.!:;-]*")




@dataclass(frozen=True)
class FeedbackConfig:
    """How feedback moves confidences and how a rejected answer is regenerated and re-ranked."""

    # λ: weight of the cosine between a candidate and what the feedback asks for (correction/note)
    target_weight: float = within(1.0, 0.0, 10.0)
    # μ: weight of the cosine between a candidate and the answers already rejected: moves away from them
    rejected_weight: float = within(1.0, 0.0, 10.0)
    # with a correction, compare candidates with only the part of each rejected answer that the
    # correction does not share (its component orthogonal to the target vector): otherwise the
    # right "Sam lives in Berlin." is penalised for the "Sam lives in" it shares with the rejected
    # "Sam lives in Paris." (MiniLM cosine ~0.8), leaving it a margin of ~0.2 over an unrelated answer.
    # False uses the plain cosine (feedback eval: first answers 24/24 right either way, 2 of 24 differ)
    rejected_beyond_target: bool = True
    # candidates per round: the greedy answer plus sampled ones (duplicates are dropped)
    candidates: int = within(4, 1, 32)
    # sampling temperature of the sampled candidates (the greedy one has none)
    temperature: float = within(0.8, 0.05, 5.0)
    # nucleus cut of the sampled candidates: drops the long tail a 135M model wanders into
    top_p: float = within(0.95, 0.01, 1.0)
    # regenerations per question; a bad rating after the last one is recorded but asks for no new answer
    max_rounds: int = within(3, 1, 20)
    # confidence change of each fact a reply used, for a rating of 1 (down) or 5 (up); 2 and 4 move
    # half as far. Down is larger: one rejection is stronger evidence than one approval
    step_down: float = within(0.25, 0.0, 1.0)
    step_up: float = within(0.1, 0.0, 1.0)
    # feedback never moves a confidence outside these bounds (a fact is not erased by ratings alone)
    min_confidence: float = within(0.05, 0.0, 1.0)
    max_confidence: float = within(1.0, 0.0, 1.0)
    # first sampling seed; round r samples with seed + r, so retries differ and runs repeat
    seed: int = within(0, 0, 2147483647)
    # token cap of each candidate when the user's length preference sets none: answers are a sentence or two
    max_new_tokens: int = within(64, 1, 1024)

    def __post_init__(self) -> None:
        check(self)  # every within() field in its range; then what relates two fields
        if not self.min_confidence < self.max_confidence:
            raise BadInputError(f"FeedbackConfig confidence bounds [{self.min_confidence}, {self.max_confidence}] are "
                                "invalid; give 0 <= min_confidence < max_confidence <= 1")


@dataclass(frozen=True)
class ConfidenceChange:
    """One fact's confidence moved by a rating (also in the fact's history)."""

    fact_id: str
    text: str
    old: float
    new: float


@dataclass(frozen=True)
class FeedbackResult:
    """What one ``Agent.feedback`` call did."""

    rating: Rating
    turn: int  # index of the turn whose reply was rated
    confidence_changes: tuple[ConfidenceChange, ...]
    learned: tuple[Fact, ...]  # new facts stated by the correction
    superseded: tuple[Fact, ...]  # facts the correction replaced or retracted
    reply: Reply | None  # the regenerated reply (now ``Agent.last_reply``); None when none was made
    round: FeedbackRound | None  # the round that produced ``reply``
    limit_reached: bool = False  # a new answer was due, but max_rounds were already used


# --------------------------------------------------------------------------- re-ranking


def rerank(candidates: Sequence[Candidate], signal: FeedbackSignal, config: FeedbackConfig,
           embedder: Embedder) -> list[Candidate]:
    """Score and sort ``candidates``, best first: mean log-prob + λ·cos(target) − μ·max cos(rejected).

    With ``rejected_beyond_target`` and a target, each rejected vector is first reduced to its
    component orthogonal to the target (see FeedbackConfig). Identical texts (ignoring case and
    spacing) are merged, keeping the most probable; empty answers are dropped unless nothing else is left.
    """
    best: dict[str, Candidate] = {}
    for c in candidates:
        key = " ".join(c.text.split()).casefold()
        if key not in best or c.logprob > best[key].logprob:
            best[key] = c
    pool = [c for k, c in best.items() if k] or list(best.values())
    if not pool:
        raise AgentError(f"the model produced no candidate answers (candidates={config.candidates})")
    vecs = embedder.embed_documents([c.text for c in pool])  # (n, dim), unit rows
    rv = signal.rejected_vectors  # (r, dim)
    if config.rejected_beyond_target and signal.target_vector is not None and len(rv):
        t = signal.target_vector
        rv = rv - np.outer(rv @ t, t)  # what each rejected answer says beyond the target
        norms = np.linalg.norm(rv, axis=1, keepdims=True)
        rv = np.where(norms > 1e-6, rv / np.maximum(norms, 1e-6), 0.0)  # the target itself: nothing to avoid
    rej = (vecs @ rv.T).max(axis=1) if len(rv) else np.zeros(len(pool))
    tgt = vecs @ signal.target_vector if signal.target_vector is not None else None
    scored = []
    for i, c in enumerate(pool):
        t = float(tgt[i]) if tgt is not None else None
        r = float(rej[i])
        score = c.logprob + config.target_weight * (t or 0.0) - config.rejected_weight * r
        scored.append(replace(c, target_sim=t, rejected_sim=r, score=score))
    order = sorted(range(len(scored)), key=lambda i: (-scored[i].score, i))  # ties: generation order
    return [scored[i] for i in order]


def make_signal(embedder: Embedder, config: FeedbackConfig, number: int, rating: Rating, target: str | None,
                rejected: Sequence[str]) -> FeedbackSignal:
    """Embed what the feedback asks for and what it rejects; see FeedbackSignal for the vector."""
    rej = tuple(dict.fromkeys(rejected))
    rv = embedder.embed_documents(list(rej)) if rej else np.zeros((0, embedder.dim), dtype=np.float32)
    tv = embedder.embed_query(target) if target else None
    direction = np.zeros(embedder.dim, dtype=np.float32)
    if tv is not None:
        direction += config.target_weight * tv
    if len(rej):
        direction -= config.rejected_weight * rv[0]
    norm = float(np.linalg.norm(direction))
    if norm < 1e-9:  # both weights 0, or the target equals the rejected answer: keep the plain evidence
        direction = tv.copy() if tv is not None else (-rv[0] if len(rej) else np.eye(embedder.dim, dtype=np.float32)[0])
        norm = float(np.linalg.norm(direction)) or 1.0
    return FeedbackSignal(number, rating, target, rej, (direction / norm).astype(np.float32), tv, rv)


# --------------------------------------------------------------------------- confidence


def adjust_confidence(kb: KnowledgeBase, facts: Sequence[Fact], rating: Rating, config: FeedbackConfig,
                      reason: str) -> list[ConfidenceChange]:
    """Move each fact's confidence by the rating's step, within the configured bounds.

    A confidence already beyond a bound is left where it is (feedback only ever moves it towards
    the bound); forgotten facts and facts whose confidence would not change are skipped.
    """
    s = rating.strength
    delta = config.step_up * s if s > 0 else config.step_down * s
    if delta == 0.0:
        return []
    out = []
    for fid in dict.fromkeys(f.id for f in facts):
        f = kb.fact(fid)  # current values: the reply's copy may be stale
        if f.status is Status.FORGOTTEN:
            continue
        old = f.confidence
        if delta > 0:
            new = max(old, min(config.max_confidence, old + delta))
        else:
            new = min(old, max(config.min_confidence, old + delta))
        new = round(new, 6)
        if new == old:
            continue
        kb.set_confidence(fid, new, reason=reason)
        out.append(ConfidenceChange(fid, f.text, old, new))
    return out


# --------------------------------------------------------------------------- the loop


def apply_feedback(pipeline: TurnPipeline, session: Session, rating: Rating | int | str | None = None,
                   correction: str | None = None, note: str | None = None) -> FeedbackResult:
    """Rate, correct or comment on ``session.last_reply`` (see the module docstring) through the turn
    pipeline's public stages; the caller holds the agent lock."""
    last = session.last_reply
    if last is None or last.state.user != session.user:
        raise BadInputError("there is no previous reply to give feedback on in this session; ask something first")
    fix = _clean(correction, "correction")
    why = _clean(note, "note")
    if rating is None and fix is None and why is None:
        raise BadInputError("feedback needs a rating (1..5, good or bad), a correction or a note; none was given")
    rate = Rating.parse(rating) if rating is not None else BAD  # a correction or note alone asks for a new answer
    if fix is not None and rate.is_good:
        raise BadInputError(f"rating {rate} says the answer was right, but a correction says it was wrong; "
                            "give a rating of 1..3, or no rating, with a correction")
    cfg = pipeline.config.feedback
    rated = last.state
    generated = _was_generated(pipeline.config, last)
    number = len(last.rounds) + 1
    wants_new = rate.is_bad and generated
    limit_reached = wants_new and number > cfg.max_rounds
    # validated: stored data changes from here on
    basis = [u.fact for u in last.used_facts] if generated else list(last.learned_facts)
    t0 = t1 = time.perf_counter()
    state, fix_turn, learned, superseded, confirmed = session.state, None, [], [], set()
    reason = f"reply to turn {rated.index} rated {rate}" + (f": {why}" if why else "") + (
        f"; corrected: {fix}" if fix else "")
    with pipeline.kb.batch():  # one KB transaction: the correction and the confidence changes
        if fix is not None:
            state, fix_turn, learned, superseded, confirmed = _store_correction(pipeline, session, fix, rated, basis)
        t1 = time.perf_counter()
        changes = adjust_confidence(pipeline.kb, [f for f in basis if f.id not in confirmed], rate, cfg, reason)
    t2 = time.perf_counter()
    reply, rnd = None, None
    if wants_new and not limit_reached:
        reply, rnd = _regenerate(pipeline, session, state, last, rate, fix, why, number, learned, superseded,
                                 fix_turn, extraction=t1 - t0, write_back=t2 - t1)
        session.advance(state, Exchange(rated.text, reply.text), reply=reply, replaces=True)
    else:
        session.advance(state, None)
    return FeedbackResult(rate, rated.index, tuple(changes), tuple(learned), tuple(superseded), reply, rnd,
                          limit_reached)


def _clean(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return clean_text(value, what)
    except KBError as e:
        raise BadInputError(str(e)) from None


def _was_generated(config: AgentConfig, reply: Reply) -> bool:
    """False for a template acknowledgement of stored facts (nothing to regenerate; its facts are rated)."""
    ack = config.template_acknowledgements and bool(reply.learned_facts or reply.superseded_facts)
    return bool(reply.rounds) or not ack


def _store_correction(pipeline: TurnPipeline, session: Session, text: str, rated: Turn, basis: Sequence[Fact]
                      ) -> tuple[DialogueState, Turn, list[Fact], list[Fact], set[str]]:
    """Store ``text`` as a correction turn, through the pipeline's understand stage and its writer:
    (the state with that turn, the turn, facts learned, facts superseded, ids of basis facts it restates)."""
    u = pipeline.understand(session, text, intent=Intent.CORRECTION)  # a /fix is a correction whatever its wording
    note = f"correction of turn {rated.index}"
    stored = pipeline.writer.store(session.user, u, note=note)
    kb, turn = pipeline.kb, u.turn
    stated = {(kb.resolve(t.subject), normalize_relation(t.relation), kb.resolve(t.object))
              for t in u.triples if not t.negated}
    slots = {(s, r) for s, r, _ in stated}
    confirmed = {f.id for f in basis if f.triple() in stated}
    done = {f.id for f in stored.superseded + stored.retracted}
    extra: list[Fact] = []
    for f in basis:  # the rejected answer's facts in a corrected slot (multi-valued relations)
        if (f.subject, f.relation) in slots and f.id not in confirmed and f.id not in done and f.user == session.user:
            current = kb.fact(f.id)
            if current.status is Status.ACTIVE:
                extra.append(kb.retract(f.id, reason=note))
    if extra:
        turn.superseded_fact_ids += [f.id for f in extra]
        pipeline.tracker.apply_learned(u.state, extra)
    return u.state, turn, list(stored.learned), list(stored.superseded + stored.retracted) + extra, confirmed


def _regenerate(pipeline: TurnPipeline, session: Session, state: DialogueState, last: Reply, rate: Rating,
                fix: str | None, note: str | None, number: int, learned: list[Fact], superseded: list[Fact],
                fix_turn: Turn | None, *, extraction: float, write_back: float) -> tuple[Reply, FeedbackRound]:
    """Answer the rated question again from fresh retrieval and re-ranked candidates (the pipeline's
    recall, compose and candidate stages); the caller makes it the last reply."""
    cfg = pipeline.config.feedback
    question = last.state
    history = list(session.history)
    if history and history[-1].user_text == question.text:
        history = history[:-1]  # the rejected exchange itself is not context for its replacement
    profile = replace(session.preferences, slots=dict(state.profile))
    r0 = time.perf_counter()
    # resolved again: the correction may have changed what "my favorite food" refers to
    asked_turn = pipeline.tracker.resolve_again(state, question)
    used = pipeline.facts_for(session, state, question.text, asked_turn)
    r1 = time.perf_counter()
    messages = pipeline.prompt_for(profile, question.text, asked_turn, used, history)
    name = display_name(profile)
    asked = " ".join(x for x in (_CORRECTION_LEAD.sub("", fix) if fix else None, note) if x)
    rejected = (last.text,) + (last.rounds[-1].signal.rejected if last.rounds else ())
    signal = make_signal(pipeline.kb.embedder, cfg, number, rate, third_person(asked, name) if asked else None,
                         rejected)
    ranked = rerank(pipeline.candidates(profile, messages, signal, used,
                                        pipeline.asked_form(profile, question.text, asked_turn)),
                    signal, cfg, pipeline.kb.embedder)
    r2 = time.perf_counter()
    rnd = FeedbackRound(number, signal, tuple(ranked), ranked[0], r2 - r1)
    text = ranked[0].text
    question.reply = text
    question.used_fact_ids = [u.fact.id for u in used]
    if fix_turn is not None:
        fix_turn.reply = text
    # fused=(): the first answer's knowledge-token attention says nothing about this one; the
    # round's candidates say which were fused; trace=None: the stage records were the first answer's
    reply = replace(last, text=text, used_facts=tuple(used), learned_facts=tuple(learned),
                    superseded_facts=tuple(superseded), rounds=last.rounds + (rnd,), fused=(), trace=None,
                    timings=Timings(retrieval=r1 - r0, generation=r2 - r1, extraction=extraction,
                                    write_back=write_back))
    return reply, rnd
