"""The architecture store: every architecture parameter of a model, keyed by choice label.

A search space is a set of labelled choices. A DARTS cell type is one label (`regular`,
`reduction`) whose parameter is an `[n_edges, n_candidates]` matrix, one row per edge; a
LayerChoice is one label with a `[n_candidates]` vector; choices that share a label share one
parameter and so one decision. The store is the one place those parameters live (`model.arch`),
apart from the weights, so no weight optimizer sees them, and it is what strategies read and
write: once per forward the model asks the store's `Weighting` (softmax for DARTS, a hard Gumbel
sample for GDAS, a fixed or uniformly drawn path for single-path methods) for the weights of
every label, and binds them; each choice module then reads its label's weights from that binding
instead of receiving them as forward arguments, so a user's own `forward` needs no changes.

Checkpoints hold the store's parameters under `arch.alphas.<label>` (dots in labels become `_`),
plus whatever parameter sets a weighting adds to the store (PC-DARTS: `arch.betas.<label>`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.errors import DescError


@dataclass(frozen=True)
class ChoiceSpec:
    """One label of a space: its candidates and, for matrix labels, its rows.

    `candidates` are display names; `values` what an exported architecture records for each
    (a LayerChoice's candidate names or indices, an InputChoice's input indices, a ValueChoice's
    values, a Repeat's depths; the names when not given). `kind` says which choice it is
    (`op`, `input`, `value`, `depth`); an input choice picks `n_chosen` candidates at once (None:
    any number of them, at least one, as NNI's `n_chosen=None`).
    `rows` names the rows of a matrix label (a DARTS cell type: one per edge, `n<node>_in<input>`)
    and is empty for a single choice; `groups` says how many consecutive rows belong together
    (a DARTS node's incoming edges), for strategies that normalize over them.
    """

    label: str
    candidates: tuple[str, ...]
    rows: tuple[str, ...] = ()
    groups: tuple[int, ...] = ()
    kind: str = "op"
    values: tuple = ()
    n_chosen: int | None = 1
    prior: tuple[float, ...] = ()  # sampling probabilities of the candidates (uniform when empty)

    @property
    def choices(self) -> tuple:
        """What an architecture may record for this label, one per candidate."""
        return self.values or self.candidates

    @property
    def categorical(self) -> bool:
        """One candidate picked out of several named ones (LayerChoice, SearchVariantsContainer)."""
        return self.kind == "op" and not self.rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), len(self.candidates)) if self.rows else (len(self.candidates),)

    def __post_init__(self) -> None:
        if not self.candidates:
            raise DescError(f"choice {self.label!r}: needs at least one candidate")
        if self.groups and sum(self.groups) != len(self.rows):
            raise DescError(f"choice {self.label!r}: groups {self.groups} do not cover its {len(self.rows)} rows")


@dataclass
class ArchWeights:
    """What one label's choices need for one forward."""

    probs: Tensor  # [*rows, n_candidates]: the weight of each candidate (soft, or a one-hot sample)
    edges: Tensor | None = None  # [rows]: a scale on each row's output (PC-DARTS edge normalization)
    # For one-hot samples: the chosen candidate of each row (one entry for a single choice; a
    # tuple of indices for an input choice of several), known on the host, so the choices run
    # only that candidate.
    chosen: list | None = None
    # Binary gates (ProxylessNAS) over a one-hot sample whose probs carry a gradient: every
    # candidate's gate gets dL/dg_j = <dL/dy, o_j>, the candidates not chosen rerun without autograd
    # in the backward (`archnas.space.choice.gated_output`), so the forward keeps one path's graph.
    rerun: bool = False


class Weighting:
    """How the store's parameters become one forward's weights: softmax over the candidates, as
    DARTS does. Strategies subclass it; `attach` may add parameter sets to the store."""

    def attach(self, store: "ArchStore") -> None:
        """Called once when the store starts using this weighting."""

    def weights(self, store: "ArchStore") -> dict[str, ArchWeights]:
        return {label: ArchWeights(F.softmax(store.alpha(label), dim=-1)) for label in store.specs}


class FixedWeighting(Weighting):
    """One architecture, the same at every forward: one-hot weights of the chosen candidates
    (constants: no gradient reaches the architecture parameters), as single-path methods and
    `SearchSpaceModel.forward_architecture` use."""

    def __init__(self, indices: dict[str, Any]):
        """`indices`: per label the chosen candidate's index (a tuple of indices for an input
        choice of several, a list with one index per row for a matrix label)."""
        self.indices = dict(indices)

    def weights(self, store: "ArchStore") -> dict[str, ArchWeights]:
        return {label: self.label_weights(store, label) for label in store.specs}

    def label_weights(self, store: "ArchStore", label: str) -> ArchWeights:
        """The weights of one label (what a choice reads when it runs outside a forward of its model)."""
        return one_hot_weights(store.specs[label], self.indices[label], store.alpha(label))


def one_hot_weights(spec: ChoiceSpec, index: Any, like: Tensor | None = None) -> ArchWeights:
    """Constant one-hot weights of `index` (a tuple of indices for an input choice of several, a
    list with one index per row for a matrix label), in the dtype and on the device of `like`."""
    rows = index if isinstance(index, list) else [index] * max(len(spec.rows), 1)
    probs = torch.zeros((len(rows), len(spec.candidates)), dtype=None if like is None else like.dtype,
                        device=None if like is None else like.device)
    for r, chosen in enumerate(rows):
        probs[r, list(chosen) if isinstance(chosen, tuple) else chosen] = 1.0
    return ArchWeights(probs.reshape(spec.shape), chosen=rows)


class ArchBinding:
    """The weights of the forward that is running, shared by a store and the choice modules that
    read from it (a plain object, not a module: it holds no parameters and is not saved); it
    also leads a choice back to the store that holds its parameters (`store`)."""

    def __init__(self, store: "ArchStore | None" = None) -> None:
        self.current: dict[str, ArchWeights] | None = None
        self.store = store

    def get(self, label: str) -> ArchWeights:
        if self.current is None:
            raise RuntimeError(f"choice {label!r} was called outside the forward of the model that holds its "
                               "architecture parameters; call the search-space model, not the module inside it")
        return self.current[label]


def param_key(label: str) -> str:
    return label.replace(".", "_")


class ArchStore(nn.Module):
    """The architecture parameters of a model, one tensor per label, initialized as DARTS does
    (1e-3 * N(0, 1): every candidate starts equal), and the weighting that reads them."""

    def __init__(self, specs: Sequence[ChoiceSpec], init_std: float = 1e-3):
        super().__init__()
        self.specs: dict[str, ChoiceSpec] = {}
        keys: dict[str, str] = {}
        for spec in specs:
            key = param_key(spec.label)
            if spec.label in self.specs or key in keys:
                other = spec.label if spec.label in self.specs else keys[key]
                raise DescError(f"choice labels {spec.label!r} and {other!r} name the same architecture parameter")
            self.specs[spec.label] = spec
            keys[key] = spec.label
        # a list keeps the labels' order (a dict would be sorted): the order they are drawn in
        self.alphas = nn.ParameterDict(
            [(param_key(s.label), nn.Parameter(init_std * torch.randn(s.shape))) for s in self.specs.values()]
        )
        self.binding = ArchBinding(self)
        self.weighting = Weighting()
        # Whether a gradient ever reached the architecture parameters (or a state dict loaded them):
        # until then their argmax is their random initialization, no architecture worth exporting.
        self._touched = False
        self._initial = [alpha.detach().clone() for alpha in self.alphas.values()]  # not state: a copy
        for alpha in self.alphas.values():
            alpha.register_post_accumulate_grad_hook(self._mark_trained)

    def _mark_trained(self, param: Tensor) -> None:
        self._touched = True

    @property
    def trained(self) -> bool:
        """Whether the architecture parameters are more than their random initialization: a gradient
        reached them, a state dict loaded them (trained elsewhere, perhaps), or they were set by hand."""
        if self._touched:
            return True
        return any(not (alpha.is_meta or initial.is_meta) and not torch.equal(alpha.detach(), initial.to(alpha.device))
                   for alpha, initial in zip(self.alphas.values(), self._initial))

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._touched = True

    def alpha(self, label: str) -> nn.Parameter:
        if label not in self.specs:
            raise KeyError(f"no architecture parameters for {label!r}; labels: {', '.join(self.specs)}")
        return self.alphas[param_key(label)]

    def use(self, weighting: Weighting) -> None:
        """Compute weights with `weighting` from now on (a strategy sets its own once, before
        optimizers are built: it may add parameters). A weighting that refuses the store's
        choices leaves the current one in place."""
        weighting.attach(self)
        self.weighting = weighting

    @contextlib.contextmanager
    def bound(self) -> Iterator[dict[str, ArchWeights]]:
        """The weights of every label for one forward, visible to the choices during the block."""
        previous = self.binding.current
        self.binding.current = self.weighting.weights(self)
        try:
            yield self.binding.current
        finally:
            self.binding.current = previous


class Searchable(nn.Module):
    """A model that may hold an `ArchStore` as `self.arch` (None: a plain network): its weights
    and architecture parameters, never overlapping, so the two optimizers stay apart."""

    arch: ArchStore | None

    def named_arch_params(self) -> Iterator[tuple[str, nn.Parameter]]:
        if self.arch is not None:
            yield from self.arch.named_parameters(prefix="arch")

    def arch_params(self) -> Iterator[nn.Parameter]:
        for _, p in self.named_arch_params():
            yield p

    def named_weights(self) -> Iterator[tuple[str, nn.Parameter]]:
        arch = {id(p) for p in self.arch_params()}
        for name, p in self.named_parameters():
            if id(p) not in arch:
                yield name, p

    def weights(self) -> Iterator[nn.Parameter]:
        for _, p in self.named_weights():
            yield p

    def bound_arch(self) -> contextlib.AbstractContextManager:
        """Bind this forward's architecture weights (nothing to bind for a plain network)."""
        return contextlib.nullcontext() if self.arch is None else self.arch.bound()
