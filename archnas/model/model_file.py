"""Trained-model files (`model_best.pt`, `model_last.pt`): everything inference needs, no config.

A file holds the network as plain data (a desc, or a search space with one architecture of it:
its name or factory, parameters, input shape, class count and `{label: choice}`), the weights as
a state dict, what its input must look like (`[C, H, W]` and the per-channel mean and std of
pixel values scaled to [0, 1] that training normalized with, which the dataset providers measure
on the training split), the class names, and the metrics it was chosen by. It loads with
`torch.load(weights_only=True)`, so opening a file runs no code from it.

    trained = archnas.load_model_file("results/darts/eval/model_best.pt")
    labels = trained.predict(images)        # uint8 [N, C, H, W] pixels (or floats in [0, 1])
    names = [trained.classes[i] for i in labels]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from archnas.descs.model_desc import ModelDesc
from archnas.errors import DescError, UsageError
from archnas.model.model import Model
from archnas.space import create_space, fixed_arch
from archnas.utils import atomic

FORMAT = "archnas-model"
VERSION = 2  # 2 added `input` and `classes`; version 1 files load, but cannot normalize input for predict()


class InputError(UsageError):
    """Images handed to a trained model do not fit what it was trained on."""


@dataclass(frozen=True)
class InputSpec:
    """What the network was trained on: `shape` [C, H, W], and the normalization of its pixels."""

    shape: tuple[int, int, int]
    mean: tuple[float, ...]  # per channel, of pixel values scaled to [0, 1]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "mean": list(self.mean), "std": list(self.std)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "InputSpec":
        return InputSpec(tuple(data["shape"]), tuple(data["mean"]), tuple(data["std"]))


def save_model_file(path: str | Path, model: nn.Module, info: dict[str, Any], *, input_spec: InputSpec,
                    classes: Sequence[str], dataset: str = "", space: Optional[dict[str, Any]] = None) -> None:
    """`info`: plain data to keep beside the weights (how the model was chosen, its epoch and
    accuracies); `dataset`: the name of the set it was trained on. A network of a search space
    over a module passes `space`: {name, factory, params, input_shape, n_classes, arch}."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    network = {"space": space} if space is not None else {"desc": model.desc.to_dict()}
    atomic.torch_save(path, {"format": FORMAT, "version": VERSION, **network, "state_dict": state,
                             "input": input_spec.to_dict(), "classes": list(classes), "dataset": dataset,
                             "info": info})


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The file's contents as plain data (weights_only: no code runs), checked to be a model file."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DescError(f"model file not found: {path}") from None
    except Exception as exc:  # a truncated or foreign file: say which, not a pickle traceback
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DescError(f"{path}: not a readable archnas model file ({type(exc).__name__}: {first})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DescError(f"{path}: not an archnas model file (no format {FORMAT!r})")
    if data.get("version") not in (1, VERSION):
        raise DescError(f"{path}: model file version {data.get('version')!r} is not supported "
                        f"(expected 1 or {VERSION})")
    return data


def update_model_file_info(path: str | Path, extra: dict[str, Any]) -> None:
    """Add fields to a saved file's `info` (the test accuracy, known only after training), atomically."""
    data = read_model_file(path)
    data["info"] = {**data.get("info", {}), **extra}
    atomic.torch_save(path, data)


@dataclass
class TrainedModel:
    """A loaded model file: the network (eval mode, CPU) and what feeding it takes."""

    model: nn.Module
    info: dict[str, Any]  # the metrics the model was chosen by, as saved
    input_spec: Optional[InputSpec]  # None for version 1 files
    classes: tuple[str, ...] = field(default=())  # class names in index order (empty: the set had none)
    dataset: str = ""  # the set it was trained on
    path: Optional[Path] = None

    def to(self, device: str | torch.device) -> "TrainedModel":
        self.model.to(device)
        return self

    def preprocess(self, images: Tensor | np.ndarray) -> Tensor:
        """Normalized float `[N, C, H, W]` on the model's device, from what `as_batch` takes."""
        spec = self.required_spec()
        x = as_batch(images, spec.shape)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        device = next(self.model.parameters()).device
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
        return ((x - mean) / std).to(device)

    @torch.no_grad()
    def logits(self, images: Tensor | np.ndarray, batch_size: int = 1024) -> Tensor:
        """Class scores `[N, n_classes]` (on the model's device), in batches of `batch_size`."""
        x = self.preprocess(images)
        out = []
        for start in range(0, x.shape[0], batch_size):
            result = self.model(x[start:start + batch_size])
            out.append(result[0] if isinstance(result, tuple) else result)
        return torch.cat(out) if out else x.new_zeros(0, len(self.classes))

    def predict(self, images: Tensor | np.ndarray, batch_size: int = 1024) -> Tensor:
        """The predicted class index of every image (int64 `[N]`, on the CPU)."""
        return self.logits(images, batch_size).argmax(dim=1).cpu()

    def required_spec(self) -> InputSpec:
        """The input spec, or a message saying the file is too old to have one."""
        if self.input_spec is None:
            where = f"{self.path}: " if self.path else ""
            raise InputError(f"{where}this model file (version 1) does not record its input normalization; "
                             "retrain or rerun the eval phase to write a version 2 file")
        return self.input_spec


def as_batch(images: Tensor | np.ndarray, shape: Sequence[int]) -> Tensor:
    """Images for a model taking `shape` = [C, H, W], as `[N, C, H, W]`: from `[N, C, H, W]`, one
    `[C, H, W]` image, or `[N, H, W]` when C is 1; uint8 pixels (0..255) or floats in [0, 1]."""
    x = torch.as_tensor(images)
    c, h, w = shape
    if x.dim() == 3 and tuple(x.shape) == (c, h, w):
        x = x[None]
    elif x.dim() == 3 and c == 1 and tuple(x.shape[1:]) == (h, w):
        x = x[:, None]
    if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise InputError(f"images of shape {tuple(x.shape)}: the model takes [N, {c}, {h}, {w}] "
                         f"(or one [{c}, {h}, {w}] image{f', or [N, {h}, {w}]' if c == 1 else ''})")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise InputError(f"images of dtype {x.dtype}: expected uint8 pixels (0..255) or floats in [0, 1]")
    return x


def load_model_file(path: str | Path, affine: bool = True) -> TrainedModel:
    """The network of a model file (in eval mode, on CPU) with its input spec, classes and info."""
    path = Path(path)
    data = read_model_file(path)
    if "space" in data:
        model = _space_network(data["space"], path)
    else:
        model = Model(ModelDesc.from_dict(data["desc"], where=f"{path}:desc"), droppath=False, affine=affine)
    model.load_state_dict(data["state_dict"])
    spec = InputSpec.from_dict(data["input"]) if "input" in data else None
    return TrainedModel(model.eval(), data.get("info", {}), spec, tuple(data.get("classes", ())),
                        data.get("dataset", ""), path)


def _space_network(space: dict[str, Any], path: Path) -> nn.Module:
    import archnas.hub  # noqa: F401  (the built-in spaces a file may name)

    with fixed_arch(space["arch"]):
        return create_space(space.get("name"), factory=space.get("factory"), input_shape=space["input_shape"],
                            n_classes=space["n_classes"], **space.get("params", {}))
