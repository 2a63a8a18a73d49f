"""Samplers of genomes (ask/tell), registered by name: evolution, random, grid, optuna_tpe,
optuna_nsga2, regularized_evolution. `base` holds the protocol and the registry; each family is a module of its own."""

from archnas.nas.samplers.base import (
    Genomes,
    Row,
    Sampler,
    Scored,
    build_sampler,
    register_sampler,
    sampler_class,
    sampler_names,
)
from archnas.nas.samplers.evolution import Evolution, EvolutionSettings, RandomSampling, RandomSettings
from archnas.nas.samplers.grid import Grid, GridSettings
from archnas.nas.samplers.optuna_samplers import Nsga2Settings, OptunaNsga2, OptunaTpe, TpeSettings
from archnas.nas.samplers.regularized_evolution import RegularizedEvolution, RegularizedEvolutionSettings

__all__ = ["Evolution", "EvolutionSettings", "Genomes", "Grid", "GridSettings", "Nsga2Settings", "OptunaNsga2",
           "OptunaTpe", "RandomSampling", "RandomSettings", "RegularizedEvolution",
           "RegularizedEvolutionSettings", "Row", "Sampler", "Scored", "TpeSettings",
           "build_sampler", "register_sampler", "sampler_class", "sampler_names"]
