"""Facts and episodes: idempotent writes, merging, supersession, time travel, forgetting, bad input,
durability of the directory (manifest, embedder, index repair) and the writer lock."""
from __future__ import annotations

import json
import math
import re
import shutil
from datetime import datetime, timezone

import numpy as np
import pytest

from kb import (Episode, HashEmbedder, IncompatibleKBError, InvalidInputError, KBConfig, KBError, KBLockedError,
                KnowledgeBase, NewFact, NotFoundError, Status)
from kb.embeddings import EMBED_CHARS
from kb.facts import MAX_TEXT_CHARS

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = 86_400.0
QUIET = KBConfig(show_progress=False)


# --------------------------------------------------------------------------- helpers


def snapshot(kb: KnowledgeBase):
    """Everything a user can observe about the KB's content (not its file sizes)."""
    s = kb.stats()
    counts = (s.facts_active, s.facts_superseded, s.facts_forgotten, s.episodes, s.users, s.entities,
              s.relations_single_valued, s.index_vectors)
    facts = tuple((f.id, f.status, f.object, f.confidence, f.valid_from, f.valid_to, len(f.sources))
                  for f in kb.facts(history=True))
    return counts, facts, tuple(kb.users())


def reopen(kb: KnowledgeBase, embedder, config: KBConfig = QUIET, **kw) -> KnowledgeBase:
    kb.close()
    return KnowledgeBase.open(kb.path, embedder=embedder, config=config, **kw)


def hit_ids(hits) -> list[str]:
    return [h.id for h in hits]


def search_fingerprint(kb: KnowledgeBase, queries, **kw):
    return [[(h.id, round(h.score, 9), None if h.vector_score is None else round(h.vector_score, 5))
             for h in kb.search(q, k=20, **kw)] for q in queries]


class CanonicalEmbedder(HashEmbedder):
    """A fake whose vectors ignore chosen surface differences, to stand in for a paraphrase-aware model.

    ``synonyms`` rewrites phrases before hashing; ``drop_digits`` makes 'age 30' and 'age 31'
    identical vectors, the worst case for a semantic merger.
    """

    def __init__(self, synonyms: dict[str, str] | None = None, drop_digits: bool = False, dim: int = 64):
        super().__init__(dim=dim, id="canonical")
        self.synonyms = synonyms or {}
        self.drop_digits = drop_digits

    def _vector(self, text: str) -> np.ndarray:
        t = text.casefold()
        for a, b in self.synonyms.items():
            t = t.replace(a, b)
        if self.drop_digits:
            t = re.sub(r"\d+", "", t)
        return super()._vector(t)


# --------------------------------------------------------------------------- idempotent writes


class TestIdempotentWrites:
    def test_same_fact_twice_is_one_fact_with_two_sources(self, kb):
        a = kb.add_fact("Alice", "lives_in", "Paris", user="alice", source_id="turn-1")
        b = kb.add_fact("Alice", "lives_in", "Paris", user="alice", source_id="turn-2")
        assert a.created and not b.created
        assert a.fact.id == b.fact.id
        assert not b.merged_semantically
        facts = kb.facts(user="alice")
        assert [f.id for f in facts] == [a.fact.id]
        assert [s.source_id for s in facts[0].sources] == ["turn-1", "turn-2"]
        assert kb.stats().facts_active == 1
        assert kb.verify().ok

    def test_case_and_whitespace_variants_are_one_entity(self, kb):
        ids = {kb.add_fact(s, "likes", "jazz", user="alice").fact.id for s in ("alice", "Alice", "Alice ", " ALICE")}
        assert len(ids) == 1
        (f,) = kb.facts(user="alice")
        assert f.subject == "alice"
        assert len(f.sources) == 4
        prof = kb.entity("aLiCe")
        assert prof.name == "alice"
        assert prof.display == "alice"  # as first written
        assert kb.stats().entities == 2  # alice, jazz

    def test_default_aliases_name_one_entity(self, kb):
        a = kb.add_fact("Bob", "lives_in", "NYC", user="bob")
        b = kb.add_fact("bob", "lives_in", "New York City", user="bob")
        c = kb.add_fact("Bob", "lives_in", "new york", user="bob")
        assert a.fact.id == b.fact.id == c.fact.id
        assert a.fact.object == "new york city"
        assert kb.resolve("NYC") == "new york city"
        assert len(kb.facts(user="bob")) == 1

    def test_user_aliases_chain_to_the_canonical_name(self, kb):
        kb.add_alias("Big Apple", "NYC")
        assert kb.resolve("Big Apple") == "new york city"
        a = kb.add_fact("Bob", "likes", "Big Apple", user="bob")
        b = kb.add_fact("Bob", "likes", "NYC", user="bob")
        assert a.fact.id == b.fact.id
        with pytest.raises(InvalidInputError, match="same as its canonical"):
            kb.add_alias("NYC", "nyc")

    def test_duplicate_inside_one_batch_is_one_fact(self, kb):
        res = kb.add_facts([NewFact("Alice", "likes", "tea", user="alice", source_id="a"),
                            NewFact("alice", "likes", "Tea", user="alice", source_id="b")])
        assert res[0].created and not res[1].created
        assert res[0].fact.id == res[1].fact.id
        assert len(kb.fact(res[0].fact.id).sources) == 2

    def test_same_triple_in_different_scopes_stays_separate(self, kb):
        mine = kb.add_fact("Paris", "capital_of", "France", user="alice")
        theirs = kb.add_fact("Paris", "capital_of", "France", user="bob")
        shared = kb.add_fact("Paris", "capital_of", "France", shared=True, user="bob")
        assert len({mine.fact.id, theirs.fact.id, shared.fact.id}) == 3
        assert shared.fact.shared and shared.fact.user == ""
        assert not mine.fact.shared

    def test_same_episode_twice_is_stored_once(self, kb):
        e1 = kb.add_episode("I moved to Paris", user="alice", source_id="t1", time=T0)
        e2 = kb.add_episode("I moved to Paris", user="alice", source_id="t1", time=T0)
        assert isinstance(e1, Episode) and e1 == e2
        assert kb.stats().episodes == 1
        assert kb.episode(e1.id).text == "I moved to Paris"

    def test_fact_links_to_its_episode(self, kb):
        ep = kb.add_episode("btw I live in Paris now", user="alice", source_id="t7")
        r = kb.add_fact("Alice", "lives_in", "Paris", user="alice", episode_id=ep.id, source_id="t7",
                        note="extracted")
        (src,) = r.fact.sources
        assert (src.episode_id, src.source_id, src.user, src.note) == (ep.id, "t7", "alice", "extracted")


