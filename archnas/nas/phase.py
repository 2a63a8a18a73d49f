"""A phase of an experiment: a stage of an algorithm's recipe (pretrain, search, ranking, eval, a
plugin's export) or a trial inside one (a random-search candidate): one folder, one completion
marker, one rule for skipping and resuming.

A stage has a unique `name`: its folder, its entry in `result.json`, what `--stages` and `--skip`
name. Its config section is `section_key` (default `nas.<name>`; the built-in stages of the search
read `nas.search`, the eval `nas.eval`), which `--no-search` / `--no-eval` go by, and which its
marker and checkpoints record (less the keys the stage declares it does not read: `unread_keys`,
`algorithm_keys`). `inputs()` names the stages whose results it reads.

    phase = Evaluater(experiment)
    result = phase.execute()      # skipped when finished, resumed when interrupted, else run

`execute` reads the marker first (`finished`): a phase that finished under a compatible config
(`archnas.config.compat`) is not run again, and one that finished under a config that differs in
keys that are not safe to change is refused (unless `--force`) rather than reused. A finished
phase asked for more epochs than it trained is not finished: it trains on from its last
checkpoint (the trainer recomputes the lr schedule for the new length); fewer are refused.

Then `work` runs in a context that holds back every write (config.yaml, run.json, log.txt, the
files staged with `ctx.write`) until it commits (`PhaseContext.commit`): the Trainer commits once
it has checked the checkpoint against the config and resumed, so a phase refused up to there
(another model, a setting that cannot change, a bad value) leaves its folder byte-identical. A
phase that runs nested phases in its folder (random-search candidates, combinations) commits
first. `work` writes its results and, last, the marker (`write_marker`, with the trainer's
record of what each resume changed, from which step), so an interrupted phase has no marker and
resumes from its checkpoint, which the phase's `checkpointer` ties to the same config and model
fingerprint. A phase with `restart` set (`--restart`) starts over: at commit its old folder is
moved to `<folder>.old-<k>`.

A phase also records the peak memory of the run that did its work (`peak_memory.json`), so a
rerun that skips it still reports that run's peak.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

from archnas.config import ExperimentConf, config_to_dict, load_config
from archnas.config.compat import config_changes, is_safe_key, lookup, phase_config
from archnas.context import PhaseContext, RunContext
from archnas.distributed import barrier
from archnas.errors import CheckpointError, ConfigError
from archnas.training.checkpoint import LAST, PREV, Checkpointer, read_checkpoint
from archnas.utils import atomic, reads
from archnas.utils.memory import PeakMemory

if TYPE_CHECKING:
    from archnas.nas.strategy import Strategy

PEAK_MEMORY_FILE = "peak_memory.json"
EPOCHS_KEY = "*.trainer.epochs"  # the training lengths a rerun may raise (train on) but not lower


def recorded_config(exp_dir: Path) -> Optional[ExperimentConf]:
    """The config an experiment folder ran under: its first stage folder (in name order) holding a
    `config.yaml`; None when no stage of it has run (the callers say what they expected)."""
    found = sorted(p / "config.yaml" for p in exp_dir.iterdir() if (p / "config.yaml").is_file())
    return load_config([str(found[0])], []) if found else None


def final_network_stage(stages: Sequence[type["Phase"]]) -> Optional[type["Phase"]]:
    """The stage of `stages` (a recipe, in order) whose trained network is the experiment's final
    one: the last that declares a `network_file` (the eval; a tune stage after it would be later)."""
    return next((stage for stage in reversed(stages) if stage.network_file), None)


@dataclass
class Experiment:
    """What the stages of one experiment share: the run, the algorithm, `--force`, and the
    results of the stages run or reused so far (by stage name), which later stages read."""

    run: RunContext
    strategy: "Strategy"
    force: bool = False
    results: dict[str, Any] = field(default_factory=dict)
    restart: bool = False  # --restart: the stages run start over (each keeps its old folder)
    ran: list[str] = field(default_factory=list)  # names of the stages that did work in this run


class Phase:
    """Subclasses set `name` (a stage's name and default folder), `section_key`, `marker`, and
    implement `work` and `load`."""

    name: ClassVar[str] = ""
    # The dotted config section it reads (default `nas.<name>`): what its marker records, and what
    # --no-search (nas.search) and --no-eval (nas.eval) skip.
    section_key: ClassVar[str] = ""
    # A registered stage's own section, a dataclass: becomes `nas.<name>` (`register_stage`).
    config_class: ClassVar[Optional[type]] = None
    # Keys of its section it does not read: left out of its record, so changing them reuses it.
    unread_keys: ClassVar[tuple[str, ...]] = ()
    # Keys of the algorithm's own subsection of its section (`nas.search.<algo>`) it reads; None: all.
    algorithm_keys: ClassVar[Optional[tuple[str, ...]]] = None
    marker: ClassVar[str] = "result.json"
    # The model file (`archnas.model.model_file`) in its folder holding the network this stage
    # trained, "" for none: the last stage of a recipe that has one produces the experiment's final
    # network (`final_network_stage`), which `archnas export` and the export stage export.
    network_file: ClassVar[str] = ""
    # A registered stage that ends every recipe without being named (the `plot` stage): `recipe`
    # appends it after `nas.extra_stages`; `--skip <name>` leaves it out.
    in_every_recipe: ClassVar[bool] = False

    @classmethod
    def check_config(cls, conf: Any) -> None:
        """Judge the stage's own settings (ConfigError) when the config is loaded, before anything runs;
        called for the stages `nas.extra_stages` names."""

    def __init__(self, experiment: Experiment, folder: Optional[str] = None, run: Optional[RunContext] = None):
        """`folder`: relative to the experiment, default `name`; `run`: the run this phase belongs
        to when it is not the experiment's (a macro combination carries its own config)."""
        self.experiment = experiment
        self.folder = folder or self.name
        self.run = run or experiment.run
        self.peak_memory: Optional[int] = None
        self.worked = False  # set when `execute` did the work (rather than reading a finished result)
        self.restart = False  # start over, keeping the old folder (set by the runner for --restart)
        self._forced: list[str] = []  # keys a finished phase's marker differs in, accepted by --force

    # -- what a phase is ---------------------------------------------------------------------

    @property
    def strategy(self) -> "Strategy":
        return self.experiment.strategy

    @property
    def force(self) -> bool:
        return self.experiment.force

    @property
    def dir(self) -> Path:
        return self.run.exp_dir / self.folder

    @classmethod
    def section_path(cls) -> str:
        """The dotted key of its config section."""
        return cls.section_key or f"nas.{cls.name}"

    @property
    def section(self) -> Any:
        """This phase's config section (`nas.search`, `nas.eval`, `nas.<stage>`)."""
        node = self.run.conf
        for key in self.section_path().split("."):
            node = getattr(node, key)
        return node

    def config_record(self) -> dict[str, Any]:
        """The parts of the config that shape this phase, as its marker and checkpoints record them:
        its section less the keys it declares it does not read."""
        record = phase_config(self.run.conf, self.section)
        node = record
        for key in self.section_path().split("."):
            node = node[key]
        for key in self.unread_keys:
            node.pop(key, None)
        own = node.get(self.strategy.name)
        if self.algorithm_keys is not None and isinstance(own, dict):
            node[self.strategy.name] = {k: v for k, v in own.items() if k in self.algorithm_keys}
        return record

    def work(self, ctx: PhaseContext) -> Any:
        """Do the phase's work in its opened folder and return its result; write the marker last."""
        raise NotImplementedError

    def load(self, done: dict[str, Any]) -> Any:
        """The result of a finished phase, from its marker's contents and its folder: by default the
        marker's contents without the config it records (a phase whose result is its marker)."""
        return {k: v for k, v in done.items() if k != "config"}

    def summary(self, result: Any) -> dict[str, Any]:
        """What `result.json` records of the phase."""
        return {}

    def report(self, summary: dict[str, Any]) -> list[str]:
        """Lines the end-of-run report says about the stage, from its `summary`."""
        return []

    def inputs(self) -> tuple[str, ...]:
        """Names of the earlier stages whose results this one reads (the supernet it scores): they
        are reused when finished though not run, and this one starts over when one of them did work."""
        return ()

    def stale(self) -> bool:
        """Whether this phase's folder holds work done on inputs that changed since: an input
        stage did work in this run (it trained on, or started over). Then this phase starts over."""
        return (any(name in self.experiment.ran for name in self.inputs()) and self.dir.is_dir()
                and any(self.dir.iterdir()))

    # -- skip, resume, run -------------------------------------------------------------------

    def finished(self) -> Optional[dict[str, Any]]:
        """The marker's contents if this phase finished under a compatible config, else None.

        A marker of fewer epochs than now asked for is not finished: the phase trains on from its
        last checkpoint. Fewer epochs than it records are refused (a run cannot be shortened).
        Reads only: nothing in the folder is written or changed."""
        self._forced = []
        marker = self.dir / self.marker
        if self.restart or not marker.is_file() or not self.run.conf.common.resume:
            return None
        try:
            done = json.loads(reads.read_text(marker))
        except (OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError
            return None  # half-written by a killed run: redo what it marked
        if not isinstance(done, dict):
            return None  # not a marker archnas wrote: redo what it would mark
        saved, now = done.get("config", {}), self.config_record()
        diff = config_changes(saved, now)
        unsafe = [k for k in diff if not is_safe_key(k)]
        if unsafe and not self.force:
            raise CheckpointError(
                f"{marker} records a finished {self.folder} phase with a different config ({', '.join(unsafe[:8])}); "
                "use another experiment name, restore the settings, pass --restart to run it again (the old "
                "folder is kept), or --force to let the changes take effect from where it stopped"
            )
        longer = []
        for key in (k for k in diff if fnmatch.fnmatchcase(k, EPOCHS_KEY)):
            old, new = lookup(saved, key), lookup(now, key)
            if not (isinstance(old, int) and isinstance(new, int)):
                continue
            if new < old:
                raise ConfigError(
                    f"{key}: {new} is fewer than the {old} epochs {marker} records as trained; a finished phase "
                    f"cannot be shortened: keep {key} at {old} or more (more trains on from its last checkpoint), "
                    f"or pass --restart to train {new} from scratch (the old folder is kept)"
                )
            longer.append(f"{key} {old} -> {new}")
        if longer:
            self.run.log.info(f"{self.folder} finished before, now with more epochs ({', '.join(longer)}): "
                              "training goes on from its last checkpoint")
            return None
        self._forced = unsafe
        return done

    def execute(self) -> Any:
        """The phase's result: read back when finished, else computed (resuming its checkpoint).

        Nothing is written until the phase has checked what it can refuse (`PhaseContext.commit`)."""
        if not self.restart and self.stale():
            self.restart = True
            self.run.log.info(f"{self.folder}: what it was computed from changed in this run "
                              f"({', '.join(self.experiment.ran)} ran): it starts over, keeping the old folder")
        done = self.finished()
        if done is not None:
            if self._forced:
                raise CheckpointError(
                    f"{self.dir / self.marker} records a finished {self.folder} phase and these settings differ: "
                    f"{', '.join(self._forced[:8])}; --force lets changes take effect from the step a phase resumes "
                    "at, and a finished phase has none left: pass --restart to run it again under the new settings "
                    "(the old folder is kept), or raise its trainer.epochs to train on under them"
                )
            return self._reuse(done)
        ctx = self.run.phase(self.folder, self.section, restart=self.restart)
        try:
            with PeakMemory(ctx.device) as mem:
                result = self.work(ctx)
            ctx.commit()
            barrier()  # DDP: rank 0 has written the phase's files (its marker last) before anyone reads them
            self.peak_memory = mem.peak_bytes
            if ctx.is_main:
                atomic.write_json(self.dir / PEAK_MEMORY_FILE, {"peak_memory": mem.peak_bytes, "device": str(ctx.device)})
        finally:
            ctx.close()
        self.worked = True
        return result

    def load_finished(self) -> Optional[Any]:
        """The result of this phase if it finished, else None (nothing is run or written)."""
        done = self.finished()
        return None if done is None else self._reuse(done)

    def _reuse(self, done: dict[str, Any]) -> Any:
        self.run.log.info(f"{self.folder} already finished ({self.dir / self.marker}); skipping it")
        self.peak_memory = self._recorded_peak()
        return self.load(done)

    def write_marker(self, ctx: PhaseContext, record: dict[str, Any]) -> None:
        """The completion marker, with the config it finished under; call it last (rank 0 writes)."""
        ctx.commit()
        changes = {"config_changes": ctx.config_changes} if ctx.config_changes else {}
        if ctx.is_main:
            atomic.write_json(self.dir / self.marker, {**record, **changes, "config": self.config_record()})

    def recorded_fingerprint(self) -> Optional[str]:
        """The fingerprint of the model this folder's work trained: its marker's, else its newest
        readable checkpoint's; None when it has neither."""
        try:
            recorded = json.loads(reads.read_text(self.dir / self.marker)).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            recorded = None
        for name in (LAST, PREV):
            if recorded is None and (self.dir / name).is_file():
                try:
                    recorded = read_checkpoint(self.dir / name).get("fingerprint")
                except CheckpointError:
                    continue
        return recorded

    def checkpointer(self, ctx: PhaseContext, fingerprint: Optional[str]) -> Checkpointer:
        """The phase's checkpointer: resumes only a checkpoint of this config and this model."""
        return Checkpointer.in_env(ctx, config=self.config_record(), full_config=config_to_dict(self.run.conf),
                                   fingerprint=fingerprint, force=self.force)

    def _recorded_peak(self) -> Optional[int]:
        try:
            return json.loads(reads.read_text(self.dir / PEAK_MEMORY_FILE))["peak_memory"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # finished by a version that did not record it
