"""kgrow's agent: the chat loop, dialogue state, LLM, fusion, feedback and the `kgrow` CLI."""
from __future__ import annotations


def __getattr__(name: str):
    # Heavy names load on first access, so that `import agent` (and `kgrow --help`) stays cheap.
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
