"""Architecture optimizers: what trains (or samples) the architecture of a supernet, as one
small protocol the ArchTrainer calls.

The ArchTrainer trains the supernet's weights; everything about the architecture is its
`ArchOptimizer`'s, which it builds from the strategy (`build_arch_optimizer`: the algorithm's
default, `Strategy.arch_optimizer()`, or a registered name in `nas.search.arch_optimizer`):

- `weighting()`: how the store's parameters become one forward's weights (bound by whoever builds
  the supernet, before any optimizer exists: a weighting may add parameters); default: the
  strategy's (softmax for DARTS, Gumbel samples for GDAS, edge-normalized for PC-DARTS). None:
  the optimizer fixes whole architectures itself (`space.use`, as the SPOS pretrain).
- `setup(trainer)`: once, in the trainer's constructor: build its own torch optimizers over
  `model.arch_params()` (or a controller's), keep what it needs of the trainer.
- `step(train, next_val)`: the ONE call per training step, before the weight step, with the
  step's train batch and a function that draws the next val batch (only `needs_val` optimizers
  may call it: the trainer checkpoints the val stream's position only for them).
- `loss_terms(model, outputs, batch)`: a term added to the weight step's loss, or None.
- `cost` (set by the trainer): the search's limits and soft cost term; an optimizer with
  `takes_cost_term` adds the gradient of `cost.term()` to its architecture step (the bilevel step does).
- `epoch_metrics()`: its fields of each epoch's record; `states()`: its checkpoint entries by
  name, which the trainer registers itself, so nothing is saved by hand.
- `before_validation()`: set what the supernet's validation scores (a controller: its most
  probable architecture); `final_arch()`: the architecture the search ends with when the optimizer
  holds it itself (ENAS's controller), else None and the space exports the store's parameters.
- `settings()`, `reconfigure(changed)`, `replay_schedule()`: what a resume under a changed config
  needs, as for the Trainer's own optimizer (hashes of what a checkpoint restores over the config).

`trains_alphas` says whether it trains `model.arch_params()`: the trainer then checkpoints them
(`arch_params`), records their softmax, entropy and argmax shares each epoch and reports how far
they moved. A new optimizer is a class registered under a name at import
(`register_arch_optimizer`), in archnas or in a plugin module (`--import`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

import torch
from torch import Tensor

from archnas.config import config_hash
from archnas.data.loader import Batch
from archnas.distributed import all_reduce_mean, is_distributed
from archnas.errors import ConfigError
from archnas.space.store import ArchStore, Weighting
from archnas.training.checkpoint import Stateful
from archnas.training.hooks import HookBase
from archnas.training.optim import apply_hyperparameters, build_optimizer
from archnas.training.schedules import build_scheduler

if TYPE_CHECKING:
    from archnas.nas.arch_trainer import ArchTrainer
    from archnas.nas.cost_search import CostGuide
    from archnas.nas.strategy import Strategy

_ARCH_OPTIMIZERS: dict[str, "type[ArchOptimizer]"] = {}


class ArchOptimizer:
    """The protocol; every method has the do-nothing default, so an optimizer overrides only what
    it does. `self.trainer` is set by `setup`."""

    trains_alphas: ClassVar[bool] = True
    needs_val: ClassVar[bool] = True
    # Whether its architecture loss takes the soft cost term (`nas.search.cost.penalty`, from `cost`).
    takes_cost_term: ClassVar[bool] = False
    # Whether it distills sampled paths from the largest subnet (`nas.search.distill`; uniform_paths does).
    distills: ClassVar[bool] = False
    trainer: "ArchTrainer"
    # The search's limits and penalty (`archnas.nas.cost_search.CostGuide`), set by the trainer; None: none.
    cost: Optional["CostGuide"] = None

    def __init__(self, strategy: "Strategy"):
        self.strategy = strategy

    def check(self) -> None:
        """Refuse settings it cannot honour (ConfigError), before anything runs."""

    def weighting(self) -> Optional[Weighting]:
        return self.strategy.weighting()

    def setup(self, trainer: "ArchTrainer") -> None:
        self.trainer = trainer

    def step(self, train: Batch, next_val: Callable[[], Batch]) -> None:
        """Its work of one training step, before the weight step on `train`."""

    def loss_terms(self, model: torch.nn.Module, outputs: Any, batch: Batch) -> Optional[Tensor]:
        """A term to add to the weight step's loss on `batch` (`outputs`: the model's), or None."""
        return None

    def epoch_metrics(self) -> dict[str, Any]:
        return {}

    def states(self) -> dict[str, Stateful]:
        """Its checkpoint entries by name, registered by the trainer before it resumes."""
        return {}

    def hooks(self) -> list[HookBase]:
        return []

    def before_validation(self) -> None:
        """Called before each validation of the supernet: set the path it should score, if any."""

    def final_arch(self) -> Optional[Any]:
        """The architecture the search ends with when this optimizer holds it (a controller's
        policy, not the store's parameters); None: the space exports it from the store."""
        return None

    def begin(self, steps_per_epoch: int) -> None:
        """Called by `fit` before it resumes: build what depends on the epoch's length (lr schedules)."""

    def settings(self) -> dict[str, str]:
        return {}

    def reconfigure(self, changed: set[str]) -> None:
        """Apply the config's settings named in `changed` (keys of `settings()`) after a resume."""

    def replay_schedule(self) -> None:
        """A resume with a new length or schedule: rebuild its schedules at the current step."""


def register_arch_optimizer(name: str, cls: "type[ArchOptimizer]") -> None:
    """`name` becomes a value of `nas.search.arch_optimizer` (and of `Strategy.arch_optimizer()`)."""
    if not name or name in _ARCH_OPTIMIZERS:
        raise ValueError(f"architecture optimizer {name!r} is registered twice or has no name")
    _ARCH_OPTIMIZERS[name] = cls


def arch_optimizer_names() -> list[str]:
    return sorted(_ARCH_OPTIMIZERS)


def arch_optimizer_name(strategy: "Strategy") -> str:
    """The optimizer a search of `strategy` runs: the config's, else the algorithm's own."""
    return strategy.conf.nas.search.arch_optimizer or strategy.arch_optimizer()


def build_arch_optimizer(strategy: "Strategy") -> ArchOptimizer:
    name = arch_optimizer_name(strategy)
    if name not in _ARCH_OPTIMIZERS:
        raise ConfigError(f"nas.search.arch_optimizer: unknown architecture optimizer {name!r}; registered: "
                          f"{', '.join(arch_optimizer_names())} (a plugin registers its own: --import module)")
    return _ARCH_OPTIMIZERS[name](strategy)


def bind_weighting(strategy: "Strategy", store: ArchStore) -> None:
    """Bind the weighting of the optimizer a search of `strategy` runs to a new supernet's store,
    before any optimizer is built over it (a weighting may add parameters, PC-DARTS its betas)."""
    weighting = build_arch_optimizer(strategy).weighting()
    if weighting is not None:
        store.use(weighting)


def sync_grads(params: list[Tensor]) -> None:
    """Under DDP every rank must hold the same architecture parameters: average their gradients."""
    if is_distributed():
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        all_reduce_mean([p.grad for p in params])


class AlphaOptimizer:
    """The alpha optimizer of `nas.search.trainer.alpha_optimizer` over `params` and its lr schedule
    (`alpha_lr_schedule`, stepped once per training step, steps without an alpha step included),
    as an optimizer that trains architecture parameters owns them: checkpointed as
    `alpha_optimizer` and `alpha_scheduler`, reconfigured and replayed on resume like the weights'."""

    def __init__(self, trainer: "ArchTrainer", params: list[Tensor]):
        self.trainer, self.params = trainer, params
        self.optimizer = build_optimizer(trainer.conf.alpha_optimizer, params,
                                         key="nas.search.trainer.alpha_optimizer")
        self.scheduler: Any = None  # built by `begin`, which knows the steps per epoch

    def begin(self, steps_per_epoch: int) -> None:
        self.scheduler = self._new_scheduler(steps_per_epoch)

    def _new_scheduler(self, steps_per_epoch: int) -> Any:
        conf = self.trainer.conf
        return build_scheduler(conf.alpha_lr_schedule, self.optimizer, max(conf.epochs, 1), max(steps_per_epoch, 1))

    def step_schedule(self) -> None:
        if self.scheduler is not None:  # None: a step taken outside fit() (a benchmark, a test)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # warm-up steps take no alpha step, yet the schedule runs on
                self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def states(self) -> dict[str, Stateful]:
        out: dict[str, Stateful] = {"alpha_optimizer": self.optimizer}
        if self.scheduler is not None:
            out["alpha_scheduler"] = self.scheduler
        return out

    def settings(self) -> dict[str, str]:
        conf = self.trainer.conf
        return {"alpha_optimizer": config_hash(conf.alpha_optimizer),
                "alpha_lr_schedule": config_hash(conf.alpha_lr_schedule)}

    def reconfigure(self, changed: set[str]) -> None:
        if changed & {"alpha_optimizer", "alpha_lr_schedule"}:  # from the config, and the schedule from it
            t = self.trainer
            apply_hyperparameters(self.optimizer, t.conf.alpha_optimizer, self.params, t._key("alpha_optimizer"),
                                  keep_lr=False)
            self.replay_schedule()

    def replay_schedule(self) -> None:
        """A new search length changes the alpha lr schedule too: rebuilt and stepped to now."""
        t = self.trainer
        for group in self.optimizer.param_groups:
            group["lr"] = t.conf.alpha_optimizer.lr
            group.pop("initial_lr", None)
        scheduler = self._new_scheduler(t.steps_per_epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
            for _ in range(t.global_step):
                scheduler.step()
        self.scheduler.load_state_dict(scheduler.state_dict())


class AlphaArchOptimizer(ArchOptimizer):
    """An architecture optimizer that trains `model.arch_params()` with the alpha optimizer of
    `nas.search.trainer.alpha_optimizer` (`self.alphas`, an `AlphaOptimizer`, built by `setup`):
    its checkpoint entries, settings and schedule are handled here; a subclass writes `step`
    (calling `self.alphas.step_schedule()` every step) and adds its own `states()`."""

    def setup(self, trainer: "ArchTrainer") -> None:
        super().setup(trainer)
        self.alphas = AlphaOptimizer(trainer, list(trainer.base_model.arch_params()))
        self.alpha_optimizer = self.alphas.optimizer

    def states(self) -> dict[str, Stateful]:
        return self.alphas.states()

    def begin(self, steps_per_epoch: int) -> None:
        self.alphas.begin(steps_per_epoch)

    def settings(self) -> dict[str, str]:
        return self.alphas.settings()

    def reconfigure(self, changed: set[str]) -> None:
        self.alphas.reconfigure(changed)

    def replay_schedule(self) -> None:
        self.alphas.replay_schedule()


class RunningMean:
    """A sum and a count that survive checkpoints (the arch-step loss of a half-done epoch).

    Values are added as device tensors and read back once, when the mean is taken, so adding one
    every step never waits for the device."""

    def __init__(self) -> None:
        self.total: Tensor | float = 0.0
        self.count = 0

    def add(self, value: Tensor | float) -> None:
        self.total = self.total + value
        self.count += 1

    def pop(self) -> Optional[float]:
        mean = float(self.total) / self.count if self.count else None
        self.total, self.count = 0.0, 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        return {"total": float(self.total), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.count = float(state["total"]), int(state["count"])
