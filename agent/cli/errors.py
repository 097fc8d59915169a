"""The one place where exceptions become a message on stderr and a process exit code.

Exit codes: 0 success; 1 unexpected error or aborted by the user; 2 bad usage or invalid input
(argparse and ``InvalidInputError``); 3 not found; 4 knowledge base locked by another writer;
5 incompatible knowledge base or embedder; 6 integrity problems (also ``kgrow kb verify`` finding
problems); 130 interrupted (Ctrl-C); 141 output pipe closed early.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PROBLEMS = 6
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class CLIError(Exception):
    """An error the CLI itself detects (not the knowledge base); carries its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(CLIError):
    """Arguments that parse but do not make sense together; exit 2 like argparse."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


def one_line(message: object) -> str:
    """Collapse a (possibly multi-line) message onto one line."""
    return " ".join(str(message).split()) or "(no message)"


def error(message: object) -> None:
    sys.stderr.write(f"kgrow: error: {one_line(message)}\n")


def exit_code_of(exc: SystemExit) -> int:
    """The integer exit status of a ``SystemExit`` (argparse uses 0 for --help and 2 for usage)."""
    code = exc.code
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return EXIT_FAILURE


def run_guarded(func: Callable[[], int], debug: bool = False) -> int:
    """Run ``func`` and turn whatever escapes it into an exit code, printing one line to stderr."""
    try:
        return int(func() or 0)
    except KeyboardInterrupt:
        sys.stderr.write("\nkgrow: interrupted\n")
        return EXIT_INTERRUPTED
    except SystemExit as e:  # argparse errors raised from inside a command
        return exit_code_of(e)
    except BrokenPipeError:
        # `kgrow kb facts | head`: the reader left; silence the interpreter's flush at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except CLIError as e:
        _traceback(debug)
        error(e)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the last line of defence
        from agent.errors import AgentError
        from kb.errors import KBError

        _traceback(debug)
        if isinstance(e, (KBError, AgentError)):
            error(e)
            return int(getattr(e, "exit_code", EXIT_FAILURE))
        detail = one_line(e)
        hint = "" if debug else " (run with --debug for a traceback)"
        error(f"unexpected {type(e).__name__}: {detail}{hint}")
        return EXIT_FAILURE


def _traceback(debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)
