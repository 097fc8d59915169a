"""The `kgrow` command line: ``kgrow GROUP COMMAND [options]``.

Groups (each module has ``register(subparsers)`` adding its parser and setting ``func``):

- ``kb``   -- inspect and maintain the knowledge base (``agent.cli.kb_cmd``)
- ``learn`` -- fine-tune a LoRA adapter on a user's facts; list and remove adapters (``agent.cli.learn_cmd``)
- ``chat`` -- talk to the agent (``agent.cli.chat_cmd``)
- ``demo`` -- scripted two-session demonstration (``agent.cli.demo_cmd``)
- ``fusion`` -- train and evaluate the knowledge-fusion adapter (``agent.cli.fusion_cmd``)

Errors become one line on stderr and an exit code (see ``agent.cli.errors``).
"""
from __future__ import annotations

import argparse
from typing import Sequence

from agent.cli import chat_cmd, demo_cmd, fusion_cmd, kb_cmd, learn_cmd
from agent.cli.errors import exit_code_of, run_guarded

#: command-group modules, in the order `kgrow --help` lists them
GROUPS = (chat_cmd, demo_cmd, fusion_cmd, kb_cmd, learn_cmd)


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return "unknown"
    try:
        return version("kgrow")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kgrow",
        description="kgrow: a local-first chat agent whose knowledge base grows while it talks.",
        epilog="Run `kgrow GROUP --help` for a group's commands. Exit codes: 0 ok, 1 failure, 2 usage or "
               "invalid input, 3 not found, 4 locked by another writer, 5 incompatible, 6 integrity "
               "problems, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="print a full traceback when something goes wrong")
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for group in GROUPS:
        group.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `kgrow` with ``argv`` (default: sys.argv[1:]); returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # --help, --version, usage errors (2)
        return exit_code_of(e)
    return run_guarded(lambda: args.func(args), debug=bool(getattr(args, "debug", False)))


__all__ = ["GROUPS", "build_parser", "main"]
