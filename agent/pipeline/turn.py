"""Running one turn through the pipeline's stages as a stream: the agent's lock is held while a stage reads or changes the agent, never across a yield."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from agent.language.sentences import count_sentences, may_end
from agent.pipeline.streaming import TurnGate, TurnStream
from agent.types import Composed, Generated, Recalled, ReplyKind, Understood

if TYPE_CHECKING:
    from agent.pipeline.session import Session
    from agent.pipeline.stages import TurnPipeline


def take_turn(pipeline: TurnPipeline, session: Session, lock, gate: TurnGate, text: str,
              now: float | None = None) -> TurnStream:
    """Answer ``text`` (already cleaned, said at ``now``: default the clock), yielding the reply as it
    is generated; the session's ``last_reply`` holds the Reply once the stream is finished or closed."""
    return TurnStream(lambda me: _run(pipeline, session, lock, gate, text, now, me))


def _run(pipeline: TurnPipeline, session: Session, lock, gate: TurnGate, text: str, now: float | None,
         me) -> Iterator[str]:
    u: Understood | None = None
    r: Recalled | None = None
    c: Composed | None = None
    stream = None
    with lock:
        gate.enter(me)
        try:
            u = pipeline.understand(session, text, now)
            if pipeline.acknowledges(u):  # the reply says what commit stored: no recall, no model
                c = pipeline.compose(session, u, None)
            else:
                r = pipeline.recall(session, u)
                c = pipeline.compose(session, u, r)
                stream = pipeline.generate(c)
        except BaseException:
            try:
                if u is not None:  # what the user said is stored even when answering failed
                    pipeline.commit(session, u, r, c or Composed(ReplyKind.FIXED), Generated("", False))
            finally:
                gate.leave()
            raise
        if stream is None:
            try:
                reply = pipeline.commit(session, u, None, c, Generated("", False))
            finally:
                gate.leave()
    if stream is None:
        yield reply.text
        return
    pieces: list[str] = []
    g0 = time.perf_counter()
    generated = False
    try:
        limits = c.limits
        for piece in stream:
            pieces.append(piece)
            if not c.held:
                yield piece
            if (limits is not None and limits.max_sentences and may_end(piece)
                    and count_sentences("".join(pieces)) >= limits.max_sentences):
                break
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        if c.held:  # checked whole against the memories, then shown
            with lock:
                pieces[:] = [pipeline.ground("".join(pieces), r)]
            yield pieces[0]
        generated = c.kind in (ReplyKind.BARE, ReplyKind.MODEL)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        with lock:
            try:
                fused = pipeline.parts.fuser.read(c.knowledge) if generated else ()
                g = Generated("".join(pieces).strip(), generated, fused, time.perf_counter() - g0)
                pipeline.commit(session, u, r, c, g)
            finally:
                gate.leave()
