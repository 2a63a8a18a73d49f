"""Mixed precision and memory format: bf16/fp16 autocast, the fp16 GradScaler, channels_last.

All three only take effect on CUDA: CPU autocast is slower than fp32 for these models, and a
run's numbers should not change because a config written for a GPU ran on a laptop.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

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
        return torch.autocast(device_type="cuda", dtype=self.dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def prepare_input(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x
