"""Canonical triples and answer matching for the scenario eval: names resolved and dates normalised,
relation synonyms merged, and contains-value accuracy (a value mentioned, none rejected)."""
from __future__ import annotations

import re
from datetime import datetime

from agent.evals.grounded import is_abstention
from agent.evals.records import Canon
from agent.evals.scenario import GoldTriple, ScriptTurn
from kb import KnowledgeBase
from kb.errors import KBError
from kb.facts import Fact, normalize_relation

#: relations that count as the same one when scoring extraction (each maps to the group's first name)
RELATION_SYNONYMS: dict[str, str] = {
    "wife": "spouse", "husband": "spouse", "married_to": "spouse",
    "boyfriend": "partner", "girlfriend": "partner",
    "full_name": "name", "first_name": "name",
    "job": "occupation", "job_title": "occupation", "profession": "occupation",
    "employer": "works_at", "birthday": "born_on", "date_of_birth": "born_on", "birthplace": "born_in",
    "owns_pet": "has_pet", "native_language": "speaks",
}
_DATE_FORMATS = ("%Y-%m-%d", "%B %d, %Y", "%B %d %Y", "%d %B %Y", "%d %B, %Y", "%b %d, %Y", "%d %b %Y")


def _canon_name(kb: KnowledgeBase, value: str) -> str:
    s = re.sub(r"^(?:a|an|the)\s+", "", kb.resolve(value))
    d = re.sub(r"(\d)(?:st|nd|rd|th)\b", r"\1", s)
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(d, fmt).strftime("%Y-%m-%d")
        except ValueError:
            continue
    return s


def canon_relation(relation: str) -> str:
    r = normalize_relation(relation)
    r = "favorite_" + r[len("favourite_"):] if r.startswith("favourite_") else r
    return RELATION_SYNONYMS.get(r, r)


def canon(kb: KnowledgeBase, subject: str, relation: str, obj: str) -> Canon:
    return (_canon_name(kb, subject), canon_relation(relation), _canon_name(kb, obj))


def canon_fact(kb: KnowledgeBase, f: Fact | GoldTriple) -> Canon:
    return canon(kb, f.subject, f.relation, f.object)


def mentions(text: str, phrase: str) -> bool:
    """Case-insensitive containment of ``phrase`` starting at a word boundary."""
    t, p = " ".join(text.casefold().split()), " ".join(phrase.casefold().split())
    return re.search(rf"(?<!\w){re.escape(p)}", t) is not None


def answer_ok(turn: ScriptTurn, reply: str) -> bool:
    """Contains-value accuracy: one of expect_answer, none of reject, and an abstention exactly when
    the turn says so (``abstain``: true / false; unset: not graded)."""
    found = not turn.expect_answer or any(mentions(reply, a) for a in turn.expect_answer)
    if turn.abstain is not None and is_abstention(reply) != turn.abstain:
        return False
    return found and not any(mentions(reply, r) for r in turn.reject)


def visible_facts(kb: KnowledgeBase, user: str) -> list[Fact]:
    try:
        return kb.facts(user=user)
    except KBError:  # a user the KB has never seen sees nothing
        return []
