"""A network as ONNX bytes, and an onnxruntime session of them: what `archnas export --format onnx`
writes and checks, and what the `ort_ms` cost model (`archnas.latency.measure`) times.

The export is torch's current one (`torch.onnx.export(..., dynamo=True)`: `torch.export` captures
the graph, onnxscript translates it and optimizes the model), which needs the `onnxscript`
package (`pip install "archnas[onnx]"`). The TorchScript-based exporter it replaces is deprecated.
It costs about 2 s per network on a 2-core CPU (the old one 0.1-0.5 s), which a cost table of
`ort_ms` pays once per network it times.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator

import torch
from torch import nn

from archnas.errors import ConfigError

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def _missing(package: str, why: str) -> ConfigError:
    return ConfigError(f"{why} needs {package}, which is not installed: pip install \"archnas[onnx]\" "
                       "(onnx, onnxruntime and onnxscript)")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress prints, deprecation warnings and notes about optional packages
    (torchvision's ops) stay out of the user's output; its errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def onnx_bytes(net: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    """`net` (run in eval mode) as an ONNX model of one input `input` and one output `logits`,
    traced at `example` ([N, C, H, W]); `dynamic_batch`: the model takes any batch size (the
    example then needs N >= 2, which `torch.export` does not specialize)."""
    try:
        import onnxscript  # noqa: F401  (what the exporter translates with)
    except ImportError:
        raise _missing("onnxscript", "exporting to ONNX") from None
    was_training = net.training
    net.eval()
    dims = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    try:
        with _quiet_exporter():
            program = torch.onnx.export(net, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=dims, verbose=False)
    finally:
        net.train(was_training)
    return program.model_proto.SerializeToString()


def ort_session(model: bytes, threads: int):
    """An onnxruntime session of `model` on the CPU, with `threads` intra-op threads."""
    try:
        import onnxruntime
    except ImportError:
        raise _missing("onnxruntime", "running an ONNX model") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
