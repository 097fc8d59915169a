"""kgrow's agent: the chat loop, dialogue state, LLM, fusion, feedback and the `kgrow` CLI."""
from __future__ import annotations

import importlib

# Public names resolved on first access, so that `import agent` (and `kgrow --help`) stays cheap:
# name -> "module:attribute". The chat agent registers here, e.g. "Agent": "agent.core:Agent".
_LAZY: dict[str, str] = {}


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
