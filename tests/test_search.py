"""Hybrid search: each retriever contributes, hits explain themselves, users and time are respected,
the HNSW path gives the same answers, and no query text can break the keyword engine."""
from __future__ import annotations

import pytest

from kb import (IndexConfig, IndexKind, KBConfig, Kind, KnowledgeBase, NewFact, Source,
                Status)
from kb.search import HybridSearcher

T0 = 1_700_000_000.0
DAY = 86_400.0


def ids(hits) -> list[str]:
    return [h.id for h in hits]


def fillers(n: int, user: str = "alice", start: int = 0) -> list[NewFact]:
    return [NewFact(f"Filler{i}", "owns", f"gadget{i}", text=f"Filler{i} owns gadget{i} model {i % 13}",
                    user=user, time=T0) for i in range(start, start + n)]


@pytest.fixture
def world(kb):
    """Two users with private facts and episodes, shared facts, history, and a crowd of fillers."""
    kb.add_facts(fillers(150))
    f = {}
    f["alice_city"] = kb.add_fact("Alice", "lives_in", "Paris", text="Alice lives in Paris", user="alice",
                                  time=T0, source_id="a/1").fact
    f["alice_city2"] = kb.add_fact("Alice", "lives_in", "Lisbon", text="Alice moved to Lisbon", user="alice",
                                   time=T0 + 10 * DAY, source_id="a/2").fact
    f["bob_music"] = kb.add_fact("Bob", "likes", "jazz", text="He enjoys improvised music at night", user="alice",
                                 time=T0, source_id="a/3").fact
    f["carol_spouse"] = kb.add_fact("Carol", "married_to", "Bob", text="Carol has a husband", user="alice",
                                    time=T0).fact
    f["rare"] = kb.add_fact("Alice", "collects", "stamps", text="Alice collects zanzibar stamps", user="alice",
                            time=T0).fact
    f["nyc"] = kb.add_fact("Dan", "lives_in", "NYC", text="Dan resides in the big city", user="alice",
                           time=T0).fact
    f["bob_secret"] = kb.add_fact("Bob", "password_is", "hunter2", text="Bob's password is hunter2",
                                  user="bob", time=T0).fact
    f["bob_city"] = kb.add_fact("Alice", "lives_in", "Berlin", text="Alice lives in Berlin", user="bob",
                                time=T0).fact
    f["shared"] = kb.add_fact("Paris", "capital_of", "France", text="Paris is the capital of France",
                              shared=True, user="bob", time=T0).fact
    f["forgotten"] = kb.add_fact("Alice", "likes", "opera", text="Alice likes opera", user="alice", time=T0).fact
    kb.forget(f["forgotten"].id)
    e = {}
    e["alice_ep"] = kb.add_episode("I just moved to Lisbon, the weather is lovely", user="alice",
                                   source_id="chat/1", time=T0 + 10 * DAY)
    e["bob_ep"] = kb.add_episode("My password is hunter2, do not tell Alice", user="bob", source_id="chat/2",
                                 time=T0 + DAY)
    kb.facts_ = f
    kb.eps_ = e
    return kb


# --------------------------------------------------------------------------- the three retrievers


