"""`cifar10` and `cifar100`: the standard "python version" pickle batches.

Looked for as `<dataroot>/cifar-10-batches-py/` (`data_batch_1..5`, `test_batch`) or
`<dataroot>/cifar-100-python/` (`train`, `test`), or read straight from the downloaded
`cifar-10-python.tar.gz` / `cifar-100-python.tar.gz` in the dataroot without unpacking.

The batches are pickles, and unpickling runs arbitrary code; `SafeUnpickler` only rebuilds the
plain containers and numpy arrays these files contain and refuses anything else.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archnas.config.schema import DatasetConf
from archnas.data.info import DatasetInfo, LoadedDataset, TensorImages
from archnas.data.registry import register_provider
from archnas.errors import DatasetError

# numpy moved its internals from numpy.core to numpy._core in 2.0; pickles name either.
_ALLOWED_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch only holds arrays and lists")


@dataclass(frozen=True)
class CifarSet:
    name: str
    folder: str
    archive: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes  # the class-name list in the meta file
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR10 = CifarSet(
    "cifar10",
    "cifar-10-batches-py",
    "cifar-10-python.tar.gz",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
    b"labels",
    b"label_names",
    (0.49139968, 0.48215827, 0.44653124),
    (0.24703233, 0.24348505, 0.26158768),
)
CIFAR100 = CifarSet(
    "cifar100",
    "cifar-100-python",
    "cifar-100-python.tar.gz",
    ("train",),
    "test",
    "meta",
    b"fine_labels",
    b"fine_label_names",
    (0.50707516, 0.48654887, 0.44091784),
    (0.26733429, 0.25643846, 0.27615047),
)
URL = 'https://www.cs.toronto.edu/~kriz/cifar.html (the "CIFAR python version" tarball)'


def unpickle(data: bytes, source: str, key: bytes) -> dict[bytes, Any]:
    try:
        batch = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DatasetError(f"{source}: not a readable CIFAR pickle: {exc}") from None
    if not isinstance(batch, dict) or key not in batch:
        raise DatasetError(f"{source}: not a CIFAR pickle of this kind (expected a dict with {key!r})")
    return batch


def class_names(spec: CifarSet, meta: tuple[str, bytes]) -> tuple[str, ...]:
    source, raw = meta
    names = unpickle(raw, source, spec.names_key)[spec.names_key]
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def read_batches(spec: CifarSet, dataroot: Path, names: tuple[str, ...]) -> list[tuple[str, bytes]]:
    folder, archive = dataroot / spec.folder, dataroot / spec.archive
    if folder.is_dir():
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DatasetError(
                f"dataset {spec.name!r}: {folder} lacks {', '.join(missing)}; re-extract {spec.archive} from {URL}"
            )
        return [(str(folder / n), (folder / n).read_bytes()) for n in names]
    if archive.is_file():
        try:
            return _read_members(spec, archive, names)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: a damaged .gz
            raise DatasetError(f"{archive}: cannot read the tarball (truncated or corrupt?): "
                               f"{exc or type(exc).__name__}; download {spec.archive} again from {URL}") from None
    raise DatasetError(
        f"dataset {spec.name!r}: not found. Looked for the folder {folder} and the archive {archive}.\n"
        f"Download {spec.archive} from {URL} into {dataroot} (or set dataset.dataroot); unpacking is optional."
    )


def _read_members(spec: CifarSet, archive: Path, names: tuple[str, ...]) -> list[tuple[str, bytes]]:
    with tarfile.open(archive, "r:*") as tar:
        out = []
        for n in names:
            try:
                member = tar.extractfile(f"{spec.folder}/{n}")
            except KeyError:
                member = None
            if member is None:
                raise DatasetError(f"{archive}: no member {spec.folder}/{n}; is this the CIFAR python tarball?")
            out.append((f"{archive}:{spec.folder}/{n}", member.read()))
        return out


def to_images(spec: CifarSet, batches: list[tuple[str, bytes]], n_classes: int) -> TensorImages:
    images, labels = [], []
    for source, raw in batches:
        batch = unpickle(raw, source, b"data")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or spec.label_key not in batch:
            raise DatasetError(
                f"{source}: expected b'data' of shape [N, 3072] and {spec.label_key!r}, got {data.shape}"
            )
        batch_labels = np.asarray(batch[spec.label_key], dtype=np.int64)
        if (
            batch_labels.shape != (data.shape[0],)
            or batch_labels.min(initial=0) < 0
            or batch_labels.max(initial=0) >= n_classes
        ):
            raise DatasetError(
                f"{source}: {data.shape[0]} labels in 0..{n_classes - 1} expected, got {len(batch_labels)} in "
                f"{batch_labels.min(initial=0)}..{batch_labels.max(initial=0)}"
            )
        # Each row is the red plane, then green, then blue, each 32 rows of 32 pixels: CHW already.
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(batch_labels))
    return TensorImages(torch.cat(images), torch.cat(labels))


def load_cifar(spec: CifarSet, conf: DatasetConf) -> LoadedDataset:
    dataroot = Path(conf.dataroot).expanduser()
    *train_batches, test_batch, meta = read_batches(spec, dataroot, spec.train_files + (spec.test_file, spec.meta_file))
    classes = class_names(spec, meta)
    train = to_images(spec, train_batches, len(classes))
    test = to_images(spec, [test_batch], len(classes))
    info = DatasetInfo(
        name=spec.name,
        n_classes=len(classes),
        channels=3,
        image_size=(32, 32),
        mean=spec.mean,
        std=spec.std,
        crop_padding=4,
        hflip=True,
        classes=classes,
    )
    folder = dataroot / spec.folder
    source = folder if folder.is_dir() else dataroot / spec.archive  # the one read_batches read
    return LoadedDataset(info, train, test, source=str(source.resolve()))


@register_provider("cifar10", params=())
def load_cifar10(conf: DatasetConf, cache_dir: Path) -> LoadedDataset:
    return load_cifar(CIFAR10, conf)


@register_provider("cifar100", params=())
def load_cifar100(conf: DatasetConf, cache_dir: Path) -> LoadedDataset:
    return load_cifar(CIFAR100, conf)
