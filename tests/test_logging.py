"""What a run says while it runs: progress lines on a clock in non-interactive output, a stop
signal acknowledged at once, TensorBoard's step-level scalars and hparams, one numbering."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from archnas.config import load_config, parse_override_tokens
from archnas.config.schema import DatasetConf, LoaderConf, OptimizerConf, TrainerConf
from archnas.context import RunContext
from archnas.data import build_data
from archnas.training.checkpoint import read_checkpoint
from archnas.training.signals import RunInterrupted
from archnas.training.trainer import Trainer

CPU = torch.device("cpu")


class FakeClock:
    """Each reading is `tick` seconds after the one before: a step "takes" `tick` seconds."""

    def __init__(self, tick: float):
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def phase(tmp_path: Path, *overrides: str):
    conf = load_config([], parse_override_tokens(list(overrides), set())[0])
    ctx = RunContext.create(conf, tmp_path / "exp", []).phase("eval", conf.nas.eval)
    lines = Lines()
    ctx.log.addHandler(lines)
    return ctx, lines


def digits(tmp_path: Path, train_batch: int, limit_train: int = 256):
    return build_data(DatasetConf(name="digits", limit_train=limit_train, limit_test=64), LoaderConf(cutout=0, train_batch=train_batch),
                      seed=0, device=CPU, cache_dir=tmp_path / "cache")


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def test_progress_lines_come_at_least_every_log_every_seconds_on_a_fake_clock(tmp_path, monkeypatch):
    """Non-interactive output, 20 steps of 7 fake seconds, a count (50) that never fires: a line
    still comes at least every 30 s (+ the step that crosses it), each saying where it stands."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    ctx, lines = phase(tmp_path, "common.tensorboard=false", "common.log_every_steps=50", "common.log_every_seconds=30")
    ctx.clock = FakeClock(7.0)
    data = digits(tmp_path, train_batch=8, limit_train=160)  # 20 steps
    Trainer(TrainerConf(epochs=1, optimizer=OptimizerConf(lr=0.05)), Small(), ctx).fit(data.loader("train", True))
    progress = [m for m in lines.messages if m.startswith("eval epoch 1/1: step ")]
    steps = [int(m.split("step ")[1].split("/")[0]) for m in progress]
    # Every reading is one step later: a line after step 5 (35 s), then every 5 steps (35 s) after it.
    assert steps == [5, 10, 15], progress
    assert all("/20, " in m and "s left in the epoch" in m for m in progress)
    gaps = [b - a for a, b in zip([0, *steps], [*steps, 20])]
    assert max(gaps) * 7.0 <= 30 + 7.0  # the epoch line ends the last stretch
    assert any(m.startswith("epoch 1/1: train loss") for m in lines.messages)


