"""Operations and their registry. Importing this package registers every built-in op."""

from archnas.ops import cell_post, heads, mixed_op, primitives, stems  # noqa: F401  (registration)
from archnas.ops.drop_path import DropPath, drop_path
from archnas.ops.mixed_op import MixedOp
from archnas.ops.registry import Op, OpFactory, check_op_name, op_conv, op_param, op_stride, register_op, registered_ops

__all__ = [
    "DropPath", "MixedOp", "Op", "OpFactory", "check_op_name", "drop_path", "op_conv", "op_param", "op_stride",
    "register_op", "registered_ops",
]
