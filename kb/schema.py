"""Relation schema (which relations hold one value at a time) and default entity aliases."""
from __future__ import annotations

# Relations where a new object for the same user and subject replaces the old one. Users extend
# this per knowledge base with KnowledgeBase.declare_relation(name, single_valued=True).
DEFAULT_SINGLE_VALUED: frozenset[str] = frozenset(
    {
        "name", "full_name", "nickname", "age", "birthday", "born_on", "born_in", "date_of_birth",
        "lives_in", "home_town", "address", "located_in", "works_at", "employer", "job_title",
        "occupation", "job", "role", "email", "phone", "nationality", "citizenship", "gender",
        "height", "weight", "spouse", "married_to", "partner", "boss", "manager", "favorite_color",
        "favorite_food", "favorite_movie", "favorite_book", "favorite_sport", "favorite_drink",
        "favorite_music", "capital", "ceo", "founded_in", "population", "status", "language",
        "preferred_language", "timezone", "studies_at", "major", "salary", "car", "owns_pet",
    }
)

# Aliases every KB starts with: alias -> canonical (both normalised). Users add their own.
DEFAULT_ALIASES: dict[str, str] = {
    "nyc": "new york city",
    "new york": "new york city",
    "la": "los angeles",
    "sf": "san francisco",
    "uk": "united kingdom",
    "u.k.": "united kingdom",
    "britain": "united kingdom",
    "great britain": "united kingdom",
    "usa": "united states",
    "u.s.": "united states",
    "us": "united states",
    "u.s.a.": "united states",
    "america": "united states",
    "united states of america": "united states",
    "holland": "netherlands",
    "the netherlands": "netherlands",
    "deutschland": "germany",
}
