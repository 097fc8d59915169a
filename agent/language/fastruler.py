"""An AttributeRuler that finds its patterns by table lookup over ``Doc.to_array`` instead of spaCy's Matcher.

Why: in the small English pipeline the attribute ruler (179 tag-map and exception patterns, nearly
all one token with exact TAG/LOWER/DEP values) took about a sixth of the parse time, because the
Matcher evaluates every pattern, and every IN/NOT_IN/REGEX predicate, at every token. A one-token
pattern with exact values is just a key: (its attribute names, their values). This subclass keeps
spaCy's AttributeRuler for everything else (its patterns, attrs, precedence, ``set_annotations``,
serialisation) and overrides only ``match``:

- exact-value keys of a token pattern are looked up in one dict per attribute signature;
- IN, NOT_IN and REGEX predicates are checked only on the tokens the lookup leaves;
- multi-token patterns without operators are tried from each start position the same way;
- any pattern using something else (operators, other predicates) still goes through a Matcher.

The matches are sorted as the original sorts them (by pattern number: later rules win), so the
annotations are identical; tests/test_extract_speed.py checks that on the probe texts.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any

from spacy.attrs import IDS
from spacy.language import Language
from spacy.matcher import Matcher
from spacy.pipeline import AttributeRuler

#: token attributes a pattern may test here (all are hashes or 0/1 in ``Doc.to_array``)
_ATTRS = ("TAG", "LOWER", "ORTH", "NORM", "DEP", "POS", "IS_SPACE")
_COLUMN = {a: i for i, a in enumerate(_ATTRS)}
FACTORY = "kgrow_indexed_attribute_ruler"


@dataclass(frozen=True)
class _Test:
    """One token of a pattern: exact values, then the predicates checked after the lookup."""

    exact: tuple[tuple[int, int], ...]  # (column, value hash)
    within: tuple[tuple[int, frozenset[int], bool], ...]  # (column, value hashes, True for IN / False for NOT_IN)
    regex: tuple[tuple[int, re.Pattern], ...]  # (column, pattern) searched in the attribute's text

    def passes(self, row: list[int], strings) -> bool:
        if any(row[c] != v for c, v in self.exact):
            return False
        if any((row[c] in values) != inside for c, values, inside in self.within):
            return False
        return all(_searched(rx, row[c], strings) for c, rx in self.regex)


_SEARCHED: dict[tuple[re.Pattern, int], bool] = {}  # (pattern, string hash) -> found: words repeat


def _searched(rx: re.Pattern, value: int, strings) -> bool:
    hit = _SEARCHED.get((rx, value))
    if hit is None:  # first sight of this word for this pattern
        if len(_SEARCHED) > 200_000:  # a bound for long-running processes
            _SEARCHED.clear()
        hit = _SEARCHED[(rx, value)] = bool(rx.search(strings[value] if value else ""))
    return hit


def _value(strings, attr: str, value: Any) -> int:
    return int(value) if isinstance(value, bool) else strings.add(str(value))


def _compile(strings, token: dict[str, Any]) -> _Test | None:
    """A token pattern as a _Test, or None when it uses anything this class does not evaluate."""
    exact, within, regex = [], [], []
    for key, value in token.items():
        attr = key.upper()
        if attr not in _COLUMN:
            return None
        col = _COLUMN[attr]
        if not isinstance(value, dict):
            exact.append((col, _value(strings, attr, value)))
        elif len(value) == 1 and set(value) <= {"IN", "NOT_IN"}:
            (op, items), = value.items()
            within.append((col, frozenset(_value(strings, attr, v) for v in items), op == "IN"))
        elif set(value) == {"REGEX"} and attr != "IS_SPACE":
            regex.append((col, re.compile(value["REGEX"])))
        else:
            return None
    return _Test(tuple(exact), tuple(within), tuple(regex))


class IndexedAttributeRuler(AttributeRuler):
    """spaCy's AttributeRuler with ``match`` answered from lookup tables (see the module docstring)."""

    def add(self, patterns, attrs, index: int = 0) -> None:  # noqa: D102 - AttributeRuler.add
        super().add(patterns, attrs, index)
        self._built = False  # the tables are rebuilt on the next match

    def _build(self) -> None:
        strings = self.vocab.strings
        tables: dict[tuple[int, ...], dict[Any, list[tuple[int, tuple[_Test, ...], bool]]]] = {}
        self._scanned: list[tuple[int, tuple[_Test, ...]]] = []  # no key to look up: tried at every token
        rest = Matcher(self.vocab, validate=False)
        for n, entry in enumerate(self.patterns):
            left = []
            for pattern in entry["patterns"]:
                tests = tuple(_compile(strings, tok) for tok in pattern)
                if not tests or any(t is None for t in tests):
                    left.append(pattern)
                    continue
                first = tests[0]
                simple = len(tests) == 1 and not (first.within or first.regex)  # the key is the whole test
                if first.exact:
                    cols, keys = tuple(c for c, _ in first.exact), [tuple(v for _, v in first.exact)]
                else:
                    inside = next(((c, vs) for c, vs, yes in first.within if yes), None)
                    if inside is None:
                        self._scanned.append((n, tests))
                        continue
                    cols, keys = (inside[0],), [(v,) for v in inside[1]]
                for key in keys:
                    tables.setdefault(cols, {}).setdefault(key if len(cols) > 1 else key[0], []).append(
                        (n, tests, simple))
            if left:
                rest.add(str(n), left)
        self._tables = [(operator.itemgetter(*cols), table) for cols, table in tables.items()]
        self._rest = rest if len(rest) else None
        self._ids = [IDS[a] for a in _ATTRS]
        self._built = True

    def match(self, doc):
        if not getattr(self, "_built", False):
            self._build()
        strings = self.vocab.strings
        rows = doc.to_array(self._ids).tolist() if len(doc) else []
        found: list[tuple[int, int, int]] = []  # (pattern number, start, end)
        for key_of, table in self._tables:
            for i, hits in enumerate(map(table.get, map(key_of, rows))):
                if hits:
                    for n, tests, simple in hits:
                        if simple or _fits(tests, rows, i, strings):
                            found.append((n, i, i + len(tests)))
        for n, tests in self._scanned:
            first = tests[0]
            if not first.within and len(first.regex) == 1:  # one regex: look it up per distinct word
                (c, rx), = first.regex
                starts = [i for i, row in enumerate(rows) if _searched(rx, row[c], strings)]
            else:
                starts = [i for i, row in enumerate(rows) if first.passes(row, strings)]
            found.extend((n, i, i + len(tests)) for i in starts if _fits(tests, rows, i, strings))
        matches = [(n, strings[str(n)], s, e) for n, s, e in found]
        if self._rest is not None:
            matches.extend((int(strings[m_id]), m_id, s, e)
                           for m_id, s, e in self._rest(doc, allow_missing=True, as_spans=False))
        matches.sort()
        return matches


def _fits(tests: tuple[_Test, ...], rows: list[list[int]], start: int, strings) -> bool:
    """Whether the pattern ``tests`` matches the tokens from ``start`` on."""
    if start + len(tests) > len(rows):
        return False
    return all(t.passes(rows[start + k], strings) for k, t in enumerate(tests))


@Language.factory(FACTORY)
def _make(nlp: Language, name: str) -> IndexedAttributeRuler:
    return IndexedAttributeRuler(nlp.vocab, name)


def install(nlp: Language, name: str = "attribute_ruler") -> bool:
    """Swap ``nlp``'s attribute ruler ``name`` for the indexed one with the same patterns; False if absent."""
    if name not in nlp.pipe_names or isinstance(nlp.get_pipe(name), IndexedAttributeRuler):
        return False
    patterns = nlp.get_pipe(name).patterns
    nlp.replace_pipe(name, FACTORY)
    nlp.get_pipe(name).add_patterns(patterns)
    return True
