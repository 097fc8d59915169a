"""Config validation in one place: each bounded field declares its range next to it, and ``check`` reads them all."""
from __future__ import annotations

import dataclasses
from typing import Any

from agent.errors import BadInputError


def within(default: Any, lo: float, hi: float) -> Any:
    """A config field whose value must lie in ``lo..hi``; an int range takes ints only (never bools),
    a float range any real number. Use it as ``k: int = within(10, 1, 1000)  # why``."""
    return dataclasses.field(default=default, metadata={"range": (lo, hi)})


def bounded(lo: float, hi: float) -> Any:
    """A required config field (no default) whose value must lie in ``lo..hi``, checked like ``within``."""
    return dataclasses.field(metadata={"range": (lo, hi)})


def check(config: Any) -> None:
    """Raise BadInputError for the first ``within`` field of ``config`` (a dataclass) out of its range,
    naming the config, the field, the value and the valid range; call it from ``__post_init__``."""
    for f in dataclasses.fields(config):
        bounds = f.metadata.get("range")
        if bounds is None:
            continue
        lo, hi = bounds
        value = getattr(config, f.name)
        integral = isinstance(lo, int) and isinstance(hi, int)
        kinds = (int,) if integral else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not lo <= value <= hi:
            what = "an integer" if integral else "a number"
            raise BadInputError(f"{type(config).__name__}.{f.name}={value!r} is invalid; give {what} in {lo}..{hi}")
