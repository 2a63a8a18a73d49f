"""The accuracy of a subnet on the weights it inherits from a trained supernet.

    scorer = SubnetScorer(supernet, recalibration_batches, val_batches, precision)
    top1 = scorer.score(arch)

The supernet runs the architecture (a fixed weighting: only its path computes); its BatchNorm
statistics are first re-estimated on the same fixed train batches for every candidate
(`archnas.training.bn_recalibration`), so candidates are compared on equal terms and a score
depends on nothing but the weights, the architecture and those batches: a resumed search
rescoring a candidate gets the same number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from archnas.context import PhaseContext
from archnas.data.loader import Batch
from archnas.errors import ConfigError
from archnas.nas.spaces import Space
from archnas.space.model import SearchSpaceModel
from archnas.training.checkpoint import LAST, read_checkpoint
from archnas.training.bn_recalibration import recalibrate_bn
from archnas.training.precision import Precision
from archnas.training.tester import Tester

if TYPE_CHECKING:
    from archnas.data import DataBundle


class SubnetScorer:
    def __init__(self, supernet: SearchSpaceModel, recalibration: Sequence[Batch], val: Sequence[Batch],
                 precision: Precision):
        """`recalibration`: the train batches BatchNorm statistics are estimated from (empty: the
        supernet's running statistics are used as they are); `val`: the batches scored on."""
        self.supernet, self.recalibration, self.val = supernet, list(recalibration), list(val)
        self.tester = Tester(supernet, precision)

    def evaluate(self, arch: Mapping[str, Any]) -> dict[str, float]:
        """`val_loss`, `val_top1`, `val_topk` of the subnet (the supernet is left running `arch`)."""
        self.supernet.set_architecture(arch)
        if self.recalibration:
            recalibrate_bn(self.supernet, self.recalibration)
        return self.tester.evaluate(self.val, "val")

    def score(self, arch: Mapping[str, Any]) -> float:
        return float(self.evaluate(arch)["val_top1"])


def inherited_supernet(space: Space, ctx: PhaseContext, info: Any, folder: str) -> SearchSpaceModel:
    """The supernet with the weights the `folder` phase (pretrain) trained."""
    path = ctx.run.exp_dir / folder / LAST
    if not path.is_file():
        raise ConfigError(f"the search needs the pretrained supernet {path}, which does not exist; run the "
                          f"{folder} phase (drop --no-search)")
    supernet = space.supernet(info)
    supernet.load_state_dict(read_checkpoint(path)["state"]["model"])
    return supernet.to(ctx.device)


def subnet_scorer(supernet: SearchSpaceModel, data: "DataBundle", ctx: PhaseContext, batches: int,
                  score_batches: int) -> SubnetScorer:
    """BN statistics from the first `batches` training batches (augmented as in training, the same
    for every candidate); scores on the first `score_batches` val batches (0: all of them)."""
    recalibration = []
    for batch in data.loader("train", training=True):
        if len(recalibration) >= batches:
            break
        recalibration.append(batch)
    val = []
    for batch in data.loader("val", training=False):
        if score_batches and len(val) >= score_batches:
            break
        val.append(batch)
    return SubnetScorer(supernet, recalibration, val, Precision(ctx.conf.trainer.amp, False, ctx.device))
