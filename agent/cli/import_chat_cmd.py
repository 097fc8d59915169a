"""`kgrow kb import-chat FILE`: a chat history (kgrow JSONL, ChatGPT export, transcript) into a user's memory.

It writes through the live chat's path (agent.memory.ingest.Ingestor with the agent's own extractor):
every turn an episode, facts from the human turns, provenance to each turn's source id. It is
idempotent and atomic per session: a failure names the session, earlier sessions stay, and a
re-run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import sys

from agent.cli.errors import EXIT_FAILURE, EXIT_OK, UsageError
from agent.cli.output import Output


def add_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("file", metavar="FILE", help="the chat history")
    c.add_argument("--user", "-u", metavar="U", required=True, help="whose memory it goes into")
    c.add_argument("--me", metavar="NAME",
                   help="the speaker who is U in the file (default for ChatGPT exports: user)")
    c.add_argument("--assistant", metavar="NAME", default="assistant",
                   help="the speaker who is the agent (default: assistant)")
    c.add_argument("--format", "-f", choices=("jsonl", "chatgpt", "transcript"),
                   help="default: .jsonl is JSONL, a JSON list is a ChatGPT export, else a transcript")
    c.add_argument("--date", metavar="TIME", help="time of a transcript's turns (ISO-8601, unix seconds)")


def cmd_import_chat(args: argparse.Namespace, out: Output) -> int:
    from agent.memory.chat_import import ChatFormat, read_chat
    from agent.cli.kb_open import open_kb
    from agent.extraction.extract import PatternExtractor
    from agent.memory.ingest import Ingestor
    from agent.language.nlp import load_nlp
    from pathlib import Path

    fmt = ChatFormat.infer(Path(args.file)) if args.format is None and Path(args.file).is_file() else args.format
    turns = read_chat(args.file, fmt, date=args.date)  # malformed input fails here, before any write
    if not turns:
        raise UsageError(f"{args.file} holds no turns")
    me = args.me or ("user" if ChatFormat.parse(fmt or "transcript") is ChatFormat.CHATGPT else None)
    if me is None:
        speakers = ", ".join(dict.fromkeys(repr(t.speaker) for t in turns))
        raise UsageError(f"--me is required: which speaker is {args.user!r}? speakers found: {speakers}")
    nlp = load_nlp()
    with open_kb(args, write=True, create=True, embeds=True) as kb:
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=len(turns), unit="turn", desc="importing", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.update(done - bar.n)

        try:
            report = Ingestor(kb, PatternExtractor(nlp), nlp, kb.ensure_user(args.user)).ingest(
                turns, me=me, assistant=args.assistant, progress=progress, raise_errors=False)
        finally:
            if bar is not None:
                bar.close()
    out.emit({"sessions": report.sessions, "turns": report.turns, "episodes_new": report.episodes_new,
              "facts_learned": report.facts_learned, "facts_superseded": report.facts_superseded,
              "failed_session": report.failed_session, "error": report.error})
    out.line(f"imported {report.turns} turns in {report.sessions} session(s): {report.episodes_new} new "
             f"episodes, {report.facts_learned} facts learned, {report.facts_superseded} superseded "
             f"({report.seconds:.1f} s)")
    if report.failed_session is not None:
        out.line(f"session {report.failed_session!r} failed: {report.error}; the sessions before it are "
                 "stored, and running the import again resumes")
        return EXIT_FAILURE
    return EXIT_OK