# --------------------------------------------------------------------------- semantic near-duplicates


class TestNearDuplicates:
    def _kb(self, kb_path, embedder, **cfg):
        return KnowledgeBase.open(kb_path, embedder=embedder, config=KBConfig(show_progress=False, **cfg))

    def test_paraphrase_with_compatible_object_merges(self, kb_path):
        emb = CanonicalEmbedder({"is employed by": "works at", "corporation": "corp"})
        with self._kb(kb_path, emb) as kb:
            a = kb.add_fact("Alice", "works_at", "Acme Corp", text="Alice works at Acme Corp", user="alice")
            b = kb.add_fact("Alice", "works_at", "Acme Corporation", text="Alice is employed by Acme Corporation",
                            user="alice", source_id="turn-9")
            assert not b.created and b.merged_semantically
            assert b.fact.id == a.fact.id
            (f,) = kb.facts(user="alice")
            assert f.object == "acme corp" and f.status is Status.ACTIVE
            assert [s.source_id for s in f.sources] == [None, "turn-9"]
            _, events = kb.history(f.id)
            assert [e.event for e in events] == ["created", "restated"]
            assert events[1].detail == "near-duplicate"

    def test_multi_valued_paraphrase_merges_too(self, kb_path):
        emb = CanonicalEmbedder({"adores": "likes"})
        with self._kb(kb_path, emb) as kb:
            kb.add_fact("Bob", "likes", "jazz music", text="Bob likes jazz music", user="bob")
            r = kb.add_fact("Bob", "likes", "jazz", text="Bob adores jazz music", user="bob")
            assert r.merged_semantically
            assert len(kb.facts(user="bob")) == 1

    def test_different_numbers_never_merge(self, kb_path):
        emb = CanonicalEmbedder(drop_digits=True)  # 'age 30' and 'age 31' embed identically
        with self._kb(kb_path, emb) as kb:
            a = kb.add_fact("Alice", "age", "30", text="Alice is 30 years old", user="alice", time=T0)
            b = kb.add_fact("Alice", "age", "31", text="Alice is 31 years old", user="alice", time=T0 + 365 * DAY)
            assert b.created and not b.merged_semantically
            assert [f.id for f in b.superseded] == [a.fact.id]
            assert [f.object for f in kb.facts(user="alice")] == ["31"]
            # multi-valued with different numbers: both kept
            kb.add_fact("Alice", "has_room", "101", text="Alice has room 101", user="alice")
            c = kb.add_fact("Alice", "has_room", "102", text="Alice has room 102", user="alice")
            assert c.created
            assert sorted(f.object for f in kb.facts(user="alice", relation="has_room")) == ["101", "102"]

    def test_unrelated_objects_never_merge_even_if_vectors_match(self, kb_path):
        emb = CanonicalEmbedder({"london": "paris"})
        with self._kb(kb_path, emb) as kb:
            kb.add_fact("Alice", "lives_in", "Paris", user="alice", time=T0)
            r = kb.add_fact("Alice", "lives_in", "London", user="alice", time=T0 + DAY)
            assert r.created and not r.merged_semantically and len(r.superseded) == 1

    def test_near_duplicate_one_disables_semantic_merging(self, kb_path):
        emb = CanonicalEmbedder({"adores": "likes"})
        with self._kb(kb_path, emb, near_duplicate=1.0) as kb:
            kb.add_fact("Bob", "likes", "jazz music", text="Bob likes jazz music", user="bob")
            r = kb.add_fact("Bob", "likes", "jazz", text="Bob adores jazz music", user="bob")
            assert r.created
            assert len(kb.facts(user="bob")) == 2

    def test_never_merges_across_users(self, kb_path):
        emb = CanonicalEmbedder({"adores": "likes"})
        with self._kb(kb_path, emb) as kb:
            kb.add_fact("Bob", "likes", "jazz music", text="Bob likes jazz music", user="alice")
            r = kb.add_fact("Bob", "likes", "jazz", text="Bob adores jazz music", user="carol")
            assert r.created
            assert len(kb.facts()) == 2

    @pytest.mark.parametrize("value", [0.0, -0.1, 1.5, math.nan])
    def test_bad_threshold_is_named(self, value):
        with pytest.raises(InvalidInputError, match="near_duplicate"):
            KBConfig(near_duplicate=value)


# --------------------------------------------------------------------------- supersession and time


