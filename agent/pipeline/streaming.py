"""One open turn per agent, and a turn's reply as an iterator that never holds a lock across a yield."""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator


class TurnGate:
    """Admits one turn at a time to an agent whose lock is ``lock`` (an RLock).

    A turn holds the lock only while it reads or changes the agent, never while its reply is being
    read. So a caller can stop reading a stream halfway: when the same thread starts another turn
    (or switches user, resets, gives feedback, closes), the abandoned turn is finished first with
    what it said so far. A turn open on another thread is waited for, as a lock would be.
    """

    def __init__(self, lock):
        self._cond = threading.Condition(lock)
        self._open: tuple[int, weakref.ref] | None = None  # (thread id, the TurnStream)

    def settle(self) -> None:
        """Finish an abandoned turn of this thread, or wait for another thread's; call with the lock held."""
        while self._open is not None:
            thread, ref = self._open
            earlier = ref()
            if earlier is None:  # dropped: its generator was closed, or will be by the collector
                self._open = None
            elif thread == threading.get_ident():
                try:
                    earlier.close()  # runs its commit, which calls leave()
                except ValueError:  # it is running right now, below us on this stack: nothing to finish
                    return
                if self._open is not None and self._open[1] is ref:
                    self._open = None
            else:
                self._cond.wait()

    def enter(self, stream: weakref.ref) -> None:
        """Open a turn for the TurnStream ``stream`` refers to (settling any earlier one first); call
        with the lock held."""
        self.settle()
        self._open = (threading.get_ident(), stream)

    def leave(self) -> None:
        """Close the open turn; call with the lock held."""
        self._open = None
        self._cond.notify_all()


class TurnStream(Iterator[str]):
    """The reply of one turn, piece by piece; ``close()`` finishes the turn with what was said so far."""

    def __init__(self, run: Callable[[weakref.ref], Iterator[str]]):
        # the generator gets a weak reference to this stream: no cycle keeps an abandoned turn alive
        self._gen = run(weakref.ref(self))

    def __iter__(self) -> TurnStream:
        return self

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()
