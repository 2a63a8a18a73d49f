"""DARTS (Liu, Simonyan, Yang: "DARTS: Differentiable Architecture Search", ICLR 2019).

The shared machinery is DARTS already: a supernet of mixed ops weighted by softmax(alpha), the
ArchTrainer with the default architecture optimizer, the bilevel step (first or second order,
`nas.search.trainer.bilevel_order`), and the finalizer that keeps each node's two strongest
edges. So the algorithm is just its name.
"""

from archnas.nas.registry import register_algorithm
from archnas.nas.strategy import Strategy


@register_algorithm
class Darts(Strategy):
    name = "darts"
    cost_aware = True  # nas.search.cost limits and penalty over a module space
