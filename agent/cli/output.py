"""Rendering of command results: rich tables on a terminal, plain aligned text when piped, JSON lines.

Commands hand records (dataclasses, dicts) to an ``Output``. With ``--json`` every record becomes one
JSON object on its own line (``jsonable``: dataclasses as dicts, enums as their value, unix times as
ISO-8601 strings); otherwise rows are drawn as a table. Notes and warnings always go to stderr so
that stdout stays parseable.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

from kb.facts import iso

#: dataclass/dict fields holding unix seconds; rendered as ISO-8601 in JSON and tables
TIME_FIELDS = frozenset({"time", "stated_at", "valid_from", "valid_to", "as_of"})
#: longest cell drawn in a table (the full value is always in --json output)
MAX_CELL = 300
#: the only columns a rich table wraps; if the others do not fit the terminal, rows are printed plain
FOLD = frozenset({"text", "detail"})
#: a wrapped column is not squeezed narrower than this
FOLD_MIN = 24
_WS = re.compile(r"\s+")
_FRACTION = re.compile(r"\.\d+(?=[+-]\d\d:\d\d$|Z$|$)")


def short_iso(t: float | None) -> str:
    """``kb.facts.iso`` to whole seconds with a ``Z`` suffix, for table cells; empty for None."""
    if t is None:
        return ""
    return _FRACTION.sub("", iso(t) or "").replace("+00:00", "Z")


def jsonable(obj: Any, key: str | None = None) -> Any:
    """Plain JSON value of ``obj``: dataclasses -> dicts, enums -> value, times -> ISO strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): jsonable(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        obj = obj.item()  # numpy scalar
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if key in TIME_FIELDS:
            return iso(float(obj))
    return obj


def cell(value: Any) -> str:
    """One table cell: compact, single-line, truncated to MAX_CELL characters."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (list, tuple, set, frozenset)):
        value = ", ".join(cell(v) for v in value)
    text = _WS.sub(" ", str(value)).strip()
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


class Output:
    """Where and how one command prints; ``style`` is "rich" on a terminal, else "plain"."""

    def __init__(self, json_mode: bool = False, style: str | None = None, stream: TextIO | None = None):
        self.json = json_mode
        self._stream = stream
        if style is None:
            isatty = getattr(self.stream, "isatty", None)
            style = "rich" if isatty is not None and isatty() else "plain"
        if style not in ("rich", "plain"):
            raise ValueError(f"style {style!r} must be 'rich' or 'plain'")
        self.style = style

    @property
    def stream(self) -> TextIO:
        # looked up at call time so that redirections of sys.stdout (tests, pagers) are honoured
        return self._stream if self._stream is not None else sys.stdout

    # ------------------------------------------------------------------ JSON lines

    def emit(self, record: Any) -> None:
        """One JSON line (in JSON mode only)."""
        if self.json:
            self.stream.write(json.dumps(jsonable(record), ensure_ascii=False) + "\n")

    def records(self, items: Iterable[Any], headers: Sequence[str], row: Callable[[Any], Sequence[Any]],
                title: str | None = None, as_json: Callable[[Any], Any] | None = None) -> int:
        """JSON line per item, or a table with ``row(item)`` per item; returns the number of items."""
        items = list(items)
        if self.json:
            for it in items:
                self.emit(as_json(it) if as_json else it)
        else:
            self.table(headers, [row(it) for it in items], title)
        return len(items)

    # ------------------------------------------------------------------ human output

    def line(self, text: str = "") -> None:
        """A human-readable line on stdout (suppressed in JSON mode, whose records say it all)."""
        if not self.json:
            self.stream.write(text + "\n")

    @staticmethod
    def note(text: str) -> None:
        """A remark on stderr, in every mode."""
        sys.stderr.write(f"kgrow: {text}\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
        if self.json:
            return
        cells = [[cell(v) for v in r] for r in rows]
        if self.style == "rich" and self._rich_table(headers, cells, title):
            return
        if title:
            self.stream.write(f"{title}:{'' if cells else ' (none)'}\n")
        if not cells:
            return
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
        for r in [list(headers), *cells]:
            self.stream.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")

    def kv(self, pairs: Sequence[tuple[str, Any]], title: str | None = None) -> None:
        """Key/value lines, e.g. statistics or a report."""
        if self.json:
            return
        if self.style == "rich":
            from rich.table import Table
            from rich.text import Text

            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", no_wrap=True)
            grid.add_column(overflow="fold")
            for k, v in pairs:
                grid.add_row(Text(k), Text(cell(v)))
            console = self._console()
            if title:
                console.print(Text(title, style="bold underline"))
            console.print(grid)
            return
        if title:
            self.stream.write(f"{title}:\n")
        width = max((len(k) for k, _ in pairs), default=0)
        for k, v in pairs:
            self.stream.write(f"{k.ljust(width)}  {cell(v)}".rstrip() + "\n")

    def _console(self):
        from rich.console import Console

        return Console(file=self.stream, highlight=False, soft_wrap=False)

    def _rich_table(self, headers: Sequence[str], cells: list[list[str]], title: str | None) -> bool:
        """Draw with rich; False (nothing drawn) when the table cannot fit the terminal without
        breaking ids and timestamps, so that the caller prints plain rows the terminal may wrap."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        console = self._console()
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
        need = sum(min(w, FOLD_MIN) if h in FOLD else w for h, w in zip(headers, widths)) + 3 * len(headers)
        if cells and need > console.width:
            return False
        if title:  # printed apart from the table so that a narrow table does not wrap it
            console.print(Text(f"{title}:" + ("" if cells else " (none)"), style="bold"))
        if not cells:
            return True
        t = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for h in headers:
            folds = h in FOLD
            t.add_column(h, no_wrap=not folds, overflow="fold", min_width=FOLD_MIN if folds else None)
        for r in cells:
            t.add_row(*(Text(c) for c in r))  # Text: no rich markup interpretation of user data
        console.print(t)
        return True
