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

With `nas.search.distill.enabled` the pretrain distills in place (once-for-all's and BigNAS's
sandwich rule; ENOT recommends an "output distribution optimization" for its pretrain, whose
details are not published, so this is the published technique in its spirit): each step the
weight step's forward runs the largest subnet (the most expensive architecture by
`distill.largest_by`, from the space's exact cost table), whose loss is the label loss, and the
step's sampled path runs as a second forward whose loss is the KL divergence from the largest's
softened outputs (`temperature`, detached: the teacher is not pulled towards the student), both
in one backward and one optimizer step. The epoch record holds the mean KL term (`distill_kl`);
train loss and accuracy are the largest subnet's. The sampled paths are the ones the pretrain
draws without distillation, so the subnets trained are the same; only their targets differ.

No architecture parameters are trained and no val split is scored here: subnets are compared
after pretraining, by the search phase, on inherited weights. The phase folder is `pretrain/`,
its marker `pretrain.json`; the weights are in its `checkpoint_last.pt`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from archnas.config.schema import DistillConf
from archnas.context import PhaseContext
from archnas.data import DataBundle
from archnas.data.loader import Batch
from archnas.descs.dataset_info import DatasetInfo
from archnas.distributed import agree_max
from archnas.errors import ConfigError
from archnas.latency import exact_cost_models
from archnas.nas.arch_optimizer import ArchOptimizer, RunningMean, arch_optimizer_name, register_arch_optimizer
from archnas.nas.cost_search import space_costs
from archnas.nas.arch_trainer import ArchTrainer
from archnas.nas.phase import Phase
from archnas.nas.ranking_monitor import attach_ranking_monitor
from archnas.nas.searcher import load_data
from archnas.nas.spaces import Space, space_of
from archnas.space.store import Searchable
from archnas.stats import dataset_info
from archnas.training.losses import split_outputs
from archnas.training.checkpoint import Stateful
from archnas.utils.seeding import derive_seed

MARKER = "pretrain.json"


def step_arch(space: Space, model: Searchable, seed: int, step: int) -> Any:
    """The architecture global step `step` trains (`space.draw` from a generator of the seed and step)."""
    return space.draw(model, torch.Generator().manual_seed(derive_seed(seed, "paths", step)))


def largest_arch(space: Space, info: DatasetInfo, conf: Any, seed: int) -> Any:
    """The most expensive architecture of the space by `conf.distill.largest_by` (an exact count),
    from its cost table (`SpaceCosts.statistics`: the table's extreme, or the counted maximum of a
    space whose choices are coupled): the teacher of in-place distillation."""
    genome = space.genome(info)
    costs = space_costs(conf.cost, space, genome, info, seed)
    return genome.arch_of(costs.statistics(conf.distill.largest_by)["arch_max"])


