"""`Choice`: the base of every choice module, and the supernet-module contract they implement.

A choice has a label (given, or its module path once a `SearchSpaceModel` sees the model; choices
with one label share one decision) and a spec (its candidates, `archnas.space.store.ChoiceSpec`).
Inside a search-space model it is bound to the model's architecture store: at each forward it
reads its label's weights from the binding (soft weights: it mixes its candidates; a one-hot
sample with the chosen index: it runs only that candidate, times its weight, so gradients still
reach the architecture parameters). Called outside that forward, it runs the architecture set on
the space (`set_architecture`, `resample`), and refuses while a strategy weighs the candidates
(soft weights or samples exist only within one forward). Outside a search-space model (a model
not wrapped yet) it runs its default candidate, or the path `resample` chose for it.

The contract every choice implements, as NNI's supernet modules do:
- `search_space_spec()` -> `{label: ChoiceSpec}`;
- `resample(memo)` -> a random choice for each label not yet in `memo` (the new ones); from then
  on the module runs `memo`'s value of each of its labels, as NNI's path-sampling modules do;
- `export(memo)` -> the strongest choice for each label not yet in `memo`;
- `mutate(module, name, memo, mutate_kwargs)` (classmethod): the hook a user registers
  (`archnas.space.register_supernet_module`) to replace matching modules of their own with a
  supernet module when a SearchSpaceModel is built; returns the replacement, or None.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.space.store import ArchBinding, ArchWeights, ChoiceSpec, FixedWeighting, one_hot_weights


class Choice(nn.Module):
    kind: ClassVar[str] = "op"

    def __init__(self, label: Optional[str], prior: Optional[Sequence[float]], n_candidates: int):
        super().__init__()
        if label is not None and (not isinstance(label, str) or not label):
            raise SpaceError(f"a choice label must be a non-empty string, got {label!r}")
        if prior is not None:
            prior = [float(p) for p in prior]
            if len(prior) != n_candidates or any(p < 0 for p in prior) or not sum(prior) > 0:
                raise SpaceError(f"choice {label or ''}: prior {prior} needs {n_candidates} non-negative weights "
                                 "that are not all 0")
        self.label = label
        self.label_key: str = label or ""  # set from the module path by SearchSpaceModel when unlabelled
        self.prior: tuple[float, ...] = tuple(prior) if prior is not None else ()
        self._binding: Optional[ArchBinding] = None
        self._sampled: dict[str, Any] = {}  # label -> index `resample` chose while no model binds this choice

    # -- what a subclass provides ------------------------------------------------------------

    def spec(self) -> ChoiceSpec:
        raise NotImplementedError

    # -- binding ------------------------------------------------------------------------------

    def bind_arch(self, binding: ArchBinding) -> None:
        self._binding = binding

    def weights(self) -> Optional[ArchWeights]:
        """This forward's weights of the label; outside a forward, those of the architecture set on
        the space; None for a choice in no search-space model that `resample` has not set (it runs
        its default)."""
        binding = self._binding
        if binding is None or binding.store is None:
            index = self._sampled.get(self.label_key)
            return None if index is None else one_hot_weights(self.spec(), index)
        if binding.current is not None:
            return binding.get(self.label_key)
        weighting = binding.store.weighting
        if isinstance(weighting, FixedWeighting):
            return weighting.label_weights(binding.store, self.label_key)
        raise SpaceError(f"choice {self.label_key!r} was called on its own while the strategy's "
                         f"{type(weighting).__name__} weighs the candidates (its weights exist only within one forward "
                         "of the model); call the SearchSpaceModel or the model it wraps, or set_architecture first")

    def readable(self) -> bool:
        """Whether `weights()` answers now: False only outside a forward while a strategy weighs the
        candidates."""
        binding = self._binding
        return binding is None or binding.store is None or binding.current is not None or \
            isinstance(binding.store.weighting, FixedWeighting)

    def chosen_indices(self) -> Optional[list]:
        """The candidates a one-hot sample chose (one entry: an index, or a tuple of indices), or
        None when the weights are soft or there are none."""
        w = self.weights()
        return None if w is None else w.chosen

    # -- the supernet-module contract -----------------------------------------------------------

    def search_space_spec(self) -> dict[str, ChoiceSpec]:
        return {self.label_key: self.spec()}

    def resample(self, memo: dict[str, Any], generator: Optional[torch.Generator] = None) -> dict[str, Any]:
        """A random choice (by the prior, else uniform) for each of this module's labels not in `memo`
        (returned, and added to `memo`); from now on the module runs `memo`'s value of each of its
        labels. In a search-space model that sets them in the architecture it runs (the other labels
        keep theirs; while a strategy weighs the candidates, they take the strongest ones), so
        choices that share a label follow; outside one, the module keeps its own path."""
        new = {}
        specs = self.search_space_spec()
        for label, spec in specs.items():
            if label not in memo:
                memo[label] = new[label] = sample_choice(spec, generator)
        indices = {label: choice_index(spec, memo[label]) for label, spec in specs.items()}
        store = None if self._binding is None else self._binding.store
        if store is None:
            self._sampled.update(indices)
            return new
        current = store.weighting.indices if isinstance(store.weighting, FixedWeighting) else {
            label: strongest(spec, store.alpha(label).detach()) for label, spec in store.specs.items()}
        store.use(FixedWeighting({**current, **indices}))
        return new

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        """The choice with the largest architecture weight for each label not in `memo` (the
        default candidate when the module is not in a search-space model)."""
        new = {}
        store = None if self._binding is None else self._binding.store
        for label, spec in self.search_space_spec().items():
            if label not in memo:
                if store is None:
                    index: Any = self._sampled.get(label, default_index(spec))
                else:
                    index = strongest(spec, store.alpha(label).detach())
                memo[label] = new[label] = choice_value(spec, index)
        return new

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: Mapping[str, Any]) -> Any:
        """Replace `module` (at path `name`) with a supernet module, or return None to leave it."""
        return None

    def extra_repr(self) -> str:
        return f"label={self.label_key!r}"


def several(spec: ChoiceSpec) -> bool:
    """Whether an architecture picks a set of candidates for the label (an input choice of several,
    or of any number), recorded as a list, rather than one candidate."""
    return spec.n_chosen != 1


def default_index(spec: ChoiceSpec) -> Any:
    """The candidate a choice runs by default: the first (the first n_chosen inputs; every input
    for an input choice of any number, as NNI's `[:n_chosen]` of None takes them all)."""
    if not several(spec):
        return 0
    return tuple(range(len(spec.candidates) if spec.n_chosen is None else spec.n_chosen))


def sample_choice(spec: ChoiceSpec, generator: Optional[torch.Generator] = None) -> Any:
    """A random value of `spec` (n_chosen distinct inputs for an input choice, drawn without
    replacement by the prior; for n_chosen None a non-empty subset, uniformly among them all)."""
    n = len(spec.candidates)
    if spec.n_chosen is None:
        while True:  # each input in or out with probability 1/2, the empty set redrawn: uniform over the rest
            picked = torch.nonzero(torch.rand(n, generator=generator) < 0.5).flatten().tolist()
            if picked:
                return choice_value(spec, tuple(picked))
    probs = torch.tensor(spec.prior or [1.0] * n, dtype=torch.float64)
    picked = torch.multinomial(probs, spec.n_chosen, replacement=False, generator=generator).tolist()
    return choice_value(spec, tuple(sorted(picked)) if several(spec) else picked[0])


def strongest(spec: ChoiceSpec, alpha: Tensor) -> Any:
    """The index (or the n_chosen indices, in input order) with the largest architecture weights;
    for an input choice of any number, every input weighted at least as much as in a uniform mix
    (softmax(alpha) >= 1 / n: the strongest always is)."""
    if spec.n_chosen is None:
        probs = torch.softmax(alpha.double(), -1)
        return tuple(torch.nonzero(probs >= probs.max().clamp_max(1.0 / len(spec.candidates))).flatten().tolist())
    if several(spec):
        return tuple(sorted(alpha.topk(spec.n_chosen).indices.tolist()))
    return int(alpha.argmax())


def choice_value(spec: ChoiceSpec, index: Any) -> Any:
    """What an architecture records for candidate `index` (indices, for an input choice of several)."""
    choices = spec.choices
    if isinstance(index, tuple):
        return [choices[i] for i in index]
    return choices[index]


def choice_index(spec: ChoiceSpec, value: Any) -> Any:
    """The inverse of `choice_value`; a SpaceError naming the valid values when `value` is none of them."""
    choices = [str(c) for c in spec.choices]
    if several(spec):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        size = "at least 1" if spec.n_chosen is None else str(spec.n_chosen)
        if (spec.n_chosen is not None and len(items) != spec.n_chosen) or not items or \
                any(str(v) not in choices for v in items) or len(set(map(str, items))) != len(items):
            raise SpaceError(f"{spec.label!r}: {value!r} is not {size} distinct values out of {', '.join(choices)}")
        return tuple(sorted(choices.index(str(v)) for v in items))
    if isinstance(value, (list, tuple)) or str(value) not in choices:
        raise SpaceError(f"{spec.label!r}: {value!r} is not one of its candidates {', '.join(choices)}")
    return choices.index(str(value))


def option_indices(spec: ChoiceSpec) -> list:
    """Every index an architecture may pick for the label, in order: one per candidate, or every
    combination of n_chosen candidates for an input choice of several (of every size from 1 for
    an input choice of any number)."""
    n = len(spec.choices)
    if spec.n_chosen is None:
        return [c for k in range(1, n + 1) for c in itertools.combinations(range(n), k)]
    if several(spec):
        return list(itertools.combinations(range(n), spec.n_chosen))
    return list(range(n))


def options(spec: ChoiceSpec) -> list:
    """The values `option_indices` stand for (what an architecture file records)."""
    return [choice_value(spec, i) for i in option_indices(spec)]


def scaled(y: Any, weight: Tensor) -> Any:
    """`y * weight` when the weight carries a gradient (a straight-through sample), else `y`: a fixed
    architecture computes exactly what its frozen network computes."""
    return y * weight if weight.requires_grad else y


def sampled_output(y: Any, weights: Tensor, k: int) -> Any:
    """The output of candidate `k`, sampled: `y * weights[k]` plus the other candidates' weights,
    whose values are exactly 0 in a straight-through one-hot sample, so every candidate's
    architecture parameter gets a gradient (the sum of the output's gradient), as the GDAS code's
    NAS-Bench-201 cell does; only the sampled candidate runs. Weights without a gradient (a fixed
    architecture): `y` itself."""
    if not weights.requires_grad:
        return y
    return y * weights[k] + torch.cat([weights[:k], weights[k + 1:]]).sum()



class _BinaryGates(torch.autograd.Function):
    """Identity on the chosen candidate's output `y`; the backward gives every gate j the inner
    product of the output's gradient with candidate j's output, rerunning the candidates not
    chosen on the same inputs under `torch.no_grad` (nothing of theirs is kept for the backward:
    each output lives only while its product is taken)."""

    @staticmethod
    def forward(ctx: Any, gates: Tensor, y: Tensor, k: int, rerun: Any) -> Tensor:
        ctx.k, ctx.rerun, ctx.n = k, rerun, gates.shape[-1]
        ctx.save_for_backward(y)
        return y.clone()  # a fresh tensor: a later in-place op must not reach a view of `y`

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        (y,) = ctx.saved_tensors
        dots = []
        with torch.no_grad():
            for j in range(ctx.n):
                out = y if j == ctx.k else ctx.rerun(j)
                dots.append((grad * out).sum())
        return torch.stack(dots).to(grad.dtype), grad, None, None


def gated_output(y: Any, gates: Tensor, k: int, rerun: Callable[[int], Tensor]) -> Tensor:
    """Candidate `k`'s output `y` behind binary gates (`gates`: one-hot in value, with the gradient
    of the gate probabilities): the forward is `y`, as `sum_j g_j o_j` is at a one-hot g; the
    backward passes the gradient on to `y` and gives gate j `<dL/dy, o_j>`, with `o_j = rerun(j)`
    computed without autograd. The chain rule through the probabilities then yields ProxylessNAS's
    `dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)` at the memory of one path."""
    if not isinstance(y, Tensor):
        raise SpaceError(f"binary gates need candidates that return one tensor, got {type(y).__name__}")
    return _BinaryGates.apply(gates, y, k, rerun)
