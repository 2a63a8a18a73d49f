"""A plain nested-dict config tree that remembers which source set each key.

Every layer (schema defaults, each YAML file, each command-line override) is merged into one
tree; the provenance map lets an error about `nas.search.trainer.epoch` say which file wrote it.
Paths are tuples of keys; `dotted(path)` is how users spell them.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Any, Iterator

Path = tuple[str, ...]


# Deeper than any real config by far; PyYAML, the `_copy` resolver and OmegaConf all recurse, so
# a tree much deeper than this would end in a RecursionError instead of a message.
MAX_DEPTH = 40


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path) if path else "<root>"


def too_deep(node: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether mappings and lists nest more than `limit` levels (iterative: never recurses itself)."""
    stack = [(node, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return False


# The keys that say which thing a keyed mapping describes (a search space: its registered name or
# its factory). The other keys are that thing's parameters, meaningless for another one.
IDENTITY_KEYS = ("name", "factory")


def renames(old: Any, new: Any) -> bool:
    """Whether mapping `new`, merged over mapping `old`, names another thing (see IDENTITY_KEYS)."""
    if not (isinstance(old, dict) and isinstance(new, dict)) or not any(k in new for k in IDENTITY_KEYS):
        return False
    return any(old.get(k) != new.get(k) for k in IDENTITY_KEYS)


@dataclass
class ConfigTree:
    """Config values as plain dicts/lists/scalars, plus the source of every node.

    `keyed`: paths of mappings that describe one named thing (`nas.search.space`): merging one
    that names another thing replaces the mapping instead of merging into it, so a config that
    includes another and picks a different space does not inherit the other space's parameters."""

    data: dict[str, Any] = field(default_factory=dict)
    sources: dict[Path, str] = field(default_factory=dict)
    keyed: frozenset[Path] = frozenset()

    def merge(self, other: dict[str, Any], source: str, base: Path = ()) -> None:
        """Merge `other` into the subtree at `base`; mappings merge key by key, anything else replaces."""
        target = self.get(base) if base else self.data
        _merge_into(target, other, base, self.sources, source, keyed=self.keyed)

    def merge_tree(self, other: "ConfigTree") -> None:
        """Merge another tree, keeping the sources it recorded."""
        _merge_into(self.data, other.data, (), self.sources, None, other.sources, keyed=self.keyed)

    def get(self, path: Path) -> Any:
        node: Any = self.data
        for key in path:
            node = node[key]
        return node

    def set(self, path: Path, value: Any, source: str) -> None:
        parent = self.get(path[:-1])
        parent[path[-1]] = copy.deepcopy(value)
        _forget_below(self.sources, path)
        _record(self.sources, path, value, source)

    def source_of(self, path: Path) -> str | None:
        """The source of `path`, or of its nearest ancestor that has one."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.sources:
                return self.sources[path[:n]]
        return None


def iter_paths(node: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every key path in a nested dict, parents before children."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = prefix + (key,)
            yield path
            yield from iter_paths(value, path)


def suggest(wanted: str, candidates: list[str], n: int = 3) -> list[str]:
    """The existing dotted keys closest to a misspelt one, best first."""
    close = difflib.get_close_matches(wanted, candidates, n=n, cutoff=0.6)
    if close:
        return close
    # A right leaf name under the wrong section is a common slip: match on the last part too.
    leaf = wanted.rsplit(".", 1)[-1]
    by_leaf = [c for c in candidates if difflib.SequenceMatcher(None, leaf, c.rsplit(".", 1)[-1]).ratio() >= 0.8]
    return by_leaf[:n]


def did_you_mean(wanted: str, candidates: list[str]) -> str:
    close = suggest(wanted, candidates)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _merge_into(
    target: dict[str, Any],
    other: dict[str, Any],
    base: Path,
    sources: dict[Path, str],
    source: str | None,
    other_sources: dict[Path, str] | None = None,
    keyed: frozenset[Path] = frozenset(),
) -> None:
    for key, value in other.items():
        path = base + (key,)
        # `_copy` nodes must not be deep-merged with what they replace: they stand on their own.
        mergeable = isinstance(value, dict) and "_copy" not in value
        if path in keyed and renames(target.get(key), value):
            mergeable = False
        if mergeable and isinstance(target.get(key), dict):
            if other_sources is not None and path in other_sources:
                sources[path] = other_sources[path]
            _merge_into(target[key], value, path, sources, source, other_sources, keyed)
            continue
        target[key] = copy.deepcopy(value)
        _forget_below(sources, path)
        if other_sources is None:
            _record(sources, path, value, source or "?")
        else:
            for p, s in other_sources.items():
                if p[: len(path)] == path:
                    sources[p] = s


def _forget_below(sources: dict[Path, str], path: Path) -> None:
    for p in [p for p in sources if p[: len(path)] == path]:
        del sources[p]


def _record(sources: dict[Path, str], path: Path, value: Any, source: str) -> None:
    sources[path] = source
    for sub in iter_paths(value, path):
        sources[sub] = source
