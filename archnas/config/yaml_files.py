"""Reading config files: safe YAML, duplicate-key detection and `__include__`.

A file may name other files under a top-level `__include__` key (one path or a list, relative
to the including file). Included files are defaults: they are merged first, in order, and the
including file is merged over them. Includes nest; a cycle is an error that shows the chain.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

import yaml

from archnas.config.tree import MAX_DEPTH, ConfigTree, too_deep
from archnas.errors import ConfigError

INCLUDE_KEY = "__include__"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would silently collapse to the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {line}; first at line {seen[key]})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_mapping(path: FsPath) -> dict[str, Any]:
    """Parse one YAML file into a dict; anything but a mapping at the top is refused."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save the config file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config (more than {MAX_DEPTH} levels)") from None
    if data is None:
        # An empty file (or one of comments only) is almost always the wrong file or an unsaved
        # one; running the defaults instead would train something nobody asked for.
        raise ConfigError(f"{path}: the file is empty (no keys); a config file sets at least one key")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    if too_deep(data):
        raise ConfigError(f"{path}: nested too deeply to be a config (more than {MAX_DEPTH} levels)")
    _check_keys(data, path, ())
    return data


def _check_keys(node: Any, file: FsPath, prefix: tuple[str, ...]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                where = ".".join(prefix + (str(key),))
                raise ConfigError(f"{file}: key {where!r} must be a string, got {type(key).__name__}")
            if key == INCLUDE_KEY and prefix:
                raise ConfigError(f"{file}: {INCLUDE_KEY} is only allowed at the top level (found under {'.'.join(prefix)})")
            _check_keys(value, file, prefix + (key,))
    elif isinstance(node, list):
        for item in node:
            _check_keys(item, file, prefix)


def load_config_file(path: str | FsPath, display_root: FsPath | None = None) -> ConfigTree:
    """Load a file and everything it includes into one tree with per-key sources."""
    return _load(FsPath(path).resolve(), [], display_root or FsPath.cwd())


def _display(path: FsPath, root: FsPath) -> str:
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _load(path: FsPath, chain: list[FsPath], root: FsPath) -> ConfigTree:
    if path in chain:
        cycle = " -> ".join(_display(p, root) for p in chain + [path])
        raise ConfigError(f"include cycle: {cycle}")
    data = read_yaml_mapping(path)
    includes = data.pop(INCLUDE_KEY, None)
    if includes is None:
        includes = []
    elif isinstance(includes, str):
        includes = [includes]
    elif not (isinstance(includes, list) and all(isinstance(i, str) for i in includes)):
        raise ConfigError(f"{_display(path, root)}: {INCLUDE_KEY} must be a file path or a list of paths")
    tree = ConfigTree()
    for inc in includes:
        inc_path = (path.parent / FsPath(inc).expanduser()).resolve()
        if not inc_path.is_file():
            raise ConfigError(f"{_display(path, root)}: included file {inc!r} not found (looked at {inc_path})")
        tree.merge_tree(_load(inc_path, chain + [path], root))
    tree.merge(data, _display(path, root))
    return tree
