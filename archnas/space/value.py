"""ValueChoice and the expressions built from it (`+ - * // /`, `round`, `max`, `min`, comparisons,
`condition`), evaluated lazily once the labelled choices they depend on are decided.

    width = ValueChoice([16, 32, 64], label="width")
    self.conv = archnas.space.nn.Conv2d(3, width, kernel_size=3)
    self.head = archnas.space.nn.Linear(width * 2, 10)    # an expression of the same choice

An expression knows the leaf choices it depends on (`leaves`, one per label) and computes its
value from a `{label: value}` mapping (`evaluate`); `all_options` lists every value it can take.
Equality is identity (choices are modules and must stay hashable), so `condition` takes a
comparison made with `<`, `<=`, `>` or `>=`.
"""

from __future__ import annotations

import itertools
import math
import operator
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from archnas.errors import SpaceError
from archnas.space.choice import Choice
from archnas.space.fixed import KEEP, Resolvable, current_fixed_arch
from archnas.space.store import ChoiceSpec


class ValueExpr:
    """A value that depends on labelled choices."""

    def leaves(self) -> list["ValueChoice"]:
        raise NotImplementedError

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def all_options(self) -> list[Any]:
        """Every value the expression takes over the choices it depends on, in first-seen order."""
        leaves = self.leaves()
        seen: list[Any] = []
        for combo in itertools.product(*(leaf.candidates for leaf in leaves)):
            value = self.evaluate({leaf.label_key: v for leaf, v in zip(leaves, combo)})
            if value not in seen:
                seen.append(value)
        return seen

    # -- arithmetic: each operator makes a new expression node --------------------------------

    def _op(self, fn: Callable[..., Any], *others: Any, symbol: str) -> "ValueExpr":
        return Compose(fn, (self, *others), symbol)

    def __add__(self, o): return self._op(operator.add, o, symbol="+")  # noqa: E704
    def __radd__(self, o): return Compose(operator.add, (o, self), "+")  # noqa: E704
    def __sub__(self, o): return self._op(operator.sub, o, symbol="-")  # noqa: E704
    def __rsub__(self, o): return Compose(operator.sub, (o, self), "-")  # noqa: E704
    def __mul__(self, o): return self._op(operator.mul, o, symbol="*")  # noqa: E704
    def __rmul__(self, o): return Compose(operator.mul, (o, self), "*")  # noqa: E704
    def __floordiv__(self, o): return self._op(operator.floordiv, o, symbol="//")  # noqa: E704
    def __rfloordiv__(self, o): return Compose(operator.floordiv, (o, self), "//")  # noqa: E704
    def __truediv__(self, o): return self._op(operator.truediv, o, symbol="/")  # noqa: E704
    def __rtruediv__(self, o): return Compose(operator.truediv, (o, self), "/")  # noqa: E704
    def __neg__(self): return Compose(operator.neg, (self,), "-")  # noqa: E704
    def __lt__(self, o): return self._op(operator.lt, o, symbol="<")  # noqa: E704
    def __le__(self, o): return self._op(operator.le, o, symbol="<=")  # noqa: E704
    def __gt__(self, o): return self._op(operator.gt, o, symbol=">")  # noqa: E704
    def __ge__(self, o): return self._op(operator.ge, o, symbol=">=")  # noqa: E704

    def __round__(self, ndigits: Optional[int] = None) -> "ValueExpr":
        return Compose(lambda v: round(v, ndigits), (self,), "round")

    def __bool__(self) -> bool:
        raise SpaceError("a ValueChoice has no value until the architecture is chosen: use it as a layer argument, "
                         "or ValueChoice.condition(...) instead of if/and/or")

    @staticmethod
    def max(arg0: Any, *args: Any) -> Any:
        items = list(arg0) if not args and isinstance(arg0, Iterable) and not isinstance(arg0, ValueExpr) else [arg0, *args]
        return Compose(lambda *v: max(v), tuple(items), "max")

    @staticmethod
    def min(arg0: Any, *args: Any) -> Any:
        items = list(arg0) if not args and isinstance(arg0, Iterable) and not isinstance(arg0, ValueExpr) else [arg0, *args]
        return Compose(lambda *v: min(v), tuple(items), "min")

    @staticmethod
    def condition(pred: Any, true: Any, false: Any) -> Any:
        return Compose(lambda p, t, f: t if p else f, (pred, true, false), "condition")

    @staticmethod
    def to_int(obj: Any) -> Any:
        return Compose(int, (obj,), "int")

    @staticmethod
    def to_float(obj: Any) -> Any:
        return Compose(float, (obj,), "float")


