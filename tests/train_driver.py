"""A small real training run for the resume tests: config -> data -> tiny CNN -> Trainer.fit.

    python tests/train_driver.py EXP_DIR [overrides ...]   e.g. nas.eval.trainer.epochs=3

It trains the `nas.eval` section's trainer and loader on `dataset`, in the phase folder
EXP_DIR/eval, with the checkpoint policy of `common.checkpoint`, and prints `step N` after every
optimizer step so a test can kill it at a chosen step. Rerunning the same command resumes.
The model has dropout and a drop-path branch, so exact resume also depends on the RNG states.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from archnas.config import load_config, parse_override_tokens
from archnas.config.compat import phase_config
from archnas.context import RunContext
from archnas.data import build_data
from archnas.errors import UsageError
from archnas.training.checkpoint import Checkpointer
from archnas.training.hooks import HookBase
from archnas.training.signals import RunInterrupted
from archnas.training.trainer import Trainer


class TinyNet(nn.Module):
    """Conv stem, a residual block whose branch is dropped with probability p, dropout, linear."""

    def __init__(self, channels: int, n_classes: int, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(width, n_classes))
        self.p = 0.0

    def drop_path_prob(self, p: float) -> None:
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        branch = self.branch(x)
        if self.training and self.p > 0:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.p
            branch = branch * keep / (1 - self.p)
        return self.head(x + branch)


class PrintSteps(HookBase):
    def after_step(self) -> None:
        print(f"step {self.trainer.global_step}", flush=True)


def main(argv: list[str]) -> int:
    exp_dir, tokens = Path(argv[0]), argv[1:]
    overrides, rest = parse_override_tokens(tokens, {"--force"})
    try:
        conf = load_config([], overrides)
        run = RunContext.create(conf, exp_dir, argv)
        # Every global RNG starts from the seed, so two runs of this command draw the same numbers.
        random.seed(conf.common.seed)
        np.random.seed(conf.common.seed)
        torch.manual_seed(conf.common.seed)
        ctx = run.phase("eval", conf.nas.eval)
        data = build_data(
            conf.dataset,
            conf.nas.eval.loader,
            seed=conf.common.seed,
            device=run.device,
            cache_dir=conf.common.cache_dir,
        )
        data.split.save(ctx.dir / "split.json")
        model = TinyNet(data.info.channels, data.info.n_classes)
        checkpointer = Checkpointer.in_env(ctx, config=phase_config(conf, conf.nas.eval), fingerprint="tinynet-8",
                                           force="--force" in rest)
        trainer = Trainer(conf.nas.eval.trainer, model, ctx, checkpointer=checkpointer, hooks=[PrintSteps()])
        history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
    except RunInterrupted as exc:
        print(f"driver: {exc}", file=sys.stderr)
        return exc.exit_code
    except UsageError as exc:
        print(f"driver: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"done: {len(history.records)} epochs, best epoch {history.best_epoch}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
