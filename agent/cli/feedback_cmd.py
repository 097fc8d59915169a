"""The chat's feedback commands `/good`, `/bad [note]` and `/fix <correction>`, and the feedback rounds shown by `/why`.

On the plain pipe protocol a regenerated answer is the first line of the command's output (so a
script reads it like any reply); what changed follows on lines of their own.
"""
from __future__ import annotations

from agent.pipeline.feedback import BAD, GOOD, FeedbackResult, FeedbackRound

USAGE = {"/fix": "usage: /fix CORRECTION   e.g. /fix I live in Berlin."}


def slash(agent, cmd: str, arg: str) -> str:
    """Run /good, /bad [note] or /fix <correction> on the last reply; returns what to print.

    Errors (no previous reply...) propagate as BadInputError for the chat's one-line error message.
    """
    if cmd == "/good":
        result = agent.feedback(rating=GOOD, note=arg or None)
    elif cmd == "/bad":
        result = agent.feedback(rating=BAD, note=arg or None)
    else:
        if not arg:
            return USAGE["/fix"]
        result = agent.feedback(correction=arg)
    return "\n".join(describe(result, agent.config.feedback.max_rounds))


def describe(result: FeedbackResult, max_rounds: int) -> list[str]:
    """The new answer (if any), then the facts learned and replaced and the confidence changes."""
    lines = []
    if result.reply is not None:
        lines.append(result.reply.text or "(the model gave an empty answer)")
    elif result.limit_reached:
        lines.append(f"(no new answer: the {max_rounds}-round limit for this question is reached; "
                     "try /fix with the right answer, or rephrase the question)")
    elif result.rating.is_bad:
        lines.append("(noted; the last reply only confirmed what I stored, so there is nothing to regenerate)")
    else:
        lines.append(f"(thanks: rated {result.rating})")
    lines += [f"learned: {f.text}" for f in result.learned]
    lines += [f"superseded: {f.text}" for f in result.superseded]
    lines += [f"confidence: {c.text} {c.old:.2f} -> {c.new:.2f}" for c in result.confidence_changes]
    if result.round is not None:
        lines.append(f"(round {result.round.number} of {max_rounds}; /why shows the candidates, /good or /bad rates it)")
    return lines


def rounds(feedback_rounds: tuple[FeedbackRound, ...], target_weight: float, rejected_weight: float) -> list[str]:
    """`/why` lines for each feedback round: the signal, every candidate's score terms, the chosen one."""
    if not feedback_rounds:
        return []
    lines = [f"feedback rounds (score = log-prob + {target_weight:g}·sim(asked) - {rejected_weight:g}·sim(rejected)):"]
    for rnd in feedback_rounds:
        s = rnd.signal
        asked = f'asked for "{s.text}"' if s.text else "asked for nothing specific"
        rejected = "; ".join(f'"{t}"' for t in s.rejected) or "(nothing)"
        lines.append(f"  round {rnd.number}: rated {s.rating}; {asked}; rejected {rejected}; {rnd.seconds:.2f} s")
        for c in rnd.candidates:
            mark = "*" if c == rnd.chosen else " "
            tsim = "-" if c.target_sim is None else f"{c.target_sim:.3f}"
            lines.append(f"   {mark} score {c.score:+.3f}  log-prob {c.logprob:+.3f}  sim(asked) {tsim}  "
                         f"sim(rejected) {c.rejected_sim:.3f}  {'fused ' if c.fused else ''}{'greedy' if c.greedy else 'sample'}: \"{c.text}\"")
    lines.append("  (* = chosen)")
    return lines
