"""Judgements that need the dataset or the space, made before the first phase works.

The algorithm's `Strategy.check` judges the config on its own when it is loaded. What needs more
than the config (the dataset's labels, the space's architectures) is judged here, by the runner,
before the first phase starts: otherwise a limit below the cheapest architecture would surface
after pretraining, and an eval split that cannot be stratified after the whole search. Each check
is the function the late phase runs itself, called earlier; none is a copy.
"""

from __future__ import annotations

from typing import Any, Sequence

from archnas.data import load_dataset
from archnas.data.split import make_split
from archnas.latency import check_limits_reachable, given_limits
from archnas.nas.phase import Experiment, Phase
from archnas.nas.ranking import check_ranking_count
from archnas.nas.spaces import space_of
from archnas.nas.subnet_search import SubnetSearchPhase
from archnas.stats import dataset_info


def check_before_work(experiment: Experiment, stages: Sequence[Phase]) -> None:
    """Everything the stages about to run (`stages`) would refuse later, judged now (ConfigError)."""
    conf = experiment.run.conf
    sections = {stage.section_path() for stage in stages}
    search, eval = "nas.search" in sections, "nas.eval" in sections
    check_splits(conf, search, eval)
    if search and any(getattr(p, "picks_subnets", False) for p in experiment.strategy.phases):
        check_subnet_search(experiment)
    elif search and experiment.strategy.cost_aware and given_limits(conf.nas.search.cost):
        check_gradient_limits(experiment)


def check_splits(conf: Any, search: bool, eval: bool) -> None:
    """The train/val split of every stage that runs can be made (stratified, as the stage makes it)."""
    loaders = []
    if search:
        loaders.append(("nas.search.loader", conf.nas.search.loader))
        if conf.nas.search.post_train.trainer.epochs > 0:
            loaders.append(("nas.search.post_train.loader", conf.nas.search.post_train.loader))
    if eval:
        loaders.append(("nas.eval.loader", conf.nas.eval.loader))
    if not loaders:
        return
    labels = load_dataset(conf.dataset, conf.common.cache_dir).train.labels
    for key, loader in loaders:
        make_split(labels, loader.val_ratio, conf.dataset.limit_train, conf.common.seed, key)


def check_subnet_search(experiment: Experiment) -> None:
    """A subnet search's (a phase with `picks_subnets`: spos, enot) limits against the space's cheapest architecture, its sampler and its
    ranking check's count against the space's size, before the supernet is pretrained. Skipped
    once the search has finished (its limits were judged then; a latency table is not measured
    twice)."""
    conf = experiment.run.conf
    search = conf.nas.search
    limits_given = bool(given_limits(search.cost))
    searched = [p(experiment) for p in experiment.strategy.phases if getattr(p, "picks_subnets", False)]
    if any((p.dir / p.marker).is_file() for p in searched):
        return
    space = space_of(search)
    info = dataset_info(conf.dataset, conf.common.cache_dir)
    genome = space.genome(info)
    if any(isinstance(p, SubnetSearchPhase) for p in searched):
        SubnetSearchPhase.check_space(experiment.strategy.section, genome, f"nas.search.{experiment.strategy.name}")
    if search.ranking_check.n_archs:
        check_ranking_count(genome.specs, search.ranking_check.n_archs)
    if limits_given:
        check_limits_reachable(search.cost, genome.specs, lambda choices: space.network(genome.arch_of(choices), info),
                               [info.channels, *info.image_size], seed=conf.common.seed)


def check_gradient_limits(experiment: Experiment) -> None:
    """A cost-aware gradient search's limits against the space's cheapest architecture, before it
    trains (skipped once it has finished)."""
    conf = experiment.run.conf
    search = conf.nas.search
    phases = [p(experiment) for p in experiment.strategy.phases if p.section_key == "nas.search"]
    if any((p.dir / p.marker).is_file() for p in phases):
        return
    space = space_of(search)
    info = dataset_info(conf.dataset, conf.common.cache_dir)
    genome = space.genome(info)
    check_limits_reachable(search.cost, genome.specs, lambda choices: space.network(genome.arch_of(choices), info),
                           [info.channels, *info.image_size], seed=conf.common.seed)
