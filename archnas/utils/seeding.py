"""Every seed a run uses, derived one way from `common.seed` and names.

    derive_seed(common_seed, "search")                 # the global RNGs of the search stage
    derive_seed(split_seed, 1, epoch)                  # a loader's order stream (int keys)
    derive_seed(common_seed, "random_arch", 3)         # random search's candidate 3

A seed is `numpy.random.SeedSequence`'s state for the entropy `[seed, *keys]`, names turned into
integers by SHA-256, so nearby keys give unrelated streams and no two uses of a name collide by
accident. Callers keep the number of keys fixed per use: SeedSequence treats trailing zeros as
absent. The global RNGs (python, numpy, torch) are seeded once per stage (`seed_everything`),
so a stage computes the same thing whether or not an earlier stage ran in the same process
(`--stages`, `--algos`, a resumed run); a resumed stage then restores its checkpoint's RNG states.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def _word(key: str | int) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"seed keys are names or non-negative integers, got {key!r}")
    if isinstance(key, int):
        if key < 0:
            raise ValueError(f"seed keys are non-negative, got {key}")
        return key
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "little")


def derive_seed(seed: int, *keys: str | int, bits: int = 64) -> int:
    """A `bits`-bit seed (32 or 64) for the stream named by `keys` under `seed`."""
    if bits not in (32, 64):
        raise ValueError(f"bits: 32 or 64, got {bits}")
    dtype = np.uint64 if bits == 64 else np.uint32
    entropy = [_word(seed), *(_word(k) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=dtype)[0])


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global RNGs (every CUDA device too) from one 32-bit seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
