"""Parameter and multiply-add counts of a model (`archnas stats`; a search space's range is `archnas.latency`).

Multiply-adds are those of convolutions and linear layers in one eval-mode forward of one image
at the dataset's input size (the aux tower does not run in eval mode, as in DARTS), counted with
`torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add; grouped convs counted per
group). "Parameters excluding the aux tower" is the number papers report for DARTS-style networks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from archnas.config.schema import DatasetConf
from archnas.descs.dataset_info import DatasetInfo
from archnas.model import Model

# Shapes of the built-in datasets whose files may not be here, so counting needs no data.
_KNOWN_DATASETS = {
    "digits": DatasetInfo(10, 1, (8, 8)),
    "mnist": DatasetInfo(10, 1, (28, 28)),
    "fashion_mnist": DatasetInfo(10, 1, (28, 28)),
    "cifar10": DatasetInfo(10, 3, (32, 32)),
    "cifar100": DatasetInfo(100, 3, (32, 32)),
}


def dataset_info(conf: DatasetConf, cache_dir: str) -> DatasetInfo:
    """The builder's view of `conf`'s dataset: from the table above, else from what its params
    declare (`imagefolder` with `size` and `n_classes`; `synthetic`), else from its provider, which
    loads it (user providers know their shapes only once loaded)."""
    if conf.name in _KNOWN_DATASETS:
        return _KNOWN_DATASETS[conf.name]
    from archnas.data import (  # only needed for these sets; it imports the providers
        declared_shape,
        load_dataset,
    )

    shape = declared_shape(conf)
    if shape is not None:
        n_classes, channels, size = shape
        return DatasetInfo(n_classes, channels, size)
    info = load_dataset(conf, cache_dir).info
    return DatasetInfo(info.n_classes, info.channels, tuple(info.image_size))


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _macs_by_module(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Multiply-adds per module path (the root is the model's class name), from one forward."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return {name: sum(counts.values()) // 2 for name, counts in counter.get_flop_counts().items()}


def _device_of(module: nn.Module) -> torch.device:
    """Where the module's tensors are (the counting forward must run there: on CUDA, or on the
    meta device for a model that was never materialized)."""
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return torch.device("cpu") if tensor is None else tensor.device


def count_params(model: nn.Module) -> int:
    """Weights: every parameter except a supernet's architecture parameters (which no eval trains)."""
    arch = {id(p) for p in model.arch_params()} if hasattr(model, "arch_params") else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in arch)


def count_macs(model: nn.Module, input_shape: list[int]) -> int:
    """Multiply-adds of one eval-mode forward of one image at `input_shape` ([C, H, W])."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape, device=_device_of(model))
        return _macs_by_module(model, x).get(type(model).__name__, 0)
    finally:
        model.train(was_training)


def model_stats(model: nn.Module, input_shape: list[int], detail: bool = False) -> dict[str, Any]:
    """Counts for `model` at `input_shape` ([C, H, W]): a desc-built Model (with its aux tower and
    architecture parameters counted apart; `detail` adds stems, cells, aux towers, head) or any
    network (a frozen search space: every parameter is a weight).

    The counting forward runs in float32 on the model's own device, whatever precision training uses."""
    was_training = model.training
    model.eval()
    try:
        macs = _macs_by_module(model, torch.zeros(1, *input_shape, device=_device_of(model)))
        root = type(model).__name__
        aux = sum(_params(t) for t in getattr(model, "aux_towers", {}).values())
        weights = count_params(model)
        out: dict[str, Any] = {
            "input_shape": list(input_shape),
            "params": weights,
            "params_without_aux": weights - aux,
            "arch_params": _params(model) - weights,
            "macs": macs.get(root, 0),
        }
        if detail and isinstance(model, Model):
            out["detail"] = _detail(model, macs, root)
    finally:
        model.train(was_training)
    return out


def _detail(model: Model, macs: dict[str, int], root: str) -> dict[str, Any]:
    desc = model.desc
    head = [("pool_op", model.pool_op), ("logits_op", model.logits_op)]
    aux_towers = []
    for key, tower in model.aux_towers.items():
        cell = desc.cells[int(key)]
        tower_macs = _macs_by_module(tower.eval(), torch.zeros(1, *cell.out_shape, device=_device_of(tower)))
        aux_towers.append({"after_cell": int(key), "params": _params(tower), "macs": tower_macs.get(type(tower).__name__, 0)})
    return {
        "model_stems": [
            {"op": s.name, "params": _params(m), "macs": macs.get(f"{root}.model_stems.{i}", 0)}
            for i, (s, m) in enumerate(zip(desc.model_stems, model.model_stems))
        ],
        "cells": [
            {"index": i, "type": str(c.cell_type), "out_shape": c.out_shape, "params": _params(m),
             "macs": macs.get(f"{root}.cells.{i}", 0)}
            for i, (c, m) in enumerate(zip(desc.cells, model.cells))
        ],
        "aux_towers": aux_towers,
        "head": [{"op": getattr(desc, name).name, "params": _params(m), "macs": macs.get(f"{root}.{name}", 0)}
                 for name, m in head],
    }
