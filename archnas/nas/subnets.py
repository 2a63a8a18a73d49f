"""The accuracy of a subnet on the weights it inherits from a trained supernet.

    scorer = SubnetScorer(space, supernet, recalibration_batches, val_batches, precision)
    top1 = scorer.score(arch)

The supernet runs the architecture (`space.use`: only its path computes); its BatchNorm
statistics are first re-estimated on the same fixed train batches for every candidate
(`archnas.training.bn_recalibration`), so candidates are compared on equal terms and a score
depends on nothing but the weights, the architecture and those batches: a resumed search
rescoring a candidate gets the same number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from archnas.context import PhaseContext
from archnas.data.loader import Batch
from archnas.errors import ConfigError
from archnas.nas.spaces import Space
from archnas.space.store import Searchable
from archnas.training.checkpoint import LAST, read_checkpoint
from archnas.training.bn_recalibration import recalibrate_bn
from archnas.training.precision import Precision
from archnas.training.tester import Tester

if TYPE_CHECKING:
    from archnas.data import DataBundle


class SubnetScorer:
    def __init__(self, space: Space, supernet: Searchable, recalibration: Sequence[Batch], val: Sequence[Batch],
                 precision: Precision):
        """`recalibration`: the train batches BatchNorm statistics are estimated from (empty: the
        supernet's running statistics are used as they are); `val`: the batches scored on."""
        self.space, self.supernet = space, supernet
        self.recalibration, self.val = list(recalibration), list(val)
        self.tester = Tester(supernet, precision)

    def evaluate(self, arch: Any) -> dict[str, float]:
        """`val_loss`, `val_top1`, `val_topk` of the subnet (the supernet is left running `arch`)."""
        self.space.use(self.supernet, arch)
        if self.recalibration:
            recalibrate_bn(self.supernet, self.recalibration)
        return self.tester.evaluate(self.val, "val")

    def score(self, arch: Any) -> float:
        return float(self.evaluate(arch)["val_top1"])


def inherited_supernet(space: Space, ctx: PhaseContext, info: Any, folder: str, strategy: Any) -> Searchable:
    """The strategy's supernet with the weights the `folder` phase (pretrain) trained."""
    path = ctx.run.exp_dir / folder / LAST
    if not path.is_file():
        raise ConfigError(f"the search needs the pretrained supernet {path}, which does not exist; run the "
                          f"{folder} phase (drop --no-search)")
    supernet = space.supernet(info, strategy)
    supernet.load_state_dict(read_checkpoint(path)["state"]["model"])
    return supernet.to(ctx.device)


def subnet_scorer(space: Space, supernet: Searchable, data: "DataBundle", ctx: PhaseContext, batches: int,
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
    return SubnetScorer(space, supernet, recalibration, val, Precision(ctx.conf.trainer.amp, False, ctx.device))
