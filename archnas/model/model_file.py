"""Trained-model files (`model_best.pt`, `model_last.pt`): everything inference needs, no config.

A file holds the network as plain data (a desc, or a search space with one architecture of it:
its name or factory, parameters, input shape, class count and `{label: choice}`), the weights as
a state dict, what its input must look like (`[C, H, W]` and the per-channel mean and std of
pixel values scaled to [0, 1] that training normalized with, which the dataset providers measure
on the training split), the class names, the metrics it was chosen by and the archnas version
that wrote it.

A model file is untrusted data. It loads with `torch.load(weights_only=True)`, so opening it runs
no code from it, and the network it names is built only from what archnas and the user's own
plugins registered: a space by its registered name, a factory `module:function` only in a module
loaded as a plugin (`archnas predict --import module`, `load_model_file(path, plugins=[...])`);
archnas never imports a module because a file names it. Every field is checked before it is
used, the weights against the network's parameters (on the meta device, before anything of the
network's size is allocated) and the recorded input and classes against one forward, so a damaged
file is one message naming what is missing or mismatched.

    trained = archnas.load_model_file("results/darts/eval/model_best.pt")
    labels = trained.predict(images)        # uint8 [N, C, H, W] pixels (or floats in [0, 1])
    names = [trained.classes[i] for i in labels]
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from archnas.descs.model_desc import ModelDesc
from archnas.errors import DescError, UsageError
from archnas.model.model import Model
from archnas.space import build_network, create_space
from archnas.space.registry import space_module, space_names
from archnas.utils import atomic, reads
from archnas.utils.plugins import load_plugins
from archnas.utils.versions import ARCHNAS_VERSION

FORMAT = "archnas-model"
VERSION = 2  # 2 added `input` and `classes`; version 1 files load, but cannot normalize input for predict()
MAX_INPUT_VALUES = 1 << 26  # C*H*W a file may declare: predict makes float [N, C, H, W] batches of it


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


def save_model_file(path: str | Path, model: nn.Module, info: dict[str, Any], *, input_spec: InputSpec,
                    classes: Sequence[str], dataset: str = "", space: Optional[dict[str, Any]] = None) -> None:
    """`info`: plain data to keep beside the weights (how the model was chosen, its epoch and
    accuracies); `dataset`: the name of the set it was trained on. A network of a search space
    over a module passes `space`: {name, factory, params, input_shape, n_classes, arch}; a space a
    plugin registered also records that plugin, so loading the file without it can name it."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if space is not None and space.get("name") is not None:
        module = space_module(space["name"])
        if module is not None and module.split(".")[0] != "archnas":
            space = {**space, "plugin": module}
    network = {"space": space} if space is not None else {"desc": model.desc.to_dict()}
    atomic.torch_save(path, {"format": FORMAT, "version": VERSION, "archnas_version": ARCHNAS_VERSION, **network,
                             "state_dict": state, "input": input_spec.to_dict(), "classes": list(classes),
                             "dataset": dataset, "info": info})


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The file's contents as plain data (weights_only: no code runs), checked to be a model file."""
    path = Path(path)
    try:
        data = reads.torch_load_plain(path)
    except FileNotFoundError:
        raise DescError(f"model file not found: {path}") from None
    except OSError as exc:  # a folder, a device, a FIFO, an oversized file
        raise DescError(f"{path}: cannot read it as a model file ({exc.strerror})") from None
    except ValueError as exc:  # a truncated, foreign or harmful file: torch_load_plain's one-line reason
        raise DescError(f"{path}: not a readable archnas model file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DescError(f"{path}: not an archnas model file (no format {FORMAT!r})")
    if data.get("version") not in (1, VERSION):
        raise DescError(f"{path}: model file version {_show(data.get('version'))} is not supported "
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
    `[C, H, W]` image, or `[N, H, W]` when C is 1; uint8 pixels (0..255) or floats in [0, 1].
    Floats outside [0, 1] are refused rather than normalized as if they were in it: pixels in
    0..255 as floats (a forgotten `/ 255`), NaN or negative values would give confident nonsense."""
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
    problem = _float_problem(x) if x.is_floating_point() and x.numel() else None
    if problem:
        raise InputError(f"images of dtype {x.dtype} with {problem[0]}: expected floats in [0, 1] (the model "
                         f"normalizes pixels scaled to [0, 1]) or uint8 pixels (0..255){problem[1]}")
    return x


def _float_problem(x: Tensor) -> Optional[tuple[str, str]]:
    """What is wrong with float pixels that should lie in [0, 1] and a hint, or None."""
    if not bool(torch.isfinite(x).all()):
        return "NaN or infinite values", ""
    low, high = float(x.min()), float(x.max())
    if low >= 0 and high <= 1:
        return None
    hint = "; these look like pixels in 0..255 as floats: divide them by 255" if low >= 0 and high <= 255 else ""
    return f"values from {low:g} to {high:g}", hint


def load_model_file(path: str | Path, affine: bool = True, plugins: Sequence[str] = ()) -> TrainedModel:
    """The network of a model file (in eval mode, on CPU) with its input spec, classes and info.
    `plugins`: modules to load first, as `archnas predict --import` does: the plugin whose ops or
    space the network is made of (the only code a file may name is what plugins registered)."""
    path = Path(path)
    if plugins:
        load_plugins(plugins)
    fields = _Fields(path, read_model_file(path))
    spec = fields.input_spec()
    classes = fields.classes()
    info, dataset = fields.info()
    model = fields.network(affine, spec)
    if spec is not None:
        fields.check_forward(model, spec, classes)
    return TrainedModel(model, info, spec, classes, dataset, path)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _positive_ints(value: Any, n: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == n
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def _where(exc: BaseException) -> str:
    """` at file:line` of the innermost frame of a failure in code a file's network ran."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


class _Fields:
    """The fields of one model file, each checked before use; every refusal names the file, the
    field and what was expected, and the archnas version that wrote the file."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data

    def error(self, message: str) -> DescError:
        written = self.data.get("archnas_version")
        this = ARCHNAS_VERSION
        if isinstance(written, str) and written:
            by = f"written by archnas {written[:40]}" + ("" if written == this else f"; this is archnas {this}")
        else:
            by = f"the file records no archnas version: written by archnas {this} or older"
        return DescError(f"{self.path}: {message} ({by})")

    def input_spec(self) -> Optional[InputSpec]:
        if "input" not in self.data:
            return None  # version 1: loads, and predict() says the file is too old
        raw = self.data["input"]
        if not isinstance(raw, dict):
            raise self.error(f"input is {_show(raw)}; expected {{shape, mean, std}}")
        missing = [k for k in ("shape", "mean", "std") if k not in raw]
        if missing:
            raise self.error(f"input has no {' and no '.join(missing)}: it cannot say how to feed the network "
                             "(expected input: {shape: [C, H, W], mean: [...], std: [...]})")
        shape = raw["shape"]
        if not _positive_ints(shape, 3):
            raise self.error(f"input.shape {_show(shape)}: expected [channels, height, width], positive ints")
        if math.prod(shape) > MAX_INPUT_VALUES:
            raise self.error(f"input.shape {list(shape)}: {math.prod(shape):,} values per image, more than the "
                             f"{MAX_INPUT_VALUES:,} a model file may declare")
        norm = {}
        for key in ("mean", "std"):
            value = raw[key]
            if not (isinstance(value, (list, tuple)) and len(value) == shape[0]
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
                raise self.error(f"input.{key} {_show(value)}: expected {shape[0]} finite numbers, one per channel")
            norm[key] = tuple(float(v) for v in value)
        if min(norm["std"]) <= 0:
            raise self.error(f"input.std {list(norm['std'])}: normalizing divides by it, so every channel's must be "
                             "positive")
        return InputSpec((shape[0], shape[1], shape[2]), norm["mean"], norm["std"])

    def classes(self) -> tuple[str, ...]:
        classes = self.data.get("classes", [])
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
            raise self.error(f"classes {_show(classes)}: expected a list of class names")
        return tuple(classes)

    def info(self) -> tuple[dict[str, Any], str]:
        info, dataset = self.data.get("info", {}), self.data.get("dataset", "")
        if not isinstance(info, dict):
            raise self.error(f"info {_show(info)}: expected a mapping")
        if not isinstance(dataset, str):
            raise self.error(f"dataset {_show(dataset)}: expected the name of a dataset")
        return info, dataset

    def network(self, affine: bool, spec: Optional[InputSpec]) -> nn.Module:
        """The network with the file's weights. It is built on the meta device first, so weights
        that do not fit it are named before memory of its size is taken."""
        if "space" in self.data:
            build = self._space_builder(spec)
        elif "desc" in self.data:
            build = self._desc_builder(affine)
        else:
            raise self.error("it holds no network: neither a space nor a desc")
        state = self.data.get("state_dict")
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
            raise self.error("state_dict: expected the network's weights, a mapping of names to tensors"
                             + (", and there is none" if state is None else ""))
        try:
            with torch.device("meta"):
                skeleton: Optional[nn.Module] = build()
        except UsageError:
            raise
        except Exception:  # noqa: BLE001  (a factory that cannot build on the meta device: checked on the CPU)
            skeleton = None
        if skeleton is not None:
            self._check_weights(skeleton, state)
        model = build()
        if skeleton is None:
            self._check_weights(model, state)
        try:
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001  (what the key and shape checks cannot see, e.g. a dtype)
            raise self.error(f"state_dict does not load into its network: {str(exc).strip().splitlines()[-1][:200]}")
        return model.eval()

    def _call(self, what: str, make: Callable[[], nn.Module]) -> nn.Module:
        """`make()` (code of archnas or a plugin, run on the file's data), its failure one message."""
        try:
            model = make()
        except UsageError as exc:  # a desc's own refusal names the file already
            text, own = str(exc), f"{self.path}:"
            raise self.error(text[len(own):] if text.startswith(own) else f"{what}: {text}") from None
        except Exception as exc:  # noqa: BLE001  (any failure of the code the file's data drives)
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise self.error(f"{what} failed{_where(exc)}: {type(exc).__name__}: {first}") from None
        if not isinstance(model, nn.Module):
            raise self.error(f"{what}: got a {type(model).__name__}, not an nn.Module")
        return model

    def _desc_builder(self, affine: bool) -> Callable[[], nn.Module]:
        raw = self.data["desc"]
        if not isinstance(raw, dict):
            raise self.error(f"desc is {_show(raw)}; expected a model description")

        def build() -> nn.Module:
            desc = ModelDesc.from_dict(raw, where=f"{self.path}:desc")
            return Model(desc, droppath=False, affine=affine)

        return lambda: self._call("building its network from desc", build)

    def _space_builder(self, spec: Optional[InputSpec]) -> Callable[[], nn.Module]:
        import archnas.hub  # noqa: F401  (the built-in spaces a file may name)

        space = self.data["space"]
        if not isinstance(space, dict):
            raise self.error(f"space is {_show(space)}; expected {{name or factory, params, input_shape, n_classes, "
                             "arch}")
        missing = [k for k in ("input_shape", "n_classes", "arch") if k not in space]
        if missing:
            raise self.error(f"space has no {' and no '.join(missing)}: the network cannot be built without it")
        name, factory, params = space.get("name"), space.get("factory"), space.get("params", {})
        if (name is None) == (factory is None) or not isinstance(name or factory, str) or len(name or factory) > 200:
            raise self.error(f"space: expected a registered space's name or a plugin's factory "
                             f"('module:function'), got name {_show(name)} and factory {_show(factory)}")
        if not _positive_ints(space["input_shape"], 3):
            raise self.error(f"space.input_shape {_show(space['input_shape'])}: expected [channels, height, width], "
                             "positive ints")
        if spec is not None and list(space["input_shape"]) != list(spec.shape):
            raise self.error(f"space.input_shape {list(space['input_shape'])} (what its network was built for) and "
                             f"input.shape {list(spec.shape)} (what predict feeds it) disagree")
        if not _positive_ints([space["n_classes"]], 1):
            raise self.error(f"space.n_classes {_show(space['n_classes'])}: expected a positive int")
        for key, value in (("params", params), ("arch", space["arch"])):
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise self.error(f"space.{key} {_show(value)}: expected a mapping of names")
        if name is not None and name not in space_names():
            plugin = space.get("plugin")
            hint = (f"the file was written with the space of the plugin {_show(plugin)}: load it with --import "
                    f"{plugin} (in Python: load_model_file(path, plugins=[{plugin!r}]))" if isinstance(plugin, str)
                    else "if a plugin registers it, load that plugin with --import MODULE")
            raise self.error(f"space {_show(name)} is not registered (registered: {', '.join(space_names())}); {hint}")

        def build() -> nn.Module:
            return build_network(lambda: create_space(name, factory=factory, input_shape=space["input_shape"],
                                                      n_classes=space["n_classes"], **params), space["arch"])

        return lambda: self._call(f"building its network from space {name or factory}", build)

    def _check_weights(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        expected = model.state_dict()

        def some(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong = [f"{k} {list(state[k].shape)} (the network's is {list(v.shape)})" for k, v in expected.items()
                 if k in state and state[k].shape != v.shape]
        problems = ([f"missing {some(missing)}"] if missing else []) + \
            ([f"unexpected {some(unexpected)}"] if unexpected else []) + ([f"wrong shape {some(wrong)}"] if wrong else [])
        if problems:
            raise self.error(f"state_dict does not fit the network the file describes: {'; '.join(problems)}")

    def check_forward(self, model: nn.Module, spec: InputSpec, classes: tuple[str, ...]) -> None:
        """One zero image through the network: the recorded input must fit it, and its outputs the
        class names (and the space's class count)."""
        try:
            with torch.no_grad():
                out = model(torch.zeros(1, *spec.shape))
        except Exception as exc:  # noqa: BLE001  (a network that cannot take the input the file records)
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise self.error(f"its network does not take the input the file records (input.shape "
                             f"{list(spec.shape)}): {type(exc).__name__}: {first}") from None
        logits = out[0] if isinstance(out, tuple) else out
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
            shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise self.error(f"its network's output for one image is {shape}, not [1, classes]")
        n = logits.shape[1]
        if classes and len(classes) != n:
            raise self.error(f"classes: {len(classes)} class names for the network's {n} outputs")
        n_classes = self.data["space"]["n_classes"] if "space" in self.data else n
        if n_classes != n:
            raise self.error(f"space.n_classes is {n_classes} but its network has {n} outputs")
