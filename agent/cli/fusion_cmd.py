"""`kgrow fusion train|eval`: train the knowledge-fusion adapter on synthetic KB QA, and measure it
against text-only retrieval on held-out entities."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.errors import BadInputError


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"layers {text!r} must be comma-separated integers, e.g. 18,24") from None


def _counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 1,10,100") from None


def register(groups: argparse._SubParsersAction) -> None:
    g = groups.add_parser("fusion", help="train and evaluate the knowledge-fusion adapter",
                          description="Knowledge fusion: fact embeddings fused into the LLM's hidden states.")
    sub = g.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train the adapter (LLM frozen) on synthetic KB QA; resumable",
                       description="Train the fusion adapter. Re-running with the same --out resumes from "
                                   "the last checkpoint. Writes adapter/, loss.png, losses.json.")
    t.add_argument("--out", required=True, metavar="DIR", help="output directory (checkpoints, loss curve, adapter)")
    t.add_argument("--model", default=None, help="base causal LM (default: packaged SmolLM2-135M-Instruct)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--examples", type=int, default=None, help="synthetic training questions (default 3000)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--layers", type=_layers, default=None, help="fused decoder layers, e.g. 18,24")
    t.add_argument("--no-query-embedding", action="store_true",
                   help="queries from the hidden state only (ablation; the question embedding is not used)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="measure fusion vs text-only retrieval on held-out entities (table + JSON)")
    e.add_argument("--adapter", default=None, metavar="DIR", help="adapter directory (default: the packaged one)")
    e.add_argument("--model", default=None, help="base causal LM (default: packaged SmolLM2-135M-Instruct)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    e.add_argument("--questions", type=int, default=150, help="questions per measured cell (default 150)")
    e.add_argument("--distractors", type=_counts, default=(1, 10, 100, 1000))
    e.add_argument("--scaling", type=_counts, default=(1, 10, 100, 1000, 10000),
                   help="knowledge-token counts for the latency/memory curve")
    e.add_argument("--json", dest="json_out", metavar="FILE", default=None, help="write the full report here")
    e.set_defaults(func=cmd_eval)


def cmd_train(args: argparse.Namespace) -> int:
    from agent.generation.llm import PACKAGED_SMOLLM
    from agent.fusion.trainer import Trainer, TrainConfig

    given = {"examples": args.examples, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
             "layers": args.layers}
    config = TrainConfig(out_dir=str(Path(args.out).expanduser()), model=args.model or PACKAGED_SMOLLM,
                         device=args.device, seed=args.seed, query_embedding=not args.no_query_embedding,
                         **{k: v for k, v in given.items() if v is not None})
    Trainer(config).train()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from agent.fusion.files import load_adapter, packaged_adapter_dir
    from agent.evals.fusion_eval import EvalConfig, FusionEvaluator, table
    from agent.generation.llm import PACKAGED_SMOLLM, CausalLM, LLMConfig
    from kb.embeddings import SentenceTransformerEmbedder

    directory = Path(args.adapter).expanduser() if args.adapter else packaged_adapter_dir()
    if not directory.exists():
        raise BadInputError(f"adapter directory {str(directory)!r} does not exist")
    llm = CausalLM(LLMConfig(model=args.model or PACKAGED_SMOLLM, device=args.device))
    embedder = SentenceTransformerEmbedder()
    adapter = load_adapter(directory, base_model=llm.id, embedder=embedder.id)
    llm.attach_fusion(adapter)
    config = EvalConfig(questions=args.questions, distractors=args.distractors, scaling_tokens=args.scaling)
    report = FusionEvaluator(llm, embedder, config).run(str(directory))
    print(table(report))
    if args.json_out:
        from kb.files import write_atomic

        write_atomic(Path(args.json_out), lambda fh: fh.write(json.dumps(report.to_json(), indent=2).encode()))
        print(f"report written to {args.json_out}")
    return 0
