"""Trained-model files (`model_best.pt`, `model_last.pt`): weights plus the desc, nothing else.

They load without the experiment config and with `torch.load(weights_only=True)`: the desc is
stored as plain data, the weights as a state dict.

    model, info = load_model_file("results/darts/eval/model_best.pt")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from archnas.descs.model_desc import ModelDesc
from archnas.errors import DescError
from archnas.model.model import Model
from archnas.utils import atomic

FORMAT = "archnas-model"
VERSION = 1


def save_model_file(path: str | Path, model: Model, info: dict[str, Any]) -> None:
    """`info`: plain data to keep beside the weights (epoch, accuracy, ...)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic.torch_save(path, {"format": FORMAT, "version": VERSION, "desc": model.desc.to_dict(), "state_dict": state,
                             "info": info})


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
    desc = ModelDesc.from_dict(data["desc"], where=f"{path}:desc")
    model = Model(desc, droppath=False, affine=affine)
    model.load_state_dict(data["state_dict"])
    return model.eval(), data.get("info", {})
