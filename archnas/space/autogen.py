"""Search-space autogeneration: a user's plain PyTorch model in, a model with choices out.

    net = MyNet()                                            # plain torch, trained or not
    space = SearchSpaceModel(generate_space(net, input_shape=(3, 32, 32)))
    space(x)                                                 # == net(x) at the default architecture

The model is traced with `torch.fx` and its convolution blocks are found in the graph. A block
is a chain of units, each a `Conv2d` followed by an optional `BatchNorm2d` and an optional
activation (a module such as `nn.ReLU`, or `F.relu`, `torch.relu`, `x.relu()`, ...), every
intermediate result used only by the next layer: `conv-bn-act` (a stem), `conv-bn-act-conv-bn`
(a ResNet branch), `conv1x1-bn-act-dwconv-bn-act-conv1x1-bn` (an inverted residual). Each block
becomes a `LayerChoice` of self-contained variants (plain `nn.Sequential`s), so the space's
parameters and multiply-adds add up over its choices:

- width multipliers (`w0.5`): the channels inside the block (every conv output but the block's
  last, carried through depthwise convs) scaled by the multiplier, at least one channel. The
  block's input and output widths stay, so the rest of the model is unchanged. A narrower variant
  keeps the channels whose producing conv has the largest filters by L1 norm, in their original
  order, and takes its weights, biases and BatchNorm statistics from the source's.
- kernel sizes (`k5`): every spatial conv of the block (kernel > 1, square, odd, "same" padding,
  no dilation) at the given size. A larger kernel EMBEDS the original one at its centre (zeros
  around it: the variant computes what the source computes until it trains); a smaller kernel
  CROPS the original's centre.
- `skip` (multiplier 0.0): where the block is a residual branch added to its own input (the
  shortcut is the identity), the branch contributes nothing (zeros: `archnas.ops.nb201.Zero`) and
  the identity passes.

A block's candidates are named `w<multiplier>[_k<kernel>]` (the kernel part only where the block
has kernel variants) and `skip`; the first is the source's block itself (multiplier 1.0 at its
own kernel), so the default architecture computes exactly what the source model computes. Each
choice is labelled by the module path of its block: the innermost module holding all of the
block's convs and BatchNorms (`layer1.0`), or its first conv's path where that module holds
another block or is the model itself. The choice takes the first conv's place in the module tree.

`exclude` names modules (paths, with everything below them) to leave untouched: they are not
traced into (an untraceable submodule can be excluded), and no block is formed of their layers.
A model that torch.fx cannot trace, or in which no block has two variants, is a SpaceError
naming the module. Under `archnas.space.fixed_arch` only the chosen variant is built, and the
result is the network `freeze` cuts out of the space (the same modules and state-dict keys).
"""

from __future__ import annotations

import copy
import math
import operator
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from archnas.errors import SpaceError
from archnas.ops.nb201 import Zero
from archnas.space.choice import Choice
from archnas.space.choices import LayerChoice
from archnas.space.registry import create_model

DEFAULT_WIDTHS = (1.0, 0.75, 0.5, 0.25, 0.0)
SKIP = "skip"

# Stateless activations a unit may end with: modules (copied into the variants), and functions
# and tensor methods (replaced by the module that computes the same).
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish,
                nn.Sigmoid, nn.Tanh)
_ACT_FUNCTIONS: Mapping[Any, Callable[[], nn.Module]] = {
    F.relu: nn.ReLU, torch.relu: nn.ReLU, F.relu6: nn.ReLU6, F.silu: nn.SiLU, F.hardswish: nn.Hardswish,
    F.gelu: nn.GELU, torch.sigmoid: nn.Sigmoid, torch.tanh: nn.Tanh,
}
_ACT_METHODS: Mapping[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu_": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
}
_ADDS = (operator.add, operator.iadd, torch.add)