class TestRetrievers:
    def test_vector_alone_finds_a_paraphrase(self, world, embedder):
        target = world.facts_["rare"]
        # a query sharing no word with the text, carrying the text's own embedding
        hits = world.search("philately hobby?", user="alice", query_vector=embedder.embed_query(target.text))
        assert hits[0].id == target.id
        assert hits[0].vector_score == pytest.approx(1.0, abs=1e-5)
        assert hits[0].keyword_rank is None and hits[0].via_entities == ()

    def test_keyword_alone_finds_a_rare_word(self, world, embedder):
        target = world.facts_["rare"]
        unrelated = embedder.embed_query("Filler3 owns gadget3 model 3")
        hits = world.search("zanzibar", user="alice", query_vector=unrelated)
        by_id = {h.id: h for h in hits}
        assert target.id in by_id
        assert by_id[target.id].keyword_rank == 1
        assert hits.index(by_id[target.id]) < 3

    def test_graph_finds_a_fact_only_reachable_through_a_mentioned_entity(self, world):
        music, spouse = world.facts_["bob_music"], world.facts_["carol_spouse"]
        hits = world.search("what about bob", k=5, user="alice")
        by_id = {h.id: h for h in hits}
        # neither text mentions bob: only the graph (bob as subject / as object) can bring them
        assert "bob" not in music.text.lower() and "bob" not in spouse.text.lower()
        for f in (music, spouse):
            assert f.id in by_id, [h.text for h in hits]
            assert by_id[f.id].via_entities == ("bob",)
            assert by_id[f.id].keyword_rank is None

    def test_graph_resolves_aliases_in_the_query(self, world):
        hits = world.search("anyone in NYC?", k=5, user="alice")
        h = next(h for h in hits if h.id == world.facts_["nyc"].id)
        assert h.via_entities == ("new york city",)

    def test_fusion_prefers_agreement(self, world):
        hits = world.search("Alice lives in Lisbon", user="alice")
        top = hits[0]
        assert top.id == world.facts_["alice_city2"].id or top.kind is Kind.EPISODE
        fact_hit = next(h for h in hits if h.id == world.facts_["alice_city2"].id)
        assert fact_hit.vector_score is not None and fact_hit.keyword_rank is not None
        assert "alice" in fact_hit.via_entities
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert all(s > 0 for s in scores)

    def test_k_bounds_the_results(self, world):
        for k in (1, 3, 7):
            assert len(world.search("Filler owns gadget", k=k)) == k
        assert len(world.search("Filler owns gadget", k=1000)) <= 1000

    def test_empty_kb_returns_nothing(self, kb):
        assert kb.search("anything at all") == []


# --------------------------------------------------------------------------- hits


class TestHits:
    def test_fact_hit_fields(self, world):
        hit = next(h for h in world.search("Alice moved to Lisbon", user="alice")
                   if h.id == world.facts_["alice_city2"].id)
        assert hit.kind is Kind.FACT and hit.episode is None
        assert hit.fact.text == hit.text == "Alice moved to Lisbon"
        assert hit.fact.status is Status.ACTIVE and hit.fact.user == "alice"
        assert [s.source_id for s in hit.provenance] == ["a/2"]
        assert hit.provenance[0].user == "alice" and hit.provenance[0].time == T0 + 10 * DAY

    def test_episode_hit_fields(self, world):
        ep = world.eps_["alice_ep"]
        hit = next(h for h in world.search("weather lovely", user="alice") if h.kind is Kind.EPISODE)
        assert hit.episode == ep and hit.fact is None
        assert hit.id == ep.id and hit.text == ep.text
        assert hit.provenance == (Source("chat/1", "alice", T0 + 10 * DAY, ep.id),)
        assert hit.via_entities == ()

    def test_kinds_filter(self, world):
        only_eps = world.search("Lisbon password weather", k=50, kinds=["episode"])
        assert only_eps and all(h.kind is Kind.EPISODE and h.fact is None for h in only_eps)
        only_facts = world.search("Lisbon password weather", k=50, kinds=[Kind.FACT, "fact"])
        assert only_facts and all(h.kind is Kind.FACT and h.episode is None for h in only_facts)
        both = world.search("Lisbon password weather", k=50)
        assert {h.kind for h in both} == {Kind.FACT, Kind.EPISODE}


# --------------------------------------------------------------------------- users


class TestUserScoping:
    QUERIES = ["Bob's password is hunter2", "what about bob", "hunter2", "Alice lives in Berlin",
               "do not tell Alice", "where does alice live", "capital of France"]

    def test_user_never_sees_another_users_private_facts_or_episodes(self, world):
        bob_private = {world.facts_["bob_secret"].id, world.facts_["bob_city"].id, world.eps_["bob_ep"].id}
        for q in self.QUERIES:
            hits = world.search(q, k=100, user="alice")
            assert not bob_private & set(ids(hits)), q
            for h in hits:
                if h.fact is not None:
                    assert h.fact.user in ("alice", "")
                else:
                    assert h.episode.user == "alice"
        # even with the secret's own vector
        qv = world.embedder.embed_query(world.facts_["bob_secret"].text)
        assert world.facts_["bob_secret"].id not in ids(world.search("hunter2", k=200, user="alice", query_vector=qv))

    def test_user_sees_own_and_shared(self, world):
        hits = world.search("capital of France", user="alice")
        assert world.facts_["shared"].id in ids(hits)
        hits = world.search("Bob's password is hunter2", user="bob")
        assert ids(hits)[0] == world.facts_["bob_secret"].id
        assert world.facts_["shared"].id in ids(world.search("capital of France", user="bob"))

    def test_no_user_sees_everyone(self, world):
        got = set(ids(world.search("Bob's password hunter2 Alice lives", k=200)))
        assert {world.facts_["bob_secret"].id, world.facts_["alice_city2"].id, world.facts_["shared"].id,
                world.eps_["bob_ep"].id} <= got

    def test_user_with_nothing_yet_searches_only_shared(self, world):
        world.ensure_user("zoe")
        hits = world.search("Paris capital France Alice Bob hunter2", k=100, user="zoe")
        assert ids(hits) == [world.facts_["shared"].id]


