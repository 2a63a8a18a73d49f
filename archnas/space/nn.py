"""`archnas.space.nn`: a drop-in for `torch.nn` whose layers take ValueChoices in their size and rate
arguments, as NNI's `import nni.retiarii.nn.pytorch as nn` does.

    import archnas.space.nn as nn
    k = nn.ValueChoice([3, 5, 7], label="k")
    conv = nn.Conv2d(3, nn.ValueChoice([16, 32], label="w"), kernel_size=k, padding=(k - 1) // 2)
    drop = nn.Dropout(nn.ValueChoice([0.0, 0.2], label="p"))
    head = nn.Sequential(nn.ReLU(), nn.Flatten())      # every other torch.nn name is torch.nn's own

Every torch.nn name is importable from here. The layers below (`VALUE_LAYERS`) accept a
ValueChoice, an expression of them, or a tuple holding them in any constructor argument; NNI's
primitives (LayerChoice, InputChoice, ValueChoice, Repeat, Cell, NasBench201Cell, ChosenInputs)
are re-exported from where they live. Without any choice among its arguments a constructor returns
the plain torch layer, and under `fixed_arch` (where a ValueChoice is its value) so does it.

Weight sharing: a layer allocates the parameters of its largest values (each argument at its
largest value, tuples position by position). At a chosen architecture (a one-hot sample, a fixed
architecture, or outside a search-space model its first candidates) it runs the torch layer of
the chosen values on slices of those parameters and buffers: the leading part of every dimension
(the first filters of the first channels, the first features, embedding rows and columns), a
convolution's kernel cropped around its centre, and in a MultiheadAttention's packed input
projection the leading part of each of q, k and v. The torch layer of each value is built once on
the meta device and called with the sliced tensors (`torch.func.functional_call`), so the
supernet computes with the very code and weights `freeze` leaves: the plain torch layer of the
chosen values, carrying copies of the slices. BatchNorm statistics are updated in their slices.

Soft weights (DARTS) mix the values. Values that differ only in sizes (a class's `sizes`:
channels, features, kernel size and padding, depthwise groups, embedding shapes, attention widths)
run once, at the largest sizes, with each parameter weighted by the probabilities of the values
that use each part of it, so outputs keep one shape (the largest; the part beyond a value's size
is weighted down with it); a kernel choice mixes exactly when its padding keeps the output size
(`(k - 1) // 2`). Values that differ in anything else (rates, head counts, strides, eps) run apart,
each so mixed over the sizes, and their outputs are summed by weight, which needs one shape.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping, Optional

import torch
from torch import Tensor
from torch import nn as _nn
from torch.func import functional_call
from torch.nn import *  # noqa: F401,F403  every torch.nn name; the value-choice layers below replace theirs

from archnas.errors import SpaceError
from archnas.ops.frozen import ChosenInputs
from archnas.space.cells import Cell, NasBench201Cell
from archnas.space.nasbench101 import NasBench101Cell
from archnas.space.choice import choice_index
from archnas.space.choices import InputChoice, LayerChoice, Repeat
from archnas.space.fixed import KEEP, Resolvable
from archnas.space.value import Compose, ValueChoice, ValueExpr, evaluate, leaves_of, product_weights

_FACTORY = ("device", "dtype")  # constructor arguments that place tensors, not size them


def _as_expr(value: Any) -> Any:
    """A tuple or list holding choices (a kernel size `(k, k)`) as one expression of them."""
    if isinstance(value, (tuple, list)) and any(isinstance(v, ValueExpr) for v in value):
        kind = type(value)
        return Compose(lambda *items: kind(items), tuple(value), kind.__name__)
    return value


def _largest(options: list[Any]) -> Any:
    """The value the shared parameters are allocated for: the largest number, position by position
    in tuples; other values (strings, None) the first option (they size nothing)."""
    def numeric(v: Any) -> bool:
        return isinstance(v, (int, float))

    if all(numeric(o) for o in options):
        return max(options)
    if all(isinstance(o, (tuple, list)) and len(o) == len(options[0]) and all(map(numeric, o)) for o in options):
        return type(options[0])(max(column) for column in zip(*options))
    return options[0]


def _state(module: _nn.Module) -> Iterator[tuple[str, Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


def _get(module: _nn.Module, name: str) -> Tensor:
    """The tensor `name` (dotted: `out_proj.weight`) of `module`, as it is now."""
    for part in name.split("."):
        module = getattr(module, part)
    return module


@dataclass
class _Value:
    """The torch layer of one value of a layer's arguments, on the meta device (its forward code),
    and where each of its tensors lies in the shared ones: (name, region, is a parameter)."""

    layer: _nn.Module
    parts: list[tuple[str, tuple, bool]]


def _scaled(y: Any, scale: Any) -> Any:
    """`y * scale` through a layer's output (a tensor, or a tuple of them and None)."""
    if isinstance(y, tuple):
        return tuple(_scaled(item, scale) for item in y)
    return None if y is None else y * scale


