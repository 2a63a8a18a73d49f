"""Subnet search over the architectures of a space: SPOS's evolution, or random sampling.

Architectures are rows of option numbers (`archnas.latency.table`), one per label. A search is a
sequence of generations; each proposes candidates, which the caller scores, and the state after a
generation (its number, the RNG, every scored candidate) is all a resumed search needs, so a
search checkpointed after each generation and killed anywhere ends where an uninterrupted one
does.

Evolution (Guo et al., SPOS, ECCV 2020; NNI's SPOS example uses the same defaults): generation 0
is `population` random candidates; every later one is `mutations` mutants (a random parent among
the `parents` best scored so far, each label redrawn with probability `mutation_prob`) and
`crossovers` children (each label from one of two random parents), topped up with random ones
when too few new valid candidates turn up. Candidates are never scored twice, and a candidate
the limits reject (`allows`) is never proposed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

Row = tuple[int, ...]


@dataclass
class EvolutionSettings:
    population: int = 50
    parents: int = 10
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1
    generations: int = 20


@dataclass
class Scored:
    row: Row
    score: float
    generation: int

    def to_dict(self) -> dict[str, Any]:
        return {"row": list(self.row), "score": self.score, "generation": self.generation}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scored":
        return cls(tuple(int(k) for k in d["row"]), float(d["score"]), int(d["generation"]))


@dataclass
class SearchState:
    """Everything a search carries from one generation to the next (checkpointed after each)."""

    generation: int = 0
    rng_state: Any = None
    scored: list[Scored] = field(default_factory=list)  # in the order they were scored
    seconds: float = 0.0  # spent scoring, over all runs of the search

    def state_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "rng_state": self.rng_state,
                "scored": [s.to_dict() for s in self.scored], "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generation = int(state["generation"])
        version, internal, gauss = state["rng_state"]  # random.Random's state, as saved (tuples may come back as lists)
        self.rng_state = (int(version), tuple(int(v) for v in internal), gauss)
        self.scored = [Scored.from_dict(d) for d in state["scored"]]
        self.seconds = float(state["seconds"])


class SubnetSearch:
    """Proposes the candidates of each generation; subclasses say how."""

    def __init__(self, option_counts: Sequence[int], seed: int, allows: Callable[[Row], bool], max_tries: int = 100):
        """`allows(row)`: whether the limits let a candidate be picked; `max_tries` bounds the
        draws spent per wanted candidate before a generation settles for fewer."""
        self.counts = list(option_counts)
        self.allows = allows
        self.max_tries = max_tries
        self.state = SearchState()
        self.rng = random.Random(seed)
        self.state.rng_state = self.rng.getstate()

    @property
    def generations(self) -> int:
        raise NotImplementedError

    def propose(self, seen: set[Row]) -> list[Row]:
        """The candidates of the current generation (new, allowed, distinct)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------

    def random_row(self) -> Row:
        return tuple(self.rng.randrange(c) for c in self.counts)

    def fill(self, rows: list[Row], seen: set[Row], want: int, make: Callable[[], Optional[Row]]) -> None:
        """Append up to `want` new allowed rows made by `make`, within `max_tries * want` draws."""
        target = len(rows) + want
        for _ in range(self.max_tries * max(want, 1)):
            if len(rows) >= target:
                return
            row = make()
            if row is not None and row not in seen and self.allows(row):
                seen.add(row)
                rows.append(row)

    def run_generation(self, score: Callable[[Row], float]) -> list[Scored]:
        """Propose, score (in order) and record one generation; returns what it scored."""
        self.rng.setstate(self.state.rng_state)
        seen = {s.row for s in self.state.scored}
        rows = self.propose(seen)
        new = [Scored(row, float(score(row)), self.state.generation) for row in rows]
        self.state.scored.extend(new)
        self.state.generation += 1
        self.state.rng_state = self.rng.getstate()
        return new

    @property
    def done(self) -> bool:
        return self.state.generation >= self.generations

    def best(self, n: int = 1) -> list[Scored]:
        """The `n` best scored so far; ties go to the one scored first."""
        order = sorted(range(len(self.state.scored)), key=lambda i: (-self.state.scored[i].score, i))
        return [self.state.scored[i] for i in order[:n]]


class Evolution(SubnetSearch):
    def __init__(self, option_counts: Sequence[int], settings: EvolutionSettings, seed: int,
                 allows: Callable[[Row], bool], max_tries: int = 100):
        super().__init__(option_counts, seed, allows, max_tries)
        self.settings = settings

    @property
    def generations(self) -> int:
        return self.settings.generations

    def propose(self, seen: set[Row]) -> list[Row]:
        s = self.settings
        rows: list[Row] = []
        if self.state.generation == 0 or not self.state.scored:
            self.fill(rows, seen, s.population, self.random_row)
            return rows
        parents = [p.row for p in self.best(s.parents)]
        self.fill(rows, seen, s.mutations, lambda: self.mutate(self.rng.choice(parents)))
        self.fill(rows, seen, s.crossovers, lambda: self.crossover(self.rng.choice(parents), self.rng.choice(parents)))
        self.fill(rows, seen, s.mutations + s.crossovers - len(rows), self.random_row)
        return rows

    def mutate(self, row: Row) -> Row:
        return tuple(self.rng.randrange(c) if self.rng.random() < self.settings.mutation_prob else k
                     for k, c in zip(row, self.counts))

    def crossover(self, a: Row, b: Row) -> Row:
        return tuple(x if self.rng.random() < 0.5 else y for x, y in zip(a, b))


class RandomSampling(SubnetSearch):
    """`n_archs` random allowed candidates, `per_generation` at a time (one checkpoint each)."""

    def __init__(self, option_counts: Sequence[int], n_archs: int, per_generation: int, seed: int,
                 allows: Callable[[Row], bool], max_tries: int = 100):
        super().__init__(option_counts, seed, allows, max_tries)
        self.n_archs, self.per_generation = n_archs, per_generation

    @property
    def generations(self) -> int:
        return -(-self.n_archs // self.per_generation)

    def propose(self, seen: set[Row]) -> list[Row]:
        rows: list[Row] = []
        left = self.n_archs - self.state.generation * self.per_generation
        self.fill(rows, seen, min(self.per_generation, left), self.random_row)
        return rows
