"""NNI's `MobileNetV3Space`: the largest search space of TuNAS (Bender et al., CVPR 2020), with
NNI 3.0's arguments, defaults and labels.

A conv-BN-activation stem (`stem_ks`: 3 or 5), a depthwise-separable block (`s0_i0_ks`: 3, 5, 7),
stages 1..5 of inverted residuals (MBConv: 1x1 expansion, depthwise k x k, optional
squeeze-and-excite, linear 1x1) whose depths are `Repeat`s `s<i>_depth` over `depth_range`
and whose blocks choose `s<i>_i<j>_exp` (an `expand_ratios` value) and `s<i>_i<j>_ks` (3, 5, 7),
then a 1x1 conv-BN-activation, global pooling, a 1x1 conv with bias (no BN) and activation,
dropout and the linear classifier. Widths are `base_widths` times a multiplier chosen per stage
(`s<k>_width_mult` over `width_multipliers`; the stem shares stage 0's, as in TuNAS), rounded
to multiples of 8 as NNI rounds them; a single float fixes it. `squeeze_excite` says per stage
0..5 whether blocks have an SE layer (`force`), may have one (`optional`: a LayerChoice
`s<i>_i<j>_se` of `identity` and `se`) or none, its width a quarter of the expanded width
(`se_from_exp`) or of the block's input. `activation` and `stride` are per stage, stem to head.
Shorter bodies take shorter lists, as in NNI (`base_widths` of n + 1 widths for n >= 4 blocks).

Unlike `proxylessnas` the choices are value choices (`archnas.space.nn` layers: kernels cropped,
channels sliced from the largest, as NNI's MobileNetV3Space shares weights), so costs are not
additive over the choices: every architecture is counted on its own network.

Small inputs: as in the other mobile spaces, a stride-2 layer runs at stride 1 once its input's
side is under `2 * min_size`, so 8x8 digits keep 2x2 maps; 224x224 gets the reference strides.

Named architectures (NNI's `load_searched_model`): `mobilenetv3-large-100` and
`mobilenetv3-small-<050|075|100>`, each an architecture of the space at its own parameters
(`searched_model(name)` gives both; `confs/hub/mobilenetv3_large_100.yaml` and
`mobilenetv3_small_100.yaml` configure them). At 3x224x224 and 1000 classes
`mobilenetv3-large-100` has 5,483,032 parameters, torchvision's and timm's MobileNetV3-Large 1.0.
"""

from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torch import Tensor, nn

import archnas.space.nn as snn
from archnas.errors import SpaceError
from archnas.hub.common import check_space_params, named_arch_parser
from archnas.ops.mobile import downsampling_stride, init_mobilenet_weights, make_divisible, strided_size
from archnas.space.choices import LayerChoice, Repeat
from archnas.space.value import ValueChoice, compose

ACTIVATIONS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(
    {"hswish": nn.Hardswish, "swish": nn.SiLU, "relu": nn.ReLU})
SE_MODES = ("force", "optional", "none")
KERNELS = (3, 5, 7)


def _divisible(value: Any) -> Any:
    """`make_divisible(value, 8)`, lazily when `value` is an expression of choices."""
    return compose(lambda v: make_divisible(v, 8), (value,), "make_divisible")


