"""ProxylessNAS (Cai, Zhu, Han: "ProxylessNAS: Direct Neural Architecture Search on Target Task and
Hardware", ICLR 2019) over a space over a module.

What it changes on the shared machinery is its architecture optimizer, `binary_gates`
(archnas/nas/binary_gates.py): one path drawn per forward from the gate probabilities
softmax(alpha), so the weight step trains one path; a first-order architecture step on a val
batch whose gradient is the full binary-gate one, the other candidates of each LayerChoice rerun
without autograd in the backward, so its memory stays near one path's; and the latency loss
(`nas.search.proxyless`: multiplicative by default) on the expected latency of a cost model of the
registry. The export is the argmax of the alphas, or, under `nas.search.cost` limits, the most
probable architecture within them (`archnas.nas.cost_search`).

It drives spaces whose every label is one LayerChoice (nb201, proxylessnas, mobilenet,
shufflenet, autogen); DARTS cells, whose edges are rows of one matrix label, it refuses, and a
space with input, value or depth choices is refused when its supernet is built.
"""

from __future__ import annotations

from typing import Optional

from archnas.nas.binary_gates import BinaryGates, ProxylessConf, latency_model_name
from archnas.nas.registry import register_algorithm
from archnas.nas.spaces import Space
from archnas.nas.strategy import Strategy


@register_algorithm
class Proxyless(Strategy):
    name = "proxyless"
    config_class = ProxylessConf
    cost_aware = True  # nas.search.cost limits (the final architecture) and penalty over a module space
    find_unused_parameters = True  # the candidates not drawn get no gradient in a step

    def supports(self, space: Space) -> Optional[str]:
        if space.kind == "cells":
            return ("its binary gates open one candidate of a LayerChoice per label, and a DARTS cell's edges are rows "
                    "of one label; set nas.search.space (nb201, proxylessnas, mobilenet)")
        return None

    def arch_optimizer(self) -> str:
        return "binary_gates"

    def weighting(self) -> BinaryGates:
        return BinaryGates()

    def cost_models(self) -> list[str]:
        search = self.conf.nas.search
        return [] if search.proxyless.latency_target is None else [latency_model_name(search)]
