"""Recall: episodes and facts brought back for one message (agent.memory.recall), per-turn fact retrieval, citation, and importing chat histories."""
