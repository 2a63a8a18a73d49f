"""Shared by the algorithm tests: the bundled confs/<algo>.yaml shrunk to test size, and a search
phase's parts (data, supernet, trainer) built as the algorithm's search phase builds them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import archnas.algos  # noqa: F401  (their config sections; also in processes spawned without conftest)
from archnas.config import (
    ExperimentConf,
    find_config_file,
    load_config,
    parse_override_tokens,
)
from archnas.context import PhaseContext, RunContext
from archnas.data import DataBundle
from archnas.descs.model_desc import ModelDesc
from archnas.model import Model
from archnas.nas.arch_trainer import ArchTrainer
from archnas.nas.phase import Experiment
from archnas.nas.registry import algorithm_class
from archnas.nas.searcher import Searcher, load_data
from archnas.nas.spaces import space_of
from archnas.nas.strategy import Strategy

# 3 cells of 4 channels (8 for PC-DARTS, so that k=4 leaves 2 channels per candidate), 2 nodes,
# a few hundred digits, one epoch per phase.
TINY = [
    "common.device=cpu", "common.tensorboard=false", "common.log_every_steps=0",
    "dataset.limit_train=160", "dataset.limit_test=80",
    "nas.search.model_desc.n_cells=3", "nas.search.model_desc.n_nodes=2",
    "nas.search.model_desc.model_stems.init_node_ch=4", "nas.search.loader.train_batch=40",
    "nas.search.trainer.epochs=1",
    "nas.eval.model_desc.n_cells=3", "nas.eval.model_desc.model_stems.init_node_ch=4",
    "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=1",
    "nas.search.random.n_archs=2", "nas.search.pc_darts.arch_warmup_epochs=0",
]


def tiny_conf(algo: str, *overrides: str) -> ExperimentConf:
    parsed, rest = parse_override_tokens([*TINY, *overrides], set())
    assert not rest, rest
    return load_config([find_config_file(algo)], parsed)


@dataclass
class SearchParts:
    conf: ExperimentConf
    strategy: Strategy
    ctx: PhaseContext
    data: DataBundle
    desc: ModelDesc
    model: Model
    trainer: ArchTrainer


def search_parts(algo: str, folder: Path, *overrides: str) -> SearchParts:
    """What the algorithm's Searcher would build for its search phase, before `fit`."""
    conf = tiny_conf(algo, f"common.results_dir={folder}", *overrides)
    run = RunContext.create(conf, folder / "exp", [])
    strategy = algorithm_class(algo)(conf)
    phase = Searcher(Experiment(run, strategy))
    ctx = run.phase("search", conf.nas.search)
    data = load_data(ctx, conf.nas.search.loader)
    space = space_of(conf.nas.search)
    model = space.supernet(data.info, strategy)
    desc = model.desc
    trainer = ArchTrainer(conf.nas.search.trainer, model, ctx, strategy=strategy,
                          val_stream=data.loader("val", training=True), checkpointer=phase.checkpointer(ctx, desc.fingerprint()))
    return SearchParts(conf, strategy, ctx, data, desc, model, trainer)
