"""`_copy` references, resolved once, after every file and override has been merged.

Two forms, as in Archai:

* node form  ``trainer: {_copy: /nas/eval/trainer, epochs: 0}``: a deep copy of the target with
  the local keys merged over it (local keys win, mappings merge key by key);
* value form ``test_batch: '_copy: ../train_batch'``: the value is replaced by a copy of the target.

Paths starting with ``/`` are absolute. Paths starting with ``.`` or ``..`` are relative to the
key that holds the reference (``..`` is the mapping that contains it), like a file system where
every key is a file. A bare path (``common/seed``) is absolute, as Archai reads it.
A target is resolved before it is copied, so references inside it point where they pointed in
the source. Every copy is a new object: changing one section in code never changes another.
"""

from __future__ import annotations

import copy
from typing import Any

from archnas.config.tree import Path, dotted
from archnas.errors import ConfigError

COPY_KEY = "_copy"
VALUE_PREFIX = "_copy:"


def is_value_ref(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith(VALUE_PREFIX)


def is_node_ref(value: Any) -> bool:
    return isinstance(value, dict) and COPY_KEY in value


def ref_target(value: Any) -> str:
    """The path string of a reference in either form."""
    return value[COPY_KEY] if is_node_ref(value) else value.strip()[len(VALUE_PREFIX):].strip()


def parse_ref_path(ref: str, holder: Path) -> Path:
    """Turn a reference path into an absolute key path; `holder` is the key that holds it."""
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{dotted(holder)}: {COPY_KEY} needs a path such as '/nas/search/trainer', got {ref!r}")
    ref = ref.strip()
    if ref.startswith("/") or not ref.startswith("."):
        base: list[str] = []
    else:
        base = list(holder)
    for part in ref.strip("/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not base:
                raise ConfigError(f"{dotted(holder)}: {COPY_KEY} path {ref!r} goes above the root")
            base.pop()
        else:
            base.append(part)
    return tuple(base)


class _Resolver:
    def __init__(self, root: dict[str, Any]):
        self.root = root
        self.done: dict[Path, Any] = {}
        self.active: list[Path] = []

    def resolve(self, raw: Any, path: Path) -> Any:
        if path in self.done:
            return self.done[path]
        if path in self.active:
            chain = self.active[self.active.index(path):] + [path]
            raise ConfigError(f"{COPY_KEY} cycle: {' -> '.join('/' + '/'.join(p) for p in chain)}")
        self.active.append(path)
        try:
            value = self._resolve_uncached(raw, path)
        finally:
            self.active.pop()
        self.done[path] = value
        return value

    def _resolve_uncached(self, raw: Any, path: Path) -> Any:
        if is_value_ref(raw):
            return copy.deepcopy(self.lookup(parse_ref_path(ref_target(raw), path), path))
        if is_node_ref(raw):
            base = copy.deepcopy(self.lookup(parse_ref_path(raw[COPY_KEY], path), path))
            local = {k: self.resolve(v, path + (k,)) for k, v in raw.items() if k != COPY_KEY}
            if not local:
                return base
            if not isinstance(base, dict):
                raise ConfigError(
                    f"{dotted(path)}: {COPY_KEY} target {raw[COPY_KEY]!r} is a {type(base).__name__}, "
                    "so it cannot take local keys; use the value form '_copy: path'"
                )
            return _deep_merge(base, local)
        if isinstance(raw, dict):
            return {k: self.resolve(v, path + (k,)) for k, v in raw.items()}
        return copy.deepcopy(raw)

    def lookup(self, target: Path, holder: Path) -> Any:
        """The resolved value at `target`, resolving only what lies on the way."""
        node: Any = self.root
        walked: Path = ()
        for i, key in enumerate(target):
            if is_value_ref(node) or is_node_ref(node):
                # The rest of the path lives inside a copy: resolve that node, then walk plainly.
                return self._walk_resolved(self.resolve(node, walked), target, i, holder)
            if not isinstance(node, dict) or key not in node:
                raise self._missing(target, walked, holder)
            node = node[key]
            walked = walked + (key,)
        return self.resolve(node, walked)

    def _walk_resolved(self, node: Any, target: Path, start: int, holder: Path) -> Any:
        for i in range(start, len(target)):
            if not isinstance(node, dict) or target[i] not in node:
                raise self._missing(target, target[:i], holder)
            node = node[target[i]]
        return node

    @staticmethod
    def _missing(target: Path, found: Path, holder: Path) -> ConfigError:
        where = "/" + "/".join(found) if found else "the root"
        missing = target[len(found)]
        return ConfigError(
            f"{dotted(holder)}: {COPY_KEY} target /{'/'.join(target)} does not exist (no key {missing!r} under {where})"
        )


def _deep_merge(base: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    for key, value in local.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def resolve_copies(data: dict[str, Any]) -> dict[str, Any]:
    """A new tree with every `_copy` reference replaced by a deep copy of its target."""
    return _Resolver(data).resolve(data, ())


def has_refs(node: Any) -> bool:
    if is_value_ref(node) or is_node_ref(node):
        return True
    if isinstance(node, dict):
        return any(has_refs(v) for v in node.values())
    return False
