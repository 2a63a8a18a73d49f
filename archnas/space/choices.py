"""LayerChoice, InputChoice, SearchVariantsContainer (ENOT) and Repeat.

Each is an ordinary module inside a user's model. In a `SearchSpaceModel` it reads its label's
weights at every forward (see `archnas.space.choice`); under `fixed_arch` its constructor returns
the chosen part directly; `freeze` replaces it with the chosen part (`frozen(value)`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.ops.frozen import REDUCTIONS, ChosenInputs, reduce_inputs
from archnas.space.choice import Choice, choice_index, default_index, gated_output, options, sampled_output, scaled
from archnas.space.fixed import KEEP, Resolvable, current_fixed_arch
from archnas.space.store import ArchWeights, ChoiceSpec
from archnas.space.value import ValueChoice

Candidates = Union[Sequence[nn.Module], Mapping[str, nn.Module]]


def _named(candidates: Candidates, what: str) -> "OrderedDict[Any, nn.Module]":
    """Candidates by name: a mapping's keys, or a list's indices (what an architecture records)."""
    items = list(candidates.items()) if isinstance(candidates, Mapping) else list(enumerate(candidates))
    if not items:
        raise SpaceError(f"{what}: needs at least one candidate")
    bad = [name for name, m in items if not isinstance(m, nn.Module)]
    if bad:
        raise SpaceError(f"{what}: candidates {bad} are not torch modules")
    return OrderedDict(items)


class LayerChoice(Resolvable, Choice):
    """One of `candidates` (a list, or a mapping of named modules); nesting is allowed.

    `len()`, iteration (the candidate modules), indexing by position or name, `names`; a
    candidate can be replaced or deleted (`layer[name] = ...`, `del layer[name]`), not added.
    """

    @classmethod
    def _instead(cls, candidates: Candidates, *, prior: Optional[Sequence[float]] = None, label: Optional[str] = None):
        fixed = current_fixed_arch()
        if fixed is not None:
            named = _named(candidates, f"LayerChoice {label or ''}")
            return named[fixed.choose(label, "LayerChoice", tuple(named))]
        return KEEP

    def __init__(self, candidates: Candidates, *, prior: Optional[Sequence[float]] = None, label: Optional[str] = None):
        named = _named(candidates, f"LayerChoice {label or ''}")
        super().__init__(label, prior, len(named))
        self.names: list[Any] = list(named)
        self.candidates = nn.ModuleList(named.values())

    @classmethod
    def of_factories(cls, factories: Mapping[str, Callable[[], nn.Module]], *, prior: Optional[Sequence[float]] = None,
                     label: Optional[str] = None) -> nn.Module:
        """The LayerChoice of the modules `factories` make, by name; under `fixed_arch` only the
        chosen one is made (it is what the constructor would return), so a network of one
        architecture is built without the cost of building every candidate of a large space."""
        fixed = current_fixed_arch()
        if fixed is not None:
            if not factories:
                raise SpaceError(f"LayerChoice {label or ''}: needs at least one candidate")
            return factories[fixed.choose(label, "LayerChoice", tuple(factories))]()
        return cls(OrderedDict((name, make()) for name, make in factories.items()), prior=prior, label=label)

    def spec(self) -> ChoiceSpec:
        return ChoiceSpec(self.label_key, tuple(str(n) for n in self.names), values=tuple(self.names), prior=self.prior)

    def __len__(self) -> int:
        return len(self.candidates)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.candidates)

    def _position(self, key: Any) -> int:
        if isinstance(key, int) and not isinstance(key, bool) and key not in self.names:
            return range(len(self.names))[key]
        if key not in self.names:
            raise KeyError(f"LayerChoice {self.label_key!r} has no candidate {key!r}; its names: {self.names}")
        return self.names.index(key)

    def __getitem__(self, key: Any) -> nn.Module:
        return self.candidates[self._position(key)]

    def __setitem__(self, key: Any, module: nn.Module) -> None:
        self.candidates[self._position(key)] = module

    def __delitem__(self, key: Any) -> None:
        i = self._position(key)
        if len(self.names) == 1:
            raise SpaceError(f"LayerChoice {self.label_key!r}: cannot delete its only candidate")
        del self.candidates[i]
        del self.names[i]

    def default_index(self) -> int:
        return 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        w = self.weights()
        if w is None:
            return self.candidates[self.default_index()](*args, **kwargs)
        if w.chosen is not None:
            k = w.chosen[0]
            if w.rerun and w.probs.requires_grad:
                return gated_output(self.candidates[k](*args, **kwargs), w.probs, k,
                                    lambda j: self.candidates[j](*args, **kwargs))
            return sampled_output(self.candidates[k](*args, **kwargs), w.probs, k)
        out = None
        for k, candidate in enumerate(self.candidates):
            y = w.probs[k] * candidate(*args, **kwargs)
            out = y if out is None else out + y
        return out

    def reachable(self, arch: Mapping[str, Any]) -> list[nn.Module]:
        """The submodules a forward at `arch` runs: the chosen candidate; choices inside the
        others need no value in `arch`."""
        return [self.candidates[choice_index(self.spec(), arch[self.label_key])]]

    def frozen(self, arch: Mapping[str, Any]) -> nn.Module:
        """The chosen candidate (what `freeze` puts in this module's place)."""
        return self.reachable(arch)[0]


class SearchVariantsContainer(LayerChoice):
    """ENOT's container of search variants: one of them is chosen (by index); a container inside
    a container is an error. Before the model is wrapped in a SearchSpaceModel its forward runs
    `default_operation_index`, and without one it refuses to run, as ENOT does."""

    @classmethod
    def _instead(cls, search_variants: Sequence[nn.Module], default_operation_index: Optional[int] = None):
        return super()._instead(list(search_variants))

    def __init__(self, search_variants: Sequence[nn.Module], default_operation_index: Optional[int] = None):
        super().__init__(list(search_variants))
        if default_operation_index is not None and not 0 <= default_operation_index < len(self.names):
            raise SpaceError(f"SearchVariantsContainer: default_operation_index {default_operation_index} is not in "
                             f"[0, {len(self.names)})")
        self.default_operation_index = default_operation_index

    @property
    def search_variants(self) -> nn.ModuleList:
        return self.candidates

    def default_index(self) -> int:
        if self.default_operation_index is None:
            raise SpaceError("SearchVariantsContainer called before its model was wrapped in a SearchSpaceModel and "
                             "without default_operation_index")
        return self.default_operation_index


class InputChoice(Resolvable, Choice):
    """`n_chosen` of `n_candidates` inputs (its forward takes the list of candidate tensors),
    combined by `reduction`: sum, mean, concat (dim 1) or none (the list). `n_chosen=None` (NNI:
    any number) picks a non-empty subset; an architecture records a list of input indices then,
    as for n_chosen > 1.

    How strategies search it: a one-hot sample (GDAS's Gumbel top-k, SPOS's and random search's
    draws without replacement) reads its chosen inputs, each times its weight so the gradient
    reaches the architecture parameters, and reduces them as the frozen network does. Soft weights
    (DARTS) mix all inputs by softmax(alpha) (times n_chosen for a sum of several, the scale of
    the sum it stands for; for n_chosen None as NNI's differentiable input choice does, unscaled),
    which only sum and mean can do. Not wrapped yet, it reads the first n_chosen inputs (all of them
    for None)."""

    kind = "input"

    @classmethod
    def _instead(cls, n_candidates: int, n_chosen: Optional[int] = 1, reduction: str = "sum", *,
                 prior: Optional[Sequence[float]] = None, label: Optional[str] = None):
        fixed = current_fixed_arch()
        if fixed is not None:
            spec = _input_spec(label or "", n_candidates, n_chosen, reduction, prior)
            value = fixed.choose(label, "InputChoice", tuple(options(spec)))
            return ChosenInputs(_as_list(choice_index(spec, value)), reduction)
        return KEEP

    def __init__(self, n_candidates: int, n_chosen: Optional[int] = 1, reduction: str = "sum", *,
                 prior: Optional[Sequence[float]] = None, label: Optional[str] = None):
        _input_spec(label or "", n_candidates, n_chosen, reduction, prior)
        super().__init__(label, prior, n_candidates)
        self.n_candidates, self.n_chosen, self.reduction = n_candidates, n_chosen, reduction

    def spec(self) -> ChoiceSpec:
        return _input_spec(self.label_key, self.n_candidates, self.n_chosen, self.reduction, self.prior)

    def selected(self) -> Optional[list[int]]:
        """The inputs the forward reads, in order; None when soft weights mix them all."""
        return self._selected(self.weights())

    def _selected(self, w: Optional[ArchWeights]) -> Optional[list[int]]:
        if w is None:
            return _as_list(default_index(self.spec()))
        if w.chosen is None:
            return None
        indices = _as_list(w.chosen[0])
        size = len(indices) if self.n_chosen is None else self.n_chosen
        if not indices or len(set(indices)) != len(indices) or len(indices) != size or \
                not all(0 <= i < self.n_candidates for i in indices):
            weighting = type(self._binding.store.weighting).__name__ if self._binding is not None else "resample"
            raise SpaceError(f"InputChoice {self.label_key!r} takes "
                             f"{'at least 1' if self.n_chosen is None else self.n_chosen} distinct inputs out of "
                             f"{self.n_candidates}, but {weighting} chose {indices}: a weighting must sample the label's "
                             "n_chosen inputs (archnas.space.choice.sample_choice draws them)")
        return indices

    def forward(self, candidate_inputs: Sequence[Tensor]) -> Any:
        if len(candidate_inputs) != self.n_candidates:
            raise SpaceError(f"InputChoice {self.label_key!r}: got {len(candidate_inputs)} inputs, expects "
                             f"{self.n_candidates}")
        w = self.weights()
        indices = self._selected(w)
        if indices is not None:
            if w is None:
                return reduce_inputs([candidate_inputs[i] for i in indices], self.reduction)
            return reduce_inputs([scaled(candidate_inputs[i], w.probs[i]) for i in indices], self.reduction)
        if self.n_chosen != 1 and self.reduction in ("concat", "none"):
            raise SpaceError(f"InputChoice {self.label_key!r}: soft weights cannot mix "
                             f"{'any number of' if self.n_chosen is None else self.n_chosen} inputs by "
                             f"{self.reduction!r}; search it with a sampling strategy (gdas, spos)")
        mixed = sum(w.probs[i] * x for i, x in enumerate(candidate_inputs))
        return mixed * self.n_chosen if self.reduction == "sum" and self.n_chosen is not None else mixed

    def frozen(self, arch: Mapping[str, Any]) -> nn.Module:
        return ChosenInputs(_as_list(choice_index(self.spec(), arch[self.label_key])), self.reduction)


def _as_list(index: Any) -> list[int]:
    return list(index) if isinstance(index, tuple) else [index]


def _input_spec(label: str, n_candidates: int, n_chosen: Optional[int], reduction: str,
                prior: Optional[Sequence[float]]) -> ChoiceSpec:
    def counts(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not counts(n_candidates) or n_candidates < 1 or \
            (n_chosen is not None and (not counts(n_chosen) or not 1 <= n_chosen <= n_candidates)):
        raise SpaceError(f"InputChoice {label}: needs 1 <= n_chosen ({n_chosen}) <= n_candidates ({n_candidates}), "
                         "or n_chosen None (any number of inputs)")
    if reduction not in REDUCTIONS:
        raise SpaceError(f"InputChoice {label}: reduction {reduction!r} is not one of {', '.join(REDUCTIONS)}")
    if n_chosen is None and prior:
        raise SpaceError(f"InputChoice {label}: a prior weighs the pick of one candidate; n_chosen None picks any "
                         "subset of the inputs (uniformly): give no prior, or an n_chosen")
    return ChoiceSpec(label, tuple(str(i) for i in range(n_candidates)), kind="input",
                      values=tuple(range(n_candidates)), n_chosen=n_chosen, prior=tuple(prior or ()))


class Repeat(Resolvable, nn.Module):
    """`blocks` repeated `depth` times: an int (fixed: a plain `nn.Sequential`), `(min, max)` or a
    ValueChoice of depths (its label is the choice's; `label` names a `(min, max)` choice). A
    module is deep-copied (the copies share its choices' labels); a factory is called with the
    index of each copy (so each copy can label its own choices); a list is taken as the blocks.
    With soft weights the output mixes the outputs at every allowed depth."""

    @classmethod
    def _instead(cls, blocks: Any, depth: Any, *, label: Optional[str] = None):
        fixed = current_fixed_arch()
        if isinstance(depth, int) and not isinstance(depth, bool):
            return nn.Sequential(*_blocks(blocks, _depths(depth, label)[0]))
        if fixed is not None:
            depths = _depths(depth, label)
            return nn.Sequential(*_blocks(blocks, fixed.choose(label or _label_of(depth), "Repeat", tuple(depths))))
        return KEEP

    def __init__(self, blocks: Any, depth: Any, *, label: Optional[str] = None):
        super().__init__()
        depths = _depths(depth, label)
        leaf = depth if isinstance(depth, ValueChoice) else ValueChoice(depths, label=label)
        object.__setattr__(self, "depth", leaf)  # a leaf of the space, not a submodule of this one
        self.depths = depths
        self.blocks = nn.ModuleList(_blocks(blocks, max(depths)))

    def value_leaves(self) -> list[ValueChoice]:
        return [self.depth]

    def forward(self, x: Any) -> Any:
        w = self.depth.weights()
        if w is None or w.chosen is not None:
            k = 0 if w is None else w.chosen[0]
            for block in self.blocks[: self.depth.candidates[k]]:
                x = block(x)
            return x if w is None else scaled(x, w.probs[k])
        out = None
        for k, d in enumerate(self.depth.candidates):
            if d == 0:
                out = w.probs[k] * x
        for i, block in enumerate(self.blocks, 1):
            x = block(x)
            for k, d in enumerate(self.depth.candidates):
                if d == i:
                    out = w.probs[k] * x if out is None else out + w.probs[k] * x
        return out

    def reachable(self, arch: Mapping[str, Any]) -> list[nn.Module]:
        """The blocks a forward at `arch` runs: choices in blocks beyond the depth need no value."""
        d = self.depth.candidates[choice_index(self.depth.spec(), arch[self.depth.label_key])]
        return list(self.blocks[:d])

    def frozen(self, arch: Mapping[str, Any]) -> nn.Module:
        return nn.Sequential(*self.reachable(arch))


def _label_of(depth: Any) -> Optional[str]:
    return depth.label if isinstance(depth, ValueChoice) else None


def _depths(depth: Any, label: Optional[str]) -> list[int]:
    if isinstance(depth, int) and not isinstance(depth, bool):
        values = [depth]
    elif isinstance(depth, tuple) and len(depth) == 2 and all(isinstance(d, int) for d in depth):
        values = list(range(depth[0], depth[1] + 1))
    elif isinstance(depth, ValueChoice):
        values = list(depth.candidates)
    elif isinstance(depth, (list, tuple)):
        values = list(depth)
    else:
        raise SpaceError(f"Repeat {label or ''}: depth must be an int, (min, max) or a ValueChoice, got {depth!r}")
    if not values or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in values):
        raise SpaceError(f"Repeat {label or ''}: depths {values} must be non-negative ints")
    return sorted(set(values))


def _blocks(blocks: Any, n: int) -> list[nn.Module]:
    if isinstance(blocks, nn.Module):
        return [copy.deepcopy(blocks) for _ in range(n)]
    if isinstance(blocks, (list, tuple)):
        if len(blocks) < n:
            raise SpaceError(f"Repeat: {len(blocks)} blocks given for a depth of up to {n}")
        return list(blocks[:n])
    if callable(blocks):
        return [blocks(i) for i in range(n)]
    raise SpaceError(f"Repeat: blocks must be a module, a list of modules or a factory, got {type(blocks).__name__}")
