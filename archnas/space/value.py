"""ValueChoice and the expressions built from it (every arithmetic, bitwise and comparison operator,
`abs`, `round`, `max`, `min`, `condition`, `to_int`, `to_float`), evaluated lazily once the labelled
choices they depend on are decided.

    width = ValueChoice([16, 32, 64], label="width")
    self.conv = archnas.space.nn.Conv2d(3, width, kernel_size=3)
    self.head = archnas.space.nn.Linear(width * 2, 10)    # an expression of the same choice

An expression knows the leaf choices it depends on (`leaves`, one per label) and computes its
value from a `{label: value}` mapping (`evaluate`); `all_options` lists every value it can take.
`==` and `!=` build expressions too (`ValueChoice.condition(k == 3, 10, 20)`), as in NNI, so code
that holds choices compares them with `is` or by label; choices stay hashable by identity.

A ValueChoice can also be read in a forward, NNI's pattern for functional calls:

    self.p = ValueChoice([0.1, 0.5], label="p")     # in __init__
    return F.dropout(x, self.p())                    # in forward: the value of this forward's architecture

Under `fixed_arch` the constructor returns a `FixedValue` (archnas.ops.frozen), and `freeze`
replaces the choice with one: called, it gives the chosen value; used in the constructor
(arithmetic, comparisons, a layer's argument) it stands for that value.
"""

from __future__ import annotations

import itertools
import math
import operator
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from archnas.errors import SpaceError
from archnas.ops.frozen import FixedValue
from archnas.space.choice import Choice, choice_index
from archnas.space.fixed import KEEP, Resolvable, current_fixed_arch, value_of
from archnas.space.store import ChoiceSpec


def _binary(fn: Callable[[Any, Any], Any], symbol: str) -> tuple[Callable, Callable]:
    """The operator `fn` as a method with the expression on the left, and its reflected form."""
    def left(self: "ValueExpr", other: Any) -> "ValueExpr":
        return Compose(fn, (self, other), symbol)

    def right(self: "ValueExpr", other: Any) -> "ValueExpr":
        return Compose(fn, (other, self), symbol)

    return left, right


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

    # -- operators: each makes a new expression node (NNI overloads them all) ----------------

    __add__, __radd__ = _binary(operator.add, "+")
    __sub__, __rsub__ = _binary(operator.sub, "-")
    __mul__, __rmul__ = _binary(operator.mul, "*")
    __truediv__, __rtruediv__ = _binary(operator.truediv, "/")
    __floordiv__, __rfloordiv__ = _binary(operator.floordiv, "//")
    __mod__, __rmod__ = _binary(operator.mod, "%")
    __pow__, __rpow__ = _binary(operator.pow, "**")
    __lshift__, __rlshift__ = _binary(operator.lshift, "<<")
    __rshift__, __rrshift__ = _binary(operator.rshift, ">>")
    __and__, __rand__ = _binary(operator.and_, "&")
    __or__, __ror__ = _binary(operator.or_, "|")
    __xor__, __rxor__ = _binary(operator.xor, "^")
    # comparisons: `a < b` is `b > a` when Python reflects one, so each side builds the same node
    __lt__, __gt__ = _binary(operator.lt, "<")[0], _binary(operator.gt, ">")[0]
    __le__, __ge__ = _binary(operator.le, "<=")[0], _binary(operator.ge, ">=")[0]
    __eq__, __ne__ = _binary(operator.eq, "==")[0], _binary(operator.ne, "!=")[0]
    __hash__ = object.__hash__  # hashable by identity, as modules are, although == builds an expression

    def __neg__(self) -> "ValueExpr":
        return Compose(operator.neg, (self,), "-")

    def __pos__(self) -> "ValueExpr":
        return Compose(operator.pos, (self,), "+")

    def __invert__(self) -> "ValueExpr":
        return Compose(operator.invert, (self,), "~")

    def __abs__(self) -> "ValueExpr":
        return Compose(abs, (self,), "abs")

    def __round__(self, ndigits: Optional[int] = None) -> "ValueExpr":
        return Compose(lambda v: round(v, ndigits), (self,), "round")

    def __floor__(self) -> "ValueExpr":
        return Compose(math.floor, (self,), "floor")

    def __ceil__(self) -> "ValueExpr":
        return Compose(math.ceil, (self,), "ceil")

    def __trunc__(self) -> "ValueExpr":
        return Compose(math.trunc, (self,), "trunc")

    def __bool__(self) -> bool:
        raise SpaceError("a ValueChoice has no value until the architecture is chosen: use it as a layer argument, "
                         "or ValueChoice.condition(...) instead of if/and/or")

    # -- functions: lazy over expressions, evaluated at once over plain values (as NNI's) -------

    @staticmethod
    def max(arg0: Any, *args: Any) -> Any:
        items = list(arg0) if not args and isinstance(arg0, Iterable) and not isinstance(arg0, ValueExpr) else [arg0, *args]
        return compose(lambda *v: max(v), items, "max")

    @staticmethod
    def min(arg0: Any, *args: Any) -> Any:
        items = list(arg0) if not args and isinstance(arg0, Iterable) and not isinstance(arg0, ValueExpr) else [arg0, *args]
        return compose(lambda *v: min(v), items, "min")

    @staticmethod
    def condition(pred: Any, true: Any, false: Any) -> Any:
        return compose(lambda p, t, f: t if p else f, (pred, true, false), "condition")

    @staticmethod
    def to_int(obj: Any) -> Any:
        return compose(int, (obj,), "int")

    @staticmethod
    def to_float(obj: Any) -> Any:
        return compose(float, (obj,), "float")


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


