"""The export formats: how a network becomes files, and how those files are loaded back and run
for the parity check. Each takes the network (eval mode, CPU, returning logits) and an example
batch of real inputs, and returns its files as bytes, so nothing is written before every format
asked for has passed its check.

- `onnx`: `model.onnx`, torch's current exporter (`archnas.export.onnx`), any batch size; run in
  onnxruntime on the CPU.
- `torchscript`: `model.torchscript`, `torch.jit.trace` of the network; `torch.jit.load`.
- `pt`: `model.pt2`, a `torch.export` ExportedProgram (the graph of ATen operators and the weights,
  any batch size): `torch.export.load("model.pt2").module()` needs torch only, no archnas class.
- `py`: `model.py` and `weights.pt`, standalone PyTorch source and its state dict
  (`archnas.export.source`): `import model; net = model.load()` needs torch only.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from archnas.errors import ConfigError
from archnas.export.onnx import INPUT_NAME, onnx_bytes, ort_session
from archnas.export.source import WEIGHTS_FILE, load_source, network_source

Files = dict[str, bytes]
Runnable = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Format:
    name: str
    files: tuple[str, ...]  # what it writes, besides bundle.json
    runtime: str  # what the parity check runs the files with
    write: Callable[[nn.Module, Tensor, str], Files]  # (network, example batch, description) -> files
    load: Callable[[Files], Runnable]


def _dims() -> tuple[dict[int, torch.export.Dim], ...]:
    return ({0: torch.export.Dim("batch", min=1)},)


def _onnx_write(net: nn.Module, example: Tensor, doc: str) -> Files:
    return {"model.onnx": onnx_bytes(net, example, dynamic_batch=True)}


def _onnx_load(files: Files) -> Runnable:
    session = ort_session(files["model.onnx"], threads=1)
    return lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])


def _torchscript_write(net: nn.Module, example: Tensor, doc: str) -> Files:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notes
        torch.jit.save(torch.jit.trace(net, example), buffer)
    return {"model.torchscript": buffer.getvalue()}


def _torchscript_load(files: Files) -> Runnable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(io.BytesIO(files["model.torchscript"]), map_location="cpu")


def _program_write(net: nn.Module, example: Tensor, doc: str) -> Files:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(net, (example,), dynamic_shapes=_dims()), buffer)
    return {"model.pt2": buffer.getvalue()}


def _program_load(files: Files) -> Runnable:
    return torch.export.load(io.BytesIO(files["model.pt2"])).module()


def _source_write(net: nn.Module, example: Tensor, doc: str) -> Files:
    source, state = network_source(net, doc)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {"model.py": source.encode(), WEIGHTS_FILE: buffer.getvalue()}


def _source_load(files: Files) -> Runnable:
    state = torch.load(io.BytesIO(files[WEIGHTS_FILE]), map_location="cpu", weights_only=True)
    return load_source(files["model.py"].decode(), state)


FORMATS: tuple[Format, ...] = (
    Format("onnx", ("model.onnx",), "onnxruntime (CPUExecutionProvider)", _onnx_write, _onnx_load),
    Format("torchscript", ("model.torchscript",), "torch.jit.load", _torchscript_write, _torchscript_load),
    Format("pt", ("model.pt2",), "torch.export.load(...).module()", _program_write, _program_load),
    Format("py", ("model.py", WEIGHTS_FILE), "model.py's Network with weights.pt (weights_only)", _source_write,
           _source_load),
)
FORMAT_NAMES: tuple[str, ...] = tuple(f.name for f in FORMATS)


def format_named(name: str, key: str = "--format") -> Format:
    """The format called `name`, else a ConfigError naming `key` and the formats there are."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ConfigError(f"{key}: unknown format {name!r}; expected one of {', '.join(FORMAT_NAMES)}")
