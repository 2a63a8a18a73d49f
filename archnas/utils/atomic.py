"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A reader (or a resumed run) sees either the old file or the new one, never half of one,
whenever the process is killed. A write the file system refuses (read-only, full, no
permission) leaves the old file as it was, removes the temp file and raises `OutputError`, one
line naming the file and the reason, which the CLI prints without a traceback.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Optional

import torch

from archnas.errors import OutputError

# What the file system, not archnas, refuses: the user frees space or picks a writable folder.
_REFUSED_WRITES = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EFBIG}


def _umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_failure(exc: OSError, path: str | Path | None = None) -> Optional[OutputError]:
    """The OutputError for a write the file system refused (None for other OSErrors, which are
    bugs and keep their traceback); `path` is the file being written when `exc` does not name it
    (a failed `write` on an open file names none)."""
    if exc.errno not in _REFUSED_WRITES:
        return None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        advice = "free some space and rerun: finished phases and checkpoints are kept and resumed"
    else:
        advice = "make it writable or choose another common.results_dir / common.cache_dir, then rerun"
    where = f"cannot write {path}" if path is not None else (exc.filename or "a file")
    return OutputError(f"{where}: {exc.strerror}; {advice}")


def _atomic(path: str | Path, write: Callable[[IO[bytes]], None], shown: str | Path | None = None) -> None:
    path = Path(path)
    shown = path if shown is None else shown
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failure(exc, shown) or exc from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file a normal file's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        failure = write_failure(exc, shown) if isinstance(exc, OSError) else None
        if failure is not None:
            raise failure from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def write_bytes(path: str | Path, data: bytes, only_if_changed: bool = False, shown: str | Path | None = None) -> None:
    """`only_if_changed`: leave a file that already holds `data` alone (a rerun that has nothing
    new to say then writes nothing, so it also succeeds where the folder has become read-only).
    `shown`: the file a refusal names when `path` is a staging name the user never sees."""
    if only_if_changed and _holds(Path(path), data):
        return
    _atomic(path, lambda f: f.write(data), shown)


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def write_text(path: str | Path, text: str, only_if_changed: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), only_if_changed)


def write_json(path: str | Path, obj: Any, only_if_changed: bool = False) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", only_if_changed)


def torch_save(path: str | Path, obj: Any) -> None:
    """Serialized in memory first: torch's writer turns a failed write into a RuntimeError that
    no longer says which OSError it was, and a full disk must read as one."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())