# --------------------------------------------------------------------------- status and time


class TestStatusAndTime:
    def test_forgotten_and_superseded_never_appear_in_current_search(self, world):
        forgotten, old = world.facts_["forgotten"], world.facts_["alice_city"]
        assert world.fact(old.id).status is Status.SUPERSEDED
        for user in ("alice", None):
            for q in ("Alice likes opera", "opera", "Alice lives in Paris", "where does alice live"):
                got = ids(world.search(q, k=200, user=user))
                assert forgotten.id not in got and old.id not in got
            qv = world.embedder.embed_query(old.text)
            assert old.id not in ids(world.search("x", k=200, user=user, query_vector=qv))

    def test_as_of_search_finds_superseded_fact_in_its_window(self, world):
        old, new = world.facts_["alice_city"], world.facts_["alice_city2"]
        then = world.search("Alice lives in Paris", user="alice", as_of=T0 + DAY)
        assert old.id in ids(then) and new.id not in ids(then)
        now = world.search("Alice lives in Paris", user="alice", as_of=T0 + 11 * DAY)
        assert new.id in ids(now) and old.id not in ids(now)
        before = world.search("Alice lives in Paris", user="alice", as_of=T0 - DAY)
        assert not {old.id, new.id} & set(ids(before))
        # forgotten facts are gone from the past too
        assert world.facts_["forgotten"].id not in ids(world.search("opera", user="alice", as_of=T0 + DAY))

    def test_as_of_search_skips_episodes_said_later(self, world):
        ep = world.eps_["alice_ep"]
        assert ep.id not in ids(world.search("weather lovely", user="alice", as_of=T0 + DAY))
        assert ep.id in ids(world.search("weather lovely", user="alice", as_of=T0 + 11 * DAY))

    def test_forget_user_hides_their_episodes(self, world):
        world.forget(user="bob")
        got = world.search("My password is hunter2", k=200)
        assert world.eps_["bob_ep"].id not in ids(got)
        assert world.facts_["bob_secret"].id not in ids(got)
        assert world.facts_["shared"].id in ids(world.search("capital of France"))


# --------------------------------------------------------------------------- HNSW


def _hnsw_kb(path, embedder, **index_kw):
    return KnowledgeBase.open(path, embedder=embedder,
                              config=KBConfig(index=IndexConfig(**index_kw), show_progress=False))