class Compose(ValueExpr):
    """`fn(*args)`, where any arg may be an expression."""

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any], symbol: str):
        self.fn, self.args, self.symbol = fn, tuple(args), symbol

    def leaves(self) -> list["ValueChoice"]:
        out: dict[int, ValueChoice] = {}
        for arg in self.args:
            if isinstance(arg, ValueExpr):
                for leaf in arg.leaves():
                    out.setdefault(id(leaf), leaf)
        return list(out.values())

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        return self.fn(*(evaluate(a, values) for a in self.args))

    def __repr__(self) -> str:
        return f"{self.symbol}({', '.join(map(repr, self.args))})"


def evaluate(value: Any, values: Mapping[str, Any]) -> Any:
    """`value` itself, or the expression's value under `values`."""
    return value.evaluate(values) if isinstance(value, ValueExpr) else value


def leaves_of(*values: Any) -> list["ValueChoice"]:
    """The distinct leaf choices of any expressions among `values`."""
    out: dict[int, ValueChoice] = {}
    for value in values:
        if isinstance(value, ValueExpr):
            for leaf in value.leaves():
                out.setdefault(id(leaf), leaf)
    return list(out.values())


class ValueChoice(Resolvable, ValueExpr, Choice):
    """One value out of `candidates`, as an argument of `archnas.space.nn` layers, `Repeat`'s depth,
    or called in a forward (`self.rate()` gives the chosen value).

    Under `fixed_arch` the constructor returns the chosen value itself.
    """

    kind = "value"

    @classmethod
    def _instead(cls, candidates: Sequence[Any], *, prior: Optional[Sequence[float]] = None, label: Optional[str] = None):
        fixed = current_fixed_arch()
        if fixed is not None:
            return fixed.choose(label, "ValueChoice", tuple(candidates))
        return KEEP

    def __init__(self, candidates: Sequence[Any], *, prior: Optional[Sequence[float]] = None, label: Optional[str] = None):
        candidates = list(candidates)
        if not candidates:
            raise SpaceError(f"ValueChoice {label or ''}: needs at least one candidate value")
        if len({repr(c) for c in candidates}) != len(candidates):
            raise SpaceError(f"ValueChoice {label or ''}: candidates {candidates} repeat a value")
        Choice.__init__(self, label, prior, len(candidates))
        self.candidates = candidates

    def spec(self) -> ChoiceSpec:
        return ChoiceSpec(self.label_key, tuple(str(c) for c in self.candidates), kind="value",
                          values=tuple(self.candidates), prior=self.prior)

    def leaves(self) -> list["ValueChoice"]:
        return [self]

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        return values[self.label_key]

    def forward(self) -> Any:
        """The value the bound architecture chose (the first candidate outside a search-space model)."""
        chosen = self.chosen_indices()
        return self.candidates[chosen[0] if chosen else 0]

    def __repr__(self) -> str:
        return f"ValueChoice({self.candidates}, label={self.label!r})"

    # hashable as a module (ValueExpr's comparisons build expressions, so equality stays identity)
    __hash__ = Choice.__hash__


def product_weights(leaves: Sequence["ValueChoice"], weights: Mapping[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    """Every combination of the leaves' values with its weight (the product of the leaves' weights),
    for layers that mix their candidates when the weights are soft."""
    out = []
    for combo in itertools.product(*(range(len(leaf.candidates)) for leaf in leaves)):
        values = {leaf.label_key: leaf.candidates[i] for leaf, i in zip(leaves, combo)}
        weight = math.prod((weights[leaf.label_key][i] for leaf, i in zip(leaves, combo)), start=1.0)
        out.append((values, weight))
    return out
