"""Searching and evaluating on two gloo ranks on CPU.

- the bilevel step on a BatchNorm-free toy supernet: two ranks, each with half of every batch,
  compute the alpha gradient of one process with the whole batch (first and second order; 1e-9
  in float64, i.e. exact up to summation order);
- a tiny DARTS search (first and second order) and PC-DARTS search: the alphas are bit-identical
  on both ranks after every step, and move like those of one process with the same global batch
  (BatchNorm normalizes each rank's half with its own statistics, so not equally: see
  MIN_COSINE);
- `torchrun --nproc_per_node 2 scripts/main.py` (the user-facing path): one set of output files,
  and an eval that equals one process with `batch_chunks: 2` (which sees the same halves);
- a 2-rank run killed with SIGKILL resumes on 2 ranks bit-identical to an uninterrupted one, and
  its checkpoint also goes on in one process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from gloo_ranks import gloo_group
from test_bilevel import _setup
from tiny_algos import tiny_conf
from torch import nn

from archnas.config.schema import BilevelOrder
from archnas.context import RunContext
from archnas.distributed import rank_device, ranks_from_env
from archnas.errors import ConfigError
from archnas.nas.bilevel import BilevelOptimizer
from archnas.nas.phase import Experiment
from archnas.nas.registry import algorithm_class
from archnas.nas.searcher import Searcher
from archnas.training.hooks import HookBase

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# Cosine similarity of the alphas' change over the 4 steps of the tiny search, 2 ranks vs 1
# process with the same global batch of 40. Measured: 0.934 (DARTS first order), 0.933 (second
# order), 0.987 (PC-DARTS). The largest elementwise difference says little here: Adam's first
# steps move every alpha by about +-lr (3e-4) whatever the gradient's size, so an alpha whose
# gradient is near 0 flips sign with the BatchNorm statistics (measured 1.2e-3 to 1.4e-3 after
# 4 steps, while the largest change of an alpha is 1.0e-3 to 1.9e-3).
MIN_COSINE = 0.85
KILL_SEED = int(os.environ.get("ARCHNAS_KILL_SEED", "0"))  # set and printed by conftest.py


# -- the bilevel step ---------------------------------------------------------------------------


def _toy(order: BilevelOrder):
    model, wopt, aopt, train, val = _setup(momentum_steps=2)
    model.norm = nn.Identity()  # per-shard BatchNorm statistics would make the halves differ from the whole
    bilevel = BilevelOptimizer(model, wopt, aopt, lambda out, y: F.cross_entropy(out, y), order)
    return model, bilevel, train, val


def _average_grads(params: list[torch.Tensor]) -> None:
    for p in params:
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()


def bilevel_worker(rank: int, root: str) -> None:
    with gloo_group(root, rank):
        out = {}
        for order in BilevelOrder:
            model, bilevel, train, val = _toy(order)
            half = lambda batch: tuple(t.tensor_split(2)[rank] for t in batch)  # noqa: E731
            bilevel.alpha_optimizer.zero_grad(set_to_none=True)
            bilevel.compute_grads(half(train), half(val))
            _average_grads(bilevel.arch_params)
            out[order.value] = model.alphas.grad.clone()
        torch.save(out, f"{root}/rank{rank}.pt")


def test_two_ranks_compute_the_alpha_gradient_of_the_whole_batch(tmp_path):
    mp.spawn(bilevel_worker, args=(str(tmp_path),), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for order in BilevelOrder:
        model, bilevel, train, val = _toy(order)
        bilevel.compute_grads(train, val)
        whole = model.alphas.grad
        assert torch.equal(ranks[0][order.value], ranks[1][order.value]), order
        torch.testing.assert_close(ranks[0][order.value], whole, rtol=1e-9, atol=1e-12, msg=str(order))


# -- a tiny search on two ranks -------------------------------------------------------------------

# DARTS with a small constant alpha lr: confs/darts.yaml's lr 0.3 makes Adam's first steps
# nearly sign(gradient), which turns the ranks' small BatchNorm differences into sign flips.
PAPER_ALPHAS = ["nas.search.trainer.alpha_optimizer.lr=0.003", "nas.search.trainer.alpha_optimizer.betas=[0.5, 0.999]",
                "nas.search.trainer.alpha_lr_schedule.type=constant"]
SEARCHES = {  # name: (algorithm, overrides)
    "darts_first": ("darts", ["nas.search.trainer.bilevel_order=first", *PAPER_ALPHAS]),
    "darts_second": ("darts", ["nas.search.trainer.bilevel_order=second", *PAPER_ALPHAS]),
    "pc_darts": ("pc_darts", ["nas.search.trainer.alpha_optimizer.lr=0.006", *PAPER_ALPHAS[1:]]),  # as before confs/pc_darts.yaml's lr 0.3
}


class RecordAlphas(HookBase):
    """A copy of every arch parameter after every step."""

    def __init__(self, steps: list[torch.Tensor]):
        self.steps = steps

    def before_fit(self) -> None:
        self.after_step()  # the initial alphas

    def after_step(self) -> None:
        self.steps.append(torch.cat([p.detach().flatten() for p in self.trainer.base_model.arch_params()]).clone())


def search_alphas(root: str, name: str, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    algo, overrides = SEARCHES[name]
    conf = tiny_conf(algo, f"common.results_dir={root}", "nas.search.trainer.epochs=2", "common.num_threads=1",
                     "nas.search.loader.crop_padding=0", "nas.search.loader.hflip=false", *overrides)
    run = RunContext.create(conf, Path(root) / f"{name}_{world_size}", [], rank=rank, world_size=world_size)
    strategy, steps = algorithm_class(algo)(conf), []
    algorithm_hooks = strategy.trainer_hooks
    strategy.trainer_hooks = lambda: [*algorithm_hooks(), RecordAlphas(steps)]
    Searcher(Experiment(run, strategy)).execute()
    return steps


def search_worker(rank: int, root: str) -> None:
    with gloo_group(root, rank):
        torch.save({name: search_alphas(root, name, rank, 2) for name in SEARCHES}, f"{root}/search{rank}.pt")


def test_two_rank_searches_keep_the_same_alphas_on_every_rank(tmp_path):
    mp.spawn(search_worker, args=(str(tmp_path),), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"search{r}.pt") for r in (0, 1))
    for name in SEARCHES:
        assert len(r0[name]) == len(r1[name]) == 5, name  # initial + 2 epochs of 2 steps (80 images, batch 40)
        for step, (a0, a1) in enumerate(zip(r0[name], r1[name])):
            assert torch.equal(a0, a1), f"{name}: the ranks' alphas differ after step {step}"
        single = search_alphas(str(tmp_path), name)
        assert torch.equal(single[0], r0[name][0]), name  # the same initial alphas
        two_ranks, one = r0[name][-1] - r0[name][0], single[-1] - single[0]
        cosine = float(F.cosine_similarity(two_ranks, one, dim=0))
        assert cosine > MIN_COSINE, f"{name}: 2 ranks vs 1 process: cosine {cosine:.3f}"
    # rank 0 alone wrote the phase's files: one metrics line per epoch
    lines = (tmp_path / "darts_second_2" / "search" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


# -- torchrun, the user-facing path ------------------------------------------------------------------


def _command(results: Path, *extra: str, ranks: int = 1) -> list[str]:
    """The tiny main job, under `torchrun --nproc_per_node ranks` when ranks > 1."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--standalone"] \
        if ranks > 1 else [sys.executable]
    return [*launcher, str(REPO / "scripts" / "main.py"), "--config", TINY, "--exp-name", "tiny",
            f"common.results_dir={results}", "common.num_threads=1", "common.tensorboard=false",
            "nas.search.trainer.epochs=1", "nas.eval.trainer.epochs=1", *extra]


