"""Trained-model files (`model_best.pt`, `model_last.pt`): weights plus what rebuilds the network.

They load without the experiment config and with `torch.load(weights_only=True)`: the network is
stored as plain data (a desc, or a search space with one architecture of it: its name or factory,
parameters, input shape, class count and `{label: choice}`), the weights as a state dict.

    model, info = load_model_file("results/darts/eval/model_best.pt")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from archnas.descs.model_desc import ModelDesc
from archnas.errors import DescError
from archnas.model.model import Model
from archnas.space import create_space, fixed_arch
from archnas.utils import atomic

FORMAT = "archnas-model"
VERSION = 1


def save_model_file(path: str | Path, model: nn.Module, info: dict[str, Any],
                    space: Optional[dict[str, Any]] = None) -> None:
    """`info`: plain data to keep beside the weights (epoch, accuracy, ...). A network of a search
    space over a module passes `space`: {name, factory, params, input_shape, n_classes, arch}."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    network = {"space": space} if space is not None else {"desc": model.desc.to_dict()}
    atomic.torch_save(path, {"format": FORMAT, "version": VERSION, **network, "state_dict": state, "info": info})


def load_model_file(path: str | Path, affine: bool = True) -> tuple[Model, dict[str, Any]]:
    """The model (in eval mode, on CPU) and the info saved with it."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DescError(f"model file not found: {path}") from None
    except Exception as exc:  # a truncated or foreign file: say which, not a pickle traceback
        raise DescError(f"{path}: not a readable archnas model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DescError(f"{path}: not an archnas model file (no format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise DescError(f"{path}: model file version {data.get('version')!r} is not supported (expected {VERSION})")
    if "space" in data:
        model = _space_network(data["space"], path)
    else:
        model = Model(ModelDesc.from_dict(data["desc"], where=f"{path}:desc"), droppath=False, affine=affine)
    model.load_state_dict(data["state_dict"])
    return model.eval(), data.get("info", {})


def _space_network(space: dict[str, Any], path: Path) -> nn.Module:
    import archnas.hub  # noqa: F401  (the built-in spaces a file may name)

    with fixed_arch(space["arch"]):
        return create_space(space.get("name"), factory=space.get("factory"), input_shape=space["input_shape"],
                            n_classes=space["n_classes"], **space.get("params", {}))
