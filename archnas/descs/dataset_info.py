"""What the builder needs to know about the data: classes, input channels and image size.

`archnas.data`'s DatasetInfo has these same fields, so it can be passed to the builder as it is;
this plain dataclass is for callers without a loaded dataset (tests, `archnas stats`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    n_classes: int
    channels: int
    image_size: tuple[int, int]  # (H, W)
