"""Accuracy and loss bookkeeping: per-step accumulation on the device, per-epoch records, best epoch.

An `EpochMeter` sums loss, top-1 and top-k hits and image counts in one float64 device tensor, so
a step costs no host sync, a checkpoint can carry a half-finished epoch, and DDP can all-reduce
it in one call. `MetricsHistory` keeps one record per epoch (what metrics.jsonl holds) and the
best epoch by the validation metric (ties, frequent on a small val split, go to the lower val loss).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from archnas.distributed import is_distributed

TOPK = 5  # top-k accuracy reports k = min(TOPK, n_classes)
BEST_METRIC = "val_top1"  # higher is better
TIE_BREAK = "val_loss"  # lower is better: decides between epochs of equal BEST_METRIC


def is_timing(key: str) -> bool:
    """Wall-clock fields (`*_time`, `*_per_s`): they differ between two otherwise identical runs."""
    return key.endswith(("_time", "_per_s"))


def topk_correct(logits: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Number of images whose label is the top prediction, and within the top `k` (k <= n_classes)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return hits[:, 0].sum(), hits.any(dim=1).sum()


class EpochMeter:
    """Running sums over one epoch of one split, and the time its steps took."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss * images, top-1, top-k hits
        self.images = 0
        self.k = 0  # the k of top-k: min(TOPK, number of classes), known from the first logits
        self.steps = 0
        self.seconds = 0.0

    def update(self, logits: Tensor, labels: Tensor, loss: Tensor) -> None:
        """`loss` is the batch's mean loss."""
        self.k = min(TOPK, logits.shape[1])
        top1, topk = topk_correct(logits.detach(), labels, self.k)
        n = labels.shape[0]
        self.sums += torch.stack([loss.detach().double() * n, top1.double(), topk.double()])
        self.images += n

    def add_time(self, seconds: float) -> None:
        self.steps += 1
        self.seconds += seconds

    def all_reduce(self) -> None:
        """Sum the counts over DDP ranks (a no-op in a single process)."""
        if is_distributed():
            packed = torch.cat([self.sums, self.sums.new_tensor([float(self.images)])])
            dist.all_reduce(packed)
            self.sums, self.images = packed[:3], int(packed[3].item())

    def result(self, prefix: str) -> dict[str, float]:
        loss_sum, top1, topk = self.sums.tolist()
        n = max(self.images, 1)
        return {f"{prefix}_loss": loss_sum / n, f"{prefix}_top1": top1 / n, f"{prefix}_topk": topk / n}

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": self.sums.cpu(),
            "images": self.images,
            "k": self.k,
            "steps": self.steps,
            "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = state["sums"].to(self.device, torch.float64)
        self.images = int(state["images"])
        self.k = int(state["k"])
        self.steps = int(state["steps"])
        self.seconds = float(state["seconds"])


class MetricsHistory:
    """One record per finished epoch, and the best epoch by `BEST_METRIC` (then `TIE_BREAK`)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.best_epoch: Optional[int] = None
        self.best_value: Optional[float] = None
        self.best_tie_break: Optional[float] = None

    def add(self, record: dict[str, Any]) -> bool:
        """Append the epoch's record (adding best_epoch/best_val_top1); True if it is a new best."""
        value, tie_break = record.get(BEST_METRIC), record.get(TIE_BREAK)
        improved = value is not None and (
            self.best_value is None or value > self.best_value
            or (value == self.best_value and tie_break is not None and self.best_tie_break is not None
                and tie_break < self.best_tie_break)
        )
        if improved:
            self.best_epoch, self.best_value = int(record["epoch"]), float(value)
            self.best_tie_break = None if tie_break is None else float(tie_break)
        record["best_epoch"] = self.best_epoch
        record[f"best_{BEST_METRIC}"] = self.best_value
        self.records.append(record)
        return improved

    @property
    def last(self) -> Optional[dict[str, Any]]:
        return self.records[-1] if self.records else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "records": [dict(r) for r in self.records],
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "best_tie_break": self.best_tie_break,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = [dict(r) for r in state["records"]]
        self.best_epoch = state["best_epoch"]
        self.best_value = state["best_value"]
        self.best_tie_break = state.get("best_tie_break")  # absent in checkpoints of older versions


def without_timings(record: dict[str, Any]) -> dict[str, Any]:
    """A record minus wall-clock fields: equal for two runs that computed the same things."""
    return {k: v for k, v in record.items() if not is_timing(k)}
