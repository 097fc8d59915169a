"""Completed sentences in a growing reply, by pysbd's rule-based sentence boundary detection.

pysbd (the "Golden Rules" segmenter, pure Python, no model) knows abbreviations, initials, numbers
and ellipses: "Mr. Smith lives in St. Louis." is one sentence, where a full stop followed by a space
cut it at "St.", so a 2-sentence cap truncated real answers. spaCy's sentencizer was the other
candidate; pysbd needs no pipeline and is the same on every machine.
"""
from __future__ import annotations

import functools
import re

# a sentence can only have been completed by a piece holding one of these: the splitter runs only then
_MAY_END = re.compile(r"[.!?\n\u2026]")
# appended before splitting: the last sentence is complete exactly when the probe starts a new one
_PROBE = " The"


@functools.lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def count_sentences(text: str) -> int:
    """Completed sentences in ``text`` ("Mr. Smith lives in St." is none yet; "... St. Louis." one)."""
    body = text.strip()
    if not body or not _MAY_END.search(body):
        return 0
    return len([s for s in _segmenter().segment(body + _PROBE) if s.strip()]) - 1


def may_end(piece: str) -> bool:
    """Whether ``piece``, appended to a reply, may complete a sentence (else the count is unchanged)."""
    return bool(_MAY_END.search(piece))