class UniformPaths(ArchOptimizer):
    """The SPOS pretrain's architecture optimizer (registered as `uniform_paths`): it trains no
    architecture parameters and reads no val batches; each step it sets the path of
    `step_arch(space, model, seed, global step)` and folds it into a digest, checkpointed as `paths`.
    With `nas.search.distill.enabled` the weight step runs the largest subnet and `loss_terms` adds
    the sampled path's KL divergence from it (the module docstring)."""

    trains_alphas = False
    needs_val = False
    distills = True

    def __init__(self, strategy: Any):
        super().__init__(strategy)
        self.digest = hashlib.sha256(b"archnas-paths").hexdigest()
        self.distill: DistillConf = strategy.conf.nas.search.distill
        self.kl = RunningMean()
        self.student: Any = None  # the step's sampled path, while the weight step runs the largest

    def check(self) -> None:
        if self.distill.enabled:
            check_distill(self.distill)

    def weighting(self) -> None:
        return None  # each step fixes a whole path (`space.use`)

    def setup(self, trainer: Any) -> None:
        super().setup(trainer)
        conf = self.strategy.conf
        self.space = space_of(conf.nas.search)
        self.model, self.seed = trainer.base_model, conf.common.seed
        self.teacher = None
        if self.distill.enabled:
            info = dataset_info(conf.dataset, conf.common.cache_dir)
            self.teacher = largest_arch(self.space, info, conf.nas.search, self.seed)
            trainer.log.info(f"in-place distillation from the largest subnet by {self.distill.largest_by}: "
                             f"{self.space.describe(self.teacher)}")
        self.space.use(self.model, step_arch(self.space, self.model, self.seed, 0))

    def step(self, train: Batch, next_val: Callable[[], Batch]) -> None:
        step = self.trainer.global_step
        arch = step_arch(self.space, self.model, self.seed, step)
        if self.teacher is None:
            self.space.use(self.model, arch)
        else:
            self.student = arch
            self.space.use(self.model, self.teacher)  # the weight step's forward: the largest, on the labels
        blob = json.dumps([self.digest, step, self.space.record(arch)], sort_keys=True, default=str)
        self.digest = hashlib.sha256(blob.encode()).hexdigest()

    def loss_terms(self, model: torch.nn.Module, outputs: Any, batch: Batch) -> Optional[Tensor]:
        """The sampled path's KL divergence from the largest subnet's softened outputs (`outputs`,
        detached), times `weight * temperature**2` (Hinton's scaling keeps the gradient's size)."""
        if self.teacher is None:
            return None
        t = self.distill.temperature
        self.space.use(self.model, self.student)
        try:
            student = split_outputs(model(self.trainer.precision.prepare_input(batch[0])))[0]
        finally:
            self.space.use(self.model, self.teacher)
        teacher = split_outputs(outputs)[0].detach()
        kl = F.kl_div(F.log_softmax(student.float() / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                      reduction="batchmean", log_target=True) * (t * t)
        self.kl.add(kl.detach())
        return self.distill.weight * kl

    def epoch_metrics(self) -> dict[str, Any]:
        """`path_digest`, after the DDP ranks found they drew the same paths; `distill_kl`."""
        value = int(self.digest[:15], 16)
        high, neg_low = agree_max([value, -value], self.trainer.env.control_group)
        if high != -neg_low:
            raise RuntimeError("DDP ranks sampled different paths in pretraining (their path digests differ); "
                               "every rank must run the same seed and steps")
        record: dict[str, Any] = {"path_digest": self.digest[:16]}
        kl = self.kl.pop()
        if kl is not None:
            record["distill_kl"] = kl
        return record

    def states(self) -> dict[str, Stateful]:
        return {"paths": self}

    def state_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, **({"kl": self.kl.state_dict()} if self.teacher is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.digest = state["digest"]
        if "kl" in state:
            self.kl.load_state_dict(state["kl"])


def check_distill(conf: DistillConf, key: str = "nas.search.distill") -> None:
    if conf.largest_by not in exact_cost_models():
        raise ConfigError(f"{key}.largest_by: {conf.largest_by!r} is not an exact cost model; expected one of "
                          f"{', '.join(exact_cost_models())}")
    if not conf.temperature > 0:
        raise ConfigError(f"{key}.temperature: {conf.temperature!r}; expected a number above 0")
    if not conf.weight > 0:
        raise ConfigError(f"{key}.weight: {conf.weight!r}; expected a number above 0 (to turn it off: enabled=false)")


register_arch_optimizer("uniform_paths", UniformPaths)


class Pretrain(Phase):
    name = "pretrain"
    section_key = "nas.search"
    marker = MARKER
    trains_supernet = True  # its checkpoint is what the search scores subnets of and the eval may tune
    # Keys of nas.search the pretraining does not read: changing them reuses a finished pretrain;
    # nor does it read any of the algorithm's own (nas.search.spos: how subnets are searched).
    unread_keys = ("cost", "ranking_check", "finalizer", "post_train", "combinations", "ranking_monitor")
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
        trainer = ArchTrainer(ctx.conf.trainer, model, ctx, strategy=self.strategy,
                              val_stream=data.loader("val", training=True),
                              checkpointer=self.checkpointer(ctx, fingerprint))
        attach_ranking_monitor(trainer, ctx, space_of(ctx.conf), data, self.force)
        return trainer

    def load(self, done: dict[str, Any]) -> dict[str, Any]:
        return done["metrics"]

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        return {**result, "peak_memory": self.peak_memory}
