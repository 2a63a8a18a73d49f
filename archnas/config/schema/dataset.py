"""`dataset`: which data, where it lives, and how much of it to use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict


@dataclass
class DatasetConf:
    """The providers and their files are described in archnas/data/<provider>.py."""

    name: str = "digits"  # a registered provider: digits, mnist, fashion_mnist, cifar10, cifar100, imagefolder, synthetic
    # Where providers look for files: mnist in <dataroot>/mnist, fashion_mnist in
    # <dataroot>/fashion_mnist (or /usr/share/datasets/fashion-mnist), cifar10/100 in
    # <dataroot>/cifar-10-batches-py (or the downloaded .tar.gz), imagefolder in <dataroot>/train
    # and <dataroot>/test; digits and synthetic need no files.
    dataroot: str = "~/dataroot"
    in_memory: bool = True  # false: stream from disk with a DataLoader (imagefolder only)
    limit_train: int = 0  # use only N training images, a stratified subset seeded by common.seed (0: all)
    limit_test: int = 0  # the same for the test set
    # Provider-specific options. imagefolder: train, test (folder or .tar.gz, unpacked once into
    # common.cache_dir), size ([H, W] to resize to), mode (RGB | L), mean, std. synthetic: n_train,
    # n_test, n_classes, channels, size, noise, seed.
    params: Dict[str, Any] = field(default_factory=dict)
