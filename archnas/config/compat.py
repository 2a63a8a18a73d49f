"""When a saved result or checkpoint belongs to the current config: the compatibility policy.

A phase records the parts of the experiment config that shape it (`phase_config`: `common`,
`dataset`, `nas.algo` and the phase's own section) in its checkpoints and completion marker. A
rerun may go on from them when those are equal apart from keys that are safe to change
(`SAFE_KEYS`: epochs, logging, TensorBoard, checkpoint frequency, ...) and the model fingerprint
is the same (`resume_differences`). A key a newer archnas added, absent from what an older run
recorded, counts as unchanged while it is at its default (`config_changes`): the default computes
what the older version computed, so adding a setting does not strand every results folder.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Optional

from archnas.config import config_diff, config_to_dict
from archnas.config.schema import experiment_conf_class

# Dotted config keys (fnmatch patterns) whose change does not alter what the run computes.
SAFE_KEYS = (
    "common.experiment_name",
    "common.results_dir",
    "common.resume",
    "common.log_level",
    "common.log_every_steps",
    "common.log_every_seconds",
    "common.tensorboard",
    "common.cache_dir",
    "common.checkpoint.*",
    "common.ray.*",
    "*.trainer.epochs",
    "*.loader.workers",
)


def is_safe_key(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in SAFE_KEYS)


def section_path(root: Any, section: Any) -> Optional[tuple[str, ...]]:
    """Where `section` (by identity) sits in a config tree of dataclasses, e.g. ("nas", "search")."""
    if root is section:
        return ()
    if dataclasses.is_dataclass(root) and not isinstance(root, type):
        for f in dataclasses.fields(root):
            sub = section_path(getattr(root, f.name), section)
            if sub is not None:
                return (f.name,) + sub
    return None


def phase_config(conf: Any, section: Any) -> dict[str, Any]:
    """The parts of the experiment config that shape one phase, as plain data.

    A phase does not depend on the other phases' sections; when `section` is not part of `conf`,
    the whole config is used.
    """
    path = section_path(conf, section) if section is not None else None
    full = config_to_dict(conf)
    if not path or not hasattr(conf, "common"):
        return full
    out: dict[str, Any] = {"common": full["common"], "dataset": full["dataset"]}
    if "nas" in full:
        out["nas"] = {"algo": full["nas"]["algo"]}
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = config_to_dict(section)
    return out


ABSENT = "<absent>"


def lookup(tree: Any, dotted: str) -> Any:
    """The value at a dotted key of a plain config tree, or ABSENT."""
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return ABSENT
        tree = tree[key]
    return tree


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Dotted keys that differ between a recorded config and the current one, reading a key the
    record lacks (added by a later version of archnas) as its default."""
    return config_diff(_with_defaults(saved, now, config_to_dict(experiment_conf_class()())), now)


def _with_defaults(saved: Any, now: Any, defaults: Any) -> Any:
    """`saved`, with every key `now` has and `saved` lacks set to its default (where it has one)."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return saved
    out = dict(saved)
    for key, value in now.items():
        default = defaults.get(key, ABSENT) if isinstance(defaults, dict) else ABSENT
        if key not in out:
            if default is not ABSENT:
                out[key] = default
        else:
            out[key] = _with_defaults(out[key], value, default)
    return out


def resume_differences(saved: dict[str, Any], saved_fingerprint: Optional[str], config: dict[str, Any],
                       fingerprint: Optional[str]) -> tuple[list[str], list[str]]:
    """(`key: old -> new` lines that forbid going on, keys that changed but are safe to change)."""
    diff = config_changes(saved, config)
    unsafe = [f"{k}: {lookup(saved, k)!r} -> {lookup(config, k)!r}" for k in diff if not is_safe_key(k)]
    if saved_fingerprint != fingerprint:
        unsafe.append(f"model fingerprint: {saved_fingerprint!r} -> {fingerprint!r}")
    return unsafe, [k for k in diff if is_safe_key(k)]
