"""KnowledgeBase: one directory holding the fact log, the vector index and the manifest."""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kb import manifest as manifest_mod
from kb.config import EMBED_CHARS, AddResult, KBConfig, NewEpisode, NewFact
from kb.embeddings import Embedder, EmbedderConfig, SentenceTransformerEmbedder
from kb.errors import IncompatibleKBError, InvalidInputError, KBError, NotFoundError
from kb.facts import (Episode, Fact, Hit, Kind, Role, Status, clean_confidence, clean_text,
                      clean_user, episode_id, iso, normalize_name,
                      normalize_relation, to_timestamp)
from kb.forgetting import forget_facts
from kb.lock import WriterLock
from kb.log import FactLog, now
from kb.maintenance import IndexKeeper
from kb.writer import key_active, prepare, write_one
from kb.schema import DEFAULT_ALIASES, DEFAULT_SINGLE_VALUED
from kb.search import HybridSearcher, Scope, mentioned_entities
from kb.views import HistoryEvent

log = logging.getLogger("kgrow.kb")
DB_FILE = "kb.sqlite"
_DIGITS = re.compile(r"\d+")


class KnowledgeBase:
    """A growing, user-scoped store of facts and episodes; use ``KnowledgeBase.open(path)``."""

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
        self._aliases = db.aliases()
        self._single = {r for r, s in db.relations().items() if s}
        self._keeper = IndexKeeper(path, db, manifest.embedder_dim, config)
        self._search = HybridSearcher(db, self._keeper, config.rrf_k)
        self._graph_cache = None
        self._closed = False

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(cls, path: str | Path, *, embedder: Embedder | None = None, config: KBConfig | None = None,
             read_only: bool = False, create: bool = True,
             allow_embedder_change: bool = False) -> "KnowledgeBase":
        """Open (or create) the KB in directory ``path``; verifies and repairs the index on the way.

        ``allow_embedder_change`` skips the check that ``embedder`` matches the manifest; use it
        only to re-embed everything with ``rebuild(reembed=True)`` (``kgrow kb rebuild --reembed``).
        """
        config = config or KBConfig()
        path = Path(path).expanduser()
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"{path} is a file; a knowledge base is a directory")
        if not path.exists():
            if read_only or not create:
                raise NotFoundError(f"no knowledge base at {path}")
            path.mkdir(parents=True)
        man = manifest_mod.load(path)
        if man is None and (read_only or not create):
            raise NotFoundError(f"{path} is not a kgrow knowledge base (no manifest.json)")
        if man is None and any(p.name not in ("writer.lock",) for p in path.iterdir()):
            raise IncompatibleKBError(f"{path} is not empty and has no manifest.json; refusing to use it as a KB")
        lock = None
        if not read_only:
            lock = WriterLock(path)
            lock.acquire()
        try:
            if man is None:
                embedder = embedder or SentenceTransformerEmbedder()
                stamp = iso(now())
                man = manifest_mod.Manifest(manifest_mod.FORMAT_VERSION, embedder.id, embedder.dim, stamp, stamp)
            elif embedder is not None and not allow_embedder_change:
                manifest_mod.check_embedder(man, embedder, path)
            db = FactLog(path / DB_FILE, read_only=read_only)
            if not read_only and manifest_mod.load(path) is None:
                db.begin()
                for r in DEFAULT_SINGLE_VALUED:
                    db.set_relation(r, True)
                for a, c in DEFAULT_ALIASES.items():
                    db.set_alias(a, c)
                db.commit()
                manifest_mod.save(path, man)
            kb = cls(path, db, man, config, embedder, read_only, lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return kb

    def close(self) -> None:
        """Save the index and manifest (errors propagate: a failed save is never swallowed)."""
        with self._mutex:
            if self._closed:
                return
            try:
                if not self.read_only:
                    self._keeper.save()
                    self.manifest = replace(self.manifest, updated=iso(now()))
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

    def _writable(self) -> None:
        if self._closed:
            raise KBError(f"knowledge base {self.path} is closed")
        if self.read_only:
            raise KBError(f"knowledge base {self.path} was opened read-only; open it without read_only to write")

    # ------------------------------------------------------------------ schema

    def declare_relation(self, relation: str, single_valued: bool = True) -> None:
        """Mark a relation single-valued (a new object supersedes the old) or multi-valued."""
        with self._mutex:
            self._writable()
            name = normalize_relation(clean_text(relation, "relation"))
            self._log.begin()
            self._log.set_relation(name, single_valued)
            self._log.commit()
            self._single = {r for r, s in self._log.relations().items() if s}

    def add_alias(self, alias: str, canonical: str) -> None:
        """Make ``alias`` name the same entity as ``canonical`` in new facts and queries."""
        with self._mutex:
            self._writable()
            a, c = normalize_name(clean_text(alias, "alias")), normalize_name(clean_text(canonical, "canonical"))
            if a == c:
                raise InvalidInputError(f"alias {alias!r} is the same as its canonical name")
            self._log.begin()
            self._log.set_alias(a, self._aliases.get(c, c))
            self._log.commit()
            self._aliases = self._log.aliases()

    def single_valued(self, relation: str) -> bool:
        return normalize_relation(relation) in self._single

    def resolve(self, name: str) -> str:
        """Normalised, alias-resolved entity name."""
        n = normalize_name(name)
        return self._aliases.get(n, n)

    # ------------------------------------------------------------------ writing facts

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
            preps = [prepare(self, it, i if len(items) > 1 else None) for i, it in enumerate(items)]
            if vectors is not None and np.shape(vectors) != (len(items), self.manifest.embedder_dim):
                raise InvalidInputError(
                    f"vectors have shape {np.shape(vectors)}; expected ({len(items)}, {self.manifest.embedder_dim})")
            # hash before embedding: texts whose content key is already current need no vector
            todo = sorted({p.text for p in preps if not key_active(self._log, p.key)})
            text_vec: dict[str, np.ndarray] = {}
            if vectors is not None:
                text_vec = {p.text: np.asarray(vectors[i], dtype=np.float32) for i, p in enumerate(preps)}
            elif todo:
                text_vec = dict(zip(todo, self.embedder.embed_documents(todo)))
            results: list[AddResult] = []
            new_vecs: list[tuple[int, np.ndarray]] = []
            t = now()
            self._log.begin()
            try:
                for p in preps:
                    results.append(write_one(self, p, text_vec, new_vecs, t))
                self._log.commit()
            except BaseException:
                self._log.rollback()
                raise
            self._after_write(new_vecs)
            return [replace(r, fact=self._log.fact(r.fact.id) or r.fact) for r in results]

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
            eps = [self._episode_record(it, i if len(items) > 1 else None) for i, it in enumerate(items)]
            if vectors is not None and np.shape(vectors) != (len(items), self.manifest.embedder_dim):
                raise InvalidInputError(
                    f"episode vectors have shape {np.shape(vectors)}; expected ({len(items)}, {self.manifest.embedder_dim})")
            stored = {e.id: ex for e in eps if (ex := self._log.episode(e.id)) is not None}
            first: dict[str, int] = {}  # the same utterance twice in one batch is stored once
            for i, e in enumerate(eps):
                if e.id not in stored:
                    first.setdefault(e.id, i)
            todo = list(first.values())
            if vectors is not None:
                vecs = np.asarray(vectors, dtype=np.float32)[todo]
            elif todo:
                vecs = self.embedder.embed_documents([eps[i].text[:EMBED_CHARS] for i in todo])
            else:
                vecs = np.zeros((0, self.manifest.embedder_dim), dtype=np.float32)
            new_vecs: list[tuple[int, np.ndarray]] = []
            self._log.begin()
            try:
                for i, vec in zip(todo, vecs):
                    new_vecs.append((2 * self._log.insert_episode(eps[i], vec) + 1, vec))
                for who in sorted({e.user for e in eps}):
                    self._log.add_user(who, now())
                self._log.commit()
            except BaseException:
                self._log.rollback()
                raise
            self._after_write(new_vecs)
            return [stored.get(e.id, e) for e in eps]

    @staticmethod
    def _episode_record(it: NewEpisode, index: int | None) -> Episode:
        at = f" (item {index})" if index is not None else ""
        body = clean_text(it.text, f"episode text{at}")
        who = clean_user(it.user)
        spk = clean_text(it.speaker, f"speaker{at}")
        sid = clean_text(it.source_id, f"source_id{at}") if it.source_id is not None else None
        session = clean_text(it.session, f"session{at}") if it.session is not None else None
        if it.position is not None and (not isinstance(it.position, int) or isinstance(it.position, bool)
                                        or it.position < 0):
            raise InvalidInputError(f"position={it.position!r}{at} is invalid; give an integer >= 0 or None")
        t = to_timestamp(it.time, f"time{at}") if it.time is not None else now()
        return Episode(episode_id(who, spk, sid, t, body), spk, body, who, sid, t, session, it.position,
                       Role.parse(it.role).value)

    def facts_from_episodes(self, episode_ids: Sequence[str]) -> dict[str, list[Fact]]:
        """The facts learned from each episode, current and past (forgotten ones left out): recall uses
        it so that an utterance whose facts were superseded cannot outrank what superseded them."""
        with self._mutex:
            ids = list(dict.fromkeys(episode_ids))
            out: dict[str, list[Fact]] = {e: [] for e in ids}
            if not ids:
                return out
            q = ",".join("?" * len(ids))
            facts = self._log.facts_where(
                f"status!='forgotten' AND id IN (SELECT fact_id FROM sources WHERE episode_id IN ({q}))", ids)
            for f in facts:
                for e in {s.episode_id for s in f.sources if s.episode_id in out}:
                    out[e].append(f)
            return out

    def session_episodes(self, user: str, session: str, start: int = 0, stop: int | None = None) -> list[Episode]:
        """The active episodes of one of ``user``'s sessions with ``start <= position < stop``, in order."""
        with self._mutex:
            who = self._known_user(user)
            where, params = "user=? AND session=? AND status='active' AND position>=?", [who, session, start]
            if stop is not None:
                where += " AND position<?"
                params.append(stop)
            return self._log.episodes_where(where, params, order="position")

    def episodes(self, *, user: str | None = None, session: str | None = None, limit: int | None = None) -> list[Episode]:
        """Active episodes (of ``user``; of one ``session``), oldest first."""
        with self._mutex:
            where, params = ["status='active'"], []
            if user is not None:
                where.append("user=?")
                params.append(self._known_user(user))
            if session is not None:
                where.append("session=?")
                params.append(session)
            return self._log.episodes_where(" AND ".join(where), params, order="time, vid", limit=limit)

    def _after_write(self, new_vecs: list[tuple[int, np.ndarray]]) -> None:
        self._graph_cache = None
        self._keeper.add(new_vecs)

    # ------------------------------------------------------------------ changing facts

    def forget(self, fact_id: str | None = None, *, entity: str | None = None, user: str | None = None) -> list[str]:
        """Forget one fact, every fact about an entity (optionally of one user), or a whole user.

        Forgotten facts leave every search and listing at once; their rows stay in the log with
        status ``forgotten`` and a history entry. Returns the ids forgotten.
        """
        with self._mutex:
            self._writable()
            return forget_facts(self, fact_id, entity, user)

    def retract(self, fact_id: str, *, at: object = None, reason: str | None = None) -> Fact:
        """End a current fact's validity without a replacement ("I no longer work at Acme").

        The fact becomes ``superseded`` with ``valid_to`` = ``at`` (default now) and stays in history.
        """
        with self._mutex:
            self._writable()
            old = self.fact(fact_id)
            if old.status is not Status.ACTIVE:
                raise InvalidInputError(f"fact {fact_id!r} is {old.status.value}, not active; only current facts can be retracted")
            t = to_timestamp(at, "at") if at is not None else now()
            if t < old.valid_from:
                raise InvalidInputError(f"retraction time {iso(t)} is before the fact became true ({iso(old.valid_from)})")
            self._log.begin()
            try:
                self._log.db.execute("UPDATE facts SET status='superseded', valid_to=? WHERE id=?", (t, fact_id))
                self._log.add_history(fact_id, "retracted", reason, now())
                self._log.commit()
            except BaseException:
                self._log.rollback()
                raise
            self._graph_cache = None
            return self.fact(fact_id)

    def set_confidence(self, fact_id: str, confidence: float, reason: str | None = None) -> Fact:
        """Change a fact's confidence (kept in its history with the reason)."""
        with self._mutex:
            self._writable()
            old = self.fact(fact_id)
            c = clean_confidence(confidence)
            self._log.begin()
            self._log.set_confidence(fact_id, c)
            self._log.add_history(fact_id, "confidence", f"{old.confidence:.3f} -> {c:.3f}" + (f": {reason}" if reason else ""), now())
            self._log.commit()
            return self.fact(fact_id)

    # ------------------------------------------------------------------ reading

    def fact(self, fact_id: str) -> Fact:
        f = self._log.fact(fact_id) if isinstance(fact_id, str) else None
        if f is None:
            raise NotFoundError(f"no fact with id {fact_id!r}; list ids with `kgrow kb facts`")
        return f

    def episode(self, episode_id: str) -> Episode:
        e = self._log.episode(episode_id) if isinstance(episode_id, str) else None
        if e is None:
            raise NotFoundError(f"no episode with id {episode_id!r}")
        return e

    def users(self) -> list[str]:
        return self._log.users()

    def _known_user(self, user: object) -> str:
        who = clean_user(user)
        if not self._log.has_user(who):
            known = self._log.users()
            raise NotFoundError(f"unknown user {who!r}; known users: {', '.join(known) if known else '(none yet)'}")
        return who

    def ensure_user(self, user: str) -> str:
        """Register a user (idempotent) so that searches scoped to them are valid before they say anything."""
        with self._mutex:
            self._writable()
            who = clean_user(user)
            self._log.begin()
            self._log.add_user(who, now())
            self._log.commit()
            return who

    def facts(self, *, user: str | None = None, entity: str | None = None, relation: str | None = None,
              history: bool = False, as_of: object = None, limit: int | None = None) -> list[Fact]:
        """List facts, current only unless ``history`` (then superseded ones too), oldest first."""
        with self._mutex:
            where, params = [], []
            if user is not None:
                where.append("user IN (?, '')")
                params.append(self._known_user(user))
            if entity is not None:
                name = self.resolve(clean_text(entity, "entity"))
                where.append("(subject=? OR object=?)")
                params += [name, name]
            if relation is not None:
                where.append("relation=?")
                params.append(normalize_relation(clean_text(relation, "relation")))
            if as_of is not None:
                w, p = Scope(None, to_timestamp(as_of, "as_of")).fact_sql()
                where.append(w)
                params += p
            else:
                where.append("status IN ('active', 'superseded')" if history else "status='active'")
            if limit is not None and (not isinstance(limit, int) or limit < 1):
                raise InvalidInputError(f"limit {limit!r} must be a positive integer")
            return self._log.facts_where(" AND ".join(where), params, order="valid_from, vid", limit=limit)

    def about(self, entity: str, *, user: str | None = None, limit: int = 20) -> list[Fact]:
        """Current facts with ``entity`` as subject, newest first, then as object; cheap for hub entities.

        Both sides walk an index in reverse insertion order and stop at ``limit``, so an entity on
        100k facts costs no more than one on ten.
        """
        with self._mutex:
            name = self.resolve(clean_text(entity, "entity"))
            if not isinstance(limit, int) or limit < 1:
                raise InvalidInputError(f"limit {limit!r} must be a positive integer")
            w, p = Scope(self._known_user(user) if user is not None else None, None).fact_sql()
            out = self._log.facts_where(f"subject=? AND {w}", [name, *p], order="vid DESC", limit=limit)
            if len(out) < limit:
                out += self._log.facts_where(f"object=? AND subject!=? AND {w}", [name, name, *p], order="vid DESC",
                                             limit=limit - len(out))
            return out

    def history(self, fact_id: str) -> tuple[list[Fact], list[HistoryEvent]]:
        """Every version of this fact's slot (same user, subject, relation) and the events on them."""
        with self._mutex:
            f = self.fact(fact_id)
            versions = self._log.facts_where("user=? AND subject=? AND relation=?", (f.user, f.subject, f.relation),
                                             order="valid_from, vid")
            if f.relation not in self._single:
                versions = [v for v in versions if v.object == f.object]
            events = [HistoryEvent(t, ev, fid, d) for _, t, fid, ev, d in self._log.history_of([v.id for v in versions])]
            return versions, events

    def search(self, query: str, k: int = 10, *, user: str | None = None, kinds: Sequence[Kind | str] = (Kind.FACT, Kind.EPISODE),
               as_of: object = None, query_vector: np.ndarray | None = None) -> list[Hit]:
        """Hybrid search scoped to ``user`` (plus shared facts); ``user=None`` searches every user."""
        q = clean_text(query, "query")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
            raise InvalidInputError(f"k={k!r} is invalid; give an integer from 1 to 1000")
        kinds_t = tuple(dict.fromkeys(Kind.parse(x) for x in kinds))
        if not kinds_t:
            raise InvalidInputError("kinds is empty; give fact and/or episode")
        with self._mutex:
            who = self._known_user(user) if user is not None else None
            scope = Scope(who, to_timestamp(as_of, "as_of") if as_of is not None else None)
            if self.read_only:
                self._keeper.catch_up()
            qv = query_vector if query_vector is not None else self.embedder.embed_query(q)
            ents = mentioned_entities(self._log, self._aliases, q)
            return self._search.search(q, np.asarray(qv, dtype=np.float32), k, scope, kinds_t, ents)

    # ------------------------------------------------------------------ maintenance & views

    def save(self) -> None:
        """Persist the vector index now (the log is always durable already)."""
        with self._mutex:
            self._writable()
            self._keeper.save()

    def verify(self):
        """Check log, index and manifest against each other; returns a ``VerifyReport``."""
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
            n = self._keeper.rebuild()
            return n

    def stats(self):
        from kb.views import stats

        with self._mutex:
            return stats(self)

    def entity(self, name: str, user: str | None = None):
        from kb.views import entity_profile

        with self._mutex:
            return entity_profile(self, name, user)

    def graph(self, user: str | None = None):
        """The networkx fact graph (current facts) of one user plus shared facts, or of everyone."""
        from kb.graph import FactGraph

        with self._mutex:
            who = self._known_user(user) if user is not None else None
            if self._graph_cache is None or self._graph_cache.user != who:
                self._graph_cache = FactGraph.from_facts(self.facts(user=who), who)
            return self._graph_cache

    def export(self, path: str | Path, fmt: str = "jsonl", *, user: str | None = None, vectors: bool = False) -> int:
        from kb.exporter import export

        with self._mutex:
            return export(self, Path(path), fmt, user=user, vectors=vectors)

    def import_(self, path: str | Path):
        from kb.importer import import_jsonl

        with self._mutex:
            self._writable()
            result = import_jsonl(self, Path(path))
            self._aliases = self._log.aliases()
            self._single = {r for r, s in self._log.relations().items() if s}
            self._graph_cache = None
            return result
