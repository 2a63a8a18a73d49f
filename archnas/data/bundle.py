"""From config sections to loaders: load the set, apply limits and the train/val split, and hand
out loaders for each part.

    data = build_data(conf.dataset, phase_conf.loader, seed=conf.common.seed, device=ctx.device,
                      cache_dir=conf.common.cache_dir, rank=ctx.run.rank, world_size=ctx.run.world_size)
    train = data.loader("train", training=True)     # shuffled, augmented, resumable
    alpha_val = data.loader("val", training=True)   # DARTS-style val stream: .next() in lockstep
    val = data.loader("val", training=False)        # plain pass for validation metrics
    test = data.loader("test", training=False)
    data.split.save(ctx.dir / "split.json")         # which images were held out (rank 0)

A training loader takes `loader.train_batch` images per global batch, an evaluation loader
`loader.test_batch`; under DDP each rank gets its share of every global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from archnas.config.schema import DatasetConf, LoaderConf
from archnas.data.augment import AugmentSpec, BatchTransform
from archnas.data.info import DatasetInfo, ImageSet, TensorImages
from archnas.data.loader import BatchLoader
from archnas.utils.seeding import derive_seed
from archnas.data.registry import load_dataset
from archnas.data.split import DataSplit, make_split, stratified_split
from archnas.errors import ConfigError

Part = Literal["train", "val", "test"]
_PART_TAGS = {"train": 11, "val": 12, "test": 13}  # derive_seed tags: each part has its own streams


@dataclass
class DataBundle:
    info: DatasetInfo
    split: DataSplit
    parts: dict[str, ImageSet]  # "train", "test" and, when loader.val_ratio > 0, "val"
    loader_conf: LoaderConf
    augment: AugmentSpec
    seed: int
    device: torch.device
    rank: int
    world_size: int
    source: str = ""  # where the images were read from (LoadedDataset.source)

    def loader(self, part: Part, training: bool) -> BatchLoader:
        """`training`: shuffled and augmented batches of `train_batch`; else in order, `test_batch`."""
        if part not in self.parts:
            raise ConfigError(f"no {part!r} split: set loader.val_ratio > 0 to hold out a validation split")
        batch = self.loader_conf.train_batch if training else self.loader_conf.test_batch
        key = "loader.train_batch" if training else "loader.test_batch"
        if batch < 1:
            raise ConfigError(f"{key}: {batch} is not a positive batch size")
        if training and batch % self.world_size:
            raise ConfigError(f"{key}: the global batch {batch} does not split evenly over {self.world_size} ranks")
        transform = BatchTransform(
            self.info.mean, self.info.std, self.augment if training else AugmentSpec(), self.device
        )
        return BatchLoader(
            self.parts[part],
            batch,
            transform,
            shuffle=training,
            augment=training and self.augment.enabled,
            seed=derive_seed(self.seed, _PART_TAGS[part]),
            rank=self.rank,
            world_size=self.world_size,
            workers=self.loader_conf.workers,
        )


def build_data(
    dataset: DatasetConf,
    loader: LoaderConf,
    *,
    seed: int,
    device: torch.device,
    cache_dir: str | Path,
    rank: int = 0,
    world_size: int = 1,
) -> DataBundle:
    data = load_dataset(dataset, cache_dir)
    split = make_split(data.train.labels, loader.val_ratio, dataset.limit_train, seed)
    limited = data.train.subset(split.limited_idx)
    parts: dict[str, ImageSet] = {"train": limited.subset(split.train_idx)}
    if len(split.val_idx):
        parts["val"] = limited.subset(split.val_idx)
    test = data.test
    if dataset.limit_test < 0:
        raise ConfigError(f"dataset.limit_test: {dataset.limit_test} is negative")
    if 0 < dataset.limit_test < len(test):
        _, keep = stratified_split(test.labels, dataset.limit_test, seed, "dataset.limit_test")
        test = test.subset(keep)
    parts["test"] = test
    # In-memory sets move to the device once; loaders then only index them.
    parts = {k: v.to(device) if isinstance(v, TensorImages) else v for k, v in parts.items()}
    if loader.cutout < 0 or (loader.crop_padding is not None and loader.crop_padding < 0):
        raise ConfigError(
            f"loader.cutout ({loader.cutout}) and loader.crop_padding ({loader.crop_padding}) must be >= 0"
        )
    if loader.cutout > max(data.info.image_size):
        raise ConfigError(
            f"loader.cutout: {loader.cutout} is larger than the {data.info.image_size[0]}x{data.info.image_size[1]} "
            f"images of {data.info.name!r}: it would erase every image (use 0 or a smaller square)"
        )
    augment = AugmentSpec(
        crop_padding=data.info.crop_padding if loader.crop_padding is None else loader.crop_padding,
        hflip=data.info.hflip if loader.hflip is None else loader.hflip,
        cutout=loader.cutout,
    )
    return DataBundle(data.info, split, parts, loader, augment, seed, device, rank, world_size, data.source)
