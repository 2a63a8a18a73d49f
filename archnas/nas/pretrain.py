"""Pretrain: train a weight-sharing supernet one uniformly sampled path per step (SPOS, NNI's
RandomOneShot, ENOT's pretrain), with the same Trainer, checkpoints and resume as every phase.

The path of a step is a pure function of the seed and the global step (`step_arch`): a generator
seeded with (common.seed, step) draws every label of the space, uniformly or by its prior. So a
resumed run draws the paths an uninterrupted one drew, and every DDP rank draws the same path
without communicating; the ranks still compare a running digest of their paths at each epoch's
end and stop with an error if they ever differ (they would train different networks in one
all-reduce). The digest is in every epoch record (`path_digest`), so two runs can be compared.

No architecture parameters are trained and no val split is scored here: subnets are compared
after pretraining, by the search phase, on inherited weights. The phase folder is `pretrain/`,
its marker `pretrain.json`; the weights are in its `checkpoint_last.pt`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from archnas.context import PhaseContext
from archnas.data.loader import derive_seed
from archnas.distributed import agree_max
from archnas.nas.phase import Phase
from archnas.nas.searcher import load_data
from archnas.nas.spaces import space_of
from archnas.space.choice import sample_choice
from archnas.space.model import SearchSpaceModel
from archnas.training.hooks import HookBase
from archnas.training.trainer import Trainer

MARKER = "pretrain.json"
_PATHS = 3  # derive_seed's stream tag for the sampled paths


def step_arch(model: SearchSpaceModel, seed: int, step: int) -> dict[str, Any]:
    """The architecture global step `step` trains."""
    generator = torch.Generator().manual_seed(derive_seed(seed, _PATHS, step))
    return {label: sample_choice(spec, generator) for label, spec in model.specs.items()}


class UniformPaths(HookBase):
    """Sets each step's path before it runs; its digest is checkpointed with the trainer."""

    def __init__(self, model: SearchSpaceModel, seed: int):
        self.model, self.seed = model, seed
        self.digest = hashlib.sha256(b"archnas-paths").hexdigest()

    def before_step(self) -> None:
        step = self.trainer.global_step
        arch = step_arch(self.model, self.seed, step)
        self.model.set_architecture(arch)
        blob = json.dumps([self.digest, step, arch], sort_keys=True, default=str)
        self.digest = hashlib.sha256(blob.encode()).hexdigest()

    def after_step(self) -> None:
        t = self.trainer
        if t.epoch_step < t.steps_per_epoch:
            return
        value = int(self.digest[:15], 16)
        high, neg_low = agree_max([value, -value], t.env.control_group)
        if high != -neg_low:
            raise RuntimeError("DDP ranks sampled different paths in pretraining (their path digests differ); "
                               "every rank must run the same seed and steps")
        t.epoch_info["path_digest"] = self.digest[:16]  # into the epoch's record

    def state_dict(self) -> dict[str, Any]:
        return {"digest": self.digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.digest = state["digest"]


class Pretrain(Phase):
    name = "pretrain"
    kind = "search"
    marker = MARKER
    trains_supernet = True  # its checkpoint is what the search scores subnets of and the eval may tune
    # Keys of nas.search the pretraining does not read: changing them reuses a finished pretrain.
    search_only = ("cost", "ranking_check", "finalizer", "post_train", "combinations")

    def config_record(self) -> dict[str, Any]:
        record = super().config_record()
        search = record["nas"]["search"]
        for key in self.search_only:
            search.pop(key, None)
        section = search.get(self.strategy.name)
        if isinstance(section, dict):
            search[self.strategy.name] = {k: v for k, v in section.items() if k in self.strategy.pretrain_keys}
        return record

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        conf = ctx.conf
        space = space_of(conf)
        data = load_data(ctx, conf.loader)
        model = space.supernet(data.info)
        ctx.log.info(f"pretrain: {space.title}, {sum(p.numel() for p in model.weights()):,} weights, "
                     f"{len(model.specs)} choices; one uniformly sampled path per step; "
                     f"{len(data.parts['train'])} train images")
        trainer, paths = self.build_trainer(ctx, model, space.fingerprint())
        history = trainer.fit(data.loader("train", training=True))
        last = history.last or {}
        result = {"train_top1": last.get("train_top1"), "train_loss": last.get("train_loss"),
                  "epochs": len(history.records), "path_digest": paths.digest[:16],
                  "pretrain_time": sum(r.get("epoch_time", 0.0) for r in history.records),
                  "supernet_fingerprint": space.fingerprint()}
        self.write_marker(ctx, {"metrics": result})
        return result

    def build_trainer(self, ctx: PhaseContext, model: SearchSpaceModel, fingerprint: str) -> tuple[Trainer, UniformPaths]:
        """The pretraining Trainer and its path hook (also what `scripts/bench_spos.py` times):
        the weights only, every step on the path `UniformPaths` sets."""
        model.set_architecture(step_arch(model, ctx.seed, 0))
        paths = UniformPaths(model, ctx.seed)
        trainer = Trainer(ctx.conf.trainer, model, ctx, params=model.weights(), hooks=[paths],
                          checkpointer=self.checkpointer(ctx, fingerprint), find_unused_parameters=True)
        trainer.register_state("paths", paths)
        return trainer, paths

    def load(self, done: dict[str, Any]) -> dict[str, Any]:
        return done["metrics"]

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        return {"pretrain": {**result, "peak_memory": self.peak_memory}}
