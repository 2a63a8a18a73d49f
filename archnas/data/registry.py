"""The dataset provider registry: a name in `dataset.name` -> a function that loads the set.

Providers register themselves when their module is imported (`archnas.data` imports them all);
the table is filled at import time and never changed afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from archnas.config.schema import DatasetConf
from archnas.data.info import FileImages, LoadedDataset
from archnas.errors import ConfigError, DatasetError
from archnas.utils.paths import checked_folder

Provider = Callable[[DatasetConf, Path], LoadedDataset]  # (dataset section, cache dir) -> the set

_PROVIDERS: dict[str, Provider] = {}
_PARAMS: dict[str, Optional[tuple[str, ...]]] = {}  # the dataset.params keys each provider reads


def register_provider(name: str, params: Optional[Sequence[str]] = None) -> Callable[[Provider], Provider]:
    """Register a provider; `params` are the `dataset.params` keys it reads (any other key is then
    refused before it loads, naming those it reads; None: the provider checks its params itself)."""
    def add(fn: Provider) -> Provider:
        if name in _PROVIDERS:
            raise ValueError(f"dataset provider {name!r} is registered twice")
        _PROVIDERS[name] = fn
        _PARAMS[name] = None if params is None else tuple(params)
        return fn

    return add


def provider_names() -> list[str]:
    return sorted(_PROVIDERS)


def load_dataset(conf: DatasetConf, cache_dir: str | Path) -> LoadedDataset:
    """Load `conf.name`'s train and test splits (in memory, or as files for `in_memory: false`)."""
    if conf.name not in _PROVIDERS:
        raise ConfigError(f"dataset.name: unknown dataset {conf.name!r}; registered: {', '.join(provider_names())}")
    reads = _PARAMS[conf.name]
    unknown = sorted(set(conf.params) - set(reads or ())) if reads is not None else []
    if unknown:
        known = f"it reads {', '.join(reads)}" if reads else "it reads none (its files are found in dataset.dataroot)"
        raise ConfigError(f"dataset.params: unknown key(s) {', '.join(repr(k) for k in unknown)} for the "
                          f"{conf.name} dataset: {known}")
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
