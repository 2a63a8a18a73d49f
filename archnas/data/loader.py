"""Batch loaders: seeded per-epoch order, rank shards, batch augmentation, resumable position.

A loader yields `(images, labels)` already on the device, float, normalized and (for training
loaders) augmented. All of its randomness is counter-based: the order of epoch `e` comes from a
generator seeded with `(seed, e)`, and the augmentation of batch `i` of epoch `e` on rank `r`
from one seeded with `(seed, e, i, r)`. The RNG state is therefore fully described by
`(epoch, position)`, which is what `state_dict()` holds: a checkpoint restores it exactly in the
middle of an epoch, with no generator bytes to carry around, and any rank can save it for all.

DDP: every rank builds the same permutation; global batch `i` (`batch_size` images) is cut into
`world_size` equal parts and rank `r` takes part `r`, so ranks never overlap and the global batch
is the same images whatever the number of ranks. A final global batch with fewer images than
ranks is dropped so that no rank gets an empty batch.

In-memory sets are indexed on the device; sets on disk (`FileImages`) go through a DataLoader
whose workers only decode: augmentation still runs on whole batches here.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from archnas.data.augment import BatchTransform
from archnas.data.info import FileImages, ImageSet, TensorImages
from archnas.utils.device import to_device
from archnas.utils.seeding import derive_seed

Batch = tuple[Tensor, Tensor]
_ORDER, _AUGMENT = 1, 2  # stream tags: each use of derive_seed has its own tag and a fixed number of keys


class _Files(Dataset):
    def __init__(self, files: FileImages):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.files.decode(self.files.paths[i]), self.files.labels[i]


class BatchLoader:
    """Batches of one image set for one rank; `epoch(e)` for training loops, `next()` for a
    cyclic stream (the search phase's val batches), iteration for a plain evaluation pass."""

    def __init__(
        self,
        images: ImageSet,
        batch_size: int,
        transform: BatchTransform,
        *,
        shuffle: bool,
        augment: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.images = images
        self.batch_size = batch_size
        self.transform = transform
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.workers = workers
        self._epoch: Optional[int] = None
        self._position = 0
        self._batches: list[Tensor] = []
        self._stream: Optional[Iterator[Batch]] = None

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        full, rest = divmod(len(self.images), self.batch_size)
        return full + (1 if rest >= self.world_size else 0)

    @property
    def device(self) -> torch.device:
        return self.transform.device

    def index_batches(self, epoch: int) -> list[Tensor]:
        """This rank's image indices for every batch of `epoch`."""
        n = len(self.images)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, _ORDER, epoch)))
        else:
            order = torch.arange(n)
        return [part.tensor_split(self.world_size)[self.rank] for part in order.split(self.batch_size)][: len(self)]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of `epoch` not yet taken: all of them, or the rest after a restored position."""
        if epoch != self._epoch:
            self._start(epoch)
        while (batch := self._take()) is not None:
            yield batch

    def next(self) -> Batch:
        """The next batch, going on into the following epoch when this one is used up."""
        batch = self._take()
        if batch is None:
            self._start(0 if self._epoch is None else self._epoch + 1)
            batch = self._take()
            assert batch is not None, "a loader over a non-empty set has at least one batch"
        return batch

    def __iter__(self) -> Iterator[Batch]:
        """One whole pass in epoch 0's order, leaving the resumable position alone (evaluation)."""
        for i, (images, labels) in enumerate(self._fetch(self.index_batches(0))):
            yield self._finish(images, labels, 0, i)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": -1 if self._epoch is None else self._epoch, "position": self._position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0:
            self._epoch, self._position, self._batches, self._stream = None, 0, [], None
            return
        self._start(epoch)
        if not 0 <= position <= len(self._batches):
            raise ValueError(f"loader position {position} is outside an epoch of {len(self._batches)} batches")
        self._position = position

    def _start(self, epoch: int) -> None:
        self._epoch, self._position, self._stream = epoch, 0, None
        self._batches = self.index_batches(epoch)

    def _take(self) -> Optional[Batch]:
        if self._epoch is None or self._position >= len(self._batches):
            return None
        if self._stream is None:
            self._stream = self._fetch(self._batches[self._position :])
        images, labels = next(self._stream)
        index = self._position
        self._position += 1
        return self._finish(images, labels, self._epoch, index)

    def _finish(self, images: Tensor, labels: Tensor, epoch: int, index: int) -> Batch:
        gen = None
        if self.augment:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, _AUGMENT, epoch, index, self.rank))
        return self.transform(images, gen), labels.to(self.device, non_blocking=True)

    def _fetch(self, batches: list[Tensor]) -> Iterator[Batch]:
        """uint8 images and labels of each index batch, in order."""
        if isinstance(self.images, TensorImages):
            data = self.images
            return ((data.images[idx], data.labels[idx]) for idx in (to_device(b, data.images.device) for b in batches))
        loader = DataLoader(
            _Files(self.images),
            batch_sampler=[b.tolist() for b in batches],
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating the iterator must not draw from the global torch RNG,
            # or a mid-epoch resume would shift every later dropout and drop-path mask.
            generator=torch.Generator().manual_seed(0),
        )
        return iter(loader)
