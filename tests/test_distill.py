"""In-place distillation in the single-path pretrain (nas.search.distill): the largest subnet learns
the labels and the sampled path its softened outputs; a killed run resumes bit-identically."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import pytest
import torch

from archnas.training.checkpoint import read_checkpoint
from test_spos import KILL_SEED, STEP, command, kill_when, run

DISTILL = ("nas.search.distill.enabled=true", "nas.search.distill.temperature=2.0", "--stages", "pretrain",
           "common.checkpoint.every_steps=1", "common.deterministic=true")


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "sp" / "pretrain" / "metrics.jsonl").read_text().splitlines()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(folder / "sp" / "pretrain" / "checkpoint_last.pt")["state"]["model"]


@pytest.mark.slow  # about 20 s: three short pretrains, one killed
def test_distillation_changes_the_pretrain_and_a_killed_run_resumes_bit_identically(tmp_path: Path) -> None:
    plain, distilled, killed = tmp_path / "plain", tmp_path / "distilled", tmp_path / "killed"
    assert run(command(plain, *DISTILL[2:])).returncode == 0
    out = run(command(distilled, *DISTILL))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "in-place distillation from the largest subnet by params" in out.stdout + out.stderr
    on, off = records(distilled), records(plain)
    assert all(r["distill_kl"] > 0 for r in on) and not any("distill_kl" in r for r in off)
    assert [r["path_digest"] for r in on] == [r["path_digest"] for r in off]  # the same sampled paths
    a, b = weights(distilled), weights(plain)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())

    step = random.Random(f"{KILL_SEED}:distill").randint(1, 2)
    where = f"ARCHNAS_KILL_SEED={KILL_SEED}, SIGKILL at pretrain epoch 2 step {step}"
    code = kill_when(command(killed, *DISTILL), STEP, lambda m: int(m[1]) == 2 and int(m[2]) >= step)
    assert code == -signal.SIGKILL, f"{where}: the pretrain ended before it was killed"
    out = run(command(killed, *DISTILL))
    assert out.returncode == 0 and "resumed from" in out.stdout + out.stderr, where
    c = weights(killed)
    assert all(torch.equal(a[k], c[k]) for k in a), where
    assert [r["distill_kl"] for r in records(killed)] == [r["distill_kl"] for r in on], where


def test_bad_distillation_settings_are_one_line(tmp_path: Path) -> None:
    out = run(command(tmp_path, "nas.search.distill.enabled=true", "nas.search.distill.largest_by=cpu_ms"))
    assert out.returncode == 2 and "nas.search.distill.largest_by: 'cpu_ms' is not an exact cost model" in out.stderr
    out = run(command(tmp_path, "nas.algo=darts", "nas.search.distill.enabled=true"))
    assert out.returncode == 2 and "nas.search.distill.enabled: the architecture optimizer 'bilevel'" in out.stderr