class TestSupersession:
    def test_single_valued_update_supersedes_and_keeps_history(self, kb):
        old = kb.add_fact("Alice", "lives_in", "Paris", user="alice", time=T0).fact
        new = kb.add_fact("Alice", "lives_in", "London", user="alice", time=T0 + 10 * DAY)
        assert new.created
        (sup,) = new.superseded
        assert sup.id == old.id
        assert sup.status is Status.SUPERSEDED and sup.valid_to == T0 + 10 * DAY
        assert sup.superseded_by == new.fact.id
        stored = kb.fact(old.id)
        assert stored.status is Status.SUPERSEDED and stored.valid_to == T0 + 10 * DAY
        assert [f.object for f in kb.facts(user="alice")] == ["london"]
        assert [f.object for f in kb.facts(user="alice", history=True)] == ["paris", "london"]
        versions, events = kb.history(new.fact.id)
        assert [v.object for v in versions] == ["paris", "london"]
        assert ("superseded", old.id) in [(e.event, e.fact_id) for e in events]
        assert kb.verify().ok

    def test_as_of_returns_what_was_true_then(self, kb):
        kb.add_fact("Alice", "lives_in", "Paris", user="alice", time="2020-01-01T00:00:00Z")
        kb.add_fact("Alice", "lives_in", "London", user="alice", time="2022-06-01T00:00:00Z")

        def at(t):
            return [f.object for f in kb.facts(user="alice", as_of=t)]

        assert at("2019-12-31T00:00:00Z") == []
        assert at("2021-01-01T00:00:00Z") == ["paris"]
        assert at(datetime(2022, 5, 31, 23, 59, tzinfo=timezone.utc)) == ["paris"]
        assert at("2022-06-01T00:00:00Z") == ["london"]  # valid_to is exclusive
        assert at(datetime(2030, 1, 1)) == ["london"]  # naive datetimes are UTC
        assert at(datetime(2021, 1, 1, tzinfo=timezone.utc).timestamp()) == ["paris"]

    def test_restated_old_value_becomes_current_and_past_stays_right(self, kb):
        p1 = kb.add_fact("Alice", "lives_in", "Paris", user="alice", time=T0).fact
        ldn = kb.add_fact("Alice", "lives_in", "London", user="alice", time=T0 + 10 * DAY).fact
        back = kb.add_fact("Alice", "lives_in", "Paris", user="alice", time=T0 + 20 * DAY)
        assert back.created and back.fact.status is Status.ACTIVE
        assert back.fact.id != p1.id  # a new version: the old interval stays closed
        assert [f.id for f in back.superseded] == [ldn.id]
        assert [f.object for f in kb.facts(user="alice")] == ["paris"]
        assert [f.id for f in kb.facts(user="alice", as_of=T0 + DAY)] == [p1.id]
        assert [f.id for f in kb.facts(user="alice", as_of=T0 + 15 * DAY)] == [ldn.id]
        assert [f.id for f in kb.facts(user="alice", as_of=T0 + 25 * DAY)] == [back.fact.id]
        assert kb.fact(p1.id).valid_to == T0 + 10 * DAY
        versions, _ = kb.history(back.fact.id)
        assert [v.object for v in versions] == ["paris", "london", "paris"]
        # and stating it yet again is just another source of the current version
        again = kb.add_fact("alice", "lives_in", "paris", user="alice", time=T0 + 30 * DAY)
        assert not again.created and again.fact.id == back.fact.id
        assert kb.verify().ok

    def test_late_arriving_older_fact_is_history_not_current(self, kb):
        ldn = kb.add_fact("Alice", "lives_in", "London", user="alice", time=T0 + 10 * DAY).fact
        late = kb.add_fact("Alice", "lives_in", "Paris", user="alice", time=T0)
        assert late.created and late.superseded == ()
        assert late.fact.status is Status.SUPERSEDED
        assert late.fact.valid_from == T0 and late.fact.valid_to == T0 + 10 * DAY
        assert late.fact.superseded_by == ldn.id
        assert [f.id for f in kb.facts(user="alice")] == [ldn.id]
        assert kb.fact(ldn.id).status is Status.ACTIVE
        assert [f.object for f in kb.facts(user="alice", as_of=T0 + DAY)] == ["paris"]
        assert [f.object for f in kb.facts(user="alice", as_of=T0 + 11 * DAY)] == ["london"]
        assert kb.verify().ok

    def test_late_facts_slot_into_a_longer_history(self, kb):
        """Out-of-order statements still give exactly one value at every point in time."""
        kb.add_fact("Alice", "lives_in", "Berlin", user="alice", time=T0)
        kb.add_fact("Alice", "lives_in", "London", user="alice", time=T0 + 30 * DAY)
        kb.add_fact("Alice", "lives_in", "Rome", user="alice", time=T0 + 50 * DAY)
        late = kb.add_fact("Alice", "lives_in", "Paris", user="alice", time=T0 + 20 * DAY)  # arrives last
        assert late.fact.status is Status.SUPERSEDED
        # a late repeat of what was already known for that time is one more source, not a new version
        again = kb.add_fact("Alice", "lives_in", "London", user="alice", time=T0 + 40 * DAY, source_id="late")
        assert not again.created

        def at(days):
            return [f.object for f in kb.facts(user="alice", as_of=T0 + days * DAY)]

        assert at(10) == ["berlin"]
        assert at(25) == ["paris"]
        assert at(35) == ["london"]
        assert at(45) == ["london"]
        assert at(60) == ["rome"]
        assert [f.object for f in kb.facts(user="alice")] == ["rome"]
        assert len(kb.facts(user="alice", history=True)) == 4
        assert kb.verify().ok

    def test_multi_valued_relations_accumulate(self, kb):
        kb.add_fact("Bob", "likes", "jazz", user="bob", time=T0)
        r = kb.add_fact("Bob", "likes", "tea", user="bob", time=T0 + DAY)
        kb.add_fact("Bob", "likes", "chess", user="bob", time=T0 + 2 * DAY)
        assert r.superseded == ()
        assert [f.object for f in kb.facts(user="bob", relation="likes")] == ["jazz", "tea", "chess"]
        assert [f.object for f in kb.facts(user="bob", as_of=T0 + DAY + 1)] == ["jazz", "tea"]
        assert not kb.single_valued("likes") and kb.single_valued("lives in")

    def test_single_valued_is_per_user_and_per_subject(self, kb):
        kb.add_fact("Alice", "lives_in", "Paris", user="alice")
        kb.add_fact("Alice", "lives_in", "Rome", user="bob")  # bob's belief, not a correction of alice's
        kb.add_fact("Carol", "lives_in", "Oslo", user="alice")
        assert sorted(f.object for f in kb.facts(relation="lives_in")) == ["oslo", "paris", "rome"]

    def test_declare_relation_extends_schema_and_persists(self, kb, embedder):
        kb.add_fact("Alice", "favorite_band", "Abba", user="alice", time=T0)
        kb.add_fact("Alice", "favorite_band", "Queen", user="alice", time=T0 + 1)
        assert len(kb.facts(user="alice")) == 2  # multi-valued until declared
        kb.declare_relation("Favorite Band", single_valued=True)
        kb.declare_relation("lives_in", single_valued=False)
        assert kb.single_valued("favorite_band") and not kb.single_valued("lives_in")
        kb = reopen(kb, embedder)
        try:
            assert kb.single_valued("favorite_band") and not kb.single_valued("lives_in")
            r = kb.add_fact("Alice", "favorite_band", "Blur", user="alice", time=T0 + 2)
            assert sorted(f.object for f in r.superseded) == ["abba", "queen"]
            assert [f.object for f in kb.facts(user="alice")] == ["blur"]
            kb.add_fact("Alice", "lives_in", "Paris", user="alice")
            kb.add_fact("Alice", "lives_in", "Rome", user="alice")
            assert len(kb.facts(user="alice", relation="lives_in")) == 2
            with pytest.raises(InvalidInputError, match="relation"):
                kb.declare_relation("   ")
        finally:
            kb.close()


