"""The versioned ``manifest.json`` of a KB directory, with numbered, append-only upgrade steps.

As for the SQLite schema (kb.log.migrations), step N takes format N-1 to N and never changes once
shipped. ``load`` upgrades an older manifest in memory; the writer saves it (atomically) after the
database upgrade has committed, so a crash in between only repeats the upgrade on the next open.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from kb.errors import IncompatibleKBError
from kb.files import write_json_atomic

if TYPE_CHECKING:
    from kb.embeddings import Embedder

#: format of the directory layout this software writes
FORMAT_VERSION = 3
MANIFEST = "manifest.json"


def software() -> str:
    """This kgrow's name and version, as recorded in ``written_by``."""
    try:
        return f"kgrow {metadata.version('kgrow')}"
    except metadata.PackageNotFoundError:
        return "kgrow (source checkout)"


def _v2_written_by(raw: dict) -> dict:
    """Format 2 records which kgrow last wrote the directory, so a too-new KB can say what to install."""
    return {**raw, "written_by": "kgrow (format 1)", "format_version": 2}


def _v3_index_per_kind(raw: dict) -> dict:
    """Format 3 keeps one vector index file per kind (kb.maintenance.INDEX_FILES) instead of one
    ``index.faiss`` for facts and episodes; the index keeper splits the old file when it finds it.
    The manifest's fields are unchanged: the version says which layout the directory has."""
    return {**raw, "format_version": 3}


#: STEPS[n] turns a format n+1 manifest dict into format n+2 (format 1 is the first released)
STEPS: tuple[Callable[[dict], dict], ...] = (_v2_written_by, _v3_index_per_kind)


@dataclass(frozen=True)
class Manifest:
    """What a KB directory declares about itself."""

    format_version: int
    embedder_id: str  # id of the embedder that produced every stored vector
    embedder_dim: int  # their dimension
    created: str  # ISO-8601 UTC
    updated: str  # ISO-8601 UTC
    written_by: str  # the kgrow that last wrote the directory, e.g. "kgrow 0.1.0"

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
                written_by=str(d["written_by"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise IncompatibleKBError(f"{path} is not a valid kgrow manifest (missing or bad {e})") from None


@dataclass(frozen=True)
class Loaded:
    """A manifest as read: ``upgraded_from`` is the format it had on disk when older than this code's."""

    manifest: Manifest
    upgraded_from: int | None


def load(directory: Path) -> Loaded | None:
    """Read the manifest, upgrading an older format in memory; None if the directory has none."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IncompatibleKBError(f"cannot read {path}: {e}") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise IncompatibleKBError(f"{path} has no positive integer format_version; is this a kgrow knowledge base?")
    if version > FORMAT_VERSION:
        by = f" (written by {raw['written_by']})" if isinstance(raw.get("written_by"), str) else ""
        raise IncompatibleKBError(
            f"{directory} uses format version {version}{by}, newer than this kgrow supports "
            f"(<= {FORMAT_VERSION}); upgrade kgrow to open it"
        )
    assert len(STEPS) == FORMAT_VERSION - 1, "one step per format after the first"
    for n in range(version, FORMAT_VERSION):
        raw = STEPS[n - 1](raw)
    return Loaded(Manifest.from_dict(raw, path), version if version < FORMAT_VERSION else None)


def save(directory: Path, manifest: Manifest) -> None:
    write_json_atomic(directory / MANIFEST, manifest.to_dict())


def report_upgrade(directory: Path, old: int) -> None:
    print(f"kgrow: upgraded the knowledge base manifest of {directory} from format {old} to {FORMAT_VERSION}",
          file=sys.stderr)


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
