"""Loaders: seeded order, rank shards, exact mid-epoch resume, cyclic streams; splits; bundle checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from archnas.config.schema import DatasetConf, LoaderConf
from archnas.data import (
    AugmentSpec,
    BatchLoader,
    BatchTransform,
    TensorImages,
    build_data,
)
from archnas.data.split import make_split
from archnas.errors import ConfigError

CPU = torch.device("cpu")


def image_set(n: int = 50, n_classes: int = 5) -> TensorImages:
    g = torch.Generator().manual_seed(0)
    return TensorImages(
        torch.randint(0, 256, (n, 1, 6, 6), generator=g, dtype=torch.uint8), torch.arange(n) % n_classes
    )


def loader(
    images=None, batch: int = 8, augment: bool = True, rank: int = 0, world_size: int = 1, seed: int = 3
) -> BatchLoader:
    transform = BatchTransform((0.5,), (0.25,), AugmentSpec(crop_padding=1, hflip=True, cutout=2), CPU)
    return BatchLoader(
        images or image_set(),
        batch,
        transform,
        shuffle=True,
        augment=augment,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )


def test_batches_cover_the_set_once_per_epoch_in_a_seeded_order():
    a = loader(augment=False)
    e0 = a.index_batches(0)
    assert len(a) == len(e0) == 7 and sorted(torch.cat(e0).tolist()) == list(range(50))
    assert all(torch.equal(x, y) for x, y in zip(e0, loader(augment=False).index_batches(0)))
    assert not torch.equal(torch.cat(e0), torch.cat(a.index_batches(1)))
    assert not torch.equal(torch.cat(e0), torch.cat(loader(augment=False, seed=4).index_batches(0)))


@pytest.mark.parametrize("world_size,batch", [(2, 8), (3, 6), (4, 8)])
def test_rank_shards_partition_every_global_batch(world_size, batch):
    single = loader(batch=batch, world_size=1).index_batches(2)
    shards = [loader(batch=batch, rank=r, world_size=world_size).index_batches(2) for r in range(world_size)]
    assert all(len(s) == len(shards[0]) for s in shards)
    for i, global_batch in enumerate(single[: len(shards[0])]):
        parts = [s[i] for s in shards]
        assert torch.equal(torch.cat(parts), global_batch)  # no overlap, nothing missing, same global batch
        assert all(len(p) > 0 for p in parts)
    # 50 images: the last global batch is only dropped when it has fewer images than ranks
    assert len(shards[0]) == len(single) - (1 if 50 % batch and 50 % batch < world_size else 0)


def test_resume_in_the_middle_of_an_epoch_gives_the_same_batches():
    whole = [(x.clone(), y.clone()) for x, y in loader().epoch(4)]
    first = loader()
    taken = []
    for x, y in first.epoch(4):
        taken.append((x, y))
        if len(taken) == 3:
            break
    state = first.state_dict()
    assert state == {"epoch": 4, "position": 3}
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed.epoch(4))
    assert len(taken) + len(rest) == len(whole)
    for (x, y), (wx, wy) in zip(taken + rest, whole):
        assert torch.equal(x, wx) and torch.equal(y, wy)
    assert list(resumed.epoch(4)) == []  # the epoch is used up
    assert len(list(resumed.epoch(5))) == len(whole)


def test_augmentation_differs_between_batches_and_epochs_but_not_between_runs():
    a = [x for x, _ in loader().epoch(0)]
    b = [x for x, _ in loader().epoch(0)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    plain = [x for x, _ in loader(augment=False).epoch(0)]
    assert not torch.equal(a[0], plain[0])


def test_cyclic_stream_runs_across_epochs_and_resumes():
    stream = loader(batch=16)  # 4 batches per epoch
    seen = [stream.next()[1] for _ in range(10)]
    assert stream.state_dict() == {"epoch": 2, "position": 2}
    epoch0 = torch.cat(seen[:4])
    assert sorted(epoch0.tolist()) == sorted(image_set().labels.tolist())
    again = loader(batch=16)
    again.load_state_dict({"epoch": 1, "position": 1})
    assert all(torch.equal(again.next()[1], s) for s in seen[5:10])


def test_plain_iteration_is_a_full_pass_that_leaves_the_position_alone():
    a = loader(augment=False)
    next(iter(a.epoch(0)))
    state = a.state_dict()
    assert sum(len(y) for _, y in a) == 50
    assert a.state_dict() == state


def test_split_is_stratified_seeded_and_recorded(tmp_path):
    labels = torch.arange(1000) % 10
    s = make_split(labels, 0.3, 0, seed=5)
    assert len(s.val_idx) == 300 and torch.bincount(labels[s.val_idx]).tolist() == [30] * 10
    assert set(s.train_idx.tolist()).isdisjoint(s.val_idx.tolist())
    assert s.digest() == make_split(labels, 0.3, 0, seed=5).digest() != make_split(labels, 0.3, 0, seed=6).digest()
    limited = make_split(labels, 0.5, 200, seed=5)
    assert len(limited.limited_idx) == 200 and torch.bincount(labels[limited.limited_idx]).tolist() == [20] * 10
    assert len(limited.val_idx) == 100
    s.save(tmp_path / "split.json")
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["digest"] == s.digest() and saved["val_idx"] == s.val_idx.tolist() and saved["n_train"] == 700
    with pytest.raises(ConfigError, match="loader.val_ratio"):
        make_split(labels, 0.005, 0, seed=5)  # 5 images cannot hold 10 classes


def test_bundle_parts_batches_and_checks(tmp_path):
    data = build_data(
        DatasetConf(name="digits", limit_test=100),
        LoaderConf(train_batch=32, test_batch=64, val_ratio=0.25),
        seed=1,
        device=CPU,
        cache_dir=tmp_path,
    )
    assert len(data.parts["train"]) + len(data.parts["val"]) == 1437 and len(data.parts["test"]) == 100
    x, y = next(iter(data.loader("train", training=True).epoch(0)))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 0.5  # normalized
    assert len(data.loader("test", training=False)) == 2
    assert data.augment == AugmentSpec(crop_padding=1, hflip=False, cutout=0)  # digits' defaults
    no_val = build_data(DatasetConf(name="digits"), LoaderConf(), seed=1, device=CPU, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="val_ratio"):
        no_val.loader("val", training=True)
    ddp = build_data(
        DatasetConf(name="digits"), LoaderConf(train_batch=30), seed=1, device=CPU, cache_dir=tmp_path, world_size=4
    )
    with pytest.raises(ConfigError, match="train_batch.*4 ranks"):
        ddp.loader("train", training=True)
    with pytest.raises(ConfigError, match="cutout.*8x8"):
        build_data(DatasetConf(name="digits"), LoaderConf(cutout=16), seed=1, device=CPU, cache_dir=tmp_path)


def test_streaming_loader_yields_what_the_in_memory_loader_yields(tmp_path):
    rng = np.random.default_rng(1)
    for part, n in (("train", 7), ("test", 2)):
        for cls in ("a", "b", "c"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / part / cls / f"{i}.png"
                )
    conf = LoaderConf(train_batch=4, cutout=3, workers=2)  # workers only matter when streaming
    memory = build_data(
        DatasetConf(name="imagefolder", dataroot=str(tmp_path)), conf, seed=2, device=CPU, cache_dir=tmp_path / "c"
    )
    stream = build_data(
        DatasetConf(name="imagefolder", dataroot=str(tmp_path), in_memory=False),
        conf,
        seed=2,
        device=CPU,
        cache_dir=tmp_path / "c",
    )
    a, b = memory.loader("train", training=True), stream.loader("train", training=True)
    for (x1, y1), (x2, y2) in zip(list(a.epoch(1)), list(b.epoch(1)), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    b2 = stream.loader("train", training=True)
    b2.load_state_dict({"epoch": 1, "position": 3})
    expected = list(memory.loader("train", training=True).epoch(1))[3:]
    for (x1, _), (x2, _) in zip(expected, list(b2.epoch(1)), strict=True):
        assert torch.equal(x1, x2)
