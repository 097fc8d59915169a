"""Normalised literal values: numbers in words or digits, and dates in the forms people type.

Dates become ISO-8601 prefixes as far as they are known: "3 May 1990" -> "1990-05-03",
"May 1990" -> "1990-05", "1990" -> "1990", "May 3" (no year) -> "05-03". All-numeric dates
("03/05/1990") are read day first, unless the first number cannot be a month-day pair that way
(13/05 is day-first anyway; 05/13/1990 is read month first). Anything else is returned as said.
"""
from __future__ import annotations

import re

_UNITS = {w: i for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"])}
_TENS = {w: 10 * (i + 2) for i, w in enumerate(
    ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"])}
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"])}
_MONTHS.update({m[:3]: i for m, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"
_DATE_FORMS = [
    re.compile(rf"^(?:the\s+)?{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}$"),  # 3 May 1990, 3rd of May 1990
    re.compile(rf"^{_MONTH}\s+(?:the\s+)?{_DAY},?\s+{_YEAR}$"),  # May 3, 1990 / May 3rd 1990
    re.compile(rf"^{_MONTH},?\s+{_YEAR}$"),  # May 1990
    re.compile(rf"^(?:the\s+)?{_DAY}\s+(?:of\s+)?{_MONTH}$"),  # 3 May
    re.compile(rf"^{_MONTH}\s+(?:the\s+)?{_DAY}$"),  # May 3
    re.compile(r"^(?:in\s+)?" + _YEAR + r"$"),  # 1990
]
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_NUMERIC = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")


def parse_number(text: str) -> int | None:
    """An integer from digits or English words ("34", "thirty-four", "thirty four"), else None."""
    s = text.strip().lower().replace(",", "")
    if s.isdigit():
        return int(s)
    words = [w for w in re.split(r"[\s-]+", s) if w and w != "and"]
    if not words:
        return None
    total = 0
    for w in words:
        if w in _UNITS:
            total += _UNITS[w]
        elif w in _TENS:
            total += _TENS[w]
        elif w == "hundred":
            total = max(total, 1) * 100
        else:
            return None
    return total


def _valid(year: int | None, month: int, day: int | None) -> bool:
    if not 1 <= month <= 12:
        return False
    if day is None:
        return True
    limit = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    if month == 2 and year is not None and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        limit = 28
    return 1 <= day <= limit


def _iso(year: int | None, month: int | None, day: int | None) -> str | None:
    if month is None:
        return f"{year:04d}" if year is not None else None
    if not _valid(year, month, day):
        return None
    if year is None:
        return f"{month:02d}-{day:02d}" if day is not None else None
    return f"{year:04d}-{month:02d}" + (f"-{day:02d}" if day is not None else "")


def normalize_date(text: str) -> str:
    """ISO form of a date as far as it is given (see the module docstring); else ``text`` stripped."""
    s = " ".join(text.strip().rstrip(".").lower().split())
    m = _ISO.match(s)
    if m:
        return _iso(int(m[1]), int(m[2]), int(m[3])) or text.strip()
    m = _NUMERIC.match(s)
    if m:
        a, b, year = int(m[1]), int(m[2]), int(m[3])
        day, month = (b, a) if a <= 12 < b else (a, b)  # day first unless that is impossible
        return _iso(year, month, day) or text.strip()
    for form in _DATE_FORMS:
        m = form.match(s)
        if m:
            groups = m.groupdict()
            year = int(groups["year"]) if groups.get("year") else None
            month = _MONTHS[groups["month"]] if groups.get("month") else None
            day = int(groups["day"]) if groups.get("day") else None
            return _iso(year, month, day) or text.strip()
    return text.strip()


def looks_like_date(text: str) -> bool:
    """True when ``normalize_date`` recognises ``text`` (a year alone counts)."""
    value = normalize_date(text)
    return bool(re.fullmatch(r"\d{4}(?:-\d{2}){0,2}|\d{2}-\d{2}", value))