# --------------------------------------------------------------------------- forgetting


class TestForget:
    @pytest.fixture
    def filled(self, kb):
        kb.add_fact("Alice", "lives_in", "Paris", text="Alice lives in Paris", user="alice")
        kb.add_fact("Alice", "likes", "jazz", text="Alice likes jazz", user="alice")
        kb.add_fact("Bob", "knows", "Alice", text="Bob knows Alice", user="bob")
        kb.add_fact("Paris", "capital_of", "France", text="Paris is the capital of France", shared=True, user="alice")
        kb.add_episode("I live in Paris and I like jazz", user="alice")
        kb.add_episode("I know Alice", user="bob")
        return kb

    def _visible(self, kb, ids, user=None):
        seen = set()
        for q in ("Alice Paris jazz", "Bob knows Alice", "capital of France", "live"):
            seen |= {h.id for h in kb.search(q, k=50, user=user)}
        listed = {f.id for f in kb.facts(user=user)} | {f.id for f in kb.facts(user=user, history=True)}
        return (seen | listed) & set(ids)

    def test_forget_one_fact(self, filled):
        kb = filled
        fid = kb.facts(user="alice", relation="likes")[0].id
        assert fid in self._visible(kb, [fid])
        assert kb.forget(fid) == [fid]
        assert not self._visible(kb, [fid]) and not self._visible(kb, [fid], user="alice")
        kept = kb.fact(fid)
        assert kept.status is Status.FORGOTTEN and kept.text == "Alice likes jazz"
        _, events = kb.history(fid)
        assert events[-1].event == "forgotten"
        assert kb.stats().facts_forgotten == 1
        assert [f.object for f in kb.facts(user="alice", as_of=datetime.now(timezone.utc))] == ["paris", "france"]
        rep = kb.verify()
        assert rep.ok and rep.missing == 0 and rep.unknown == 0
        # forgetting it again is an error only for unknown ids; a forgotten one just yields nothing
        assert kb.forget(fid) == []

    def test_forget_entity_across_users_and_for_one_user(self, filled):
        kb = filled
        about_alice = {f.id for f in kb.facts(entity="alice")}
        assert len(about_alice) == 3
        bobs = kb.forget(entity="ALICE", user="bob")
        assert len(bobs) == 1 and kb.fact(bobs[0]).user == "bob"
        rest = kb.forget(entity="alice")
        assert set(rest) | set(bobs) == about_alice
        assert not self._visible(kb, about_alice) and kb.facts(entity="alice") == []
        assert [f.text for f in kb.facts()] == ["Paris is the capital of France"]
        assert kb.verify().ok
        with pytest.raises(NotFoundError, match="'alise'.*alice"):
            kb.forget(entity="Alise")

    def test_forget_user_removes_their_facts_and_episodes(self, filled):
        kb = filled
        alice_private = [f.id for f in kb.facts() if f.user == "alice"]
        ids = kb.forget(user="alice")
        assert sorted(ids) == sorted(alice_private)
        assert "alice" not in kb.users()
        with pytest.raises(NotFoundError, match="'alice'"):
            kb.search("Paris", user="alice")
        everyone = kb.search("I live in Paris and I like jazz", k=50)
        assert not any(h.episode is not None and h.episode.user == "alice" for h in everyone)
        assert not set(alice_private) & {h.id for h in everyone}
        # shared knowledge and other users are untouched
        assert {f.text for f in kb.facts()} == {"Bob knows Alice", "Paris is the capital of France"}
        assert any(h.kind.value == "episode" for h in kb.search("I know Alice", user="bob"))
        for fid in alice_private:
            assert kb.fact(fid).status is Status.FORGOTTEN
        rep = kb.verify()
        assert rep.ok and rep.missing == 0
        # the user can come back and start afresh
        kb.add_fact("Alice", "likes", "jazz", user="alice")
        assert [f.object for f in kb.facts(user="alice") if f.user == "alice"] == ["jazz"]

    def test_forgotten_fact_restated_is_a_new_fact(self, kb):
        fid = kb.add_fact("Alice", "likes", "jazz", user="alice").fact.id
        kb.forget(fid)
        r = kb.add_fact("Alice", "likes", "jazz", user="alice")
        assert r.created and r.fact.id != fid
        assert kb.fact(fid).status is Status.FORGOTTEN
        assert [f.id for f in kb.facts(user="alice")] == [r.fact.id]

    def test_forget_is_visible_after_reopen(self, filled, embedder):
        fid = filled.facts(user="alice", relation="likes")[0].id
        filled.forget(fid)
        kb = reopen(filled, embedder)
        try:
            assert not self._visible(kb, [fid])
            assert kb.verify().ok
        finally:
            kb.close()

    def test_forget_arguments_are_checked(self, filled):
        before = snapshot(filled)
        with pytest.raises(InvalidInputError, match="needs"):
            filled.forget()
        with pytest.raises(InvalidInputError):
            filled.forget("f_x", user="alice")
        with pytest.raises(NotFoundError, match="f_doesnotexist"):
            filled.forget("f_doesnotexist")
        with pytest.raises(NotFoundError, match="'zed'"):
            filled.forget(user="zed")
        assert snapshot(filled) == before