def generate_space(model: nn.Module, input_shape: Sequence[int], width_multipliers: Iterable[float] = DEFAULT_WIDTHS,
                   kernel_sizes: Optional[Iterable[int]] = None, exclude: Iterable[str] = ()) -> nn.Module:
    """The search space of `model` (a `torch.fx.GraphModule` with a labelled `LayerChoice` per
    block; wrap it in a `SearchSpaceModel`), its variants initialized from `model`'s weights.

    `input_shape` is one input's `[C, H, W]` (one forward at it finds the residual blocks).
    `width_multipliers` in [0, 1]; 1.0 is always a candidate (the source's width), 0.0 gives the
    `skip` variant of residual blocks. `kernel_sizes`: odd sizes every spatial conv of a block may
    take besides its own; None keeps the kernels. `model` itself is left as it was."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"generate_space: model must be a torch.nn.Module, got {type(model).__name__}")
    widths = _check_widths(width_multipliers)
    kernels = _check_kernels(kernel_sizes)
    excluded = _check_exclude(model, exclude)
    if any(isinstance(m, Choice) for m in model.modules()):
        raise SpaceError(f"autogen: {type(model).__name__} has choices already; generate a space from a plain model")
    source = copy.deepcopy(model)
    gm = _trace(source, excluded)
    _propagate_shapes(gm, source, input_shape)
    blocks = _find_blocks(gm, excluded, widths, kernels)
    if not blocks:
        raise SpaceError(f"autogen: {type(model).__name__} has no convolution block with two variants (a Conv2d, "
                         "optionally followed by BatchNorm2d and an activation, chained with the next by a single use; "
                         "width variants need a conv inside the chain, kernel variants kernel_sizes and a square odd "
                         "'same'-padded conv, skip a residual add of the block's input)"
                         + (f"; excluded: {', '.join(excluded)}" if excluded else ""))
    for block, label in zip(blocks, _labels(blocks)):
        block.replace(gm, label)
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.training = model.training  # the root's flag; the modules keep theirs
    return gm


def autogen_space(input_shape: Sequence[int], n_classes: int, model: Optional[Mapping[str, Any]] = None,
                  width_multipliers: Sequence[float] = DEFAULT_WIDTHS, kernel_sizes: Optional[Sequence[int]] = None,
                  exclude: Sequence[str] = ()) -> nn.Module:
    """The registered space `autogen`: `model` names the source (`{name: plain_cnn, <parameters>}`,
    a registered model, or `{factory: 'module:function', ...}` of a loaded plugin), built for the
    dataset, then `generate_space` with the other keys."""
    if not isinstance(model, Mapping) or ("name" in model) == ("factory" in model):
        raise SpaceError(f"autogen: model {model!r} must be {{name: <a registered model, e.g. plain_cnn>, ...}} or "
                         "{factory: 'package.module:function', ...} (a plugin loaded with --import)")
    params = dict(model)
    name, factory = params.pop("name", None), params.pop("factory", None)
    source = create_model(name, factory=factory, input_shape=input_shape, n_classes=n_classes, **params)
    return generate_space(source, input_shape, width_multipliers, kernel_sizes, exclude)


# -- options --------------------------------------------------------------------------------------

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_widths(values: Iterable[float]) -> list[float]:
    """The multipliers, 1.0 first, each once."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise SpaceError(f"autogen: width_multipliers {values!r} must be a list of numbers in [0, 1]")
    values = list(values)
    bad = [v for v in values if not _number(v) or not 0 <= v <= 1]
    if bad or not values:
        raise SpaceError(f"autogen: width_multipliers {values} must be a non-empty list of numbers in [0, 1] "
                         f"(1.0: the source's width, 0.0: skip a residual block); not: {bad}")
    twice = sorted({float(v) for v in values if sum(float(w) == float(v) for w in values) > 1})
    if twice:
        raise SpaceError(f"autogen: width_multipliers {values} lists {twice} twice")
    return [1.0] + [float(v) for v in values if float(v) != 1.0]


