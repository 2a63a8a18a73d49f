"""What a model builder and the batch pipeline need to know about a dataset, and the image sets.

`DatasetInfo` uses the field names the model-description builder reads (`n_classes`, `channels`,
`image_size`), so it can be passed there as it is. The image sets hold whole splits: pixels stay
uint8 until the batch pipeline turns a batch into normalized floats on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    n_classes: int
    channels: int
    image_size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]  # per channel, of pixel values scaled to [0, 1]
    std: tuple[float, ...]
    crop_padding: int  # the set's usual random-crop padding (0: no crop)
    hflip: bool  # whether horizontal flips are a valid augmentation for the set
    classes: tuple[str, ...] = ()  # class names, index order (empty when the set has none)


@dataclass
class TensorImages:
    """A whole split in memory: uint8 `[N, C, H, W]` images and int64 `[N]` labels."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, indices: Tensor) -> "TensorImages":
        return TensorImages(self.images[indices], self.labels[indices])

    def to(self, device: torch.device) -> "TensorImages":
        return TensorImages(self.images.to(device), self.labels.to(device))


@dataclass
class FileImages:
    """A split that stays on disk: one file per image, decoded on demand (`in_memory: false`).

    `decode` is a picklable callable so DataLoader workers can run it.
    """

    paths: list[str]
    labels: Tensor
    decode: Callable[[str], Tensor]  # path -> uint8 [C, H, W]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Tensor) -> "FileImages":
        return replace(self, paths=[self.paths[i] for i in indices.tolist()], labels=self.labels[indices])


ImageSet = TensorImages | FileImages


@dataclass
class LoadedDataset:
    """What a provider returns: the set's description and its two official splits."""

    info: DatasetInfo
    train: ImageSet
    test: ImageSet
    # Where the images were read from, resolved (the folder or archive a provider found, which
    # need not be the configured dataset.dataroot: fashion_mnist falls back to a system folder);
    # recorded in each phase's split.json and log.
    source: str = ""


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 `[N, C, H, W]` images scaled to [0, 1].

    Accumulated in float64 over chunks so a 50,000-image set needs no float copy of itself.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].transpose(0, 1).reshape(channels, -1).double()
        total += x.sum(1)
        total_sq += (x * x).sum(1)
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())
