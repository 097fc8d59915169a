"""Opening the knowledge base for one `kgrow kb` command: its directory, its embedder and read/write mode."""
from __future__ import annotations

import argparse
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agent.cli.errors import UsageError
from agent.cli.output import Output
from agent.paths import default_kb_dir


def kb_path(args: argparse.Namespace) -> Path:
    """``--kb DIR``, else ``$KGROW_HOME/kb``, else the platform data directory's ``kb``."""
    return Path(args.kb).expanduser() if args.kb else default_kb_dir()


@contextmanager
def open_kb(args: argparse.Namespace, *, write: bool = False, create: bool = False, embeds: bool = False,
            reembed: bool = False) -> Iterator:
    """Open the KB for one command and close it afterwards (saving the index if writable).

    ``embeds``: the command embeds text, so resolve ``--embedder`` (loading a model can be slow,
    so other commands leave it to the KB). ``reembed``: skip the embedder check (rebuild --reembed).
    """
    from kb import KBConfig, KnowledgeBase, NotFoundError

    if write and args.read_only:
        raise UsageError(f"`kgrow kb {args.kb_command}` writes to the knowledge base; drop --read-only")
    path = kb_path(args)
    embedder = resolve_embedder(args.embedder, path) if embeds else None
    progress = isatty(sys.stderr)
    try:
        kb = KnowledgeBase.open(path, embedder=embedder, config=KBConfig(show_progress=progress),
                                read_only=args.read_only or not write, create=create,
                                allow_embedder_change=reembed)
    except NotFoundError as e:
        if (path / "manifest.json").exists():
            raise
        raise NotFoundError(f"{e}; create one with `kgrow kb add ...` or `kgrow kb import FILE`, or point "
                            "--kb DIR or KGROW_HOME at an existing one") from None
    if not progress:  # with progress on, the KB already printed these lines itself
        for line in kb.open_report:
            Output.note(line)
    try:
        yield kb
    finally:
        kb.close()


def isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def resolve_embedder(spec: str | None, kb_dir: Path):
    """The embedder named by ``--embedder``; None leaves it to the KB (manifest's, or MiniLM when new).

    With no ``--embedder``, a KB built by the hash test embedder gets it back (it cannot be loaded
    by name like a sentence-transformers model).
    """
    from kb import EmbedderConfig, HashEmbedder, SentenceTransformerEmbedder

    if spec is None:
        try:
            man = json.loads((kb_dir / "manifest.json").read_text(encoding="utf-8"))
            m = re.fullmatch(r"hash-embedder-(\d+)", str(man["embedder"]["id"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return HashEmbedder(int(m.group(1))) if m else None
    name = spec.strip()
    m = re.fullmatch(r"hash(?::(\d+))?", name)
    if m:
        return HashEmbedder(int(m.group(1) or 64))
    if name.lower() in ("minilm", "default", "packaged"):
        return SentenceTransformerEmbedder()
    return SentenceTransformerEmbedder(EmbedderConfig(model=name))
