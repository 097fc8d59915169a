"""kgrow's agent: the chat loop, dialogue state, LLM, fusion, feedback and the `kgrow` CLI."""
