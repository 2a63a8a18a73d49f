"""The search-space protocol every phase drives a space through, whatever it is made of.

Two implementations: DARTS cells (`archnas.nas.spaces.cells`: ModelDescBuilder, Finalizers and
genotypes behind it; an architecture is the final desc) and spaces over a module
(`archnas.nas.spaces.modules`: SearchSpaceModel, freeze, fixed_arch; an architecture is
`{label: choice}`). A phase never asks which one it holds: it builds the supernet for its strategy,
exports it, formats the architecture into its folder, reads it back, builds its network, and
samples it as a genome of option indices.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Optional, Sequence

import torch

from torch import nn

from archnas.descs.dataset_info import DatasetInfo
from archnas.errors import SpaceError
from archnas.latency.table import arch_to_row
from archnas.space.store import ChoiceSpec, Searchable

if TYPE_CHECKING:
    from archnas.nas.strategy import Strategy

SAMPLE_TRIES = 10_000  # uniform draws `Space.sample` makes for one within the genome's constraints


@dataclass(frozen=True)
class Genome:
    """An architecture as a tuple of option indices, one per gene, each below its count: what
    samplers draw and mutate, and what cost tables are indexed by. `encode`/`decode` map it to and
    from the space's own architectures. `specs` are the genes as choices (one option per index),
    which the cost tables (`archnas.latency`) key by label: a module space's own labels, the
    cell space's genes; `arch_of` maps such a `{label: choice}` to the space's architecture."""

    counts: tuple[int, ...]
    encode: Callable[[Any], tuple[int, ...]]
    decode: Callable[[Sequence[int]], Any]
    specs: Mapping[str, ChoiceSpec]
    # Whether a genome is an architecture of the space at all (a constraint over several genes:
    # NAS-Bench-101's edge limit); samplers propose only those.
    allows: Callable[[Sequence[int]], bool] = lambda row: True

    def arch_of(self, choices: Mapping[str, Any]) -> Any:
        """The architecture of the genome whose genes take `choices` (`{label: choice}` over `specs`)."""
        return self.decode(arch_to_row(self.specs, choices))


class Space(ABC):
    """One search space as the phases use it (see the module docstring)."""

    kind: ClassVar[str]  # "cells" | "modules": what a strategy's `supports` may look at
    key: str  # the config key it comes from, for messages

    @property
    @abstractmethod
    def title(self) -> str:
        """Its name in logs and architecture files."""

    @abstractmethod
    def description(self) -> dict[str, Any]:
        """What results record about the space (with an architecture, it identifies a network)."""

    # -- the supernet ------------------------------------------------------------------------

    @abstractmethod
    def supernet(self, info: DatasetInfo, strategy: "Strategy") -> Searchable:
        """The weight-sharing supernet of the space for this dataset, its edges and weighting the
        strategy's (`mixed_op`, `weighting`)."""

    @abstractmethod
    def supernet_fingerprint(self, supernet: Searchable) -> str:
        """What a checkpoint of `supernet` must match."""

    @abstractmethod
    def describe_supernet(self, supernet: Searchable) -> str:
        """One log line: what is searched."""

    @abstractmethod
    def save_supernet(self, folder: Path, supernet: Searchable) -> None:
        """The supernet's description file in a search folder (`full_model_desc.yaml`, `space.yaml`)."""

    @abstractmethod
    def export(self, supernet: Searchable, strategy: "Strategy") -> Any:
        """The architecture a searched supernet ends with."""

    @abstractmethod
    def draw(self, supernet: Searchable, generator: torch.Generator) -> Any:
        """A uniformly random architecture of `supernet`, drawn from `generator` only (a single-path
        pretrain's step: the same generator state draws the same path on every rank and rerun)."""

    @abstractmethod
    def use(self, supernet: Searchable, arch: Any) -> None:
        """Make every forward of `supernet` run only the path of `arch` (with its inherited weights)."""

    def record(self, arch: Any) -> Any:
        """`arch` as plain JSON data (path digests, pareto.csv, summaries)."""
        return arch

    # -- architectures -----------------------------------------------------------------------

    @abstractmethod
    def parse(self, text: str, info: DatasetInfo) -> Any:
        """An architecture a user names (a file, a string, a named architecture)."""

    @abstractmethod
    def check(self, arch: Any, info: DatasetInfo) -> Any:
        """`arch` checked against the space and in its normal form (a UsageError naming what is wrong)."""

    @abstractmethod
    def save(self, folder: Path, arch: Any, info: Optional[DatasetInfo] = None,
             write: bool = True) -> tuple[dict[str, Any], Path]:
        """Write `arch` into a search folder (unless `write` is false: not rank 0); returns the
        marker fields that `load` reads back and the file a user hands on."""

    @abstractmethod
    def load(self, folder: Path, done: dict[str, Any], marker: Path) -> tuple[Any, Path, Optional[str]]:
        """The architecture a finished search recorded in `marker` (its contents `done`): (arch,
        the file a user hands on, genotype or None), refused when its file no longer matches."""

    @abstractmethod
    def describe(self, arch: Any) -> str:
        """An architecture in one log line."""

    # -- networks ----------------------------------------------------------------------------

    @abstractmethod
    def network(self, arch: Any, info: DatasetInfo) -> nn.Module:
        """The network of `arch`, from scratch (retrain)."""

    def supernet_refusal(self) -> Optional[str]:
        """Why no supernet of this space can be trained (its choices have no weight-sharing
        forward), or None: strategies that train one refuse it with this reason."""
        return None

    def tune_refusal(self) -> Optional[str]:
        """Why `nas.eval.mode: tune` cannot cut this space's networks out of its supernet, or None."""
        return None

    def tuned(self, arch: Any, info: DatasetInfo, state: dict[str, Any], strategy: "Strategy") -> nn.Module:
        """The network of `arch` with the weights of the trained supernet whose state dict is `state`."""
        raise NotImplementedError(self.tune_refusal())

    @abstractmethod
    def fingerprint(self, arch: Any = None, info: Optional[DatasetInfo] = None) -> str:
        """A stable hash of the space, or of the network of one architecture of it."""

    def network_fingerprint(self, arch: Any, info: DatasetInfo, tune: bool) -> str:
        """What an eval's checkpoints and marker must match."""
        return self.fingerprint(arch, info)

    def save_network(self, folder: Path, arch: Any, info: DatasetInfo) -> None:
        """The eval folder's description of the network it trains."""

    def model_file_space(self, arch: Any, info: DatasetInfo) -> Optional[dict[str, Any]]:
        """How a model file rebuilds the network (None: the file's desc does)."""
        return None

    # -- genomes -----------------------------------------------------------------------------

    @abstractmethod
    def genome(self, info: DatasetInfo) -> Genome:
        """The space's architectures as tuples of option indices."""

    def sample(self, info: DatasetInfo, seed: int) -> Any:
        """A uniformly random architecture, a pure function of `seed` (random search's candidates)."""
        genome = self.genome(info)
        rng = random.Random(seed)
        for _ in range(SAMPLE_TRIES):
            row = [rng.randrange(c) for c in genome.counts]
            if genome.allows(row):
                return genome.decode(row)
        raise SpaceError(f"{self.title}: no architecture within its constraints in {SAMPLE_TRIES} uniform draws")
