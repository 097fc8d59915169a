"""kgrow's agent: the chat loop, dialogue state, LLM, fusion, feedback and the `kgrow` CLI."""
from __future__ import annotations


def __getattr__(name: str):
    # Agent loads on first access (it pulls in torch), so `import agent` and `kgrow --help` stay cheap.
    if name == "Agent":
        from agent.pipeline.loop import Agent

        return Agent
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
