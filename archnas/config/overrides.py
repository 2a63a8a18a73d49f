"""Command-line overrides: `--a.b.c value`, `--a.b.c=value` and `a.b.c=value`.

Values are parsed as YAML (`3`, `0.1`, `true`, `null`, `[1, 2]`, `{a: 1}`, `cosine`) and checked
against the value they replace, so a typo in a key or a value of the wrong kind is an error that
names it, never silently ignored. A mapping merges into a mapping key by key, with the same checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from archnas.config.copy_refs import COPY_KEY, is_value_ref, ref_target, resolve_copies
from archnas.config.tree import IDENTITY_KEYS, MAX_DEPTH, ConfigTree, Path, did_you_mean, dotted, iter_paths, too_deep
from archnas.config.yaml_files import MAX_CONFIG_NODES, safe_load_bounded
from archnas.errors import ConfigError


# A number in exponent notation without a dot (`1e-4`, `-2E3`), which YAML 1.1 leaves a string.
_FLOAT_TEXT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


@dataclass(frozen=True)
class Override:
    key: str
    text: str
    origin: str  # how the user wrote it, quoted back in error messages

    @property
    def path(self) -> Path:
        return tuple(self.key.split("."))


def parse_override_tokens(tokens: list[str], known_flags: set[str],
                          valued_flags: frozenset[str] | set[str] = frozenset()) -> tuple[list[Override], list[str]]:
    """Split argv into overrides and the tokens argparse should see (known flags and their values).

    The token after a flag of `valued_flags` (written without `=`) is that flag's value, whatever
    it holds: `--genotype "Genotype(normal=[...], ...)"` has `=` in it but is no override."""
    overrides: list[Override] = []
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--":
            rest.extend(tokens[i:])
            break
        if tok.startswith("-") and tok.split("=", 1)[0] in known_flags:
            takes_next = "=" not in tok and tok in valued_flags and i + 1 < len(tokens)
            rest.extend(tokens[i : i + 2] if takes_next else [tok])
            i += 2 if takes_next else 1
            continue
        if tok.startswith("--"):
            name = tok.split("=", 1)[0]
            key = name[2:]
            if "=" in tok:
                overrides.append(Override(key, tok.split("=", 1)[1], tok))
                i += 1
            elif i + 1 < len(tokens):
                overrides.append(Override(key, tokens[i + 1], f"{tok} {tokens[i + 1]}"))
                i += 2
            else:
                raise ConfigError(f"{tok} needs a value, e.g. '{tok} 3' or '{tok}=3'")
            continue
        if "=" in tok and not tok.startswith("-"):
            key, text = tok.split("=", 1)
            overrides.append(Override(key, text, tok))
        else:
            rest.append(tok)
        i += 1
    for ov in overrides:
        if not ov.key or any(not part for part in ov.path):
            raise ConfigError(f"{ov.origin}: {ov.key!r} is not a config key; write keys as dotted paths like nas.search.trainer.epochs")
    return overrides, rest


def parse_value(ov: Override) -> Any:
    deep = ConfigError(f"{ov.origin}: the value is nested too deeply (more than {MAX_DEPTH} levels)")
    try:
        value = safe_load_bounded(ov.text, MAX_CONFIG_NODES) if ov.text.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{ov.origin}: the value {ov.text!r} is not valid YAML ({problem})") from None
    except RecursionError:
        raise deep from None
    if too_deep(value):
        raise deep
    return value


def apply_overrides(tree: ConfigTree, overrides: list[Override], kinds: dict[Path, str],
                    check: Callable[[ConfigTree], None] = lambda tree: None) -> None:
    """Apply overrides in order. `kinds` marks schema fields that the current values cannot tell
    about: "free" mappings that accept new keys and "str" fields (which may currently be null).
    `check` runs on the tree before each override: the `_copy` view an override is checked against
    would otherwise blame an emptied section on a copy of it elsewhere."""
    origins = {ov.origin for ov in overrides}
    for ov in overrides:
        check(tree)
        view = resolve_copies(tree.data)  # what the run would see, copies included
        if kinds.get(ov.path) == "str" and ov.text.strip() not in ("null", "~"):
            value: Any = ov.text  # a string field takes the text as typed, never parsed as YAML
        else:
            value = parse_value(ov)
        if ov.path[:-1] in tree.keyed and ov.path[-1] in IDENTITY_KEYS:
            _start_afresh(tree, ov, value, origins)
        _apply_one(tree, view, ov, ov.path, value, ov.text, kinds)


def _start_afresh(tree: ConfigTree, ov: Override, value: Any, origins: set[str]) -> None:
    """A new space name (or factory) starts from that space's parameters: the section keeps only
    what other overrides set in it, not the parameters files gave the space it replaces."""
    section = ov.path[:-1]
    current = tree.get(section) if _lookup(tree.data, section)[0] else None
    if not isinstance(current, dict) or current.get(ov.path[-1]) == value:
        return
    kept = {k: v for k, v in current.items() if tree.sources.get(section + (k,)) in origins}
    kept_sources = {section + (k,): tree.sources[section + (k,)] for k in kept}
    tree.set(section, kept, ov.origin)
    tree.sources.update(kept_sources)


def _apply_one(
    tree: ConfigTree, view: dict, ov: Override, path: Path, value: Any, text: str | None, kinds: dict[Path, str]
) -> None:
    exists, current = _lookup(view, path)
    if not exists:
        parent_exists, parent = _lookup(view, path[:-1])
        open_parent = parent_exists and (parent is None or kinds.get(path[:-1]) == "free")
        if not open_parent:
            candidates = [dotted(p) for p in iter_paths(view)]
            raise ConfigError(f"{ov.origin}: unknown config key {dotted(path)!r}{did_you_mean(dotted(path), candidates)}")
        _set_raw(tree, path, value, ov.origin)
        return
    if isinstance(current, dict) and isinstance(value, dict) and kinds.get(path) != "free":
        for key, sub in value.items():
            _apply_one(tree, view, ov, path + (str(key),), sub, None, kinds)
        return
    if kinds.get(path) == "str" and value is not None and text is not None:
        # A string field takes the text as typed, whatever YAML would make of it: `yes`, `007`, a
        # genotype, an inline {label: choice} architecture.
        _set_raw(tree, path, text.strip(), ov.origin)
        return
    if kinds.get(path) == "float" and isinstance(current, int) and not isinstance(current, bool):
        current = float(current)  # a whole number written into a number field: still a number field
    _set_raw(tree, path, _checked(ov, path, current, value, text), ov.origin)


def _checked(ov: Override, path: Path, current: Any, value: Any, text: str | None) -> Any:
    """`value` converted to the kind of `current`, or an error saying what was expected."""
    if current is None or value is None:
        return value  # null accepts anything; the schema decides whether a key may be null
    key = dotted(path)

    def wrong(expected: str) -> ConfigError:
        shown = text if text is not None else repr(value)
        return ConfigError(f"{ov.origin}: {key!r} expects {expected} (current value {current!r}), got {shown!r}")

    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise wrong("true or false")
    if isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong("an integer")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            # YAML 1.1 reads `1e-4` (no dot) as a string; a config file's `lr: 1e-4` reaches the
            # float field as that string too and is converted there, so the command line does the same.
            return float(value)
        raise wrong("a number")
    if isinstance(current, str):
        if isinstance(value, (dict, list)):
            raise wrong("a string")
        # The raw text, so that `yes`, `1e3` or `007` stay the strings the user typed.
        return text.strip() if text is not None else str(value)
    if isinstance(current, list):
        if isinstance(value, list):
            return value
        raise wrong("a list, e.g. [1, 2]")
    if isinstance(current, dict):
        if isinstance(value, dict):
            return value
        raise wrong("a mapping, e.g. {a: 1}")
    return value


def _lookup(node: Any, path: Path) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _set_raw(tree: ConfigTree, path: Path, value: Any, source: str) -> None:
    """Set `path` in the unresolved tree; keys inside a `_copy` become local keys of that copy."""
    node = tree.data
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if is_value_ref(child):
            child = node[key] = {COPY_KEY: ref_target(child)}
        elif not isinstance(child, dict):
            child = node[key] = {}
        node = child
    tree.set(path, value, source)
