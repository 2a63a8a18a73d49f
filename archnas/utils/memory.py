"""Peak memory: max allocated on CUDA, peak resident set size on CPU.

Two uses, one measure. `process_peak_bytes` is the peak of the whole process (VmHWM), exact, for
benchmarks that run each variant in a fresh process. `PeakMemory` is the peak of a stretch of
work inside a long process (one phase of a run): the process-wide peak never goes down, so it
cannot tell the second of two phases from the first, and a thread samples the resident set
every 20 ms instead (it misses spikes shorter than that, fine for phases that last minutes).
"""

from __future__ import annotations

import os
import threading
from typing import Optional

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> Optional[int]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def process_peak_bytes(device: torch.device) -> Optional[int]:
    """This process's peak memory so far: CUDA max allocated on a GPU, else the peak resident set
    since exec (VmHWM; not `ru_maxrss`, which Linux carries over fork and exec from the parent)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_bytes(device: torch.device) -> Optional[int]:
    """What the process holds now: CUDA allocated on a GPU, else the resident set."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else current_rss()


class PeakMemory:
    """`with PeakMemory(device) as mem: ...; mem.peak_bytes`."""

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device = device
        self.interval = interval
        self.peak_bytes: Optional[int] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_bytes = current_rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = current_rss()
            if rss is not None and (self.peak_bytes is None or rss > self.peak_bytes):
                self.peak_bytes = rss

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rss = current_rss()
        if rss is not None and (self.peak_bytes is None or rss > self.peak_bytes):
            self.peak_bytes = rss
