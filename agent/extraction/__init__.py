"""Facts from one utterance: the Triple contract, the rule extractor over the dependency parse, and the constrained LLM extractor."""
