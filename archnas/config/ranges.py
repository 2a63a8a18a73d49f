"""Range checks of the trainer sections every phase has, judged when the config is loaded.

The same functions run again where a Trainer or an optimizer is built (with the key that caller
knows), so the rules live here once. At load time each phase's section is checked under its full
key (`nas.search.trainer.optimizer.lr`), so a message says which phase it means, and names the
file or override that set the value.
"""

from __future__ import annotations

from typing import Any

from archnas.config.schema import ArchTrainerConf, ExperimentConf, LossConf, OptimizerConf, OptimizerType, TrainerConf
from archnas.errors import ConfigError


class RangeError(ConfigError):
    """A value outside its range; `key` is its dotted config key (for naming its source)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key


def check_optimizer(conf: OptimizerConf, key: str = "trainer.optimizer") -> None:
    """Refuse what torch would refuse with a traceback, or accept and diverge on (momentum >= 1)."""
    if not conf.lr > 0:
        raise RangeError(f"{key}.lr", f"{conf.lr} is not positive")
    if conf.decay < 0:
        raise RangeError(f"{key}.decay", f"weight decay cannot be negative, got {conf.decay}")
    if conf.decay_bn is not None and conf.decay_bn < 0:
        raise RangeError(f"{key}.decay_bn", f"weight decay cannot be negative, got {conf.decay_bn} (null: decay)")
    # torch takes any momentum >= 0, but at 1 the velocity never decays and above it grows
    # geometrically: the weights diverge within steps.
    if not 0 <= conf.momentum < 1:
        raise RangeError(f"{key}.momentum", f"{conf.momentum} is not in [0, 1) (SGD's usual value is 0.9)")
    if conf.type == OptimizerType.sgd and conf.nesterov and conf.momentum <= 0:
        raise RangeError(f"{key}.nesterov", f"Nesterov momentum needs {key}.momentum > 0")
    if conf.type != OptimizerType.sgd and (len(conf.betas) != 2 or not all(0 <= b < 1 for b in conf.betas)):
        raise RangeError(f"{key}.betas", f"{conf.betas} is not two numbers in [0, 1)")


def check_loss(conf: LossConf, aux_weight: float, key: str = "trainer") -> None:
    if not 0.0 <= conf.label_smoothing < 1.0:
        raise RangeError(f"{key}.lossfn.label_smoothing", f"{conf.label_smoothing} is not in [0, 1)")
    if aux_weight < 0:
        raise RangeError(f"{key}.aux_weight", f"{aux_weight} is negative")


def check_trainer(conf: TrainerConf, key: str = "trainer") -> None:
    """Counts, probabilities, the loss and the weight optimizer of one trainer section."""
    for name, value, low in (("epochs", conf.epochs, 0), ("batch_chunks", conf.batch_chunks, 1),
                             ("grad_clip", conf.grad_clip, 0), ("validation.freq", conf.validation.freq, 1)):
        if value < low:
            raise RangeError(f"{key}.{name}", f"{value} is below {low}")
    if not 0 <= conf.drop_path_prob < 1:
        raise RangeError(f"{key}.drop_path_prob", f"{conf.drop_path_prob} is not a probability in [0, 1)")
    check_loss(conf.lossfn, conf.aux_weight, key)
    check_optimizer(conf.optimizer, f"{key}.optimizer")
    if isinstance(conf, ArchTrainerConf):
        check_optimizer(conf.alpha_optimizer, f"{key}.alpha_optimizer")


def check_phase_trainers(conf: ExperimentConf) -> None:
    """Every phase's trainer section, under its full key."""
    sections: tuple[tuple[str, Any], ...] = (
        ("nas.search.trainer", conf.nas.search.trainer),
        ("nas.search.post_train.trainer", conf.nas.search.post_train.trainer),
        ("nas.eval.trainer", conf.nas.eval.trainer),
    )
    for key, trainer in sections:
        check_trainer(trainer, key)
