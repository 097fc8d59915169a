"""GPU benchmark of the generation and fusion code paths on randomly initialised models built from a config.

Run:  python bench/gpu_bench.py                 # SmolLM2-135M shape (+ the packaged fusion adapter) and a
                                                # Qwen2-1.5B shape (+ a fresh adapter of its shape), bf16, CUDA
      python bench/gpu_bench.py --tiny          # tiny shapes on the CPU: a smoke test anyone can run
Prints a table and writes bench/results/gpu_bench.json (--out).

No weights travel (the GPU machine has no network and a small carry limit): each model is built from
its config with random weights, saved with a word-level tokenizer built in memory (no eos, so every
reply runs to its token cap), and loaded through agent.generation.llm.CausalLM, the class the agent uses. Speed
does not depend on the weights' values; the answers are noise. Measured per shape:
- prefill: one forward over T prompt tokens, as CausalLM.stream_ids runs it (logits for every position);
- decode, batch 1, through CausalLM.stream_ids (repetition penalty, text decoding: the agent's path);
- decode, batch 1 and 8, as a bare loop of forward + argmax on the same model and cache type;
- the memory-bandwidth roofline: a batch-1 decode step reads every weight once, so
  tokens/s <= bandwidth / weight bytes (batch b: b times that); ratio = measured / roofline;
- fused answers (8 new tokens, prompt of 48, knowledge read from token 32 on) with 0..10,000 random
  unit knowledge vectors of the embedder's size (384), through CausalLM.attach_fusion + stream_ids:
  latency, the part spent preparing the tokens (value MLP, copy-path token ids), and peak GPU memory;
- on CUDA (or with --diagnose): one decode step's wall, CPU-queue and GPU-kernel time (profiler), and
  ``model.generate`` with a dynamic cache and with a static cache (which transformers compiles).
Imports only torch, transformers (and its tokenizers), safetensors, numpy and agent.llm / agent.fusion,
which import nothing else (no faiss, spaCy or sentence-transformers).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import warnings

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.fusion.adapter import FusionConfig, KnowledgeTokens, build_adapter  # noqa: E402
from agent.fusion.files import load_adapter, packaged_adapter_dir  # noqa: E402
from agent.generation.llm import CausalLM, LLMConfig, cache_arg  # noqa: E402

#: model shapes: (transformers model type, config fields, fusion layers for a fresh adapter or None = packaged)
SHAPES = {
    # SmolLM2-135M-Instruct, the default model; the packaged adapter was trained for it (layers 18, 24)
    "smollm2-135m": ("llama", dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                   num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                                   tie_word_embeddings=True, max_position_embeddings=8192), None),
    # Qwen2-1.5B; a fresh adapter at the same relative depth as the packaged one (18/30, 24/30 of 28)
    "qwen2-1.5b": ("qwen2", dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                                 num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
                                 tie_word_embeddings=True, max_position_embeddings=32768), (17, 22)),
    "tiny": ("llama", dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=128, vocab_size=512, tie_word_embeddings=True,
                           max_position_embeddings=4096), (1, 3)),
}
#: HBM bandwidth by the vendor's datasheet, bytes/s (SXM parts)
SPEC_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}
EMBED_DIM = 384  # all-MiniLM-L6-v2, the KB's embedder
PROMPT, START, FUSED_NEW = 48, 32, 8  # fused-answer prompt length, first fused position, new tokens


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after ``warmup`` runs, synchronised with the device."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_mib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer over "w0".."w{n-1}" (w0 = unknown, no eos), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0")


def build_llm(name: str, device: str, directory: Path, max_new: int) -> CausalLM:
    """A randomly initialised model of shape ``name``, saved and loaded back through CausalLM."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kind, fields, _ = SHAPES[name]
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **fields), dtype=torch.bfloat16)
    model.save_pretrained(directory)
    word_tokenizer(fields["vocab_size"]).save_pretrained(directory)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return CausalLM(LLMConfig(model=str(directory), device=device, bf16=True, max_new_tokens=max_new))


