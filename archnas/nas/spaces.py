"""A search space over a module, as the phases use it: `nas.search.space` (or `nas.eval.space`)
-> the supernet, its architectures, the network of one architecture.

    space = module_space(conf.nas.search.space)      # None: the DARTS cell supernet of model_desc
    supernet = space.supernet(info)                  # a SearchSpaceModel
    arch = space.parse(text, supernet.fingerprint()) # an architecture file, mapping or NB201 string
    net = space.network(arch, info)                  # built from scratch at arch (fixed_arch)

The description (`name` or `factory`, and the parameters) is what results record: with an
architecture it identifies a final network, so checkpoints and markers of another one are not
reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from torch import nn

import archnas.hub  # noqa: F401  (registers the built-in spaces)
from archnas.descs.dataset_info import DatasetInfo
from archnas.errors import ConfigError, SpaceError
from archnas.space import SearchSpaceModel, create_space, fixed_arch
from archnas.space.arch_io import parse_arch
from archnas.space.registry import arch_parser

ARCH_FILE = "arch.yaml"


@dataclass(frozen=True)
class ModuleSpace:
    name: Optional[str]
    factory: Optional[str]
    params: dict[str, Any]
    key: str  # where it was configured, for messages

    @property
    def title(self) -> str:
        return self.name or self.factory or "?"

    def description(self) -> dict[str, Any]:
        return {"name": self.name, "factory": self.factory, "params": dict(self.params)}

    def model(self, info: DatasetInfo) -> nn.Module:
        """The user's model with its choices, for this dataset's images and classes."""
        return create_space(self.name, factory=self.factory, input_shape=(info.channels, *info.image_size),
                            n_classes=info.n_classes, **self.params)

    def supernet(self, info: DatasetInfo) -> SearchSpaceModel:
        return SearchSpaceModel(self.model(info))

    def network(self, arch: Mapping[str, Any], info: DatasetInfo) -> nn.Module:
        """The plain network of `arch`, from scratch (as `fixed_arch` builds it)."""
        with fixed_arch(arch):
            return self.model(info)

    def parse(self, text: str, fingerprint: Optional[str] = None) -> dict[str, Any]:
        return parse_arch(text, fingerprint, arch_parser(self.name))

    def fingerprint(self, arch: Optional[Mapping[str, Any]] = None) -> str:
        """A stable hash of the space (and of one architecture of it, when given)."""
        blob = json.dumps([self.description(), None if arch is None else sorted(
            (k, list(v) if isinstance(v, tuple) else v) for k, v in arch.items())], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def module_space(conf: Mapping[str, Any], key: str = "nas.search.space") -> Optional[ModuleSpace]:
    """The space a config section names, or None when it is empty (the DARTS cell supernet)."""
    if not conf:
        return None
    params = dict(conf)
    name, factory = params.pop("name", None), params.pop("factory", None)
    if (name is None) == (factory is None):
        raise ConfigError(f"{key}: give exactly one of name (a registered space, e.g. nb201) and factory "
                          f"('package.module:function'), got {dict(conf)}")
    for k, v in (("name", name), ("factory", factory)):
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{key}.{k}: expected a string, got {v!r}")
    return ModuleSpace(name, factory, params, key)


def eval_space(conf: Any) -> Optional[ModuleSpace]:
    """The space of the eval phase: `nas.eval.space`, else the search's."""
    if conf.nas.eval.space:
        return module_space(conf.nas.eval.space, "nas.eval.space")
    return module_space(conf.nas.search.space)


def check_space(space: ModuleSpace, info: DatasetInfo) -> SearchSpaceModel:
    """The supernet, with a SpaceError about the space turned into one naming the config key."""
    try:
        return space.supernet(info)
    except SpaceError as exc:
        raise SpaceError(f"{space.key} ({space.title}): {exc}") from None
