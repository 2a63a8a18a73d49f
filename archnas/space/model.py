"""SearchSpaceModel: a user's own model with choices in it, turned into a supernet that every
strategy searches; `freeze`: the plain network of one architecture, with the trained weights.

    space = SearchSpaceModel(MyNet())               # collects the choices, in module order
    space.architecture_parameters()                 # never in space.model_parameters()
    space.sample_random_arch(); y = space(x)        # ENOT: the forward runs the architecture set
    net = freeze(space, {"conv": "5x5", ...})       # plain modules only, logits equal at that arch

The choices' parameters live in an `ArchStore` (`space.arch`), one per label; choices that share
a label share one. Every forward binds the store's weights once (a strategy's weighting: softmax
for DARTS, a Gumbel sample for GDAS; by default the one architecture set with
`forward_architecture` / `set_architecture`, initially every choice's default), and each
choice reads its own. So the model's `forward` is the user's, unchanged; calling that model
directly (`space.model(x)`, or the module that was wrapped) binds the weights for its forward the
same way, so it runs what the space runs.

The architecture set on the space is part of its state dict (`_extra_state`: which candidates
each label chose, as one tensor), so a space saved and loaded runs the architecture it ran; a
state dict saved before it was kept loads too and leaves the current architecture.

ENOT's names: `search_variants_containers`, `architecture_probabilities`, `forward_architecture`,
`sample_random_arch`, `sample_best_arch`, `get_network_by_indexes`, `get_network_with_best_arch`.
Registered supernet modules (`register_supernet_module`) may replace matching modules of the
model first, through their `mutate` hook.
"""

from __future__ import annotations

import copy
import hashlib
import json
import operator
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.errors import SpaceError
from archnas.space.choice import Choice, choice_index, choice_value, default_index, sample_choice
from archnas.space.choices import SearchVariantsContainer
from archnas.space.fixed import UnlabelledChoice, fixed_arch
from archnas.space.store import ArchBinding, ArchStore, ChoiceSpec, FixedWeighting, Searchable
from archnas.space.value import ValueChoice, leaves_of

# Supernet module classes whose `mutate` hook may replace a model's modules (timm-style table,
# filled at import by the modules that define them).
_SUPERNET_MODULES: list[type] = []


def register_supernet_module(cls: type) -> type:
    """Class decorator: `cls.mutate(module, name, memo, mutate_kwargs)` is offered every module of
    every SearchSpaceModel built afterwards; it returns a replacement, or None to leave it."""
    if not callable(getattr(cls, "mutate", None)):
        raise TypeError(f"{cls.__name__} has no mutate(module, name, memo, mutate_kwargs) classmethod")
    if cls not in _SUPERNET_MODULES:
        _SUPERNET_MODULES.append(cls)
    return cls


def _named_leaves(module: nn.Module) -> list[tuple[str, ValueChoice]]:
    """(argument name, leaf) of a module whose sizes are value choices (space.nn layers, Repeat)."""
    if hasattr(module, "value_args"):
        return [(name, leaf) for name, value in module.value_args.items() for leaf in leaves_of(value)]
    if hasattr(module, "value_leaves"):
        return [("depth", leaf) for leaf in module.value_leaves()]
    return []


class _BindOnCall:
    """The forward pre-hook and hook of a wrapped model: a call of the model itself (not through the
    space) binds the store's weights for its forward, as the space's forward does (once per call,
    so choices sharing a label read one sample); within the space's forward it does nothing."""

    def __init__(self, binding: ArchBinding):
        self.binding: Optional[ArchBinding] = binding
        self.open: list = []  # per call being run: the binding it entered, or None

    def before(self, module: nn.Module, args: Any) -> None:
        bound = None
        if self.binding is not None and self.binding.store is not None and self.binding.current is None:
            bound = self.binding.store.bound()
            bound.__enter__()
        self.open.append(bound)

    def after(self, module: nn.Module, args: Any, output: Any) -> None:
        bound = self.open.pop() if self.open else None
        if bound is not None:
            bound.__exit__(None, None, None)

    def __getstate__(self) -> dict[str, Any]:
        return {"binding": self.binding, "open": []}


