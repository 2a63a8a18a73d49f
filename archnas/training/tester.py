"""Evaluation: loss, top-1 and top-k of a model over a loader, in eval mode without gradients."""

from __future__ import annotations

import time
from typing import Iterable

import torch
from torch import nn

from archnas.data.loader import Batch
from archnas.training.losses import eval_loss, split_outputs
from archnas.training.metrics import EpochMeter
from archnas.training.precision import Precision


class Tester:
    def __init__(self, model: nn.Module, precision: Precision):
        self.model = model
        self.precision = precision

    @torch.no_grad()
    def evaluate(self, loader: Iterable[Batch], prefix: str = "test") -> dict[str, float]:
        """`{prefix}_loss` (plain cross-entropy per image), `{prefix}_top1`, `{prefix}_topk`,
        `{prefix}_time`; under DDP each rank evaluates its shard and the counts are summed."""
        was_training = self.model.training
        self.model.eval()
        meter = EpochMeter(self.precision.device)
        start = time.perf_counter()
        try:
            for x, y in loader:
                with self.precision.autocast():
                    logits, _ = split_outputs(self.model(self.precision.prepare_input(x)))
                meter.update(logits, y, eval_loss(logits, y) / y.shape[0])
        finally:
            self.model.train(was_training)
        meter.all_reduce()
        return {**meter.result(prefix), f"{prefix}_time": time.perf_counter() - start}