def _check_kernels(values: Optional[Iterable[int]]) -> list[int]:
    if values is None:
        return []
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise SpaceError(f"autogen: kernel_sizes {values!r} must be a list of odd ints (or null: keep the kernels)")
    values = list(values)
    bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v % 2 == 0]
    if bad:
        raise SpaceError(f"autogen: kernel_sizes {values}: {bad} are not odd positive ints (odd: 'same' padding "
                         "keeps the map's size)")
    if len(set(values)) != len(values):
        raise SpaceError(f"autogen: kernel_sizes {values} lists a size twice")
    return values


def _check_exclude(model: nn.Module, exclude: Iterable[str]) -> list[str]:
    """The excluded paths, each naming a module of `model`."""
    if isinstance(exclude, (str, bytes)) or not isinstance(exclude, Iterable):
        raise SpaceError(f"autogen: exclude {exclude!r} must be a list of module paths")
    paths = list(exclude)
    names = {name for name, _ in model.named_modules() if name}
    for path in paths:
        if not isinstance(path, str) or path not in names:
            examples = [name for name, _ in model.named_children()] + [n for n in sorted(names) if "." in n][:1]
            raise SpaceError(f"autogen: exclude {path!r} is not a module of {type(model).__name__} (module paths "
                             f"such as {', '.join(examples) or 'none: it has no submodules'})")
    return paths


