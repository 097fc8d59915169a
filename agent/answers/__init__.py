"""The answer policy: which questions the bare model answers, grounding checks, template answers, and plan answers."""