def adapter_for(name: str, hidden: int):
    """The packaged adapter for the default shape; a fresh one (gates opened to 0.5) for the others."""
    layers = SHAPES[name][2]
    if layers is None:
        return load_adapter(packaged_adapter_dir()), "packaged " + str(packaged_adapter_dir().relative_to(ROOT))
    config = FusionConfig(base_model=f"random:{name}", hidden_size=hidden, embedder="random-384",
                          embed_dim=EMBED_DIM, layers=layers, key_prior=True)
    torch.manual_seed(1)
    adapter = build_adapter(config)
    with torch.no_grad():
        for layer in adapter.fused.values():
            layer.gate.fill_(float(np.arctanh(0.5)))  # a closed gate skips the adapter's work entirely
    return adapter, f"fresh, layers {list(layers)}"


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def knowledge(rng: np.random.Generator, n: int, vocab: int) -> KnowledgeTokens:
    """``n`` random knowledge tokens, each value two words long (the copy path tokenizes them)."""
    words = rng.integers(1, vocab, size=(n, 2))
    return KnowledgeTokens(unit(rng, n, EMBED_DIM), unit(rng, n, EMBED_DIM), unit(rng, EMBED_DIM),
                           labels=tuple(f"f{i}" for i in range(n)), start=START,
                           value_texts=tuple(f"w{a} w{b}" for a, b in words))


def raw_decode(model, device: str, batch: int, prompt: int, steps: int, vocab: int) -> float:
    """Tokens/s of a bare greedy loop (forward + argmax, DynamicCache) at ``batch`` sequences."""
    from transformers import DynamicCache

    ids = torch.randint(1, vocab, (batch, prompt), device=device)
    kv = cache_arg(model)  # the KV cache's argument name in this transformers version
    times = []
    with torch.inference_mode():
        for rep in range(3):  # the first is a warm-up
            cache = DynamicCache()
            out = model(input_ids=ids, **{kv: cache}, use_cache=True, logits_to_keep=1)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                out = model(input_ids=out.logits[:, -1].argmax(-1, keepdim=True), **{kv: cache}, use_cache=True)
            sync(device)
            times.append(time.perf_counter() - t0) if rep else None
    return batch * steps / statistics.median(times)


def step_overhead(model, device: str, vocab: int) -> dict:
    """Where a batch-1 decode step's time goes: wall (synchronised), CPU time to queue it (unsynchronised),
    GPU kernel time (profiler), kernel launches; plus the cost of one empty kernel launch."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import DynamicCache

    x = torch.zeros(1, device=device)
    launch = timed(lambda: [x.add_(1) for _ in range(1000)], device, 3) / 1000
    cache, kv = DynamicCache(), cache_arg(model)
    with torch.inference_mode():
        model(input_ids=torch.randint(1, vocab, (1, 32), device=device), **{kv: cache}, use_cache=True)
        tok = torch.randint(1, vocab, (1, 1), device=device)

        def step():
            model(input_ids=tok, **{kv: cache}, use_cache=True)
            cache.crop(-1)  # back to the 32-token prompt (a negative count, as agent.llm crops)

        wall = timed(step, device, 20, warmup=3)
        queued = []
        for _ in range(20):
            sync(device)
            t0 = time.perf_counter()
            step()
            queued.append(time.perf_counter() - t0)
        sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step()
            sync(device)
    kernels_seen = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]  # kernels and copies
    gpu_us = sum(e.self_device_time_total for e in kernels_seen) / 10
    kernels = sum(e.count for e in kernels_seen) / 10
    return {"empty_launch_us": round(launch * 1e6, 2), "step_wall_ms": round(wall * 1e3, 2),
            "step_cpu_queue_ms": round(statistics.median(queued) * 1e3, 2), "step_gpu_kernel_ms": round(gpu_us / 1e3, 3),
            "kernels_per_step": kernels, "kernel_bound_tokens_per_s": round(1e6 / gpu_us, 1) if gpu_us else None}


def generate_speed(model, device: str, vocab: int, steps: int) -> dict:
    """Batch-1 greedy ``model.generate`` tokens/s with a DynamicCache and with a StaticCache, which
    transformers compiles (torch.compile, CUDA graphs) on a GPU; the first static call's time is the compile."""
    ids = torch.randint(1, vocab, (1, 32), device=device)
    out: dict = {}
    for name, kw in (("dynamic", {}), ("static_compiled", {"cache_implementation": "static"})):
        times, made = [], 0
        with torch.inference_mode():
            for _ in range(3):
                sync(device)
                t0 = time.perf_counter()
                gen = model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, **kw)
                sync(device)
                times.append(time.perf_counter() - t0)
                made = gen.shape[1] - ids.shape[1]
        out[f"{name}_first_call_s"] = round(times[0], 2)
        out[f"{name}_tokens_per_s"] = round(made / statistics.median(times[1:]), 1)
    return out


