"""Optuna's samplers behind the ask/tell protocol: TPE (accuracy) and NSGA-II (accuracy against a
cost: maximize the one, minimize the other).

An adapter, not a copy: each label is a categorical parameter over its option numbers, and the
genomes come from Optuna's own `study.ask`. Nothing of Optuna is pickled or checkpointed. For each
batch the study is rebuilt from the genomes told so far (`create_trial` + `add_trials`, NSGA-II's
generation of each recomputed as Optuna assigns it: a batch is asked before any of it is told)
with a sampler seeded from (seed, batch number), so the told history alone decides a batch, and a
search resumed after a kill asks what an uninterrupted one asks. A proposal that is not new or
that the limits reject is left unfinished (the sampler ignores it) and another is asked, at most
`max_tries` times per wanted genome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from archnas.errors import ConfigError
from archnas.nas.samplers.base import Genomes, Row, Sampler, register_sampler
from archnas.utils.seeding import derive_seed


@dataclass
class TpeSettings:
    """`nas.search.spos.optuna_tpe`."""

    n_archs: int = 100  # distinct candidates scored
    per_generation: int = 10  # asked between two checkpoints (TPE learns from the earlier batches only)
    n_startup_trials: int = 10  # random candidates before TPE models the scores


@dataclass
class Nsga2Settings:
    """`nas.search.spos.optuna_nsga2`: accuracy against the cost `nas.search.cost.pareto`."""

    population: int = 20  # candidates per generation (one checkpoint each); at least 2
    generations: int = 10
    crossover_prob: float = 0.9  # a child is a crossover of two parents (else a copy of one), then mutated
    mutation_prob: Optional[float] = None  # per label of a child; null: 1 / number of labels


class OptunaSampler(Sampler):
    """Asks Optuna's sampler `make(seed)` for genomes over the categorical labels."""

    directions: tuple[str, ...] = ("maximize",)

    def __init__(self, counts: Sequence[int], seed: int, allows: Callable[[Row], bool], per_batch: int,
                 n_batches: int, n_archs: Optional[int] = None, max_tries: int = 100):
        super().__init__(counts, seed, allows, max_tries)
        self.per_batch, self.n_batches, self.n_archs = per_batch, n_batches, n_archs

    @property
    def batches(self) -> int:
        return self.n_batches

    def make(self, seed: int) -> Any:
        """The Optuna sampler of one batch."""
        raise NotImplementedError

    def values(self, row: Row, score: float) -> list[float]:
        return [score]

    def trial_attrs(self) -> list[dict[str, Any]]:
        """Optuna system attributes of every told genome, in order (what the sampler reads back)."""
        return [{} for _ in self.scored]

    def propose(self, seen: set[Row]) -> list[Row]:
        import optuna
        from optuna.distributions import CategoricalDistribution

        names = [f"choice_{i}" for i in range(len(self.counts))]
        distributions = {n: CategoricalDistribution(list(range(c))) for n, c in zip(names, self.counts)}
        quiet = logging.getLogger("optuna")  # "a new study created" at every batch says nothing here
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            study = optuna.create_study(directions=list(self.directions),
                                        sampler=self.make(derive_seed(self.seed, self.name, self.generation, bits=32)))
        finally:
            quiet.setLevel(level)
        study.add_trials([
            optuna.trial.create_trial(params=dict(zip(names, s.row)), distributions=distributions,
                                      values=self.values(s.row, s.score), system_attrs=attrs)
            for s, attrs in zip(self.scored, self.trial_attrs())])
        want = self.per_batch if self.n_archs is None else min(self.per_batch, self.n_archs - len(self.scored))

        def make() -> Row:
            trial = study.ask(distributions)
            return tuple(int(trial.params[n]) for n in names)

        rows: list[Row] = []
        self.fill(rows, seen, want, make)
        return rows


@register_sampler
class OptunaTpe(OptunaSampler):
    name = "optuna_tpe"

    def __init__(self, counts: Sequence[int], settings: TpeSettings, seed: int, allows: Callable[[Row], bool]):
        super().__init__(counts, seed, allows, settings.per_generation, -(-settings.n_archs // settings.per_generation),
                         settings.n_archs)
        self.settings = settings

    @classmethod
    def check_settings(cls, settings: TpeSettings, key: str) -> None:
        if min(settings.n_archs, settings.per_generation) < 1 or settings.n_startup_trials < 0:
            raise ConfigError(f"{key}: n_archs ({settings.n_archs}) and per_generation ({settings.per_generation}) "
                              f"must be at least 1, n_startup_trials ({settings.n_startup_trials}) at least 0")

    @classmethod
    def build(cls, settings: TpeSettings, genomes: Genomes, seed: int) -> "OptunaTpe":
        return cls(genomes.counts, settings, seed, genomes.allows)

    def make(self, seed: int) -> Any:
        import optuna

        return optuna.samplers.TPESampler(n_startup_trials=self.settings.n_startup_trials, seed=seed)


@register_sampler
class OptunaNsga2(OptunaSampler):
    name = "optuna_nsga2"
    multi_objective = True
    directions = ("maximize", "minimize")
    GENERATION = "NSGAIISampler:generation"  # where Optuna's NSGA-II keeps a trial's generation

    def __init__(self, counts: Sequence[int], settings: Nsga2Settings, seed: int, allows: Callable[[Row], bool],
                 cost: Callable[[Row], float]):
        super().__init__(counts, seed, allows, settings.population, settings.generations)
        self.settings, self.cost = settings, cost

    @classmethod
    def check_settings(cls, settings: Nsga2Settings, key: str) -> None:
        s = settings
        if s.population < 2 or s.generations < 1 or not 0 <= s.crossover_prob <= 1 or \
                (s.mutation_prob is not None and not 0 <= s.mutation_prob <= 1):
            raise ConfigError(f"{key}: need population >= 2, generations >= 1, 0 <= crossover_prob <= 1 and "
                              f"mutation_prob null or in [0, 1]; got {s}")

    @classmethod
    def build(cls, settings: Nsga2Settings, genomes: Genomes, seed: int) -> "OptunaNsga2":
        assert genomes.cost is not None
        return cls(genomes.counts, settings, seed, genomes.allows, genomes.cost)

    def make(self, seed: int) -> Any:
        import optuna

        s = self.settings
        return optuna.samplers.NSGAIISampler(population_size=s.population, crossover_prob=s.crossover_prob,
                                             mutation_prob=s.mutation_prob, seed=seed)

    def values(self, row: Row, score: float) -> list[float]:
        return [score, float(self.cost(row))]

    def trial_attrs(self) -> list[dict[str, Any]]:
        """Optuna gives every trial of a batch the generation after the newest completed one when
        that one is full (`population` trials), else the newest's own."""
        attrs: list[dict[str, Any]] = []
        of_batch: dict[int, int] = {}  # batch -> its generation
        size: dict[int, int] = {}  # generation -> trials told
        for s in self.scored:
            if s.generation not in of_batch:  # its first trial: everything told before it was complete
                newest = max(size, default=None)
                of_batch[s.generation] = 0 if newest is None else \
                    newest + 1 if size[newest] >= self.settings.population else newest
            generation = of_batch[s.generation]
            size[generation] = size.get(generation, 0) + 1
            attrs.append({self.GENERATION: generation})
        return attrs
