"""`kgrow kb COMMAND`: inspect and maintain the knowledge base from the shell.

Read commands (stats, facts, search, show, history, export, verify, profile) open the KB read-only,
so they work while a chat process is writing, and never create one. add, forget, import, rebuild,
verify --repair and profile --set/--unset take the writer lock (exit 4 if another process holds it).
`profile` lives in ``agent.cli.profile_cmd``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from agent.cli import import_chat_cmd, kb_args, profile_cmd
from agent.cli.kb_open import isatty, open_kb
from agent.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_PROBLEMS, UsageError
from agent.cli.output import Output, jsonable, short_iso

FACT_HEADERS = ("id", "user", "subject", "relation", "object", "status", "confidence", "valid", "sources")


def register(groups: argparse._SubParsersAction) -> None:
    """Add the `kb` group and its commands to the top-level parser."""
    kb_args.build(groups, {
        "stats": cmd_stats, "facts": cmd_facts, "search": cmd_search, "show": cmd_show,
        "history": cmd_history, "add": cmd_add, "forget": cmd_forget, "export": cmd_export,
        "import": cmd_import, "import-chat": import_chat_cmd.cmd_import_chat, "verify": cmd_verify, "rebuild": cmd_rebuild, "profile": profile_cmd.cmd_profile,
    }, _dispatch)


def _dispatch(func, args: argparse.Namespace) -> int:
    return func(args, Output(json_mode=args.json))


# ---------------------------------------------------------------------------- rows


def _fact_row(f) -> tuple:
    return (f.id, f.user or "(shared)", f.subject, f.relation, f.object, f.status, f.confidence,
            f"{short_iso(f.valid_from)} .. {short_iso(f.valid_to)}".rstrip(), len(f.sources))


def _past_row(f) -> tuple:
    return (f.id, f.subject, f.relation, f.object, short_iso(f.valid_from), short_iso(f.valid_to), f.superseded_by)


def _pairs(obj, skip: tuple[str, ...] = ()) -> list[tuple[str, object]]:
    return [(f.name, getattr(obj, f.name)) for f in fields(obj) if f.name not in skip]


# ---------------------------------------------------------------------------- read commands


def cmd_stats(args, out: Output) -> int:
    with open_kb(args) as kb:
        stats = kb.stats()
    out.emit(stats)
    out.kv(_pairs(stats))
    return EXIT_OK


def cmd_facts(args, out: Output) -> int:
    with open_kb(args) as kb:
        facts = kb.facts(user=args.user, entity=args.entity, relation=args.relation, history=args.history,
                         as_of=args.as_of, limit=args.limit)
    if not out.records(facts, FACT_HEADERS, _fact_row) and not out.json:
        out.note("no facts match")
    return EXIT_OK


def cmd_search(args, out: Output) -> int:
    with open_kb(args, embeds=True) as kb:
        hits = kb.search(args.query, args.k, user=args.user, kinds=args.kind or ("fact", "episode"),
                         as_of=args.as_of)
    rows = list(enumerate(hits, 1))
    out.records(
        rows, ("rank", "score", "kind", "text", "vector", "keyword", "via", "id"),
        lambda r: (r[0], f"{r[1].score:.4f}", r[1].kind, r[1].text, r[1].vector_score, r[1].keyword_rank,
                   r[1].via_entities, r[1].id),
        as_json=lambda r: {"rank": r[0], "id": r[1].id, "kind": r[1].kind, "score": r[1].score,
                           "text": r[1].text, "vector_score": r[1].vector_score,
                           "keyword_rank": r[1].keyword_rank, "via_entities": r[1].via_entities,
                           "provenance": r[1].provenance, "fact": r[1].fact, "episode": r[1].episode})
    if not hits and not out.json:
        out.note("no hits")
    return EXIT_OK


def cmd_show(args, out: Output) -> int:
    with open_kb(args) as kb:
        prof = kb.entity(args.entity, args.user)
        hood = None
        if args.hops is not None:
            graph = kb.graph(args.user)
            hood = graph.neighbourhood(prof.name, args.hops).graph if prof.name in graph.graph else None
    edges = [] if hood is None else [(u, d["relation"], v, k) for u, v, k, d in hood.edges(keys=True, data=True)]
    nodes = [prof.name] if hood is None else sorted(hood.nodes)
    if out.json:
        rec = {"entity": prof.name, "display": prof.display, "aliases": prof.aliases,
               "neighbours": prof.neighbours, "current": prof.current, "past": prof.past}
        if args.hops is not None:
            rec["neighbourhood"] = {"hops": args.hops, "entities": nodes, "facts": [
                {"subject": u, "relation": r, "object": v, "fact_id": k} for u, r, v, k in edges]}
        out.emit(rec)
        return EXIT_OK
    out.kv([("entity", prof.name), ("display", prof.display), ("aliases", prof.aliases),
            ("neighbours", prof.neighbours)])
    out.line()
    out.table(FACT_HEADERS, [_fact_row(f) for f in prof.current], title="current facts")
    out.line()
    out.table(("id", "subject", "relation", "object", "valid_from", "valid_to", "superseded_by"),
              [_past_row(f) for f in prof.past], title="past facts")
    if args.hops is not None:
        out.line()
        out.table(("subject", "relation", "object", "fact id"), edges,
                  title=f"neighbourhood within {args.hops} hop(s): {len(nodes)} entities ({', '.join(nodes)})")
    return EXIT_OK


def cmd_history(args, out: Output) -> int:
    with open_kb(args) as kb:
        versions, events = kb.history(args.fact_id)
    if out.json:
        for v in versions:
            out.emit({"type": "version", **jsonable(v)})
        for e in events:
            out.emit({"type": "event", **jsonable(e)})
        return EXIT_OK
    out.table((*FACT_HEADERS, "superseded_by"), [(*_fact_row(v), v.superseded_by) for v in versions],
              title="versions")
    out.line()
    out.table(("time", "event", "fact id", "detail"), [(short_iso(e.time), e.event, e.fact_id, e.detail)
                                                       for e in events], title="events")
    return EXIT_OK


def cmd_export(args, out: Output) -> int:
    fmt = args.format or kb_args.infer_format(args.file)
    with open_kb(args) as kb:
        n = kb.export(args.file, fmt, user=args.user, vectors=args.vectors)
    out.emit({"path": str(args.file), "format": fmt, "records": n})
    out.line(f"exported {n} records to {args.file} ({fmt})")
    return EXIT_OK


def cmd_verify(args, out: Output) -> int:
    repaired = False
    with open_kb(args, write=args.repair) as kb:
        report = kb.verify()
        if args.repair and not report.ok:
            kb.rebuild()
            report, repaired = kb.verify(), True
    out.emit({**jsonable(report), "repaired": repaired})
    out.kv(_pairs(report, skip=("problems",)) + [("repaired", repaired)])
    for p in report.problems:
        out.line(f"problem: {p}")
    if not out.json:
        out.line("ok" if report.ok else f"{len(report.problems)} problem(s) found"
                 + ("" if args.repair else "; try `kgrow kb verify --repair`"))
    return EXIT_OK if report.ok else EXIT_PROBLEMS


# ---------------------------------------------------------------------------- write commands


def cmd_add(args, out: Output) -> int:
    if not args.shared and args.user is None:
        raise UsageError("add needs --user U (a private fact) or --shared (visible to every user)")
    with open_kb(args, write=True, create=True, embeds=True) as kb:
        r = kb.add_fact(args.subject, args.relation, args.object, text=args.text, user=args.user,
                        shared=args.shared, source_id=args.source, time=args.time, valid_from=args.valid_from,
                        confidence=args.confidence, note=args.note)
    f = r.fact
    action = "created" if r.created else "merged"
    out.emit({"action": action, "merged_semantically": r.merged_semantically, "fact": f,
              "superseded": [s.id for s in r.superseded]})
    if not r.created:
        how = "near-duplicate" if r.merged_semantically else "same content"
        out.line(f"merged into existing fact {f.id} ({how}); it now has {len(f.sources)} source(s): {f.text}")
    elif f.superseded_by:
        out.line(f"created {f.id} as history (already superseded by {f.superseded_by}): {f.text}")
    else:
        out.line(f"created {f.id}: {f.text}")
    for s in r.superseded:
        out.line(f"superseded {s.id} (valid until {short_iso(s.valid_to)}): {s.text}")
    return EXIT_OK


def cmd_forget(args, out: Output) -> int:
    if args.fact_id is not None and (args.entity is not None or args.user is not None):
        raise UsageError("forget takes a FACT_ID, or --entity E [--user U], or --user U; not a mix")
    if args.fact_id is None and args.entity is None and args.user is None:
        raise UsageError("forget needs a FACT_ID, --entity E [--user U], or --user U")
    with open_kb(args, write=True) as kb:
        if args.fact_id is not None:
            what = f"fact {args.fact_id} ({kb.fact(args.fact_id).text})"  # NotFoundError names the id
        else:
            found = [f for f in kb.facts(user=args.user, entity=args.entity, history=True)
                     if args.user is None or f.user == args.user]
            what = f"{len(found)} fact(s)" + (f" about {args.entity!r}" if args.entity else "")
            what += f" of user {args.user!r}" if args.user else " of every user"
            if args.entity is None:
                what += " and all their episodes and profile"
        # an entity with no facts: forget() names it as unknown or does nothing, so there is nothing to confirm
        nothing = args.entity is not None and not found
        if not args.yes and not nothing:
            if isatty(sys.stdin):
                sys.stderr.write(f"forget {what}? [y/N] ")
                sys.stderr.flush()
                if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                    out.note("nothing forgotten")
                    return EXIT_FAILURE
            elif args.fact_id is None:
                raise UsageError(f"refusing to forget {what} without --yes (stdin is not a terminal to confirm on)")
        ids = kb.forget(args.fact_id, entity=args.entity, user=args.user)
        if args.fact_id is None and args.entity is None:  # a whole user: their preferences go too
            from agent.profile.profile import ProfileStore

            ProfileStore(kb.path).delete(args.user)
    for fid in ids:
        out.emit({"forgotten": fid})
        out.line(fid)
    out.note(f"forgot {len(ids)} fact(s)")
    return EXIT_OK


def cmd_import(args, out: Output) -> int:
    from kb import NotFoundError

    if not Path(args.file).is_file():
        raise NotFoundError(f"no such file: {args.file}")
    with open_kb(args, write=True, create=True, embeds=True) as kb:
        result = kb.import_(args.file)
    out.emit(result)
    out.kv(_pairs(result) if hasattr(result, "__dataclass_fields__") else list(vars(result).items()),
           title=f"imported {args.file}")
    return EXIT_OK


def cmd_rebuild(args, out: Output) -> int:
    # an explicit --embedder without --reembed is checked against the manifest (exit 5 on mismatch)
    with open_kb(args, write=True, embeds=args.reembed or args.embedder is not None, reembed=args.reembed) as kb:
        before = kb.manifest.embedder_id
        n = kb.rebuild(reembed=args.reembed)
        after, dim = kb.manifest.embedder_id, kb.manifest.embedder_dim
    out.emit({"vectors": n, "reembedded": args.reembed, "embedder": after, "embedder_dim": dim,
              "previous_embedder": before})
    out.line(f"rebuilt the vector index from the log: {n} vectors")
    if args.reembed:
        out.line(f"re-embedded every text with {after} (dim {dim})" + (f"; was {before}" if before != after else ""))
    return EXIT_OK
