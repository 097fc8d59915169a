"""kgrow's knowledge base: facts, episodes, hybrid search and a fact graph over one durable log.

Public: this package (``KnowledgeBase`` and the records below), ``kb.errors``, ``kb.facts``,
``kb.embeddings`` and ``kb.files``. Every other module is internal (the agent may not import it:
``lint-imports``, contracts in pyproject.toml); ``KnowledgeBase`` (kb.store) is a facade over
parts that own their state, and all SQL lives in ``kb.log``.
"""
from kb.config import AddResult, KBConfig, NewEpisode, NewFact
from kb.embeddings import Embedder, EmbedderConfig, HashEmbedder, Runtime, SentenceTransformerEmbedder
from kb.errors import (ImportFormatError, IncompatibleKBError, IntegrityError, InvalidInputError, KBError,
                       KBLockedError, NotFoundError)
from kb.facts import SHARED, Episode, Fact, Hit, Kind, Role, Source, Status
from kb.index import IndexConfig, IndexKind
from kb.store import KnowledgeBase
from kb.views import HistoryEvent

__all__ = [
    "AddResult", "Embedder", "EmbedderConfig", "Episode", "Fact", "HashEmbedder", "Hit", "HistoryEvent",
    "ImportFormatError", "IncompatibleKBError", "IndexConfig", "IndexKind", "IntegrityError",
    "InvalidInputError", "KBConfig", "KBError", "KBLockedError", "Kind", "KnowledgeBase", "NewFact",
    "NewEpisode", "NotFoundError", "Role", "Runtime", "SHARED", "SentenceTransformerEmbedder", "Source", "Status",
]
