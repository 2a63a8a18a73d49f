"""The dataset provider registry: a name in `dataset.name` -> a function that loads the set.

Providers register themselves when their module is imported (`archnas.data` imports them all);
the table is filled at import time and never changed afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from archnas.config.schema import DatasetConf
from archnas.data.info import FileImages, LoadedDataset
from archnas.errors import ConfigError, DatasetError
from archnas.utils.paths import checked_folder

Provider = Callable[[DatasetConf, Path], LoadedDataset]  # (dataset section, cache dir) -> the set

_PROVIDERS: dict[str, Provider] = {}


def register_provider(name: str) -> Callable[[Provider], Provider]:
    def add(fn: Provider) -> Provider:
        if name in _PROVIDERS:
            raise ValueError(f"dataset provider {name!r} is registered twice")
        _PROVIDERS[name] = fn
        return fn

    return add


def provider_names() -> list[str]:
    return sorted(_PROVIDERS)


def load_dataset(conf: DatasetConf, cache_dir: str | Path) -> LoadedDataset:
    """Load `conf.name`'s train and test splits (in memory, or as files for `in_memory: false`)."""
    if conf.name not in _PROVIDERS:
        raise ConfigError(f"dataset.name: unknown dataset {conf.name!r}; registered: {', '.join(provider_names())}")
    data = _PROVIDERS[conf.name](conf, checked_folder(str(cache_dir), "common.cache_dir"))
    if not conf.in_memory and not isinstance(data.train, FileImages):
        raise ConfigError(
            f"dataset.in_memory: false streams images from disk, which only imagefolder supports; "
            f"{conf.name!r} always loads into memory (set dataset.in_memory: true)"
        )
    for part, images in (("train", data.train), ("test", data.test)):
        if len(images) == 0:
            raise DatasetError(f"dataset {conf.name!r}: the {part} split is empty")
    return data
