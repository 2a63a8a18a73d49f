"""ENAS (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018):
a controller samples architectures of a weight-sharing supernet and learns by REINFORCE from their
validation accuracy, while the shared weights train one sampled path per step.

The recipe is the DARTS family's (search, then eval) on the same Searcher, ArchTrainer,
checkpoints and resume; what ENAS changes is its architecture optimizer, `enas`
(`archnas.nas.controller`: the controller, its REINFORCE step with a moving-average baseline and
an entropy bonus, the path of every weight step, the greedy final architecture). It drives any
space the Space protocol can run one path of: a space over a module (nb201, mobilenet, a
factory's) and DARTS cells, where a path is a final cell genome (per node, two kept inputs with
one op each) whose dropped edges run `none`, as spos's single paths do. The eval retrains the
found architecture (or, over a module space, `nas.eval.mode: tune` fine-tunes it out of the
supernet).

`nas.search.enas` keys (`archnas.nas.controller.EnasConf`):

    controller: independent       # independent (logits per gene) | lstm (ENAS's LSTM controller)
    lr: 3.5e-4                    # the controller's Adam (beta1 0, eps 1e-3, as the ENAS code)
    baseline_decay: 0.999         # the reward's moving-average baseline
    entropy_weight: 1.0e-4        # the entropy bonus added to the reward
    lstm_size: 64                 # lstm: hidden units
    tanh_constant: 1.5            # logits -> c * tanh(logits); null: off
    temperature: null             # logits / temperature first; null: off
"""

from __future__ import annotations

from typing import Optional

from archnas.descs.model_desc import ConvMacroParams, OpDesc
from archnas.nas.controller import EnasConf, single_path_refusal
from archnas.nas.registry import register_algorithm
from archnas.nas.spaces import Space
from archnas.nas.strategy import Strategy


@register_algorithm
class Enas(Strategy):
    name = "enas"
    config_class = EnasConf
    find_unused_parameters = True  # one path per step: the other candidates get no gradient

    def arch_optimizer(self) -> str:
        return "enas"

    def supports(self, space: Space) -> Optional[str]:
        return single_path_refusal(space)

    def mixed_op(self, primitives: list[str], conv: ConvMacroParams, stride: int) -> OpDesc:
        """A cell supernet's edge runs only its path's op (the one-hot weights' chosen candidate)."""
        op = super().mixed_op(primitives, conv, stride)
        op.name = "gdas_mixed_op"
        return op
