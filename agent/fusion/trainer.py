"""Training the knowledge-fusion adapter on synthetic KB QA, with the LLM frozen: checkpoints,
resume, a loss curve PNG, and a fixed seed so one command reproduces the shipped adapter."""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from agent.errors import BadInputError, ModelLoadError
from agent.fusion.adapter import FusionConfig, build_adapter, decoder_layers, value_token_ids
from agent.fusion.files import save_adapter
from agent.fusion.knowledge import KnowledgeEncoder, qa_messages
from agent.generation.llm import PACKAGED_SMOLLM, CausalLM, LLMConfig
from agent.fusion.synth import Example, Split, World
from agent.validation import check, within
from kb.files import write_atomic


@dataclass(frozen=True)
class TrainConfig:
    """One training run of the fusion adapter."""

    # where checkpoints, the loss curve and the final adapter go
    out_dir: str
    # the frozen base model (packaged default, hub name or local path)
    model: str = PACKAGED_SMOLLM
    device: str = "auto"
    # everything random (world, examples, init, order) derives from it: same seed, same adapter
    seed: int = 0
    # synthetic training questions; each epoch sees all of them
    examples: int = within(3000, 1, 10000000)
    epochs: int = within(4, 1, 10000)
    batch_size: int = within(32, 1, 4096)
    # AdamW; the adapter is small and starts at a zero gate, so a high rate is safe
    lr: float = within(3e-3, 1e-09, 0.999)
    warmup_steps: int = 40
    # distractor facts per question, drawn uniformly in this range
    min_distractors: int = within(1, 0, 2000)
    max_distractors: int = within(24, 0, 2000)
    # share of questions whose fact is absent: the model must learn to refuse
    unanswerable: float = within(0.2, 0.0, 0.999)
    # the adapter's shape (see FusionConfig)
    layers: tuple[int, ...] = (18, 24)
    heads: int = 4
    head_dim: int = 64
    value_hidden: int = 768
    query_embedding: bool = True
    copy_tokens: int = 4
    key_prior: bool = True
    # save a resumable checkpoint every this many steps
    checkpoint_every: int = within(100, 1, 10000000)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        check(self)  # every within() field in its range
        if self.min_distractors > self.max_distractors:
            raise BadInputError(f"TrainConfig distractors {self.min_distractors}..{self.max_distractors} are invalid; "
                                "give min_distractors <= max_distractors")


@dataclass
class Batch:
    """Padded tensors for one step."""

    hidden: object  # (B, T, H) hidden states entering the first fused layer
    keys: object  # (B, N, E)
    values: object  # (B, N, E)
    valid: object  # (B, N) bool
    query: object  # (B, E)
    target_pos: object  # (M,) flat indices b*T+t of positions that predict a target token
    targets: object  # (M,) target token ids
    value_ids: object  # (B, N, J) first token ids of each value (-1 = none)


class _Stop(Exception):
    pass


