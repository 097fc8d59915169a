"""One chat turn and the Agent that runs it: understand, recall, compose, generate and commit, plus feedback and regeneration."""
