"""The process group of a test's ranks (torch.multiprocessing.spawn workers on gloo), joined and
left in one place so every such test tears it down the same, safe way.

Leaving: every rank first waits at a barrier, so no rank closes its gloo connections while a peer
still has a collective (or a write of rank 0 it reads) in flight on them, then destroys the group
while the interpreter is whole. A rank that leaves early (its peer mid-collective) or one whose
group is torn down at interpreter exit, with gloo's worker threads still running, can die in C++
teardown with SIGABRT ("terminate called without an active exception") although its test passed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.distributed as dist


@contextlib.contextmanager
def gloo_group(root: str, rank: int, world_size: int = 2) -> Iterator[None]:
    """Join the group through a file in `root` (no ports to race for), one intra-op thread."""
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    try:
        yield
        dist.barrier()  # only on success: after a failure the peer may never arrive
    finally:
        dist.destroy_process_group()