def conv_bn_act(c_in: Any, c_out: Any, kernel_size: Any = 3, stride: int = 1, groups: Any = 1,
                activation: Optional[Callable[..., nn.Module]] = nn.ReLU6, norm: bool = True,
                bn: Callable[..., nn.Module] = snn.BatchNorm2d) -> nn.Sequential:
    """NNI's ConvBNReLU: conv (with a bias only without BatchNorm), BatchNorm, activation (None: linear)."""
    layers = [snn.Conv2d(c_in, c_out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=not norm)]
    if norm:
        layers.append(bn(c_out))
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite: global mean, 1x1 conv to a quarter (multiple of 8), ReLU, 1x1 conv back,
    hard sigmoid gate (timm's and NNI's)."""

    def __init__(self, channels: Any):
        super().__init__()
        reduced = _divisible(channels * 0.25)
        self.conv_reduce = snn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = snn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


def _same_width(a: Any, b: Any) -> bool:
    """Whether two widths are the same for a residual: equal ints, or one expression (NNI's `is`)."""
    return a is b or (isinstance(a, int) and isinstance(b, int) and a == b)


class _Residual(nn.Sequential):
    """Layers in sequence, plus the input when the block keeps its shape."""

    def __init__(self, layers: Sequence[nn.Module], skip: bool):
        super().__init__(*layers)
        self.has_skip = skip

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        return x + y if self.has_skip else y


def _se(hidden: Any, c_in: Any, mode: str, from_exp: bool, label: str) -> list[nn.Module]:
    if mode == "none":
        return []
    se = SqueezeExcite(hidden if from_exp else c_in)
    return [LayerChoice({"identity": nn.Identity(), "se": se}, label=label) if mode == "optional" else se]


def separable(c_in: Any, c_out: Any, kernel: Any, stride: int, se: str, from_exp: bool, label: str,
              activation: Callable[..., nn.Module], bn: Callable[..., nn.Module]) -> _Residual:
    """Depthwise k x k (BN, activation), optional SE, linear 1x1."""
    layers = [conv_bn_act(c_in, c_in, kernel, stride, groups=c_in, activation=activation, bn=bn),
              *_se(c_in, c_in, se, from_exp, label),
              conv_bn_act(c_in, c_out, 1, activation=None, bn=bn)]
    return _Residual(layers, stride == 1 and _same_width(c_in, c_out))


def inverted_residual(c_in: Any, c_out: Any, expand: Any, kernel: Any, stride: int, se: str, from_exp: bool,
                      label: str, activation: Callable[..., nn.Module], bn: Callable[..., nn.Module]) -> _Residual:
    """MBConv: 1x1 to make_divisible(c_in * expand), depthwise k x k, optional SE, linear 1x1."""
    hidden = _divisible(c_in * expand)
    layers = [conv_bn_act(c_in, hidden, 1, activation=activation, bn=bn),
              conv_bn_act(hidden, hidden, kernel, stride, groups=hidden, activation=activation, bn=bn),
              *_se(hidden, c_in, se, from_exp, label),
              conv_bn_act(hidden, c_out, 1, activation=None, bn=bn)]
    return _Residual(layers, stride == 1 and _same_width(c_in, c_out))


DEFAULTS: Mapping[str, Any] = MappingProxyType(dict(
    base_widths=(16, 16, 16, 32, 64, 128, 256, 512, 1024),
    width_multipliers=(0.5, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0),
    expand_ratios=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0),
    squeeze_excite=("none", "none", "optional", "none", "optional", "optional"),
    depth_range=(1, 4),
    stride=(2, 1, 2, 2, 2, 1, 2, 1, 1),
    activation=("hswish", "relu", "relu", "relu", "hswish", "hswish", "hswish", "hswish", "hswish"),
))


