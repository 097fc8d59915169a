"""The versioned ``manifest.json`` of a KB directory, and the upgrade path for older formats."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from kb.errors import IncompatibleKBError
from kb.index import write_json_atomic

if TYPE_CHECKING:
    from kb.embeddings import Embedder

#: format of the directory layout this software writes
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# Upgrade functions: UPGRADES[v] turns a version-v directory into version v+1 in place and
# returns the new manifest dict. Version 1 is the first released format, so none exist yet;
# when version 2 arrives, its upgrade from 1 is added here and run by ``load``.
UPGRADES: dict[int, Callable[[Path, dict], dict]] = {}


@dataclass(frozen=True)
class Manifest:
    """What a KB directory declares about itself."""

    format_version: int
    embedder_id: str  # id of the embedder that produced every stored vector
    embedder_dim: int  # their dimension
    created: str  # ISO-8601 UTC
    updated: str  # ISO-8601 UTC

    def to_dict(self) -> dict:
        d = asdict(self)
        d["embedder"] = {"id": d.pop("embedder_id"), "dim": d.pop("embedder_dim")}
        return d

    @classmethod
    def from_dict(cls, d: dict, path: Path) -> "Manifest":
        try:
            return cls(
                format_version=int(d["format_version"]),
                embedder_id=str(d["embedder"]["id"]),
                embedder_dim=int(d["embedder"]["dim"]),
                created=str(d["created"]),
                updated=str(d["updated"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise IncompatibleKBError(f"{path} is not a valid kgrow manifest (missing or bad {e})") from None


def load(directory: Path) -> Manifest | None:
    """Read the manifest, upgrading older formats in place; None if the directory has none."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IncompatibleKBError(f"cannot read {path}: {e}") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if not isinstance(version, int):
        raise IncompatibleKBError(f"{path} has no integer format_version; is this a kgrow knowledge base?")
    if version > FORMAT_VERSION:
        raise IncompatibleKBError(
            f"{directory} uses format version {version}, newer than this kgrow supports "
            f"(<= {FORMAT_VERSION}); upgrade kgrow to open it"
        )
    while version < FORMAT_VERSION:
        step = UPGRADES.get(version)
        if step is None:
            raise IncompatibleKBError(
                f"{directory} uses format version {version}; no upgrade path to {FORMAT_VERSION} exists"
            )
        raw = step(directory, raw)
        version = raw["format_version"]
        write_json_atomic(path, raw)
    return Manifest.from_dict(raw, path)


def save(directory: Path, manifest: Manifest) -> None:
    write_json_atomic(directory / MANIFEST, manifest.to_dict())


def check_embedder(man: Manifest, emb: "Embedder", path: Path) -> None:
    """Refuse an embedder whose vectors are not comparable with the ones this KB stores."""
    if emb.dim != man.embedder_dim:
        raise IncompatibleKBError(
            f"embedder {emb.id!r} has dimension {emb.dim}, but {path} was built with {man.embedder_id!r} "
            f"of dimension {man.embedder_dim}; use that embedder, or re-embed with `kgrow kb rebuild --reembed`")
    if emb.id != man.embedder_id:
        raise IncompatibleKBError(
            f"embedder {emb.id!r} differs from {man.embedder_id!r} that built {path}; their vectors are not "
            "comparable. Use the original embedder, or re-embed with `kgrow kb rebuild --reembed`")
