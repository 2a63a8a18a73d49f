"""Datasets: providers that load whole sets into memory as uint8 tensors, seeded stratified
splits, batch augmentation on the device, and resumable loaders (see `bundle` for the entry point).

Importing this package registers every provider (digits, mnist, fashion_mnist, cifar10, cifar100,
imagefolder, synthetic).
"""

from archnas.data import cifar, digits, idx, imagefolder, synthetic  # noqa: F401  (registration)
from archnas.data.augment import AugmentSpec, BatchTransform
from archnas.data.bundle import DataBundle, build_data
from archnas.data.info import DatasetInfo, FileImages, LoadedDataset, TensorImages, channel_stats
from archnas.data.loader import Batch, BatchLoader
from archnas.data.registry import declared_shape, load_dataset, provider_names, register_provider
from archnas.data.split import DataSplit

__all__ = [
    "AugmentSpec",
    "Batch",
    "BatchLoader",
    "BatchTransform",
    "DataBundle",
    "DataSplit",
    "DatasetInfo",
    "FileImages",
    "LoadedDataset",
    "TensorImages",
    "build_data",
    "channel_stats",
    "declared_shape",
    "load_dataset",
    "provider_names",
    "register_provider",
]
