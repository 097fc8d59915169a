"""A resolved noun phrase of the rule extractor: the record that patterns, copula and frames pass around."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ref:
    """A resolved noun phrase: the name to store and how sure the resolution is."""

    name: str
    confidence: float
    common: bool = False  # a bare common noun ("the dog"): not an entity to state facts about
    # the relations this subject may take; "we" holds the speaker only for a shared home ("we live in Leeds")
    only: frozenset[str] | None = None
