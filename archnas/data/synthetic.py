"""`synthetic`: a seeded, learnable image set generated in memory, for tests and benchmarks.

Each class has a random template; an image is its class template plus noise, so a small model
learns it in a few steps while every run with the same params sees the same pixels.

`dataset.params` (all optional): n_train (512), n_test (128), n_classes (4), channels (1),
size (8: H = W), noise (0.5: noise std relative to the template std), seed (0).
"""

from __future__ import annotations

from pathlib import Path

import torch

from archnas.config.schema import DatasetConf
from archnas.data.info import DatasetInfo, LoadedDataset, TensorImages, channel_stats
from archnas.data.registry import register_provider
from archnas.errors import ConfigError

DEFAULTS = {"n_train": 512, "n_test": 128, "n_classes": 4, "channels": 1, "size": 8, "noise": 0.5, "seed": 0}


def _params(conf: DatasetConf) -> dict[str, float | int]:
    params = {**DEFAULTS, **conf.params}
    for key, default in DEFAULTS.items():
        value = params[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, int):
            valid = number and isinstance(value, int) and value >= (0 if key == "seed" else 1)
        else:
            valid = number and value >= 0
        if not valid:
            raise ConfigError(f"dataset.params.{key}: {value!r} is not a valid {type(default).__name__} for synthetic")
        params[key] = type(default)(value)
    if params["n_classes"] < 2:
        raise ConfigError("dataset.params.n_classes: need at least 2 classes")
    return params


def synthetic_shape(conf: DatasetConf) -> tuple[int, int, tuple[int, int]]:
    """(classes, channels, (height, width)) its params give, without generating an image: what
    counting a network needs (`archnas stats` of an ImageNet-sized model,
    `confs/datasets/imagenet_shape.yaml`)."""
    p = _params(conf)
    return int(p["n_classes"]), int(p["channels"]), (int(p["size"]), int(p["size"]))


@register_provider("synthetic", params=tuple(DEFAULTS), declared_shape=synthetic_shape)
def load_synthetic(conf: DatasetConf, cache_dir: Path) -> LoadedDataset:
    p = _params(conf)
    gen = torch.Generator().manual_seed(int(p["seed"]))
    shape = (int(p["channels"]), int(p["size"]), int(p["size"]))
    templates = torch.rand((int(p["n_classes"]),) + shape, generator=gen)

    def make(n: int) -> TensorImages:
        labels = torch.arange(n) % int(p["n_classes"])  # balanced classes
        labels = labels[torch.randperm(n, generator=gen)]
        noise = torch.randn((n,) + shape, generator=gen) * float(p["noise"]) * templates.std()
        pixels = (templates[labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        return TensorImages(pixels, labels)

    train, test = make(int(p["n_train"])), make(int(p["n_test"]))
    mean, std = channel_stats(train.images)
    info = DatasetInfo(
        name="synthetic",
        n_classes=int(p["n_classes"]),
        channels=shape[0],
        image_size=shape[1:],
        mean=mean,
        std=std,
        crop_padding=0,
        hflip=False,
        classes=tuple(f"class_{i}" for i in range(int(p["n_classes"]))),
    )
    return LoadedDataset(info, train, test, source="generated (no files)")