class TestConfidence:
    def test_set_confidence_is_kept_in_history(self, kb):
        fid = kb.add_fact("Alice", "age", "30", user="alice").fact.id
        f = kb.set_confidence(fid, 0.4, reason="she was joking")
        assert f.confidence == pytest.approx(0.4)
        assert kb.fact(fid).confidence == pytest.approx(0.4)
        _, events = kb.history(fid)
        conf = [e for e in events if e.event == "confidence"]
        assert len(conf) == 1 and conf[0].detail == "1.000 -> 0.400: she was joking"

    def test_restating_with_higher_confidence_raises_it_never_lowers(self, kb):
        fid = kb.add_fact("Alice", "likes", "tea", user="alice", confidence=0.5).fact.id
        assert kb.add_fact("Alice", "likes", "tea", user="alice", confidence=0.3).fact.confidence == 0.5
        assert kb.add_fact("Alice", "likes", "tea", user="alice", confidence=0.9).fact.confidence == 0.9
        assert kb.fact(fid).confidence == 0.9


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def seeded(kb):
    kb.add_fact("Alice", "lives_in", "Paris", user="alice", time=T0)
    kb.add_fact("Bob", "likes", "jazz", user="bob", time=T0)
    kb.add_episode("hello there", user="alice", time=T0)
    return kb


BAD_CALLS = [
    # (id, call, error class, text the message must contain)
    ("empty text", lambda kb: kb.add_fact("Alice", "likes", "tea", text="", user="alice"), InvalidInputError, "text is empty"),
    ("whitespace text", lambda kb: kb.add_fact("Alice", "likes", "tea", text=" \t\n ", user="alice"),
     InvalidInputError, "whitespace"),
    ("empty subject", lambda kb: kb.add_fact("  ", "likes", "tea", user="alice"), InvalidInputError, "subject"),
    ("non-utf8 bytes", lambda kb: kb.add_fact(b"Al\xffice", "likes", "tea", user="alice"), InvalidInputError, "0xff"),
    ("lone surrogate", lambda kb: kb.add_fact("Alice", "likes", "te\ud800a", user="alice"), InvalidInputError,
     "\\ud800"),
    ("NUL", lambda kb: kb.add_fact("Alice", "likes", "tea", text="a\x00b", user="alice"), InvalidInputError, "NUL"),
    ("too long", lambda kb: kb.add_fact("Alice", "likes", "tea", text="x" * (MAX_TEXT_CHARS + 1), user="alice"),
     InvalidInputError, f"{MAX_TEXT_CHARS + 1:,}"),
    ("relation without letters", lambda kb: kb.add_fact("Alice", "!!!", "tea", user="alice"), InvalidInputError,
     "'!!!'"),
    ("no user for private", lambda kb: kb.add_fact("Alice", "likes", "tea"), InvalidInputError, "user is required"),
    ("multi-line user", lambda kb: kb.add_fact("Alice", "likes", "tea", user="ali\nce"), InvalidInputError,
     "ali\\nce"),
    ("unknown user search", lambda kb: kb.search("Paris", user="nobody"), NotFoundError, "'nobody'"),
    ("unknown user facts", lambda kb: kb.facts(user="nobody"), NotFoundError, "'nobody'"),
    ("unknown fact", lambda kb: kb.fact("f_000000000000000000000000"), NotFoundError, "f_000000000000000000000000"),
    ("unknown fact forget", lambda kb: kb.forget("f_nope"), NotFoundError, "f_nope"),
    ("unknown fact confidence", lambda kb: kb.set_confidence("f_nope", 0.5), NotFoundError, "f_nope"),
    ("unknown fact history", lambda kb: kb.history("f_nope"), NotFoundError, "f_nope"),
    ("unknown episode", lambda kb: kb.episode("e_nope"), NotFoundError, "e_nope"),
    ("unknown episode link", lambda kb: kb.add_fact("Alice", "likes", "tea", user="alice", episode_id="e_gone"),
     NotFoundError, "e_gone"),
    ("confidence high", lambda kb: kb.add_fact("Alice", "likes", "tea", user="alice", confidence=1.5),
     InvalidInputError, "1.5"),
    ("confidence negative", lambda kb: kb.add_fact("Alice", "likes", "tea", user="alice", confidence=-0.01),
     InvalidInputError, "-0.01"),
    ("confidence nan", lambda kb: kb.add_fact("Alice", "likes", "tea", user="alice", confidence=float("nan")),
     InvalidInputError, "nan"),
    ("confidence text", lambda kb: kb.add_fact("Alice", "likes", "tea", user="alice", confidence="sure"),
     InvalidInputError, "'sure'"),
    ("set confidence range", lambda kb: kb.set_confidence(kb.facts()[0].id, 2.0), InvalidInputError, "2.0"),
    ("bad time string", lambda kb: kb.add_fact("Alice", "likes", "tea", user="alice", time="next tuesday"),
     InvalidInputError, "'next tuesday'"),
    ("bad valid_from", lambda kb: kb.add_fact("Alice", "likes", "tea", user="alice", valid_from="2024-13-45"),
     InvalidInputError, "'2024-13-45'"),
    ("infinite time", lambda kb: kb.add_fact("Alice", "likes", "tea", user="alice", time=float("inf")),
     InvalidInputError, "inf"),
    ("time of wrong type", lambda kb: kb.add_fact("Alice", "likes", "tea", user="alice", time=[2024]),
     InvalidInputError, "[2024]"),
    ("bad episode time", lambda kb: kb.add_episode("hi", user="alice", time="soon"), InvalidInputError, "'soon'"),
    ("empty episode", lambda kb: kb.add_episode("   ", user="alice"), InvalidInputError, "episode text"),
    ("bad as_of search", lambda kb: kb.search("Paris", as_of="yesterday"), InvalidInputError, "'yesterday'"),
    ("bad as_of facts", lambda kb: kb.facts(as_of="yesterday"), InvalidInputError, "'yesterday'"),
    ("bad kind", lambda kb: kb.search("Paris", kinds=["facts"]), InvalidInputError, "'facts'"),
    ("no kinds", lambda kb: kb.search("Paris", kinds=[]), InvalidInputError, "kinds"),
    ("k zero", lambda kb: kb.search("Paris", k=0), InvalidInputError, "k=0"),
    ("k too big", lambda kb: kb.search("Paris", k=1001), InvalidInputError, "k=1001"),
    ("k not int", lambda kb: kb.search("Paris", k="5"), InvalidInputError, "k='5'"),
    ("k bool", lambda kb: kb.search("Paris", k=True), InvalidInputError, "k=True"),
    ("empty query", lambda kb: kb.search("   "), InvalidInputError, "query"),
    ("limit zero", lambda kb: kb.facts(limit=0), InvalidInputError, "limit 0"),
    ("unknown entity", lambda kb: kb.entity("Zorro"), NotFoundError, "'zorro'"),
    ("wrong vector shape", lambda kb: kb.add_facts([NewFact("A", "likes", "b", user="alice")],
                                                   vectors=np.zeros((1, 3), dtype=np.float32)),
     InvalidInputError, "(1, 3)"),
]


