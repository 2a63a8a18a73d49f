"""Batch augmentation and normalization as tensor ops on the training device.

Per-image PIL transforms in DataLoader workers starve a 2-core CPU and a GPU alike; here a whole
uint8 batch is cropped, flipped, normalized and cut out with a handful of tensor ops wherever the
batch already is. The random draws (crop offsets, flips, cutout centres) come from a CPU
`torch.Generator` the caller seeds, so a batch's augmentation depends only on that seed, on CPU
and CUDA alike; they reach a GPU through pinned memory, without blocking the host.

The order follows the DARTS CIFAR pipeline: random crop of the zero-padded image, horizontal
flip, normalization, then cutout, which zeroes a square of the normalized image (its centre is
uniform over the image and the square is clipped at the borders, so near an edge less than
`cutout**2` pixels are zeroed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from archnas.utils.device import to_device


@dataclass(frozen=True)
class AugmentSpec:
    crop_padding: int = 0  # random crop after zero padding by this many pixels (0: off)
    hflip: bool = False
    cutout: int = 0  # side of the zeroed square (0: off)

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.cutout > 0


class BatchTransform:
    """uint8 `[N, C, H, W]` -> normalized float, augmented when a generator is given."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], spec: AugmentSpec, device: torch.device):
        self.spec = spec
        self.device = device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, images: Tensor, gen: Optional[torch.Generator] = None) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        if gen is not None and self.spec.crop_padding > 0:
            images = random_crop(images, self.spec.crop_padding, gen)
        if gen is not None and self.spec.hflip:
            images = random_hflip(images, gen)
        x = (images.float().div_(255.0) - self.mean).div_(self.std)
        if gen is not None and self.spec.cutout > 0:
            x = cutout(x, self.spec.cutout, gen)
        return x


def random_crop(images: Tensor, padding: int, gen: torch.Generator) -> Tensor:
    """Each image shifted by its own offset in [-padding, padding] on both axes, zeros shifted in."""
    n, c, h, w = images.shape
    offsets = to_device(torch.randint(0, 2 * padding + 1, (2, n), generator=gen), images.device)
    padded = F.pad(images, (padding, padding, padding, padding))
    wp = w + 2 * padding
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # [N, H]
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # [N, W]
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, flat).view(n, c, h, w)


def random_hflip(images: Tensor, gen: torch.Generator) -> Tensor:
    flip = to_device(torch.rand(images.shape[0], generator=gen) < 0.5, images.device)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


def cutout(x: Tensor, size: int, gen: torch.Generator) -> Tensor:
    n, _, h, w = x.shape
    centres = torch.stack([torch.randint(0, h, (n,), generator=gen), torch.randint(0, w, (n,), generator=gen)])
    start = to_device(centres - size // 2, x.device)  # [2, N]; the square is [start, start + size) clipped
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    in_rows = (ys >= start[0, :, None]) & (ys < start[0, :, None] + size)  # [N, H]
    in_cols = (xs >= start[1, :, None]) & (xs < start[1, :, None] + size)  # [N, W]
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)
