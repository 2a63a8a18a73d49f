"""Mixed precision and memory format: bf16/fp16 autocast, the fp16 GradScaler, channels_last, and
full float32 precision where finite differences need it.

What each part of a run computes in (README "Precision"):
- weight steps and evaluation: float32, or under `trainer.amp` autocast on CUDA (bf16 or fp16;
  fp16 with a GradScaler), in channels_last with `trainer.channels_last` on CUDA;
- architecture steps (`archnas.nas.bilevel`): always float32, outside autocast (the model's layout
  still applies); the finite-difference Hessian-vector product of the second-order step runs in
  `ieee_float32()`, because its shift of the weights is below TF32's resolution;
- counting (`archnas stats`) and BatchNorm statistics: float32.

AMP and channels_last only take effect on CUDA: CPU autocast is slower than float32 for these
models, and a run's numbers should not change because a config written for a GPU ran on a laptop.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import torch
from torch import Tensor, nn

from archnas.config.schema import AmpConf, AmpDtype


class Precision:
    def __init__(self, amp: AmpConf, channels_last: bool, device: torch.device):
        self.device = device
        on_cuda = device.type == "cuda"
        self.amp = amp.enabled and on_cuda
        self.dtype = torch.bfloat16 if amp.dtype == AmpDtype.bf16 else torch.float16
        self.channels_last = channels_last and on_cuda
        # bf16 has fp32's exponent range, so only fp16 needs loss scaling.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.dtype == torch.float16)

    def autocast(self) -> ContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Device and memory format of a plain module; call it before wrapping in DDP, whose
        gradient buckets copy the parameters' strides when they are made."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def prepare_input(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


# The float32 precision settings of torch's backends. torch >= 2.9 has `fp32_precision` ("ieee",
# "tf32", or "none": inherit from the parent setting) and refuses reads of the older `allow_tf32`
# flags once the new ones differ, so only one of the two APIs is ever touched.
def _new_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def _precision_flags() -> list[tuple[object, str, object]]:
    """(object, attribute, value that means full float32) for the matmul and convolution flags."""
    if _new_api():
        return [(torch.backends.cuda.matmul, "fp32_precision", "ieee"), (torch.backends.cudnn.conv, "fp32_precision", "ieee")]
    return [(torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """float32 matmuls and convolutions at full float32 precision inside the block, whatever the
    process-wide TF32 settings (cuDNN runs float32 convolutions in TF32 by default on Ampere and
    newer GPUs); the settings are restored afterwards, also on errors."""
    flags = _precision_flags()
    saved = [getattr(obj, name) for obj, name, _ in flags]
    try:
        for obj, name, exact in flags:
            setattr(obj, name, exact)
        yield
    finally:
        for (obj, name, _), value in zip(flags, saved):
            setattr(obj, name, value)


def conv_tf32_enabled() -> bool:
    """Whether cuDNN may run float32 convolutions in TF32 right now."""
    if not _new_api():
        return bool(torch.backends.cudnn.allow_tf32)
    for value in (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.fp32_precision,
                  torch.backends.fp32_precision):
        if value != "none":
            return value == "tf32"
    return False
