"""Spaces over a module (`nas.search.space`: a registered space such as nb201, or a factory):
the search-space protocol over `SearchSpaceModel`, `freeze` and `fixed_arch`.

An architecture is `{label: choice}`. The supernet is the user's model wrapped in a
SearchSpaceModel whose store the strategy's weighting weighs; retrain builds the network of an
architecture from scratch (`fixed_arch`), tune cuts it out of the trained supernet (`freeze`);
export takes the strongest choice of every label; the genome of an architecture is the option
number of every label (`archnas.latency.table`). A search folder gets `space.yaml` (the space)
and `arch.yaml`/`arch.json` (the architecture).

The description (`name` or `factory`, and the parameters) is what results record: with an
architecture it identifies a final network, so checkpoints and markers of another one are not
reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional

import torch
import yaml
from torch import nn

import archnas.hub  # noqa: F401  (registers the built-in spaces)
from archnas.descs.dataset_info import DatasetInfo
from archnas.errors import ConfigError, DescError, SpaceError
from archnas.latency.table import arch_to_row, option_count, row_to_arch
from archnas.nas.arch_optimizer import bind_weighting
from archnas.nas.spaces.base import Genome, Space
from archnas.space import SearchSpaceModel, build_network, create_space, freeze
from archnas.space.choice import sample_choice
from archnas.space.arch_io import arch_document, parse_arch, save_arch
from archnas.space.registry import arch_parser, mapping_parser, space_factory
from archnas.utils import atomic

if TYPE_CHECKING:
    from archnas.nas.strategy import Strategy

ARCH_FILE = "arch.yaml"
SPACE_FILE = "space.yaml"


@dataclass(frozen=True)
class ModuleSpace(Space):
    name: Optional[str]
    factory: Optional[str]
    params: dict[str, Any]
    key: str  # where it was configured, for messages

    kind: ClassVar[str] = "modules"

    @property
    def title(self) -> str:
        return self.name or self.factory or "?"

    def description(self) -> dict[str, Any]:
        return {"name": self.name, "factory": self.factory, "params": dict(self.params)}

    def model(self, info: DatasetInfo) -> nn.Module:
        """The user's model with its choices, for this dataset's images and classes."""
        return create_space(self.name, factory=self.factory, input_shape=(info.channels, *info.image_size),
                            n_classes=info.n_classes, **self.params)

    # -- the supernet ------------------------------------------------------------------------

    def supernet(self, info: DatasetInfo, strategy: Optional["Strategy"] = None) -> SearchSpaceModel:
        """The space's SearchSpaceModel (a SpaceError about the space names the config key), built
        and weighted as the strategy's supernet when one is given."""
        try:
            model = SearchSpaceModel(self.model(info) if strategy is None else
                                     strategy.build_module_supernet(lambda: self.model(info)))
        except SpaceError as exc:
            raise SpaceError(f"{self.key} ({self.title}): {exc}") from None
        if strategy is not None:
            bind_weighting(strategy, model.arch)
        return model

    def supernet_fingerprint(self, supernet: SearchSpaceModel) -> str:
        return self.fingerprint()

    def describe_supernet(self, supernet: SearchSpaceModel) -> str:
        return (f"{self.title}, {sum(p.numel() for p in supernet.weights()):,} weights, {len(supernet.specs)} choices "
                f"({sum(p.numel() for p in supernet.arch_params()):,} architecture parameters)")

    def save_supernet(self, folder: Path, supernet: SearchSpaceModel) -> None:
        atomic.write_text(folder / SPACE_FILE, yaml.safe_dump(
            {"space": self.description(), "space_fingerprint": supernet.labels_key(),
             "labels": {label: [str(c) for c in spec.choices] for label, spec in supernet.specs.items()}},
            sort_keys=False))

    def export(self, supernet: SearchSpaceModel, strategy: "Strategy") -> dict[str, Any]:
        """The strongest choice of every label by the architecture parameters."""
        return supernet.export()

    def draw(self, supernet: SearchSpaceModel, generator: torch.Generator) -> dict[str, Any]:
        """Every label in the store's order, uniformly or by its prior (`sample_choice`)."""
        return {label: sample_choice(spec, generator) for label, spec in supernet.specs.items()}

    def use(self, supernet: SearchSpaceModel, arch: Mapping[str, Any]) -> None:
        supernet.set_architecture(arch)

    # -- architectures -----------------------------------------------------------------------

    def parse(self, text: str, info: Optional[DatasetInfo] = None, fingerprint: Optional[str] = None) -> dict[str, Any]:
        """An architecture file, a `{label: choice}` mapping, or the space's own string (NB201's, a
        named architecture); a file written for a space whose labels key is not `fingerprint`
        (`SearchSpaceModel.labels_key`) is refused."""
        return parse_arch(text, fingerprint, arch_parser(self.name), mapping_parser(self.name))

    def check(self, arch: Mapping[str, Any], info: DatasetInfo) -> dict[str, Any]:
        return self.supernet(info).check_arch(arch)

    def save(self, folder: Path, arch: Mapping[str, Any], info: Optional[DatasetInfo] = None,
             write: bool = True) -> tuple[dict[str, Any], Path]:
        if info is None:
            raise ValueError("a module space's architecture file records its labels' fingerprint: pass info")
        labels = self.supernet(info).labels_key()
        if write:
            save_arch(folder, arch, self.title, labels)
        return {"arch": dict(arch), "space": self.description(), "space_fingerprint": labels}, folder / ARCH_FILE

    def load(self, folder: Path, done: dict[str, Any], marker: Path) -> tuple[dict[str, Any], Path, Optional[str]]:
        """The architecture file is what users hand on (result.json names it as the final desc):
        a deleted or edited one would quietly disagree with the architecture the eval trains."""
        path = folder / ARCH_FILE
        recorded = arch_document(done["arch"], "", None)["arch"] if isinstance(done["arch"], dict) else done["arch"]
        try:
            found: Any = parse_arch(str(path), done.get("space_fingerprint"))
            problem = "it holds another architecture"
        except SpaceError as exc:
            found, problem = None, str(exc)
        if found != recorded:
            raise DescError(f"{path} does not match the search result recorded in {marker} ({problem}): it was "
                            "deleted or changed after the search finished; restore it, or pass --restart to run the "
                            "search again (the old folder is kept)")
        return done["arch"], path, None

    def describe(self, arch: Mapping[str, Any]) -> str:
        return str(arch)

    # -- networks ----------------------------------------------------------------------------

    def network(self, arch: Mapping[str, Any], info: DatasetInfo) -> nn.Module:
        """The plain network of `arch`, from scratch (as `fixed_arch` builds it; a model with
        unlabelled choices is built whole and frozen: `build_network`)."""
        return build_network(lambda: self.model(info), arch)

    def tuned(self, arch: Mapping[str, Any], info: DatasetInfo, state: dict[str, Any],
              strategy: Optional["Strategy"] = None) -> nn.Module:
        """The trained supernet's network at `arch` (`freeze`), with the weights it trained."""
        supernet = self.supernet(info)
        supernet.load_state_dict(state)
        return freeze(supernet, arch)

    def fingerprint(self, arch: Optional[Mapping[str, Any]] = None, info: Optional[DatasetInfo] = None) -> str:
        """A stable hash of the space (and of one architecture of it, when given); the dataset
        does not enter it (the space's parameters and the config's dataset do)."""
        blob = json.dumps([self.description(), None if arch is None else sorted(
            (k, list(v) if isinstance(v, tuple) else v) for k, v in arch.items())], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def network_fingerprint(self, arch: Mapping[str, Any], info: DatasetInfo, tune: bool) -> str:
        """The same architecture retrained or tuned are different networks."""
        return self.fingerprint(arch) + ("-tune" if tune else "-retrain")

    def save_network(self, folder: Path, arch: Mapping[str, Any], info: DatasetInfo) -> None:
        save_arch(folder, arch, self.title, None)

    def model_file_space(self, arch: Mapping[str, Any], info: DatasetInfo) -> dict[str, Any]:
        return {**self.description(), "input_shape": [info.channels, *info.image_size], "n_classes": info.n_classes,
                "arch": dict(arch)}

    # -- genomes -----------------------------------------------------------------------------

    def genome(self, info: DatasetInfo) -> Genome:
        """The option number of every label, in the store's order (`archnas.latency.table`)."""
        supernet = self.supernet(info)
        specs = supernet.specs
        return Genome(tuple(option_count(s) for s in specs.values()), lambda arch: tuple(arch_to_row(specs, arch)),
                      lambda row: row_to_arch(specs, row), specs,
                      lambda row: supernet.arch_problem(row_to_arch(specs, row)) is None)

    def supernet_refusal(self) -> Optional[str]:
        """A space's factory says so with a `supernet_refusal` attribute (NAS-Bench-101's)."""
        return getattr(space_factory(self.name, self.factory)[1], "supernet_refusal", None)


def module_space(conf: Mapping[str, Any], key: str = "nas.search.space") -> ModuleSpace:
    """The space a non-empty config section names."""
    params = dict(conf)
    name, factory = params.pop("name", None), params.pop("factory", None)
    if (name is None) == (factory is None):
        raise ConfigError(f"{key}: give exactly one of name (a registered space, e.g. nb201) and factory "
                          f"('package.module:function'), got {dict(conf)}")
    for k, v in (("name", name), ("factory", factory)):
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{key}.{k}: expected a string, got {v!r}")
    return ModuleSpace(name, factory, params, key)
