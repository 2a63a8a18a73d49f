"""Conv2d, Linear and BatchNorm2d whose sizes may be ValueChoices (or expressions of them): drop-in
subclasses of the torch layers that share one set of weights between all their values.

    conv = archnas.space.nn.Conv2d(3, ValueChoice([16, 32], label="w"), kernel_size=ValueChoice([3, 5, 7], label="k"),
                                   padding=(ValueChoice([3, 5, 7], label="k") - 1) // 2)

The layer allocates its largest weight. At a chosen architecture (a one-hot sample, a fixed or
frozen one) it computes with the slice of the values chosen: the first `out` filters of the first
`in` channels, the kernel cropped around its centre, exactly the layer `freeze` leaves. With soft
weights (DARTS) it runs once at the largest size with the weight mixed over the values, each
value's slice zero-padded and weighted by its probability, so outputs keep one shape (the
largest; channels beyond a value's width are weighted down with it). Kernel choices mix exactly
when the padding keeps the output size (`(k - 1) // 2`): a smaller kernel zero-padded to the
largest one with the largest padding is the same convolution.

Without any ValueChoice argument the constructor returns the plain torch layer.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.space.choice import choice_index
from archnas.space.fixed import KEEP, Resolvable
from archnas.space.value import (
    ValueChoice,
    ValueExpr,
    evaluate,
    leaves_of,
    product_weights,
)


def _largest(value: Any, what: str) -> int:
    options = value.all_options() if isinstance(value, ValueExpr) else [value]
    if any(not isinstance(o, int) or isinstance(o, bool) or o < 1 for o in options):
        raise SpaceError(f"{what}: every value must be a positive int, got {options}")
    return max(options)


def _refuse_choices(layer: str, **kwargs: Any) -> None:
    bad = [k for k, v in kwargs.items() if isinstance(v, ValueExpr)]
    if bad:
        raise SpaceError(f"archnas.space.nn.{layer}: {', '.join(bad)} cannot be a ValueChoice (sizes can: channels, "
                         "features, kernel size, padding)")


class _Mixed:
    """What the three layers share: their value arguments, and how to read this forward's values."""

    value_args: dict[str, Any]

    def value_leaves(self) -> list[ValueChoice]:
        return leaves_of(*self.value_args.values())

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

    def _soft_combos(self, weights: Mapping[str, Any]) -> list[tuple[dict[str, Any], Any]]:
        return product_weights(self.value_leaves(), {label: w.probs for label, w in weights.items()})

    def values_of(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """The leaves' values in `arch`, checked."""
        out = {}
        for leaf in self.value_leaves():
            if leaf.label_key not in arch:
                raise SpaceError(f"the architecture has no value for {leaf.label_key!r}")
            out[leaf.label_key] = leaf.candidates[choice_index(leaf.spec(), arch[leaf.label_key])]
        return out


def _center(weight: Tensor, k: int) -> Tensor:
    o = (weight.shape[-1] - k) // 2
    return weight[..., o: o + k, o: o + k]


class Conv2d(Resolvable, _Mixed, nn.Conv2d):
    @classmethod
    def _instead(cls, in_channels: Any, out_channels: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                device: Any = None, dtype: Any = None):
        if not leaves_of(in_channels, out_channels, kernel_size, padding):
            return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                             padding_mode, device, dtype)
        return KEEP

    def __init__(self, in_channels: Any, out_channels: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None):
        _refuse_choices("Conv2d", stride=stride, dilation=dilation, groups=groups)
        if padding_mode != "zeros" and isinstance(padding, ValueExpr):
            raise SpaceError("archnas.space.nn.Conv2d: a padding choice needs padding_mode='zeros'")
        values = {"in_channels": in_channels, "out_channels": out_channels, "kernel_size": kernel_size,
                  "padding": padding}
        sizes = {k: _largest(values[k], f"Conv2d {k}") for k in ("in_channels", "out_channels", "kernel_size")}
        if isinstance(kernel_size, ValueExpr) and any(k % 2 == 0 for k in kernel_size.all_options()):
            raise SpaceError("archnas.space.nn.Conv2d: kernel size choices must be odd (they crop around the centre)")
        leaves = leaves_of(*values.values())
        biggest = max(product_weights(leaves, {leaf.label_key: [1.0] * len(leaf.candidates) for leaf in leaves}),
                      key=lambda combo: evaluate(kernel_size, combo[0]))[0]
        nn.Conv2d.__init__(self, sizes["in_channels"], sizes["out_channels"], sizes["kernel_size"], stride,
                           evaluate(padding, biggest), dilation, groups, bias, padding_mode, device, dtype)
        self.value_args = values

    def _sizes(self, values: Mapping[str, Any]) -> tuple[int, int, int, Any]:
        a = self.value_args
        return (evaluate(a["in_channels"], values), evaluate(a["out_channels"], values),
                evaluate(a["kernel_size"], values), evaluate(a["padding"], values))

    def _slice(self, values: Mapping[str, Any]) -> tuple[Tensor, Optional[Tensor], Any]:
        cin, cout, k, pad = self._sizes(values)
        weight = _center(self.weight[:cout, : cin // self.groups], k)
        return weight, None if self.bias is None else self.bias[:cout], pad

    def forward(self, x: Tensor) -> Tensor:
        weights = self._weights()
        values, scale = self._chosen(weights)
        if values:
            weight, bias, pad = self._slice(values)
            y = F.conv2d(x, weight, bias, self.stride, pad, self.dilation, self.groups)
            return y if scale is None else y * scale
        mask = torch.zeros_like(self.weight)
        bias_mask = None if self.bias is None else torch.zeros_like(self.bias)
        for combo, p in self._soft_combos(weights):
            cin, cout, k, _ = self._sizes(combo)
            o = (self.kernel_size[0] - k) // 2
            mask[:cout, : cin // self.groups, o: o + k, o: o + k] += p
            if bias_mask is not None:
                bias_mask[:cout] += p
        bias = None if self.bias is None else self.bias * bias_mask
        return F.conv2d(x, self.weight * mask, bias, self.stride, self.padding, self.dilation, self.groups)

    def frozen(self, arch: Mapping[str, Any]) -> nn.Conv2d:
        values = self.values_of(arch)
        cin, cout, k, pad = self._sizes(values)
        plain = nn.Conv2d(cin, cout, k, self.stride, pad, self.dilation, self.groups, self.bias is not None,
                          self.padding_mode, self.weight.device, self.weight.dtype)
        weight, bias, _ = self._slice(values)
        with torch.no_grad():
            plain.weight.copy_(weight)
            if bias is not None:
                plain.bias.copy_(bias)
        return plain


class Linear(Resolvable, _Mixed, nn.Linear):
    @classmethod
    def _instead(cls, in_features: Any, out_features: Any, bias: bool = True, device: Any = None, dtype: Any = None):
        if not leaves_of(in_features, out_features):
            return nn.Linear(in_features, out_features, bias, device, dtype)
        return KEEP

    def __init__(self, in_features: Any, out_features: Any, bias: bool = True, device: Any = None, dtype: Any = None):
        nn.Linear.__init__(self, _largest(in_features, "Linear in_features"), _largest(out_features, "Linear out_features"),
                           bias, device, dtype)
        self.value_args = {"in_features": in_features, "out_features": out_features}

    def _sizes(self, values: Mapping[str, Any]) -> tuple[int, int]:
        return evaluate(self.value_args["in_features"], values), evaluate(self.value_args["out_features"], values)

    def forward(self, x: Tensor) -> Tensor:
        weights = self._weights()
        values, scale = self._chosen(weights)
        if values:
            fin, fout = self._sizes(values)
            y = F.linear(x, self.weight[:fout, :fin], None if self.bias is None else self.bias[:fout])
            return y if scale is None else y * scale
        mask = torch.zeros_like(self.weight)
        bias_mask = None if self.bias is None else torch.zeros_like(self.bias)
        for combo, p in self._soft_combos(weights):
            fin, fout = self._sizes(combo)
            mask[:fout, :fin] += p
            if bias_mask is not None:
                bias_mask[:fout] += p
        return F.linear(x, self.weight * mask, None if self.bias is None else self.bias * bias_mask)

    def frozen(self, arch: Mapping[str, Any]) -> nn.Linear:
        fin, fout = self._sizes(self.values_of(arch))
        plain = nn.Linear(fin, fout, self.bias is not None, self.weight.device, self.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(self.weight[:fout, :fin])
            if self.bias is not None:
                plain.bias.copy_(self.bias[:fout])
        return plain


class BatchNorm2d(Resolvable, _Mixed, nn.BatchNorm2d):
    """Normalizes the first `num_features` channels with their share of the statistics and affine
    parameters (soft weights: all channels, as the mixed layers before it output)."""

    @classmethod
    def _instead(cls, num_features: Any, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                track_running_stats: bool = True, device: Any = None, dtype: Any = None):
        if not leaves_of(num_features):
            return nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        return KEEP

    def __init__(self, num_features: Any, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Any = None, dtype: Any = None):
        nn.BatchNorm2d.__init__(self, _largest(num_features, "BatchNorm2d num_features"), eps, momentum, affine,
                                track_running_stats, device, dtype)
        self.value_args = {"num_features": num_features}

    def forward(self, x: Tensor) -> Tensor:
        values, scale = self._chosen(self._weights())
        if not values:
            return super().forward(x)
        c = evaluate(self.value_args["num_features"], values)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or not self.track_running_stats
        stats = (None, None) if not self.track_running_stats else (self.running_mean[:c], self.running_var[:c])
        y = F.batch_norm(x, *stats, None if self.weight is None else self.weight[:c],
                         None if self.bias is None else self.bias[:c], use_batch, factor, self.eps)
        return y if scale is None else y * scale

    def frozen(self, arch: Mapping[str, Any]) -> nn.BatchNorm2d:
        c = evaluate(self.value_args["num_features"], self.values_of(arch))
        plain = nn.BatchNorm2d(c, self.eps, self.momentum, self.affine, self.track_running_stats,
                               self.running_mean.device if self.running_mean is not None else None)
        with torch.no_grad():
            if self.affine:
                plain.weight.copy_(self.weight[:c])
                plain.bias.copy_(self.bias[:c])
            if self.track_running_stats:
                plain.running_mean.copy_(self.running_mean[:c])
                plain.running_var.copy_(self.running_var[:c])
                plain.num_batches_tracked.copy_(self.num_batches_tracked)
        return plain


__all__ = ["BatchNorm2d", "Conv2d", "Linear"]