def test_progress_by_count_and_by_clock_both_fire_and_zero_turns_them_off(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    ctx, lines = phase(tmp_path, "common.log_every_steps=4", "common.log_every_seconds=50")
    ctx.clock = FakeClock(20.0)
    list(ctx.progress(range(12), 12, "search epoch 2/3"))
    # by the clock after 3, 7 and 11 steps (60 s each), by count after 4 and 8; none after the last
    assert [int(m.split("step ")[1].split("/")[0]) for m in lines.messages] == [3, 4, 7, 8, 11]
    lines.messages.clear()
    ctx.clock = FakeClock(45.0)
    list(ctx.progress(range(6, 12), 12, "search epoch 2/3", done=6))  # a resumed epoch counts on from step 6
    assert [m.split(",")[0] for m in lines.messages] == ["search epoch 2/3: step 8/12", "search epoch 2/3: step 10/12"]
    lines.messages.clear()
    ctx.log_every_steps, ctx.log_every_seconds = 0, 0.0
    list(ctx.progress(range(12), 12, "x"))
    assert lines.messages == []


def test_negative_progress_settings_are_refused():
    from archnas.errors import ConfigError

    conf = load_config([], parse_override_tokens(["common.log_every_seconds=-1"], set())[0])
    with pytest.raises(ConfigError, match="common.log_every_seconds"):
        RunContext.create(conf, Path("/nonexistent"), [])


class SignalsItself(Trainer):
    """Sends SIGTERM to itself in the middle of step 3 and notes what the log held right after."""

    said_during_step: list[str] = []

    def run_step(self, batch):
        if self.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            held = next(h for h in self.env.log.handlers if hasattr(h, "messages"))  # the test's, beside log.txt's
            self.said_during_step = [m for m in held.messages if "SIGTERM" in m]
        super().run_step(batch)


def test_sigterm_is_logged_when_it_arrives_and_the_run_stops_at_the_step_boundary(tmp_path):
    ctx, lines = phase(tmp_path, "common.tensorboard=false")
    data = digits(tmp_path, train_batch=64)
    trainer = SignalsItself(TrainerConf(epochs=2, optimizer=OptimizerConf(lr=0.05)), Small(), ctx)
    with pytest.raises(RunInterrupted):
        trainer.fit(data.loader("train", True))
    # Logged from the handler, while step 3 was still computing, not when it ended ...
    assert len(trainer.said_during_step) == 1, lines.messages
    assert "received SIGTERM: stopping after the current step (epoch 1/2, step 3/4)" in trainer.said_during_step[0]
    # ... and the run still finished that step and saved it.
    saved = read_checkpoint(ctx.dir / "checkpoint_last.pt")["state"]["trainer"]
    assert saved["global_step"] == 3 and saved["epoch_step"] == 3


def test_tensorboard_has_step_loss_and_lr_hparams_and_no_bookkeeping_scalars(tmp_path):
    ctx, _ = phase(tmp_path, "common.tensorboard=true", "nas.eval.trainer.optimizer.lr=0.05")
    data = digits(tmp_path, train_batch=64)  # 4 steps per epoch
    conf = TrainerConf(epochs=2, optimizer=OptimizerConf(lr=0.05))
    history = Trainer(conf, Small(), ctx).fit(data.loader("train", True), data.loader("test", False))
    ctx.close()
    assert [r["epoch"] for r in history.records] == [1, 2] and history.best_epoch in (1, 2)
    acc = EventAccumulator(str(ctx.dir / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("step/train_loss")] == list(range(1, 9))
    assert [e.step for e in acc.Scalars("step/lr")] == list(range(1, 9))
    assert acc.Scalars("step/lr")[0].value == pytest.approx(0.05)
    losses = [e.value for e in acc.Scalars("step/train_loss")]
    assert all(0 < v < 10 for v in losses) and len(set(losses)) == 8
    assert [e.step for e in acc.Scalars("train_loss")] == [4, 8]  # epoch scalars at the global step
    assert not tags & {"k", "global_step", "epoch", "best_epoch"}, tags
    hparams = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    start = hparams["_hparams_/session_start_info"].decode("latin-1")
    for key in ("eval.trainer.optimizer.lr", "eval.trainer.epochs", "seed", "dataset"):
        assert key in start, key


def write_idx(folder: Path, n: int = 20) -> None:
    folder.mkdir(parents=True)
    images = bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + (4).to_bytes(4, "big") * 2 + bytes(range(16)) * n
    labels = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(i % 10 for i in range(n))
    for prefix in ("train", "t10k"):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)


def test_the_data_source_is_where_the_files_were_read_not_the_configured_dataroot(tmp_path, monkeypatch):
    """fashion_mnist with nothing in the dataroot falls back to the system folder: split.json and
    the log name that folder, resolved."""
    import dataclasses

    from archnas.data import idx
    from archnas.nas.searcher import load_data

    system = tmp_path / "system" / "fashion-mnist"
    write_idx(system, 100)  # 10 a class: the eval's val split (0.1) holds one of each
    monkeypatch.setattr(idx, "FASHION_MNIST", dataclasses.replace(idx.FASHION_MNIST, system_dirs=(str(system),)))
    ctx, lines = phase(tmp_path, "dataset.name=fashion_mnist", f"dataset.dataroot={tmp_path / 'empty'}",
                       "nas.eval.loader.cutout=0")
    load_data(ctx, ctx.conf.loader)
    ctx.commit()  # split.json is held until the phase commits (a refused run writes nothing)
    split = json.loads((ctx.dir / "split.json").read_text())
    assert split["dataset"] == "fashion_mnist" and split["source"] == str(system.resolve())
    assert f"data: fashion_mnist read from {system.resolve()}" in lines.messages
    assert "train_idx" in split and "digest" in split  # the split itself, as before
