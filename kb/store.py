"""KnowledgeBase: the facade over one KB directory (fact log, vector index, manifest) and the parts that own them."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from kb import manifest as manifest_mod
from kb.config import AddResult, KBConfig, NewEpisode, NewFact
from kb.embeddings import Embedder, EmbedderConfig, SentenceTransformerEmbedder
from kb.episodes import EpisodeStore
from kb.errors import KBError
from kb.exporter import Exporter
from kb.facts import Episode, Fact, Hit, Kind, Role, clean_user, iso, to_timestamp
from kb.forgetting import Forgetter
from kb.graph import FactGraph
from kb.importer import ImportResult, import_jsonl
from kb.lock import WriterLock
from kb.log import FactLog, Scope, now
from kb.maintenance import IndexKeeper, VerifyReport
from kb.opening import open_directory
from kb.search import HybridSearcher, check_search_args, mentioned_entities
from kb.views import EntityProfile, HistoryEvent, KBStats, Views
from kb.vocabulary import Vocabulary
from kb.writer import FactWriter


class KnowledgeBase:
    """A growing, user-scoped store of facts and episodes; use ``KnowledgeBase.open(path)``.

    Every method takes the KB's lock and hands the work to the part that owns it: the fact log
    (``kb.log``, all SQL), the vocabulary (aliases, single-valued relations), the fact writer, the
    episode store, the forgetter, the read-only views, the index keeper, hybrid search and transfer.
    """

    def __init__(self, path: Path, db: FactLog, manifest: manifest_mod.Manifest, config: KBConfig,
                 embedder: Embedder | None, read_only: bool, lock: WriterLock | None):
        self.path = path
        self.config = config
        self.read_only = read_only
        self.manifest = manifest
        self._log = db
        self._lock = lock
        self._mutex = threading.RLock()
        self._embedder = embedder
        self._closed = False
        self._vocab = Vocabulary(db)
        self._keeper = IndexKeeper(path, db, manifest.embedder_dim, config)
        self._search = HybridSearcher(db, self._keeper, config.rrf_k)
        self._writer = FactWriter(db, self._vocab, self._keeper, config, self._get_embedder, self._dim)
        self._episodes = EpisodeStore(db, self._keeper, self._get_embedder, self._dim)
        self._forgetter = Forgetter(db, self._vocab, self._keeper)
        self._views = Views(db, self._vocab)
        self._exporter = Exporter(db, self._keeper.storage_order)

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(cls, path: str | Path, *, embedder: Embedder | None = None, config: KBConfig | None = None,
             read_only: bool = False, create: bool = True,
             allow_embedder_change: bool = False) -> "KnowledgeBase":
        """Open (or create) the KB in directory ``path``; upgrades an older format (with a message on
        stderr) and verifies and repairs the index on the way.

        ``allow_embedder_change`` skips the check that ``embedder`` matches the manifest; use it
        only to re-embed everything with ``rebuild(reembed=True)`` (``kgrow kb rebuild --reembed``).
        """
        path = Path(path).expanduser()
        got = open_directory(path, embedder, read_only, create, allow_embedder_change)
        try:
            return cls(path, got.log, got.manifest, config or KBConfig(), got.embedder, read_only, got.lock)
        except BaseException:
            got.release()
            raise

    def close(self) -> None:
        """Save the index and manifest (errors propagate: a failed save is never swallowed)."""
        with self._mutex:
            if self._closed:
                return
            try:
                if not self.read_only:
                    self._keeper.save()
                    self.manifest = replace(self.manifest, updated=iso(now()), written_by=manifest_mod.software())
                    manifest_mod.save(self.path, self.manifest)
            finally:
                self._closed = True
                self._log.close()
                if self._lock is not None:
                    self._lock.release()

    def __enter__(self) -> "KnowledgeBase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def open_report(self) -> list[str]:
        """What opening had to do to the index (empty when it was consistent)."""
        return list(self._keeper.report)

    @property
    def embedder(self) -> Embedder:
        """The embedder; loaded on first use from the manifest's id when none was given."""
        if self._embedder is None:
            emb = SentenceTransformerEmbedder(EmbedderConfig(model=self.manifest.embedder_id))
            manifest_mod.check_embedder(self.manifest, emb, self.path)
            self._embedder = emb
        return self._embedder

    def _get_embedder(self) -> Embedder:  # handed to the parts that embed: loads the model on first use
        return self.embedder

    def _dim(self) -> int:  # the manifest changes on rebuild(reembed=True)
        return self.manifest.embedder_dim

    def _writable(self) -> None:
        if self._closed:
            raise KBError(f"knowledge base {self.path} is closed")
        if self.read_only:
            raise KBError(f"knowledge base {self.path} was opened read-only; open it without read_only to write")

    # ------------------------------------------------------------------ vocabulary and entities

    def declare_relation(self, relation: str, single_valued: bool = True) -> None:
        """Mark a relation single-valued (a new object supersedes the old) or multi-valued."""
        with self._mutex:
            self._writable()
            self._vocab.declare_relation(relation, single_valued)

    def add_alias(self, alias: str, canonical: str) -> None:
        """Make ``alias`` name the same entity as ``canonical`` in new facts and queries."""
        with self._mutex:
            self._writable()
            self._vocab.add_alias(alias, canonical)

    def single_valued(self, relation: str) -> bool:
        with self._mutex:
            return self._vocab.single_valued(relation)

    def resolve(self, name: str) -> str:
        """Normalised, alias-resolved entity name."""
        with self._mutex:
            return self._vocab.resolve(name)

    def entity_display(self, name: str) -> str | None:
        """How an entity (normalised name, e.g. from ``resolve``) was first written, e.g. 'New York City';
        None when the KB does not know it."""
        with self._mutex:
            return self._log.entity_display(name)

    def known_entities(self, names: Sequence[str]) -> list[str]:
        """The names among ``names`` (normalised) that are entities of some fact, in the KB's order."""
        with self._mutex:
            return self._log.known_entities(list(names))

    # ------------------------------------------------------------------ writing

    @contextmanager
    def batch(self) -> Iterator[None]:
        """``with kb.batch():`` every write inside is one transaction: all of it is stored or, if the
        block raises, none of it (the vector index included). A write that raises inside is undone
        alone (a savepoint), so the block may catch it and go on. Other threads' writes wait."""
        with self._mutex:
            self._writable()
            with self._keeper.deferred(), self._log.transaction():
                yield

    def add_fact(self, subject: str, relation: str, object: str, *, text: str | None = None,
                 user: str | None = None, shared: bool = False, source_id: str | None = None,
                 episode_id: str | None = None, time: object = None, valid_from: object = None,
                 confidence: float = 1.0, note: str | None = None) -> AddResult:
        """Add one fact (see ``NewFact`` for the fields); returns what happened to it."""
        return self.add_facts([NewFact(subject, relation, object, text, user, shared, source_id, episode_id,
                                       time, valid_from, confidence, note)])[0]

    def add_facts(self, items: Sequence[NewFact], vectors: np.ndarray | None = None) -> list[AddResult]:
        """Add facts in one transaction with one batched embedding pass; all or nothing.

        ``vectors`` (len(items), dim) may carry precomputed embeddings of the texts.
        """
        with self._mutex:
            self._writable()
            return self._writer.add_facts(items, vectors)

    def add_episode(self, text: str, *, user: str, speaker: str = "user", source_id: str | None = None,
                    time: object = None, vector: np.ndarray | None = None, session: str | None = None,
                    position: int | None = None, role: str | Role = Role.USER) -> Episode:
        """Store a raw utterance (deduplicated by content, speaker, user, source and time).

        ``vector`` (dim,) may carry the text's embedding when the caller already computed it.
        """
        item = NewEpisode(text, user, speaker, Role.parse(role).value, session, position, time, source_id)
        return self.add_episodes([item], None if vector is None else np.asarray(vector)[None, :])[0]

    def add_episodes(self, items: Sequence[NewEpisode], vectors: np.ndarray | None = None) -> list[Episode]:
        """Store utterances in one transaction with one batched embedding pass; all or nothing.

        An episode whose id (a hash of user, speaker, source, time and text) is stored already is
        returned as stored and not embedded again. ``vectors`` (len(items), dim) may carry embeddings.
        """
        with self._mutex:
            self._writable()
            return self._episodes.add(items, vectors)

    def episode_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim): the vectors ``add_episodes`` would compute for these texts, in one pass;
        a bulk import embeds many sessions at once with it and passes each session its rows."""
        return self._episodes.vectors(texts)

    def ensure_user(self, user: str) -> str:
        """Register a user (idempotent) so that searches scoped to them are valid before they say anything."""
        with self._mutex:
            self._writable()
            who = clean_user(user)
            with self._log.transaction():
                self._log.add_user(who, now())
            return who

    def forget(self, fact_id: str | None = None, *, entity: str | None = None, user: str | None = None) -> list[str]:
        """Forget one fact, every fact about an entity (optionally of one user), or a whole user.

        Forgotten facts leave every search and listing at once; their rows stay in the log with
        status ``forgotten`` and a history entry. Returns the ids forgotten.
        """
        with self._mutex:
            self._writable()
            return self._forgetter.forget(fact_id, entity, user)

    def retract(self, fact_id: str, *, at: object = None, reason: str | None = None) -> Fact:
        """End a current fact's validity without a replacement ("I no longer work at Acme").

        The fact becomes ``superseded`` with ``valid_to`` = ``at`` (default now) and stays in history.
        """
        with self._mutex:
            self._writable()
            self._forgetter.retract(fact_id, at, reason)
            return self.fact(fact_id)

    def set_confidence(self, fact_id: str, confidence: float, reason: str | None = None) -> Fact:
        """Change a fact's confidence (kept in its history with the reason)."""
        with self._mutex:
            self._writable()
            self.fact(fact_id)
            self._writer.set_confidence(fact_id, confidence, reason)
            return self.fact(fact_id)

    # ------------------------------------------------------------------ reading

    def fact(self, fact_id: str) -> Fact:
        with self._mutex:
            return self._views.fact(fact_id)

    def episode(self, episode_id: str) -> Episode:
        with self._mutex:
            return self._episodes.get(episode_id)

    def users(self) -> list[str]:
        with self._mutex:
            return self._log.users()

    def facts(self, *, user: str | None = None, entity: str | None = None, relation: str | None = None,
              history: bool = False, as_of: object = None, limit: int | None = None) -> list[Fact]:
        """List facts, current only unless ``history`` (then superseded ones too), oldest first."""
        with self._mutex:
            return self._views.facts(user, entity, relation, history, as_of, limit)

    def about(self, entity: str, *, user: str | None = None, limit: int = 20) -> list[Fact]:
        """Current facts with ``entity`` as subject, newest first, then as object; cheap for hub entities.

        Both sides walk an index in reverse insertion order and stop at ``limit``, so an entity on
        100k facts costs no more than one on ten.
        """
        with self._mutex:
            return self._views.about(entity, user, limit)

    def history(self, fact_id: str) -> tuple[list[Fact], list[HistoryEvent]]:
        """Every version of this fact's slot (same user, subject, relation) and the events on them."""
        with self._mutex:
            return self._views.history(fact_id)

    def facts_from_episodes(self, episode_ids: Sequence[str]) -> dict[str, list[Fact]]:
        """The facts learned from each episode, current, past and forgotten: recall uses it so that an
        utterance whose facts were superseded cannot outrank what superseded them, and one whose facts
        the user had forgotten is not recalled at all."""
        with self._mutex:
            return self._views.facts_from_episodes(episode_ids)

    def session_episodes(self, user: str, session: str, start: int = 0, stop: int | None = None) -> list[Episode]:
        """The active episodes of one of ``user``'s sessions with ``start <= position < stop``, in order."""
        with self._mutex:
            return self._episodes.session(user, session, start, stop)

    def episodes(self, *, user: str | None = None, session: str | None = None, limit: int | None = None) -> list[Episode]:
        """Active episodes (of ``user``; of one ``session``), oldest first."""
        with self._mutex:
            return self._episodes.listing(user, session, limit)

    def search(self, query: str, k: int = 10, *, user: str | None = None, kinds: Sequence[Kind | str] = (Kind.FACT, Kind.EPISODE),
               as_of: object = None, query_vector: np.ndarray | None = None) -> list[Hit]:
        """Hybrid search scoped to ``user`` (plus shared facts); ``user=None`` searches every user."""
        q, kinds_t = check_search_args(query, k, kinds)
        with self._mutex:
            who = self._log.known_user(user) if user is not None else None
            scope = Scope(who, to_timestamp(as_of, "as_of") if as_of is not None else None)
            if self.read_only:
                self._keeper.catch_up()
            qv = query_vector if query_vector is not None else self.embedder.embed_query(q)
            ents = mentioned_entities(self._log, self._vocab.aliases, q)
            return self._search.search(q, np.asarray(qv, dtype=np.float32), k, scope, kinds_t, ents)

    def stats(self) -> KBStats:
        with self._mutex:
            return self._views.stats(self.path, self.manifest, self._keeper)

    def entity(self, name: str, user: str | None = None) -> EntityProfile:
        with self._mutex:
            return self._views.entity(name, user)

    def graph(self, user: str | None = None) -> FactGraph:
        """The networkx fact graph (current facts) of one user plus shared facts, or of everyone."""
        with self._mutex:
            return self._views.graph(user)

    # ------------------------------------------------------------------ maintenance and transfer

    def save(self) -> None:
        """Persist the vector index now (the log is always durable already)."""
        with self._mutex:
            self._writable()
            self._keeper.save()

    def verify(self) -> VerifyReport:
        """Check log, index and manifest against each other."""
        with self._mutex:
            return self._keeper.verify()

    def rebuild(self, reembed: bool = False, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild the vector index from the log (re-embedding every text if ``reembed``)."""
        with self._mutex:
            self._writable()
            if reembed:
                self._keeper.reembed(self.embedder)
                self.manifest = replace(self.manifest, embedder_id=self.embedder.id, embedder_dim=self.embedder.dim)
                manifest_mod.save(self.path, self.manifest)
            return self._keeper.rebuild()

    def export(self, path: str | Path, fmt: str = "jsonl", *, user: str | None = None, vectors: bool = False) -> int:
        """Write the KB (or one user plus shared facts) to ``path``: jsonl (complete, re-importable),
        graphml, nodelink or csv; returns the number of records written."""
        with self._mutex:
            return self._exporter.export(Path(path), fmt, user, vectors, self.manifest)

    def import_(self, path: str | Path) -> ImportResult:
        """Add a JSONL export: every line is validated first, then written in one transaction, or nothing."""
        with self._mutex:
            self._writable()
            return import_jsonl(self._log, self._keeper, self.manifest, self._get_embedder, Path(path))