@pytest.mark.parametrize("call, error, needle", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_specific_error_naming_it_and_changes_nothing(seeded, call, error, needle):
    before = snapshot(seeded)
    with pytest.raises(error) as info:
        call(seeded)
    assert isinstance(info.value, KBError)
    assert needle in str(info.value), str(info.value)
    assert snapshot(seeded) == before
    assert seeded.verify().ok


def test_error_hierarchy_is_catchable_as_builtin_kinds():
    assert issubclass(InvalidInputError, ValueError) and issubclass(NotFoundError, LookupError)
    assert len({InvalidInputError.exit_code, NotFoundError.exit_code, KBLockedError.exit_code,
                IncompatibleKBError.exit_code}) == 4


def test_absurdly_long_text_is_stored_in_full_and_embedded_truncated(kb, embedder):
    long = "Alice wrote a very long diary entry. " * 6000 + "The final word is zanzibar."
    assert len(long) > 200_000
    r = kb.add_fact("Alice", "wrote", "diary", text=long, user="alice")
    assert kb.fact(r.fact.id).text == long
    # a keyword from the very end is found: the full text is indexed for keywords
    hits = kb.search("zanzibar", user="alice")
    assert hits and hits[0].id == r.fact.id and hits[0].keyword_rank == 1
    # the stored vector is the embedding of the first EMBED_CHARS characters
    hits = kb.search("diary", user="alice", query_vector=embedder.embed_query(long[:EMBED_CHARS]))
    assert hits[0].id == r.fact.id and hits[0].vector_score == pytest.approx(1.0, abs=1e-5)
    kb.add_episode(long, user="alice")
    assert kb.verify().ok


def test_bytes_in_utf8_are_accepted(kb):
    r = kb.add_fact("Zoë".encode("utf-8"), b"lives in", "Zürich", user="alice")
    assert r.fact.subject == "zoë" and r.fact.relation == "lives_in"


class TestBatches:
    def test_batch_is_all_or_nothing_on_bad_item(self, seeded):
        before = snapshot(seeded)
        batch = [NewFact("Carol", "likes", "tea", user="carol"),
                 NewFact("Carol", "lives_in", "Oslo", user="carol"),
                 NewFact("Carol", "age", "40", user="carol", confidence=7)]
        with pytest.raises(InvalidInputError, match=r"fact #2: confidence 7"):
            seeded.add_facts(batch)
        assert snapshot(seeded) == before
        with pytest.raises(InvalidInputError, match=r"fact #0: .*'never'"):
            seeded.add_facts([NewFact("Carol", "likes", "tea", user="carol", time="never"), batch[1]])
        assert snapshot(seeded) == before
        res = seeded.add_facts(batch[:2])
        assert all(r.created for r in res)

    def test_batch_rolls_back_when_writing_fails_midway(self, seeded, monkeypatch):
        before = snapshot(seeded)
        real = seeded._log.add_entity
        calls = {"n": 0}

        def flaky(*a, **kw):
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError("disk full (simulated)")
            return real(*a, **kw)

        monkeypatch.setattr(seeded._log, "add_entity", flaky)
        batch = [NewFact(f"Person{i}", "likes", f"thing{i}", user="carol") for i in range(5)]
        with pytest.raises(OSError, match="disk full"):
            seeded.add_facts(batch)
        monkeypatch.undo()
        assert snapshot(seeded) == before
        assert seeded.verify().ok
        # and the KB keeps working: the same batch goes through and is searchable
        res = seeded.add_facts(batch)
        assert len({r.fact.id for r in res}) == 5
        assert seeded.search("Person3 likes thing3", user="carol")[0].id == res[3].fact.id
        rep = seeded.verify()
        assert rep.ok and rep.missing == 0 and rep.unknown == 0

    def test_batch_supersedes_within_itself(self, kb):
        res = kb.add_facts([NewFact("Alice", "lives_in", "Paris", user="alice", time=T0),
                            NewFact("Alice", "lives_in", "London", user="alice", time=T0 + DAY),
                            NewFact("Alice", "lives_in", "Paris", user="alice", time=T0 + 2 * DAY)])
        assert [r.created for r in res] == [True, True, True]
        assert [f.object for f in kb.facts(user="alice")] == ["paris"]
        assert [f.object for f in kb.facts(user="alice", history=True)] == ["paris", "london", "paris"]
        assert kb.verify().ok

    def test_precomputed_vectors_are_used(self, kb, embedder):
        items = [NewFact("Alice", "likes", "tea", user="alice"), NewFact("Bob", "likes", "coffee", user="bob")]
        vecs = np.stack([embedder.embed_query("completely different words"), embedder.embed_query("zzz")])
        kb.add_facts(items, vectors=vecs)
        hit = kb.search("tea", query_vector=vecs[0])[0]
        assert hit.fact.object == "tea" and hit.vector_score == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- the directory


class TestDirectory:
    def _fill(self, kb):
        kb.add_facts([NewFact(f"Person{i}", "lives_in", f"City{i % 7}", text=f"Person{i} lives in City{i % 7}",
                              user=f"user{i % 3}", time=T0 + i) for i in range(60)])
        kb.add_fact("Person1", "lives_in", "Atlantis", user="user1", time=T0 + 1000)
        kb.add_fact("Earth", "orbits", "Sun", shared=True, user="user0")
        kb.add_episode("I think Person4 moved recently", user="user1", time=T0)
        kb.forget(kb.facts(entity="person5")[0].id)

    QUERIES = ["Person4 lives in City4", "where does person1 live", "City3", "earth sun", "moved recently"]

    def _observe(self, kb):
        return (search_fingerprint(kb, self.QUERIES), search_fingerprint(kb, self.QUERIES[:2], user="user1"),
                snapshot(kb), [f.sources for f in kb.facts(history=True)])

    def test_reopen_round_trip(self, kb, embedder):
        self._fill(kb)
        before = self._observe(kb)
        kb = reopen(kb, embedder)
        try:
            assert kb.open_report == []
            assert self._observe(kb) == before
            assert kb.verify().ok
        finally:
            kb.close()

    @pytest.mark.parametrize("which", ["index-fact.faiss", "index-episode.faiss"])
    @pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "empty"])
    def test_damaged_index_is_rebuilt_on_open(self, kb, embedder, damage, which):
        self._fill(kb)
        before = self._observe(kb)
        kb.close()
        index = kb.path / which
        if damage == "delete":
            index.unlink()
        elif damage == "garbage":
            index.write_bytes(b"\x00\xde\xad\xbe\xef not an index " * 100)
        elif damage == "truncate":
            index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
        else:
            index.write_bytes(b"")
        kb = KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET)
        try:
            report = " ".join(kb.open_report)
            assert "rebuild" in report and which in report
            assert self._observe(kb) == before
            rep = kb.verify()
            assert rep.ok and rep.missing == 0 and rep.unknown == 0
        finally:
            kb.close()
        # the repair was saved: the next open is clean
        with KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET) as again:
            assert again.open_report == []

    def test_index_that_lags_the_log_is_caught_up(self, kb, embedder, tmp_path):
        kb.add_facts([NewFact(f"Person{i}", "likes", f"hobby{i}", user="u") for i in range(10)])
        kb.add_episode("Person1 told me about hobby1", user="u")
        kb.save()
        stale = {name: tmp_path / name for name in ("index-fact.faiss", "index-episode.faiss")}
        for name, copy in stale.items():
            shutil.copy(kb.path / name, copy)
        kb.add_facts([NewFact(f"Person{i}", "likes", f"sport{i}", user="u") for i in range(10, 25)])
        kb.add_episode("Person12 told me about sport12", user="u")
        kb.forget(kb.facts(entity="person3")[0].id)  # forgotten after the stale copy was taken
        before = self._observe_simple(kb)
        kb.close()
        for name, copy in stale.items():
            shutil.copy(copy, kb.path / name)  # as if the process died before saving
        kb = KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET)
        try:
            assert any("index-fact.faiss lags the log by 15" in line for line in kb.open_report), kb.open_report
            assert any("index-episode.faiss lags the log by 1" in line for line in kb.open_report), kb.open_report
            assert self._observe_simple(kb) == before
            rep = kb.verify()
            assert rep.ok and rep.missing == 0 and rep.unknown == 0
        finally:
            kb.close()
        with KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET) as again:
            assert again.open_report == []

    def _observe_simple(self, kb):
        return search_fingerprint(kb, ["Person12 sport12", "hobby3", "Person20"]), snapshot(kb)[1]

    def test_index_from_another_kb_is_rebuilt(self, kb, embedder, tmp_path):
        other = KnowledgeBase.open(tmp_path / "other", embedder=embedder, config=QUIET)
        other.add_facts([NewFact(f"X{i}", "likes", f"y{i}", user="u") for i in range(30)])
        other.close()
        kb.add_facts([NewFact(f"Person{i}", "likes", f"hobby{i}", user="u") for i in range(5)])
        before = search_fingerprint(kb, ["Person1 hobby1"])
        kb.close()
        shutil.copy(tmp_path / "other" / "index-fact.faiss", kb.path / "index-fact.faiss")
        with KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET) as kb2:
            assert any("disagrees" in line for line in kb2.open_report)
            assert search_fingerprint(kb2, ["Person1 hobby1"]) == before
            assert kb2.verify().ok

    def test_index_is_saved_periodically_without_close(self, kb_path, embedder):
        kb = KnowledgeBase.open(kb_path, embedder=embedder, config=KBConfig(save_every=10, show_progress=False))
        try:
            assert not (kb_path / "index-fact.faiss").exists()
            kb.add_facts([NewFact(f"P{i}", "likes", f"h{i}", user="u") for i in range(12)])
            assert (kb_path / "index-fact.faiss").exists()
        finally:
            kb.close()

    def test_newer_format_version_is_refused_and_kb_unchanged(self, kb, embedder):
        self._fill(kb)
        before = self._observe(kb)
        kb.close()
        man_path = kb.path / "manifest.json"
        original = man_path.read_text()
        man = json.loads(original)
        man["format_version"] = 99
        man_path.write_text(json.dumps(man))
        db_bytes = (kb.path / "kb.sqlite").read_bytes()
        with pytest.raises(IncompatibleKBError, match="99"):
            KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET)
        with pytest.raises(IncompatibleKBError, match="99"):
            KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET, read_only=True)
        assert (kb.path / "kb.sqlite").read_bytes() == db_bytes
        assert json.loads(man_path.read_text())["format_version"] == 99
        man_path.write_text(original)
        with KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET) as kb2:
            assert self._observe(kb2) == before

    @pytest.mark.parametrize("content", ["{not json", "[]", '{"format_version": "1"}', '{"format_version": 1}'])
    def test_unreadable_manifest_is_incompatible(self, kb, embedder, content):
        kb.close()
        (kb.path / "manifest.json").write_text(content)
        with pytest.raises(IncompatibleKBError, match="manifest|format_version"):
            KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET)

    def test_embedder_of_another_dimension_is_refused_naming_both(self, kb, embedder):
        self._fill(kb)
        before = self._observe(kb)
        kb.close()
        with pytest.raises(IncompatibleKBError) as info:
            KnowledgeBase.open(kb.path, embedder=HashEmbedder(dim=32), config=QUIET)
        msg = str(info.value)
        assert "dimension 32" in msg and "dimension 64" in msg
        with pytest.raises(IncompatibleKBError, match="hash-embedder-64"):
            KnowledgeBase.open(kb.path, embedder=HashEmbedder(dim=64, id="other"), config=QUIET)
        # nothing was changed, and the failed opens did not keep the writer lock
        with KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET) as kb2:
            assert kb2.manifest.embedder_dim == 64
            assert self._observe(kb2) == before

    def test_directory_checks(self, tmp_path, embedder):
        f = tmp_path / "file"
        f.write_text("x")
        with pytest.raises(InvalidInputError, match="is a file"):
            KnowledgeBase.open(f, embedder=embedder)
        junk = tmp_path / "junk"
        junk.mkdir()
        (junk / "notes.txt").write_text("mine")
        with pytest.raises(IncompatibleKBError, match="not empty"):
            KnowledgeBase.open(junk, embedder=embedder)
        assert sorted(p.name for p in junk.iterdir()) == ["notes.txt"]
        with pytest.raises(NotFoundError):
            KnowledgeBase.open(tmp_path / "missing", embedder=embedder, read_only=True)
        with pytest.raises(NotFoundError):
            KnowledgeBase.open(tmp_path / "missing", embedder=embedder, create=False)
        assert not (tmp_path / "missing").exists()

    def test_closed_kb_refuses_writes(self, kb):
        kb.close()
        with pytest.raises(KBError, match="closed"):
            kb.add_fact("Alice", "likes", "tea", user="alice")
        kb.close()  # idempotent


