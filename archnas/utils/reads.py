"""Bounded reads of files a user names or a results folder holds: regular files only, size-capped.

Reading `/dev/zero`, a FIFO or a multi-gigabyte file where a small YAML or JSON file was
expected would fill memory (or block) before any parser could object. Every such read goes
through here: the file is opened without blocking, checked to be a regular file, and read to at
most `limit` bytes. Refusals are `OSError`s whose `strerror` says what the path is instead ("is
a directory", "not a regular file (a character device)", "too large: ..."), so a caller's
existing `except OSError` turns them into its own one-line message.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import stat
from pathlib import Path
from typing import Any

import torch

TEXT_LIMIT = 64 * 2**20  # desc, architecture, marker and result files are kilobytes; 64 MiB is ample


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def _refuse_stat(st: os.stat_result, path: Path, limit: int | None) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, f"not a regular file ({_kind(st.st_mode)})", str(path))
    if limit is not None and st.st_size > limit:
        raise too_large(path, st.st_size, limit)


def too_large(path: Path, size: int, limit: int) -> OSError:
    """The refusal of a file over `limit` bytes (`size` is what was seen: at least limit + 1)."""
    return OSError(errno.EFBIG, f"too large ({_mib(size)}; at most {_mib(limit)} is read from such a file)", str(path))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def check_regular(path: str | Path, limit: int | None = None) -> None:
    """Raise an OSError unless `path` is a regular file (of at most `limit` bytes): for readers
    that take a path themselves (`torch.load`). Never opens the file, so a FIFO cannot block it."""
    path = Path(path)
    _refuse_stat(os.stat(path), path, limit)


def read_bytes(path: str | Path, limit: int = TEXT_LIMIT) -> bytes:
    """The content of the regular file `path`, refused (OSError) when it is anything else or
    holds more than `limit` bytes (also when it grows past `limit` while being read)."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens without waiting for a writer
    try:
        _refuse_stat(os.fstat(fd), path, limit)
        os.set_blocking(fd, True)
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise too_large(path, size, limit)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str | Path, limit: int = TEXT_LIMIT) -> str:
    """`read_bytes` decoded as UTF-8 (a UnicodeDecodeError for other bytes, as `Path.read_text`)."""
    return read_bytes(path, limit).decode("utf-8")


def torch_load_plain(path: str | Path, limit: int | None = None) -> Any:
    """`torch.load(weights_only=True)` of the regular file `path` onto the CPU: tensors and plain
    values only, so reading runs no code from the file.

    A path that is not a regular file (or is over `limit` bytes) is an OSError as in `read_bytes`;
    anything torch refuses or cannot parse is a ValueError with a one-line reason (torch's own
    refusal of a pickled object spans several lines and advises `weights_only=False`, which is
    exactly what must not be done with a file of unknown origin)."""
    check_regular(path, limit)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only load failed" not in text.lower():
            raise ValueError(f"truncated or corrupt (UnpicklingError: {_first_line(text)})") from None
        named = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"names {named.group(1)}, which" if named else "holds a Python object that"
        raise ValueError(f"refused: it {what} loading would have to import or call; archnas reads tensors and "
                         "plain values only, and such a file must never be loaded with code enabled") from None
    except Exception as exc:  # zipfile, unpickling and torch fail differently on a damaged file
        raise ValueError(f"truncated or corrupt ({type(exc).__name__}: {_first_line(str(exc))})") from None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else ""
