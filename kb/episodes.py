"""Episodes: raw utterances stored whole with their session, position and role; written in batches."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from kb.config import EMBED_CHARS, NewEpisode
from kb.embeddings import Embedder
from kb.errors import InvalidInputError, NotFoundError
from kb.facts import Episode, Role, clean_text, clean_user, episode_id, to_timestamp
from kb.log import Storage, now
from kb.maintenance import IndexKeeper


class EpisodeStore:
    """Writes and lists episodes; one transaction and one embedding pass per batch."""

    def __init__(self, log: Storage, keeper: IndexKeeper, embedder: Callable[[], Embedder], dim: Callable[[], int]):
        self._log = log
        self._keeper = keeper
        self._embedder = embedder
        self._dim = dim

    def add(self, items: Sequence[NewEpisode], vectors: np.ndarray | None = None) -> list[Episode]:
        """Store utterances, all or nothing; one already stored (same id) is returned as stored."""
        eps = [record(it, i if len(items) > 1 else None) for i, it in enumerate(items)]
        dim = self._dim()
        if vectors is not None and np.shape(vectors) != (len(items), dim):
            raise InvalidInputError(f"episode vectors have shape {np.shape(vectors)}; expected ({len(items)}, {dim})")
        stored = {e.id: ex for e in eps if (ex := self._log.episode(e.id)) is not None}
        first: dict[str, int] = {}  # the same utterance twice in one batch is stored once
        for i, e in enumerate(eps):
            if e.id not in stored:
                first.setdefault(e.id, i)
        todo = list(first.values())
        if vectors is not None:
            vecs = np.asarray(vectors, dtype=np.float32)[todo]
        elif todo:
            vecs = self.vectors([eps[i].text for i in todo])
        else:
            vecs = np.zeros((0, dim), dtype=np.float32)
        new_vecs: list[tuple[int, np.ndarray]] = []
        with self._log.transaction():
            for i, vec in zip(todo, vecs):
                new_vecs.append((self._log.insert_episode(eps[i], vec), vec))
            for who in sorted({e.user for e in eps}):
                self._log.add_user(who, now())
        self._keeper.add(new_vecs)
        return [stored.get(e.id, e) for e in eps]

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim): the episodes' embeddings, of their stored (stripped) text cut to EMBED_CHARS."""
        return self._embedder().embed_documents([str(t).strip()[:EMBED_CHARS] for t in texts])

    def get(self, episode_id: str) -> Episode:
        e = self._log.episode(episode_id) if isinstance(episode_id, str) else None
        if e is None:
            raise NotFoundError(f"no episode with id {episode_id!r}")
        return e

    def session(self, user: str, session: str, start: int = 0, stop: int | None = None) -> list[Episode]:
        return self._log.session_episodes(self._log.known_user(user), session, start, stop)

    def listing(self, user: str | None, session: str | None, limit: int | None) -> list[Episode]:
        who = self._log.known_user(user) if user is not None else None
        return self._log.list_episodes(user=who, session=session, limit=limit)


def record(it: NewEpisode, index: int | None) -> Episode:
    """Validate one NewEpisode into the Episode to store (raises naming the bad value and the item)."""
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