class MobileNetV3Space(nn.Module):
    """The space for images of `input_shape` ([C, H, W]; the reference is 3x224x224) and
    `n_classes` outputs (NNI: `num_labels`); NNI's other arguments and defaults."""

    def __init__(self, input_shape: Sequence[int] = (3, 224, 224), n_classes: int = 1000,
                 base_widths: Sequence[int] = DEFAULTS["base_widths"],
                 width_multipliers: Union[Sequence[float], float] = DEFAULTS["width_multipliers"],
                 expand_ratios: Sequence[float] = DEFAULTS["expand_ratios"],
                 squeeze_excite: Sequence[str] = DEFAULTS["squeeze_excite"],
                 depth_range: Union[Sequence[Sequence[int]], Sequence[int]] = DEFAULTS["depth_range"],
                 stride: Sequence[int] = DEFAULTS["stride"], activation: Sequence[str] = DEFAULTS["activation"],
                 se_from_exp: bool = True, dropout_rate: float = 0.2, bn_eps: float = 1e-3, bn_momentum: float = 0.1,
                 min_size: int = 2):
        super().__init__()
        check_space_params("mobilenetv3", input_shape, 1.0, dropout_rate, min_size)
        n = len(base_widths) - 1  # blocks: stage 0, stages 1..n-3, the two head convs
        depths = _check(n, base_widths, width_multipliers, expand_ratios, squeeze_excite, depth_range, stride,
                        activation)
        widths: list[Any] = []
        for i, base in enumerate(base_widths):
            if isinstance(width_multipliers, (int, float)):
                widths.append(make_divisible(base * width_multipliers, 8))
            else:  # the stem and stage 0 share a label, so one multiplier (TuNAS's)
                widths.append(_divisible(ValueChoice(list(width_multipliers), label=f"s{max(i - 1, 0)}_width_mult") * base))
        acts = [ACTIVATIONS[a] for a in activation]
        bn = partial(snn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        size = min(input_shape[1:])

        def strided(s: int) -> int:
            nonlocal size
            s = downsampling_stride(s, size, min_size)
            size = strided_size(size, s)
            return s

        self.stem = conv_bn_act(input_shape[0], widths[0], ValueChoice(list((3, 5)), label="stem_ks"),
                                strided(stride[0]), activation=acts[0], bn=bn)
        blocks: list[nn.Module] = [separable(widths[0], widths[1], ValueChoice(list(KERNELS), label="s0_i0_ks"),
                                             strided(stride[1]), squeeze_excite[0], se_from_exp, "s0_i0_se", acts[1], bn)]
        for i in range(1, n - 2):
            first = strided(stride[i + 1])
            blocks.append(Repeat(partial(self._block, i, widths[i], widths[i + 1], first, squeeze_excite[i],
                                         se_from_exp, expand_ratios, acts[i + 1], bn),
                                 (max(depths[i - 1][0], 1) if stride[i + 1] != 1 else depths[i - 1][0],
                                  depths[i - 1][1]), label=f"s{i}_depth"))
        blocks += [conv_bn_act(widths[n - 2], widths[n - 1], 1, strided(stride[n - 1]), activation=acts[n - 1], bn=bn),
                   nn.AdaptiveAvgPool2d(1),
                   conv_bn_act(widths[n - 1], widths[n], 1, stride[n], activation=acts[n], norm=False)]
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(dropout_rate), snn.Linear(widths[n], n_classes))
        init_mobilenet_weights(self)

    @staticmethod
    def _block(stage: int, c_in: Any, c_out: Any, stride: int, se: str, from_exp: bool, expand_ratios: Sequence[float],
               activation: Callable[..., nn.Module], bn: Callable[..., nn.Module], index: int) -> _Residual:
        label = f"s{stage}_i{index}"
        return inverted_residual(c_in if index == 0 else c_out, c_out,
                                 ValueChoice(list(expand_ratios), label=f"{label}_exp"),
                                 ValueChoice(list(KERNELS), label=f"{label}_ks"), stride if index == 0 else 1, se,
                                 from_exp, f"{label}_se", activation, bn)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.blocks(self.stem(x)).flatten(1))


def _check(n: int, base_widths: Sequence[int], width_multipliers: Any, expand_ratios: Sequence[float],
           squeeze_excite: Sequence[str], depth_range: Any, stride: Sequence[int],
           activation: Sequence[str]) -> list[tuple[int, int]]:
    """NNI's checks, as SpaceErrors naming the argument; the (min, max) depth of stages 1..n-3."""
    if n < 4:
        raise SpaceError(f"mobilenetv3: base_widths {list(base_widths)} needs at least 5 widths (stem, 4 blocks)")
    if len(stride) != n + 1 or len(activation) != n + 1:
        raise SpaceError(f"mobilenetv3: stride {list(stride)} and activation {list(activation)} need {n + 1} entries, "
                         f"one per width of base_widths")
    if len(squeeze_excite) != n - 2 or any(se not in SE_MODES for se in squeeze_excite):
        raise SpaceError(f"mobilenetv3: squeeze_excite {list(squeeze_excite)} needs {n - 2} of {', '.join(SE_MODES)}")
    unknown = [a for a in activation if a not in ACTIVATIONS]
    if unknown:
        raise SpaceError(f"mobilenetv3: activation {unknown} unknown; expected {', '.join(ACTIVATIONS)}")
    if any(s not in (1, 2) for s in stride):
        raise SpaceError(f"mobilenetv3: strides {list(stride)} must be 1 or 2")
    if not expand_ratios or (not isinstance(width_multipliers, (int, float)) and not width_multipliers):
        raise SpaceError("mobilenetv3: expand_ratios and width_multipliers need at least one value")
    ranges = [tuple(depth_range)] * (n - 3) if depth_range and isinstance(depth_range[0], int) else \
        [tuple(d) for d in depth_range]
    if len(ranges) != n - 3 or any(len(d) != 2 or not 1 <= d[0] <= d[1] for d in ranges):
        raise SpaceError(f"mobilenetv3: depth_range {depth_range!r} must be (min, max) with 1 <= min <= max, or "
                         f"{n - 3} of them (stages 1 to {n - 3})")
    return ranges


