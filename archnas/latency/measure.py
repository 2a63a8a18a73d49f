"""The built-in cost models, registered at import: what each measures on the network of one
architecture. Counts (`params`, `macs`: exact, as `archnas stats` counts them) and measured inference
time: PyTorch on the CPU (`cpu_ms`) or onnxruntime (`ort_ms`).

Both times follow the same protocol, so numbers from different runs compare: eval mode, no autograd,
a fixed number of threads (set for the measurement and restored after), `warmup` untimed runs
(allocator, caches, lazy initialization), then the median of `repeats` timed runs of one batch.
The median rather than the mean: one run preempted by another job moves the mean but not the
median. On a machine busy with other work every run slows alike and the median with them, so
time on an otherwise idle machine (a 2-core machine shared with other jobs was seen at 2.8x its
idle times).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from archnas.export.onnx import INPUT_NAME, onnx_bytes, ort_session
from archnas.latency.registry import register_cost_model
from archnas.stats import count_macs, count_params


@dataclass(frozen=True)
class TimingProtocol:
    threads: int = 1
    warmup: int = 5
    repeats: int = 20
    batch_size: int = 1


@register_cost_model("params", unit="parameters", exact=True)
def params(net: nn.Module, input_shape: list[int], protocol: TimingProtocol) -> float:
    """Weights of the network (a supernet's architecture parameters are not counted)."""
    return count_params(net)


@register_cost_model("macs", unit="multiply-adds", exact=True)
def macs(net: nn.Module, input_shape: list[int], protocol: TimingProtocol) -> float:
    """Multiply-adds of convolutions and linear layers in one eval-mode forward of one image."""
    return count_macs(net, input_shape)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_ms(run: Callable[[], object], protocol: TimingProtocol) -> float:
    for _ in range(protocol.warmup):
        run()
    times = []
    for _ in range(protocol.repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


@register_cost_model("cpu_ms", unit="ms", exact=False)
def cpu_ms(net: nn.Module, input_shape: list[int], protocol: TimingProtocol) -> float:
    """Milliseconds per batch of a PyTorch forward on the CPU."""
    was_training = net.training
    net.eval()
    x = torch.zeros(protocol.batch_size, *input_shape)
    try:
        with torch_threads(protocol.threads), torch.inference_mode():
            return median_ms(lambda: net(x), protocol)
    finally:
        net.train(was_training)


@register_cost_model("ort_ms", unit="ms", exact=False)
def ort_ms(net: nn.Module, input_shape: list[int], protocol: TimingProtocol) -> float:
    """Milliseconds per batch of the network exported to ONNX (`archnas.export.onnx`, as `archnas
    export` writes it) in onnxruntime on the CPU."""
    x = torch.zeros(protocol.batch_size, *input_shape)
    session = ort_session(onnx_bytes(net, x), protocol.threads)
    feed = {INPUT_NAME: x.numpy()}
    return median_ms(lambda: session.run(None, feed), protocol)

