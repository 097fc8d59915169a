"""The per-directory writer lock: one writing process at a time, any number of readers."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from kb.errors import KBLockedError

LOCK_FILE = "writer.lock"


class WriterLock:
    """An exclusive ``flock`` on DIR/writer.lock, released on close or when the process dies."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise KBLockedError(
                f"{self.path.parent} is being written by pid {holder}; close that process first, "
                "or open read-only (KnowledgeBase.open(path, read_only=True) / kgrow kb --read-only)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
