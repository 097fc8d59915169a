"""`kgrow learn`: fine-tune a LoRA adapter on a user's facts (opt-in), list and remove their adapters.

``kgrow learn`` trains, measures closed-book accuracy and the locality probes before and after,
and stores the adapter as the user's next version only if it is accepted (exit 1 with the numbers
when it is rejected; nothing is written then). ``--list`` and ``--remove vN`` manage the stored
versions. The knowledge base is only read (no writer lock), so a chat may run meanwhile; adapters
live in ``KB_DIR/adapters/<user>/v<N>/``. ``kgrow chat --adapter vN|latest|PATH`` uses one.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from agent.cli.errors import EXIT_FAILURE, EXIT_OK, UsageError
from agent.cli.kb_args import int_range
from agent.cli.kb_open import isatty, kb_path
from agent.cli.output import Output


def _number(ok: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    """An argparse type: a float for which ``ok`` holds, else an error naming the value and ``wanted``."""

    def parse(value: str) -> float:
        try:
            f = float(value)
        except ValueError:
            f = math.nan  # fails every check below
        if not ok(f):
            raise argparse.ArgumentTypeError(f"{value!r} is invalid; give {wanted}")
        return f

    return parse


_fraction = _number(lambda f: 0.0 <= f <= 1.0, "a fraction from 0 to 1 (e.g. 0.2)")
_positive_float = _number(lambda f: f > 0.0, "a positive number (e.g. 0.002)")
_non_negative = _number(lambda f: f >= 0.0, "a number >= 0 (e.g. 1)")


def _modules(value: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in value.split(",") if m.strip())


#: option dest -> LearnConfig field, for the training options given on the command line
_CONFIG_OPTIONS = {"epochs": "epochs", "rank": "rank", "alpha": "alpha", "dropout": "dropout", "lr": "learning_rate",
                   "batch_size": "batch_size", "seed": "seed", "min_facts": "min_facts",
                   "max_changed": "max_changed_fraction", "phrasings": "phrasings", "targets": "target_modules",
                   "replay": "replay", "locality_weight": "locality_weight"}


def register(groups: argparse._SubParsersAction) -> None:
    p = groups.add_parser(
        "learn", help="fine-tune a LoRA adapter on a user's facts (opt-in); --list, --remove vN",
        description="Turn the user's facts into question/answer pairs and fine-tune a LoRA adapter on the "
                    "LLM. The adapter is kept only if closed-book accuracy on the facts rises and at most "
                    "--max-changed of a fixed set of unrelated probe prompts change their answers. The base "
                    "model is never modified. Use it with `kgrow chat --adapter latest`.",
        epilog="Exit codes: 0 stored (or listed/removed), 1 adapter rejected (nothing stored), 2 invalid input "
               "(too few facts, bad option), 3 unknown KB, user or version.")
    p.add_argument("--kb", metavar="DIR", default=None, help="knowledge base directory (default: $KGROW_HOME/kb)")
    p.add_argument("--user", "-u", default="me", help="whose facts and adapters (default: me)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of tables")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="list the user's adapters")
    what.add_argument("--remove", metavar="VERSION", help="delete one adapter version (vN or latest)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, help="causal LM name or path (default: packaged SmolLM2-135M-Instruct)")
    m.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    t = p.add_argument_group("training (defaults: agent.lora.learn.LearnConfig)")
    t.add_argument("--epochs", type=int_range(1, 100, "epochs"), help="passes over the pairs")
    t.add_argument("--rank", type=int_range(1, 256, "rank"), help="LoRA rank")
    t.add_argument("--alpha", type=_positive_float, help="LoRA alpha (scaling = alpha / rank)")
    t.add_argument("--dropout", type=_fraction, help="LoRA dropout")
    t.add_argument("--lr", type=_positive_float, help="learning rate")
    t.add_argument("--batch-size", type=int_range(1, 256, "batch size"), help="pairs per step")
    t.add_argument("--seed", type=int_range(0, 2**32 - 1, "seed"), help="seed (same facts + seed = same adapter)")
    t.add_argument("--phrasings", type=int_range(1, 100, "phrasings"), help="question phrasings per fact")
    t.add_argument("--targets", type=_modules, metavar="M,M", help="LoRA target modules, e.g. q_proj,v_proj")
    t.add_argument("--replay", type=_non_negative, metavar="R",
                   help="replay anchors (unrelated prompts, base-model answers) per fact pair; 0 = none")
    t.add_argument("--locality-weight", type=_non_negative, metavar="W",
                   help="weight of the anchors' KL to the base model against the facts' loss")
    t.add_argument("--min-facts", type=int_range(1, 10_000, "min facts"), help="refuse with fewer facts")
    t.add_argument("--max-changed", type=_fraction, metavar="F",
                   help="reject when more than this fraction of the probes change")
    p.set_defaults(func=cmd_learn)


def cmd_learn(args: argparse.Namespace) -> int:
    out = Output(json_mode=args.json)
    given = {field: getattr(args, dest) for dest, field in _CONFIG_OPTIONS.items() if getattr(args, dest) is not None}
    if args.list or args.remove is not None:
        if given or args.model or args.device != "auto":
            raise UsageError(f"--{'list' if args.list else 'remove'} takes only --kb, --user and --json; "
                             f"drop {', '.join('--' + k.replace('_', '-') for k in given) or '--model/--device'}")
        return _list(args, out) if args.list else _remove(args, out)
    return _train(args, out, given)


def _list(args: argparse.Namespace, out: Output) -> int:
    from agent.lora.adapters import AdapterStore

    adapters = AdapterStore(kb_path(args)).list(args.user)
    out.records(adapters, ("version", "created", "facts", "closed-book", "probes changed", "base model", "path"),
                lambda a: (a.name, a.meta.created[:19], len(a.meta.fact_ids),
                           f"{a.meta.closed_book_before:.0%} -> {a.meta.closed_book_after:.0%}",
                           f"{a.meta.changed_fraction:.0%}", a.meta.base_model, str(a.path)),
                as_json=lambda a: {"name": a.name, "path": str(a.path), **vars(a.meta)})
    if not adapters and not out.json:
        out.note(f"user {args.user!r} has no adapters; train one with `kgrow learn --user {args.user}`")
    return EXIT_OK


def _remove(args: argparse.Namespace, out: Output) -> int:
    from agent.lora.adapters import AdapterStore

    gone = AdapterStore(kb_path(args)).remove(args.user, args.remove)
    out.emit({"removed": gone.name, "user": args.user, "path": str(gone.path)})
    out.line(f"removed adapter {gone.name} of {args.user} ({gone.path})")
    return EXIT_OK


def _train(args: argparse.Namespace, out: Output, given: dict) -> int:
    from agent.lora.adapters import AdapterStore
    from agent.lora.learn import LearnConfig, learn, plan
    from agent.generation.llm import PACKAGED_SMOLLM, CausalLM, LLMConfig
    from kb import KBConfig, KnowledgeBase

    config = LearnConfig(**given)  # BadInputError (exit 2) names a bad value before anything is loaded
    kb_dir = kb_path(args)
    # read-only: no writer lock (a chat may be running), and a missing KB is not created
    with KnowledgeBase.open(kb_dir, read_only=True, config=KBConfig(show_progress=False)) as kb:
        the_plan = plan(kb, args.user, config)  # too few facts: BadInputError, nothing loaded or written
    Output.note(f"learning {len(the_plan.facts)} facts of {args.user} as {len(the_plan.pairs)} question/answer pairs")
    llm = CausalLM(LLMConfig(model=args.model or PACKAGED_SMOLLM, device=args.device))
    report = learn(the_plan, llm, config, AdapterStore(kb_dir), progress=isatty(sys.stderr))
    out.emit(report)
    _show(report, out)
    if not report.accepted:
        Output.note(f"{report.reason}; no adapter was stored")
        return EXIT_FAILURE
    return EXIT_OK


def _show(r, out: Output) -> None:
    out.kv([
        ("user", r.user),
        ("facts / pairs", f"{r.facts} facts, {r.pairs} question/answer pairs"),
        ("training", (f"{r.steps} steps, loss {r.first_loss:.3f} -> {r.final_loss:.3f}, {r.train_seconds:.1f} s "
                      f"(+ {r.eval_seconds:.1f} s measuring)")),
        ("closed-book accuracy", f"{r.closed_book_before:.0%} before -> {r.closed_book_after:.0%} after"),
        ("  untrained phrasing", "n/a (every phrasing is trained)" if r.held_out_before is None
         else f"{r.held_out_before:.0%} before -> {r.held_out_after:.0%} after"),
        ("probes changed", f"{len(r.changed)}/{r.probes} ({r.changed_fraction:.0%}; limit {r.max_changed_fraction:.0%})"),
        ("accepted", f"yes, stored as v{r.adapter_version} in {r.adapter_path}" if r.adapter_version is not None
         else ("yes (not stored)" if r.accepted else "no: " + r.reason.split(":")[0])),
    ], title="kgrow learn")
    out.line()
    out.table(("question", "expected", "before", "after"),
              [(a.question, a.expected, _mark(a.before, a.right_before), _mark(a.after, a.right_after))
               for a in r.answers + r.held_out], title="closed-book answers (no facts in the prompt)")
    if r.changed:
        out.line()
        out.table(("probe", "before", "after"), [(c.prompt, c.before, c.after) for c in r.changed],
                  title="probes whose answer changed")


def _mark(answer: str, right: bool) -> str:
    return ("✓ " if right else "✗ ") + answer