class TestHNSW:
    QUERIES = ["Filler7 owns gadget7", "gadget42 model", "Alice lives in Paris", "model 5", "Filler99"]

    def _data(self):
        return fillers(120) + [NewFact("Alice", "lives_in", "Paris", text="Alice lives in Paris", user="alice")]

    def test_auto_switches_to_hnsw_with_same_results(self, tmp_path, embedder):
        flat = _hnsw_kb(tmp_path / "flat", embedder, kind=IndexKind.FLAT)
        auto = _hnsw_kb(tmp_path / "auto", embedder, hnsw_threshold=50)
        try:
            flat.add_facts(self._data()[:40])
            auto.add_facts(self._data()[:40])
            assert auto.stats().index_kind == "flat"
            flat.add_facts(self._data()[40:])
            auto.add_facts(self._data()[40:])
            assert auto.stats().index_kind == "hnsw" and flat.stats().index_kind == "flat"
            for q in self.QUERIES:
                assert ids(auto.search(q, k=5)) == ids(flat.search(q, k=5)), q
            assert auto.verify().ok
        finally:
            flat.close()
            auto.close()

    def test_forced_hnsw_survives_reopen(self, kb_path, embedder):
        kb = _hnsw_kb(kb_path, embedder, kind=IndexKind.HNSW)
        kb.add_facts(self._data())
        before = [ids(kb.search(q, k=5)) for q in self.QUERIES]
        assert kb.stats().index_kind == "hnsw"
        kb.close()
        kb = _hnsw_kb(kb_path, embedder, kind=IndexKind.HNSW)
        try:
            assert kb.open_report == [] and kb.stats().index_kind == "hnsw"
            assert [ids(kb.search(q, k=5)) for q in self.QUERIES] == before
        finally:
            kb.close()

    def test_facts_added_after_compaction_are_found_by_vector(self, kb_path, embedder):
        kb = _hnsw_kb(kb_path, embedder, kind=IndexKind.HNSW, compact_ratio=0.25)
        try:
            res = kb.add_facts(fillers(20))
            for r in res[:10]:  # past compact_ratio: the index is compacted
                kb.forget(r.fact.id)
            new = kb.add_fact("Alice", "collects", "stamps", text="Alice collects zanzibar stamps", user="alice")
            hits = kb.search("philately?", query_vector=embedder.embed_query(new.fact.text))
            assert hits and hits[0].id == new.fact.id
            assert hits[0].vector_score == pytest.approx(1.0, abs=1e-5)
            forgotten = {r.fact.id for r in res[:10]}
            assert not forgotten & set(ids(kb.search("Filler owns gadget", k=100)))
            rep = kb.verify()
            assert rep.ok and rep.missing == 0
        finally:
            kb.close()

    def test_tiny_user_among_many_falls_back_to_exact_scan(self, kb_path, embedder, monkeypatch):
        kb = _hnsw_kb(kb_path, embedder, kind=IndexKind.HNSW, ef_construction=16, hnsw_m=8)
        calls = []
        real = HybridSearcher._exact_scan

        def spy(self, *a, **kw):
            calls.append(a[2].user)  # scope
            return real(self, *a, **kw)

        monkeypatch.setattr(HybridSearcher, "_exact_scan", spy)
        try:
            kb.add_facts(fillers(4200, user="big"))
            mine = kb.add_facts([
                NewFact("Tina", "likes", "tea", text="Tina likes green tea", user="tiny"),
                NewFact("Tina", "lives_in", "Oslo", text="Tina lives in Oslo", user="tiny"),
                NewFact("Tina", "owns", "gadget7", text="Tina owns gadget7 model 7", user="tiny"),
            ])
            hits = kb.search("Filler7 owns gadget7 model 7", k=10, user="tiny")
            assert calls == ["tiny"]
            assert sorted(ids(hits)) == sorted(r.fact.id for r in mine)
            qv = embedder.embed_query("Filler7 owns gadget7 model 7")
            for h in hits:
                assert h.fact.user == "tiny"
                assert h.vector_score == pytest.approx(float(embedder.embed_query(h.text) @ qv), abs=1e-5)
            assert hits[0].fact.object == "gadget7"
            # the big user is served by the graph index, no fallback
            calls.clear()
            big = kb.search("Filler7 owns gadget7 model 7", k=10, user="big")
            assert calls == [] and big[0].text.startswith("Filler7 owns gadget7")
        finally:
            kb.close()


# --------------------------------------------------------------------------- query syntax


NASTY = ['"', '""', '"alice', 'alice"', "alice\" OR 1=1 --", "*", "ali*", "* OR *", "NEAR(alice paris)",
         "alice NEAR paris", "NEAR/2", "-alice", "alice -paris", "(alice", "alice)", "((()))", "AND", "OR", "NOT",
         "alice AND NOT paris", "^alice", "alice:paris", "text:alice", "{alice paris}", "[alice]",
         "'; DROP TABLE facts; --", "🙂", "\\", "%", "_", "a" * 5000, "alice " * 300, "ünïcødé ≠ ascii",
         "+alice +paris", "alice~2", "col:*", "\u200b", "\ufeffalice"]


@pytest.mark.parametrize("query", NASTY)
def test_query_syntax_cannot_break_search(world, query):
    before = len(world.facts())
    for user in ("alice", None):
        hits = world.search(query, k=10, user=user)
        assert isinstance(hits, list) and len(hits) <= 10
    assert len(world.facts()) == before


def test_quoted_and_punctuated_queries_still_match_words(world):
    for q in ('"zanzibar"', "zanzibar*", "(zanzibar)", "-zanzibar", "NEAR(zanzibar)"):
        hits = world.search(q, user="alice")
        assert any(h.id == world.facts_["rare"].id and h.keyword_rank == 1 for h in hits), q
