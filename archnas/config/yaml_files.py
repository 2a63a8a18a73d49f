"""Reading config files: safe YAML, duplicate-key detection and `__include__`.

A file may name other files under a top-level `__include__` key (one path or a list, relative
to the including file). Included files are defaults: they are merged first, in order, and the
including file is merged over them. Includes nest; a cycle is an error that shows the chain.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

import yaml

from archnas.config.tree import MAX_DEPTH, ConfigTree, Path, too_deep
from archnas.errors import ConfigError

INCLUDE_KEY = "__include__"

# Nodes a YAML document may hold once its aliases are expanded. A config has a few hundred and a
# DARTS supernet's desc file tens of thousands; a "billion laughs" file of a few hundred bytes
# (nine anchors, each a list of nine aliases of the previous one) expands to 9**9 nodes, which
# every later walk over the data (merging, `_copy`, OmegaConf) would take hours and gigabytes to
# visit. The count is taken on the composed node graph, where an alias is one shared node, so
# counting is linear in the text however large the expansion.
MAX_YAML_NODES = 1_000_000
# A config file or a command-line value: the shipped configs have at most a few hundred nodes.
MAX_CONFIG_NODES = 100_000


class BoundedSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document whose aliases expand past `max_nodes` nodes."""

    max_nodes = MAX_YAML_NODES

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node, self.max_nodes)
        return node


def _check_expansion(root: yaml.Node, limit: int) -> None:
    """Raise a ComposerError when `root` expanded (every alias copied out) has more than `limit`
    nodes, or refers to itself (an anchor used inside its own value expands without end)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = _children(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > limit:
                raise yaml.composer.ComposerError(
                    None, None, f"its aliases expand to more than {limit:,} nodes (an alias bomb?); "
                    "write the values out instead of nesting aliases of aliases", node.start_mark)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise yaml.composer.ComposerError(
                None, None, "an anchor is used inside its own value, which expands without end", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def safe_load_bounded(text: str, max_nodes: int = MAX_YAML_NODES) -> Any:
    """`yaml.safe_load` for untrusted text: the same values, but a document whose aliases expand
    past `max_nodes` nodes is refused with a `yaml.YAMLError` instead of being walked for hours."""
    return _parse(text, BoundedSafeLoader, max_nodes)


def _parse(text: str, loader_class: type[BoundedSafeLoader], max_nodes: int) -> Any:
    loader = loader_class(text)
    loader.max_nodes = max_nodes
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line ("line 6, column 4: found ..."), for an `archnas: error:` message."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f"{exc.context} " if exc.context else ""
        return f"{where}{context}{exc.problem}"
    return " ".join(str(exc).split())


class _StrictLoader(BoundedSafeLoader):
    """Bounded SafeLoader that refuses duplicate keys, which PyYAML would silently collapse to the last."""


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
        data = _parse(text, _StrictLoader, MAX_CONFIG_NODES)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {yaml_problem(exc)}") from None
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


def load_config_file(path: str | FsPath, display_root: FsPath | None = None,
                     keyed: frozenset[Path] = frozenset()) -> ConfigTree:
    """Load a file and everything it includes into one tree with per-key sources (`keyed`: see
    ConfigTree)."""
    return _load(FsPath(path).resolve(), [], display_root or FsPath.cwd(), keyed)


def _display(path: FsPath, root: FsPath) -> str:
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _load(path: FsPath, chain: list[FsPath], root: FsPath, keyed: frozenset[Path]) -> ConfigTree:
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
    tree = ConfigTree(keyed=keyed)
    for inc in includes:
        inc_path = (path.parent / FsPath(inc).expanduser()).resolve()
        if not inc_path.is_file():
            raise ConfigError(f"{_display(path, root)}: included file {inc!r} not found (looked at {inc_path})")
        tree.merge_tree(_load(inc_path, chain + [path], root, keyed))
    tree.merge(data, _display(path, root))
    return tree
