"""The fused search cell and the custom autograd functions of `archnas.ops`, run in fresh
processes with glibc's heap checks on (`tests/kernel_stress.py` is the driver).

A 1-node DARTS cell once aborted CI with a corrupted heap, now and then, in the second-order
architecture step. The defect class: ATen's CPU batch-norm kernels index per-channel tensors by
the input's channels without checking their lengths, and the fused cell calls those kernels
directly (`native_batch_norm`, `native_batch_norm_backward`): a running mean shorter than the
channels was written past its end (a segfault, or `free(): invalid pointer` later). Such tensors
are now refused before a kernel sees them, and these runs train 1- and 2-node cells (regular and
reduction, first and second order, fused and plain) several times with the checks on.

glibc 2.34 and newer only honour MALLOC_CHECK_ with its debug library preloaded; where that
library is missing the runs still check results and exit status, with MALLOC_PERTURB_ filling
freed memory so a use after free computes garbage.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "kernel_stress.py"


def heap_checked_env(perturb: int) -> dict[str, str]:
    env = {**os.environ, "MALLOC_CHECK_": "3", "MALLOC_PERTURB_": str(perturb), "OMP_NUM_THREADS": "2"}
    debug = sorted(glob.glob("/usr/lib/*/libc_malloc_debug.so.0") + glob.glob("/lib/*/libc_malloc_debug.so.0"))
    if debug:
        env["LD_PRELOAD"] = " ".join(filter(None, [debug[0], os.environ.get("LD_PRELOAD", "")]))
    return env


def run_driver(what: str, seed: int) -> None:
    proc = subprocess.run([sys.executable, str(DRIVER), what, str(seed)], cwd=REPO, env=heap_checked_env(seed * 37 % 255 + 1),
                          capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-3000:]
    if proc.returncode < 0:
        pytest.fail(f"{what} (seed {seed}) died of {signal.Signals(-proc.returncode).name}: a memory error\n{tail}")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), f"{what} (seed {seed}) failed:\n{tail}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_and_two_node_cells_train_with_heap_checks(seed: int):
    run_driver("cells", seed)


def test_custom_autograd_functions_on_edge_shapes_with_heap_checks():
    run_driver("kernels", 7)
