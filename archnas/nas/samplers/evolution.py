"""SPOS's evolution, and uniform random sampling: samplers that draw genomes from one RNG.

Evolution (Guo et al., SPOS, ECCV 2020; NNI's SPOS example uses the same defaults): generation 0
is `population` random candidates; every later one is `mutations` mutants (a random parent among
the `parents` best scored so far, each label redrawn with probability `mutation_prob`) and
`crossovers` children (each label from one of two random parents), topped up with random ones
when too few new valid candidates turn up. Random sampling: `n_archs` distinct random
candidates, `per_generation` at a time.

Both keep a `random.Random` seeded with the search's seed; its state after each closed batch is
checkpoint state (`rng_state`, as the hand-written search before the samplers saved it, so its
checkpoints still resume), and a batch asked again starts from it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from archnas.errors import ConfigError
from archnas.nas.samplers.base import Genomes, Row, Sampler, register_sampler


@dataclass
class EvolutionSettings:
    """`nas.search.spos.evolution`."""

    population: int = 50  # generation 0: random candidates
    parents: int = 10  # the best so far, which the later generations are bred from (at most population)
    mutations: int = 25  # per generation
    crossovers: int = 25  # per generation
    mutation_prob: float = 0.1  # per label of a mutant
    generations: int = 20


@dataclass
class RandomSettings:
    """`nas.search.spos.random`."""

    n_archs: int = 1000  # distinct candidates
    per_generation: int = 50  # candidates between two checkpoints


class RandomDraws(Sampler):
    """A sampler whose draws come from one `random.Random`, restored at each ask."""

    def __init__(self, counts: Sequence[int], seed: int, allows: Callable[[Row], bool], max_tries: int = 100):
        super().__init__(counts, seed, allows, max_tries)
        self.rng = random.Random(seed)
        self.rng_state = self.rng.getstate()  # as of the last closed batch

    def ask(self) -> list[Row]:
        self.rng.setstate(self.rng_state)
        return super().ask()

    def close_batch(self) -> None:
        self.rng_state = self.rng.getstate()

    def extra_state(self) -> dict[str, Any]:
        return {"rng_state": self.rng_state}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng_state"]  # random.Random's state, as saved (tuples may come back as lists)
        self.rng_state = (int(version), tuple(int(v) for v in internal), gauss)

    def random_row(self) -> Row:
        return tuple(self.rng.randrange(c) for c in self.counts)


@register_sampler
class Evolution(RandomDraws):
    name = "evolution"

    def __init__(self, counts: Sequence[int], settings: EvolutionSettings, seed: int,
                 allows: Callable[[Row], bool], max_tries: int = 100):
        super().__init__(counts, seed, allows, max_tries)
        self.settings = settings

    @classmethod
    def check_settings(cls, settings: EvolutionSettings, key: str) -> None:
        e = settings
        if min(e.population, e.parents, e.generations) < 1 or min(e.mutations, e.crossovers) < 0 or \
                e.mutations + e.crossovers < 1 or not 0 <= e.mutation_prob <= 1:
            raise ConfigError(f"{key}: need population, parents and generations >= 1, mutations and crossovers "
                              f">= 0 (not both 0) and 0 <= mutation_prob <= 1; got {e}")
        if e.parents > e.population:
            raise ConfigError(f"{key}.parents: {e.parents} is more than the population ({e.population}); the "
                              "parents are the best of one population, so at most that many")

    @classmethod
    def build(cls, settings: EvolutionSettings, genomes: Genomes, seed: int) -> "Evolution":
        return cls(genomes.counts, settings, seed, genomes.allows)

    @property
    def batches(self) -> int:
        return self.settings.generations

    def propose(self, seen: set[Row]) -> list[Row]:
        s = self.settings
        rows: list[Row] = []
        if self.generation == 0 or not self.scored:
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


@register_sampler
class RandomSampling(RandomDraws):
    """`n_archs` random allowed candidates, `per_generation` at a time (one checkpoint each)."""

    name = "random"

    def __init__(self, counts: Sequence[int], n_archs: int, per_generation: int, seed: int,
                 allows: Callable[[Row], bool], max_tries: int = 100):
        super().__init__(counts, seed, allows, max_tries)
        self.n_archs, self.per_generation = n_archs, per_generation

    @classmethod
    def check_settings(cls, settings: RandomSettings, key: str) -> None:
        if settings.n_archs < 1 or settings.per_generation < 1:
            raise ConfigError(f"{key}: n_archs ({settings.n_archs}) and per_generation ({settings.per_generation}) "
                              "must be at least 1")

    @classmethod
    def build(cls, settings: RandomSettings, genomes: Genomes, seed: int) -> "RandomSampling":
        return cls(genomes.counts, settings.n_archs, settings.per_generation, seed, genomes.allows)

    @property
    def batches(self) -> int:
        return -(-self.n_archs // self.per_generation)

    def propose(self, seen: set[Row]) -> list[Row]:
        rows: list[Row] = []
        left = self.n_archs - self.generation * self.per_generation
        self.fill(rows, seen, min(self.per_generation, left), self.random_row)
        return rows
