"""`imagefolder`: one subfolder per class (`<root>/<class>/<image>`), any format Pillow decodes.

`dataset.params`:
  train:  folder or archive (.tar.gz/.tgz/.tar) of the train split; default `<dataroot>/train`
  test:   the same for the test split; default `<dataroot>/test`
  size:   [H, W] (or one int) to resize every image to; default: every image must have the size
          of the first one
  mode:   Pillow mode, `RGB` (default) or `L` (grayscale)
  n_classes: the number of class folders, checked when the set loads; with `size` it declares the
          set's shape, so `archnas stats` counts a network for it without the data present
  mean, std: per-channel normalization; default: measured on the train split

An archive is unpacked once into `<common.cache_dir>/unpacked/` (see `archnas.data.archive`), so
the CIFAR-10 JPEGs of a read-only share are used as
`params: {train: .../cifar10-train-jpeg.tar.gz, test: .../cifar10-test-jpeg.tar.gz}`.

In memory (the default) every image is decoded once, with a thread per core, and the decoded
uint8 tensors are cached in `<common.cache_dir>/imagefolder/`, keyed by the file list, sizes and
modification times, so the next run loads them in a fraction of a second (a cache whose images
or labels do not fit the files it stands for is rebuilt, not trusted). With
`dataset.in_memory: false` the files stay on disk and DataLoader workers decode each batch.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from archnas.config.schema import DatasetConf
from archnas.data.archive import is_archive, unpack
from archnas.data.info import DatasetInfo, FileImages, LoadedDataset, TensorImages, channel_stats
from archnas.data.registry import register_provider
from archnas.errors import ConfigError, DatasetError
from archnas.utils import atomic, reads

PARAMS = ("train", "test", "size", "mode", "mean", "std", "n_classes")
COMMON = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")  # named in messages; Pillow reads many more
STATS_SAMPLE = 1000  # streamed sets measure mean/std on this many train images (seeded choice)


def decode_image(path: str, mode: str, size: Optional[tuple[int, int]], resize: bool) -> torch.Tensor:
    """One image as uint8 [C, H, W] of `size` (H, W): resized to it, or checked against it.

    Module-level so DataLoader workers can pickle it. An image of more pixels than Pillow's
    decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) is refused before it is decoded: a
    small file can declare a size whose decoding takes gigabytes.
    """
    try:
        with Image.open(path) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and img.width * img.height > limit:
                raise DatasetError(_bomb_message(path, f"{img.width}x{img.height} = {img.width * img.height:,} pixels",
                                                 limit))
            img = img.convert(mode)
            if size is not None and (img.height, img.width) != size:
                if not resize:
                    raise DatasetError(
                        f"imagefolder: {path} is {img.height}x{img.width} but the set's images are {size[0]}x{size[1]} "
                        f"(the first image's size); set dataset.params.size: [H, W] to resize every image"
                    )
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # Pillow's own refusal, at twice the limit, in Image.open
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise DatasetError(_bomb_message(path, f"{int(pixels[1]):,} pixels" if pixels else "its size",
                                         Image.MAX_IMAGE_PIXELS)) from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: cannot decode image: {exc}") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _bomb_message(path: str, size: str, limit: Optional[int]) -> str:
    return (f"{path}: {size} is over Pillow's decompression-bomb limit of {limit or 0:,} pixels "
            "(PIL.Image.MAX_IMAGE_PIXELS); refused before decoding, as a small file can expand to gigabytes "
            "(shrink the image)")


def scan(root: Path, classes: Optional[list[str]] = None) -> tuple[list[str], list[str], list[int]]:
    """Class names (sorted subfolder names, unless given) and every image file with its label.

    Files are found recursively inside each class folder and sorted by path, so the order (and
    with it the seeded splits) does not depend on the file system.
    """
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root} is not a folder (expected <root>/<class>/<image files>)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        if len(found) < 2:
            what = f"only one class folder ({found[0]})" if found else "no class folders"
            raise DatasetError(f"imagefolder: {root} has {what}; a classification set needs at least 2 "
                               "(expected <root>/<class>/<image files>, one folder per class)")
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DatasetError(f"imagefolder: {root} has class folders the train split lacks: {', '.join(unknown[:10])}")
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        in_class = []
        for folder, _, names in os.walk(root / name):
            in_class += [os.path.join(folder, n) for n in names if os.path.splitext(n)[1].lower() in extensions]
        if not in_class and (root / name).is_dir():
            raise DatasetError(f"imagefolder: class folder {root / name} holds no image files (expected "
                               f"{', '.join(sorted(e for e in extensions if e in COMMON))}, ...); add images or "
                               "remove the folder")
        in_class.sort()
        files += in_class
        labels += [label] * len(in_class)
    if not files:
        raise DatasetError(f"imagefolder: no image files under {root} (expected <root>/<class>/<image files>)")
    return classes, files, labels


def _resolve(spec: Any, default: Path, cache_dir: Path, key: str) -> Path:
    path = Path(str(spec)).expanduser() if spec is not None else default
    if is_archive(path):
        return unpack(path, cache_dir)
    if not path.exists():
        raise DatasetError(
            f"imagefolder: dataset.params.{key} {path} does not exist; give a folder <root>/<class>/<images> "
            f"or a .tar.gz/.tgz/.tar archive of one (set dataset.dataroot or dataset.params.{key})"
        )
    return path


def _size(spec: Any) -> Optional[tuple[int, int]]:
    if spec is None:
        return None
    size = [spec, spec] if isinstance(spec, int) else list(spec)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"dataset.params.size: {spec!r} is not a positive int or [H, W]")
    return int(size[0]), int(size[1])


def _cache_key(root: Path, files: list[str], labels: list[int], tag: str) -> str:
    h = hashlib.sha256(f"{tag}|{root.resolve()}".encode())
    skip = len(str(root)) + 1
    for path, label in zip(files, labels):
        stat = os.stat(path)
        h.update(f"{path[skip:]}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
    return h.hexdigest()[:16]


def decode_all(
    files: list[str],
    labels: list[int],
    decode: Callable[[str], torch.Tensor],
    cache_dir: Path,
    root: Path,
    cache_tag: str,
    shape: tuple[int, int, int],
) -> TensorImages:
    """Every image decoded into one uint8 tensor, from the cache when the files have not changed.

    The cache is a file anyone with access to `cache_dir` can replace, so it is used only when it
    holds what decoding would give in kind: `[len(files), *shape]` uint8 images and exactly
    `labels`; anything else (damaged, tampered, not a regular file, larger than such images can
    be) is rebuilt over."""
    cache = cache_dir / "imagefolder" / f"{root.name}-{_cache_key(root, files, labels, cache_tag)}.pt"
    cached = _read_cache(cache, len(files), shape, labels)
    if cached is not None:
        return cached
    data = decode_all_uncached(files, labels, decode)
    atomic.torch_save(cache, {"images": data.images, "labels": data.labels})
    return data


def _read_cache(cache: Path, n: int, shape: tuple[int, int, int], labels: list[int]) -> Optional[TensorImages]:
    if not os.path.lexists(cache):
        return None
    limit = n * int(np.prod(shape)) + 8 * n + 2**20  # the images, the int64 labels, the zip and pickle around them
    try:
        saved = reads.torch_load_plain(cache, limit)
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or set(saved) != {"images", "labels"}:
        return None
    images, got = saved["images"], saved["labels"]
    ok = (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and tuple(images.shape) == (n, *shape)
          and isinstance(got, torch.Tensor) and got.dtype == torch.int64 and got.shape == (n,)
          and torch.equal(got, torch.tensor(labels, dtype=torch.int64)))
    return TensorImages(images, got) if ok else None


def decode_all_uncached(files: list[str], labels: list[int], decode: Callable[[str], torch.Tensor]) -> TensorImages:
    # Pillow releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = list(pool.map(decode, files))
    return TensorImages(torch.stack(images), torch.tensor(labels, dtype=torch.int64))


def _stats(
    params: dict[str, Any], train: TensorImages | FileImages, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if (params.get("mean") is None) != (params.get("std") is None):
        raise ConfigError("dataset.params: give both mean and std, or neither")
    if params.get("mean") is not None:
        mean, std = tuple(float(v) for v in params["mean"]), tuple(float(v) for v in params["std"])
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ConfigError(f"dataset.params.mean/std: need {channels} values each (std > 0), got {mean} and {std}")
        return mean, std
    if isinstance(train, TensorImages):
        return channel_stats(train.images)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:STATS_SAMPLE]
    return channel_stats(torch.stack([train.decode(train.paths[i]) for i in pick.tolist()]))


def _mode(params: dict[str, Any]) -> str:
    mode = str(params.get("mode", "RGB"))
    if mode not in ("RGB", "L"):
        raise ConfigError(f"dataset.params.mode: {mode!r} is not RGB or L")
    return mode


def _n_classes(params: dict[str, Any]) -> Optional[int]:
    n = params.get("n_classes")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 2):
        raise ConfigError(f"dataset.params.n_classes: {n!r} is not an int of at least 2")
    return n


def imagefolder_shape(conf: DatasetConf) -> Optional[tuple[int, int, tuple[int, int]]]:
    """The shape `size`, `mode` and `n_classes` declare (None unless both size and n_classes are given)."""
    params = dict(conf.params)
    mode, size, n_classes = _mode(params), _size(params.get("size")), _n_classes(params)
    if size is None or n_classes is None:
        return None
    return n_classes, 3 if mode == "RGB" else 1, size


@register_provider("imagefolder", params=PARAMS, declared_shape=imagefolder_shape)
def load_imagefolder(conf: DatasetConf, cache_dir: Path) -> LoadedDataset:
    params = dict(conf.params)
    mode = _mode(params)
    size = _size(params.get("size"))
    n_classes = _n_classes(params)
    dataroot = Path(conf.dataroot).expanduser()
    train_root = _resolve(params.get("train"), dataroot / "train", cache_dir, "train")
    test_root = _resolve(params.get("test"), dataroot / "test", cache_dir, "test")
    classes, train_files, train_labels = scan(train_root)
    if n_classes is not None and len(classes) != n_classes:
        raise DatasetError(f"imagefolder: {train_root} has {len(classes)} class folders, but dataset.params.n_classes "
                           f"is {n_classes}")
    _, test_files, test_labels = scan(test_root, classes)
    first = decode_image(train_files[0], mode, size, resize=True)
    channels, height, width = (int(n) for n in first.shape)
    decode = partial(decode_image, mode=mode, size=(height, width), resize=size is not None)
    train: TensorImages | FileImages
    test: TensorImages | FileImages
    if conf.in_memory:
        tag = f"{mode}|{height}x{width}|resize={size is not None}"
        shape = (channels, height, width)
        train = decode_all(train_files, train_labels, decode, cache_dir, train_root, tag, shape)
        test = decode_all(test_files, test_labels, decode, cache_dir, test_root, tag, shape)
    else:
        train = FileImages(train_files, torch.tensor(train_labels, dtype=torch.int64), decode)
        test = FileImages(test_files, torch.tensor(test_labels, dtype=torch.int64), decode)
    mean, std = _stats(params, train, channels)
    info = DatasetInfo(
        name="imagefolder",
        n_classes=len(classes),
        channels=channels,
        image_size=(height, width),
        mean=mean,
        std=std,
        crop_padding=max(1, height // 8),
        hflip=True,
        classes=tuple(classes),
    )
    source = f"train {Path(train_root).resolve()}, test {Path(test_root).resolve()}"
    return LoadedDataset(info, train, test, source=source)
