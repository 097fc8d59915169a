"""Per-user, versioned LoRA adapters kept in the knowledge base directory, and attaching one to a
loaded model without ever changing the base weights.

Layout: ``KB_DIR/adapters/<user, escaped>/v<N>/`` holds peft's ``adapter_config.json`` and
``adapter_model.safetensors`` plus ``kgrow-adapter.json`` (``AdapterMeta``). A version directory
appears only complete: it is written under a temporary name and renamed into place. Versions count
up from the highest one present (removing the newest frees its number).

Attaching (``attach``) wraps ``llm.model`` in a peft ``PeftModel``, which swaps LoRA layers into
``llm.model``'s own modules in place: ``llm.model`` stays the same object (hooks other code holds on
its decoder layers keep working) and its base weights are only read. Detaching calls peft's
``unload()``, which puts the original linear modules back, so the model computes bit-identical
logits again. The base model is never merged or saved.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from agent.errors import BadInputError, ModelLoadError
from agent.generation.model import LanguageModel, require
from kb.errors import NotFoundError
from kb.facts import clean_user
from kb.files import fsync_dir, write_text_atomic

ADAPTERS_DIR = "adapters"
META_FILE = "kgrow-adapter.json"
LAST_FILE = "last-version"  # highest version number ever given out (removed versions are not reused)
#: the metadata format written; older or newer ones are refused with a clear error
FORMAT_VERSION = 1
_VERSION_DIR = re.compile(r"v([1-9]\d{0,8})")
_SPEC = re.compile(r"v?([1-9]\d{0,8})", re.IGNORECASE)


@dataclass(frozen=True)
class AdapterMeta:
    """What one adapter was trained on and how well it did (``kgrow-adapter.json``)."""

    format: int
    version: int  # N of its v<N> directory (0 until the store assigns it)
    user: str
    base_model: str  # the model id it was trained on (LLMConfig.model, e.g. packaged:SmolLM2-135M-Instruct)
    base_fingerprint: str  # architecture + a hash of base weight slices: catches a different model under one name
    created: str  # ISO-8601 UTC
    fact_ids: tuple[str, ...]  # the facts it learned (current when it was trained)
    fact_texts: tuple[str, ...]  # their statements, for `kgrow learn --list`
    pairs: int  # question/answer pairs trained on
    steps: int  # optimiser steps
    train_seconds: float
    closed_book_before: float  # accuracy on the facts' questions without facts in the prompt
    closed_book_after: float
    changed_fraction: float  # share of locality probes whose answer changed
    probe_set_version: int
    settings: dict  # the LearnConfig fields it was trained with, for the record

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, where: Path) -> AdapterMeta:
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT_VERSION:
                raise ModelLoadError(f"{where} has adapter format {raw.get('format')!r}; this kgrow reads "
                                     f"format {FORMAT_VERSION}: retrain it with `kgrow learn`")
            names = {f.name for f in fields(cls)}
            values = {k: raw[k] for k in names}
            for k in ("fact_ids", "fact_texts"):
                values[k] = tuple(str(v) for v in values[k])
            return cls(**values)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"{where} is not a readable kgrow adapter description ({e}); "
                                 "remove the adapter and train it again") from None


@dataclass(frozen=True)
class Adapter:
    """One stored adapter: its directory and its metadata."""

    path: Path
    meta: AdapterMeta

    @property
    def name(self) -> str:
        return f"v{self.meta.version}"


def safe_user(user: str) -> str:
    """A user name as one directory name (the same escaping as the saved sessions use)."""
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in user)


def read_adapter(path: Path) -> Adapter:
    """The adapter in directory ``path`` (a v<N> directory of a store, or a copy of one)."""
    meta_file = path / META_FILE
    if not path.is_dir() or not meta_file.is_file():
        raise NotFoundError(f"{path} is not a kgrow adapter directory (no {META_FILE})")
    return Adapter(path, AdapterMeta.from_json(meta_file.read_text(encoding="utf-8"), meta_file))


class AdapterStore:
    """The adapters of every user of one knowledge base directory."""

    def __init__(self, kb_dir: str | Path):
        self.root = Path(kb_dir).expanduser() / ADAPTERS_DIR

    def user_dir(self, user: str) -> Path:
        return self.root / safe_user(clean_user(user))

    def list(self, user: str) -> list[Adapter]:
        """The user's adapters, oldest version first."""
        d = self.user_dir(user)
        if not d.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _VERSION_DIR.fullmatch(p.name)) and p.is_dir()]
        return [read_adapter(p) for _, p in sorted(found)]

    def get(self, user: str, spec: str) -> Adapter:
        """``latest``, ``vN`` or ``N`` of ``user``."""
        adapters = self.list(user)
        have = ", ".join(a.name for a in adapters) or "none"
        if spec.strip().lower() == "latest":
            if not adapters:
                raise NotFoundError(f"user {user!r} has no adapters in {self.root}; train one with "
                                    f"`kgrow learn --user {user}`")
            return adapters[-1]
        m = _SPEC.fullmatch(spec.strip())
        if m is None:
            raise BadInputError(f"adapter version {spec!r} is invalid; give latest or vN (user {user!r} has: {have})")
        for a in adapters:
            if a.meta.version == int(m.group(1)):
                return a
        raise NotFoundError(f"user {user!r} has no adapter v{m.group(1)} (has: {have})")

    def resolve(self, spec: str, user: str) -> Adapter:
        """``latest`` or ``vN`` of ``user`` in this store, else a path to an adapter directory."""
        s = spec.strip()
        if not s:
            raise BadInputError("adapter is empty; give latest, vN or the path of an adapter directory")
        if s.lower() == "latest" or _SPEC.fullmatch(s):
            return self.get(user, s)
        path = Path(s).expanduser()
        if not path.exists():
            raise NotFoundError(f"adapter {spec!r} is neither latest, vN nor an existing directory")
        return read_adapter(path)

    def add(self, meta: AdapterMeta, write_weights: Callable[[Path], None]) -> Adapter:
        """Store a new version: ``write_weights(dir)`` writes the peft files into a fresh directory;
        the version directory appears only once weights and metadata are complete."""
        d = self.user_dir(meta.user)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            write_weights(tmp)
            for _ in range(100):  # another `kgrow learn` may take the same number at the same time
                version = max([a.meta.version for a in self.list(meta.user)] + [self._last(d)]) + 1
                done = replace(meta, version=version)
                write_text_atomic(tmp / META_FILE, done.to_json())
                target = d / f"v{version}"
                try:
                    os.rename(tmp, target)  # fails if target exists (and is not empty)
                    fsync_dir(d)
                except OSError:
                    if target.exists():
                        continue
                    raise
                self._record(d, version)
                return Adapter(target, done)
            raise ModelLoadError(f"could not find a free version number in {d}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _last(d: Path) -> int:
        """The highest version ever stored here (removed ones included), so no number is reused:
        a chat started with --adapter v3 must never silently get another adapter later."""
        try:
            return int((d / LAST_FILE).read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            return 0
        except ValueError:
            raise ModelLoadError(f"{d / LAST_FILE} is not a version number; delete it (versions are then "
                                 f"counted from the directories present)") from None

    @staticmethod
    def _record(d: Path, version: int) -> None:
        if version > AdapterStore._last(d):
            write_text_atomic(d / LAST_FILE, f"{version}\n")

    def remove(self, user: str, spec: str) -> Adapter:
        """Delete one version (``vN`` or ``latest``) of ``user``'s adapters; returns what was removed."""
        a = self.get(user, spec)
        shutil.rmtree(a.path)
        return a


# ---------------------------------------------------------------------------- attach / detach


def fingerprint(model) -> str:
    """Architecture and sizes plus a hash of the first values of the first base tensors.

    LoRA tensors are skipped and values are hashed as float32, so the same base model gives the
    same fingerprint with or without an adapter attached and in bf16 or fp32.
    """
    import torch

    cfg = model.config
    dims = (f"{getattr(cfg, 'model_type', '?')}-{getattr(cfg, 'num_hidden_layers', '?')}x"
            f"{getattr(cfg, 'hidden_size', '?')}-v{getattr(cfg, 'vocab_size', '?')}")
    h = hashlib.sha256(dims.encode())
    taken = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                continue
            h.update(p.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
            taken += 1
            if taken == 8:
                break
    return f"{dims}-{h.hexdigest()[:16]}"


def has_lora(model) -> bool:
    """Whether LoRA layers are swapped into ``model`` now (by a training run or an attached adapter)."""
    return any(hasattr(m, "lora_A") for m in model.modules())


def _transformers_model(llm: LanguageModel):
    require(llm, "transformers", "LoRA adapters")
    return llm.model


def check_base(adapter: Adapter, llm) -> None:
    """Refuse an adapter trained on another base model, naming both."""
    model = _transformers_model(llm)
    mine = fingerprint(model)
    if adapter.meta.base_fingerprint != mine:
        raise ModelLoadError(
            f"adapter {adapter.name} of {adapter.meta.user!r} ({adapter.path}) was trained on base model "
            f"{adapter.meta.base_model!r} ({adapter.meta.base_fingerprint}), but the loaded model is "
            f"{llm.id!r} ({mine}); use --model {adapter.meta.base_model} or train a new adapter")


class AdapterHandle:
    """An adapter attached to one loaded model: ``off()`` detaches it, ``on()`` attaches it again."""

    def __init__(self, adapter: Adapter, llm):
        self.adapter = adapter
        self.llm = llm
        self._peft = None
        self.user: str | None = None  # the agent's active user, set by follow(); None = not tracked
        self._wanted = True  # on for its owner unless turned off; restored when the owner comes back

    @property
    def active(self) -> bool:
        return self._peft is not None

    def follow(self, user: str) -> None:
        """The agent's active user is now ``user``. The adapter holds its owner's facts in its
        weights, so it is detached while anyone else is active and reattached (if it was on) when
        the owner comes back."""
        owner = self.adapter.meta.user
        if user == owner:
            self.user = user
            if self._wanted:
                self.on()
        else:
            if self.user == owner or self.user is None:
                self._wanted = self.active
            self._detach()
            self.user = user

    def on(self) -> None:
        owner = self.adapter.meta.user
        if self.user is not None and self.user != owner:
            raise BadInputError(f"adapter {self.adapter.name} holds the facts of {owner!r} and the active user is "
                                f"{self.user!r}; switch back with /user {owner} to use it")
        self._wanted = True
        if self._peft is not None:
            return
        from peft import PeftModel

        model = _transformers_model(self.llm)
        if has_lora(model):
            raise BadInputError("the model already has a LoRA adapter attached; detach it first (/adapter off)")
        check_base(self.adapter, self.llm)
        with self.llm.lock:  # no generation may run while layers are swapped
            try:
                with warnings.catch_warnings():  # peft asks transformers a deprecated question
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    self._peft = PeftModel.from_pretrained(model, str(self.adapter.path), is_trainable=False)
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                _drop_lora(model)
                raise ModelLoadError(f"cannot load adapter {self.adapter.path}: {str(e).splitlines()[0]}") from None
            model.eval()
        self.llm.reset_cache()  # cached keys/values were computed with other weights

    def off(self) -> None:
        if self.user is None or self.user == self.adapter.meta.user:
            self._wanted = False
        self._detach()

    def _detach(self) -> None:
        if self._peft is None:
            return
        with self.llm.lock:
            self._peft.unload()
            _forget_peft(self.llm.model)
            self._peft = None
        self.llm.reset_cache()


def attach(llm, adapter: Adapter) -> AdapterHandle:
    """Attach ``adapter`` to ``llm`` (a CausalLM) now; returns the handle that detaches it."""
    handle = AdapterHandle(adapter, llm)
    handle.on()
    return handle


def _forget_peft(model) -> None:
    """Remove the bookkeeping attribute peft leaves on the model after unload()."""
    if "peft_config" in vars(model):
        del model.peft_config


def _drop_lora(model) -> None:
    """Undo a half-finished injection (peft failed after swapping some layers in)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and hasattr(module, "base_layer"):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    _forget_peft(model)
