"""Evaluation of knowledge fusion on held-out synthetic KB QA: four conditions (bare, facts as text,
fusion only, fusion + text), accuracy vs number of distractor tokens, refusal precision/recall, a
split of never-seen answer values, and latency/memory vs number of knowledge tokens."""
from __future__ import annotations

import random
import resource
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from agent.errors import BadInputError
from agent.validation import check, within
from agent.fusion.adapter import KnowledgeTokens
from agent.answers.grounding import unsupported
from agent.fusion.knowledge import KnowledgeEncoder, qa_messages
from agent.generation.llm import CausalLM
from agent.language.nlp import load_nlp
from agent.fusion.synth import Example, Split, SynthFact, World, is_correct, is_refusal

CONDITIONS = ("bare", "text", "fusion", "fusion+text")


@dataclass(frozen=True)
class EvalConfig:
    """What ``kgrow fusion eval`` measures."""

    # questions per measured cell (20% of them unanswerable)
    questions: int = within(150, 5, 1_000_000)
    # the world seed must match training's so that held-out names are really held out
    world_seed: int = 0
    # eval examples are drawn with this seed (any value other than training's)
    seed: int = 1234
    # distractor counts for the scaling curve (fusion only; text too where it fits the context)
    distractors: tuple[int, ...] = (1, 10, 100, 1000)
    # text conditions are measured up to this many distractors (long prompts are slow on a CPU)
    text_max_distractors: int = within(10, 0, 1_000_000)
    # knowledge-token counts for the latency / memory curve
    scaling_tokens: tuple[int, ...] = (1, 10, 100, 1000, 10000)
    max_new_tokens: int = within(12, 1, 4096)

    def __post_init__(self) -> None:
        check(self)
        if any(d < 0 for d in self.distractors) or any(n < 1 for n in self.scaling_tokens):
            raise BadInputError("distractor counts must be >= 0 and token counts >= 1")


@dataclass
class CellResult:
    """Accuracy of one condition on one set of questions."""

    condition: str
    split: str
    distractors: int
    questions: int
    accuracy: float  # all questions: the value for answerable ones, a refusal for the others
    answerable_accuracy: float
    refusal_precision: float  # of the refusals given, the share on unanswerable questions
    refusal_recall: float  # of the unanswerable questions, the share refused
    seconds_per_answer: float
    samples: list[dict] = field(default_factory=list)  # a few (question, expected, answer) for the report
    # accuracy that also needs no entity, number or date beyond the question's facts (agent/answers/grounding.py)
    grounded_accuracy: float = 0.0


@dataclass
class ScalingPoint:
    knowledge_tokens: int
    seconds_per_answer: float
    ms_per_token: float
    peak_rss_mb: float
    peak_gpu_mb: float | None


@dataclass
class FusionReport:
    adapter: str
    model: str
    device: str
    cells: list[CellResult]
    scaling: list[ScalingPoint]
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)

    def cell(self, condition: str, split: str, distractors: int) -> CellResult | None:
        return next((c for c in self.cells if (c.condition, c.split, c.distractors) == (condition, split, distractors)),
                    None)