def bench_shape(name: str, device: str, args, bandwidth: float | None) -> dict:
    rng = np.random.default_rng(0)
    vocab = SHAPES[name][1]["vocab_size"]
    reset_peak(device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        llm = build_llm(name, device, Path(tmp), args.decode_tokens)
        build_s = time.perf_counter() - t0
    model = llm.model
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights counted once
    r: dict = {"params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
               "weight_MB": round(weight_bytes / 1e6, 1), "build_and_load_s": round(build_s, 1),
               "load_s": round(llm.load_seconds, 2)}

    prefill = {}
    with torch.inference_mode():
        for t in args.prefill:
            ids = torch.randint(1, vocab, (1, t), device=device)
            full = timed(lambda: model(input_ids=ids, use_cache=True), device, 3)
            last = timed(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1), device, 3)
            prefill[str(t)] = {"ms": round(full * 1e3, 2), "tokens_per_s": round(t / full),
                               "ms_last_logits_only": round(last * 1e3, 2)}
    r["prefill"] = prefill

    prompt = [int(x) for x in rng.integers(1, vocab, 32)]
    stream_tps, ttft = [], []
    for i in range(4):  # the first is a warm-up
        "".join(llm.stream_ids(prompt, args.decode_tokens, reuse=False))
        if i:
            stream_tps.append(llm.last_stats.tokens_per_s)
            ttft.append(llm.last_stats.time_to_first_token)
    assert llm.last_stats.new_tokens == args.decode_tokens, llm.last_stats
    roof = bandwidth / weight_bytes if bandwidth else None
    r["decode"] = {"new_tokens": args.decode_tokens, "stream_b1_tokens_per_s": round(statistics.median(stream_tps), 1),
                   "stream_ttft_ms": round(statistics.median(ttft) * 1e3, 2)}
    for b in args.batches:
        r["decode"][f"raw_b{b}_tokens_per_s"] = round(raw_decode(model, device, b, 32, args.decode_tokens, vocab), 1)
    if roof:
        d = r["decode"]
        d["roofline_b1_tokens_per_s"] = round(roof, 1)
        d["stream_b1_roofline_ratio"] = round(d["stream_b1_tokens_per_s"] / roof, 4)
        for b in args.batches:
            d[f"raw_b{b}_roofline_ratio"] = round(d[f"raw_b{b}_tokens_per_s"] / (b * roof), 4)

    adapter, source = adapter_for(name, llm.hidden_size)
    fm = llm.attach_fusion(adapter)
    fusion = {"adapter": source, "adapter_params_M": round(sum(p.numel() for p in adapter.parameters()) / 1e6, 2),
              "gates": [round(float(torch.tanh(f.gate.detach())), 3) for f in adapter.fused.values()],
              "prompt_tokens": PROMPT, "fused_from": START, "new_tokens": FUSED_NEW, "by_knowledge_tokens": {}}
    qprompt = [int(x) for x in rng.integers(1, vocab, PROMPT)]
    answer = lambda kt: "".join(llm.stream_ids(qprompt, FUSED_NEW, reuse=False, knowledge=kt))  # noqa: E731
    base = answer(None)
    for n in [0] + args.knowledge:
        kt = knowledge(rng, n, vocab) if n else None
        reset_peak(device)
        reps = 5 if n >= 1000 else 7
        total = timed(lambda: answer(kt), device, reps)
        row = {"latency_ms": round(total * 1e3, 2), "peak_MiB": peak_mib(device)}
        if n:
            def prepare():
                with fm.knowledge(kt):
                    pass
            row["prepare_ms"] = round(timed(prepare, device, reps) * 1e3, 2)
            row["changed_answer"] = answer(kt) != base
            attn = next(iter(fm.last_attention.values()))
            row["attention_shape"] = list(attn.shape)  # (heads, positions, n + 1): the adapter ran
        fusion["by_knowledge_tokens"][str(n)] = row
    llm.detach_fusion()
    r["fusion"] = fusion
    if device == "cuda" or args.diagnose:
        for key, fn in (("step_overhead", lambda: step_overhead(model, device, vocab)),
                        ("generate", lambda: generate_speed(model, device, vocab, args.decode_tokens))):
            try:  # diagnostics: their failure must not lose the numbers above
                r[key] = fn()
            except Exception as e:
                r[key] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            print(f"{name} {key}: {r[key]}", flush=True)
    r["peak_MiB"] = peak_mib(device)
    del llm, model, fm, adapter
    if device == "cuda":
        torch.cuda.empty_cache()
    return r