def _stages(depths: Sequence[int], exps: Sequence[Sequence[float]], kernels: Sequence[Sequence[int]]) -> dict[str, Any]:
    """The labels of stages 1.. at these depths, expand ratios and kernels (per stage, per block)."""
    arch: dict[str, Any] = {}
    for stage, (depth, e, k) in enumerate(zip(depths, exps, kernels), 1):
        arch[f"s{stage}_depth"] = depth
        for j in range(depth):
            arch[f"s{stage}_i{j}_exp"], arch[f"s{stage}_i{j}_ks"] = float(e[j]), k[j]
    return arch


def _small_widths(multiplier: float) -> list[int]:
    """MobileNetV3-Small's widths at a multiplier (the stem stays 16 below 0.75, as in timm)."""
    widths = [16, 16, 24, 40, 48, 96, 576, 1024]
    return [make_divisible(w * multiplier, 8) if i < 7 and (i > 0 or multiplier >= 0.75) else w
            for i, w in enumerate(widths)]


def searched_model(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the space's parameters, the architecture) of a network NNI's hub names
    (`MobileNetV3Space.load_searched_model`); a SpaceError listing the names otherwise."""
    if name == "mobilenetv3-large-100":
        params = dict(base_widths=[16, 16, 24, 40, 80, 112, 160, 960, 1280], width_multipliers=1.0,
                      expand_ratios=[1.0, 2.0, 2.3, 2.5, 3.0, 4.0, 6.0], bn_eps=1e-5, bn_momentum=0.1,
                      squeeze_excite=["none", "none", "force", "none", "force", "force"])
        arch = {"stem_ks": 3, "s0_i0_ks": 3, **_stages(
            (2, 3, 4, 2, 3), ((4, 3), (3, 3, 3), (6, 2.5, 2.3, 2.3), (6, 6), (6, 6, 6)),
            ((3, 3), (5, 5, 5), (3, 3, 3, 3), (3, 3), (5, 5, 5)))}
        return params, arch
    small = {f"mobilenetv3-small-{pct}": int(pct) / 100 for pct in ("050", "075", "100")}
    if name in small:
        # NNI gives depth_range (1, 2) with depths of 3 in stages 2 and 4; (1, 3) holds the network
        params = dict(base_widths=_small_widths(small[name]), width_multipliers=1.0,
                      expand_ratios=[3.0, 3.67, 4.0, 4.5, 6.0], bn_eps=1e-5, bn_momentum=0.1,
                      squeeze_excite=["force", "none", "force", "force", "force"],
                      activation=["hswish", "relu", "relu", "hswish", "hswish", "hswish", "hswish", "hswish"],
                      stride=[2, 2, 2, 2, 1, 2, 1, 1], depth_range=[1, 3])
        arch = {"stem_ks": 3, "s0_i0_ks": 3, **_stages(
            (2, 3, 2, 3), ((4.5, 3.67), (4.0, 6.0, 6.0), (3.0, 3.0), (6.0, 6.0, 6.0)),
            ((3, 3), (5, 5, 5), (5, 5), (5, 5, 5)))}
        return params, arch
    raise SpaceError(f"mobilenetv3: unknown architecture name {name!r}; named architectures: "
                     f"{', '.join(NAMED_ARCHS)} (or give a {{label: choice}} mapping or an architecture file)")


NAMED_ARCHS: Mapping[str, Callable[[], dict[str, Any]]] = MappingProxyType({
    name: partial(lambda n: searched_model(n)[1], name)
    for name in ("mobilenetv3-large-100", "mobilenetv3-small-050", "mobilenetv3-small-075", "mobilenetv3-small-100")})
parse_mobilenetv3_arch = named_arch_parser("mobilenetv3", NAMED_ARCHS)