class FusionEvaluator:
    """Runs the measurements on one loaded model + adapter."""

    def __init__(self, llm: CausalLM, embedder, config: EvalConfig | None = None, say=print):
        if llm.fusion is None:
            raise BadInputError("attach a fusion adapter to the model first (CausalLM.attach_fusion)")
        self.llm, self.config = llm, config or EvalConfig()
        self.encoder = KnowledgeEncoder(embedder)
        self.world = World(self.config.world_seed)
        self.say = say
        tok = llm.tokenizer
        sys_ids = tok.apply_chat_template([{"role": "system", "content": qa_messages("x")[0].content}],
                                          tokenize=True, add_generation_prompt=False)
        self.start = len(sys_ids["input_ids"] if hasattr(sys_ids, "keys") else sys_ids)
        self._pool: dict[Split, list[SynthFact]] = {}
        self.nlp = load_nlp()

    # ------------------------------------------------------------------ pieces

    def pool(self, split: Split) -> list[SynthFact]:
        """A fixed pool of distractor facts for large distractor counts (embedded once)."""
        if split not in self._pool:
            self._pool[split] = self.world.pool(split, 12000)
        return self._pool[split]

    def examples(self, split: Split, distractors: int) -> list[Example]:
        """Questions with ``distractors`` other facts: the close ones (same person, same relation)
        generated, the rest drawn from the pool."""
        c = self.config
        return self.world.examples(c.questions, split, distractors, seed=c.seed * 1000 + distractors,
                                   pool=self.pool(split))

    def tokens(self, e: Example) -> KnowledgeTokens:
        return self.encoder.tokens([(f.subject, f.relation, f.value) for f in e.facts], e.question,
                                   start=self.start)

    def answer(self, e: Example, condition: str) -> str:
        texts = [f.text for f in e.facts] if condition in ("text", "fusion+text") else ()
        ids = self.llm.chat_ids(qa_messages(e.question, texts))
        tokens = self.tokens(e) if condition in ("fusion", "fusion+text") else None
        return "".join(self.llm.stream_ids(ids, self.config.max_new_tokens, reuse=False, knowledge=tokens)).strip()

    def cell(self, condition: str, split: Split, distractors: int) -> CellResult:
        examples = self.examples(split, distractors)
        if condition in ("fusion", "fusion+text"):  # embed all facts in one batch, not per question
            self.encoder.vectors([f.key_text for e in examples for f in e.facts])
            self.encoder.vectors([f.value for e in examples for f in e.facts])
        t0 = time.perf_counter()
        right = answerable_right = refused = refused_right = grounded = 0
        samples = []
        for e in examples:
            a = self.answer(e, condition)
            ok = is_correct(a, e)
            right += ok
            grounded += ok and not unsupported(a, [f.text for f in e.facts] + [e.question], self.nlp)
            answerable_right += ok and e.answerable
            if is_refusal(a):
                refused += 1
                refused_right += not e.answerable
            if len(samples) < 6:
                samples.append({"question": e.question, "expected": e.answer, "answer": a, "correct": ok})
        n = len(examples)
        answerable = sum(e.answerable for e in examples)
        unanswerable = n - answerable
        return CellResult(condition, split.value, distractors, n, right / n,
                          answerable_right / answerable if answerable else 0.0,
                          refused_right / refused if refused else 0.0,
                          refused_right / unanswerable if unanswerable else 0.0,
                          (time.perf_counter() - t0) / n, samples, grounded / n)

    def scaling(self) -> list[ScalingPoint]:
        """Latency and peak memory of one fused answer as the number of knowledge tokens grows."""
        import torch
        pool = self.pool(Split.HELDOUT)
        e = self.world.example(random.Random(7), Split.HELDOUT, 0, True)
        out = []
        for n in sorted(self.config.scaling_tokens):
            facts = list(e.facts) + [f for f in pool if f.subject not in e.question][: max(0, n - 1)]
            tokens = self.encoder.tokens([(f.subject, f.relation, f.value) for f in facts], e.question,
                                         start=self.start)
            ids = self.llm.chat_ids(qa_messages(e.question))
            if torch.cuda.is_available() and self.llm.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _piece in self.llm.stream_ids(ids, 8, reuse=False, knowledge=tokens):
                    pass
                times.append(time.perf_counter() - t0)
            stats = self.llm.last_stats
            gpu = (torch.cuda.max_memory_allocated() / 2**20 if self.llm.device == "cuda" else None)
            out.append(ScalingPoint(n, float(np.median(times)), 1000 * float(np.median(times)) / max(1, stats.new_tokens),
                                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, gpu))
            self.say(f"  {n:>6} knowledge tokens: {out[-1].seconds_per_answer * 1000:.0f} ms per answer")
        return out

    # ------------------------------------------------------------------ all

    def run(self, adapter_name: str) -> FusionReport:
        c = self.config
        t0 = time.perf_counter()
        cells: list[CellResult] = []

        def measure(condition: str, split: Split, d: int) -> None:
            r = self.cell(condition, split, d)
            cells.append(r)
            self.say(f"  {condition:<12} {split.value:<14} {d:>5} distractors: accuracy {r.accuracy:.1%} "
                     f"grounded {r.grounded_accuracy:.1%} "
                     f"(answerable {r.answerable_accuracy:.1%}, refusal P {r.refusal_precision:.2f} "
                     f"R {r.refusal_recall:.2f}) {r.seconds_per_answer * 1000:.0f} ms/answer")

        main = 10 if 10 in c.distractors else c.distractors[0]
        for cond in CONDITIONS:
            measure(cond, Split.HELDOUT, main)
        for d in c.distractors:
            if d != main:
                measure("fusion", Split.HELDOUT, d)
                if d <= c.text_max_distractors:
                    measure("text", Split.HELDOUT, d)
                    measure("fusion+text", Split.HELDOUT, d)
        for cond in CONDITIONS:
            measure(cond, Split.UNSEEN_VALUES, main)
        scaling = self.scaling()
        return FusionReport(adapter_name, self.llm.id, self.llm.device, cells, scaling, time.perf_counter() - t0)


def table(report: FusionReport) -> str:
    """The report as a plain-text table."""
    lines = [f"fusion eval — model {report.model}, adapter {report.adapter}, device {report.device}",
             f"{'condition':<12} {'split':<14} {'distr.':>6} {'n':>4} {'acc':>6} {'ground':>6} {'ans.acc':>7} {'ref.P':>6} "
             f"{'ref.R':>6} {'ms/ans':>7}"]
    for c in report.cells:
        lines.append(f"{c.condition:<12} {c.split:<14} {c.distractors:>6} {c.questions:>4} {c.accuracy:>6.1%} "
                     f"{c.grounded_accuracy:>6.1%} "
                     f"{c.answerable_accuracy:>7.1%} {c.refusal_precision:>6.2f} {c.refusal_recall:>6.2f} "
                     f"{c.seconds_per_answer * 1000:>7.0f}")
    lines.append("")
    lines.append(f"{'knowledge tokens':>16} {'ms/answer':>10} {'ms/token':>9} {'peak RSS MB':>12} {'peak GPU MB':>12}")
    for s in report.scaling:
        gpu = f"{s.peak_gpu_mb:.0f}" if s.peak_gpu_mb is not None else "-"
        lines.append(f"{s.knowledge_tokens:>16} {s.seconds_per_answer * 1000:>10.0f} {s.ms_per_token:>9.1f} "
                     f"{s.peak_rss_mb:>12.0f} {gpu:>12}")
    return "\n".join(lines)
