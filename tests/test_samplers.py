"""The ask/tell samplers (archnas/nas/samplers): evolution and random sampling give the numbers
the hand-written search gave, every sampler proposes only new allowed genomes and resumes from
its state, grid goes in order, and the Optuna adapter is deterministic from its told history."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from archnas.errors import ConfigError
from archnas.nas.samplers import (
    EvolutionSettings,
    Genomes,
    Grid,
    GridSettings,
    Nsga2Settings,
    RandomSampling,
    Sampler,
    TpeSettings,
    build_sampler,
    sampler_class,
    sampler_names,
)

COUNTS = (3, 4, 2, 5)


def score(row):
    return float(row[0] * 3 - row[1] + row[-2] * row[-1])


def cheap(row):
    return sum(row) <= 8


def cost(row):
    return float(sum(row))


def run_to_end(sampler: Sampler, batches=None) -> list[tuple[tuple[int, ...], int]]:
    while not sampler.done and (batches is None or sampler.generation < batches):
        for row in sampler.ask():
            sampler.tell(row, score(row))
    return [(s.row, s.generation) for s in sampler.scored]


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def every_sampler(limit=cheap):
    genomes = Genomes(COUNTS, limit, cost)
    return {
        "evolution": lambda: build_sampler("evolution", EvolutionSettings(5, 2, 3, 3, 0.2, 4), genomes, 7),
        "random": lambda: RandomSampling(COUNTS, 9, 4, 7, limit),
        "grid": lambda: build_sampler("grid", GridSettings(7, 1000), genomes, 7),
        "optuna_tpe": lambda: build_sampler("optuna_tpe", TpeSettings(12, 4, 4), genomes, 7),
        "optuna_nsga2": lambda: build_sampler("optuna_nsga2", Nsga2Settings(4, 4), genomes, 7),
    }


# What archnas/nas/evolution.py of main (3bd6570) gave for these settings, seed 7, the limit
# sum(row) <= 8 and the score above, run once: (row, generation) in the order scored.
OLD_EVOLUTION = [
    ((1, 1, 1, 0), 0), ((0, 0, 1, 4), 0), ((0, 1, 0, 0), 0), ((1, 3, 0, 1), 0), ((0, 3, 0, 4), 0),
    ((0, 1, 1, 0), 1), ((1, 1, 0, 0), 1), ((1, 1, 1, 3), 1), ((0, 0, 1, 0), 1), ((0, 1, 1, 4), 1),
    ((1, 0, 1, 4), 1), ((1, 0, 1, 2), 2), ((1, 0, 1, 3), 2), ((1, 0, 1, 0), 2), ((1, 1, 1, 4), 2),
    ((0, 2, 0, 2), 2), ((2, 2, 0, 3), 2), ((1, 0, 0, 4), 3), ((2, 0, 1, 4), 3), ((0, 3, 1, 4), 3),
    ((2, 0, 0, 4), 3), ((0, 2, 1, 0), 3), ((2, 1, 0, 4), 3)]
OLD_RANDOM = [((1, 1, 1, 0), 0), ((0, 0, 1, 4), 0), ((0, 1, 0, 0), 0), ((1, 3, 0, 1), 0), ((0, 3, 0, 4), 1),
              ((0, 1, 0, 4), 1), ((2, 3, 0, 1), 1), ((0, 1, 1, 3), 1), ((2, 1, 0, 4), 2)]


def test_evolution_and_random_sampling_give_the_hand_written_searchs_candidates():
    assert run_to_end(every_sampler()["evolution"]()) == OLD_EVOLUTION
    assert run_to_end(every_sampler()["random"]()) == OLD_RANDOM


def test_the_registry_names_every_built_in_and_refuses_an_unknown_name():
    assert sampler_names()[:5] == ["evolution", "random", "grid", "optuna_tpe", "optuna_nsga2"]
    assert sampler_class("grid") is Grid
    with pytest.raises(ConfigError, match=r"nas.search.spos.strategy: 'gird' is not one of evolution, random"):
        sampler_class("gird")


@pytest.mark.parametrize("name", ["evolution", "random", "grid", "optuna_tpe", "optuna_nsga2"])
def test_a_sampler_is_deterministic_proposes_new_allowed_genomes_and_resumes_from_its_state(name):
    make = every_sampler()[name]
    straight = run_to_end(make())
    assert straight == run_to_end(make()), "the same seed, the same genomes in the same order"
    rows = [r for r, _ in straight]
    assert len(rows) == len(set(rows)), "never a genome twice"
    assert rows and all(cheap(r) and all(0 <= k < c for k, c in zip(r, COUNTS)) for r in rows)
    for stop in range(1, max(g for _, g in straight) + 1):
        first = make()
        run_to_end(first, batches=stop)
        first.ask()  # a batch asked and never told (killed while it was scored) is not in the state
        second = make()
        second.load_state_dict(roundtrip(first.state_dict()))
        assert run_to_end(second) == straight, (name, stop)


@pytest.mark.parametrize("name", ["evolution", "grid", "optuna_tpe", "optuna_nsga2"])
def test_a_batch_asked_again_before_it_is_told_is_the_same_batch(name):
    sampler = every_sampler()[name]()
    run_to_end(sampler, batches=1)
    assert sampler.ask() == sampler.ask()


def test_tell_refuses_a_genome_not_asked():
    sampler = every_sampler()["random"]()
    rows = sampler.ask()
    with pytest.raises(ValueError, match="was not asked"):
        sampler.tell((2, 3, 1, 4), 0.5)
    sampler.tell(rows[0], 0.5)
    with pytest.raises(ValueError, match="was not asked"):
        sampler.tell(rows[0], 0.5)


def test_random_sampling_deduplicates_in_a_space_smaller_than_asked():
    sampler = RandomSampling((2, 2), 10, 10, 0, lambda r: True)
    assert sorted(r for r, _ in run_to_end(sampler)) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_grid_goes_through_every_allowed_genome_in_order():
    counts = (2, 3, 2)
    grid = Grid(counts, 4, lambda r: r != (0, 1, 1) and sum(r) <= 3)
    rows = [r for r, _ in run_to_end(grid)]
    assert rows == [r for r in itertools.product(*map(range, counts)) if r != (0, 1, 1) and sum(r) <= 3]
    assert [g for _, g in run_to_end(grid)] == [0] * 4 + [1] * 4 + [2] * 2  # 12 genomes, 2 over the limits
    assert grid.done and grid.ask() == []


def test_grid_refuses_a_space_larger_than_max_archs_with_one_message():
    with pytest.raises(ConfigError) as exc:
        Grid.check_space(GridSettings(50, 100), (5,) * 6, "nas.search.spos.grid")
    assert str(exc.value) == ("nas.search.spos.grid.max_archs: the space has 15,625 architectures, more than the 100 "
                              "a grid scores; raise max_archs or use a sampler (evolution, random, optuna_tpe, ...)")
    Grid.check_space(GridSettings(50, 15625), (5,) * 6, "nas.search.spos.grid")


def test_the_optuna_adapter_asks_optuna_and_is_told_back():
    """TPE after its random start-up and NSGA-II after its first generation move towards what
    they are told: TPE to higher scores, NSGA-II to the accuracy/cost front."""
    genomes = Genomes((5,) * 6, lambda r: True, lambda r: float(sum(r)))
    target = (4, 0, 3, 1, 2, 4)

    def closeness(row):
        return -float(sum(a != b for a, b in zip(row, target)))

    tpe = build_sampler("optuna_tpe", TpeSettings(60, 10, 10), genomes, 1)
    rnd = RandomSampling((5,) * 6, 60, 10, 1, lambda r: True)
    for sampler in (tpe, rnd):
        while not sampler.done:
            for row in sampler.ask():
                sampler.tell(row, closeness(row))
    late = lambda s: sum(x.score for x in s.scored[30:]) / 30  # noqa: E731
    assert late(tpe) > late(rnd), (late(tpe), late(rnd))

    nsga = build_sampler("optuna_nsga2", Nsga2Settings(10, 6), genomes, 1)
    while not nsga.done:
        for row in nsga.ask():
            nsga.tell(row, float(sum(row)) - 0.5 * row[0])  # at any cost, the front has label 0 at option 0
    first, last = nsga.scored[:10], nsga.scored[-10:]
    assert sum(s.row[0] for s in last) < sum(s.row[0] for s in first), "the front's direction is learnt"
    assert sorted({s.generation for s in nsga.scored}) == list(range(6))


def test_optuna_nsga2_needs_a_cost_and_checks_its_settings():
    with pytest.raises(ValueError, match="trades accuracy against a cost"):
        build_sampler("optuna_nsga2", Nsga2Settings(), Genomes(COUNTS, cheap), 0)
    with pytest.raises(ConfigError, match=r"nas.search.spos.optuna_nsga2: need population >= 2"):
        sampler_class("optuna_nsga2").check_settings(Nsga2Settings(population=1), "nas.search.spos.optuna_nsga2")
    with pytest.raises(ConfigError, match=r"nas.search.spos.optuna_tpe: n_archs \(0\)"):
        sampler_class("optuna_tpe").check_settings(TpeSettings(n_archs=0), "nas.search.spos.optuna_tpe")


def test_a_sampler_the_limits_leave_nothing_to_ends_with_an_empty_batch():
    for name, make in every_sampler(limit=lambda r: False).items():
        sampler = make()
        assert sampler.ask() == [] and sampler.generation == 1 and not sampler.scored, name
