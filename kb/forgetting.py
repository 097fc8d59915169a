"""Forgetting: taking one fact, an entity's facts or a whole user out of every search and listing."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kb.errors import InvalidInputError, NotFoundError
from kb.facts import Status, clean_text
from kb.log import now
from kb.views import unknown_entity

if TYPE_CHECKING:
    from kb.store import KnowledgeBase


def forget_facts(kb: KnowledgeBase, fact_id: str | None, entity: str | None, user: str | None) -> list[str]:
    """KnowledgeBase.forget, run with the KB's mutex held and the KB writable; returns the ids forgotten.

    Rows stay in the log with status ``forgotten`` and a history entry; their vectors are
    tombstoned in the index (a fact row r is index id 2r, an episode row 2r + 1, as in kb.log).
    Forgetting a whole user also forgets their episodes and unregisters them.
    """
    if fact_id is not None and (entity is not None or user is not None):
        raise InvalidInputError("forget takes a fact id, or an entity (optionally with user), or a user")
    if fact_id is None and entity is None and user is None:
        raise InvalidInputError("forget needs a fact id, entity=..., or user=...")
    ep_where: tuple[str, list] | None = None
    if fact_id is not None:
        kb.fact(fact_id)  # raises NotFoundError
        where, params = "id=?", [fact_id]
    elif entity is not None:
        name = kb.resolve(clean_text(entity, "entity"))
        if kb._log.entity_display(name) is None:
            raise NotFoundError(unknown_entity(kb._log, name))
        where, params = "(subject=? OR object=?)", [name, name]
        if user is not None:
            where += " AND user=?"
            params.append(kb._known_user(user))
    else:
        who = kb._known_user(user)
        where, params = "user=?", [who]
        ep_where = ("user=? AND status!='forgotten'", [who])
    ids = [r[0] for r in kb._log.db.execute(f"SELECT id FROM facts WHERE {where} AND status!='forgotten'", params)]
    vids = [2 * r[0] for r in kb._log.db.execute(f"SELECT vid FROM facts WHERE {where} AND status!='forgotten'", params)]
    t = now()
    kb._log.begin()
    try:
        kb._log.set_status(ids, Status.FORGOTTEN)
        for fid in ids:
            kb._log.add_history(fid, "forgotten", None, t)
        if ep_where is not None:
            vids += [2 * r[0] + 1 for r in kb._log.db.execute(f"SELECT vid FROM episodes WHERE {ep_where[0]}", ep_where[1])]
            kb._log.db.execute(f"UPDATE episodes SET status='forgotten' WHERE {ep_where[0]}", ep_where[1])
            kb._log.db.execute("DELETE FROM users WHERE name=?", ep_where[1][:1])
        kb._log.commit()
    except BaseException:
        kb._log.rollback()
        raise
    kb._graph_cache = None
    kb._keeper.tombstone(np.array(vids, dtype=np.int64))
    return ids
