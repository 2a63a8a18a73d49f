"""The op registry: an `OpDesc.name` -> a factory that builds the module (timm-style).

Built-in ops register when their module is imported (`archnas.ops` imports them all); a user op
calls `register_op(name, factory)` once, at import time, before any model is built. The table is
the one piece of module-level state the project allows: filled at import, never changed later.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn

from archnas.descs import genotypes
from archnas.descs.model_desc import ConvMacroParams, OpDesc
from archnas.errors import DescError

OpFactory = Callable[[OpDesc, bool], "Op"]  # (op desc, affine BatchNorm) -> module

_FACTORIES: dict[str, OpFactory] = {}
_REQUIRED = object()


def register_op(name: str, factory: OpFactory) -> None:
    if name in _FACTORIES:
        raise ValueError(f"op {name!r} is registered twice")
    _FACTORIES[name] = factory


def registered_ops() -> list[str]:
    return sorted(_FACTORIES)


def unknown_op_message(name: str) -> str:
    return genotypes.unknown_op_message(name, registered_ops())


def check_op_name(name: str, where: str, error: type[Exception] = DescError) -> None:
    """Raise `error` (a DescError, or a ConfigError for names from a config) for unknown names."""
    if name not in _FACTORIES:
        raise error(f"{where}: {unknown_op_message(name)}")


def op_param(desc: OpDesc, key: str, kind: type, default: Any = _REQUIRED) -> Any:
    """A param of `desc`, type-checked, so a bad desc fails with the op's name instead of deep in torch."""
    if key not in desc.params:
        if default is _REQUIRED:
            raise DescError(f"op {desc.name!r}: missing param {key!r}")
        return default
    value = desc.params[key]
    bad_bool = kind is int and isinstance(value, bool)
    if bad_bool or not isinstance(value, kind):
        raise DescError(f"op {desc.name!r}: param {key!r} must be {kind.__name__}, got {value!r}")
    return value


def op_conv(desc: OpDesc, same_channels: bool = False) -> ConvMacroParams:
    conv = op_param(desc, "conv", ConvMacroParams)
    if same_channels and conv.ch_in != conv.ch_out:
        raise DescError(f"op {desc.name!r} cannot change channels, got ch_in={conv.ch_in} ch_out={conv.ch_out}")
    return conv


def op_stride(desc: OpDesc) -> int:
    stride = op_param(desc, "stride", int, 1)
    if stride not in (1, 2):
        raise DescError(f"op {desc.name!r}: stride must be 1 or 2, got {stride}")
    return stride


class Op(nn.Module):
    """Base of every registered op: it keeps its desc, so it can describe itself again.

    `droppable`: whether drop-path applies to its output in an eval cell (DARTS skips identities).
    `pooling`: whether a mixed op follows it with a non-affine BatchNorm, as DARTS's search does,
    because pooled features are not normalized like the conv candidates they are summed with.
    `takes_list`: its forward takes one list of `in_len` tensors (cell post-ops) instead of
    positional tensors.
    """

    droppable: ClassVar[bool] = True
    pooling: ClassVar[bool] = False
    takes_list: ClassVar[bool] = False

    def __init__(self, desc: OpDesc):
        super().__init__()
        self.desc = desc

    @staticmethod
    def create(desc: OpDesc, affine: bool) -> "Op":
        """Build the registered op for `desc`, loading the weights it carries, if any."""
        check_op_name(desc.name, "op desc")
        op = _FACTORIES[desc.name](desc, affine)
        if desc.trainables is not None:
            try:
                op.load_state_dict(desc.trainables)
            except RuntimeError as exc:
                raise DescError(f"op {desc.name!r}: its trainables do not fit the op: {exc}") from None
        return op

    def finalize(self) -> OpDesc:
        """This op's desc carrying its current weights as trainables (on CPU)."""
        out = self.desc.clone(clear_trainables=True)
        out.trainables = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        return out


def output_shape(desc: OpDesc, in_shapes: list[list[int]]) -> list[int]:
    """The `[C, H, W]` an op produces from inputs of these shapes, by a forward on the meta device.

    Builders use it for stems, post-ops and heads, so a registered user op needs no shape rule.
    """
    with torch.device("meta"):
        op = Op.create(desc.clone(clear_trainables=True), affine=True)
        xs = [torch.empty(1, *s) for s in in_shapes]
        try:
            y = op(xs) if op.takes_list else op(*xs)
        except RuntimeError as exc:
            shapes = " and ".join(str(list(s)) for s in in_shapes)
            raise DescError(f"op {desc.name!r} cannot take input of shape {shapes}: {exc}") from None
    return list(y.shape[1:])