def _under(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


# -- tracing ----------------------------------------------------------------------------------------

class _Tracer(fx.Tracer):
    """torch.fx's tracer that keeps excluded modules whole and remembers the innermost module
    whose forward failed."""

    def __init__(self, excluded: Sequence[str]):
        super().__init__()
        self.excluded = excluded
        self.failed_in: Optional[tuple[str, str]] = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _under(module_qualified_name, self.excluded) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = (self.path_of_module(m), type(m).__name__)
            raise


def _trace(model: nn.Module, excluded: Sequence[str]) -> fx.GraphModule:
    tracer = _Tracer(excluded)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # torch.fx raises TraceError, TypeError, NotImplementedError, ...: any is the model's
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if tracer.failed_in is None:
            where, advice = f"{type(model).__name__}'s own forward", "make it traceable"
        else:
            path, cls = tracer.failed_in
            where = f"module {path!r} ({cls})"
            advice = f"make it traceable, or keep it whole with exclude: [{path}]"
        raise SpaceError(f"autogen: torch.fx cannot trace {where}: {reason}; {advice}") from None
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SpaceError(f"autogen: {type(model).__name__}'s forward takes {len(placeholders)} inputs; a generated "
                         "space's model takes one image batch")
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _propagate_shapes(gm: fx.GraphModule, model: nn.Module, input_shape: Sequence[int]) -> None:
    """Every node's output shape (node.meta['tensor_meta']), from one eval-mode forward of zeros
    (no statistics change; the training flags are restored)."""
    if len(input_shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in input_shape):
        raise SpaceError(f"autogen: input_shape {list(input_shape)} must be [channels, height, width]")
    tensor = next(iter(model.parameters()), None)
    x = torch.zeros(1, *input_shape, device=None if tensor is None else tensor.device,
                    dtype=None if tensor is None or not tensor.is_floating_point() else tensor.dtype)
    flags = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(x)
    except Exception as exc:
        raise SpaceError(f"autogen: {type(model).__name__} does not run on a {[1, *input_shape]} input: "
                         f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}") from None
    finally:
        for m, flag in flags.items():
            m.training = flag


# -- finding blocks -----------------------------------------------------------------------------

@dataclass
class _Unit:
    conv: fx.Node
    bn: Optional[fx.Node]
    act: Optional[fx.Node]

    @property
    def nodes(self) -> list[fx.Node]:
        return [n for n in (self.conv, self.bn, self.act) if n is not None]

    @property
    def last(self) -> fx.Node:
        return self.nodes[-1]


class _Graph:
    """The traced model's graph with what matching asks of it."""

    def __init__(self, gm: fx.GraphModule, excluded: Sequence[str]):
        self.gm, self.excluded = gm, excluded
        self.calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
        self.attrs = [n.target for n in gm.graph.nodes if n.op == "get_attr"]

    def module(self, node: fx.Node) -> Optional[nn.Module]:
        """The module a node calls, when it may join a block: called once, not excluded, its
        parameters read nowhere else."""
        if node.op != "call_module" or self.calls[node.target] != 1 or _under(node.target, self.excluded) or \
                any(a.startswith(node.target + ".") for a in self.attrs):
            return None
        return self.gm.get_submodule(node.target)

    @staticmethod
    def only_user(node: fx.Node) -> Optional[fx.Node]:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    @staticmethod
    def reads_only(node: fx.Node, source: fx.Node) -> bool:
        return node.args == (source,) and not node.kwargs

    def conv(self, node: fx.Node) -> Optional[nn.Conv2d]:
        m = self.module(node)  # torch's own Conv2d: a subclass may compute something its narrowed copy would not
        if type(m) is not nn.Conv2d or len(node.args) != 1 or node.kwargs or _shape(node.args[0]) is None or \
                len(_shape(node.args[0])) != 4:
            return None
        return m if m.groups == 1 or m.groups == m.in_channels == m.out_channels else None

    def bn(self, node: Optional[fx.Node], source: fx.Node, channels: int) -> bool:
        m = None if node is None else self.module(node)
        return type(m) is nn.BatchNorm2d and m.num_features == channels and self.reads_only(node, source)

    def act(self, node: Optional[fx.Node], source: fx.Node) -> Optional[Callable[[], nn.Module]]:
        """What makes a copy of the activation `node` computes, when it is one on `source` alone."""
        if node is None:
            return None
        if node.op == "call_module":  # may be called elsewhere too (one ReLU for a whole block): it holds no state
            m = self.gm.get_submodule(node.target)
            if isinstance(m, _ACT_MODULES) and not _under(node.target, self.excluded) and self.reads_only(node, source):
                return lambda: copy.deepcopy(m)
            return None
        table = _ACT_FUNCTIONS if node.op == "call_function" else _ACT_METHODS if node.op == "call_method" else {}
        make = table.get(node.target)
        if make is None or node.args != (source,) or set(node.kwargs) - {"inplace"}:
            return None
        return make

    def unit(self, conv: fx.Node) -> Optional[_Unit]:
        m = self.conv(conv)
        if m is None:
            return None
        after = self.only_user(conv)
        bn = after if self.bn(after, conv, m.out_channels) else None
        last = conv if bn is None else bn
        after = self.only_user(last)
        act = after if self.act(after, last) is not None else None
        return _Unit(conv, bn, act)

    def identity_of(self, node: Any) -> Any:
        """`node`, through calls of nn.Identity."""
        while isinstance(node, fx.Node) and node.op == "call_module" and \
                isinstance(self.gm.get_submodule(node.target), nn.Identity):
            node = node.args[0]
        return node


def _shape(node: Any) -> Optional[tuple[int, ...]]:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _find_blocks(gm: fx.GraphModule, excluded: Sequence[str], widths: list[float], kernels: list[int]) -> list["_Block"]:
    """Every maximal chain of units with at least two variants, in graph order."""
    g = _Graph(gm, excluded)
    units = {}
    for node in gm.graph.nodes:
        unit = g.unit(node)
        if unit is not None:
            units[node] = unit
    following: dict[int, _Unit] = {}
    for unit in units.values():
        after = g.only_user(unit.last)
        if after in units and after.args[0] is unit.last:
            following[id(unit)] = units[after]
    preceded = {id(u) for u in following.values()}
    blocks = []
    for unit in units.values():
        if id(unit) in preceded:
            continue
        chain = [unit]
        while id(chain[-1]) in following:
            chain.append(following[id(chain[-1])])
        block = _Block(g, chain)
        if block.variants(widths, kernels):
            blocks.append(block)
    return blocks


# -- a block and its variants -------------------------------------------------------------------

class _Block:
    """A chain of units: its channel groups (which widths are inner and may change), its spatial
    convs (which kernels may change), whether it is a residual branch; its variants."""

    def __init__(self, g: _Graph, chain: list[_Unit]):
        self.g, self.chain = g, chain
        self.input = chain[0].conv.args[0]
        self.convs: list[nn.Conv2d] = [g.gm.get_submodule(u.conv.target) for u in chain]
        # the channel group of each unit's output: a new one after a full conv, the input's after a depthwise one
        self.groups: list[int] = []
        for i, conv in enumerate(self.convs):
            self.groups.append(i if conv.groups == 1 else (self.groups[-1] if i else -1))
        self.inner = sorted({gr for gr in self.groups if gr not in (-1, self.groups[-1])})
        spatial = [c for c in self.convs if max(c.kernel_size) > 1]
        self.kernel = spatial[0].kernel_size[0] if spatial and all(_resizable(c) for c in spatial) and \
            len({c.kernel_size for c in spatial}) == 1 else None
        self.residual = self._residual()
        self.makers: dict[str, Callable[[], nn.Module]] = {}

    @property
    def nodes(self) -> list[fx.Node]:
        return [n for u in self.chain for n in u.nodes]

    def owned_paths(self) -> list[str]:
        """The paths of its convs and BatchNorms (an activation module may be shared with the model)."""
        return [n.target for u in self.chain for n in (u.conv, u.bn) if n is not None]

    def _residual(self) -> bool:
        """Whether the chain's output is added to its own input (identity shortcut, same shape)."""
        last = self.chain[-1].last
        add = self.g.only_user(last)
        if add is None or len(add.args) != 2 or add.kwargs or not (
                (add.op == "call_function" and add.target in _ADDS) or
                (add.op == "call_method" and add.target in ("add", "add_"))):
            return False
        other = add.args[1] if add.args[0] is last else add.args[0]
        return self.g.identity_of(other) is self.input and _shape(last) is not None and \
            _shape(last) == _shape(self.input)

    def variants(self, widths: list[float], kernels: list[int]) -> list[str]:
        """Name the candidates and their makers (original first); the names, when at least two."""
        sizes = [self.kernel] + [k for k in kernels if k != self.kernel] if self.kernel is not None and kernels else [None]
        by_width: dict[tuple[int, ...], float] = {}  # distinct inner widths, by the first multiplier giving them
        for m in widths:
            if m != 0.0:
                by_width.setdefault(tuple(max(1, round(self.convs[gr].out_channels * m)) for gr in self.inner), m)
        for channels, m in by_width.items():
            for k in sizes:
                parts = [f"w{m:g}"] * (len(by_width) > 1 or len(sizes) == 1) + [f"k{k}"] * (len(sizes) > 1)
                self.makers["_".join(parts)] = self._maker(channels, k) if self.makers else self.original
        if 0.0 in widths and self.residual:
            self.makers[SKIP] = Zero
        return list(self.makers) if len(self.makers) > 1 else []

    def original(self) -> nn.Sequential:
        """The source's layers themselves (copies), as one module: exactly what the source computes."""
        return nn.Sequential(*(self._layer(n) for n in self.nodes)).train(self.convs[0].training)

    def _layer(self, node: fx.Node) -> nn.Module:
        if node.op == "call_module":
            return copy.deepcopy(self.g.gm.get_submodule(node.target))
        return self.g.act(node, node.args[0])()

    def _maker(self, channels: tuple[int, ...], kernel: Optional[int]) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            keep = {gr: _strongest(self.convs[gr].weight, c) for gr, c in zip(self.inner, channels)}
            layers: list[nn.Module] = []
            for i, unit in enumerate(self.chain):
                c_in = keep.get(self.groups[i - 1] if i else -1)
                c_out = keep.get(self.groups[i])
                layers.append(_conv_variant(self.convs[i], c_in, c_out, kernel))
                if unit.bn is not None:
                    layers.append(_bn_variant(self.g.gm.get_submodule(unit.bn.target), c_out))
                if unit.act is not None:
                    layers.append(self._layer(unit.act))
            return nn.Sequential(*layers).train(self.convs[0].training)

        return make

    def replace(self, gm: fx.GraphModule, label: str) -> None:
        """Put the block's choice in its first conv's place and route the graph through it."""
        target = self.chain[0].conv.target
        parent, _, attr = target.rpartition(".")
        choice = LayerChoice.of_factories(self.makers, label=label)
        setattr(gm.get_submodule(parent) if parent else gm, attr, choice)
        graph = gm.graph
        with graph.inserting_before(self.chain[0].conv):
            node = graph.call_module(target, self.chain[0].conv.args)  # its input now: a block before may have replaced it
        self.chain[-1].last.replace_all_uses_with(node)
        for old in reversed(self.nodes):
            graph.erase_node(old)


def _resizable(conv: nn.Conv2d) -> bool:
    """A conv whose kernel can change without changing its output's shape."""
    k = conv.kernel_size
    return k[0] == k[1] and k[0] % 2 == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros" and \
        (conv.padding == (k[0] // 2, k[0] // 2) or (conv.padding == "same" and conv.stride == (1, 1)))


def _strongest(weight: Tensor, n: int) -> Optional[Tensor]:
    """The `n` output channels of largest filter L1 norm, in their order (None: all of them)."""
    if n >= weight.shape[0]:
        return None
    norms = weight.detach().abs().flatten(1).sum(1)
    return torch.argsort(norms, descending=True, stable=True)[:n].sort().values


def _conv_variant(conv: nn.Conv2d, c_in: Optional[Tensor], c_out: Optional[Tensor], kernel: Optional[int]) -> nn.Conv2d:
    """`conv` on the kept channels (None: all), at `kernel` when it is spatial and resizable."""
    depthwise = conv.groups > 1
    weight = conv.weight.detach()
    if c_out is not None:
        weight = weight[c_out]
    if c_in is not None and not depthwise:
        weight = weight[:, c_in]
    size = conv.kernel_size
    padding: Any = conv.padding
    if kernel is not None and max(size) > 1 and kernel != size[0]:
        weight = _resized(weight, kernel)
        size, padding = (kernel, kernel), kernel // 2
    out_channels = weight.shape[0]
    new = nn.Conv2d(out_channels if depthwise else weight.shape[1], out_channels, size, conv.stride, padding,
                    conv.dilation, out_channels if depthwise else 1, conv.bias is not None, conv.padding_mode,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach() if c_out is None else conv.bias.detach()[c_out])
    return new


def _resized(weight: Tensor, kernel: int) -> Tensor:
    """A square odd kernel embedded at the centre of a larger one (zeros around it), or cropped to
    its centre for a smaller one."""
    k = weight.shape[-1]
    if kernel > k:
        pad = (kernel - k) // 2
        return F.pad(weight, (pad, pad, pad, pad))
    cut = (k - kernel) // 2
    return weight[..., cut:cut + kernel, cut:cut + kernel]


def _bn_variant(bn: nn.BatchNorm2d, keep: Optional[Tensor]) -> nn.BatchNorm2d:
    if keep is None:
        return copy.deepcopy(bn)
    new = nn.BatchNorm2d(len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                         device=keep.device if bn.weight is None else bn.weight.device,
                         dtype=None if bn.weight is None else bn.weight.dtype)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            value = getattr(bn, name)
            if value is not None:
                getattr(new, name).copy_(value.detach()[keep.to(value.device)])
        if bn.num_batches_tracked is not None:
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _labels(blocks: list[_Block]) -> list[str]:
    """Each block's label: the innermost module holding its convs and BatchNorms, unless that module holds
    another block too or is the model itself; then its first conv's path."""
    def parent(block: _Block) -> str:
        parts = [p.split(".") for p in block.owned_paths()]
        common = []
        for names in zip(*parts):
            if len(set(names)) != 1:
                break
            common.append(names[0])
        if len(parts) == 1:  # a lone conv: its parent module
            common = common[:-1]
        return ".".join(common)

    parents = [parent(b) for b in blocks]
    shared = Counter(parents)
    return [p if p and shared[p] == 1 else b.chain[0].conv.target for p, b in zip(parents, blocks)]
