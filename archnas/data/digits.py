"""`digits`: scikit-learn's 8x8 handwritten digits (1,797 images), shipped inside scikit-learn.

It needs no download, so it is the default dataset and the one tests and the CPU configs use.
The set has no official test split: a fixed stratified 20% (seed 0, independent of
`common.seed`) is the test split, so test numbers are comparable across seeds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from archnas.config.schema import DatasetConf
from archnas.data.info import DatasetInfo, LoadedDataset, TensorImages, channel_stats
from archnas.data.registry import register_provider
from archnas.data.split import stratified_split

TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0


@register_provider("digits", params=())
def load_digits(conf: DatasetConf, cache_dir: Path) -> LoadedDataset:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # Pixel values are 0..16; spread them over 0..255 so every provider hands out the same uint8 range.
    pixels = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    full = TensorImages(pixels, labels)
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, TEST_SPLIT_SEED)
    train, test = full.subset(train_idx), full.subset(test_idx)
    mean, std = channel_stats(train.images)
    info = DatasetInfo(
        name="digits",
        n_classes=10,
        channels=1,
        image_size=(8, 8),
        mean=mean,
        std=std,
        crop_padding=1,
        hflip=False,
        classes=tuple(str(d) for d in range(10)),
    )
    return LoadedDataset(info, train, test, source="scikit-learn's bundled copy (sklearn.datasets.load_digits)")
