"""`kgrow demo`: a scripted two-session conversation on the packaged models showing learning, recall after
a restart, a contradiction being superseded, and /why provenance.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from agent.cli.chat_cmd import add_agent_args, open_agent, why
from agent.cli.output import short_iso

SESSION_1 = [
    "Hi there!",
    "My name is Sam.",
    "I live in Paris.",
    "I work at Acme.",
    "My sister is Mary.",
    "She lives in Rome.",
    "I like jazz.",
]
SESSION_2 = [
    "Where do I live?",
    "Where does my sister live?",
    "What music do I like?",
    "Actually, I moved to Berlin.",
    "Where do I live?",
]


def register(groups: argparse._SubParsersAction) -> None:
    p = groups.add_parser("demo", help="scripted two-session demonstration on the packaged models",
                          description="Two scripted sessions (with a restart between them) on the packaged models.")
    add_agent_args(p)
    p.set_defaults(func=cmd_demo, user="sam")
    p.add_argument("--keep", action="store_true", help="keep the demo knowledge base (printed at the end)")


def _say(agent, text: str) -> None:
    print(f"{agent.user}> {text}", flush=True)
    print("kgrow> ", end="", flush=True)
    for piece in agent.stream(text):
        print(piece, end="", flush=True)
    print(flush=True)
    r = agent.last_reply
    for f in r.learned_facts:
        print(f"        + learned  {f.text}   [{f.id}]")
    for f in r.superseded_facts:
        print(f"        ~ replaced {f.text}   (valid until {short_iso(f.valid_to)})")


def cmd_demo(args: argparse.Namespace) -> int:
    tmp = None
    if args.kb:
        kb_dir = Path(args.kb).expanduser()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="kgrow-demo-"))
        kb_dir = tmp / "kb"
    try:
        print(f"== session 1: {args.user} tells kgrow about themselves (knowledge base: {kb_dir})")
        t0 = time.perf_counter()
        agent = open_agent(args, kb_dir)
        print(f"   (models loaded in {time.perf_counter() - t0:.1f} s)")
        try:
            for line in SESSION_1:
                _say(agent, line)
        finally:
            agent.close()
        print("\n== the process ends; a new one opens the same knowledge base\n")
        print("== session 2: recall after the restart, then a contradiction")
        agent = open_agent(args, kb_dir)
        try:
            for line in SESSION_2:
                _say(agent, line)
            print("\n/why — where the last answer came from:")
            print(why(agent))
            print("\nhistory of where the user lives (nothing is overwritten):")
            for f in agent.kb.facts(user=agent.user, relation="lives_in", history=True):
                if f.subject == agent.kb.resolve(agent.user):
                    print(f"  {f.status.value:10} {f.text:28} {short_iso(f.valid_from)} -> {short_iso(f.valid_to) or 'now'}")
        finally:
            agent.close()
        if tmp is not None and args.keep:
            print(f"\nthe demo knowledge base is kept in {kb_dir}; inspect it with `kgrow kb --kb {kb_dir} stats`")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0
