"""The auxiliary classifier of DARTS/NASNet eval networks, trained with a down-weighted loss.

DARTS builds it for an 8x8 map (CIFAR, after cell 2n/3): ReLU, AvgPool(5, stride 3) to 2x2,
1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU, linear. ImageNet uses stride 2 on a 7x7
map. Rule for other sizes, so small inputs (8x8 digits reach the tower at 2x2) do not crash:
the pool kernel is min(5, map side) and the second conv's kernel is min(2, pooled side), and a
global average pool precedes the linear layer. At the DARTS sizes the rule gives exactly their
layers (the global pool then sees 1x1 and changes nothing). DARTS's ImageNet tower lacks the
768-channel BN (a typo they kept for their experiments): `AuxTowerDesc.bn_last` = False.
"""

from __future__ import annotations

from torch import Tensor, nn

from archnas.descs.model_desc import AuxTowerDesc


def _pooled(side: int, kernel: int, stride: int) -> int:
    return (side - kernel) // stride + 1


class AuxTower(nn.Module):
    def __init__(self, desc: AuxTowerDesc):
        super().__init__()
        h, w = desc.in_size
        pool = (min(5, h), min(5, w))
        pooled = (_pooled(h, pool[0], desc.stride), _pooled(w, pool[1], desc.stride))
        conv = (min(2, pooled[0]), min(2, pooled[1]))
        layers = [
            nn.ReLU(inplace=False),
            nn.AvgPool2d(pool, stride=desc.stride, padding=0, count_include_pad=False),
            nn.Conv2d(desc.ch_in, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, conv, bias=False),
        ]
        if desc.bn_last:
            layers.append(nn.BatchNorm2d(768))
        self.features = nn.Sequential(*layers, nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(768, desc.n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
