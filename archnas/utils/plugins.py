"""User plugins: modules that register ops, datasets, algorithms or spaces when imported.

Two ways in, both loaded before a run reads its config: the installed packages' entry points of
the group `archnas.plugins` (each names a module, e.g. in pyproject.toml
`[project.entry-points."archnas.plugins"] my_ops = "my_package.archnas_ops"`) and the modules
named with `--import` on the command line. Importing is all that happens: a module registers
what it defines at import time, and importing it again (a second run in one process) is a no-op.
A plugin that fails to import is the user's error, reported as one message (exit code 2) that
names the plugin and where it failed, never a traceback.

These are the only modules archnas imports on anyone's say: a `module:function` a config or a
model file names resolves only in a module loaded here (`plugin_module`), never by importing it.
"""

from __future__ import annotations

import importlib
import traceback
from importlib.metadata import entry_points
from types import ModuleType
from typing import Optional, Sequence

from archnas.errors import ConfigError

GROUP = "archnas.plugins"
_LOADED: dict[str, ModuleType] = {}  # the registration table of this process's plugins, by module name


def load_plugins(modules: Sequence[str]) -> list[str]:
    """Import every `archnas.plugins` entry point, then `modules` in order; the names imported."""
    loaded = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist = f" of {ep.dist.name}" if getattr(ep, "dist", None) is not None else ""
        _import(ep.module, f"entry point {ep.name} = {ep.value!r} ({GROUP}{dist})")
        loaded.append(ep.module)
    for name in modules:
        _import(name, f"--import {name}")
        loaded.append(name)
    return loaded


def plugin_module(name: str) -> Optional[ModuleType]:
    """The module `name` if this process loaded it as a plugin (an entry point or `--import`), else
    None: what a name read from a file may point into, so that no file picks the code archnas runs."""
    return _LOADED.get(name)


def import_flags(argv: Sequence[str]) -> list[str]:
    """The `--import` modules of a command line, for a process (a Ray worker) that must load the
    same plugins as the command that started it."""
    out = []
    for i, token in enumerate(argv):
        if token == "--import" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif token.startswith("--import="):
            out.append(token.split("=", 1)[1])
    return out


def _import(module: str, what: str) -> None:
    try:
        _LOADED[module] = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise ConfigError(f"{what}: cannot import it: there is no module {module!r}; is it installed or on "
                              "PYTHONPATH?") from None
        raise ConfigError(f"{what}: importing it failed{_where(exc)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (any failure of user code: one message, the run never starts)
        raise ConfigError(f"{what}: importing it failed{_where(exc)}: {type(exc).__name__}: {exc}") from None


def _where(exc: BaseException) -> str:
    """` at file:line`, the innermost frame of the failure, to find it without a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
