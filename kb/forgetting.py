"""Forgetting and retracting: taking facts out of every search and listing, or ending their validity."""
from __future__ import annotations

import numpy as np

from kb.errors import InvalidInputError, NotFoundError
from kb.facts import Status, clean_text, iso, to_timestamp
from kb.log import Storage, now
from kb.maintenance import IndexKeeper
from kb.views import unknown_entity
from kb.vocabulary import Vocabulary


class Forgetter:
    """Forgets facts, entities and users (rows stay in the log as ``forgotten``), and retracts facts."""

    def __init__(self, log: Storage, vocab: Vocabulary, keeper: IndexKeeper):
        self._log = log
        self._vocab = vocab
        self._keeper = keeper

    def forget(self, fact_id: str | None, entity: str | None, user: str | None) -> list[str]:
        """Forget one fact, an entity's facts (optionally of one user), or a user; returns the ids forgotten.

        Rows stay in the log with status ``forgotten`` and a history entry; their vectors are
        tombstoned in the index. Forgetting a whole user also forgets their episodes and unregisters them.
        """
        if fact_id is not None and (entity is not None or user is not None):
            raise InvalidInputError("forget takes a fact id, or an entity (optionally with user), or a user")
        if fact_id is None and entity is None and user is None:
            raise InvalidInputError("forget needs a fact id, entity=..., or user=...")
        whole_user: str | None = None
        if fact_id is not None:
            if not isinstance(fact_id, str) or not self._log.has_fact(fact_id):
                raise NotFoundError(f"no fact with id {fact_id!r}; list ids with `kgrow kb facts`")
            ids, vids = self._log.forget_targets(fact_id=fact_id)
        elif entity is not None:
            name = self._vocab.resolve(clean_text(entity, "entity"))
            if self._log.entity_display(name) is None:
                raise NotFoundError(unknown_entity(self._log, name))
            who = self._log.known_user(user) if user is not None else None
            ids, vids = self._log.forget_targets(entity=name, user=who)
        else:
            whole_user = self._log.known_user(user)
            ids, vids = self._log.forget_targets(user=whole_user)
        t = now()
        with self._log.transaction():
            self._log.set_status(ids, Status.FORGOTTEN)
            for fid in ids:
                self._log.add_history(fid, "forgotten", None, t)
            if whole_user is not None:
                vids = np.concatenate([vids, self._log.forget_episodes_of(whole_user)])
                self._log.remove_user(whole_user)
        self._keeper.tombstone(np.asarray(vids, dtype=np.int64))
        return ids

    def retract(self, fact_id: str, at: object, reason: str | None) -> None:
        """End a current fact's validity at ``at`` (default now) without a replacement."""
        old = self._log.fact(fact_id) if isinstance(fact_id, str) else None
        if old is None:
            raise NotFoundError(f"no fact with id {fact_id!r}; list ids with `kgrow kb facts`")
        if old.status is not Status.ACTIVE:
            raise InvalidInputError(f"fact {fact_id!r} is {old.status.value}, not active; only current facts can be retracted")
        t = to_timestamp(at, "at") if at is not None else now()
        if t < old.valid_from:
            raise InvalidInputError(f"retraction time {iso(t)} is before the fact became true ({iso(old.valid_from)})")
        with self._log.transaction():
            self._log.supersede(fact_id, None, t)
            self._log.add_history(fact_id, "retracted", reason, now())
