"""`archnas predict MODEL_FILE IMAGES...`: classify images with a saved model file, no config.

Images are files Pillow opens (.png, .jpg, ...: converted to the model's channels, resized to its
input size when they differ) or arrays (.npy, or .pt holding one tensor: `[N, C, H, W]`,
`[N, H, W]` for a one-channel model, or one `[C, H, W]` image; uint8 pixels 0..255 or floats in
[0, 1]). The model file says how to normalize them. One line per image: its name, the class index,
the class name and the softmax probability; with `--labels` (one int per image, .npy / .pt / a
text file of integers) also how many predictions are correct.

Everything is checked before a prediction is printed: the model file's fields and weights (see
`archnas.model.model_file`; its space or ops come only from archnas and the `--import` plugins),
float pixels outside [0, 1] (0..255 floats, NaN, infinities, negatives), an array's shape, and
image files over Pillow's decompression-bomb limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from archnas.data.imagefolder import decode_image
from archnas.errors import DatasetError
from archnas.model.model_file import InputError, TrainedModel, as_batch, load_model_file
from archnas.utils import reads
from archnas.utils.usage_parser import UsageParser

ARRAY_SUFFIXES = (".npy", ".pt")


def build_predict_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="archnas predict",
        description="Classify images with a model file (model_best.pt / model_last.pt of an eval phase). "
        "IMAGES are image files (.png, .jpg, ...; converted to the model's channels and resized to its input "
        "size) or arrays (.npy, or .pt with one tensor) of shape [N, C, H, W], [N, H, W] (one channel) or "
        "[C, H, W], uint8 0..255 or float in [0, 1] (other floats are refused). Prints one line per image: name, "
        "class index, class name, probability.",
        allow_abbrev=False,
    )
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module first: the plugin whose ops or space the model uses (repeatable); "
                        "a model file never makes archnas import a module itself")
    parser.add_argument("model_file", metavar="MODEL_FILE", help="a model file written by the eval phase")
    parser.add_argument("images", metavar="IMAGES", nargs="+", help="image files and/or .npy / .pt arrays")
    parser.add_argument("--labels", metavar="FILE", help="the true class index of every image, in order (.npy, .pt or "
                        "whitespace-separated integers): also print how many predictions are correct")
    parser.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda, cuda:N); default cpu")
    parser.add_argument("--batch", type=int, default=1024, help="images per forward pass (default 1024)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    return parser


def load_images(paths: Sequence[str], trained: TrainedModel) -> tuple[torch.Tensor, list[str]]:
    """The images of every path, stacked, and a name for each (`file` or `file[i]` for arrays)."""
    c, h, w = trained.required_spec().shape
    batches, names = [], []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise DatasetError(f"archnas predict: {path}: no such file")
        if path.suffix.lower() in ARRAY_SUFFIXES:
            try:
                x = as_batch(_read_array(path), (c, h, w))
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from None
            batches.append(x)
            names += [f"{name}[{i}]" for i in range(x.shape[0])]
        else:
            with warnings.catch_warnings():  # decode_image refuses what Pillow would only warn about
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = decode_image(str(path), "L" if c == 1 else "RGB", (h, w), resize=True)
            if image.shape[0] != c:
                raise InputError(f"{path}: {image.shape[0]} channels; the model takes {c}")
            batches.append(image[None])
            names.append(name)
    if any(b.dtype != batches[0].dtype for b in batches):  # pixel files with float arrays: all floats in [0, 1]
        batches = [b.float().div(255.0) if b.dtype == torch.uint8 else b.float() for b in batches]
    return torch.cat(batches), names


def _read_array(path: Path) -> torch.Tensor:
    try:
        if path.suffix.lower() == ".npy":
            reads.check_regular(path)
            return torch.from_numpy(np.load(path, allow_pickle=False))
        data = reads.torch_load_plain(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it as an array ({exc.strerror or exc})") from None
    except (ValueError, EOFError) as exc:  # corrupt, foreign or harmful: torch_load_plain's (or numpy's) reason
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DatasetError(f"{path}: cannot read it as an array ({reason})") from None
    if not isinstance(data, torch.Tensor):
        raise DatasetError(f"{path}: holds a {type(data).__name__}, expected one tensor")
    return data


def read_labels(path: str, n: int) -> torch.Tensor:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"--labels {path}: no such file")
    if p.suffix.lower() in ARRAY_SUFFIXES:
        labels = _read_array(p)
    else:
        try:
            labels = torch.tensor([int(t) for t in p.read_text().split()])
        except ValueError as exc:
            raise DatasetError(f"--labels {path}: expected whitespace-separated integers ({exc})") from None
    labels = labels.reshape(-1).long()
    if len(labels) != n:
        raise InputError(f"--labels {path}: {len(labels)} labels for {n} images")
    return labels


def predict_from_cli(args: argparse.Namespace) -> int:
    """`args` from `build_predict_parser()`, after the plugins it names are imported."""
    if args.batch < 1:
        raise InputError(f"--batch {args.batch}: expected a positive number of images")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise InputError(f"--device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: CUDA is not available on this machine")
    trained = load_model_file(args.model_file).to(device)
    images, names = load_images(args.images, trained)
    probs = torch.softmax(trained.logits(images, args.batch).float(), dim=1).cpu()
    top, index = probs.max(dim=1)
    classes = trained.classes or tuple(str(i) for i in range(probs.shape[1]))
    rows = [{"image": n, "index": int(i), "class": classes[int(i)], "probability": float(p)}
            for n, i, p in zip(names, index, top)]
    summary = {}
    if args.labels:
        labels = read_labels(args.labels, len(names))
        correct = int((index == labels).sum())
        summary = {"correct": correct, "images": len(names), "top1": correct / max(len(names), 1)}
    if args.json:
        sys.stdout.write(json.dumps({"model_file": args.model_file, "predictions": rows, **summary}) + "\n")
    else:
        for r in rows:
            sys.stdout.write(f"{r['image']}\t{r['index']}\t{r['class']}\t{r['probability']:.4f}\n")
        if summary:
            sys.stdout.write(f"correct: {summary['correct']} of {summary['images']} ({summary['top1']:.2%})\n")
    return 0
