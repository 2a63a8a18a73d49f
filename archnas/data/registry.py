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
Shape = tuple[int, int, tuple[int, int]]  # (n_classes, channels, (height, width))
# (dataset section) -> the set's shape when its params declare it, else None
DeclaredShape = Callable[[DatasetConf], Optional[Shape]]

_PROVIDERS: dict[str, Provider] = {}
_PARAMS: dict[str, Optional[tuple[str, ...]]] = {}  # the dataset.params keys each provider reads
_SHAPES: dict[str, DeclaredShape] = {}


def register_provider(name: str, params: Optional[Sequence[str]] = None,
                      declared_shape: Optional[DeclaredShape] = None) -> Callable[[Provider], Provider]:
    """Register a provider; `params` are the `dataset.params` keys it reads (any other key is then
    refused before it loads, naming those it reads; None: the provider checks its params itself);
    `declared_shape` tells the set's shape from its params alone, where they declare it, so that
    counting a network (`archnas stats`) needs no data."""
    def add(fn: Provider) -> Provider:
        if name in _PROVIDERS:
            raise ValueError(f"dataset provider {name!r} is registered twice")
        _PROVIDERS[name] = fn
        _PARAMS[name] = None if params is None else tuple(params)
        if declared_shape is not None:
            _SHAPES[name] = declared_shape
        return fn

    return add


def _check_params(conf: DatasetConf) -> None:
    if conf.name not in _PROVIDERS:
        raise ConfigError(f"dataset.name: unknown dataset {conf.name!r}; registered: {', '.join(provider_names())}")
    reads = _PARAMS[conf.name]
    unknown = sorted(set(conf.params) - set(reads or ())) if reads is not None else []
    if unknown:
        known = f"it reads {', '.join(reads)}" if reads else "it reads none (its files are found in dataset.dataroot)"
        raise ConfigError(f"dataset.params: unknown key(s) {', '.join(repr(k) for k in unknown)} for the "
                          f"{conf.name} dataset: {known}")


def declared_shape(conf: DatasetConf) -> Optional[Shape]:
    """`conf`'s (n_classes, channels, (height, width)) from its params, without loading it; None
    where the provider cannot tell (then only loading the set tells)."""
    _check_params(conf)
    shape = _SHAPES.get(conf.name)
    return None if shape is None else shape(conf)


def provider_names() -> list[str]:
    return sorted(_PROVIDERS)


def load_dataset(conf: DatasetConf, cache_dir: str | Path) -> LoadedDataset:
    """Load `conf.name`'s train and test splits (in memory, or as files for `in_memory: false`)."""
    _check_params(conf)
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
