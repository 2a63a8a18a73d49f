"""The `enot` algorithm: the hard limit is an exact constrained argmax of the architecture
distribution, a limit below the space's minimum is refused before the pretrain, a run killed in
each stage ends bit-identical, and changing only the limit reruns search and tune, not pretrain."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import archnas.hub  # noqa: F401
from archnas.cli import main
from archnas.enot.core import SearchCore
from archnas.latency import Limits, SpaceCosts
from archnas.latency.table import row_to_arch
from archnas.config.schema.nas import CostConf
from archnas.nas.spaces import module_space
from archnas.space import SearchSpaceModel
from archnas.descs.dataset_info import DatasetInfo

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SPACE = ("{name: mobilenet, search_ops: [MIB_k=3_t=3, MIB_k=5_t=6, identity], blocks_out_channels: [4, 8], "
         "blocks_count: [1, 2], blocks_stride: [1, 2], stem_channels: 4, head_channels: 8}")
TINY = ["common.tensorboard=false", "common.log_every_steps=1", "dataset.limit_train=160", "dataset.limit_test=40",
        f"nas.search.space={SPACE}", "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=2",
        "nas.search.enot.epochs=2", "nas.search.enot.bn_tune_batches=1",
        "nas.search.enot.bn_validation_tune_batches=2", "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=2",
        "nas.search.cost.max_macs=60000", "common.checkpoint.every_steps=1", "common.deterministic=true"]
KILL_SEED = int(os.environ.get("ARCHNAS_KILL_SEED", "0"))  # set and printed by conftest.py


def command(results: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "main.py"), "--config", str(REPO / "confs" / "enot_mobilenet.yaml"),
            "--exp-name", "e", f"common.results_dir={results}", *TINY, *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)


def kill_when(cmd: list[str], pattern: re.Pattern) -> int:
    """Run `cmd` and SIGKILL it at the first output line matching `pattern`."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if pattern.search(line):
            proc.kill()
            break
    proc.wait(timeout=600)
    return proc.returncode


def tiny_costs() -> tuple[SearchSpaceModel, SpaceCosts]:
    space = module_space({"name": "mobilenet", "search_ops": ["MIB_k=3_t=3", "MIB_k=5_t=6", "identity"],
                          "blocks_out_channels": [4, 8], "blocks_count": [1, 2], "blocks_stride": [1, 2],
                          "stem_channels": 4, "head_channels": 8})
    info = DatasetInfo(n_classes=10, channels=1, image_size=(8, 8))
    supernet = space.supernet(info)
    genome = space.genome(info)
    costs = SpaceCosts(genome.specs, lambda c: space.network(genome.arch_of(c), info), [1, 8, 8], held_out=3)
    return supernet, costs


def test_the_final_architecture_is_the_most_probable_within_the_limit_by_enumeration():
    """Logits that favour the dearest candidate of every label: the unconstrained argmax is over
    the limit; the core's choice is the best-scored architecture among all within it."""
    supernet, costs = tiny_costs()
    macs = costs.model("macs")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for (label, spec), deltas in zip(supernet.specs.items(), macs.table.deltas):
            alpha = supernet.arch.alpha(label)
            dear = max(range(len(spec.candidates)), key=lambda k: deltas[k])
            alpha.copy_(torch.randn(alpha.shape, generator=gen))
            alpha[dear] += 3.0
    conf = CostConf(max_macs=float(costs.statistics("macs")["median"]))
    core = SearchCore(supernet, costs, Limits.from_conf(conf))
    unconstrained = SearchCore(supernet, costs).best_arch()
    assert macs.cost(unconstrained) > conf.max_macs, "the test needs an argmax over the limit"
    best = best_within_by_enumeration(core, costs, conf.max_macs)
    assert core.best_arch() == best and macs.cost(best) <= conf.max_macs


def best_within_by_enumeration(core: SearchCore, costs: SpaceCosts, max_macs: float) -> dict:
    """The architecture of the highest summed log-probability among all those within max_macs."""
    scores = core.log_probs()
    best, best_score = None, -float("inf")
    for row in itertools.product(*(range(len(s)) for s in scores.values())):
        arch = row_to_arch(costs.specs, row)
        score = sum(s[k] for s, k in zip(scores.values(), row))
        if costs.model("macs").cost(arch) <= max_macs and score > best_score:
            best, best_score = arch, score
    return best


def refusal(tmp_path: Path, capsys: pytest.CaptureFixture, *extra: str) -> str:
    """The one error line of an in-process run refused with exit code 2."""
    code = main(command(tmp_path, *extra)[2:])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("archnas: error: "), err[-2000:]
    return lines[0]


def test_a_limit_below_the_space_minimum_exits_2_naming_it_before_the_pretrain(tmp_path, capsys):
    line = refusal(tmp_path, capsys, "nas.search.cost.max_macs=10")
    assert line.startswith("archnas: error: nas.search.cost.max_macs: 10 is below the cheapest") and \
        re.search(r"\d[\d,]* multiply-adds", line), line
    assert not (tmp_path / "e" / "pretrain").exists()


def test_tune_before_pretrain_is_one_line_exit_2(tmp_path, capsys):
    assert "run the pretrain and search stages first" in refusal(tmp_path, capsys, "--stages", "tune")


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow  # about 30 s: four tiny runs, three of them killed
def test_a_run_killed_in_each_stage_ends_bit_identical_and_a_new_limit_reruns_search_and_tune(tmp_path):
    assert run(command(tmp_path / "a")).returncode == 0
    killed = command(tmp_path / "b")
    step = random.Random(f"{KILL_SEED}:enot").randint(1, 3)  # the tune's epochs have 4 steps
    for stage in ("pretrain", "search", "tune"):
        at = 1 if stage != "tune" else step  # the pretrain's and the search's epochs have 2 steps
        where = f"ARCHNAS_KILL_SEED={KILL_SEED}, SIGKILL in {stage} epoch 2 after step {at}"
        assert kill_when(killed, re.compile(rf"^\S+ {stage} epoch 2/2: step {at}/")) == -signal.SIGKILL, where
    out = run(killed)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = (tmp_path / x / "e" for x in ("a", "b"))
    for stage in ("pretrain", "search", "tune"):
        wa, wb = (torch.load(d / stage / "checkpoint_last.pt", weights_only=True)["state"]["model"] for d in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), stage
    assert (a / "search" / "arch.yaml").read_text() == (b / "search" / "arch.yaml").read_text()
    # the stage's final architecture: the most probable within max_macs by its final logits
    supernet, costs = tiny_costs()
    state = torch.load(a / "search" / "checkpoint_last.pt", weights_only=True)["state"]["model"]
    with torch.no_grad():
        for label in supernet.specs:
            supernet.arch.alpha(label).copy_(state[f"arch.alphas.{label}"])
    found = yaml.safe_load((a / "search" / "arch.yaml").read_text())["arch"]
    assert found == best_within_by_enumeration(SearchCore(supernet), costs, 60000)
    # only the limit changes: the pretrain is reused, search and tune run again
    before = digest(a / "pretrain")
    out = run(command(tmp_path / "a", "nas.search.cost.max_macs=40000"))
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "pretrain already finished" in log and "search: nas.search.cost.max_macs changed" in log, log[-3000:]
    assert digest(a / "pretrain") == before
    assert (a / "search.old-1").is_dir() and (a / "tune.old-1").is_dir()
    assert "max_macs: 40000" in (a / "search" / "config.yaml").read_text()
