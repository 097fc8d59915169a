"""Atomic file writes: temp file in the target directory, fsync, rename, fsync the directory."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

T = TypeVar("T")


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort on filesystems that cannot open directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """Call ``write`` on a temp file beside ``path`` and rename it over ``path``: never a half file.

    Errors propagate (a failed save is never swallowed) and the temp file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return result


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically and durably: the one way kgrow and kb write a small file."""
    data = text.encode("utf-8")
    write_atomic(Path(path), lambda fh: fh.write(data))


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON atomically next to the target (used for the manifest)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomic(Path(path), lambda fh: fh.write(text.encode("utf-8")))
