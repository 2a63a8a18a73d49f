"""The training loss: cross-entropy (optionally label-smoothed) plus the weighted aux-tower loss.

Models return logits or `(logits, aux_logits | None)`; `TrainLoss(outputs, targets)` accepts
either, which is the signature the bilevel optimizer's virtual steps call too.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from archnas.config.ranges import check_loss
from archnas.config.schema import LossConf
from archnas.errors import ConfigError

LOSS_TYPES = ("cross_entropy",)


def split_outputs(outputs: Any) -> tuple[Tensor, Optional[Tensor]]:
    """`(logits, aux_logits or None)` from whatever the model returned."""
    if isinstance(outputs, Tensor):
        return outputs, None
    if isinstance(outputs, (tuple, list)) and len(outputs) == 2 and isinstance(outputs[0], Tensor):
        return outputs[0], outputs[1]
    raise TypeError(f"a model must return logits or (logits, aux_logits or None), got {type(outputs).__name__}")


class TrainLoss(nn.Module):
    """`loss(logits) + aux_weight * loss(aux_logits)`, each averaged over the batch."""

    def __init__(self, conf: LossConf, aux_weight: float = 0.0):
        super().__init__()
        if conf.type not in LOSS_TYPES:
            raise ConfigError(f"trainer.lossfn.type: {conf.type!r} is not one of {', '.join(LOSS_TYPES)}")
        check_loss(conf, aux_weight)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=conf.label_smoothing)
        self.aux_weight = aux_weight

    def forward(self, outputs: Any, targets: Tensor) -> Tensor:
        logits, aux = split_outputs(outputs)
        loss = self.criterion(logits, targets)
        if aux is not None and self.aux_weight > 0:
            loss = loss + self.aux_weight * self.criterion(aux, targets)
        return loss


def eval_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Plain summed cross-entropy of the main logits: what validation and test report per image."""
    return nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
