"""Regularized (aging) evolution: Real, Aggarwal, Huang and Le, "Regularized Evolution for Image
Classifier Architecture Search", AAAI 2019 (Algorithm 1), with NNI's argument names and defaults
(`nni.nas.strategy.RegularizedEvolution`: population_size 100, sample_size 25, mutation_prob
0.05, crossover off, deduplicated).

Batch 0 is `population_size` random genomes (they depend on nothing, so they go out at once: in
parallel on Ray). Every later batch is `per_generation` children: for each, a tournament of
`sample_size` members drawn without replacement from the population, whose best (ties: the one
drawn first) is the parent, and each label of the parent redrawn with probability
`mutation_prob` (with `crossover`, the parent is itself a crossover of two tournament winners,
each label from either with probability 1/2). A child identical to a genome seen before, or one
the limits reject, is drawn again (at most `max_tries` times per child), then a random genome
takes its place.

Aging: the population is the `population_size` most recently told genomes, so each child told
pushes the oldest member out whatever its score (the regularization the paper is named for).
It is a function of the told history alone (told in the order asked), and the RNG state after
each closed batch is checkpoint state, so a resumed search breeds what an uninterrupted one
breeds. A batch of several children breeds them all from the population as it stood when the
batch was asked; `per_generation: 1` is the paper's sequential loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from archnas.errors import ConfigError
from archnas.nas.samplers.base import Genomes, Row, register_sampler
from archnas.nas.samplers.evolution import RandomDraws


@dataclass
class RegularizedEvolutionSettings:
    """`nas.search.<algorithm>.regularized_evolution` (NNI's names and defaults)."""

    population_size: int = 100  # members of the population; the first batch is that many random genomes
    sample_size: int = 25  # tournament size: members drawn per child, the best is the parent (<= population_size)
    mutation_prob: float = 0.05  # per label of a child: redrawn uniformly (it may draw the same option)
    crossover: bool = False  # true: the parent is a crossover of two tournament winners
    cycles: int = 100  # children bred after the initial population
    per_generation: int = 1  # children per batch (one checkpoint each; on Ray, trained in parallel)


@register_sampler
class RegularizedEvolution(RandomDraws):
    name = "regularized_evolution"

    def __init__(self, counts: Sequence[int], settings: RegularizedEvolutionSettings, seed: int,
                 allows: Callable[[Row], bool], max_tries: int = 100):
        super().__init__(counts, seed, allows, max_tries)
        self.settings = settings

    @classmethod
    def check_settings(cls, settings: RegularizedEvolutionSettings, key: str) -> None:
        s = settings
        if s is None:
            raise ConfigError(f"{key}: regularized_evolution has no settings in this section; use it through an "
                              "algorithm that has them (multi_trial, spos)")
        if min(s.population_size, s.per_generation) < 1 or s.cycles < 0 or not 0 <= s.mutation_prob <= 1:
            raise ConfigError(f"{key}: need population_size and per_generation >= 1, cycles >= 0 and "
                              f"0 <= mutation_prob <= 1; got {s}")
        if not 1 <= s.sample_size <= s.population_size:
            raise ConfigError(f"{key}.sample_size: {s.sample_size}; a tournament draws between 1 and population_size "
                              f"({s.population_size}) members")

    @classmethod
    def build(cls, settings: RegularizedEvolutionSettings, genomes: Genomes, seed: int) -> "RegularizedEvolution":
        return cls(genomes.counts, settings, seed, genomes.allows)

    @property
    def batches(self) -> int:
        return 1 + -(-self.settings.cycles // self.settings.per_generation)

    def population(self) -> list[tuple[Row, float]]:
        """The living members, oldest first: the last `population_size` genomes told."""
        return [(s.row, s.score) for s in self.scored[-self.settings.population_size:]]

    def propose(self, seen: set[Row]) -> list[Row]:
        s = self.settings
        rows: list[Row] = []
        if self.generation == 0 or not self.scored:
            self.fill(rows, seen, s.population_size, self.random_row)
            return rows
        want = min(s.per_generation, s.cycles - (self.generation - 1) * s.per_generation)
        population = self.population()
        self.fill(rows, seen, want, lambda: self.mutate(self.parent(population)))
        self.fill(rows, seen, want - len(rows), self.random_row)
        return rows

    def tournament(self, population: list[tuple[Row, float]]) -> Row:
        """The best of `sample_size` members drawn without replacement (ties: the first drawn)."""
        drawn = self.rng.sample(population, min(self.settings.sample_size, len(population)))
        return max(drawn, key=lambda member: member[1])[0]

    def parent(self, population: list[tuple[Row, float]]) -> Row:
        first = self.tournament(population)
        if not self.settings.crossover:
            return first
        second = self.tournament(population)
        return tuple(b if self.rng.random() < 0.5 else a for a, b in zip(first, second))

    def mutate(self, row: Row) -> Row:
        return tuple(self.rng.randrange(c) if self.rng.random() < self.settings.mutation_prob else k
                     for k, c in zip(row, self.counts))
