"""The ONNX Runtime encoder: a sentence-transformers model's transformer exported once to ONNX and run with onnxruntime.

Why: on CPU a single short text (a chat message, a question) costs MiniLM ~25 ms in torch on this
project's 2-core machines and ~7 ms in ONNX Runtime, with the same vectors (max abs difference
~3e-7). Every chat turn and every recall embeds one or two short texts, so this is the largest
share of a turn's memory work. For long batched ingest torch is as fast or faster, so the embedder
sends only short batches here (``EmbedderConfig.onnx_max_chars``).

Only models ONNX can reproduce exactly are accepted: a Hugging Face transformer followed by mean or
CLS pooling and an optional Normalize, nothing else (no Dense layers, no prompts). The export is
checked against torch on probe texts when it is written; any failure leaves the embedder on torch.
The exported file is cached (``$KGROW_CACHE`` or the user cache dir), keyed by the model's config,
its weights' sums and the library versions, and written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kb.errors import InvalidInputError
from kb.files import write_atomic

#: texts the export is checked on against torch: short, long, padded together (max abs diff <= _TOL)
_PROBES = ("ok", "Where does my sister live?",
           "I adopted a rescue greyhound last week, his name is Biscuit, and he sleeps all day long. " * 5)
_TOL = 1e-4
_FORMAT = "v1"  # bump when the export changes shape: old cached files are then ignored


def cache_root() -> Path:
    """Where exported encoders go: $KGROW_CACHE, else the user cache dir (as for the packaged LLM)."""
    env = os.environ.get("KGROW_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("kgrow"))


def pooling_of(st_model: Any) -> str | None:
    """'mean' or 'cls' when ``st_model`` is transformer + that pooling (+ Normalize), else None."""
    mods = list(st_model)
    names = [type(m).__name__ for m in mods]
    if len(mods) < 2 or names[0] != "Transformer" or names[1] != "Pooling":
        return None
    if any(n != "Normalize" for n in names[2:]):
        return None  # Dense and other heads are not reproduced here
    cfg = mods[1].get_config_dict() if hasattr(mods[1], "get_config_dict") else {}
    mode = cfg.get("pooling_mode")  # sentence-transformers >= 6: one string
    if mode is None:  # earlier versions: one boolean per mode
        modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v is True]
        mode = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(modes[0]) \
            if len(modes) == 1 else None
    return mode if mode in ("mean", "cls") else None


class OnnxEncoder:
    """Encodes texts with the exported transformer; pooling and normalisation in numpy."""

    def __init__(self, st_model: Any, threads: int, reference: Any, cache_dir: Path | None = None):
        """``reference(texts) -> vectors`` is the torch path: a fresh export must agree with it on probe
        texts (max abs difference <= 1e-4) or it is deleted and this raises."""
        pooling = pooling_of(st_model)
        if pooling is None:
            raise InvalidInputError("this sentence-transformers model is not transformer + mean/CLS pooling; "
                                    "use runtime='torch'")
        import onnxruntime as ort

        self._pooling = pooling
        self._tokenizer = st_model.tokenizer
        self._max_len = int(st_model.max_seq_length or 512)
        hf = st_model[0].auto_model
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = self._path(hf, cache_dir or cache_root())
        fresh = not path.exists()
        if fresh:
            self._export(hf, path)
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - a damaged cached file (e.g. a disk filled while copying): export again
            fresh = True
            self._export(hf, path)
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.path = path
        if fresh:  # checked once, when written: a cached file is keyed by the weights and library versions
            diff = float(np.abs(self.encode(_PROBES) - reference(list(_PROBES))).max())
            if diff > _TOL:
                path.unlink(missing_ok=True)
                raise InvalidInputError(f"the ONNX export differs from torch by {diff:.2g} (tolerance {_TOL:g})")

    @staticmethod
    def _path(hf: Any, root: Path) -> Path:
        """The cached file of ``hf``'s export, named by its config, weights and the library versions."""
        import torch
        import transformers

        with torch.no_grad():  # a cheap signature of the weights: two sums per tensor tell fine-tunes apart
            weights = [(n, float(p.sum()), float(p.abs().sum())) for n, p in hf.named_parameters()]
        key = hashlib.blake2b(json.dumps([_FORMAT, hf.config.to_dict(), weights, torch.__version__,
                                          transformers.__version__], sort_keys=True, default=str).encode(),
                              digest_size=10).hexdigest()
        return root / "onnx" / f"{hf.config.model_type}-{key}.onnx"

    def _export(self, hf: Any, path: Path) -> None:
        import torch

        enc = self._tokenizer(list(_PROBES[:2]), return_tensors="pt", padding=True)
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]

        class Body(torch.nn.Module):  # positional inputs in ``names`` order -> last hidden state
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, *args):
                return self.model(**dict(zip(names, args))).last_hidden_state

        buf = io.BytesIO()
        axes = {n: {0: "batch", 1: "tokens"} for n in names + ["hidden"]}
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on Python-level checks it folds
            torch.onnx.export(Body(hf.eval()), tuple(enc[n] for n in names), buf, input_names=names,
                              output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = buf.getvalue()
        write_atomic(path, lambda fh: fh.write(data))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""
        enc = self._tokenizer(list(texts), padding=True, truncation=True, max_length=self._max_len,
                              return_tensors="np")
        feeds = {n: np.asarray(enc[n], dtype=np.int64) for n in self._inputs}
        hidden = self._session.run(None, feeds)[0]  # (n, tokens, dim)
        if self._pooling == "cls":
            vecs = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)  # (n, tokens, 1)
            vecs = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        vecs = vecs.astype(np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs)
