"""The fact graph: a networkx MultiDiGraph of entities (nodes) and current facts (edges)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import networkx as nx

from kb.errors import InvalidInputError, NotFoundError
from kb.facts import Fact, normalize_name


@dataclass
class FactGraph:
    """Entities as nodes, one edge per fact (key = fact id, attributes = relation, text, confidence)."""

    graph: nx.MultiDiGraph
    user: str | None  # whose view this is (None: every user)

    @classmethod
    def from_facts(cls, facts: Iterable[Fact], user: str | None = None) -> "FactGraph":
        g = nx.MultiDiGraph()
        for f in facts:
            g.add_edge(f.subject, f.object, key=f.id, relation=f.relation, text=f.text,
                       confidence=f.confidence, user=f.user, valid_from=f.valid_from)
        return cls(g, user)

    def neighbourhood(self, entity: str, hops: int = 1) -> "FactGraph":
        """Subgraph of everything within ``hops`` edges of ``entity`` (edges followed both ways)."""
        if not isinstance(hops, int) or hops < 0 or hops > 6:
            raise InvalidInputError(f"hops={hops!r} is invalid; give an integer from 0 to 6")
        name = normalize_name(entity)
        if name not in self.graph:
            raise NotFoundError(f"entity {entity!r} is not in the graph")
        seen = {name}
        frontier = {name}
        for _ in range(hops):
            nxt = set()
            for n in frontier:
                nxt.update(self.graph.successors(n))
                nxt.update(self.graph.predecessors(n))
            frontier = nxt - seen
            seen |= frontier
        return FactGraph(self.graph.subgraph(seen).copy(), self.user)

    def fact_ids(self) -> list[str]:
        return [k for _, _, k in self.graph.edges(keys=True)]

    def paths(self, source: str, target: str, max_hops: int = 3) -> list[list[str]]:
        """Fact-id paths (ignoring direction) linking two entities, shortest first."""
        a, b = normalize_name(source), normalize_name(target)
        if a not in self.graph or b not in self.graph:
            return []
        und = self.graph.to_undirected(as_view=True)
        out = []
        for nodes in nx.all_simple_paths(und, a, b, cutoff=max_hops):
            ids = []
            for u, v in zip(nodes, nodes[1:]):
                ids.append(next(iter(self.graph.get_edge_data(u, v) or self.graph.get_edge_data(v, u))))
            out.append(ids)
        return sorted(out, key=len)
