"""The vocabulary of a KB: entity aliases and single-valued relations, cached and kept in step with the log."""
from __future__ import annotations

from kb.errors import InvalidInputError
from kb.facts import clean_text, normalize_name, normalize_relation
from kb.log import Storage
from kb.schema import DEFAULT_ALIASES, DEFAULT_SINGLE_VALUED


class Vocabulary:
    """Owns aliases and relation kinds. Reads are cached; the cache reloads itself whenever the log
    reports a change (``Storage.vocab_generation``), so an import or a rollback never leaves it stale."""

    def __init__(self, log: Storage):
        self._log = log
        self._seen = -1
        self._aliases: dict[str, str] = {}
        self._single: frozenset[str] = frozenset()

    def _fresh(self) -> None:
        if self._seen != self._log.vocab_generation:
            self._seen = self._log.vocab_generation
            self._aliases = self._log.aliases()
            self._single = frozenset(r for r, s in self._log.relations().items() if s)

    def seed_defaults(self) -> None:
        """A new KB's vocabulary (kb.schema); the caller holds the transaction."""
        for r in DEFAULT_SINGLE_VALUED:
            self._log.set_relation(r, True)
        for a, c in DEFAULT_ALIASES.items():
            self._log.set_alias(a, c)

    # ----------------------------------------------------------------- reading

    @property
    def aliases(self) -> dict[str, str]:
        """alias -> canonical name (both normalised)."""
        self._fresh()
        return self._aliases

    def resolve(self, name: str) -> str:
        """Normalised, alias-resolved entity name."""
        self._fresh()
        n = normalize_name(name)
        return self._aliases.get(n, n)

    def aliases_of(self, canonical: str) -> tuple[str, ...]:
        self._fresh()
        return tuple(sorted(a for a, c in self._aliases.items() if c == canonical))

    def single_valued(self, relation: str) -> bool:
        """True when a new value of ``relation`` (any spelling: 'Lives In') supersedes the old one."""
        return self.is_single(normalize_relation(relation))

    def is_single(self, relation: str) -> bool:
        """``single_valued`` for a relation name that is normalised already (the write path's fast case)."""
        self._fresh()
        return relation in self._single

    # ----------------------------------------------------------------- writing

    def declare_relation(self, relation: str, single_valued: bool = True) -> None:
        name = normalize_relation(clean_text(relation, "relation"))
        if not name:
            raise InvalidInputError(f"relation {relation!r} has no letters or digits")
        with self._log.transaction():
            self._log.set_relation(name, single_valued)

    def add_alias(self, alias: str, canonical: str) -> None:
        a, c = normalize_name(clean_text(alias, "alias")), normalize_name(clean_text(canonical, "canonical"))
        if a == c:
            raise InvalidInputError(f"alias {alias!r} is the same as its canonical name")
        target = self.aliases.get(c, c)
        with self._log.transaction():
            self._log.set_alias(a, target)
