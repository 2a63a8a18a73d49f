"""The training loop: epochs of optimizer steps with hooks, validation, metrics and exact resume.

    trainer = Trainer(conf.nas.eval.trainer, model, env, checkpointer=Checkpointer.in_env(env, fingerprint=...))
    history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))

The trainer knows nothing of the experiment around it: `env` (`archnas.training.env`) is its
folder, logger, device, ranks and checkpoint policy, and the caller injects what is particular to
the run: the parameters the weight optimizer trains (`params`; a supernet passes its weights
only), the `Checkpointer` (which records whatever identifies the run: config, model fingerprint)
and hooks.

What a subclass (the search phase's ArchTrainer) overrides or uses:
- `run_step(batch)`: one step; call `super().run_step(batch)` for the weight step after your own
  work (a supernet: its architecture optimizer's step first).
- `register_state(name, obj)`: anything with state_dict/load_state_dict (the alpha optimizer,
  the val stream) goes into every checkpoint and is restored on resume.
- `epoch_metrics()`: extra fields for the epoch's record (metrics.jsonl and TensorBoard); fields
  that depend only on the epoch can also be put into `epoch_info` from `before_epoch`.
- `register_hooks([...])`: HookBase objects, run after the built-in ones.
- `loss_terms(outputs, batch)`: a term to add to the weight step's loss (None: none).
- `weight_step(batch)`: the weight step alone (what a benchmark times); `loss_fn(outputs, targets)`,
  `optimizer` (over `params`), `scheduler`, `precision` (autocast, GradScaler, channels_last).

Counters: `epoch` (0-based, the one running), `epochs_done`, `epoch_step` (steps done in the
running epoch) and `global_step` (optimizer steps since the start). What a user reads counts from
1: the log's "epoch 3/6", and each record's `epoch` field (metrics.jsonl, `best_epoch`) is the
number of epochs done when it was written, so epoch 1 is the first. Everything the loop does
after a resume is what it would have done without the interruption: the checkpoint holds every
counter, the half-finished epoch's running sums, the loader position and every RNG state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import signal
import time
import warnings
from typing import Any, Iterable, Optional, Sequence

from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler

from archnas.config import config_hash
from archnas.config.ranges import check_trainer
from archnas.config.schema import TrainerConf
from archnas.data.loader import Batch, BatchLoader
from archnas.distributed import agree_max, wrap_ddp
from archnas.errors import ConfigError
from archnas.training.checkpoint import Checkpointer, Resumed, Stateful, rank_rng_state, restore_rng
from archnas.training.env import TrainingEnv
from archnas.training.hooks import DropPathRamp, HookBase, MetricsWriter, PeriodicCheckpoint
from archnas.training.losses import TrainLoss, split_outputs
from archnas.training.metrics import EpochMeter, MetricsHistory
from archnas.training.optim import apply_hyperparameters, build_optimizer
from archnas.training.precision import Precision
from archnas.training.schedules import build_scheduler
from archnas.training.signals import RunInterrupted, StopSignals
from archnas.training.tester import Tester


class Trainer:
    def __init__(
        self,
        conf: TrainerConf,
        model: nn.Module,
        env: TrainingEnv,
        *,
        params: Optional[Iterable[nn.Parameter]] = None,
        checkpointer: Optional[Checkpointer] = None,
        hooks: Sequence[HookBase] = (),
        find_unused_parameters: bool = False,
    ):
        """`model` is the plain module: the trainer moves it to the device and memory format,
        then wraps it in DistributedDataParallel when the run has several ranks
        (`find_unused_parameters` for models whose forward skips some parameters, as GDAS's).
        `params`: what the weight optimizer trains (default: every parameter that requires a
        gradient). `checkpointer`: the phase's, which knows what a checkpoint must match to be
        resumed (default: one in `env.dir` that records nothing about the run)."""
        check_trainer(conf)  # a loaded config was checked under its phase's key already
        self.conf = conf
        self.env = env
        self.log = env.log
        self.device = env.device
        self.precision = Precision(conf.amp, conf.channels_last, env.device)
        if isinstance(model, DistributedDataParallel):  # wrapped by the caller, who chose its layout
            self.base_model, self.model = model.module, model
        else:
            self.base_model = self.precision.prepare_model(model)
            self.model = wrap_ddp(self.base_model, env.device, find_unused_parameters)
        self.weights = [p for p in (self.base_model.parameters() if params is None else params) if p.requires_grad]
        self.loss_fn = TrainLoss(conf.lossfn, conf.aux_weight)
        self.optimizer = build_optimizer(conf.optimizer, self.weights)
        self.scheduler: Optional[LRScheduler] = None  # built by fit(), which knows the steps per epoch
        self.tester = Tester(self.model, self.precision)
        self.meter = EpochMeter(env.device)
        self.history = MetricsHistory()
        self.epoch = 0
        self.epochs_done = 0
        self.epoch_step = 0
        self.global_step = 0
        self.steps_per_epoch = 0
        self.epoch_lr = 0.0
        self.epoch_info: dict[str, Any] = {}
        self.new_best = False
        self.train_loader: Optional[BatchLoader] = None
        self.val_loader: Optional[Iterable[Batch]] = None
        self.step_loss: Any = None  # the last weight step's mean loss, a device tensor (never read here)
        self.stop_signals = StopSignals(on_signal=self._acknowledge_signal)
        self._saved_at: Optional[tuple[int, int]] = None  # (epochs_done, global_step) of the last save
        self._checkpoint_requested = False
        self._checkpoint_shape = (0, 0)  # (epochs, steps per epoch) of the run a checkpoint came from
        self._checkpoint_settings: dict[str, str] = {}  # `settings()` of the run a checkpoint came from
        self._saved_scheduler: Optional[dict[str, Any]] = None  # the checkpoint's, until _resume decides
        self.config_changes: list[dict[str, Any]] = []  # what each resume changed, from which step
        self._resume_change: Optional[dict[str, Any]] = None
        self.checkpointer = checkpointer or Checkpointer.in_env(env)
        self._hooks: list[HookBase] = []
        self.register_hooks([DropPathRamp(), PeriodicCheckpoint(env.checkpoint), MetricsWriter()])
        self.register_hooks(hooks)
        if env.probe is not None:  # a dry run: a few timed steps, then the training stops
            self.register_hooks([env.probe.hook()])
        self.register_state("model", self.base_model)
        self.register_state("optimizer", self.optimizer)
        if self.precision.scaler.is_enabled():
            self.register_state("grad_scaler", self.precision.scaler)
        self.register_state("meter", self.meter)
        self.register_state("history", self.history)
        self.register_state("trainer", self)

    # -- extension points -------------------------------------------------------------------

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = self
            self._hooks.append(hook)

    def register_state(self, name: str, obj: Stateful) -> None:
        self.checkpointer.register(name, obj)

    def run_step(self, batch: Batch) -> None:
        """One training step; subclasses add their own work around the weight step."""
        self.weight_step(batch)

    def weight_step(self, batch: Batch) -> None:
        """One optimizer step of the weights on `batch`, as `batch_chunks` chunks whose gradients
        add up to exactly the mean-loss gradient of the whole batch."""
        x, y = batch
        self.optimizer.zero_grad(set_to_none=True)
        chunks = [
            (xc, yc)
            for xc, yc in zip(x.tensor_split(self.conf.batch_chunks), y.tensor_split(self.conf.batch_chunks))
            if len(yc)
        ]
        step_loss = None
        for i, (xc, yc) in enumerate(chunks):
            # Under DDP, gradients are all-reduced once, on the last chunk.
            sync = (
                contextlib.nullcontext()
                if i == len(chunks) - 1 or not isinstance(self.model, DistributedDataParallel)
                else self.model.no_sync()
            )
            with sync:
                with self.precision.autocast():
                    outputs = self.model(self.precision.prepare_input(xc))
                    loss = self.loss_fn(outputs, yc)
                    extra = self.loss_terms(outputs, (xc, yc))
                    if extra is not None:
                        loss = loss + extra
                share = loss * (yc.shape[0] / y.shape[0])
                self.precision.scaler.scale(share).backward()
            self.meter.update(split_outputs(outputs)[0], yc, loss)
            step_loss = share.detach() if step_loss is None else step_loss + share.detach()
        self.step_loss = step_loss
        self.step_optimizer()

    def loss_terms(self, outputs: Any, batch: Batch) -> Optional[Tensor]:
        """A term added to the loss of every chunk of the weight step (`outputs`: the model's on
        `batch`, that chunk), or None; the supernet's trainer adds its architecture optimizer's
        (a latency penalty). The recorded train loss includes it."""
        return None

    def step_optimizer(self) -> None:
        """Unscale, clip the weights' gradient norm, step, and advance the lr schedule."""
        scaler = self.precision.scaler
        scaler.unscale_(self.optimizer)
        if self.conf.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, self.conf.grad_clip)
        scaler.step(self.optimizer)
        scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()

    def epoch_metrics(self) -> dict[str, Any]:
        """Extra fields for the finished epoch's record; override to add some."""
        return {}

    def hparams(self) -> dict[str, Any]:
        """What TensorBoard's hparams tab shows for this training: the run's settings the env
        carries (its phase's config), else the trainer's own section, as flat scalar keys."""
        source = self.env.hparams or {"trainer": dataclasses.asdict(self.conf)}
        return flat_scalars(source)

    def evaluate(self, loader: Iterable[Batch], prefix: str = "test") -> dict[str, float]:
        return self.tester.evaluate(loader, prefix)

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, train_loader: BatchLoader, val_loader: Optional[Iterable[Batch]] = None) -> MetricsHistory:
        """Train until `conf.epochs` epochs are done, resuming from the phase's checkpoint if any.

        Raises RunInterrupted (after saving a checkpoint) on SIGINT/SIGTERM.
        """
        if self.train_loader is not None:
            raise RuntimeError("Trainer.fit() runs once per Trainer")
        self.train_loader, self.val_loader = train_loader, val_loader
        self.steps_per_epoch = len(train_loader)
        if self.steps_per_epoch == 0:
            raise ConfigError("the training split has fewer images than ranks: no batch to train on")
        self.scheduler = self._new_scheduler()
        self.register_state("scheduler", _SchedulerSlot(self))
        self.register_state("train_loader", train_loader)
        resumed = self._resume() if self.env.resume else None
        self.env.commit(self._resume_record(resumed), self.config_changes)
        with self.stop_signals:
            for hook in self._hooks:
                hook.before_fit()
            if resumed is not None:
                restore_rng(rank_rng_state(resumed.rng, self.env.rank, self.env.world_size, self.log), self.device)
            while self.epochs_done < self.conf.epochs:
                self._run_epoch()
            for hook in self._hooks:
                hook.after_fit()
        return self.history

    def _run_epoch(self) -> None:
        self.epoch = self.epochs_done
        if self.epoch_step == 0:
            self.meter.reset()
            self.epoch_lr = self.optimizer.param_groups[0]["lr"]
        self.epoch_info = {}
        for hook in self._hooks:
            hook.before_epoch()
        self.model.train()
        batches = self.train_loader.epoch(self.epoch)
        desc = f"{self.env.name} epoch {self.epoch + 1}/{self.conf.epochs}"
        start = time.perf_counter()
        for batch in self.env.progress(batches, self.steps_per_epoch, desc, done=self.epoch_step):
            for hook in self._hooks:
                hook.before_step()
            self.run_step(batch)
            self.global_step += 1
            self.epoch_step += 1
            self.meter.add_time(time.perf_counter() - start)  # includes fetching and augmenting the batch
            for hook in self._hooks:
                hook.after_step()
            self._stop_if_requested()
            start = time.perf_counter()
        self._finish_epoch()
        for hook in self._hooks:
            hook.after_epoch()
        self._stop_if_requested()

    def _finish_epoch(self) -> None:
        self.meter.all_reduce()
        seconds = max(self.meter.seconds, 1e-9)
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,  # 1-based, as the log says it
            "global_step": self.global_step,
            "lr": self.epoch_lr,
            **self.meter.result("train"),
            "k": self.meter.k,
            "step_time": seconds / max(self.meter.steps, 1),
            "images_per_s": self.meter.images / seconds,
        }
        last = self.epoch + 1 == self.conf.epochs
        if self.val_loader is not None and ((self.epoch + 1) % self.conf.validation.freq == 0 or last):
            record.update(self.evaluate(self.val_loader, "val"))
        record["epoch_time"] = self.meter.seconds + record.get("val_time", 0.0)
        record.update(self.epoch_info)
        record.update(self.epoch_metrics())
        self.new_best = self.history.add(record)
        self.epochs_done += 1
        self.epoch_step = 0

    # -- checkpoints and stopping -----------------------------------------------------------

    def save_checkpoint(self, last: bool = True, best: bool = False) -> None:
        if not self.env.checkpoint.enabled:
            return
        # Hooks write out what they buffered up to this step even when the checkpoint of this step
        # exists already (a stop right after a periodic checkpoint, whose hook ran before the
        # step's records were buffered): a resume purges only what comes after this step.
        for hook in self._hooks:
            hook.before_save()
        if last and self._saved_at == (self.epochs_done, self.global_step) and not best:
            return
        self.checkpointer.save(last=last, best=best)
        if last:
            self._saved_at = (self.epochs_done, self.global_step)

    def request_checkpoint(self) -> None:
        """Ask for `checkpoint_last.pt` at the end of this step, for a reason only this rank knows
        (a clock): every rank writes it together or none does (`_agree`)."""
        self._checkpoint_requested = True

    def _agree(self) -> tuple[Optional[int], bool]:
        """(the signal to stop on, whether a requested checkpoint is due), the same on every rank:
        a rank that stopped or checkpointed alone would leave the others waiting in a collective.
        Agreed over a CPU group, so the step does not wait for the device."""
        local = [self.stop_signals.requested or 0, int(self._checkpoint_requested)]
        signum, save = agree_max(local, self.env.control_group)
        self._checkpoint_requested = False
        return signum or None, bool(save)

    def _acknowledge_signal(self, signum: int) -> None:
        """Said at once, from the signal handler: the step in progress may take a while yet."""
        self.log.warning(
            f"received {signal.Signals(signum).name}: stopping after the current step (epoch {self.epoch + 1}/"
            f"{self.conf.epochs}, step {self.epoch_step + 1}/{self.steps_per_epoch}), then saving a checkpoint; "
            "a second signal stops at once"
        )

    def _stop_if_requested(self) -> None:
        signum, save = self._agree()
        if save and signum is None:
            self.save_checkpoint(last=True)
        if signum is None:
            return
        where = f"epoch {self.epoch + 1}/{self.conf.epochs}, step {self.epoch_step}/{self.steps_per_epoch}"
        if self.env.checkpoint.enabled:
            self.save_checkpoint(last=True)
            saved = f"checkpoint saved to {self.checkpointer.last_path}; rerun the same command to resume"
        else:
            saved = "nothing saved (common.checkpoint.enabled is false): a rerun starts this phase over"
        raise RunInterrupted(signum, f"stopped by {signal.Signals(signum).name} after {where}; {saved}")

    def _new_scheduler(self) -> LRScheduler:
        return build_scheduler(self.conf.lr_schedule, self.optimizer, max(self.conf.epochs, 1), self.steps_per_epoch)

    def _key(self, name: str) -> str:
        """The dotted config key of a trainer setting, for messages (`nas.eval.trainer.epochs`)."""
        return ".".join(p for p in (self.env.section_key, "trainer", name) if p)

    def settings(self) -> dict[str, str]:
        """Hashes of the settings whose state a checkpoint restores over the config (optimizer
        hyperparameters, the lr schedule): when one differs on resume, the config's is applied
        from the resume step (`reconfigure`). Subclasses add their own optimizers."""
        return {"optimizer": config_hash(self.conf.optimizer), "lr_schedule": config_hash(self.conf.lr_schedule)}

    def reconfigure(self, changed: set[str]) -> None:
        """Apply the config's settings named in `changed` (keys of `settings()`) to the state a
        resume restored; the weight optimizer keeps its lr, which the recomputed schedule sets."""
        if "optimizer" in changed:
            apply_hyperparameters(self.optimizer, self.conf.optimizer, self.weights, self._key("optimizer"), keep_lr=True)

    def _changed_settings(self) -> set[str]:
        """The `settings()` that differ from the checkpoint's: by their recorded hashes, or by the
        config keys the checkpointer found changed under them (a checkpoint that predates the hashes)."""
        changed = {k for k, v in self.settings().items() if self._checkpoint_settings.get(k, v) != v}
        keys = self.checkpointer.changes
        return changed | {name for name in self.settings() if any(k.startswith(self._key(name) + ".") for k in keys)}

    def _resume(self) -> Optional[Resumed]:
        resumed = self.checkpointer.resume()
        if resumed is None:
            return None
        self._saved_at = (self.epochs_done, self.global_step)
        self.log.info(
            f"resumed from {resumed.path} at epoch {self.epochs_done + 1}, step {self.epoch_step} "
            f"(global step {self.global_step})"
        )
        trained = self.epochs_done + (1 if self.epoch_step else 0)
        if trained > self.conf.epochs:
            done = f"{self.epochs_done} epochs" + (f" and {self.epoch_step} steps" if self.epoch_step else "")
            raise ConfigError(
                f"{self._key('epochs')}: {self.conf.epochs} is fewer than {resumed.path} has already trained "
                f"({done}); a run cannot be shortened: set it to {trained} or more, or pass --restart to train "
                f"{self.conf.epochs} from scratch (the old folder is kept)"
            )
        changed = self._changed_settings()
        self.reconfigure(changed)
        saved_epochs, saved_steps = self._checkpoint_shape
        shape_changed = (saved_epochs, saved_steps) != (self.conf.epochs, self.steps_per_epoch)
        recompute = (shape_changed or bool(changed & {"optimizer", "lr_schedule"})) and self.epochs_done < self.conf.epochs
        if recompute:
            self._replay_schedule()
        else:
            self.scheduler.load_state_dict(self._saved_scheduler)
        self._saved_scheduler = None
        keys = dict(self.checkpointer.changes)
        if keys or recompute:
            self._resume_change = {"global_step": self.global_step, "epoch": self.epochs_done + 1,
                                   "epoch_step": self.epoch_step, "changed": keys, "schedule_recomputed": recompute}
            self.config_changes.append(self._resume_change)
            where = f"global step {self.global_step} (epoch {self.epochs_done + 1}, step {self.epoch_step})"
            if recompute:
                length = f"from {saved_epochs} to {self.conf.epochs} epochs, " if saved_epochs != self.conf.epochs else ""
                self.log.info(f"{self.env.name}: lr schedule recomputed ({length}{saved_steps} -> "
                              f"{self.steps_per_epoch} steps per epoch) at {where}")
            if keys:
                self.log.info(f"{self.env.name}: from {where} on: "
                              + "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in keys.items()))
        return resumed

    def _replay_schedule(self) -> None:
        """A new training length or schedule: rebuild the schedule and step it to the current
        step, so the lr from here on is the new schedule's."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.conf.optimizer.lr
            group.pop("initial_lr", None)
        scheduler = self._new_scheduler()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
            for _ in range(self.global_step):
                scheduler.step()
        self.scheduler = scheduler

    def _resume_record(self, resumed: Optional[Resumed]) -> Optional[dict[str, Any]]:
        """What run.json records of this run's start: the checkpoint, the step, what changed."""
        if resumed is None:
            return None
        return {"checkpoint": str(resumed.path), "global_step": self.global_step, "epoch": self.epochs_done + 1,
                "epoch_step": self.epoch_step, **({"config_changes": self._resume_change} if self._resume_change else {})}

    # -- the trainer's own checkpoint state ---------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_done": self.epochs_done,
            "epoch_step": self.epoch_step,
            "global_step": self.global_step,
            "epoch_lr": self.epoch_lr,
            "epochs": self.conf.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "settings": self.settings(),
            "config_changes": self.config_changes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_done = int(state["epochs_done"])
        self.epoch_step = int(state["epoch_step"])
        self.global_step = int(state["global_step"])
        self.epoch_lr = float(state["epoch_lr"])
        self._checkpoint_shape = (int(state["epochs"]), int(state["steps_per_epoch"]))
        self._checkpoint_settings = dict(state.get("settings", {}))  # absent: written before archnas recorded them
        self.config_changes = list(state.get("config_changes", []))


class _SchedulerSlot:
    """The lr schedule's checkpoint entry. On resume its state is held back: the trainer either
    restores it (the same schedule) or recomputes the schedule for new settings (`_replay_schedule`),
    which a restored state of another schedule would only confuse."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer._saved_scheduler = state


def flat_scalars(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`, keeping numbers, strings and booleans (None as "null",
    enums by value); lists and other values are left out: TensorBoard's hparams take scalars."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scalars(value, name + "."))
        elif isinstance(value, enum.Enum):
            out[name] = value.value
        elif value is None:
            out[name] = "null"
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out
