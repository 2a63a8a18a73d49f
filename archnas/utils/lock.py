"""One writer per experiment folder, and `--algos` children that die with their parent.

Two runs of one experiment would interleave their metrics and replace each other's results
without a word. So a run takes `<experiment>/archnas.lock` before it writes anything there: an OS
lock (`fcntl.flock` on the open file, which the kernel drops when the process ends, however it
ends, so a crash never leaves a lock that looks live) and, in the file, the owner's pid, host,
start time and command, which a refused run names. A lock file that exists but is not locked was
left by a run that died without releasing it: the next run takes it over and says whose it was.
Releasing removes the file, and the folders the run created if they are still empty (a refused
first run leaves nothing behind).

`--algos` and `--seeds` lock the top folder; each sub-experiment (`<exp>/<algo>`,
`<exp>/seed_<s>`) locks its own folder, so a child never meets its parent's lock. An `--algos`
child is started with `child_env()` and calls `follow_parent()` first thing: it dies with its
parent (Linux's parent-death signal, else a thread watching the parent pid), so a killed parent
leaves no writer behind.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import fcntl
import json
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, Sequence

from archnas.errors import UsageError

LOCK_FILE = "archnas.lock"
PARENT_ENV = "ARCHNAS_PARENT_PID"  # set by an `--algos` parent for its children: its own pid
MAX_RECORD_BYTES = 64 * 1024  # a lock file is a few hundred bytes; read no more than this of one
MAX_ATTEMPTS = 200  # of opening and locking: a lock file that keeps vanishing ends in an error, not a hang
RECORD_WAIT_S = 2.0  # how long a locked file without an owner record may stay so (its owner writes it next)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ExperimentLocked(UsageError):
    """Another live run writes in the experiment folder."""


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def describe_owner(owner: Optional[dict[str, Any]]) -> str:
    """`pid 123 on host h, started 2026-01-02T03:04:05+00:00: archnas --config ...` from a lock record."""
    if not owner:
        return "which has not written its pid, host and command into the lock yet"
    command = owner.get("command")
    command = " ".join(map(str, command)) if isinstance(command, list) else str(command)
    return (f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('start_time')}: "
            f"{command[:300]}")


def pid_running(pid: int) -> bool:
    """Whether `pid` is a live process on this host (a zombie, which only waits to be reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read(4096).rsplit(b")", 1)[-1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_record(fd: int) -> Optional[dict[str, Any]]:
    """The owner record in an open lock file, or None when it is empty or not one (bounded read)."""
    try:
        data = os.pread(fd, MAX_RECORD_BYTES, 0)
        record = json.loads(data.decode("utf-8")) if data.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open `fd` is still the file at `path` (a releasing owner unlinks its file)."""
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; the ones this call created, outermost first."""
    missing = []
    for part in (folder, *folder.parents):
        if os.path.lexists(part):
            break
        missing.append(part)
    created = []
    for part in reversed(missing):
        try:
            part.mkdir()
            created.append(part)
        except FileExistsError:
            pass  # another run made it just now: not ours to remove
    return created


class ExperimentLock:
    """The lock of one experiment folder, held from `acquire` to `release` (or the `with` block).

    `found()` says what taking it found (a dead run's lock taken over); the caller logs it once
    its logger exists."""

    def __init__(self, folder: Path, command: Sequence[str]):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = [str(c) for c in command]
        self.taken_over: Optional[dict[str, Any]] = None
        self.replaced_link: Optional[str] = None  # the target of a symbolic link planted as the lock file
        self._fd: Optional[int] = None
        self._pid = 0
        self._created: list[Path] = []
        self.read_only = False  # the folder's file system is read-only: no lock was needed or taken

    def acquire(self) -> "ExperimentLock":
        """Take the lock or raise `ExperimentLocked` naming its owner; creates the folder."""
        deadline = time.monotonic() + RECORD_WAIT_S
        for _ in range(MAX_ATTEMPTS):
            self._created += self._folders()
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # a releasing run removed its empty folder just now
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP and self.replaced_link is None:
                    try:  # a link planted as the lock file: removed, its target untouched
                        self.replaced_link = os.readlink(self.path)
                        os.unlink(self.path)
                    except OSError:
                        pass
                    continue
                self._remove_created()
                if exc.errno == errno.EROFS:
                    return self._on_read_only_folder()
                raise UsageError(f"cannot open the experiment lock {self.path}: {exc.strerror or exc}") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                self._remove_created()
                raise UsageError(f"{self.path} is not a regular file; remove it (archnas keeps the experiment's "
                                 "lock there)")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    self._remove_created()
                    raise UsageError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
                owner = _read_record(fd)
                os.close(fd)
                if owner is None and time.monotonic() < deadline:
                    time.sleep(0.05)  # its owner locked it a moment ago and writes its record next
                    continue
                self._remove_created()
                raise self._locked(owner) from None
            if not _same_file(fd, self.path):
                os.close(fd)  # the owner released (and removed) the file between our open and lock
                continue
            break
        else:
            self._remove_created()
            raise UsageError(f"could not take the experiment lock {self.path}: it kept changing under this run")
        self.taken_over = _read_record(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _now(), "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        self._fd, self._pid = fd, os.getpid()
        return self

    def _locked(self, owner: Optional[dict[str, Any]]) -> ExperimentLocked:
        return ExperimentLocked(
            f"{self.folder} is in use by another archnas run ({describe_owner(owner)}); one experiment has "
            f"one writer: wait for that run to end, stop it, or choose another --exp-name (its lock: {self.path})")

    def _on_read_only_folder(self) -> "ExperimentLock":
        """A read-only file system holds no second writer to keep out, so a run that only reads
        (a rerun of a finished experiment) goes on without the lock; a run that must write fails
        at its first write, naming it. A lock another process holds there (a writable mount of the
        same folder elsewhere) still refuses the run."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._locked(_read_record(fd)) from None
            finally:
                os.close(fd)
        self.read_only = True
        return self

    def _folders(self) -> list[Path]:
        try:
            return _make_folders(self.folder)
        except (OSError, ValueError) as exc:
            self._remove_created()
            raise UsageError(f"cannot create the experiment folder {self.folder} (common.results_dir / --exp-name): "
                             f"{getattr(exc, 'strerror', None) or exc}") from None

    def found(self) -> list[str]:
        """What taking the lock found that the run's log should say: the lock of a run that died
        holding it, which this one took over; a link planted as the lock file, which it replaced."""
        said = []
        if self.read_only:
            said.append(f"{self.folder} is on a read-only file system: no lock taken (no run can write there)")
        if self.replaced_link is not None:
            said.append(f"{self.path} was a symbolic link to {self.replaced_link}: replaced with a lock file of its "
                        "own (the link's target is untouched)")
        if self.taken_over is not None:
            pid = self.taken_over.get("pid")
            if self.taken_over.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_running(pid):
                state = f"pid {pid} is no longer running"
            else:
                state = "the system had dropped its lock, which it does when a process ends"
            said.append(f"took over the lock of {self.folder} left by a run that ended without releasing it "
                        f"({describe_owner(self.taken_over)}): {state}")
        return said

    def release(self) -> None:
        """Remove the lock file and unlock; then remove the folders `acquire` created if they
        are empty (nothing that existed before is removed). Only the process that took it releases:
        a forked child inherits the open file, not the ownership."""
        if self._fd is None or os.getpid() != self._pid:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError:  # a folder that became read-only: empty the record at least (not a dead run's lock)
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
        os.close(fd)  # drops the OS lock
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or not ours any more): keep it and the folders above it
        self._created = []

    def __enter__(self) -> "ExperimentLock":
        return self.acquire()

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.release()


# -- children that die with their parent -----------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of an `--algos` child: ours, plus our pid, which `follow_parent` reads."""
    return {**os.environ, PARENT_ENV: str(os.getpid())}


def under_parent() -> bool:
    """Whether this process is an `--algos` child (its parent reports for it, resume hint included)."""
    return os.environ.get(PARENT_ENV) == str(os.getppid())


def _parent_death_signal(signum: int) -> bool:
    """Ask Linux to send `signum` when the parent ends (prctl PR_SET_PDEATHSIG); False elsewhere."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def follow_parent() -> None:
    """In a process started with `child_env()`: die (SIGKILL) when the parent does, so no child
    of a killed `--algos` run goes on writing as an orphan. Linux's parent-death signal where
    there is one, else a daemon thread polling the parent pid; a parent already gone kills
    this process at once, before it writes anything."""
    value = os.environ.get(PARENT_ENV, "")
    if not value.isdigit():
        return
    parent = int(value)
    if not _parent_death_signal(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(parent,), name="archnas-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # it ended before the death signal was set up
        os.kill(os.getpid(), signal.SIGKILL)
