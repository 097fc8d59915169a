"""Explicit dialogue state: turns with resolved mentions, the focus entity and the active user."""