class Trainer:
    """Builds the dataset once (question embeddings, knowledge vectors, hidden states at the first
    fused layer, which do not depend on the adapter), then trains the adapter on the layers above."""

    def __init__(self, config: TrainConfig, embedder=None, llm: CausalLM | None = None,
                 say: Callable[[str], None] = print):
        import torch

        self.config = c = config
        self.say = say
        self.torch = torch
        torch.manual_seed(c.seed)
        self.llm = llm or CausalLM(LLMConfig(model=c.model, device=c.device, bf16=False))
        self.model = self.llm.model
        for p in self.model.parameters():
            p.requires_grad_(False)
        inner = getattr(self.model, "model", None)
        if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(inner, "norm"):
            raise ModelLoadError(f"fusion training supports Llama-style models (model.model.layers with rotary "
                                 f"embeddings: Llama, Qwen2, Mistral, SmolLM); {type(self.model).__name__} is not one")
        self.layers = decoder_layers(self.model)
        if max(c.layers) >= len(self.layers):
            raise BadInputError(f"layers {list(c.layers)} out of range: the model has {len(self.layers)} layers")
        if embedder is None:
            from kb.embeddings import SentenceTransformerEmbedder

            embedder = SentenceTransformerEmbedder()
        self.embedder = embedder
        self.encoder = KnowledgeEncoder(embedder)
        self.fusion_config = FusionConfig(
            base_model=self.llm.id, hidden_size=self.llm.hidden_size, embedder=embedder.id, embed_dim=embedder.dim,
            layers=c.layers, heads=c.heads, head_dim=c.head_dim, value_hidden=c.value_hidden,
            query_embedding=c.query_embedding, copy_tokens=c.copy_tokens, key_prior=c.key_prior)
        self.adapter = build_adapter(self.fusion_config).to(self.llm.device)
        self.first = min(c.layers)
        self.out = Path(c.out_dir)
        tok = self.llm.tokenizer
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else tok.eos_token_id
        sys_ids = tok.apply_chat_template([{"role": "system", "content": qa_messages("x")[0].content}],
                                          tokenize=True, add_generation_prompt=False)
        self.start = len(sys_ids["input_ids"] if hasattr(sys_ids, "keys") else sys_ids)

    # ------------------------------------------------------------------ data

    def encode(self, examples: list[Example]) -> list[dict]:
        """Token ids, targets and knowledge vectors for every example."""
        tok = self.llm.tokenizer
        keys = self.encoder.vectors([f.key_text for e in examples for f in e.facts])
        values = self.encoder.vectors([f.value for e in examples for f in e.facts])
        queries = self.encoder.vectors([e.question for e in examples])
        rows, at = [], 0
        for i, e in enumerate(examples):
            n = len(e.facts)
            prompt = self.llm.chat_ids(qa_messages(e.question))
            answer = tok(e.answer, add_special_tokens=False)["input_ids"] + [self.end_id]
            value_ids = value_token_ids([tok(f.value, add_special_tokens=False)["input_ids"] for f in e.facts],
                                        max(1, self.fusion_config.copy_tokens))
            rows.append({"ids": prompt + answer, "prompt_len": len(prompt), "keys": keys[at:at + n],
                         "values": values[at:at + n], "query": queries[i], "value_ids": value_ids})
            at += n
        return rows

    def hidden_states(self, rows: list[dict], batch: int = 64) -> None:
        """Adds ``hidden`` (T, H) bf16 to every row: the input of the first fused layer."""
        torch = self.torch
        grabbed = {}

        def grab(module, args, kwargs):
            grabbed["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        handle = self.layers[self.first].register_forward_pre_hook(grab, with_kwargs=True)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["ids"]))
        try:
            from tqdm import tqdm

            for s in tqdm(range(0, len(order), batch), desc="hidden states", unit="batch", leave=False):
                idx = order[s:s + batch]
                t = max(len(rows[i]["ids"]) for i in idx)
                ids = torch.full((len(idx), t), 0, dtype=torch.long)
                for j, i in enumerate(idx):
                    ids[j, : len(rows[i]["ids"])] = torch.tensor(rows[i]["ids"])
                with torch.no_grad():
                    try:
                        self.model(input_ids=ids.to(self.llm.device), use_cache=False)
                    except _Stop:
                        pass
                h = grabbed["h"].to("cpu", torch.bfloat16)
                for j, i in enumerate(idx):
                    rows[i]["hidden"] = h[j, : len(rows[i]["ids"])].clone()
        finally:
            handle.remove()

    def batch(self, rows: list[dict]) -> Batch:
        torch = self.torch
        dev = self.llm.device
        b = len(rows)
        t = max(len(r["ids"]) for r in rows)
        n = max(1, max(len(r["keys"]) for r in rows))
        e = self.fusion_config.embed_dim
        hidden = torch.zeros(b, t, self.fusion_config.hidden_size)
        keys, values = np.zeros((b, n, e), np.float32), np.zeros((b, n, e), np.float32)
        valid = torch.zeros(b, n, dtype=torch.bool)
        value_ids = torch.full((b, n, max(1, self.fusion_config.copy_tokens)), -1, dtype=torch.long)
        pos, tgt = [], []
        for j, r in enumerate(rows):
            L = len(r["ids"])
            hidden[j, :L] = r["hidden"].float()
            k = len(r["keys"])
            keys[j, :k], values[j, :k] = r["keys"], r["values"]
            valid[j, :k] = True
            value_ids[j, :k] = torch.as_tensor(r["value_ids"])
            for p in range(r["prompt_len"] - 1, L - 1):
                pos.append(j * t + p)
                tgt.append(r["ids"][p + 1])
        query = torch.as_tensor(np.stack([r["query"] for r in rows]))
        return Batch(hidden.to(dev), torch.as_tensor(keys).to(dev), torch.as_tensor(values).to(dev), valid.to(dev),
                     query.to(dev), torch.tensor(pos, device=dev), torch.tensor(tgt, device=dev), value_ids.to(dev))

    # ------------------------------------------------------------------ model

    def loss(self, bt: Batch):
        """Cross-entropy of the answer tokens with knowledge fused in (the layers above the first fused one)."""
        torch = self.torch
        h = bt.hidden
        b, t, _ = h.shape
        positions = torch.arange(t, device=h.device)
        inner = self.model.model
        pe = inner.rotary_emb(h, positions[None])
        mask = torch.full((t, t), float("-inf"), device=h.device).triu(1)[None, None]  # (1, 1, T, T) causal
        feats = self.adapter.value_mlp(bt.values)
        tok = (self.adapter.token_features(bt.value_ids, self.model.get_input_embeddings())
               if self.fusion_config.copy_tokens else None)
        for i in range(self.first, len(self.layers)):
            if i in self.fusion_config.layers:
                h, _ = self.adapter.apply(i, h, bt.keys, feats, bt.query, bt.valid, positions, self.start, tok)
            out = self.layers[i](h, attention_mask=mask, position_embeddings=pe, position_ids=positions[None])
            h = out[0] if isinstance(out, tuple) else out
        h = inner.norm(h).reshape(b * t, -1)[bt.target_pos]  # (M, H)
        logits = self.model.lm_head(h).float()
        return torch.nn.functional.cross_entropy(logits, bt.targets)

    # ------------------------------------------------------------------ training

    def train(self) -> Path:
        """Runs (or resumes) training; returns the directory of the final adapter."""
        torch = self.torch
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        world = World(c.seed)
        examples = world.examples(c.examples, Split.TRAIN, (c.min_distractors, c.max_distractors), c.seed,
                                  c.unanswerable, pool=world.pool(Split.TRAIN, 4000, c.seed))
        self.say(f"training data: {len(examples)} synthetic questions, {c.min_distractors}-{c.max_distractors} "
                 f"distractors each, {c.unanswerable:.0%} unanswerable")
        rows = self.encode(examples)
        self.hidden_states(rows)
        self.say(f"dataset ready in {time.perf_counter() - t0:.0f} s")
        steps_per_epoch = math.ceil(len(rows) / c.batch_size)
        total = steps_per_epoch * c.epochs
        # the tanh gates start at 0 (the base model); at the adapter's rate they open too slowly to let
        # the rest learn in a short run (measured: gates at 0.02-0.04 after 100 steps), so they get 10x
        gates = [p for n, p in self.adapter.named_parameters() if n.endswith(".gate")]
        rest = [p for n, p in self.adapter.named_parameters() if not n.endswith(".gate")]
        opt = torch.optim.AdamW([{"params": rest}, {"params": gates, "lr": c.lr * 10, "weight_decay": 0.0}],
                                lr=c.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / c.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        step, losses = self._resume(opt, sched)
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, desc="fusion train", unit="step")
        self.adapter.train()
        while step < total:
            epoch, within = divmod(step, steps_per_epoch)
            order = np.random.default_rng(c.seed + epoch).permutation(len(rows))
            idx = order[within * c.batch_size:(within + 1) * c.batch_size]
            loss = self.loss(self.batch([rows[i] for i in idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.adapter.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if step % c.checkpoint_every == 0 or step == total:
                self._checkpoint(opt, sched, step, losses)
        bar.close()
        self.adapter.eval()
        final = self.out / "adapter"
        save_adapter(self.adapter, final, {"training": asdict(c) | {"layers": list(c.layers)},
                                           "steps": step, "final_loss": float(np.mean(losses[-20:])),
                                           "seconds": time.perf_counter() - t0})
        self._plot(losses)
        self.say(f"adapter saved to {final} ({step} steps, final loss {np.mean(losses[-20:]):.3f})")
        return final

    def _checkpoint(self, opt, sched, step: int, losses: list[float]) -> None:
        from safetensors.torch import save

        ck = self.out / "checkpoint"
        state = opt.state_dict()
        tensors = {f"adapter.{k}": v.detach().cpu().contiguous() for k, v in self.adapter.state_dict().items()}
        for pid, st in state["state"].items():
            for name, v in st.items():
                tensors[f"opt.{pid}.{name}"] = (v if hasattr(v, "dim") else self.torch.tensor(v)).detach().cpu().contiguous()
        ck.mkdir(exist_ok=True)
        write_atomic(ck / "state.safetensors", lambda fh: fh.write(save(tensors)))
        meta = {"step": step, "sched": sched.state_dict()["last_epoch"], "losses": losses,
                "config": asdict(self.config) | {"layers": list(self.config.layers)}}
        write_atomic(ck / "progress.json", lambda fh: fh.write(json.dumps(meta).encode()))
        self._plot(losses)

    def _resume(self, opt, sched) -> tuple[int, list[float]]:
        from safetensors.torch import load_file

        ck = self.out / "checkpoint"
        if not (ck / "progress.json").exists():
            return 0, []
        meta = json.loads((ck / "progress.json").read_text(encoding="utf-8"))
        saved = meta["config"]
        mine = asdict(self.config) | {"layers": list(self.config.layers)}
        # more epochs may continue a finished or interrupted run (the schedule follows the new total)
        free = ("out_dir", "checkpoint_every", "device", "epochs")
        differ = sorted(k for k in mine if k not in free and saved.get(k) != mine[k])
        if differ:
            raise BadInputError(f"{ck} was written with different settings ({', '.join(differ)}); use another "
                                "--out directory or the same settings to resume")
        tensors = load_file(str(ck / "state.safetensors"))
        self.adapter.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("adapter.")})
        state = opt.state_dict()
        for pid in state["state"].keys() | {int(k.split(".")[1]) for k in tensors if k.startswith("opt.")}:
            state["state"][pid] = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{pid}.")}
        opt.load_state_dict(state)
        for _ in range(meta["sched"]):
            sched.step()
        self.say(f"resuming from step {meta['step']}")
        return int(meta["step"]), list(meta["losses"])

    def _plot(self, losses: list[float]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(losses, alpha=0.35, label="step")
        if len(losses) >= 20:
            ax.plot(np.convolve(losses, np.ones(20) / 20, mode="valid"), label="mean of 20")
        ax.set_xlabel("step")
        ax.set_ylabel("answer cross-entropy")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        write_atomic(self.out / "loss.png", lambda fh: fig.savefig(fh, format="png", dpi=100))
        plt.close(fig)
        write_atomic(self.out / "losses.json", lambda fh: fh.write(json.dumps(losses).encode()))


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
