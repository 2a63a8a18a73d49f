"""Seeding the global RNGs (python, numpy, torch CPU and CUDA) once per phase.

Each phase seeds from (common.seed, phase name), so a phase computes the same thing whether or not
an earlier phase ran in the same process (`--no-search`, `--algos`, a resumed run). A resumed phase
then restores the RNG states saved in its checkpoint.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def phase_seed(seed: int, phase: str) -> int:
    digest = hashlib.sha256(f"{seed}:{phase}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