def device_info(device: str) -> dict:
    if device != "cuda":
        return {"name": "cpu", "spec_bandwidth_TBps": None, "copy_bandwidth_TBps": None}
    name = torch.cuda.get_device_name()
    spec = next((bw for key, bw in SPEC_BANDWIDTH.items() if key in name), None)
    x = torch.empty(2**31, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    t = timed(lambda: y.copy_(x), device, 10, warmup=3)  # bytes read + written
    del x, y
    torch.cuda.empty_cache()
    return {"name": name, "spec_bandwidth_TBps": spec and spec / 1e12,
            "copy_bandwidth_TBps": round(2 * 2**31 / t / 1e12, 2)}


def table(results: dict, batches: list[int]) -> None:
    for name, r in results["shapes"].items():
        d = r["decode"]
        print(f"\n== {name}: {r['params_M']}M params, {r['weight_MB']} MB bf16, peak {r['peak_MiB']} MiB")
        print("prefill  " + "  ".join(f"T={t}: {v['ms']} ms ({v['tokens_per_s']} tok/s; last-logits-only "
                                        f"{v['ms_last_logits_only']} ms)" for t, v in r["prefill"].items()))
        line = f"decode   stream b1 {d['stream_b1_tokens_per_s']} tok/s (ttft {d['stream_ttft_ms']} ms)"
        line += "".join(f"  raw b{b} {d[f'raw_b{b}_tokens_per_s']} tok/s" for b in batches)
        print(line)
        if "roofline_b1_tokens_per_s" in d:
            print(f"roofline b1 {d['roofline_b1_tokens_per_s']} tok/s; ratio stream b1 {d['stream_b1_roofline_ratio']}"
                  + "".join(f", raw b{b} {d[f'raw_b{b}_roofline_ratio']}" for b in batches))
        f = r["fusion"]
        print(f"fusion ({f['adapter']}, gates {f['gates']}): {f['new_tokens']} new tokens, prompt {f['prompt_tokens']}")
        print(f"{'knowledge':>10} {'latency ms':>11} {'prepare ms':>11} {'peak MiB':>9} changed")
        for n, row in f["by_knowledge_tokens"].items():
            print(f"{n:>10} {row['latency_ms']:>11} {row.get('prepare_ms', '-'):>11} {str(row['peak_MiB']):>9} "
                  f"{row.get('changed_answer', '-')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (a smoke test)")
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="default: smollm2-135m qwen2-1.5b")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prefill", type=int, nargs="+", default=[128, 1024, 4096])
    ap.add_argument("--knowledge", type=int, nargs="+", default=[1, 10, 100, 1000, 10000])
    ap.add_argument("--diagnose", action="store_true", help="step overhead and model.generate also off CUDA")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_bench.json")
    args = ap.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        device = "cpu" if args.device == "auto" else device
        args.shapes = args.shapes or ["tiny"]
        args.decode_tokens, args.prefill = min(args.decode_tokens, 16), [t for t in args.prefill if t <= 1024]
    shapes = args.shapes or ["smollm2-135m", "qwen2-1.5b"]
    import transformers

    transformers.utils.logging.disable_progress_bar()
    info = device_info(device)
    bandwidth = info["spec_bandwidth_TBps"] and info["spec_bandwidth_TBps"] * 1e12
    print(f"device {info['name']}  spec bandwidth {info['spec_bandwidth_TBps']} TB/s  "
          f"measured copy {info['copy_bandwidth_TBps']} TB/s  torch {torch.__version__}  "
          f"transformers {transformers.__version__}", flush=True)
    results = {"device": info, "torch": torch.__version__, "transformers": transformers.__version__,
               "dtype": "bfloat16", "argv": sys.argv[1:], "shapes": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in shapes:
        t0 = time.perf_counter()
        try:
            results["shapes"][name] = bench_shape(name, device, args, bandwidth)
        except Exception as e:  # keep the other shape's numbers: a device run is scarce
            import traceback

            traceback.print_exc()
            results.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
        print(f"{name} done in {time.perf_counter() - t0:.0f} s", flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    table(results, args.batches)
    print(f"\nwrote {args.out}")
    if results.get("errors"):
        sys.exit(1)


if __name__ == "__main__":
    main()
