"""archnas's own version (what files and checkpoints record as their writer), and the oldest
torch archnas runs on, checked when the command starts.

2.4 is the newest of the APIs the code needs: `torch.is_autocast_enabled(device_type)` and
`torch.get_autocast_dtype` (2.4; the fused cell under autocast), `torch.amp.GradScaler("cuda")`
(2.3), `torch.utils.flop_counter` (2.1), `torch.func.functional_call` (2.0). The float32
precision switches use `fp32_precision` where torch has it (2.9+) and the older `allow_tf32`
flags otherwise. setup.cfg's `torch>=` says the same; a test holds the two together.
"""

from __future__ import annotations

import re

from archnas.errors import UsageError

ARCHNAS_VERSION = "0.1.0"  # setup.cfg reads it; `archnas.__version__` is the same value
MIN_TORCH = "2.4"


def _major_minor(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def check_torch_version(version: str) -> None:
    """A UsageError naming both versions when `version` is older than MIN_TORCH."""
    have, need = _major_minor(version), _major_minor(MIN_TORCH)
    if have is not None and have < need:
        raise UsageError(f"archnas needs torch >= {MIN_TORCH}, but torch {version} is installed; upgrade it, "
                         f"e.g. pip install 'torch>={MIN_TORCH}'")
