"""The causal language model: loading, streaming decoding with prefix-cache reuse, the prompt layout, and scripted fakes."""
