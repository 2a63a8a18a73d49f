"""Two gloo processes on CPU: the engine's DDP seams (sharded loaders, no_sync gradient
accumulation, summed metrics, a stop signal seen by one rank stopping both at the same step)."""

from __future__ import annotations

import signal
from pathlib import Path

import torch
import torch.multiprocessing as mp
from gloo_ranks import gloo_group
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from archnas.config import load_config, parse_override_tokens
from archnas.context import RunContext
from archnas.data import build_data
from archnas.training.checkpoint import read_checkpoint
from archnas.training.hooks import HookBase
from archnas.training.metrics import EpochMeter
from archnas.training.signals import RunInterrupted
from archnas.training.trainer import Trainer


class SignalOnRank1(HookBase):
    def after_step(self) -> None:
        if self.trainer.env.rank == 1 and self.trainer.global_step == 2:
            self.trainer.stop_signals.requested = signal.SIGTERM  # as if only rank 1 got the signal


def worker(rank: int, root: str) -> None:
    with gloo_group(root, rank):
        out = {}
        meter = EpochMeter(torch.device("cpu"))
        meter.update(torch.eye(3)[: rank + 1] * 5, torch.zeros(rank + 1, dtype=torch.long), torch.tensor(1.0 + rank))
        meter.all_reduce()
        out["meter"] = (meter.images, meter.sums.tolist())

        tokens = [
            "common.tensorboard=false",
            "nas.eval.trainer.batch_chunks=2",
            "nas.eval.loader.train_batch=32",
            "dataset.name=synthetic",
            "nas.eval.loader.cutout=0",
            "nas.eval.trainer.epochs=1",
            "common.checkpoint.every_epochs=0",
        ]
        conf = load_config([], parse_override_tokens(tokens, set())[0])
        run = RunContext.create(conf, Path(root) / "exp", [], rank=rank, world_size=2)
        ctx = run.phase("eval", conf.nas.eval)
        data = build_data(
            conf.dataset,
            conf.nas.eval.loader,
            seed=0,
            device=run.device,
            cache_dir=Path(root) / "cache",
            rank=rank,
            world_size=2,
        )
        torch.manual_seed(0)
        model = DistributedDataParallel(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)))
        trainer = Trainer(conf.nas.eval.trainer, model, ctx, hooks=[SignalOnRank1()])
        loader = data.loader("train", training=True)
        out["first_batch"] = loader.index_batches(0)[0].tolist()
        try:
            trainer.fit(loader)
        except RunInterrupted as exc:
            out["stopped"] = (exc.exit_code, trainer.global_step)
        out["weight"] = model.module[1].weight.detach().clone()
        torch.save(out, f"{root}/rank{rank}.pt")


def test_two_ranks_shard_accumulate_sum_and_stop_together(tmp_path):
    mp.spawn(worker, args=(str(tmp_path),), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # meter: rank 0 saw 1 image (loss 1, hit), rank 1 saw 2 (loss 2 each, 1 hit in top-1, 2 in top-3)
    assert r0["meter"] == r1["meter"] == (3, [1.0 + 4.0, 2.0, 3.0])
    assert len(r0["first_batch"]) == len(r1["first_batch"]) == 16
    assert set(r0["first_batch"]).isdisjoint(r1["first_batch"])
    assert r0["stopped"] == r1["stopped"] == (143, 2)  # both ranks stopped after step 2
    assert torch.equal(r0["weight"], r1["weight"])  # DDP kept the replicas equal through no_sync chunks
    ckpt = read_checkpoint(tmp_path / "exp" / "eval" / "checkpoint_last.pt")  # written by rank 0 only
    assert ckpt["state"]["trainer"]["global_step"] == 2
    assert torch.equal(ckpt["state"]["model"]["1.weight"], r0["weight"])
