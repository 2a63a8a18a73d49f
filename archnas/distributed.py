"""Distributed training under torchrun: the process group, the DDP wrapper and the collectives
the search needs outside DDP.

A run started by `torchrun --nproc_per_node N` finds RANK/WORLD_SIZE/LOCAL_RANK (and the
rendezvous address) in its environment; a plain `python` run has none of them, is world size 1,
and nothing here does anything. The process group is gloo on CPU and nccl on CUDA, chosen from
the device, so the same command runs on a laptop and on a GPU node. Each rank drives
`cuda:LOCAL_RANK` when CUDA is used.

Only rank 0 writes files; the other ranks wait at `barrier()` where they would otherwise read
something rank 0 may still be writing. A rank that fails raises and exits: torchrun then stops
the others, so no barrier is ever entered from an error path (it would wait for ranks that are
still training).

Decisions every rank must take together (stop on a signal, write a time-based checkpoint) are
agreed over a gloo group of host tensors (`DistSession.control_group`; the default group itself
when that is gloo), so agreeing never waits for a GPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from archnas.errors import ConfigError
from archnas.utils.device import resolve_device

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistSession:
    """Where this process stands in the run: its rank, the number of ranks and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    # gloo group of every rank for host-side agreement; None: the default group (gloo already,
    # or a single process)
    control_group: Any = None


def ranks_from_env(environ: Mapping[str, str]) -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) when they are absent."""
    present = [k for k in ENV_KEYS if k in environ]
    if not present:
        return 0, 1, 0
    if len(present) != len(ENV_KEYS):
        missing = [k for k in ENV_KEYS if k not in environ]
        raise ConfigError(f"environment: {', '.join(present)} set but {', '.join(missing)} missing; "
                          "launch with torchrun, which sets all of RANK, WORLD_SIZE and LOCAL_RANK")
    try:
        rank, world, local = (int(environ[k]) for k in ENV_KEYS)
    except ValueError:
        raise ConfigError("environment: RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                          + ", ".join(f"{k}={environ[k]!r}" for k in ENV_KEYS)) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} is not a valid rank "
                          "(expected 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0)")
    return rank, world, local


def rank_device(device_spec: str, world_size: int, local_rank: int) -> torch.device:
    """The device of this rank: `common.device` as usual, but each rank takes cuda:LOCAL_RANK."""
    device = resolve_device(device_spec)
    if world_size == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(f"common.device: {device_spec!r} names one GPU, but torchrun started {world_size} "
                          "processes; use auto or cuda (rank r of a node takes cuda:LOCAL_RANK)")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                          "start at most that many processes per node (--nproc_per_node)")
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def distributed_session(device_spec: str, environ: Mapping[str, str] | None = None) -> Iterator[DistSession]:
    """Join the torchrun process group for the duration of the block (nothing to join in a plain
    run), and leave it at the end, also on errors, so a process never exits holding it."""
    rank, world, local = ranks_from_env(os.environ if environ is None else environ)
    device = rank_device(device_spec, world, local)
    if world == 1:
        yield DistSession(rank, world, local, device)
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    already = dist.is_initialized()
    if not already:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world)
    control = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    try:
        yield DistSession(rank, world, local, device, control)
        if not already:
            # Every rank is done with the group before any tears its connections down: a rank
            # leaving while a peer is still mid-collective can abort in gloo's C++ teardown.
            dist.barrier(group=control)
    finally:
        if not already:
            dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (a no-op in a single process): called on success paths only, after
    rank 0 wrote something the others read next."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensors: Sequence[Tensor]) -> None:
    """Average `tensors` in place over the ranks, in one collective (a no-op in a single process).

    The bilevel step uses it on gradients it computes outside DDP: each rank's gradient is that of
    its shard's mean loss, so the average is the gradient of the global batch's mean loss.
    """
    if not tensors or not is_distributed():
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset: offset + t.numel()].view_as(t))
        offset += t.numel()


def agree_max(values: Sequence[int], group: Any = None) -> list[int]:
    """The element-wise maximum of small host integers over the ranks (the values themselves in a
    single process), on a CPU group: the training device is never synchronized for it."""
    if not is_distributed():
        return list(values)
    flags = torch.tensor(list(values), dtype=torch.int64)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group)
    return flags.tolist()


def gather_to_main(obj: Any, group: Any = None) -> Optional[list[Any]]:
    """Every rank's `obj` on rank 0, in rank order (None on the other ranks); `[obj]` in a single
    process. A collective: every rank calls it at the same point."""
    if not is_distributed():
        return [obj]
    out: Optional[list[Any]] = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0, group=group)
    return out


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """`model` in DistributedDataParallel when the run has more than one process, else as is.
    `find_unused_parameters` for models whose forward leaves some parameters out (GDAS). The model
    must already have its device and memory format: DDP's gradient buckets copy the parameters'
    strides when it is made."""
    if not is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)
