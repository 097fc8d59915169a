"""`kgrow chat`: talk to the agent; a rich prompt on a terminal, one reply line per input line on a pipe.

Slash commands: /state /why /facts /forget /user /profile /export /fusion /reset /help /quit. Ctrl-C during a reply
stops generation (the turn's facts are still written, in one transaction); Ctrl-C or EOF at the
prompt closes the agent, saving the session and the index.

Feedback on the last reply: /good, /bad [note] and /fix <correction> (agent/cli/feedback_cmd.py);
a bad rating or a correction regenerates the answer, and /why then shows each round's candidates.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from agent.cli.output import jsonable, short_iso

HELP = """commands:
  /state            the dialogue state of the last turn and the user profile
  /why              the facts and earlier turns recalled for the last reply, and where each came from
  /facts            the current facts of this user
  /forget ID|NAME   forget one fact (by id) or every fact about an entity
  /user NAME        switch to another user (their own session and facts)
  /profile          how I address and answer you; /profile set KEY VALUE, /profile unset KEY
                    (keys: call_me, length short|normal|detailed, language, tone neutral|formal|casual)
  /export FILE      export this user's facts (.jsonl, .graphml, .json, .csv)
  /fusion [on|off]  fuse retrieved facts into the model's hidden states (shown by /why)
  /good             the last reply was right: the facts it used gain confidence
  /bad [NOTE]       it was wrong: its facts lose confidence and I answer again (NOTE: what was wrong)
  /fix CORRECTION   correct it ("/fix I live in Berlin."): stored like a statement, then I answer again
  /reset            start a fresh session (knowledge is kept)
  /adapter [on|off] the LoRA adapter given with --adapter: show it, or detach / attach it again
  /quit             leave (Ctrl-D works too)"""


def register(groups: argparse._SubParsersAction) -> None:
    p = groups.add_parser("chat", help="talk to the agent (it learns from what you say)",
                          description="Talk to the agent. On a pipe, each input line gets one reply line.")
    add_agent_args(p)
    p.set_defaults(func=cmd_chat)


def add_agent_args(p: argparse.ArgumentParser) -> None:
    """Options shared by chat and demo."""
    p.add_argument("--kb", metavar="DIR", default=None, help="knowledge base directory (default: $KGROW_HOME/kb)")
    p.add_argument("--user", default="me", help="who is talking (default: me)")
    p.add_argument("--model", default=None, help="causal LM name or path (default: packaged SmolLM2-135M-Instruct)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    p.add_argument("--fusion", choices=("auto", "on", "off"), default="auto",
                   help="fuse retrieved facts into the model's hidden states (auto: when an adapter matches "
                        "the model; default auto)")
    p.add_argument("--adapter", metavar="vN|latest|PATH", default=None,
                   help="use a LoRA adapter from `kgrow learn` (this user's vN or latest, or a directory)")


def open_agent(args: argparse.Namespace, kb_dir: Path | None = None):
    from agent.generation.llm import PACKAGED_SMOLLM
    from agent.pipeline.loop import Agent

    path = kb_dir if kb_dir is not None else (Path(args.kb).expanduser() if args.kb else None)
    return Agent.open(path, user=args.user, model=args.model or PACKAGED_SMOLLM, device=args.device,
                      adapter=getattr(args, "adapter", None), fusion=getattr(args, "fusion", "auto"))


def cmd_chat(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    agent = open_agent(args)
    ui = RichUI() if interactive else PlainUI()
    try:
        ui.banner(agent)
        while True:
            try:
                line = ui.read(agent.user)
            except EOFError:
                break
            except KeyboardInterrupt:
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not slash(agent, line, ui):
                    break
                continue
            try:
                ui.reply_start()
                for piece in agent.stream(line):
                    ui.piece(piece)
                ui.reply_end()
            except KeyboardInterrupt:
                ui.reply_end()
                ui.info("(interrupted; what you said was still stored)")
    finally:
        agent.close()
    return 0


# ---------------------------------------------------------------------------- slash commands


def slash(agent, line: str, ui) -> bool:
    """Run one slash command; False means quit."""
    from agent.errors import AgentError
    from kb.errors import KBError

    cmd, _, arg = line.partition(" ")
    arg = arg.strip()
    try:
        if cmd in ("/quit", "/exit", "/q"):
            return False
        if cmd == "/help":
            ui.info(HELP)
        elif cmd == "/state":
            last = agent.last_reply.state if agent.last_reply else None
            ui.info(json.dumps({"user": agent.user, "session": agent.state.session_id,
                                "turns": len(agent.state.turns), "profile": agent.state.profile,
                                "focus": agent.state.focus, "recent_entities": agent.state.recent_entities[:10],
                                "last_turn": jsonable(asdict(last)) if last else None}, indent=2, default=str))
        elif cmd == "/why":
            ui.info(why(agent))
        elif cmd == "/facts":
            facts = agent.kb.facts(user=agent.user)
            ui.info("\n".join(f"{f.id}  {f.text}  ({f.user or 'shared'}, conf {f.confidence:.2f})" for f in facts)
                    or "(no facts yet)")
        elif cmd == "/forget":
            if not arg:
                ui.info("usage: /forget FACT_ID | ENTITY")
            elif arg.startswith("f_"):
                owner = agent.kb.fact(arg).user  # NotFoundError (a KBError) for an unknown id
                if owner != agent.user:
                    # like /forget ENTITY, an id only reaches the current user's own facts
                    whose = "a shared fact (use `kgrow kb forget`)" if not owner else "another user's fact"
                    ui.info(f"error: {arg} is {whose}, not one of {agent.user}'s; see /facts")
                else:
                    ui.info(f"forgot {len(agent.kb.forget(arg))} fact(s)")
            else:
                ui.info(f"forgot {len(agent.kb.forget(entity=arg, user=agent.user))} fact(s) about {arg}")
        elif cmd == "/user":
            if not arg:
                ui.info(f"current user: {agent.user}")
            else:
                agent.switch_user(arg)
                ui.info(f"now talking with {agent.user}")
                if agent.adapter is not None:
                    ui.info(adapter_command(agent, ""))
        elif cmd == "/profile":
            from agent.cli import profile_cmd

            ui.info(profile_cmd.slash(agent, arg))
        elif cmd == "/export":
            if not arg:
                ui.info("usage: /export FILE")
            else:
                fmt = {".graphml": "graphml", ".json": "nodelink", ".csv": "csv"}.get(Path(arg).suffix, "jsonl")
                n = agent.kb.export(Path(arg).expanduser(), fmt, user=agent.user)
                ui.info(f"wrote {n} records to {arg} ({fmt})")
        elif cmd in ("/good", "/bad", "/fix"):
            from agent.cli import feedback_cmd

            ui.info(feedback_cmd.slash(agent, cmd, arg))
        elif cmd == "/adapter":
            ui.info(adapter_command(agent, arg))
        elif cmd == "/fusion":
            ui.info(fusion_command(agent, arg))
        elif cmd == "/reset":
            agent.reset_session()
            ui.info("new session started; what I learned is kept")
        else:
            ui.info(f"unknown command {cmd!r}; try /help")
    except (KBError, AgentError) as e:
        ui.info(f"error: {e}")
    return True


def adapter_command(agent, arg: str) -> str:
    """/adapter, /adapter off, /adapter on: the attached LoRA adapter (kgrow chat --adapter)."""
    handle = agent.adapter
    if handle is None:
        return "no adapter; start the chat with --adapter vN|latest|PATH (see `kgrow learn --list`)"
    if arg == "off":
        handle.off()
    elif arg == "on":
        handle.on()
    elif arg:
        return f"unknown /adapter argument {arg!r}; use /adapter, /adapter on or /adapter off"
    a = handle.adapter
    return (f"adapter {a.name} of {a.meta.user} ({a.path}) is {'on' if handle.active else 'off'}; "
            f"it learned {len(a.meta.fact_ids)} facts")


def fusion_command(agent, arg: str) -> str:
    """/fusion, /fusion on, /fusion off: knowledge fusion for the next replies."""
    if arg in ("on", "off"):
        agent.fuser.set_enabled(arg == "on")
    elif arg:
        return f"unknown /fusion argument {arg!r}; use /fusion, /fusion on or /fusion off"
    f = agent.fuser
    if not f.available:
        return f"fusion is off: {f.reason}"
    text = "facts are also cited as text" if f.config.with_text else "facts are not cited as text"
    return f"fusion is {'on' if f.enabled else 'off'} ({text})"


def why(agent) -> str:
    """The facts behind the last reply and their provenance."""
    r = agent.last_reply
    if r is None:
        return "(no reply yet)"
    lines = []
    if r.used_facts:
        lines.append("facts given to the model:")
        for u in r.used_facts:
            f = u.fact
            lines.append(f"  [{u.number}] {f.text}   ({u.why}; confidence {f.confidence:.2f})")
            for s in f.sources:
                said = ""
                if s.episode_id:
                    try:
                        said = f' — "{agent.kb.episode(s.episode_id).text}"'
                    except Exception:  # noqa: BLE001 - provenance display must not fail the chat
                        said = ""
                lines.append(f"      learned from {s.user or '?'} at {short_iso(s.time)}"
                             f" ({s.source_id or 'no source id'}){said}{' — ' + s.note if s.note else ''}")
    else:
        lines.append("no stored facts were used for the last reply.")
    eps = [m for m in r.memories if m.episode is not None]
    if eps:
        lines.append("earlier turns recalled (best first; the first few are cited in the prompt):")
        for m in eps[:6]:
            said = m.text if len(m.text) <= 100 else m.text[:97] + "..."
            flag = ", stale: its facts were superseded" if m.stale else ""
            lines.append(f"  {m.score:.3f}  {m.speaker} at {short_iso(m.time)} ({', '.join(m.source_ids) or 'no source id'}"
                         f"{flag}): \"{said}\"")
    if r.fused:
        lines.append("knowledge tokens the model read (attention share, fused layers):")
        lines += [f"  {f.weight:6.1%}  {f.text}   ({f.label})" for f in r.fused]
    for title, facts in (("learned:", r.learned_facts), ("superseded:", r.superseded_facts)):
        if facts:
            lines.append(title)
            lines += [f"  {f.id}  {f.text}" for f in facts]
    from agent.cli.feedback_cmd import rounds

    cfg = agent.config.feedback
    lines += rounds(r.rounds, cfg.target_weight, cfg.rejected_weight)
    if r.trace is not None:
        lines += stages(r.trace, r.timings)
    else:  # a feedback round's answer: its own timings
        t = r.timings
        lines.append(f"timings (ms): retrieval {t.retrieval*1e3:.1f}, generation {t.generation*1e3:.1f}")
    return "\n".join(lines)


def stages(trace, t) -> list[str]:
    """One line per stage of the turn, from its records (agent/types.py) and timings."""
    u, rc, c, g, st = trace.understood, trace.recalled, trace.composed, trace.generated, trace.stored
    prefs = "; changed preferences" if u.preferences is not None else ""
    out = ["stages:",
           f"  understand  {t.state*1e3 + t.extraction*1e3:7.1f} ms  intent {u.turn.intent.value}, "
           f"{len(u.turn.mentions)} mention(s), {len(u.triples)} fact(s) stated{prefs}"]
    if rc is not None:
        plan = f"; answer policy: {rc.plan.topic.value} question, {rc.plan.action.value}" if rc.plan else ""
        out.append(f"  recall      {t.retrieval*1e3:7.1f} ms  {len(rc.memories)} memories, {len(rc.used)} fact(s) "
                   f"and {len(rc.snippets)} snippet(s) for the prompt{plan}")
    else:
        out.append("  recall          -      not needed (the reply says what was stored)")
    fused = f", {len(c.knowledge)} knowledge token(s) fused" if c.knowledge is not None else ""
    out.append(f"  compose              {c.kind.value}{fused}")
    out.append(f"  generate    {t.generation*1e3:7.1f} ms  {'the model ran' if g.generated else 'no model call'}, "
               f"{len(g.text)} characters")
    out.append(f"  commit      {t.write_back*1e3:7.1f} ms  {'episode stored' if st.episode_id else 'no episode'}, "
               f"{len(st.learned)} learned, {len(st.superseded)} superseded, {len(st.retracted)} retracted, "
               f"{len(st.known)} already known")
    return out


# ---------------------------------------------------------------------------- front ends


class PlainUI:
    """Line protocol for pipes: each reply is printed on one line; slash output as-is."""

    def banner(self, agent) -> None:
        pass

    def read(self, user: str) -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line

    def reply_start(self) -> None:
        self._buf: list[str] = []

    def piece(self, text: str) -> None:
        self._buf.append(text)

    def reply_end(self) -> None:
        print(" ".join("".join(getattr(self, "_buf", [])).split()), flush=True)

    def info(self, text: str) -> None:
        print(text, flush=True)


class RichUI:
    """Terminal front end: coloured prompt, tokens streamed as they are generated."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console()

    def banner(self, agent) -> None:
        s = agent.kb.stats()
        self.console.print(f"[bold]kgrow[/bold] — talking with [cyan]{agent.user}[/cyan]; "
                           f"{s.facts_active} facts in {agent.kb.path}. /help for commands, /quit to leave.")

    def read(self, user: str) -> str:
        return self.console.input(f"[bold cyan]{user}>[/bold cyan] ")

    def reply_start(self) -> None:
        self.console.print("[bold green]kgrow>[/bold green] ", end="")

    def piece(self, text: str) -> None:
        self.console.print(text, end="", highlight=False, markup=False)

    def reply_end(self) -> None:
        self.console.print()

    def info(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)