# --------------------------------------------------------------------------- the writer lock


class TestLocking:
    def test_second_writer_is_refused_but_a_reader_sees_committed_facts(self, kb, embedder):
        kb.add_fact("Alice", "lives_in", "Paris", text="Alice lives in Paris", user="alice")
        with pytest.raises(KBLockedError, match=r"pid \d+"):
            KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET)
        reader = KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET, read_only=True)
        try:
            assert reader.read_only
            assert [h.fact.object for h in reader.search("Alice lives in Paris", user="alice", k=1)] == ["paris"]
            # the writer keeps writing; the reader sees every commit without reopening
            new = kb.add_fact("Bob", "likes", "zydeco", text="Bob likes zydeco", user="bob").fact
            kb.add_episode("zydeco is great", user="bob")
            hits = reader.search("zydeco", user="bob")
            assert new.id in hit_ids(hits) and any(h.kind.value == "episode" for h in hits)
            vec_hit = [h for h in reader.search("x", user="bob", query_vector=embedder.embed_query("Bob likes zydeco"))
                       if h.id == new.id]
            assert vec_hit and vec_hit[0].vector_score == pytest.approx(1.0, abs=1e-5)
            assert reader.fact(new.id).object == "zydeco"
            kb.forget(new.id)
            assert new.id not in hit_ids(reader.search("zydeco", user="bob"))
            assert reader.verify().ok
            with pytest.raises(KBError, match="read-only"):
                reader.add_fact("Carol", "likes", "tea", user="carol")
            with pytest.raises(KBError, match="read-only"):
                reader.forget(user="bob")
        finally:
            reader.close()
        # the reader never held the lock; closing the writer frees it for the next writer
        kb.close()
        with KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET) as again:
            assert again.facts(user="alice")[0].object == "paris"

    def test_reader_of_a_closed_kb(self, kb, embedder):
        kb.add_fact("Alice", "likes", "tea", user="alice")
        kb.close()
        with KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET, read_only=True) as reader:
            assert [f.object for f in reader.facts()] == ["tea"]
            assert reader.search("tea")[0].fact.object == "tea"
        with KnowledgeBase.open(kb.path, embedder=embedder, config=QUIET) as writer:
            writer.add_fact("Alice", "likes", "cake", user="alice")


