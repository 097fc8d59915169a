"""A tour of the knowledge base on the packaged embedder: build, supersede, export, re-import, compare.

Run:  python examples/kb_tour.py [--out DIR]
"""
from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from kb import KnowledgeBase, NewFact
from kb.facts import iso

PEOPLE = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
          "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Uma", "Victor", "Walter"]
CITIES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Oslo", "Dublin"]
EMPLOYERS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises"]
HOBBIES = ["chess", "climbing", "painting", "jazz", "gardening", "cycling", "poetry", "sailing", "baking"]
PETS = ["a cat", "a dog", "a parrot", "two goldfish", "a tortoise"]


def synthetic_facts(rng: random.Random) -> list[NewFact]:
    """A few hundred facts about 20 people told by two users, plus shared world knowledge."""
    out: list[NewFact] = []
    for i, p in enumerate(PEOPLE):
        user = "ana" if i % 2 == 0 else "ben"
        city, job = rng.choice(CITIES), rng.choice(EMPLOYERS)
        out.append(NewFact(p, "lives_in", city, f"{p} lives in {city}.", user=user, source_id=f"seed/{p}/1"))
        out.append(NewFact(p, "works_at", job, f"{p} works at {job}.", user=user, source_id=f"seed/{p}/2"))
        out.append(NewFact(p, "age", str(rng.randint(20, 70)), None, user=user, source_id=f"seed/{p}/3"))
        for h in rng.sample(HOBBIES, 4):
            out.append(NewFact(p, "likes", h, f"{p} likes {h}.", user=user, source_id=f"seed/{p}/hobby"))
        out.append(NewFact(p, "owns", rng.choice(PETS), None, user=user, source_id=f"seed/{p}/pet"))
        friend = rng.choice([q for q in PEOPLE if q != p])
        out.append(NewFact(p, "friend_of", friend, f"{p} is a friend of {friend}.", user=user))
        for other in rng.sample([q for q in PEOPLE if q != p], 3):
            out.append(NewFact(p, "knows", other, f"{p} knows {other}.", user=user))
    for city in CITIES:
        out.append(NewFact(city, "is_a", "city", f"{city} is a European city.", shared=True, user="ana"))
    return out


def show(hits) -> list[tuple[str, float]]:
    rows = []
    for h in hits:
        rows.append((h.id, round(h.score, 6)))
        print(f"    {h.score:.4f}  {h.kind.value:7}  {h.text}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None, help="directory for the KBs and exports (default: a temp dir)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="kgrow-tour-"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(7)

    print(f"1. building a knowledge base in {out / 'kb'}")
    kb = KnowledgeBase.open(out / "kb")
    facts = synthetic_facts(rng)
    t = time.perf_counter()
    kb.add_facts(facts)
    print(f"   {len(facts)} facts added in {time.perf_counter() - t:.2f} s; {kb.stats().facts_active} active")
    again = kb.add_fact("alice", "likes", facts[3].object, user="ana", source_id="chat/42")
    print(f"   stating '{again.fact.text}' again: created={again.created}, sources={len(again.fact.sources)}")

    print("2. a contradiction: Alice moves to Tokyo")
    moved = kb.add_fact("Alice", "lives in", "Tokyo", text="Alice moved to Tokyo.", user="ana", source_id="chat/43")
    for old in moved.superseded:
        print(f"   superseded: '{old.text}' (valid until {iso(old.valid_to)})")
    versions, events = kb.history(moved.fact.id)
    for v in versions:
        print(f"   history: {v.status.value:10} {v.text!r:28} {iso(v.valid_from)} -> {iso(v.valid_to)}")
    if moved.superseded:
        then = moved.superseded[0].valid_from + 1e-3  # a moment while the old value held
        was = kb.facts(user="ana", entity="alice", relation="lives_in", as_of=then)
        now_ = kb.facts(user="ana", entity="alice", relation="lives_in")
        print(f"   as of {iso(then)} Alice lived in {[f.object for f in was]}; now in {[f.object for f in now_]}")

    queries = [("Where does Alice live?", "ana"), ("Who works at Acme?", "ben"), ("Which cities are in Europe?", "ben"),
               ("who likes jazz", "ana")]
    print("3. searching")
    results = {}
    for q, u in queries:
        print(f"   [{u}] {q}")
        results[(q, u)] = show(kb.search(q, k=4, user=u))

    print("4. exporting")
    n = kb.export(out / "export.jsonl", "jsonl", vectors=True)
    g = kb.export(out / "graph.graphml", "graphml")
    print(f"   {n} JSONL records -> {out / 'export.jsonl'}; {g} graph records -> {out / 'graph.graphml'}")
    kb.close()

    print(f"5. re-importing into a fresh directory {out / 'kb2'}")
    kb2 = KnowledgeBase.open(out / "kb2")
    report = kb2.import_(out / "export.jsonl")
    print(f"   imported: {report}")
    same = True
    for q, u in queries:
        again_hits = [(h.id, round(h.score, 6)) for h in kb2.search(q, k=4, user=u)]
        same &= again_hits == results[(q, u)]
    print(f"   identical search results after re-import: {same}")
    print(f"   verify: {kb2.verify().ok}")
    kb2.close()
    if not same:
        raise SystemExit("search results differ after re-import")


if __name__ == "__main__":
    main()
