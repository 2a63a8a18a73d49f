"""Device choice and determinism switches."""

from __future__ import annotations

import os

import torch
from torch import Tensor

from archnas.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    """`auto` picks CUDA when present, else CPU; `cuda` without a GPU is an error, not a silent fallback."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"common.device: {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"common.device is {spec!r} but CUDA is not available here; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"common.device is {spec!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    elif device.type != "cpu":
        raise ConfigError(f"common.device: {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels everywhere (slower on GPU); needed for bit-identical GPU resume."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """A host tensor on `device` without making the host wait: to CUDA through pinned memory and
    an asynchronous copy (a plain `.to` from pageable memory blocks until the copy is done)."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