# --------------------------------------------------------------------------- the fact log (storage seam)


class TestFactLog:
    def test_the_fact_log_implements_the_storage_protocol(self, tmp_path):
        import inspect

        from kb.log import FactLog, Storage

        log = FactLog(tmp_path / "kb.sqlite")
        try:
            wanted = [n for n, v in vars(Storage).items() if inspect.isfunction(v) and not n.startswith("_")]
            assert len(wanted) > 30
            for name in wanted:
                got, want = inspect.signature(getattr(FactLog, name)), inspect.signature(getattr(Storage, name))
                assert list(got.parameters) == list(want.parameters), name
            for attr in Storage.__annotations__:
                assert hasattr(log, attr), attr
        finally:
            log.close()

    def test_transaction_commits_or_rolls_back_everything(self, tmp_path):
        from kb.log import FactLog

        log = FactLog(tmp_path / "kb.sqlite")
        try:
            with log.transaction():
                log.add_user("alice", 1.0)
            with pytest.raises(OSError, match="simulated"):
                with log.transaction():
                    log.add_user("bob", 2.0)
                    log.set_alias("bobby", "bob")
                    raise OSError("simulated")
            assert log.users() == ["alice"] and "bobby" not in log.aliases()
            with log.transaction():  # the connection is usable again
                log.add_user("carol", 3.0)
            assert log.users() == ["alice", "carol"]
        finally:
            log.close()

    def test_vocabulary_follows_a_rolled_back_alias(self, kb, monkeypatch):
        kb.add_alias("Big Apple", "New York City")
        real = kb._log.set_alias

        def fail_after_write(alias, canonical):
            real(alias, canonical)
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(kb._log, "set_alias", fail_after_write)
        with pytest.raises(OSError):
            kb.add_alias("Gotham", "New York City")
        monkeypatch.undo()
        assert kb.resolve("Gotham") == "gotham" and kb.resolve("big apple") == "new york city"
