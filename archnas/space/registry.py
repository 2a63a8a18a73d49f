"""The space registry (timm-style): a name -> the factory of a search space (an `nn.Module` with
choices in it), and `create_space(name, input_shape, n_classes, **params)`; and beside it the
plain models a space can be generated from (`register_model`, `create_model`: the `model` of
`archnas.space.autogen`'s space), built the same way.

Built-in spaces register when `archnas.hub` is imported (the nas layer and the CLI import it); a
plugin module registers its own at import. A factory takes the dataset's `input_shape`
(`[channels, height, width]`) and `n_classes` by keyword, plus the space's own parameters. A
user factory named in a config (`module:function`) has the same signature.

Nothing here imports a module: a name (from a config, a model file) reaches only what built-ins
and the user's plugins registered, and a `module:function` only a function that a module loaded
as a plugin (`--import module`, an `archnas.plugins` entry point) defines itself.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional, Sequence

from torch import nn

from archnas.errors import SpaceError
from archnas.utils.plugins import plugin_module

SpaceFactory = Callable[..., nn.Module]
ArchParser = Callable[[str], dict]  # a space's own architecture strings (NB201's, names) -> {label: choice}
MappingParser = Callable[[dict], dict]  # a space's own architecture mappings (NB101's spec) -> {label: choice}
_SPACES: dict[str, SpaceFactory] = {}
_PARSERS: dict[str, ArchParser] = {}
_MAPPING_PARSERS: dict[str, MappingParser] = {}
_ALIASES: dict[str, dict[str, str]] = {}  # space -> {an older name of a parameter: its name now (NNI's)}
_MODELS: dict[str, SpaceFactory] = {}  # plain models (no choices) that spaces are generated from


def register_space(name: str, parse_arch: ArchParser | None = None, parse_mapping: MappingParser | None = None,
                   aliases: Mapping[str, str] | None = None) -> Callable[[SpaceFactory], SpaceFactory]:
    """Register a factory under `name`; `parse_arch` reads the space's own architecture strings,
    `parse_mapping` its own mappings (given every mapping read: it returns a `{label: choice}` one
    as it is); `aliases` maps older names of its parameters to the names it takes (NNI's), which
    `create_space` accepts too (both at once are refused). `n_classes: num_labels` lets the
    parameters give NNI's `num_labels`, which must then be the dataset's number of classes."""
    def add(factory: SpaceFactory) -> SpaceFactory:
        if name in _SPACES:
            raise ValueError(f"space {name!r} is registered twice")
        _SPACES[name] = factory
        if parse_arch is not None:
            _PARSERS[name] = parse_arch
        if parse_mapping is not None:
            _MAPPING_PARSERS[name] = parse_mapping
        if aliases:
            _ALIASES[name] = dict(aliases)
        return factory

    return add


def register_model(name: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Register the factory of a plain model under `name` (same signature as a space's factory)."""
    def add(factory: SpaceFactory) -> SpaceFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return add


def model_names() -> list[str]:
    return sorted(_MODELS)


def arch_parser(name: str | None) -> ArchParser | None:
    return _PARSERS.get(name) if name is not None else None


def mapping_parser(name: str | None) -> MappingParser | None:
    return _MAPPING_PARSERS.get(name) if name is not None else None


def space_names() -> list[str]:
    return sorted(_SPACES)


def space_module(name: str) -> Optional[str]:
    """The module whose factory is registered as `name` (a plugin to load before naming it), or None."""
    factory = _SPACES.get(name)
    return getattr(factory, "__module__", None) if factory is not None else None


def plugin_factory(spec: str) -> SpaceFactory:
    """`package.module:function` -> the function, when `package.module` is a loaded plugin that
    defines it (a SpaceError naming what failed, and the plugin to load)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise SpaceError(f"space factory {spec!r}: expected 'package.module:function'")
    module = plugin_module(module_name)
    if module is None:
        raise SpaceError(f"space factory {spec!r}: {module_name!r} is not a loaded plugin, and archnas imports no "
                         f"module on a file's say; if it is a plugin you trust, load it with --import {module_name} "
                         f"(in Python: archnas.utils.plugins.load_plugins([{module_name!r}]))")
    factory = vars(module).get(attr)
    # its own function: not a callable it imported from elsewhere (`from logging import basicConfig`)
    if not callable(factory) or getattr(factory, "__module__", None) != module_name:
        raise SpaceError(f"space factory {spec!r}: {module_name} has no callable {attr!r} of its own")
    return factory


def space_factory(name: str | None, factory: str | None) -> tuple[str, SpaceFactory]:
    """(what to call it, the factory) for a registered name or a `module:function` path."""
    if (name is None) == (factory is None):
        raise SpaceError("a space is named by exactly one of name (a registered space: "
                         f"{', '.join(space_names()) or 'none'}) and factory ('package.module:function')")
    if factory is not None:
        return factory, plugin_factory(factory)
    if name not in _SPACES:
        raise SpaceError(f"unknown space {name!r}; registered spaces: {', '.join(space_names()) or 'none'} "
                         "(a plugin's space is registered once the plugin is loaded: --import MODULE)")
    return name, _SPACES[name]


def create_space(name: str | None = None, *, factory: str | None = None, input_shape: Sequence[int] = (3, 32, 32),
                 n_classes: int = 10, **params: Any) -> nn.Module:
    """The model of a registered space (or of a factory), with its choices, not yet wrapped; an
    unknown parameter is a SpaceError listing the ones the factory takes."""
    what, fn = space_factory(name, factory)
    if name is not None and name in _ALIASES:
        params = _renamed(name, n_classes, params)
    return _call(f"space {what}", fn, input_shape, n_classes, params)


def _renamed(name: str, n_classes: int, params: dict[str, Any]) -> dict[str, Any]:
    """`params` under the names the factory takes: an alias renamed, NNI's `num_labels` checked
    against the dataset's classes (a SpaceError naming both names when both are given)."""
    out = dict(params)
    for old, new in _ALIASES[name].items():
        if old == "n_classes":
            if new in out and out.pop(new) != n_classes:
                raise SpaceError(f"space {name}: {new} is {params[new]!r}, but the dataset has {n_classes} classes "
                                 f"(n_classes); leave {new} out or make it {n_classes}")
        elif old in out:
            if new in out:
                raise SpaceError(f"space {name}: {old} and {new} are the same parameter ({new} is NNI's name, {old} "
                                 f"its alias); give one of them")
            out[new] = out.pop(old)
    return out


def create_model(name: str | None = None, *, factory: str | None = None, input_shape: Sequence[int] = (3, 32, 32),
                 n_classes: int = 10, **params: Any) -> nn.Module:
    """A plain model: a registered one (`plain_cnn`) or a loaded plugin's `module:function`,
    called as a space's factory is (a SpaceError naming what is wrong)."""
    if (name is None) == (factory is None):
        raise SpaceError("a model is named by exactly one of name (a registered model: "
                         f"{', '.join(model_names()) or 'none'}) and factory ('package.module:function')")
    if factory is not None:
        return _call(f"model {factory}", plugin_factory(factory), input_shape, n_classes, params)
    if name not in _MODELS:
        raise SpaceError(f"unknown model {name!r}; registered models: {', '.join(model_names()) or 'none'} (or "
                         "factory: 'package.module:function' of a plugin loaded with --import)")
    return _call(f"model {name}", _MODELS[name], input_shape, n_classes, params)


def _call(what: str, fn: SpaceFactory, input_shape: Sequence[int], n_classes: int, params: dict[str, Any]) -> nn.Module:
    """`fn(input_shape=, n_classes=, **params)`, its parameters checked first."""
    signature = inspect.signature(fn)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    accepted = [n for n in signature.parameters if n not in ("input_shape", "n_classes")]
    unknown = [k for k in params if k not in accepted]
    if unknown and not takes_any:
        raise SpaceError(f"{what}: unknown parameters {', '.join(unknown)}; it takes {', '.join(accepted) or 'none'}")
    kwargs = {"input_shape": tuple(input_shape), "n_classes": n_classes, **params}
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise SpaceError(f"{what}: {exc} (a factory takes input_shape=, n_classes= and its own "
                         "parameters by keyword)") from None
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise SpaceError(f"{what}: its factory returned a {type(model).__name__}, not an nn.Module")
    return model
