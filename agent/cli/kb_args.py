"""Argument parsing of `kgrow kb`: the parsers, value types, embedder names and export formats.

Values are validated here, before the KB is opened, so that a typo never creates a knowledge base
or takes the writer lock; a bad value is an argparse usage error (exit 2) naming what is valid.
"""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Callable

from agent.cli import import_chat_cmd, profile_cmd
from agent.cli.errors import UsageError

KINDS = ("fact", "episode")
#: export formats and the file extensions they are inferred from
FORMATS = {"jsonl": (".jsonl", ".ndjson"), "graphml": (".graphml",), "nodelink": (".json",), "csv": (".csv",)}
EMBEDDER_HELP = ("embedder: 'hash:DIM' (deterministic test embedder, e.g. hash:64), 'minilm' (the packaged "
                 "all-MiniLM-L6-v2), or a sentence-transformers model name or path. Default: the one that "
                 "built the KB (the packaged MiniLM for a new KB)")


# ---------------------------------------------------------------------------- value types


def time_value(value: str) -> float:
    """ISO-8601 (2025-01-31, 2025-01-31T12:00:00Z) or unix seconds -> unix seconds."""
    from kb.errors import InvalidInputError
    from kb.facts import to_timestamp

    try:
        return to_timestamp(float(value), "time")
    except ValueError:
        pass
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    try:
        return to_timestamp(value, "time")
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def confidence_value(value: str) -> float:
    from kb.errors import InvalidInputError
    from kb.facts import clean_confidence

    try:
        return clean_confidence(value)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def int_range(lo: int, hi: int | None, what: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = None
        if n is None or n < lo or (hi is not None and n > hi):
            span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{what} {value!r} is invalid; give an integer {span}")
        return n

    return parse


def kinds_value(value: str) -> list[str]:
    """'fact', 'episode' or 'fact,episode'."""
    out = []
    for part in value.split(","):
        name = part.strip().lower()
        if name not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {part.strip()!r}; valid kinds: {', '.join(KINDS)}")
        out.append(name)
    return out


def infer_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    for fmt, exts in FORMATS.items():
        if suffix in exts:
            return fmt
    known = ", ".join(f"{e} ({f})" for f, exts in FORMATS.items() for e in exts)
    raise UsageError(f"cannot tell the export format from {str(path)!r}; give --format {{{','.join(FORMATS)}}} "
                     f"or use one of the extensions {known}")


# ---------------------------------------------------------------------------- parsers


def _common(p: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted both before and after the command (`kgrow kb --json stats` = `... stats --json`).

    On the command parsers the defaults are SUPPRESSed so they do not overwrite the group's values.
    """
    def d(value):
        return value if top else argparse.SUPPRESS

    p.add_argument("--kb", metavar="DIR", default=d(None),
                   help="knowledge base directory (default: $KGROW_HOME/kb, else the user data dir's kgrow/kb)")
    p.add_argument("--read-only", action="store_true", default=d(False),
                   help="open read-only (read commands always do; safe while a chat is writing)")
    p.add_argument("--embedder", metavar="NAME_OR_PATH", default=d(None), help=EMBEDDER_HELP)
    p.add_argument("--json", action="store_true", default=d(False),
                   help="print JSON lines (one object per row) instead of tables")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print a full traceback when something goes wrong")


def build(groups: argparse._SubParsersAction, commands: dict[str, Callable], dispatch: Callable) -> None:
    grp = groups.add_parser(
        "kb", help="inspect and maintain the knowledge base",
        description="Inspect and maintain kgrow's knowledge base. Read commands open it read-only.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage or invalid input, 3 not found, 4 locked by another "
               "writer, 5 incompatible KB or embedder, 6 integrity problems (verify).")
    _common(grp, top=True)
    sub = grp.add_subparsers(dest="kb_command", metavar="COMMAND", required=True)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        _common(c, top=False)
        c.set_defaults(func=partial(dispatch, commands[name]))
        return c

    def user(c: argparse.ArgumentParser, help: str = "only this user's facts (plus shared ones)") -> None:
        c.add_argument("--user", "-u", metavar="U", help=help)

    cmd("stats", "counts and settings of the knowledge base")

    c = cmd("facts", "list facts (current ones unless --history or --as-of)")
    user(c)
    c.add_argument("--entity", "-e", metavar="E", help="only facts with this entity as subject or object")
    c.add_argument("--relation", "-r", metavar="R", help="only facts with this relation")
    c.add_argument("--history", action="store_true", help="include superseded facts")
    c.add_argument("--as-of", metavar="TIME", type=time_value, help="facts true at TIME (ISO-8601 or unix seconds)")
    c.add_argument("--limit", "-n", metavar="N", type=int_range(1, None, "limit"), help="at most N facts")

    c = cmd("search", "hybrid (vector + keyword + graph) search")
    c.add_argument("query", metavar="QUERY")
    c.add_argument("-k", metavar="N", type=int_range(1, 1000, "k"), default=10, help="number of hits (default 10)")
    user(c, "search as this user (their facts and episodes plus shared facts); default: everyone")
    c.add_argument("--kind", metavar="KIND", type=kinds_value, action="extend",
                   help=f"only these kinds: {', '.join(KINDS)} (repeat or comma-separate; default both)")
    c.add_argument("--as-of", metavar="TIME", type=time_value, help="search what was true at TIME")

    c = cmd("show", "profile of an entity: current and past facts, aliases, neighbours")
    c.add_argument("entity", metavar="ENTITY")
    user(c)
    c.add_argument("--hops", metavar="N", type=int_range(0, 6, "hops"),
                   help="also list the graph neighbourhood within N hops (0-6)")

    c = cmd("history", "every version of a fact and what happened to it")
    c.add_argument("fact_id", metavar="FACT_ID")

    c = cmd("add", "add a fact (subject, relation, object)")
    c.add_argument("subject", metavar="SUBJECT")
    c.add_argument("relation", metavar="RELATION")
    c.add_argument("object", metavar="OBJECT")
    c.add_argument("--text", "-t", metavar="T", help="the statement in words (default: made from the triple)")
    who = c.add_mutually_exclusive_group()
    who.add_argument("--user", "-u", metavar="U", help="owner of a private fact")
    who.add_argument("--shared", action="store_true", help="a fact visible to every user")
    c.add_argument("--source", metavar="ID", help="where it was said, e.g. a turn id")
    c.add_argument("--note", metavar="TEXT", help="note recorded with the source")
    c.add_argument("--confidence", "-c", metavar="C", type=confidence_value, default=1.0,
                   help="confidence in [0, 1] (default 1)")
    c.add_argument("--time", metavar="T", type=time_value, help="when it was stated (default now)")
    c.add_argument("--valid-from", metavar="T", type=time_value, help="when it became true (default --time)")

    c = cmd("forget", "forget one fact, every fact about an entity, or a whole user")
    c.add_argument("fact_id", metavar="FACT_ID", nargs="?")
    c.add_argument("--entity", "-e", metavar="E", help="forget every fact about this entity")
    c.add_argument("--user", "-u", metavar="U", help="with --entity: only this user's; alone: the whole user")
    c.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    c = cmd("export", "write the knowledge base (or one user's part) to a file")
    c.add_argument("file", metavar="FILE", type=Path)
    c.add_argument("--format", "-f", choices=tuple(FORMATS),
                   help="default: from FILE's extension (.jsonl, .graphml, .json = nodelink, .csv)")
    user(c, "only this user's facts and episodes (plus shared facts)")
    c.add_argument("--vectors", action="store_true", help="include embedding vectors (jsonl)")

    c = cmd("import", "add facts and episodes from a JSONL export")
    c.add_argument("file", metavar="FILE", type=Path)

    c = cmd("import-chat", "import a chat history (kgrow JSONL, ChatGPT export, 'Name: text' transcript) "
                           "into a user's memory")
    import_chat_cmd.add_args(c)

    c = cmd("verify", "check the log, the vector index and the manifest against each other (exit 6 on problems)")
    c.add_argument("--repair", action="store_true", help="rebuild the index if problems are found, then re-check")

    c = cmd("profile", "show or edit a user's personalisation profile (how the agent addresses and answers them)")
    profile_cmd.add_args(c)

    c = cmd("rebuild", "rebuild the vector index from the log")
    c.add_argument("--reembed", action="store_true",
                   help="recompute every vector with --embedder (default: the KB's own embedder)")
