"""Probe evaluation: scores an extractor on the frozen probe set (examples/probes) per split.

Each probe is run in a fresh dialogue session the way the agent runs a turn (state tracker, intent,
preferences cut out first, extraction only for statements and corrections), after its ``context``
turns. Reported per split: precision and recall of the stored triples (a match is the same canonical
relation, the same polarity and an object containing the gold object after normalisation; subjects
are reported separately), non-facts stored as current facts, intent and preference accuracy, time
resolution, and the throughput of batched parsing + extraction on 20-word turns.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.errors import BadInputError
from agent.validation import check, within
from agent.language.intent import Intent
from agent.extraction.triple import ExtractionContext, Triple
from kb.facts import normalize_name, normalize_relation

#: modalities of probes whose non-gold triples must never be stored as current facts
NON_FACT = frozenset({"plan", "hypothetical", "wish", "reported", "question", "small_talk", "sarcasm", "request"})
#: modalities a probe may carry
MODALITIES = NON_FACT | {"asserted", "past", "negated"}
#: relations scored as the same one (the scenario scorer's table plus the ones probes use)
_SYNONYMS = {"wife": "spouse", "husband": "spouse", "married_to": "spouse", "boyfriend": "partner",
             "girlfriend": "partner", "full_name": "name", "first_name": "name", "job": "occupation",
             "job_title": "occupation", "profession": "occupation", "employer": "works_at",
             "birthday": "born_on", "date_of_birth": "born_on", "birthplace": "born_in", "owns_pet": "has_pet",
             "native_language": "speaks", "mom": "mother", "mum": "mother", "dad": "father",
             "flatmate": "roommate", "home_town": "grew_up_in"}
_ARTICLES = re.compile(r"^(?:the|a|an|my|his|her|their)\s+")
SPEAKER = "sam"  # the probes' "user"


@dataclass(frozen=True)
class ProbeEvalConfig:
    """What the probe run measures and how long the throughput part runs."""

    # every probe turn is said at this moment, so "next month" has one right answer (see README)
    turn_time: str = "2026-11-27T12:00:00+00:00"
    throughput_turns: int = within(400, 1, 10_000_000)  # turns parsed and extracted for the turns/s figure
    words_per_turn: int = within(20, 1, 10_000)  # the target is stated for 20-word turns
    batch_size: int = within(64, 1, 100_000)  # nlp.pipe batch size for the throughput run

    def __post_init__(self) -> None:
        try:
            datetime.fromisoformat(self.turn_time)
        except (TypeError, ValueError):
            raise BadInputError(f"ProbeEvalConfig.turn_time={self.turn_time!r} is not an ISO time") from None
        check(self)

    @property
    def now(self) -> float:
        return datetime.fromisoformat(self.turn_time).astimezone(timezone.utc).timestamp()


@dataclass(frozen=True)
class Probe:
    id: str
    split: str
    context: tuple[str, ...]
    text: str
    gold: tuple[dict[str, Any], ...]
    modality: str
    intent: str
    pref: dict[str, str]


@dataclass
class Tally:
    """Counts for one split."""

    items: int = 0
    gold: int = 0
    extracted: int = 0
    matched: int = 0
    subject_ok: int = 0
    non_fact_items: int = 0
    non_fact_stored: int = 0  # non-fact items where a non-gold current fact was stored
    intent_ok: int = 0
    pref_ok: int = 0
    timed_gold: int = 0
    time_ok: int = 0
    misses: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def ratio(a: int, b: int) -> float | None:
            return round(a / b, 3) if b else None
        return {"items": self.items, "gold": self.gold, "extracted": self.extracted, "matched": self.matched,
                "precision": ratio(self.matched, self.extracted), "recall": ratio(self.matched, self.gold),
                "subject_accuracy": ratio(self.subject_ok, self.matched),
                "non_fact_items": self.non_fact_items, "non_facts_stored_as_current": self.non_fact_stored,
                "intent_accuracy": ratio(self.intent_ok, self.items),
                "preference_accuracy": ratio(self.pref_ok, self.items),
                "time_resolved": f"{self.time_ok}/{self.timed_gold}"}


def load_probes(path: str | Path) -> list[Probe]:
    """The probes in ``path`` (a directory holding probes.jsonl, or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "probes.jsonl"
    if not p.is_file():
        raise BadInputError(f"no probe file at {str(p)!r}; pass examples/probes or a .jsonl file")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        d = json.loads(line)
        if d.get("split") not in ("dev", "test") or d.get("modality") not in MODALITIES:
            raise BadInputError(f"{p}:{n}: split must be dev|test and modality one of {sorted(MODALITIES)}")
        out.append(Probe(d["id"], d["split"], tuple(d["context"]), d["text"], tuple(d["gold"]),
                         d["modality"], Intent.parse(d["intent"]).value, dict(d["pref"])))
    return out


def canon_relation(relation: str) -> str:
    rel = normalize_relation(relation)
    return _SYNONYMS.get(rel, rel)


def norm_value(value: str) -> str:
    v = " ".join(re.sub(r"[^\w@.'-]+", " ", value.lower().replace("’", "'")).split()).strip(".")
    return _ARTICLES.sub("", v)


def is_stored(t: Triple) -> bool:
    """Whether write-back stores ``t`` at all (a fact, a plan, or a retraction)."""
    return getattr(t, "stored", True)


def is_current(t: Triple) -> bool:
    """Whether ``t`` would be stored as a fact that holds now (and may supersede)."""
    current = getattr(t, "current", None)
    return bool(current) if current is not None else not t.negated


def _subject(gold: str) -> str:
    return normalize_name(gold.replace("user", SPEAKER, 1) if gold.startswith("user") else gold)


class Session:
    """A fresh dialogue with an in-memory fact table: the tracker and extractor as the agent uses them."""

    def __init__(self, nlp, extractor, now: float):
        from agent.dialogue.state import DialogueState, StateTracker

        self.facts: dict[tuple[str, str], str] = {}
        self.names: set[str] = set()
        self.tracker = StateTracker(nlp, self._known, self._lookup)
        self.state = DialogueState.new(SPEAKER, "probe")
        self.extractor = extractor
        self.now = now

    def _known(self, names: list[str]) -> list[str]:
        return [n for n in names if n in self.names]

    def _lookup(self, subject: str, relation: str) -> str | None:
        return self.facts.get((normalize_name(subject), relation))

    def say(self, text: str) -> tuple[Intent, list[Triple], dict[str, str]]:
        from agent.profile.preference import find_preferences
        from agent.profile.profile import PREFERENCE_RELATIONS, Profile

        turn = self.tracker.update(self.state, SPEAKER, text, self.now)
        ctx = self.tracker.context_for(self.state, turn)
        if "now" in ExtractionContext.__dataclass_fields__:
            ctx = replace(ctx, now=self.now)
        prefs = find_preferences(text, Profile(SPEAKER))
        rest = prefs.rest if prefs.changes else text
        triples: list[Triple] = []
        if turn.intent in (Intent.STATEMENT, Intent.CORRECTION) and rest.strip():
            doc = self.tracker.last_doc
            triples = self.extractor.extract(rest, ctx, doc=doc if doc is not None and doc.text == rest else None)
            triples = [t for t in triples if t.relation not in PREFERENCE_RELATIONS and is_stored(t)]
        for t in triples:
            self.names.update({normalize_name(t.subject), normalize_name(t.object)})
            if is_current(t):
                self.facts[(normalize_name(t.subject), t.relation)] = t.object
        self.tracker.apply_learned(self.state, triples)
        changes = {c.key.value: c.value for c in prefs.changes}
        return turn.intent, triples, changes


def score(probes: Iterable[Probe], nlp, extractor, config: ProbeEvalConfig) -> dict[str, Tally]:
    """Run every probe in its own session; tallies per split and for ``all``."""
    tallies = {"dev": Tally(), "test": Tally(), "all": Tally()}
    for p in probes:
        session = Session(nlp, extractor, config.now)
        for c in p.context:
            session.say(c)
        intent, triples, changes = session.say(p.text)
        free = list(triples)
        matched: list[tuple[dict[str, Any], Triple]] = []
        missed = []
        for gold in p.gold:
            rel, obj, neg = canon_relation(gold["r"]), norm_value(gold["o"]), bool(gold.get("neg"))
            hit = next((t for t in free if canon_relation(t.relation) == rel and t.negated == neg
                        and obj in norm_value(t.object)), None)
            if hit is None:
                missed.append(gold)
                continue
            free.remove(hit)
            matched.append((gold, hit))
        wrong_current = [t for t in free if is_current(t)]
        for tally in (tallies[p.split], tallies["all"]):
            tally.items += 1
            tally.gold += len(p.gold)
            tally.extracted += len(triples)
            tally.matched += len(matched)
            tally.subject_ok += sum(normalize_name(t.subject) == _subject(g["s"]) for g, t in matched)
            tally.intent_ok += intent.value == p.intent
            tally.pref_ok += changes == p.pref
            for g, t in matched:
                if g.get("when"):
                    tally.time_ok += str(getattr(t, "time", None) or "").startswith(g["when"])
            tally.timed_gold += sum(1 for g in p.gold if g.get("when"))
            if p.modality in NON_FACT:
                tally.non_fact_items += 1
                tally.non_fact_stored += bool(wrong_current)
        if p.split == "dev" and (missed or free or intent.value != p.intent or changes != p.pref):
            tallies["dev"].misses.append({
                "id": p.id, "text": p.text, "intent": f"{intent.value} (want {p.intent})",
                "missed": [f"{g['r']} {g['o']}{' (neg)' if g.get('neg') else ''}" for g in missed],
                "spurious": [f"{t.subject} {t.relation} {t.object}{' (neg)' if t.negated else ''}"
                             f" [{getattr(t, 'modality', '-')}]" for t in free],
                "pref": f"{changes} (want {p.pref})"})
    return tallies


def throughput(probes: list[Probe], nlp, extractor, config: ProbeEvalConfig) -> dict[str, Any]:
    """Turns per second of batched nlp.pipe + extraction over ``words_per_turn``-word turns."""
    words = [w for p in probes for w in p.text.split()]
    n = config.words_per_turn
    turns = [" ".join((words * (n * config.throughput_turns // max(1, len(words)) + 2))[i * n:(i + 1) * n])
             for i in range(config.throughput_turns)]
    ctx = ExtractionContext(SPEAKER)
    t0 = time.perf_counter()
    docs = list(nlp.pipe(turns, batch_size=config.batch_size))
    t1 = time.perf_counter()
    for doc in docs:
        extractor.extract(doc.text, ctx, doc=doc)
    t2 = time.perf_counter()
    return {"turns": len(turns), "words_per_turn": n, "parse_s": round(t1 - t0, 3), "extract_s": round(t2 - t1, 3),
            "turns_per_s": round(len(turns) / (t2 - t0), 1), "extract_only_turns_per_s": round(len(turns) / (t2 - t1), 1),
            "cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}  # a shared machine's load skews it


def build(kind: str, nlp):
    from agent.extraction.extract import build_extractor

    if kind in ("llm", "llm-json"):
        from agent.generation.llm import CausalLM, LLMConfig  # the packaged model; slow, run deliberately

        llm = CausalLM(LLMConfig())
        if kind == "llm-json":  # constrained JSON decoding (agent.extraction.constrained)
            return build_extractor("llm", llm=llm)
        return build_extractor("llm", generate=lambda prompt: llm.complete(prompt, max_new_tokens=160))
    return build_extractor(kind, nlp=nlp)


def _timed(probes: list[Probe]) -> Iterable[Probe]:
    """``probes``, printing to stderr how long each took to score (its context turns included)."""
    t = time.perf_counter()
    for n, p in enumerate(probes, 1):
        yield p
        now = time.perf_counter()
        print(f"probe {n}/{len(probes)} {p.id} ({p.split}): {now - t:.1f}s", file=sys.stderr, flush=True)
        t = now


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.evals.probe_eval", description=__doc__.splitlines()[0])
    ap.add_argument("probes", help="directory holding probes.jsonl (examples/probes)")
    ap.add_argument("--json", help="write the report to this file")
    ap.add_argument("--extractor", default="patterns", choices=["patterns", "llm", "llm-json"],
                    help="llm: the packaged model's free-text JSON; llm-json: the same under constrained decoding")
    ap.add_argument("--show", action="store_true", help="print the dev split's misses (never the test split's)")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--split", default="all", choices=["all", "dev", "test"],
                    help="score only this split (a slow extractor's run on the test split alone)")
    ap.add_argument("--progress", action="store_true", help="print each probe's seconds to stderr")
    args = ap.parse_args(argv)
    from agent.language.nlp import load_nlp

    config = ProbeEvalConfig()
    probes = [p for p in load_probes(args.probes) if args.split in ("all", p.split)]
    nlp = load_nlp()
    extractor = build(args.extractor, nlp)
    t0 = time.perf_counter()
    tallies = score(_timed(probes) if args.progress else probes, nlp, extractor, config)
    seconds = time.perf_counter() - t0
    report: dict[str, Any] = {"extractor": args.extractor, "probes": len(probes), "turn_time": config.turn_time,
                              "splits": {k: v.summary() for k, v in tallies.items()},
                              "seconds": round(seconds, 1), "seconds_per_probe": round(seconds / max(1, len(probes)), 2)}
    if hasattr(extractor, "calls"):  # the LLM extractor: model calls made and outputs thrown away
        report["llm_calls"], report["llm_rejected"] = extractor.calls, extractor.rejected
    if not args.no_throughput:
        report["throughput"] = throughput(probes, nlp, extractor, config)
    if args.show:
        for m in tallies["dev"].misses:
            print(json.dumps(m, ensure_ascii=False))
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
