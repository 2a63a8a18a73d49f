"""Unpacking an image archive (`.tar.gz`, `.tgz`, `.tar`) once into the cache folder.

Shared data folders are often read-only and archives are the usual way image folders are
shipped, so `imagefolder` accepts an archive wherever it accepts a folder: the archive is
unpacked into `<cache_dir>/unpacked/<name>-<key>/` the first time and reused afterwards. From the
command line the same is `python -m archnas.data.archive FILE [--cache-dir DIR]`, which prints
the folder to put into `dataset.params.train` / `test`.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

from archnas.errors import DatasetError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
DONE_MARKER = ".archnas-unpacked"


def is_archive(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIXES)


def _strip_suffix(name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def unpacked_root(folder: Path) -> Path:
    """Archives usually wrap everything in one top folder (`train/<class>/...`): descend into it."""
    entries = [p for p in folder.iterdir() if p.name != DONE_MARKER]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def unpack(archive: Path, cache_dir: Path) -> Path:
    """The folder the archive's content is in, unpacking it first if this is the first use."""
    archive = archive.expanduser().resolve()
    if not archive.is_file():
        raise DatasetError(f"archive not found: {archive}")
    stat = archive.stat()
    key = hashlib.sha256(f"{archive}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir / "unpacked" / f"{_strip_suffix(archive.name)}-{key}"
    if (target / DONE_MARKER).is_file():
        return unpacked_root(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unpack next to the target and rename, so an interrupted unpack never looks finished.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, `..` and device files
        (tmp / DONE_MARKER).write_text(f"{archive}\n")
        _move_into_place(tmp, target)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: a damaged .gz
        raise DatasetError(f"{archive}: cannot unpack into {target.parent} (truncated or corrupt?): "
                           f"{exc or type(exc).__name__}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return unpacked_root(target)


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target` unless another process (a DDP rank) finished the same unpack first."""
    if (target / DONE_MARKER).is_file():
        return
    try:
        tmp.rename(target)
    except OSError:
        if not (target / DONE_MARKER).is_file():
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m archnas.data.archive",
        description="Unpack an image archive into the archnas cache (once) and print the folder for dataset.params.",
    )
    parser.add_argument("archive", type=Path)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path("~/.cache/archnas"), help="common.cache_dir (default %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        print(unpack(args.archive, args.cache_dir.expanduser()))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
