"""Kill and resume: a deterministic 3-epoch digits training killed at a random step (SIGKILL, or
SIGTERM which checkpoints and exits) and rerun with the same command ends bit-identical to a run
that was never interrupted: every weight, optimizer and scheduler state, RNG state and metric.

The runs are real processes of tests/train_driver.py. The kill step is random; set
ARCHNAS_KILL_SEED to replay a failure (the seed is in every assertion message).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from archnas.training.checkpoint import read_checkpoint
from archnas.training.metrics import is_timing, without_timings

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "train_driver.py"
STEPS = 3 * 41  # 1,293 training images (1,437 less the 10% val split of nas.eval.loader) in batches of 32
SEED = int(os.environ.get("ARCHNAS_KILL_SEED", time.time_ns() % 100_000))
# One intra-op thread: a model this small gains nothing from two, and on a busy 2-core machine
# two spinning OpenMP threads make it several times slower. Every run of a comparison uses it.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(exp: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        str(DRIVER),
        str(exp),
        "common.deterministic=true",
        f"common.cache_dir={cache}",
        "common.checkpoint.every_steps=7",
        "nas.eval.trainer.epochs=3",
        "nas.eval.trainer.drop_path_prob=0.2",
        "nas.eval.trainer.optimizer.lr=0.05",
        "nas.eval.loader.train_batch=32",
        "nas.eval.loader.cutout=0",
    ]


def run_to_end(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_and_signal(cmd: list[str], at_step: int, signum: int) -> tuple[int, str]:
    """Start the run and send `signum` once it reports step `at_step`; (return code, stderr)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step ") and int(line.split()[1]) >= at_step:
            proc.send_signal(signum)
            break
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def assert_same(a: Any, b: Any, where: str) -> None:
    """Equal trees; tensors bit for bit; wall-clock fields skipped."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        keys = {k for k in a if not (isinstance(k, str) and (is_timing(k) or k in ("seconds", "saved_at")))}
        assert keys == {
            k for k in b if k in keys or not (isinstance(k, str) and (is_timing(k) or k in ("seconds", "saved_at")))
        }, where
        for k in keys:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_identical_runs(reference: Path, resumed: Path, context: str) -> None:
    ref, res = (read_checkpoint(p / "eval" / "checkpoint_last.pt") for p in (reference, resumed))
    assert res["state"]["trainer"]["epochs_done"] == 3, context
    for name in ("model", "optimizer", "scheduler", "trainer", "train_loader", "history"):
        assert_same(ref["state"][name], res["state"][name], f"{context}: {name}")
    assert_same(ref["rng"], res["rng"], f"{context}: rng")
    assert ref["state"]["model"]  # something was compared
    lines = [json.loads(x) for x in (resumed / "eval" / "metrics.jsonl").read_text().splitlines()]
    ref_lines = [json.loads(x) for x in (reference / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3], f"{context}: metrics.jsonl has {len(lines)} lines"
    assert [without_timings(r) for r in lines] == [without_timings(r) for r in ref_lines], context


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reference")
    cache = root / "cache"
    run_to_end(command(root / "exp", cache))
    return root / "exp", cache


def test_sigkill_at_a_random_step_then_rerun_is_bit_identical(reference, tmp_path):
    ref, cache = reference
    step = random.Random(SEED).randrange(1, STEPS - 5)
    context = f"ARCHNAS_KILL_SEED={SEED}, SIGKILL at step {step}"
    cmd = command(tmp_path / "exp", cache)
    code, _ = run_and_signal(cmd, step, signal.SIGKILL)
    assert code == -signal.SIGKILL, context
    run_to_end(cmd)
    assert_identical_runs(ref, tmp_path / "exp", context)


def test_sigkill_with_a_truncated_last_checkpoint_falls_back_and_is_bit_identical(reference, tmp_path):
    ref, cache = reference
    rng = random.Random(SEED + 1)
    step = rng.randrange(20, STEPS - 5)  # late enough for two checkpoints (every 7 steps)
    context = f"ARCHNAS_KILL_SEED={SEED}, SIGKILL at step {step}"
    cmd = command(tmp_path / "exp", cache)
    code, _ = run_and_signal(cmd, step, signal.SIGKILL)
    assert code == -signal.SIGKILL, context
    last = tmp_path / "exp" / "eval" / "checkpoint_last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: int(len(data) * rng.uniform(0.1, 0.9))])
    run_to_end(cmd)
    assert "trying the previous checkpoint" in (tmp_path / "exp" / "eval" / "log.txt").read_text(), context
    assert_identical_runs(ref, tmp_path / "exp", context)


def test_sigterm_checkpoints_exits_with_a_resume_message_and_rerun_is_bit_identical(reference, tmp_path):
    ref, cache = reference
    step = random.Random(SEED + 2).randrange(1, STEPS - 5)
    context = f"ARCHNAS_KILL_SEED={SEED}, SIGTERM at step {step}"
    cmd = command(tmp_path / "exp", cache)
    code, err = run_and_signal(cmd, step, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, f"{context}: {err[-2000:]}"
    assert "stopped by SIGTERM" in err and "rerun the same command to resume" in err, context
    saved = read_checkpoint(tmp_path / "exp" / "eval" / "checkpoint_last.pt")["state"]["trainer"]
    assert saved["global_step"] >= step, context  # the step in progress was finished and saved
    run_to_end(cmd)
    assert_identical_runs(ref, tmp_path / "exp", context)
    events = EventAccumulator(str(tmp_path / "exp" / "eval" / "tb"))
    events.Reload()
    per_epoch = STEPS // 3  # TensorBoard's x axis is the global step: no epoch and no step twice, none lost
    assert [e.step for e in events.Scalars("train_loss")] == [per_epoch, 2 * per_epoch, STEPS], context
    assert [e.step for e in events.Scalars("step/train_loss")] == list(range(1, STEPS + 1)), context
