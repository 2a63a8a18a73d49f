#!/usr/bin/env python
"""Training throughput: in-memory batch augmentation on the device vs a per-image DataLoader pipeline.

For each dataset (digits, and the CIFAR-10 JPEG training set when its tarball is found) a small
CNN is trained with SGD while batches come from one of:

  in-memory    archnas's loader: the whole set decoded once into a uint8 tensor; each batch is
               indexed, cropped, flipped, normalized and cut out as tensor ops.
  per-image/wN the usual torchvision-style pipeline, written here with Pillow and numpy since
               torchvision is not assumed: a Dataset that decodes one image (the JPEG file from
               disk for CIFAR-10, the in-memory array for digits), pads and crops, flips,
               converts, normalizes and cuts out each image separately, batched by a
               DataLoader with N worker processes.

Pipelines are measured in interleaved rounds (each round runs every pipeline once) and the median
round is reported, so a machine shared with other work slows all of them alike. Also reported:
the pipeline alone (images per second without the model), and the one-off preparation time.

The main process uses one intra-op thread by default (`--threads`): DataLoader workers take
cores too, and on a busy 2-core machine two spinning OpenMP threads slow every torch op many
times over, which would measure contention rather than the pipelines. With one thread the
in-memory path does its augmentation on the same core as the model, while per-image workers
get the other core to themselves: the comparison does not favour the in-memory path.

    python scripts/bench_data.py                      # a couple of minutes on 2 cores
    python scripts/bench_data.py --rounds 5 --steps 40 --json benchmarks/out/bench_data.json
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from archnas.config.schema import DatasetConf, LoaderConf, OptimizerConf, TrainerConf  # noqa: E402
from archnas.data import DataBundle, TensorImages, build_data  # noqa: E402
from archnas.data.archive import unpack  # noqa: E402
from archnas.data.imagefolder import scan  # noqa: E402
from archnas.training.env import TrainingEnv  # noqa: E402
from archnas.training.trainer import Trainer  # noqa: E402
from archnas.utils import atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CIFAR_TRAIN = REPO.parent / "shared" / "data" / "cifar10" / "cifar10-train-jpeg.tar.gz"
CPU = torch.device("cpu")
Batch = tuple[torch.Tensor, torch.Tensor]


class SmallCNN(nn.Module):
    def __init__(self, channels: int, n_classes: int, width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        self.features = nn.Sequential(
            block(channels, width, 1), block(width, 2 * width, 2), block(2 * width, 2 * width, 2)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PerImage(Dataset):
    """One image at a time: decode, pad+crop, flip, to float, normalize, cutout (the DARTS order)."""

    def __init__(self, items: list, labels: torch.Tensor, mean, std, pad: int, hflip: bool, cutout: int, mode: str):
        self.items, self.labels = items, labels
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)
        self.pad, self.hflip, self.cutout, self.mode = pad, hflip, cutout, mode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.items[i]
        img = Image.open(item).convert(self.mode) if isinstance(item, (str, Path)) else Image.fromarray(item)
        w, h = img.size
        if self.pad:
            img = ImageOps.expand(img, border=self.pad, fill=0)
            x0, y0 = random.randint(0, 2 * self.pad), random.randint(0, 2 * self.pad)
            img = img.crop((x0, y0, x0 + w, y0 + h))
        if self.hflip and random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(img, np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        arr = (arr - self.mean) / self.std
        if self.cutout:
            cy, cx = random.randrange(h), random.randrange(w)
            y0, x0 = max(cy - self.cutout // 2, 0), max(cx - self.cutout // 2, 0)
            arr[:, y0 : cy - self.cutout // 2 + self.cutout, x0 : cx - self.cutout // 2 + self.cutout] = 0.0
        return torch.from_numpy(np.ascontiguousarray(arr)), self.labels[i]


def per_image_stream(dataset: PerImage, batch: int, workers: int) -> Iterator[Batch]:
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0, drop_last=True
    )
    while True:
        yield from loader


def in_memory_stream(data: DataBundle) -> Iterator[Batch]:
    loader = data.loader("train", training=True)
    while True:
        yield loader.next()


def timed_steps(stream: Iterator[Batch], steps: int, step: Callable[[Batch], None] | None) -> float:
    """Images per second over `steps` batches (after one warm-up batch)."""
    first = next(stream)
    if step is not None:
        step(first)
    images, start = 0, time.perf_counter()
    for _ in range(steps):
        batch = next(stream)
        if step is not None:
            step(batch)
        images += batch[1].shape[0]
    return images / (time.perf_counter() - start)


def bench_set(name: str, data: DataBundle, per_image_items: list, args: argparse.Namespace) -> list[dict]:
    info, aug = data.info, data.augment
    torch.manual_seed(0)
    model = SmallCNN(info.channels, info.n_classes, args.width)
    # the weight step a run takes (archnas.training.Trainer), so the pipelines feed the real thing
    env = TrainingEnv(name="bench", dir=Path(tempfile.mkdtemp(prefix="bench_data_")), log=logging.getLogger("bench_data"),
                      device=CPU, tensorboard=False)
    train_step = Trainer(TrainerConf(optimizer=OptimizerConf(lr=0.01)), model, env).weight_step

    train = data.parts["train"]
    dataset = PerImage(
        per_image_items,
        train.labels,
        info.mean,
        info.std,
        aug.crop_padding,
        aug.hflip,
        aug.cutout,
        "RGB" if info.channels == 3 else "L",
    )
    pipelines = {"in-memory": lambda: in_memory_stream(data)}
    for w in args.workers:
        pipelines[f"per-image/w{w}"] = lambda w=w: per_image_stream(dataset, args.batch, w)
    streams = {k: make() for k, make in pipelines.items()}
    train_ips: dict[str, list[float]] = {k: [] for k in pipelines}
    data_ips: dict[str, list[float]] = {k: [] for k in pipelines}
    for r in range(args.rounds):
        for key, stream in streams.items():
            train_ips[key].append(timed_steps(stream, args.steps, train_step))
            data_ips[key].append(timed_steps(stream, args.steps, None))
        print(
            f"  {name} round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in train_ips.items()),
            flush=True,
        )
    rows = []
    for key in pipelines:
        rows.append(
            {
                "dataset": name,
                "pipeline": key,
                "train_images_per_s": statistics.median(train_ips[key]),
                "data_only_images_per_s": statistics.median(data_ips[key]),
                "rounds_train": train_ips[key],
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25, help="training steps per pipeline per round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="channels of the CNN's first block")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the main process")
    parser.add_argument(
        "--workers",
        type=lambda s: [int(w) for w in s.split(",")],
        default=[0, 2],
        help="DataLoader worker counts for the per-image pipeline (default 0,2)",
    )
    parser.add_argument(
        "--cifar", type=Path, default=CIFAR_TRAIN, help="CIFAR-10 JPEG train tarball (skipped if absent)"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/archnas").expanduser())
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "bench_data.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loader_conf = LoaderConf(train_batch=args.batch)
    results, prepare = [], {}

    start = time.perf_counter()
    digits = build_data(DatasetConf(name="digits"), loader_conf, seed=0, device=CPU, cache_dir=args.cache_dir)
    prepare["digits"] = time.perf_counter() - start
    train = digits.parts["train"]
    assert isinstance(train, TensorImages)
    results += bench_set("digits", digits, list(train.images[:, 0].numpy()), args)

    if args.cifar.is_file():
        conf = DatasetConf(name="imagefolder", params={"train": str(args.cifar), "test": str(args.cifar)})
        start = time.perf_counter()
        cifar = build_data(
            conf, LoaderConf(train_batch=args.batch, cutout=16), seed=0, device=CPU, cache_dir=args.cache_dir
        )
        prepare["cifar10_jpeg (unpack+decode, or cache)"] = time.perf_counter() - start
        _, files, _ = scan(unpack(args.cifar, args.cache_dir))
        results += bench_set("cifar10_jpeg", cifar, files, args)
    else:
        print(f"CIFAR-10 JPEG tarball not found at {args.cifar}: only digits measured")

    ratios = {}
    print(f"\n{'dataset':<14}{'pipeline':<16}{'train img/s':>14}{'data-only img/s':>18}")
    for row in results:
        print(
            f"{row['dataset']:<14}{row['pipeline']:<16}"
            f"{row['train_images_per_s']:>14.0f}{row['data_only_images_per_s']:>18.0f}"
        )
    for name in dict.fromkeys(r["dataset"] for r in results):
        rows = [r for r in results if r["dataset"] == name]
        memory = next(r for r in rows if r["pipeline"] == "in-memory")
        best = max((r for r in rows if r["pipeline"] != "in-memory"), key=lambda r: r["train_images_per_s"])
        ratios[name] = memory["train_images_per_s"] / best["train_images_per_s"]
        print(
            f"{name}: in-memory trains {ratios[name]:.2f}x faster than the best per-image pipeline ({best['pipeline']})"
        )
    for what, seconds in prepare.items():
        print(f"prepare {what}: {seconds:.1f}s")
    report = {
        "results": results,
        "in_memory_over_best_per_image": ratios,
        "prepare_seconds": prepare,
        "settings": {
            "rounds": args.rounds,
            "steps": args.steps,
            "batch": args.batch,
            "workers": args.workers,
            "width": args.width,
            "threads": args.threads,
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
    }
    atomic.write_json(args.json, report)
    print(f"wrote {args.json}")
    return 0 if all(r > 1.0 for r in ratios.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