def _shapes(y: Any) -> Any:
    if isinstance(y, tuple):
        return tuple(_shapes(item) for item in y)
    return None if y is None else tuple(y.shape)


def _added(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(_added(x, y) for x, y in zip(a, b))
    return None if a is None else a + b


class ValueLayer(Resolvable):
    """The mixin that makes a torch layer take ValueChoices: a subclass names the torch class as its
    base and, where it slices differently from the leading part of each dimension, overrides
    `_region`; `sizes` names the arguments that only size parameters (mixed by masking)."""

    sizes: ClassVar[tuple[str, ...]] = ()
    _torch: ClassVar[type]
    _signature: ClassVar[inspect.Signature]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        base = next((c for c in cls.__mro__ if c.__module__.startswith("torch.nn.")), None)
        if base is not None:
            cls._torch, cls._signature = base, inspect.signature(base)

    @classmethod
    def _arguments(cls, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        bound = cls._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return {name: _as_expr(value) for name, value in bound.arguments.items()}

    @classmethod
    def _instead(cls, *args: Any, **kwargs: Any) -> Any:
        if not leaves_of(*cls._arguments(args, kwargs).values()):
            return cls._torch(*args, **kwargs)
        return KEEP

    def __init__(self, *args: Any, **kwargs: Any):
        arguments = self._arguments(args, kwargs)
        choices = {name: value for name, value in arguments.items() if isinstance(value, ValueExpr)}
        for name, value in choices.items():
            for leaf in leaves_of(value):
                if not leaf.label_key:  # until a SearchSpaceModel names it by its path: distinct from others
                    leaf.label_key = f"{name}#{id(leaf):x}"
        largest = {name: _largest(value.all_options()) for name, value in choices.items()}
        try:
            self._torch.__init__(self, **{**arguments, **largest})
        except (ValueError, TypeError, RuntimeError, AssertionError) as e:
            raise SpaceError(f"archnas.space.nn.{type(self).__name__}: the layer of the largest values "
                             f"({_show(largest)}) cannot be built: {e}") from None
        self.value_args = choices
        self._plain_args = {name: value for name, value in arguments.items() if name not in _FACTORY}
        self._leaves = leaves_of(*choices.values())
        self._values: dict[str, _Value] = {}
        self._largest_args = {**self._plain_args, **largest}
        for values in self._all_values():  # every value is checked now, not at its first forward
            self._value(self._at(values))
        # the settings a value's layer shares with this one (BatchNorm's momentum, a stride, ...): set
        # on it at every run, so a change made to this layer later (recalibration's momentum None) holds
        self._settings = [name for name in self._plain_args if name not in choices and name in self.__dict__
                          and not isinstance(self.__dict__[name], (Tensor, _nn.Module))
                          and all(v.layer.__dict__.get(name) == self.__dict__[name] for v in self._values.values())]

    # -- the values ------------------------------------------------------------------------------

    def value_leaves(self) -> list[ValueChoice]:
        """The distinct choices the arguments depend on (choices that share a label are one)."""
        out: dict[str, ValueChoice] = {}
        for leaf in self._leaves:
            out.setdefault(leaf.label_key, leaf)
        return list(out.values())

    def _all_values(self) -> Iterator[dict[str, Any]]:
        leaves = self.value_leaves()
        for combo in itertools.product(*(leaf.candidates for leaf in leaves)):
            yield {leaf.label_key: value for leaf, value in zip(leaves, combo)}

    def _at(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The torch layer's constructor arguments at `values` (one value per leaf label)."""
        return {**self._plain_args, **{name: evaluate(value, values) for name, value in self.value_args.items()}}

    def _weights(self) -> Optional[dict[str, Any]]:
        """None when no architecture is bound; else per leaf label its ArchWeights."""
        out = {}
        for leaf in self.value_leaves():
            w = leaf.weights()
            if w is None:
                return None
            out[leaf.label_key] = w
        return out

    def _chosen(self, weights: Optional[Mapping[str, Any]]) -> tuple[dict[str, Any], Optional[Tensor]]:
        """The chosen values and the straight-through scale (None: no gradient to carry), when every
        leaf is decided (no weights: the first candidates); ({}, None) when the weights are soft."""
        leaves = self.value_leaves()
        if weights is None:
            return {leaf.label_key: leaf.candidates[0] for leaf in leaves}, None
        if any(weights[leaf.label_key].chosen is None for leaf in leaves):
            return {}, None
        values, scale = {}, None
        for leaf in leaves:
            w = weights[leaf.label_key]
            k = w.chosen[0]
            values[leaf.label_key] = leaf.candidates[k]
            if w.probs.requires_grad:
                scale = w.probs[k] if scale is None else scale * w.probs[k]
        return values, scale

    def values_of(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """The leaves' values in `arch`, checked."""
        out = {}
        for leaf in self.value_leaves():
            if leaf.label_key not in arch:
                raise SpaceError(f"the architecture has no value for {leaf.label_key!r}")
            out[leaf.label_key] = leaf.candidates[choice_index(leaf.spec(), arch[leaf.label_key])]
        return out

    # -- the torch layer of some values, and its slice of the shared tensors --------------------

    def _plain(self, arguments: Mapping[str, Any], device: Any, dtype: Any) -> _nn.Module:
        if "device" in self._signature.parameters:
            return self._torch(**arguments, device=device, dtype=dtype)
        return self._torch(**arguments)

    def _region(self, name: str, full: torch.Size, shape: torch.Size) -> tuple:
        """Where the tensor `name` of a value's layer (of `shape`) lies in the shared one (`full`)."""
        return tuple(slice(0, s) for s in shape)

    def _value(self, arguments: Mapping[str, Any]) -> _Value:
        """The torch layer of `arguments` and its parts of the shared tensors (made once per value)."""
        key = repr([arguments[name] for name in self.value_args])
        value = self._values.get(key)
        if value is None:
            value = self._values[key] = self._cut(arguments)
        return value

    def _cut(self, arguments: Mapping[str, Any]) -> _Value:
        where = f"archnas.space.nn.{type(self).__name__} at {_show({n: arguments[n] for n in self.value_args})}"
        try:
            layer = self._plain(arguments, "meta", None)
        except (ValueError, TypeError, RuntimeError, AssertionError) as e:
            raise SpaceError(f"{where}: the torch layer cannot be built: {e}") from None
        shared = dict(_state(self))
        parts = []
        for name, t in _state(layer):
            full = shared.get(name)
            if full is None or full.dim() != t.dim() or any(s > f for s, f in zip(t.shape, full.shape)):
                have = "none" if full is None else tuple(full.shape)
                raise SpaceError(f"{where}: its {name} of shape {tuple(t.shape)} does not fit in the one of the "
                                 f"largest values ({_show({n: self._largest_args[n] for n in self.value_args})}): "
                                 f"{have}; every value must be a part of the largest layer")
            region = self._region(name, full.shape, t.shape)
            if torch.empty(full.shape, device="meta")[region].shape != t.shape:
                raise SpaceError(f"{where}: its {name} of shape {tuple(t.shape)} has no place in {tuple(full.shape)}")
            parts.append((name, region, isinstance(t, _nn.Parameter)))
        return _Value(layer, parts)

    def _settle(self, layer: _nn.Module) -> _nn.Module:
        """`layer` with this layer's current settings."""
        for name in self._settings:
            setattr(layer, name, getattr(self, name))
        return layer

    def _run(self, value: _Value, tensors: Mapping[str, Tensor], args: tuple, kwargs: Mapping[str, Any]) -> Any:
        if value.layer.training != self.training:
            value.layer.train(self.training)
        return functional_call(self._settle(value.layer), dict(tensors), args, dict(kwargs))

    # -- forward and freeze ------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        weights = self._weights()
        values, scale = self._chosen(weights)
        if values:
            value = self._value(self._at(values))
            y = self._run(value, {name: _get(self, name)[region] for name, region, _ in value.parts}, args, kwargs)
            return y if scale is None else _scaled(y, scale)
        return self._soft_forward(weights, args, kwargs)

    def _soft_forward(self, weights: Mapping[str, Any], args: tuple, kwargs: Mapping[str, Any]) -> Any:
        """Values that differ only in sizes run once, at the largest sizes, with each parameter weighted
        by the values that use each part of it; values that differ in anything else (rates, heads,
        strides) run apart, and their outputs are summed by weight, which needs one output shape."""
        largest = {name: self._largest_args[name] for name in self.value_args if name in self.sizes}
        groups: dict[str, tuple[dict[str, Any], list]] = {}
        for values, p in product_weights(self.value_leaves(), {label: w.probs for label, w in weights.items()}):
            arguments = {**self._at(values), **largest}
            key = repr([arguments[name] for name in self.value_args])
            groups.setdefault(key, (arguments, []))[1].append((values, p))
        outputs = []
        for arguments, members in groups.values():
            masks: dict[str, Tensor] = {}
            for values, p in members:
                for name, region, is_param in self._value(self._at(values)).parts:
                    if is_param:
                        masks.setdefault(name, torch.zeros_like(_get(self, name)))[region] += p
            # one group: the probabilities of all values, which sum to 1; several: each group's parts
            # as fractions of its weight, and its output weighted by it
            weight = None if len(groups) == 1 else sum(p for _, p in members)
            if weight is not None:
                share = weight.clamp_min(torch.finfo(weight.dtype).tiny)
                masks = {name: mask / share for name, mask in masks.items()}
            value = self._value(arguments)
            tensors = {name: (_get(self, name) * masks[name] if name in masks else _get(self, name))[region]
                       for name, region, _ in value.parts}
            inputs = args
            if self._plain_args.get("inplace"):  # every group must see the input as it came
                inputs = tuple(a.clone() if isinstance(a, Tensor) else a for a in args)
            y = self._run(value, tensors, inputs, kwargs)
            outputs.append((arguments, y if weight is None else _scaled(y, weight)))
        (first, total), rest = outputs[0], outputs[1:]
        for arguments, y in rest:
            if _shapes(y) != _shapes(total):
                names = [name for name in self.value_args if name not in largest]
                raise SpaceError(f"archnas.space.nn.{type(self).__name__}: with soft weights (DARTS) values that "
                                 f"differ in {', '.join(names)} run apart and their outputs are summed, but at "
                                 f"{_show({n: first[n] for n in names})} it gives {_shapes(total)} and at "
                                 f"{_show({n: arguments[n] for n in names})} {_shapes(y)}; search it with a "
                                 "sampling strategy (GDAS, SPOS, random), or choose sizes only")
            total = _added(total, y)
        return total

    def frozen(self, arch: Mapping[str, Any]) -> _nn.Module:
        """The plain torch layer of `arch`'s values, with copies of its slices of the shared tensors."""
        shared = dict(_state(self))
        floats = [t for t in shared.values() if t.is_floating_point()]
        device = next(iter(shared.values())).device if shared else None
        arguments = self._at(self.values_of(arch))
        plain = self._settle(self._plain(arguments, device, floats[0].dtype if floats else None))
        regions = {name: region for name, region, _ in self._value(arguments).parts}
        with torch.no_grad():
            for name, t in _state(plain):
                t.copy_(shared[name][regions[name]])
                if isinstance(t, _nn.Parameter):
                    t.requires_grad_(shared[name].requires_grad)
        return plain

    def extra_repr(self) -> str:
        own = super().extra_repr()
        choices = ", ".join(f"{name}={value!r}" for name, value in self.value_args.items())
        return f"{own}, choices: {choices}" if own else f"choices: {choices}"


def _show(arguments: Optional[Mapping[str, Any]]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in (arguments or {}).items())


class _Conv(ValueLayer):
    """Convolutions: kernel dimensions are cropped around their centre, so kernel sizes of one
    parity share their middle taps; depthwise groups (groups = channels) scale with the channels."""

    sizes = ("in_channels", "out_channels", "kernel_size", "padding", "groups")

    def _region(self, name: str, full: torch.Size, shape: torch.Size) -> tuple:
        if name != "weight":
            return super()._region(name, full, shape)
        region = [slice(0, shape[0]), slice(0, shape[1])]
        for f, s in zip(full[2:], shape[2:]):
            if (f - s) % 2:
                raise SpaceError(f"archnas.space.nn.{type(self).__name__}: kernel sizes {s} and {f} have no common "
                                 "centre; make the kernel size choices all odd (or all even)")
            region.append(slice((f - s) // 2, (f - s) // 2 + s))
        return tuple(region)


class Conv1d(_Conv, _nn.Conv1d):
    """torch.nn.Conv1d whose arguments may be ValueChoices."""


class Conv2d(_Conv, _nn.Conv2d):
    """torch.nn.Conv2d whose arguments may be ValueChoices."""


class Conv3d(_Conv, _nn.Conv3d):
    """torch.nn.Conv3d whose arguments may be ValueChoices."""


class ConvTranspose1d(_Conv, _nn.ConvTranspose1d):
    """torch.nn.ConvTranspose1d whose arguments may be ValueChoices (its weight is [in, out, k]: the first
    input channels' first filters)."""


class ConvTranspose2d(_Conv, _nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d whose arguments may be ValueChoices."""


class ConvTranspose3d(_Conv, _nn.ConvTranspose3d):
    """torch.nn.ConvTranspose3d whose arguments may be ValueChoices."""


class Linear(ValueLayer, _nn.Linear):
    """torch.nn.Linear whose features may be ValueChoices."""

    sizes = ("in_features", "out_features")


class Bilinear(ValueLayer, _nn.Bilinear):
    """torch.nn.Bilinear whose features may be ValueChoices."""

    sizes = ("in1_features", "in2_features", "out_features")


class _Norm(ValueLayer):
    """Normalizations over the first `num_features` channels, with their share of the affine
    parameters and running statistics."""

    sizes = ("num_features",)


class BatchNorm1d(_Norm, _nn.BatchNorm1d):
    """torch.nn.BatchNorm1d whose arguments may be ValueChoices."""


class BatchNorm2d(_Norm, _nn.BatchNorm2d):
    """torch.nn.BatchNorm2d whose arguments may be ValueChoices."""


class BatchNorm3d(_Norm, _nn.BatchNorm3d):
    """torch.nn.BatchNorm3d whose arguments may be ValueChoices."""


class InstanceNorm1d(_Norm, _nn.InstanceNorm1d):
    """torch.nn.InstanceNorm1d whose arguments may be ValueChoices."""


class InstanceNorm2d(_Norm, _nn.InstanceNorm2d):
    """torch.nn.InstanceNorm2d whose arguments may be ValueChoices."""


class InstanceNorm3d(_Norm, _nn.InstanceNorm3d):
    """torch.nn.InstanceNorm3d whose arguments may be ValueChoices."""


class LayerNorm(ValueLayer, _nn.LayerNorm):
    """torch.nn.LayerNorm whose normalized shape may be a ValueChoice (or a tuple holding them)."""

    sizes = ("normalized_shape",)


class RMSNorm(ValueLayer, _nn.RMSNorm):
    """torch.nn.RMSNorm whose normalized shape may be a ValueChoice (or a tuple holding them)."""

    sizes = ("normalized_shape",)


class GroupNorm(ValueLayer, _nn.GroupNorm):
    """torch.nn.GroupNorm whose channels (and groups) may be ValueChoices."""

    sizes = ("num_channels",)


class Dropout(ValueLayer, _nn.Dropout):
    """torch.nn.Dropout whose rate may be a ValueChoice (soft weights: every rate's output, weighted)."""


class Dropout1d(ValueLayer, _nn.Dropout1d):
    """torch.nn.Dropout1d whose rate may be a ValueChoice."""


class Dropout2d(ValueLayer, _nn.Dropout2d):
    """torch.nn.Dropout2d whose rate may be a ValueChoice."""


class Dropout3d(ValueLayer, _nn.Dropout3d):
    """torch.nn.Dropout3d whose rate may be a ValueChoice."""


class AlphaDropout(ValueLayer, _nn.AlphaDropout):
    """torch.nn.AlphaDropout whose rate may be a ValueChoice."""


class FeatureAlphaDropout(ValueLayer, _nn.FeatureAlphaDropout):
    """torch.nn.FeatureAlphaDropout whose rate may be a ValueChoice."""


class Embedding(ValueLayer, _nn.Embedding):
    """torch.nn.Embedding whose table size may be a ValueChoice: the first rows' first columns."""

    sizes = ("num_embeddings", "embedding_dim")


class EmbeddingBag(ValueLayer, _nn.EmbeddingBag):
    """torch.nn.EmbeddingBag whose table size may be a ValueChoice."""

    sizes = ("num_embeddings", "embedding_dim")


class MultiheadAttention(ValueLayer, _nn.MultiheadAttention):
    """torch.nn.MultiheadAttention whose width, heads and dropout may be ValueChoices. The packed
    input projection [q; k; v] gives each of q, k and v the leading part of its own block, as a
    separate projection of each would; a head-count choice only splits the same width differently."""

    sizes = ("embed_dim", "kdim", "vdim")

    def _region(self, name: str, full: torch.Size, shape: torch.Size) -> tuple:
        if name not in ("in_proj_weight", "in_proj_bias"):
            return super()._region(name, full, shape)
        block, part = full[0] // 3, shape[0] // 3
        rows = [q * block + i for q in range(3) for i in range(part)]
        return (rows, *(slice(0, s) for s in shape[1:]))


VALUE_LAYERS = (
    "AlphaDropout", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Bilinear", "Conv1d", "Conv2d", "Conv3d",
    "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
    "Embedding", "EmbeddingBag", "FeatureAlphaDropout", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
    "InstanceNorm3d", "LayerNorm", "Linear", "MultiheadAttention", "RMSNorm",
)

__all__ = sorted({
    *(name for name in dir(_nn) if not name.startswith("_")), *VALUE_LAYERS, "VALUE_LAYERS", "ValueLayer",
    "Cell", "ChosenInputs", "InputChoice", "LayerChoice", "NasBench101Cell", "NasBench201Cell", "Repeat", "ValueChoice",
})
