"""Pretrain: train a weight-sharing supernet one uniformly sampled path per step (SPOS, NNI's
RandomOneShot, ENOT's pretrain), with the same ArchTrainer, checkpoints and resume as a search:
its architecture optimizer is the strategy's (`UniformPaths`, `uniform_paths`, for spos) or
`nas.search.arch_optimizer`.

The path of a step is a pure function of the seed and the global step (`step_arch`): a generator
seeded with (common.seed, step) draws it (`space.draw`: every label of a module space, uniformly
or by its prior; a final cell genome of DARTS cells), and `space.use` sets it. So a resumed run
draws the paths an uninterrupted one drew, and every DDP rank draws the same path without
communicating; the ranks still compare a running digest of their paths at each epoch's
end and stop with an error if they ever differ (they would train different networks in one
all-reduce). The digest is in every epoch record (`path_digest`), so two runs can be compared.

No architecture parameters are trained and no val split is scored here: subnets are compared
after pretraining, by the search phase, on inherited weights. The phase folder is `pretrain/`,
its marker `pretrain.json`; the weights are in its `checkpoint_last.pt`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import torch

from archnas.context import PhaseContext
from archnas.data import DataBundle
from archnas.data.loader import Batch
from archnas.distributed import agree_max
from archnas.nas.arch_optimizer import ArchOptimizer, arch_optimizer_name, register_arch_optimizer
from archnas.nas.arch_trainer import ArchTrainer
from archnas.nas.phase import Phase
from archnas.nas.searcher import load_data
from archnas.nas.spaces import Space, space_of
from archnas.space.store import Searchable
from archnas.training.checkpoint import Stateful
from archnas.utils.seeding import derive_seed

MARKER = "pretrain.json"


def step_arch(space: Space, model: Searchable, seed: int, step: int) -> Any:
    """The architecture global step `step` trains (`space.draw` from a generator of the seed and step)."""
    return space.draw(model, torch.Generator().manual_seed(derive_seed(seed, "paths", step)))


class UniformPaths(ArchOptimizer):
    """The SPOS pretrain's architecture optimizer (registered as `uniform_paths`): it trains no
    architecture parameters and reads no val batches; each step it sets the path of
    `step_arch(space, model, seed, global step)` and folds it into a digest, checkpointed as `paths`."""

    trains_alphas = False
    needs_val = False

    def __init__(self, strategy: Any):
        super().__init__(strategy)
        self.digest = hashlib.sha256(b"archnas-paths").hexdigest()

    def weighting(self) -> None:
        return None  # each step fixes a whole path (`space.use`)

    def setup(self, trainer: Any) -> None:
        super().setup(trainer)
        self.space = space_of(self.strategy.conf.nas.search)
        self.model, self.seed = trainer.base_model, self.strategy.conf.common.seed
        self.space.use(self.model, step_arch(self.space, self.model, self.seed, 0))

    def step(self, train: Batch, next_val: Callable[[], Batch]) -> None:
        step = self.trainer.global_step
        arch = step_arch(self.space, self.model, self.seed, step)
        self.space.use(self.model, arch)
        blob = json.dumps([self.digest, step, self.space.record(arch)], sort_keys=True, default=str)
        self.digest = hashlib.sha256(blob.encode()).hexdigest()

    def epoch_metrics(self) -> dict[str, Any]:
        """`path_digest`, after the DDP ranks found they drew the same paths."""
        value = int(self.digest[:15], 16)
        high, neg_low = agree_max([value, -value], self.trainer.env.control_group)
        if high != -neg_low:
            raise RuntimeError("DDP ranks sampled different paths in pretraining (their path digests differ); "
                               "every rank must run the same seed and steps")
        return {"path_digest": self.digest[:16]}

    def states(self) -> dict[str, Stateful]:
        return {"paths": self}

    def state_dict(self) -> dict[str, Any]:
        return {"digest": self.digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.digest = state["digest"]


register_arch_optimizer("uniform_paths", UniformPaths)


class Pretrain(Phase):
    name = "pretrain"
    section_key = "nas.search"
    marker = MARKER
    trains_supernet = True  # its checkpoint is what the search scores subnets of and the eval may tune
    # Keys of nas.search the pretraining does not read: changing them reuses a finished pretrain;
    # nor does it read any of the algorithm's own (nas.search.spos: how subnets are searched).
    unread_keys = ("cost", "ranking_check", "finalizer", "post_train", "combinations")
    algorithm_keys = ()

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        conf = ctx.conf
        space = space_of(conf)
        data = load_data(ctx, conf.loader)
        model = space.supernet(data.info, self.strategy)
        ctx.log.info(f"pretrain: {space.title}, {sum(p.numel() for p in model.weights()):,} weights, "
                     f"{len(model.arch.specs)} choices; architecture optimizer {arch_optimizer_name(self.strategy)}; "
                     f"{len(data.parts['train'])} train images")
        trainer = self.build_trainer(ctx, model, space.supernet_fingerprint(model), data)
        history = trainer.fit(data.loader("train", training=True))
        last = history.last or {}
        result = {"train_top1": last.get("train_top1"), "train_loss": last.get("train_loss"),
                  "epochs": len(history.records), "path_digest": last.get("path_digest"),
                  "pretrain_time": sum(r.get("epoch_time", 0.0) for r in history.records),
                  "supernet_fingerprint": space.supernet_fingerprint(model)}
        self.write_marker(ctx, {"metrics": result})
        return result

    def build_trainer(self, ctx: PhaseContext, model: Searchable, fingerprint: str,
                      data: DataBundle) -> ArchTrainer:
        """The pretraining trainer (also what `scripts/bench_spos.py` times) of the strategy's
        supernet (`space.supernet(info, strategy)`): the weights only, every step on the path its
        architecture optimizer sets (the strategy's: uniform paths)."""
        return ArchTrainer(ctx.conf.trainer, model, ctx, strategy=self.strategy,
                           val_stream=data.loader("val", training=True),
                           checkpointer=self.checkpointer(ctx, fingerprint))

    def load(self, done: dict[str, Any]) -> dict[str, Any]:
        return done["metrics"]

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        return {**result, "peak_memory": self.peak_memory}
