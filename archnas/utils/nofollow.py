"""Writing into a results folder without following a link planted there.

Anyone who can write in a results folder can put a symbolic link where a run writes (`log.txt`
pointing at `~/.bashrc`): a run that opened it as a path would append to the link's target.
Files written whole are safe already (`archnas.utils.atomic` renames a new file over the name,
replacing a link, not writing through it). Files a run appends to (the phase's log, its
metrics lines) and the folders it fills (TensorBoard's `tb/`) go through here: a link, or another
thing that is not what the run writes there (a FIFO, which would block the run), is removed first
and said so, and the file is then opened with O_NOFOLLOW, so a link planted in between fails the
open rather than redirecting it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TextIO

from archnas.errors import UsageError


def unplant(path: Path, log: logging.Logger, folder: bool = False) -> None:
    """Remove what stands at `path` if it is not a regular file (`folder`: a real folder) that the
    run can write into, and log a warning saying what it was; the target of a link is untouched."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"cannot look at {path}: {exc.strerror or exc}") from None
    if (stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)):
        return
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a folder where archnas writes a file; move it away")
    if stat.S_ISLNK(st.st_mode):
        try:
            what = f"a symbolic link to {os.readlink(path)}"
        except OSError:
            what = "a symbolic link"
    else:
        what = "not a regular file"
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"{path} is {what}, which archnas does not write through, and it cannot be removed: "
                         f"{exc.strerror or exc}") from None
    log.warning(f"{path} was {what}: replaced with a {'folder' if folder else 'file'} of its own (archnas never "
                "writes through a link in a results folder; the link's target is untouched)")


def open_append(path: Path) -> TextIO:
    """`path` opened for appending text, never through a link (O_NOFOLLOW) and without blocking
    on a FIFO (O_NONBLOCK, which changes nothing for a regular file); call `unplant` first."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise UsageError(f"cannot open {path} for appending ({exc.strerror or exc}); archnas never writes "
                         "through a symbolic link planted in a results folder") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path} is not a regular file; remove it")
    return os.fdopen(fd, "a", encoding="utf-8")


class AppendFileHandler(logging.FileHandler):
    """A logging.FileHandler whose file is opened by `open_append` (never through a link)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8")

    def _open(self) -> TextIO:
        return open_append(Path(self.baseFilename))
