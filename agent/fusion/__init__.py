"""Knowledge fusion: the gated adapter, its files, knowledge tokens from memories, the agent's runtime side, and training on synthetic QA."""
