"""ENOT's workflow for plain PyTorch loops, with ENOT's names: `SearchSpaceModel` with latency
members (`model`), `build_enot_optimizer` and the phase optimizers (`optimizers`), and the search
rule they share with the `enot` algorithm (`core`)."""

from archnas.enot.model import SearchSpaceModel
from archnas.enot.optimizers import (
    BaseEnotOptimizer,
    EnotFixedLatencySearchOptimizer,
    EnotPretrainOptimizer,
    EnotSearchOptimizer,
    EnotTrainOptimizer,
    build_enot_optimizer,
    default_sample_to_model_inputs,
    make_portable,
)
from archnas.space import SearchVariantsContainer

__all__ = ["BaseEnotOptimizer", "EnotFixedLatencySearchOptimizer", "EnotPretrainOptimizer", "EnotSearchOptimizer",
           "EnotTrainOptimizer", "SearchSpaceModel", "SearchVariantsContainer", "build_enot_optimizer",
           "default_sample_to_model_inputs", "make_portable"]
