"""`dataset`: which data, where it lives, and how much of it to use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict


@dataclass
class DatasetConf:
    name: str = "digits"  # a registered provider: digits, mnist, fashion_mnist, cifar10, cifar100, imagefolder, synthetic
    dataroot: str = "~/dataroot"  # where providers look for files (each provider documents its layout)
    in_memory: bool = True  # false: stream from disk with a DataLoader (imagefolder only)
    limit_train: int = 0  # use only the first N training images after a seeded stratified shuffle (0: all)
    limit_test: int = 0  # the same for the test set
    params: Dict[str, Any] = field(default_factory=dict)  # provider-specific options, documented per provider