def _main(results: Path, *extra: str, ranks: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run(_command(results, *extra, ranks=ranks), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_torchrun_two_ranks_one_set_of_files_and_the_eval_of_one_process(tmp_path):
    # The eval trains DARTS_V2 (not the search result, which differs by BatchNorm statistics),
    # without augmentation or drop-path, whose random draws depend on the rank.
    same_eval = ["nas.eval.final_desc=DARTS_V2", "nas.eval.loader.crop_padding=0", "nas.eval.loader.hflip=false",
                 "nas.eval.trainer.drop_path_prob=0.0"]
    two = _main(tmp_path / "two", *same_eval, ranks=2)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = _main(tmp_path / "one", *same_eval, "nas.eval.trainer.batch_chunks=2")
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    a, b = tmp_path / "two" / "tiny", tmp_path / "one" / "tiny"
    assert _files(a) == _files(b)
    for phase in ("search", "eval"):
        log = (a / phase / "log.txt").read_text()
        assert log.count("epoch 1/1: train loss") == 1, phase  # only rank 0 logs
        assert len((a / phase / "metrics.jsonl").read_text().splitlines()) == 1, phase
        assert json.loads((a / phase / "run.json").read_text())["world_size"] == 2
    assert "2 ranks" in two.stdout
    # The trained weights match; test metrics do not, as they use BatchNorm running statistics,
    # which DDP takes from rank 0 (updated by its half only) and one process updates per chunk.
    w2, w1 = (torch.load(x / "eval" / "model_last.pt", weights_only=True)["state_dict"] for x in (a, b))
    for key in w1:
        if "running" in key or "num_batches" in key:
            continue  # DDP keeps rank 0's BatchNorm statistics, which saw only its half
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5, msg=key)


# -- the environment ----------------------------------------------------------------------------------


def test_ranks_come_from_torchrun_variables():
    assert ranks_from_env({}) == (0, 1, 0)
    assert ranks_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    with pytest.raises(ConfigError, match="LOCAL_RANK missing"):
        ranks_from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="must be integers"):
        ranks_from_env({"RANK": "a", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match="not a valid rank"):
        ranks_from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert rank_device("cpu", 2, 1) == torch.device("cpu")


# -- killed and resumed --------------------------------------------------------------------------------

KILL_RUN = ["common.deterministic=true", "common.checkpoint.every_steps=2", "nas.search.trainer.epochs=2"]


def _outcome(exp: Path) -> dict:
    metrics = json.loads((exp / "eval" / "metrics.json").read_text())
    return {
        "final_desc": (exp / "search" / "final_model_desc.yaml").read_text(),
        "metrics": {k: v for k, v in metrics.items() if not k.endswith("time") and k != "config"},
        "weights": torch.load(exp / "eval" / "model_last.pt", weights_only=True)["state_dict"],
    }


def _descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [c for c, p in parents.items() if p in frontier]
        found += children
        frontier = children
    return found


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_on_two_ranks_bit_identical_and_on_one(tmp_path):
    reference = _main(tmp_path / "ref", *KILL_RUN, ranks=2)
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    # SIGKILL torchrun and both ranks in the second search epoch (3 steps each), after the
    # checkpoints at steps 2 and 3 (and 4): at its step 1 or 2, drawn from the printed seed
    step = random.Random(f"{KILL_SEED}:ddp").randint(1, 2)
    where = f"ARCHNAS_KILL_SEED={KILL_SEED}, SIGKILL at search epoch 2 step {step}"
    cmd = _command(tmp_path / "run", *KILL_RUN, ranks=2)
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    for line in proc.stdout:
        if f"search epoch 2/2: step {step}/3," in line:
            for pid in [*_descendants(proc.pid), proc.pid]:  # torchrun starts its workers in sessions of their own
                os.kill(pid, signal.SIGKILL)
            break
    proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"{where}: the run ended before it was killed"
    assert (tmp_path / "run" / "tiny" / "search" / "checkpoint_last.pt").is_file()
    assert not (tmp_path / "run" / "tiny" / "search" / "search_result.json").exists()
    shutil.copytree(tmp_path / "run", tmp_path / "one")

    resumed = _main(tmp_path / "run", *KILL_RUN, ranks=2)
    assert resumed.returncode == 0, where + resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout, where
    ref, run = _outcome(tmp_path / "ref" / "tiny"), _outcome(tmp_path / "run" / "tiny")
    assert run["final_desc"] == ref["final_desc"] and run["metrics"] == ref["metrics"], where
    assert all(torch.equal(ref["weights"][k], run["weights"][k]) for k in ref["weights"]), where

    # the same checkpoint goes on in a single process (statistically the same run, not bitwise)
    alone = _main(tmp_path / "one", *KILL_RUN)
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-3000:]
    assert "resumed from" in alone.stdout and (tmp_path / "one" / "tiny" / "eval" / "metrics.json").is_file()
