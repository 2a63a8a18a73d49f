"""Checkpoints that resume a run exactly, refuse to resume a different run, and survive crashes.

A checkpoint holds the state of every registered object (model, optimizers, schedulers,
GradScaler, loaders, the trainer's counters and metrics history, anything a subclass adds), every
RNG state (python, numpy, torch CPU and CUDA), the resolved config with its hash, the model
fingerprint and the archnas version. Everything is stored as tensors and plain Python values, so
it loads with `torch.load(weights_only=True)`: reading a checkpoint never runs code from it.

Files, in the phase folder: `checkpoint_last.pt` (what a rerun resumes from), `checkpoint_prev.pt`
(the one before it, kept as a fallback) and `checkpoint_best.pt` (the best epoch by the
validation metric). Each is written atomically; before it is trusted, a checkpoint's zip records
are checked against their CRC-32s, so a truncated or corrupted file is detected and the previous
one used instead.

A checkpoint records the config it was written under and the fingerprint of the model it trains
(both given by the caller, as plain data); whether a run may resume from it is the config's
compatibility policy (`archnas.config.compat`): equal apart from keys that are safe to change,
and the same fingerprint; otherwise the differing keys are listed, and `force` resumes anyway.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import os
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

import numpy as np
import torch

from archnas.config import config_hash
from archnas.config.compat import config_changes, is_safe_key, lookup, resume_differences
from archnas.distributed import gather_to_main
from archnas.errors import CheckpointError
from archnas.utils import atomic, reads
from archnas.utils.versions import ARCHNAS_VERSION

if TYPE_CHECKING:
    from archnas.training.env import TrainingEnv

FORMAT = "archnas-checkpoint-1"
LAST, PREV, BEST = "checkpoint_last.pt", "checkpoint_prev.pt", "checkpoint_best.pt"
REQUIRED = {"config": dict, "rng": dict, "state": dict}  # what resuming reads, and of which type

class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's global RNG states, as tensors and plain values: python, numpy, torch's CPU
    generator and, on a CUDA device, that device's generator (the only one the process draws from;
    CUDA is never initialized just to read it)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def rank_rng_state(saved: Any, rank: int, world_size: int, log: logging.Logger) -> dict[str, Any]:
    """This rank's states from a checkpoint's `rng`: one entry per rank of the run that wrote it.

    Resumed on as many ranks, every rank gets its own states back; on another number of ranks
    (or from a checkpoint that kept rank 0's only), every rank takes rank 0's, and the run goes on
    statistically rather than bitwise the same (README "Resume")."""
    ranks = saved["ranks"] if isinstance(saved, dict) and "ranks" in saved else [saved]
    if len(ranks) == world_size:
        return ranks[rank]
    if rank == 0 and world_size > 1 or len(ranks) > 1:
        log.warning(f"the checkpoint holds the RNG states of {len(ranks)} rank(s), this run has {world_size}: "
                    "every rank resumes with rank 0's")
    return ranks[0]


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Restore what `capture_rng` captured, into this process (the CUDA state into `device`)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # written by archnas 0.1, all devices of rank 0: the first is the one it used
        cuda = cuda[0] if cuda else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


_PLAIN = (torch.Tensor, int, float, str, bytes, bool, type(None))


def check_plain(obj: Any, where: str) -> None:
    """Fail at save time, naming the entry, if something would not load with weights_only=True."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; use str or int keys")
            check_plain(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN) or (isinstance(obj, str) and type(obj) is not str):
        raise TypeError(
            f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which torch.load(weights_only=True) "
            f"refuses; store tensors, numbers, strings, lists and dicts only"
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's content, after checking that the file is whole; CheckpointError otherwise
    (one line: what the path is, or why its content is refused)."""
    path = Path(path)
    try:
        reads.check_regular(path)  # a folder or a device in its place: say so, and never read /dev/zero
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise CheckpointError(f"{path}: corrupt (record {bad} fails its CRC check)")
        ckpt = reads.torch_load_plain(path)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # torch_load_plain's one-line reason
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # zipfile fails in several ways on a damaged file
        raise CheckpointError(
            f"{path}: truncated or corrupt ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an archnas checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else None!r})"
        )
    lacking = [key for key, kind in REQUIRED.items() if not isinstance(ckpt.get(key), kind)]
    if lacking:
        raise CheckpointError(f"{path}: incomplete checkpoint (no valid {', '.join(lacking)})")
    return ckpt


def _fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Resumed:
    path: Path
    rng: Any  # the global RNG states of every rank when the checkpoint was written (`rank_rng_state`)


def _single_process(obj: Any) -> list[Any]:
    return [obj]


class Checkpointer:
    """Saves and restores a set of named stateful objects in a phase folder (rank 0 writes).

    Under DDP `save` is called on every rank at the same step: `gather` collects every rank's RNG
    states on rank 0 (a collective), which writes them all, so each rank resumes with its own."""

    def __init__(
        self,
        folder: str | Path,
        *,
        config: dict[str, Any],
        full_config: dict[str, Any],
        fingerprint: Optional[str],
        is_main: bool,
        log: logging.Logger,
        device: torch.device = torch.device("cpu"),
        gather: Callable[[Any], Optional[list[Any]]] = _single_process,
        force: bool = False,
    ):
        """`config` (plain data) and `fingerprint` identify the run: a checkpoint resumes only
        when they match (`archnas.config.compat`), or with `force`; `full_config` is kept for
        reference."""
        self.folder = Path(folder)
        self.config = config
        self.full_config = full_config
        self.fingerprint = fingerprint
        self.is_main = is_main
        self.log = log
        self.device = device
        self.gather = gather
        self.force = force
        self._objects: dict[str, Stateful] = {}
        self.changes: dict[str, list[Any]] = {}  # key -> [checkpoint's value, this run's] of the resumed checkpoint

    @property
    def last_path(self) -> Path:
        return self.folder / LAST

    def register(self, name: str, obj: Stateful) -> None:
        """Save and restore `obj` under `name`; restored in registration order."""
        if name in self._objects:
            raise ValueError(f"checkpoint state {name!r} is registered twice")
        self._objects[name] = obj

    def payload(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "archnas_version": ARCHNAS_VERSION,
            "torch_version": str(torch.__version__),
            "saved_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "config": self.config,
            "config_hash": config_hash(self.config),
            "full_config": self.full_config,
            "fingerprint": self.fingerprint,
            "rng": {"ranks": rng},
            "state": {name: obj.state_dict() for name, obj in self._objects.items()},
        }

    def save(self, *, last: bool = True, best: bool = False) -> None:
        """Write `checkpoint_last.pt` (moving the old one to `checkpoint_prev.pt`) and/or `checkpoint_best.pt`."""
        if not (last or best):
            return
        rng = self.gather(capture_rng(self.device))  # every rank takes part; rank 0 gets the list
        if not self.is_main:
            return
        payload = self.payload(rng)
        check_plain(payload, "checkpoint")
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        if best:
            atomic.write_bytes(self.folder / BEST, data)
        if last:
            # Write the new file completely first; then a crash at any point leaves a whole
            # checkpoint_last.pt or, between the two renames, a whole checkpoint_prev.pt.
            upcoming = self.folder / f".{LAST}.next"
            atomic.write_bytes(upcoming, data, shown=self.last_path)
            if self.last_path.exists():
                os.replace(self.last_path, self.folder / PREV)
            os.replace(upcoming, self.last_path)
            _fsync_dir(self.folder)

    @classmethod
    def in_env(cls, env: "TrainingEnv", *, config: Optional[dict[str, Any]] = None,
               full_config: Optional[dict[str, Any]] = None, fingerprint: Optional[str] = None,
               force: bool = False) -> "Checkpointer":
        """The checkpointer of a training in `env`: its folder, rank, device and ranks' group."""
        return cls(env.dir, config=config or {}, full_config=full_config or {}, fingerprint=fingerprint,
                   is_main=env.is_main, log=env.log, device=env.device,
                   gather=lambda obj: gather_to_main(obj, env.control_group), force=force)

    def resume(self) -> Optional[Resumed]:
        """Restore every registered object from the newest good checkpoint.

        Returns the file used and its RNG states, or None when the folder has no checkpoint (a
        fresh start). The caller restores the RNG states (`restore_rng`) as the last thing before
        training goes on, so that whatever runs at every start draws nothing from the restored
        streams.
        """
        problems = []
        for name in (LAST, PREV):
            path = self.folder / name
            if not path.exists():
                continue
            try:
                ckpt = read_checkpoint(path)
            except CheckpointError as exc:
                self.log.warning(f"{exc}; trying the previous checkpoint")
                problems.append(str(exc))
                continue
            self._check(ckpt, path, self.force)
            for name, obj in self._objects.items():
                try:
                    obj.load_state_dict(ckpt["state"][name])
                except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # torch's mismatch errors differ
                    keys = ", ".join(self.changes) or "none of the recorded settings"
                    raise CheckpointError(
                        f"{path}: its {name} state does not fit this run ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:160]}); changed since it was written: {keys}. "
                        "These cannot change on a resume, even with --force: restore them, or pass --restart to "
                        "start the phase over (the old folder is kept)"
                    ) from None
            return Resumed(path, ckpt["rng"])
        if problems:
            raise CheckpointError(f"no usable checkpoint to resume from: {'; '.join(problems)}; {self._advice()}")
        return None

    def _advice(self) -> str:
        """What to do when neither the last nor the previous checkpoint reads: an intact
        `checkpoint_best.pt` is a complete checkpoint of an earlier epoch (the metrics and
        TensorBoard files are rewritten to its history on resume), so copying it over
        `checkpoint_last.pt` resumes from there; it is not done unasked, since that silently
        retrains epochs."""
        start_over = f"move {self.folder}/checkpoint_*.pt away to start this phase from scratch"
        best = self.folder / BEST
        if not best.exists():
            return start_over
        try:
            state = read_checkpoint(best)["state"].get("trainer")
        except CheckpointError:
            return start_over
        epoch = state.get("epochs_done") if isinstance(state, dict) else None
        at = f" (of epoch {epoch})" if isinstance(epoch, int) else ""
        return (f"{best} is intact{at}: copy it to {self.last_path} to resume from there, or {start_over}")

    def _check(self, ckpt: dict[str, Any], path: Path, force: bool) -> None:
        missing = [name for name in self._objects if name not in ckpt["state"]]
        if missing:
            raise CheckpointError(
                f"{path}: has no state for {', '.join(missing)}; it was written by a different trainer"
            )
        unsafe, safe = resume_differences(ckpt["config"], ckpt.get("fingerprint"), self.config, self.fingerprint)
        saved = ckpt["config"]
        self.changes = {k: [lookup(saved, k), lookup(self.config, k)] for k in config_changes(saved, self.config)}
        if force and ckpt.get("fingerprint") != self.fingerprint:
            keys = [k for k in self.changes if not is_safe_key(k)]
            raise CheckpointError(
                f"{path} trains another model (fingerprint {ckpt.get('fingerprint')!r}, now {self.fingerprint!r}; "
                f"changed: {', '.join(keys) or 'the architecture it was given'}): a model's structure cannot change "
                "on a resume, even with --force; restore the settings, or pass --restart to start the phase over "
                "(the old folder is kept)"
            )
        if unsafe and not force:
            raise CheckpointError(
                f"{path} was written by a different run; these differ (checkpoint -> now):\n  "
                + "\n  ".join(unsafe)
                + "\nRestore the old settings, use another experiment name, pass --restart to start the phase over "
                "(the old folder is kept), or --force to let the changes take effect from where it stopped."
            )
        if unsafe:
            self.log.warning("resuming despite differences (--force); they take effect from here:\n  "
                             + "\n  ".join(unsafe))
        if safe:
            self.log.info(f"resuming with changed settings that are safe to change: {', '.join(safe)}")
        if ckpt.get("archnas_version") != ARCHNAS_VERSION:
            self.log.info(f"checkpoint written by archnas {ckpt.get('archnas_version')}, this is {ARCHNAS_VERSION}")
