"""Errors raised by the knowledge base; every message names the bad value and what would be valid.

Hierarchy (catch ``KBError`` to handle them all):

- ``KBError`` — base class.
  - ``InvalidInputError`` — a value given by the caller is malformed (empty text, bad
    confidence, non-UTF-8 bytes, unknown enum value...). Nothing was written.
  - ``NotFoundError`` — a fact id, entity, user or directory that does not exist.
  - ``KBLockedError`` — another process holds the writer lock on the directory.
  - ``IncompatibleKBError`` — the directory was written by a newer format version, or by an
    embedder whose id or dimension differs from the one in use.
  - ``ImportFormatError`` — a record in an import file is malformed; carries the line number
    and field of the first bad record. The knowledge base is unchanged.
  - ``IntegrityError`` — the stored data is inconsistent in a way that cannot be repaired
    automatically (the vector index alone is always rebuilt silently from the log instead).
"""
from __future__ import annotations

import enum
from typing import TypeVar

E = TypeVar("E", bound=enum.Enum)


class KBError(Exception):
    """Base class of every error the knowledge base raises on purpose."""

    #: process exit code the CLI uses for this kind of error
    exit_code: int = 1


class InvalidInputError(KBError, ValueError):
    """A caller-supplied value is malformed; nothing was written."""

    exit_code = 2


class NotFoundError(KBError, LookupError):
    """A fact id, entity, user or directory does not exist."""

    exit_code = 3


class KBLockedError(KBError):
    """Another process is writing to this knowledge base directory."""

    exit_code = 4


class IncompatibleKBError(KBError):
    """The directory's format version or embedder does not match this software."""

    exit_code = 5


class ImportFormatError(InvalidInputError):
    """A record of an import file is malformed; ``line`` and ``field`` locate it."""

    def __init__(self, line: int, field: str, message: str):
        self.line = line
        self.field = field
        super().__init__(f"line {line}, field {field!r}: {message}")


class IntegrityError(KBError):
    """Stored data is inconsistent beyond what an automatic index rebuild can repair."""

    exit_code = 6


def choice(cls: type[E], value: object, what: str, valid: str = "valid", fold: bool = False) -> E:
    """The member of the str Enum ``cls`` that ``value`` names (a member passes through; ``fold``
    ignores case and surrounding space), else InvalidInputError: "unknown {what} 'x'; {valid}: a, b"."""
    try:
        return cls(value.strip().lower() if fold and isinstance(value, str) else value)
    except ValueError:
        raise InvalidInputError(f"unknown {what} {value!r}; {valid}: {', '.join(m.value for m in cls)}") from None
