"""A small plain ResNet-like CNN: the repo's own model for search-space autogeneration
(`nas.search.space: {name: autogen, model: {name: plain_cnn}}`, `archnas.space.autogen`).

It has no choices: it is what a user brings, written as users write models (torchvision's
BasicBlock), so autogeneration is exercised on the patterns it must find: a conv-bn-relu stem,
then stages of residual blocks (conv-bn-relu-conv-bn plus the shortcut, then relu), the first
block of a later stage at stride 2 with a 1x1 conv-bn projection shortcut, global pooling and a
linear classifier. Sized for 8x8 digits by default (maps 8, 4, 2); at 32x32 the maps are 32, 16,
8. A stride-2 block runs at stride 1 once its input's side is under `2 * min_size`, as in the
mobile hub spaces, so a small input keeps more than one pixel.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.ops.mobile import downsampling_stride, strided_size


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn plus the shortcut (identity, or a strided 1x1 conv-bn), then relu."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class PlainCNN(nn.Module):
    """Images of `input_shape` ([C, H, W]) into `n_classes`: a stem of `stem_channels` (default:
    the first width), then one stage per entry of `widths` with `blocks[s]` BasicBlocks (the first
    stage at stride 1, the others at 2)."""

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), n_classes: int = 10,
                 widths: Sequence[int] = (8, 16, 32), blocks: Sequence[int] = (1, 2, 2),
                 stem_channels: Optional[int] = None, min_size: int = 2):
        super().__init__()
        _check(input_shape, n_classes, widths, blocks, stem_channels, min_size)
        c_in = stem_channels or widths[0]
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], c_in, 3, 1, 1, bias=False), nn.BatchNorm2d(c_in),
                                  nn.ReLU(inplace=True))
        size = min(input_shape[1:])
        stages = []
        for s, (c_out, n) in enumerate(zip(widths, blocks)):
            stage = []
            for i in range(n):
                stride = downsampling_stride(2 if s > 0 and i == 0 else 1, size, min_size)
                stage.append(BasicBlock(c_in, c_out, stride))
                size, c_in = strided_size(size, stride), c_out
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.stages(self.stem(x))).flatten(1))


def _check(input_shape: Sequence[int], n_classes: int, widths: Sequence[int], blocks: Sequence[int],
           stem_channels: Optional[int], min_size: int) -> None:
    """What the model refuses (a SpaceError naming the parameter and its value)."""
    def positive(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if len(input_shape) != 3 or not all(positive(s) for s in input_shape):
        raise SpaceError(f"plain_cnn: input_shape {list(input_shape)} must be [channels, height, width]")
    if not positive(n_classes):
        raise SpaceError(f"plain_cnn: n_classes {n_classes!r} must be a positive int")
    if not widths or len(widths) != len(blocks) or not all(positive(v) for v in (*widths, *blocks)):
        raise SpaceError(f"plain_cnn: widths {list(widths)} and blocks {list(blocks)} need one positive int per "
                         "stage, as many of each")
    if stem_channels is not None and not positive(stem_channels):
        raise SpaceError(f"plain_cnn: stem_channels {stem_channels!r} must be a positive int (or null: widths[0])")
    if not positive(min_size):
        raise SpaceError(f"plain_cnn: min_size {min_size!r} must be a positive int")
