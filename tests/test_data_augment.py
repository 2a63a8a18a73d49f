"""Batch augmentation: shapes, determinism under a seed, what each op does to the pixels."""

from __future__ import annotations

import pytest
import torch

from archnas.data.augment import (
    AugmentSpec,
    BatchTransform,
    cutout,
    random_crop,
    random_hflip,
)

CPU = torch.device("cpu")


def batch(n: int = 16, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_full_transform_shapes_dtype_and_normalization():
    images = batch()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    t = BatchTransform(mean, std, AugmentSpec(crop_padding=2, hflip=True, cutout=3), CPU)
    out = t(images, gen(1))
    assert out.shape == images.shape and out.dtype == torch.float32
    plain = BatchTransform(mean, std, AugmentSpec(), CPU)(images)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(plain, expected, atol=1e-6)


def test_same_seed_same_batch_other_seed_other_batch():
    images = batch(64)
    t = BatchTransform((0.5,) * 3, (0.5,) * 3, AugmentSpec(crop_padding=2, hflip=True, cutout=4), CPU)
    assert torch.equal(t(images, gen(7)), t(images, gen(7)))
    assert not torch.equal(t(images, gen(7)), t(images, gen(8)))


def test_no_generator_means_no_augmentation():
    images = batch()
    spec = AugmentSpec(crop_padding=2, hflip=True, cutout=4)
    assert torch.equal(
        BatchTransform((0.5,) * 3, (0.5,) * 3, spec, CPU)(images),
        BatchTransform((0.5,) * 3, (0.5,) * 3, AugmentSpec(), CPU)(images),
    )


def test_random_crop_is_a_zero_filled_shift_within_padding():
    images = batch(32)
    out = random_crop(images, 2, gen(3))
    assert out.shape == images.shape and out.dtype == torch.uint8
    offsets = torch.randint(0, 5, (2, 32), generator=gen(3))  # the draws random_crop makes
    for i in range(32):
        dy, dx = int(offsets[0, i]) - 2, int(offsets[1, i]) - 2
        padded = torch.nn.functional.pad(images[i], (2, 2, 2, 2))
        expected = padded[:, 2 + dy : 2 + dy + 8, 2 + dx : 2 + dx + 8]
        assert torch.equal(out[i], expected), i
    shifts = {(int(a), int(b)) for a, b in offsets.T}
    assert len(shifts) > 5  # offsets really vary between images


def test_hflip_flips_some_images_and_keeps_the_rest():
    images = batch(64)
    out = random_hflip(images, gen(5))
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


@pytest.mark.parametrize("size", [2, 3, 4])
def test_cutout_zeroes_a_clipped_square_of_the_given_side(size):
    n, h, w = 200, 8, 8
    x = torch.ones(n, 3, h, w)
    out = cutout(x, size, gen(11))
    zero = out[:, 0] == 0
    assert torch.equal(zero, (out == 0).all(dim=1))  # the same pixels in every channel
    g = gen(11)  # the draws cutout makes: centre rows, then centre columns
    cy, cx = torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)
    for i in range(n):
        y0, x0 = int(cy[i]) - size // 2, int(cx[i]) - size // 2
        rows = min(y0 + size, h) - max(y0, 0)
        cols = min(x0 + size, w) - max(x0, 0)
        assert int(zero[i].sum()) == rows * cols
        ys, xs = zero[i].nonzero(as_tuple=True)
        assert int(ys.min()) == max(y0, 0) and int(xs.min()) == max(x0, 0)
    inside = [
        (size // 2 <= int(cy[i]) <= h - size + size // 2) and (size // 2 <= int(cx[i]) <= w - size + size // 2)
        for i in range(n)
    ]
    assert any(inside)
    assert all(int(zero[i].sum()) == size * size for i in range(n) if inside[i])
