"""Text basics every other part reads: the shared spaCy pipeline, sentences, times, literals, the relation vocabulary, noun phrases, intent and modality."""