def compose(fn: Callable[..., Any], args: Sequence[Any], symbol: str) -> Any:
    """`fn(*args)` as an expression when an argument is one, else its value now (a value chosen
    under `fixed_arch` counts as its value)."""
    if any(isinstance(a, ValueExpr) for a in args):
        return Compose(fn, args, symbol)
    return fn(*(value_of(a) for a in args))


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

    Under `fixed_arch` the constructor returns the chosen value as a `FixedValue`.
    """

    kind = "value"

    @classmethod
    def _instead(cls, candidates: Sequence[Any], *, prior: Optional[Sequence[float]] = None, label: Optional[str] = None):
        fixed = current_fixed_arch()
        if fixed is not None:
            return FixedValue(fixed.choose(label, "ValueChoice", tuple(candidates)))
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
        """The value this forward's architecture chose (a fixed one, or a one-hot sample); the first
        candidate outside a search-space model, as NNI's. Soft weights (DARTS) choose no value, and
        a value read in a forward cannot be mixed: that is an error, not a silent first candidate."""
        w = self.weights()
        if w is None:
            return self.candidates[0]
        if w.chosen is None:
            raise SpaceError(f"ValueChoice {self.label_key!r} is read in forward, which needs one value per forward, "
                             "but the strategy mixes its candidates by soft weights: search this space with a "
                             "sampling strategy (spos, gdas), or pass the choice to an archnas.space.nn layer")
        return self.candidates[w.chosen[0]]

    def frozen(self, arch: Mapping[str, Any]) -> FixedValue:
        """What `freeze` leaves of a choice read in forward: its value, still called the same way."""
        return FixedValue(self.candidates[choice_index(self.spec(), arch[self.label_key])])

    def __repr__(self) -> str:
        return f"ValueChoice({self.candidates}, label={self.label!r})"

    __hash__ = Choice.__hash__  # by identity, as a module (ValueExpr's == builds an expression)


def product_weights(leaves: Sequence["ValueChoice"], weights: Mapping[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    """Every combination of the leaves' values with its weight (the product of the leaves' weights),
    for layers that mix their candidates when the weights are soft."""
    out = []
    for combo in itertools.product(*(range(len(leaf.candidates)) for leaf in leaves)):
        values = {leaf.label_key: leaf.candidates[i] for leaf, i in zip(leaves, combo)}
        weight = math.prod((weights[leaf.label_key][i] for leaf, i in zip(leaves, combo)), start=1.0)
        out.append((values, weight))
    return out
