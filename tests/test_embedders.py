"""One contract every embedder backend must honour, run over the fake and the packaged MiniLM."""
from __future__ import annotations

import re

import numpy as np
import pytest

from kb import Embedder, EmbedderConfig, HashEmbedder, InvalidInputError, SentenceTransformerEmbedder


@pytest.fixture(scope="module")
def minilm():
    """The packaged all-MiniLM-L6-v2, loaded once for the whole module (~5 s)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    try:
        yield SentenceTransformerEmbedder(EmbedderConfig(device="cpu"))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def minilm_torch():
    """The same model with every forward pass in torch (the default sends small batches to ONNX Runtime)."""
    return SentenceTransformerEmbedder(EmbedderConfig(device="cpu", runtime="torch"))


@pytest.fixture(params=["hash", pytest.param("minilm", marks=pytest.mark.integration),
                        pytest.param("minilm_torch", marks=pytest.mark.integration)])
def backend(request):
    """(embedder, expected dim, similarity triple (anchor, near, far), atol for query/document equality)."""
    if request.param == "hash":
        # the hash fake measures shared words, so 'near' shares words with the anchor
        return (HashEmbedder(dim=64), 64,
                ("Alice lives in Paris", "Alice lives in Paris, France", "The stock market fell sharply"), 1e-6)
    return (request.getfixturevalue(request.param), 384,
            ("Alice lives in Paris", "Where does Alice live?", "The stock market fell"), 1e-3)


class EmbedderContract:
    """Behaviour every Embedder must have; subclass-free: applied to each backend by the fixture."""

    def test_is_an_embedder_with_stable_id(self, backend):
        emb, _, _, _ = backend
        assert isinstance(emb, Embedder)
        assert isinstance(emb.id, str) and emb.id.strip()
        assert emb.id == emb.id

    def test_dim_is_an_int_read_from_the_model(self, backend):
        emb, dim, _, _ = backend
        assert type(emb.dim) is int
        assert emb.dim == dim

    def test_embed_documents_shape_dtype_and_norm(self, backend):
        emb, dim, _, _ = backend
        texts = ["Alice lives in Paris", "Bob likes jazz", "x", "ünïcødé 東京 🙂"]
        out = emb.embed_documents(texts)
        assert isinstance(out, np.ndarray)
        assert out.shape == (len(texts), dim)
        assert out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-3)
        assert np.isfinite(out).all()

    def test_embed_query_equals_single_document(self, backend):
        emb, dim, _, atol = backend
        for text in ("Alice lives in Paris", "Where does Alice live?"):
            q = emb.embed_query(text)
            assert q.shape == (dim,)
            assert q.dtype == np.float32
            np.testing.assert_allclose(q, emb.embed_documents([text])[0], atol=atol)
            assert abs(float(np.linalg.norm(q)) - 1.0) < 1e-3

    def test_empty_list_gives_zero_rows(self, backend):
        emb, dim, _, _ = backend
        out = emb.embed_documents([])
        assert out.shape == (0, dim)
        assert out.dtype == np.float32

    def test_deterministic_across_calls(self, backend):
        emb, _, _, _ = backend
        texts = ["Alice lives in Paris", "The stock market fell"]
        a = emb.embed_documents(texts)
        b = emb.embed_documents(texts)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(emb.embed_query(texts[0]), emb.embed_query(texts[0]))

    def test_row_does_not_depend_on_batch_neighbours(self, backend):
        emb, _, _, _ = backend
        alone = emb.embed_documents(["Alice lives in Paris"])[0]
        batched = emb.embed_documents(["something else entirely", "Alice lives in Paris", "more"])[1]
        # padding in a batch may nudge a bf16 model's output a little, never the meaning
        assert float(alone @ batched) > 0.99

    def test_similar_texts_are_closer_than_unrelated(self, backend):
        emb, _, (anchor, near, far), _ = backend
        a, n, f = emb.embed_documents([anchor, near, far])
        assert float(a @ n) > float(a @ f)
        assert float(emb.embed_query(near) @ a) > float(emb.embed_query(far) @ a)

    def test_very_long_text_works(self, backend):
        emb, dim, _, _ = backend
        long = ("Alice lives in Paris and likes long walks. " * 5000)[:200_000]
        assert len(long) == 200_000
        out = emb.embed_documents([long, "short"])
        assert out.shape == (2, dim)
        assert np.isfinite(out).all()
        assert abs(float(np.linalg.norm(out[0])) - 1.0) < 1e-3
        q = emb.embed_query(long)
        assert q.shape == (dim,)


# pytest collects classes named Test*: bind the contract under a collectable name
TestEmbedderContract = EmbedderContract


# --------------------------------------------------------------------------- configuration


class TestEmbedderConfig:
    def test_defaults_are_valid(self):
        cfg = EmbedderConfig()
        assert cfg.batch_size >= 1
        assert cfg.device in ("auto", "cpu", "cuda")

    @pytest.mark.parametrize("device", ["gpu", "CUDA", "", "tpu"])
    def test_bad_device_is_named(self, device):
        with pytest.raises(InvalidInputError, match=re.escape(repr(device))):
            EmbedderConfig(device=device)

    @pytest.mark.parametrize("batch_size", [0, -5])
    def test_bad_batch_size_is_named(self, batch_size):
        with pytest.raises(InvalidInputError, match=f"batch_size {batch_size}"):
            EmbedderConfig(batch_size=batch_size)

    @pytest.mark.parametrize("model", ["", "   "])
    def test_empty_model_rejected(self, model):
        with pytest.raises(InvalidInputError, match="model is empty"):
            EmbedderConfig(model=model)

    @pytest.mark.parametrize("bf16", ["yes", 1.0])
    def test_bad_bf16_is_named(self, bf16):
        with pytest.raises(InvalidInputError, match=re.escape(repr(bf16))):
            EmbedderConfig(bf16=bf16)

    def test_bf16_is_used_only_where_the_hardware_has_it(self):
        """Emulated bf16 embeds about 2x slower than fp32 on a CPU without AVX512-BF16/AMX."""
        import torch

        from kb.embeddings import native_bf16

        assert native_bf16("cuda")
        assert native_bf16("cpu") == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())

    def test_config_is_immutable(self):
        cfg = EmbedderConfig()
        with pytest.raises(Exception):
            cfg.device = "cpu"  # type: ignore[misc]

    @pytest.mark.integration  # imports torch + sentence-transformers
    def test_missing_local_model_path_is_not_found(self, tmp_path):
        from kb import NotFoundError

        missing = tmp_path / "no-such-model"
        with pytest.raises(NotFoundError, match="no-such-model"):
            SentenceTransformerEmbedder(EmbedderConfig(model=str(missing), device="cpu"))


class TestRuntime:
    @pytest.mark.parametrize("runtime", ["tensorrt", "ONNX", ""])
    def test_unknown_runtime_is_named_with_the_valid_ones(self, runtime):
        with pytest.raises(InvalidInputError, match=re.escape(repr(runtime)) + ".*auto, torch, onnx"):
            EmbedderConfig(runtime=runtime)

    @pytest.mark.parametrize("n", [-1, 2.5, "8", True])
    def test_bad_onnx_max_chars_is_named(self, n):
        with pytest.raises(InvalidInputError, match=re.escape(f"onnx_max_chars={n!r}")):
            EmbedderConfig(onnx_max_chars=n)

    def test_only_transformer_plus_mean_or_cls_pooling_is_exported(self):
        from kb.onnx_encoder import pooling_of

        def model(*mods):
            return [type(name, (), {"get_config_dict": lambda self, c=cfg: c})() for name, cfg in mods]

        assert pooling_of(model(("Transformer", {}), ("Pooling", {"pooling_mode": "mean"}), ("Normalize", {}))) == "mean"
        assert pooling_of(model(("Transformer", {}), ("Pooling", {"pooling_mode_cls_token": True}))) == "cls"
        assert pooling_of(model(("Transformer", {}), ("Pooling", {"pooling_mode": "max"}))) is None
        assert pooling_of(model(("Transformer", {}), ("Pooling", {"pooling_mode": "mean"}), ("Dense", {}))) is None
        assert pooling_of(model(("CLIPModel", {}),)) is None

    @pytest.mark.integration
    def test_onnx_runtime_gives_torchs_vectors(self, minilm, minilm_torch):
        """Small batches run in ONNX Runtime on the CPU, with torch's vectors (truncation included)."""
        from kb.embeddings import Runtime

        assert minilm.runtime is Runtime.ONNX and minilm_torch.runtime is Runtime.TORCH
        texts = ["ok", "Where does my sister live?", "ünïcødé 東京 🙂", "word " * 250,
                 "I adopted a rescue greyhound last week, his name is Biscuit."] * 2
        for n in (1, 2, 3, 4, 10):  # 1-3 go to ONNX Runtime; 4 and 10 pass onnx_max_chars: torch
            np.testing.assert_allclose(minilm.embed_documents(texts[:n]), minilm_torch.embed_documents(texts[:n]),
                                       atol=1e-5)
        np.testing.assert_allclose(minilm.embed_query("word " * 2000), minilm_torch.embed_query("word " * 2000),
                                   atol=1e-5)  # truncated to 256 word pieces by both

    @pytest.mark.integration
    def test_export_is_cached_and_a_damaged_cache_is_rebuilt(self, minilm, minilm_torch):
        from kb.embeddings import Runtime

        path = minilm._onnx.path
        before = path.stat().st_mtime_ns
        again = SentenceTransformerEmbedder(EmbedderConfig(device="cpu"))
        assert again._onnx.path == path and path.stat().st_mtime_ns == before  # read, not exported again
        path.write_bytes(b"not an onnx file")
        rebuilt = SentenceTransformerEmbedder(EmbedderConfig(device="cpu", runtime="onnx"))
        assert rebuilt.runtime is Runtime.ONNX
        np.testing.assert_allclose(rebuilt.embed_query("Where do I live?"), minilm_torch.embed_query("Where do I live?"),
                                   atol=1e-5)


class TestHashEmbedder:
    def test_too_small_dim_is_named(self):
        with pytest.raises(InvalidInputError, match="dim 4"):
            HashEmbedder(dim=4)

    def test_id_includes_dim_so_dims_never_mix(self):
        assert HashEmbedder(dim=32).id != HashEmbedder(dim=64).id

    def test_same_text_same_vector_in_every_instance(self):
        np.testing.assert_array_equal(HashEmbedder(64).embed_query("Alice"), HashEmbedder(64).embed_query("Alice"))

    def test_text_without_words_still_normalised(self):
        v = HashEmbedder(64).embed_query("!!! ???")
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-6