class SearchSpaceModel(Searchable):
    def __init__(self, model: nn.Module, *, mutate_hooks: Sequence[type] = (),
                 mutate_kwargs: Optional[Mapping[str, Any]] = None):
        super().__init__()
        if isinstance(model, SearchSpaceModel):
            raise SpaceError("SearchSpaceModel: the model is a search-space model already")
        self.model = self._mutated(model, [*mutate_hooks, *_SUPERNET_MODULES], dict(mutate_kwargs or {}))
        self.choices: list[Choice] = []  # every choice module and value leaf, in module order
        specs: dict[str, ChoiceSpec] = {}
        where: dict[str, str] = {}
        for path, choice, spec in self._collect():
            self.choices.append(choice)
            if spec.label in specs and _without_label(specs[spec.label]) != _without_label(spec):
                raise SpaceError(f"choices labelled {spec.label!r} at {where[spec.label]} and {path} differ "
                                 f"({list(specs[spec.label].choices)} vs {list(spec.choices)}); a shared label "
                                 "means one shared choice")
            specs.setdefault(spec.label, spec)
            where.setdefault(spec.label, path)
        if not specs:
            raise SpaceError(f"{type(model).__name__} has no choices (LayerChoice, InputChoice, ValueChoice, Repeat, "
                             "Cell, SearchVariantsContainer): there is nothing to search")
        self.arch = ArchStore(list(specs.values()))
        # the choice modules with a constraint over several labels, found once: samplers ask
        # `arch_problem` of every architecture they consider (a whole space's worth, at times)
        self._constraints = tuple(m for m in self.model.modules()
                                  if hasattr(m, "arch_problem") and type(m).__module__.startswith("archnas.space"))
        for choice in self.choices:
            choice.bind_arch(self.arch.binding)
        self.set_architecture(self.default_architecture())
        hook = _BindOnCall(self.arch.binding)
        self._hook_ids = (self.model.register_forward_pre_hook(hook.before).id,
                          self.model.register_forward_hook(hook.after, always_call=True).id)

    # -- building ---------------------------------------------------------------------------

    @staticmethod
    def _mutated(model: nn.Module, hooks: Sequence[type], mutate_kwargs: dict[str, Any]) -> nn.Module:
        """`model` with every module a hook replaces replaced (top-down; a replacement is not
        offered to the hooks again)."""
        if not hooks:
            return model
        memo: dict[str, Any] = {}

        def visit(module: nn.Module, name: str) -> nn.Module:
            for hook in hooks:
                result = hook.mutate(module, name, memo, mutate_kwargs)
                if isinstance(result, tuple):
                    result = result[0]
                if isinstance(result, nn.Module):
                    return result
            for child_name, child in list(module.named_children()):
                setattr(module, child_name, visit(child, f"{name}.{child_name}" if name else child_name))
            return module

        return visit(model, "")

    def _collect(self) -> Iterator[tuple[str, Choice, ChoiceSpec]]:
        containers: list[str] = []
        seen: set[int] = set()
        for path, module in self.model.named_modules():
            if isinstance(module, SearchVariantsContainer):
                outer = next((c for c in containers if path.startswith(c + ".")), None)
                if outer is not None:
                    raise SpaceError(f"SearchVariantsContainer at {path} is inside the one at {outer}: containers "
                                     "cannot be nested (use LayerChoice for nested choices)")
                containers.append(path)
            if isinstance(module, Choice) and id(module) not in seen:
                seen.add(id(module))
                if not module.label:
                    module.label_key = path or type(module).__name__
                yield path, module, module.spec()
            for arg, leaf in _named_leaves(module):
                if id(leaf) in seen:
                    continue
                seen.add(id(leaf))
                if not leaf.label:
                    leaf.label_key = f"{path}.{arg}" if path else arg
                yield f"{path}.{arg}", leaf, leaf.spec()

    # -- the space ---------------------------------------------------------------------------

    @property
    def specs(self) -> dict[str, ChoiceSpec]:
        return self.arch.specs

    def labels_key(self) -> str:
        """A stable hash of the space's labels and candidates: what an architecture file records
        (`space_fingerprint`) and is checked against. Not the space's fingerprint (that is
        `archnas.nas.spaces.ModuleSpace.fingerprint`, of the space and its parameters): an
        architecture applies to every macro of a space with these labels (a search at C=8, its
        eval at C=36)."""
        blob = json.dumps([[s.label, s.kind, [str(c) for c in s.choices], s.n_chosen] for s in self.specs.values()],
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self.bound_arch():
            return self.model(*args, **kwargs)

    def model_parameters(self) -> Iterator[nn.Parameter]:
        return self.weights()

    def architecture_parameters(self) -> Iterator[nn.Parameter]:
        return self.arch_params()

    # -- architectures as {label: choice} ----------------------------------------------------

    def default_architecture(self) -> dict[str, Any]:
        """Every choice's default: a SearchVariantsContainer's default index, else the first candidate."""
        arch = {}
        defaults = {c.label_key: c.default_operation_index for c in self.choices
                    if isinstance(c, SearchVariantsContainer) and c.default_operation_index is not None}
        for label, spec in self.specs.items():
            arch[label] = choice_value(spec, defaults.get(label, default_index(spec)))
        return arch

    def check_arch(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """`arch` checked against the space: every label known, every value one of its candidates,
        every label the forward at `arch` reads present (SpaceError naming the culprit and the
        valid labels or values). Labels no forward at `arch` reads (inside a LayerChoice's other
        candidates, in a Repeat's blocks beyond its depth) may be left out, as NNI allows; the
        architecture returned gives them their defaults, which change nothing the network computes."""
        unknown = sorted(set(arch) - set(self.specs))
        if unknown:
            raise SpaceError(f"unknown labels {', '.join(map(repr, unknown))}; the space's labels: "
                             f"{', '.join(self.specs)}")
        if any(label not in arch for label in self.specs):
            missing = [label for label in _read_labels(self.model, arch) if label not in arch]
            if missing:
                raise SpaceError(f"the architecture has no value for {', '.join(map(repr, missing))}")
            arch = {**self.default_architecture(), **arch}
        checked = {label: choice_value(spec, choice_index(spec, arch[label])) for label, spec in self.specs.items()}
        problem = self.arch_problem(checked)
        if problem is not None:
            raise SpaceError(problem)
        return checked

    @property
    def constrained(self) -> bool:
        """Whether some architectures of its labels' product are not architectures of the space."""
        return bool(self._constraints)

    def arch_problem(self, arch: Mapping[str, Any]) -> Optional[str]:
        """Why a complete architecture breaks a constraint over several labels (a choice's
        `arch_problem`: NAS-Bench-101's edge limit), or None: what samplers and `check_arch` refuse."""
        for module in self._constraints:
            problem = module.arch_problem(arch)
            if problem is not None:
                return problem
        return None

    def set_architecture(self, arch: Mapping[str, Any]) -> None:
        """Run `arch` at every forward from now on (until a strategy sets its own weighting)."""
        arch = self.check_arch(arch)
        self.arch.use(FixedWeighting({label: choice_index(spec, arch[label]) for label, spec in self.specs.items()}))

    @property
    def architecture(self) -> Optional[dict[str, Any]]:
        """The architecture the forward runs, or None while a strategy weighs the candidates."""
        weighting = self.arch.weighting
        if not isinstance(weighting, FixedWeighting):
            return None
        return {label: choice_value(spec, weighting.indices[label]) for label, spec in self.specs.items()}

    # -- the architecture in the state dict ----------------------------------------------------

    def get_extra_state(self) -> Tensor:
        """The architecture set on the space, as one int64 tensor: per label (in the store's order)
        a 0/1 mask over its candidates; all zeros while a strategy weighs the candidates. A tensor,
        so the state dict stays one of tensors (checkpoints, `weights_only` loads, copies)."""
        weighting = self.arch.weighting
        masks = []
        for label, spec in self.specs.items():
            mask = torch.zeros(len(spec.candidates), dtype=torch.int64)
            if isinstance(weighting, FixedWeighting):
                index = weighting.indices[label]
                mask[list(index) if isinstance(index, tuple) else index] = 1
            masks.append(mask)
        return torch.cat(masks)

    def set_extra_state(self, state: Any) -> None:
        """Run the architecture a state dict recorded (all zeros: leave the current one)."""
        sizes = [len(spec.candidates) for spec in self.specs.values()]
        if not isinstance(state, Tensor) or state.dim() != 1 or state.numel() != sum(sizes):
            raise SpaceError(f"state dict: its architecture ({_describe(state)}) is not one of this space's, which "
                             f"has {sum(sizes)} candidates over {len(sizes)} labels; was it saved from another space?")
        masks = state.detach().cpu().to(torch.int64).split(sizes)
        if not any(bool(m.any()) for m in masks):
            return
        arch = {}
        for (label, spec), mask in zip(self.specs.items(), masks):
            picked = torch.nonzero(mask).flatten().tolist()
            if any(v not in (0, 1) for v in mask.tolist()) or not picked or \
                    (spec.n_chosen is not None and len(picked) != spec.n_chosen):
                raise SpaceError(f"state dict: its architecture gives {label!r} the candidates {picked}, not "
                                 f"{'a set' if spec.n_chosen is None else spec.n_chosen} of {list(spec.choices)}")
            arch[label] = choice_value(spec, tuple(picked) if spec.n_chosen != 1 else picked[0])
        self.set_architecture(arch)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        """As torch's, but a state dict saved before the architecture was kept in it loads too."""
        before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + "_extra_state"
        if key not in state_dict and key in missing_keys[before:]:
            missing_keys.remove(key)

    def export(self) -> dict[str, Any]:
        """The strongest choice of every label by the architecture parameters (each module's `export`)."""
        memo: dict[str, Any] = {}
        for choice in self.choices:
            choice.export(memo)
        return {label: memo[label] for label in self.specs}

    def sample_random_arch(self, generator: Optional[torch.Generator] = None) -> dict[str, Any]:
        """Set (and return) a random architecture, each choice by its prior or uniformly."""
        arch = {label: sample_choice(spec, generator) for label, spec in self.specs.items()}
        self.set_architecture(arch)
        return arch

    def sample_best_arch(self) -> dict[str, Any]:
        """Set (and return) the architecture with the largest architecture weights."""
        arch = self.export()
        self.set_architecture(arch)
        return arch

    # -- ENOT's index view: categorical choices only -------------------------------------------

    def _categorical(self) -> list[ChoiceSpec]:
        return [s for s in self.specs.values() if s.categorical]

    def _only_categorical(self, what: str) -> None:
        others = [s.label for s in self.specs.values() if not s.categorical]
        if others:
            raise SpaceError(f"{what} takes one index per categorical choice, but this space also has value, input or "
                             f"depth choices ({', '.join(others)}); use freeze(model, {{label: choice}}) or "
                             "set_architecture({label: choice}) instead")

    @property
    def search_variants_containers(self) -> list[nn.Module]:
        """The categorical choices (SearchVariantsContainers and LayerChoices), one per label, in order."""
        firsts: dict[str, nn.Module] = {}
        for c in self.choices:
            if c.spec().categorical:
                firsts.setdefault(c.label_key, c)
        return list(firsts.values())

    @property
    def architecture_probabilities(self) -> list[Tensor]:
        return [F.softmax(self.arch.alpha(s.label), dim=-1) for s in self._categorical()]

    @property
    def forward_architecture(self) -> list[int]:
        arch = self.architecture or self.export()
        return [choice_index(s, arch[s.label]) for s in self._categorical()]

    @forward_architecture.setter
    def forward_architecture(self, indices: Sequence[int]) -> None:
        self._only_categorical("forward_architecture")
        self.set_architecture(self._by_indexes(indices))

    def _by_indexes(self, indices: Sequence[int]) -> dict[str, Any]:
        specs = self._categorical()
        if len(indices) != len(specs):
            raise SpaceError(f"expected {len(specs)} indices (one per categorical choice: "
                             f"{', '.join(s.label for s in specs)}), got {len(indices)}")
        arch = {}
        for spec, i in zip(specs, indices):
            index = _integral(i)
            if index is None or not 0 <= index < len(spec.candidates):
                raise SpaceError(f"{spec.label!r}: index {i!r} is not an integer in [0, {len(spec.candidates)})")
            arch[spec.label] = choice_value(spec, index)
        return arch

    def get_network_by_indexes(self, selected_op_index: Sequence[int]) -> nn.Module:
        self._only_categorical("get_network_by_indexes")
        return freeze(self, self._by_indexes(selected_op_index))

    def get_network_with_best_arch(self) -> nn.Module:
        """The network of the most probable architecture. Refused while no gradient has reached
        the architecture parameters (a single-path pretrain trains none): their argmax would be
        an accident of their random initialization."""
        if not self.arch.trained:
            raise SpaceError("get_network_with_best_arch: no architecture parameter of this space has been trained "
                             "(a pretrain samples paths and trains only the weights), so the best architecture is "
                             "the argmax of their random initialization; search first (a search optimizer, or "
                             "archnas's search stage), or take a network of your choice with "
                             "get_network_by_indexes([...])")
        return freeze(self, self.export())


def _read_labels(model: nn.Module, arch: Mapping[str, Any]) -> list[str]:
    """The labels a forward of `model` at `arch` reads, in module order: below a choice that says
    which submodules run (`reachable`), only those; below one whose label `arch` lacks, nothing
    (that label is reported missing first)."""
    labels: dict[str, None] = {}
    seen: set[int] = set()

    def visit(module: nn.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        own = ([module.label_key] if isinstance(module, Choice) else []) + \
            [leaf.label_key for _, leaf in _named_leaves(module)]
        labels.update(dict.fromkeys(own))
        if hasattr(module, "reachable") and type(module).__module__.startswith("archnas.space"):
            children = module.reachable(arch) if all(label in arch for label in own) else []
        else:
            children = list(module.children())
        for child in children:
            visit(child)

    visit(model)
    return list(labels)


def _integral(value: Any) -> Optional[int]:
    """`value` as an int when it is an integer of any kind (numpy's, a 0-d tensor's), not a bool."""
    if isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _describe(state: Any) -> str:
    if isinstance(state, Tensor):
        return f"a tensor of shape {list(state.shape)}"
    return type(state).__name__


def _without_label(spec: ChoiceSpec) -> tuple:
    return spec.kind, tuple(map(str, spec.choices)), spec.n_chosen, spec.rows


def freeze(space: SearchSpaceModel, arch: Mapping[str, Any]) -> nn.Module:
    """The plain network of `arch`: every choice replaced by what it chose, every layer with value
    choices by the plain layer of its chosen size, carrying (copies of) the trained weights and
    statistics; no archnas.space module is left in it."""
    arch = space.check_arch(arch)
    net = copy.deepcopy(space.model, memo={id(space.arch.binding): None})
    pre, post = space._hook_ids  # the copy's hooks would bind nothing: a frozen network has none
    net._forward_pre_hooks.pop(pre, None)
    net._forward_hooks.pop(post, None)
    net._forward_hooks_always_called.pop(post, None)

    def convert(module: nn.Module) -> nn.Module:
        while hasattr(module, "frozen") and type(module).__module__.startswith("archnas.space"):
            module = module.frozen(arch).train(module.training)  # new plain layers start in training mode
        for name, child in list(module.named_children()):
            setattr(module, name, convert(child))
        return module

    net = convert(net)
    left = sorted({type(m).__name__ for m in net.modules() if type(m).__module__.startswith("archnas.space")})
    if left:
        raise SpaceError(f"freeze: {', '.join(left)} modules cannot be frozen (they have no frozen())")
    return net


def build_network(make: Callable[[], nn.Module], arch: Mapping[str, Any]) -> nn.Module:
    """The plain network of `arch`, from scratch: `make()` under `fixed_arch` (only the chosen
    candidates are built) when every choice it meets has a label; a model with unlabelled choices
    (SearchVariantsContainers) is built whole, wrapped, so that each gets its module path as its
    label, and frozen at `arch` (the same modules and state-dict keys as `freeze` of its supernet)."""
    try:
        with fixed_arch(arch):
            return make()
    except UnlabelledChoice:
        return freeze(SearchSpaceModel(make()), arch)


__all__ = ["SearchSpaceModel", "build_network", "freeze", "register_supernet_module"]
