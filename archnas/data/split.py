"""Deterministic stratified splits: the search phase's train/val split and the `limit_*` subsets.

scikit-learn's `train_test_split(stratify=...)` does the stratification; this module fixes the
seed, turns its failures into config errors, and records the result (`DataSplit`) so a run can
write down exactly which images it held out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from archnas.errors import ConfigError
from archnas.utils import atomic


def stratified_split(
    labels: Tensor, second_fraction: float | int, seed: int, what: str = "split"
) -> tuple[Tensor, Tensor]:
    """Two disjoint sorted index tensors; the second holds `second_fraction` of every class.

    `second_fraction` is a fraction in (0, 1) or, as an int, a number of images.
    """
    from sklearn.model_selection import train_test_split

    y = labels.cpu().numpy()
    try:
        first, second = train_test_split(
            np.arange(len(y)), test_size=second_fraction, stratify=y, random_state=seed % 2**32
        )
    except ValueError as exc:
        counts = np.bincount(y)
        raise ConfigError(
            f"{what}: cannot take {second_fraction!r} of {len(y)} images stratified over {int((counts > 0).sum())} "
            f"classes (smallest class has {int(counts[counts > 0].min())} images): {exc}"
        ) from None
    return torch.from_numpy(np.sort(first)), torch.from_numpy(np.sort(second))


@dataclass(frozen=True)
class DataSplit:
    """Which training images a run trains on and which it holds out for validation.

    Indices refer to the provider's train split in its own order, after `limit_train`.
    """

    seed: int
    val_ratio: float
    limit_train: int
    limited_idx: Tensor  # indices into the provider's train split kept by limit_train (all when 0)
    train_idx: Tensor  # positions within `limited_idx` used for training
    val_idx: Tensor  # positions within `limited_idx` held out (empty when val_ratio is 0)

    def digest(self) -> str:
        """A short hash of the three index lists: equal digests mean the same images in each part."""
        h = hashlib.sha256()
        for t in (self.limited_idx, self.train_idx, self.val_idx):
            h.update(t.to(torch.int64).numpy().tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "val_ratio": self.val_ratio,
            "limit_train": self.limit_train,
            "digest": self.digest(),
            "n_train": len(self.train_idx),
            "n_val": len(self.val_idx),
            "limited_idx": self.limited_idx.tolist(),
            "train_idx": self.train_idx.tolist(),
            "val_idx": self.val_idx.tolist(),
        }

    def save(self, path: str | Path) -> None:
        atomic.write_json(path, self.to_dict())


def make_split(labels: Tensor, val_ratio: float, limit_train: int, seed: int, loader_key: str = "loader") -> DataSplit:
    """The `limit_train` subset (stratified), then the stratified train/val split of what is left.
    `loader_key`: where the loader section sits in the config, for messages (nas.eval.loader)."""
    n = len(labels)
    if not 0.0 <= val_ratio < 1.0:
        raise ConfigError(f"{loader_key}.val_ratio: {val_ratio} is not in [0, 1)")
    if limit_train < 0:
        raise ConfigError(f"dataset.limit_train: {limit_train} is negative")
    limited = torch.arange(n)
    if 0 < limit_train < n:
        _, limited = stratified_split(labels, limit_train, seed, "dataset.limit_train")
    kept_labels = labels[limited]
    if val_ratio == 0.0:
        train_idx, val_idx = torch.arange(len(limited)), torch.zeros(0, dtype=torch.int64)
    else:
        train_idx, val_idx = stratified_split(kept_labels, val_ratio, seed, f"{loader_key}.val_ratio")
    return DataSplit(seed, val_ratio, limit_train, limited, train_idx, val_idx)
