"""`mnist` and `fashion_mnist`: the original IDX files (gzipped or not) from a dataroot.

Both sets share the IDX format and 28x28 grayscale layout; only their file locations, class
names and statistics differ. Fashion-MNIST is also found where Debian's `dataset-fashion-mnist`
package installs it.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from archnas.config.schema import DatasetConf
from archnas.data.info import DatasetInfo, LoadedDataset, TensorImages
from archnas.data.registry import register_provider
from archnas.errors import DatasetError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08
IDX_LIMIT = 4 * 2**30  # bytes of one IDX file's data; EMNIST's largest is under 1 GiB


@dataclass(frozen=True)
class IdxSet:
    name: str
    subdirs: tuple[str, ...]  # looked for under the dataroot, in this order
    system_dirs: tuple[str, ...]  # absolute places a system package puts the files
    mean: float
    std: float
    hflip: bool
    classes: tuple[str, ...]
    url: str


MNIST = IdxSet(
    "mnist",
    ("mnist", "MNIST/raw", "."),
    (),
    0.1307,
    0.3081,
    False,
    tuple(str(d) for d in range(10)),
    "https://yann.lecun.com/exdb/mnist/ (or any mirror of the four IDX .gz files)",
)
FASHION_MNIST = IdxSet(
    "fashion_mnist",
    ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
    ("/usr/share/datasets/fashion-mnist",),
    0.2860,
    0.3530,
    True,
    ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"),
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion), "
    "or `apt-get install dataset-fashion-mnist` on Debian/Ubuntu",
)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a uint8 array, checked against its own header.

    Only as many bytes as the header announces (plus one, to notice more) are read, so a small
    .gz that inflates without end (a decompression bomb, or /dev/zero compressed) cannot fill
    memory; an announced size over IDX_LIMIT is refused before reading."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != _IDX_UBYTE:
                raise DatasetError(f"{path}: not an IDX file of unsigned bytes (header {head.hex()})")
            dims = f.read(4 * head[3])
            shape = [int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(len(dims) // 4)]
            expected = math.prod(shape)
            if len(shape) != head[3] or expected > IDX_LIMIT:
                raise DatasetError(f"{path}: IDX header announces shape {shape}: "
                                   + ("the header is cut short" if len(shape) != head[3] else
                                      f"{expected:,} bytes, more than the {IDX_LIMIT:,} read from an IDX file"))
            raw = f.read(expected + 1)
    except (OSError, EOFError, zlib.error) as exc:  # EOFError: a truncated .gz; zlib.error: a damaged one
        raise DatasetError(f"{path}: cannot read IDX file (truncated or corrupt?): {exc}") from None
    if len(raw) != expected:
        held = f"{len(raw)}" if len(raw) <= expected else "more"
        raise DatasetError(f"{path}: IDX header says shape {shape} but the file has {held} data bytes")
    return np.frombuffer(raw, np.uint8).reshape(shape)


def search_dirs(spec: IdxSet, dataroot: Path) -> list[Path]:
    return [dataroot / sub for sub in spec.subdirs] + [Path(d) for d in spec.system_dirs]


def find_files(spec: IdxSet, dataroot: Path) -> dict[str, Path]:
    """The first folder holding all four files (each `.gz` or plain) wins."""
    for folder in search_dirs(spec, dataroot):
        found = {}
        for key, stem in FILES.items():
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
    looked = "\n  ".join(str(d) for d in search_dirs(spec, dataroot))
    names = ", ".join(f"{stem}.gz" for stem in FILES.values())
    raise DatasetError(
        f"dataset {spec.name!r}: IDX files not found. Looked in:\n  {looked}\n"
        f"Put {names} into {dataroot / spec.subdirs[0]} (or set dataset.dataroot). Get them from {spec.url}."
    )


def load_idx_set(spec: IdxSet, conf: DatasetConf) -> LoadedDataset:
    files = find_files(spec, Path(conf.dataroot).expanduser())
    arrays = {key: read_idx(path) for key, path in files.items()}
    parts = {}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{files[f'{part}_images']}: expected [N, H, W] images and [N] labels, got shapes "
                f"{images.shape} and {labels.shape}"
            )
        if labels.max(initial=0) >= len(spec.classes):
            raise DatasetError(
                f"{files[f'{part}_labels']}: label {labels.max()} but the set has {len(spec.classes)} classes"
            )
        parts[part] = TensorImages(
            torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
        )
    height, width = parts["train"].images.shape[2:]
    info = DatasetInfo(
        name=spec.name,
        n_classes=len(spec.classes),
        channels=1,
        image_size=(height, width),
        mean=(spec.mean,),
        std=(spec.std,),
        crop_padding=2,
        hflip=spec.hflip,
        classes=spec.classes,
    )
    folders = sorted({str(path.parent.resolve()) for path in files.values()})
    return LoadedDataset(info, parts["train"], parts["test"], source=", ".join(folders))


@register_provider("mnist", params=())
def load_mnist(conf: DatasetConf, cache_dir: Path) -> LoadedDataset:
    return load_idx_set(MNIST, conf)


@register_provider("fashion_mnist", params=())
def load_fashion_mnist(conf: DatasetConf, cache_dir: Path) -> LoadedDataset:
    return load_idx_set(FASHION_MNIST, conf)
