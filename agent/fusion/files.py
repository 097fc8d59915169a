"""The fusion adapter's files: fp16 safetensors weights and a JSON config, written atomically, loaded
only for the base model and embedder they were trained for."""
from __future__ import annotations

import json
from pathlib import Path

from agent.errors import ModelLoadError
from agent.fusion.adapter import FusionConfig, build_adapter

_WEIGHTS = "fusion.safetensors"
_CONFIG = "fusion.json"

def save_adapter(adapter, directory: Path, extra: dict | None = None) -> Path:
    """Write ``fusion.safetensors`` (fp16 weights) and ``fusion.json`` (config + ``extra``) atomically."""
    from safetensors.torch import save

    from kb.files import write_atomic

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").half().contiguous() for k, v in adapter.state_dict().items()}
    write_atomic(directory / _WEIGHTS, lambda fh: fh.write(save(state)))
    meta = {"config": adapter.config.to_json(), **(extra or {})}
    write_atomic(directory / _CONFIG, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
    for name in (_WEIGHTS, _CONFIG):  # temp files are private; an adapter is meant to be shared
        (directory / name).chmod(0o644)
    return directory


def read_config(directory: Path) -> tuple[FusionConfig, dict]:
    path = Path(directory) / _CONFIG
    if not path.exists():
        raise ModelLoadError(f"{directory} is not a fusion adapter: {_CONFIG} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return FusionConfig.from_json(meta["config"]), meta
    except (ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None


def load_adapter(directory: Path, base_model: str | None = None, embedder: str | None = None):
    """The adapter saved in ``directory``; refuses one trained for another base model or embedder."""
    from safetensors.torch import load_file

    config, _ = read_config(directory)
    if base_model is not None and config.base_model != base_model:
        raise ModelLoadError(f"the fusion adapter in {directory} was trained for {config.base_model!r}, not for "
                             f"the loaded model {base_model!r}; train one with `kgrow fusion train`")
    if embedder is not None and config.embedder != embedder:
        raise ModelLoadError(f"the fusion adapter in {directory} reads {config.embedder!r} vectors, but the "
                             f"knowledge base uses {embedder!r}")
    adapter = build_adapter(config)
    state = {k: v.float() for k, v in load_file(str(Path(directory) / _WEIGHTS)).items()}
    missing, unexpected = adapter.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"fusion weights in {directory} do not match its config (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    return adapter


def packaged_adapter_dir() -> Path:
    """The adapter shipped in the package for the default model (SmolLM2-135M-Instruct + MiniLM)."""
    return Path(__file__).parent / "weights" / "fusion-smollm2-135m"


def matching_adapter(base_model: str, embedder: str, directory: Path | None = None) -> Path | None:
    """``directory`` (default: the packaged adapter) if it was trained for this model and embedder."""
    d = Path(directory) if directory is not None else packaged_adapter_dir()
    if not (d / _CONFIG).exists():
        return None
    config, _ = read_config(d)
    return d if (config.base_model, config.embedder) == (base_model, embedder) else None
