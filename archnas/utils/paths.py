"""Folders named in a config (`common.results_dir`, `common.cache_dir`), checked before use.

A folder key that points at a file, or below one, would otherwise end deep inside a run in a
NotADirectoryError from whichever write came first; checking the path up front names the key.
"""

from __future__ import annotations

from pathlib import Path

from archnas.errors import ConfigError


def checked_folder(value: str, key: str) -> Path:
    """`value` as a path that is a folder or can become one (nothing is created)."""
    if "\0" in value:
        raise ConfigError(f"{key}: {value!r} holds a NUL character, which no file name may")
    path = Path(value).expanduser()
    try:
        for part in (path, *path.parents):
            if part.exists():
                if not part.is_dir():
                    where = "is a file" if part == path else f"is below {part}, which is a file"
                    raise ConfigError(f"{key}: {value} {where}; it must name a folder (created when missing)")
                break
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL character
        raise ConfigError(f"{key}: {value[:200]!r} cannot be a folder: {getattr(exc, 'strerror', None) or exc}") from None
    return path
