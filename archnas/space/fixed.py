"""`fixed_arch(arch)`: build a model at one architecture, as a plain network, from scratch.

    with fixed_arch({"cell__0_1": "conv_3x3", ...}):
        net = NasBench201()          # no choice module is made: each returns its chosen part

Inside the block every choice constructor returns what the architecture chooses instead of a
choice (a LayerChoice its chosen candidate, a ValueChoice its value as a `FixedValue`, a Repeat
the chosen number of blocks, ...), so the network has exactly the modules, parameters and state-dict keys that
`freeze` of a trained search-space model gives at the same architecture. Choices need labels
here: an unlabelled choice (a SearchVariantsContainer takes none) only gets its label (its module
path) once a SearchSpaceModel sees the whole model, which a network built from scratch never
does; `archnas.space.build_network` then builds the whole model and freezes it at the architecture.

The architecture in force is context-local state (a ContextVar), the one way a constructor
called from a user's own `__init__` can learn it; it is set only inside the `with` block.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional

from archnas.errors import SpaceError
from archnas.ops.frozen import FixedValue


class UnlabelledChoice(SpaceError):
    """A choice without a label met under `fixed_arch`: the network must be built whole and frozen."""


@dataclass
class FixedArch:
    arch: dict[str, Any]
    used: set[str] = field(default_factory=set)

    def choose(self, label: Optional[str], kind: str, choices: tuple) -> Any:
        """The architecture's value for `label`, checked against the choices it may take."""
        if label is None:
            raise UnlabelledChoice(f"fixed_arch: a {kind} without a label cannot be resolved while the model is "
                                   "built (its label is its module path, known once the whole model exists); build "
                                   "the network with archnas.space.build_network, which freezes the whole model")
        if label not in self.arch:
            raise SpaceError(f"fixed_arch: the architecture has no value for {label!r}; "
                             f"it sets {', '.join(sorted(self.arch)) or 'nothing'}")
        value = self.arch[label]
        if not any(_same(value, c) for c in choices):
            raise SpaceError(f"fixed_arch: {label!r} is {value!r}, not one of {', '.join(map(repr, choices))}")
        self.used.add(label)
        return next(c for c in choices if _same(value, c))


def _same(value: Any, choice: Any) -> bool:
    if isinstance(choice, (list, tuple)) or isinstance(value, (list, tuple)):
        return isinstance(value, (list, tuple)) and isinstance(choice, (list, tuple)) and list(value) == list(choice)
    return value == choice or str(value) == str(choice)


KEEP = object()  # what `_instead` returns when the constructor should build the module itself


def value_of(value: Any) -> Any:
    """The value a `FixedValue` (a ValueChoice made under `fixed_arch`) stands for; anything else as is."""
    return value.value if isinstance(value, FixedValue) else value


class Resolvable:
    """A module whose constructor may return something else: the chosen part under `fixed_arch`,
    or a plain torch layer when no argument is a choice. Subclasses say what in `_instead` (called
    with the constructor's arguments, a `FixedValue` among them replaced by its value; `KEEP` to
    build the module). Copying and unpickling call `__new__` without arguments, and always get the
    module itself."""

    def __new__(cls, *args: Any, **kwargs: Any):
        if args or kwargs:
            args = tuple(value_of(a) for a in args)
            kwargs = {k: value_of(v) for k, v in kwargs.items()}
            instead = cls._instead(*args, **kwargs)
            if instead is not KEEP:
                return instead
        return super().__new__(cls)

    @classmethod
    def _instead(cls, *args: Any, **kwargs: Any) -> Any:
        return KEEP


_CURRENT: ContextVar[Optional[FixedArch]] = ContextVar("archnas_fixed_arch", default=None)


def current_fixed_arch() -> Optional[FixedArch]:
    """The architecture the choices being constructed must take, or None (build a search space)."""
    return _CURRENT.get()


@contextlib.contextmanager
def fixed_arch(arch: Mapping[str, Any]) -> Iterator[FixedArch]:
    """Build models at `arch` (a `{label: choice}` mapping) in the block. Labels the model never
    asks for are left alone: a choice inside blocks a Repeat leaves out is never built. Check a
    mapping against the whole space with `SearchSpaceModel.check_arch` (unknown labels, bad values)."""
    state = FixedArch(dict(arch))
    token = _CURRENT.set(state)
    try:
        yield state
    finally:
        _CURRENT.reset(token)
