"""`nas`: the algorithm, the sections of its stages (search, eval), and the stages added after them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Dict, List, Optional

from archnas.config.schema.model_desc import ModelDescConf, ModelStemsConf
from archnas.config.schema.training import (
    LoaderConf,
    LrScheduleConf,
    LrScheduleType,
    OptimizerConf,
    OptimizerType,
    TrainerConf,
)


# Config sections that each describe one search space ({name: ..., <its parameters>}): a file or
# override that names another space starts from that space's parameters (ConfigTree.keyed).
SPACE_SECTIONS = frozenset({("nas", "search", "space"), ("nas", "eval", "space")})


class BilevelOrder(StrEnum):
    first = "first"  # alphas step on the val loss at the current weights
    second = "second"  # alphas step on the val loss after a virtual SGD step (DARTS unrolled)


class HessianVectorProduct(StrEnum):
    # Central finite differences of two extra alpha gradients, as the DARTS paper and code (run
    # at full float32 precision: TF32 would round away their shift of the weights).
    finite_difference = "finite_difference"
    exact = "exact"  # double backward through the train loss: exact, costs about one more backward


class EvalMode(StrEnum):
    retrain = "retrain"  # train the final architecture from scratch
    tune = "tune"  # fine-tune the weights it inherits from the searched supernet (spaces over a module only)


class FinalizerRank(StrEnum):
    softmax = "softmax"  # rank ops and edges by softmax(alpha), as the DARTS code does
    raw = "raw"  # rank by raw alpha, as Archai does


def _alpha_optimizer() -> OptimizerConf:
    return OptimizerConf(type=OptimizerType.adam, lr=3.0e-4, decay=1.0e-3, betas=[0.5, 0.999])


@dataclass
class ArchTrainerConf(TrainerConf):
    alpha_optimizer: OptimizerConf = field(default_factory=_alpha_optimizer)
    # The alpha lr over the search, stepped with every training step (warm-up epochs included).
    # constant (the default): as in DARTS. cosine anneals it, so the alphas settle and the last
    # epochs' genotype stops flipping between near-equal ops.
    alpha_lr_schedule: LrScheduleConf = field(default_factory=lambda: LrScheduleConf(type=LrScheduleType.constant))
    bilevel_order: BilevelOrder = BilevelOrder.second
    hessian_vector_product: HessianVectorProduct = HessianVectorProduct.finite_difference  # second order only


@dataclass
class FinalizerConf:
    type: str = "default"  # default | random
    rank: FinalizerRank = FinalizerRank.softmax


@dataclass
class PostTrainConf:
    """Optional training of the finalized desc inside the search phase (trainer.epochs 0: off)."""

    trainer: TrainerConf = field(default_factory=lambda: TrainerConf(epochs=0))
    # val_ratio: the held-out share of train its best epoch is chosen on (0: none, no test set either)
    loader: LoaderConf = field(default_factory=lambda: LoaderConf(val_ratio=0.1))


@dataclass
class SearchCombinationsConf:
    """A macro sweep: search once per (n_reductions, n_cells, n_nodes), keep the best."""

    enabled: bool = False
    n_reductions: List[int] = field(default_factory=list)  # empty: model_desc.n_reductions only
    n_cells: List[int] = field(default_factory=list)
    n_nodes: List[int] = field(default_factory=list)


@dataclass
class TimingConf:
    """How networks are timed for the measured cost models: cpu_ms, ort_ms (archnas/latency/measure.py)."""

    threads: int = 1  # intra-op threads during a measurement (restored after)
    warmup: int = 5  # untimed runs first
    repeats: int = 20  # timed runs; their median is the time
    batch_size: int = 1


@dataclass
class PenaltyConf:
    """The soft cost term a gradient search adds to its architecture loss (archnas/latency/penalty.py):
    `weight * E[cost] / max cost of the space`, the expectation under the architecture distribution
    (differentiable). 0: off."""

    model: str = "macs"  # any registered cost model whose per-choice table is its cost (additive or fitted)
    weight: float = 0.0


@dataclass
class CostConf:
    """What a subnet search (spos) may pick and how its candidates' costs are modelled
    (archnas/latency): hard limits (null: none), the cost on the Pareto front, the latency model.
    Cost models are registered by name (archnas.latency.register_cost_model): params, macs
    (exact counts), cpu_ms, ort_ms (measured predictions), and any a plugin registers."""

    max_params: Optional[float] = None
    max_macs: Optional[float] = None  # multiply-adds of one image, as `archnas stats` counts them
    max_latency_ms: Optional[float] = None  # predicted by the `latency` model below
    # A limit on any registered cost model, {name: bound} (null: none), e.g. a plugin's {convs: 12};
    # a model limited here and by a max_* key above is refused.
    limits: Dict[str, Optional[float]] = field(default_factory=dict)
    latency: str = "cpu_ms"  # a latency model (measured, in ms): cpu_ms (PyTorch on this CPU) | ort_ms (onnxruntime)
    pareto: str = "macs"  # the cost the Pareto front is drawn against: any registered cost model
    held_out: int = 20  # random architectures each cost table is checked against (its error is reported)
    timing: TimingConf = field(default_factory=TimingConf)
    penalty: PenaltyConf = field(default_factory=PenaltyConf)  # the soft term of gradient searches (darts, gdas, enot)


@dataclass
class DistillConf:
    """In-place distillation in a single-path pretrain (once-for-all's and BigNAS's sandwich rule,
    in the spirit of ENOT's unpublished "output distribution optimization"): each step trains the
    largest subnet on the labels and the step's sampled subnet on the largest's softened outputs
    (KL divergence), one optimizer step for both (archnas/nas/pretrain.py)."""

    enabled: bool = False
    largest_by: str = "params"  # the exact cost model whose most expensive architecture is the teacher (params | macs)
    temperature: float = 1.0  # softmax temperature of both outputs; the KL term is scaled by its square
    weight: float = 1.0  # the KL term's weight against the largest subnet's label loss


@dataclass
class RankingCheckConf:
    """Train `n_archs` sampled architectures stand-alone for `epochs` and compare their ranking with
    the supernet's (Kendall's tau, Spearman's rho; ranking.json). 0: off; else at least 5."""

    n_archs: int = 0
    epochs: int = 3


@dataclass
class RankingMonitorConf:
    """A weight-sharing search's live ranking check (archnas/nas/ranking_monitor.py): `anchors`
    random architectures trained `epochs` stand-alone before the supernet trains, scored on its
    inherited weights every `every` epochs; Kendall's tau against their stand-alone ranking and
    against the previous check in the epoch records. 0 anchors: off; else at least 5."""

    anchors: int = 0
    every: int = 1  # epochs between two checks
    epochs: int = 3  # each anchor's stand-alone epochs of nas.search.trainer
    bn_batches: int = 5  # train batches each anchor's BatchNorm statistics are re-estimated on (0: off)
    score_batches: int = 0  # val batches each anchor is scored on (0: the whole search val split)
    warn_below: float = 0.3  # a warning when Kendall's tau stays below this ...
    patience: int = 2  # ... for this many checks in a row


@dataclass
class SearchConf:
    # What is searched. Empty: the DARTS cell supernet of model_desc. Otherwise a space over a
    # module: {name: nb201, C: 16, N: 5} (a registered space and its parameters) or
    # {factory: "my_package.my_module:build_model", ...} (called with input_shape=[C, H, W],
    # n_classes= and the other keys as keyword arguments). {name: autogen, model: {name: plain_cnn},
    # width_multipliers: [1.0, 0.75, 0.5, 0.25, 0.0], kernel_sizes: [3, 5], exclude: [...]} generates
    # the space of a plain model (a registered one, or {factory: ...} of a plugin): archnas/space/autogen.py.
    space: Dict[str, Any] = field(default_factory=dict)
    # What trains (or samples) the supernet's architecture: a registered architecture optimizer
    # (archnas/nas/arch_optimizer.py: bilevel, uniform_paths, binary_gates, enas, or a plugin's).
    # null: the algorithm's own (bilevel for darts, gdas, pc_darts; uniform_paths for the spos
    # pretrain; binary_gates for proxyless; enas for enas).
    arch_optimizer: Optional[str] = None
    model_desc: ModelDescConf = field(default_factory=ModelDescConf)
    loader: LoaderConf = field(default_factory=lambda: LoaderConf(val_ratio=0.5))
    trainer: ArchTrainerConf = field(default_factory=ArchTrainerConf)
    finalizer: FinalizerConf = field(default_factory=FinalizerConf)
    post_train: PostTrainConf = field(default_factory=PostTrainConf)
    combinations: SearchCombinationsConf = field(default_factory=SearchCombinationsConf)
    cost: CostConf = field(default_factory=CostConf)  # limits and cost models of subnet searches (spos)
    ranking_check: RankingCheckConf = field(default_factory=RankingCheckConf)  # subnet searches (spos)
    distill: DistillConf = field(default_factory=DistillConf)  # the single-path pretrain's in-place distillation
    ranking_monitor: RankingMonitorConf = field(default_factory=RankingMonitorConf)  # weight-sharing searches
    # An algorithm with settings of its own adds them as `nas.search.<algorithm>` (its config
    # dataclass, registered with the algorithm: archnas/algos/<algorithm>.py documents its keys).


@dataclass
class RandomBaselineConf:
    """After the eval, `n_archs` random architectures of the searched space trained by the same eval
    (epochs, split, seed scheme) and the found one ranked among them (random_baseline.json). 0: off."""

    n_archs: int = 0


@dataclass
class EvalConf:
    # What to train: null takes the search phase's final desc; otherwise a desc file path,
    # a DARTS genotype string, or a named genotype such as DARTS_V2.
    # For a space over a module: an architecture file (arch.yaml or .json), an inline {label: choice}
    # mapping, or a NAS-Bench-201 string.
    final_desc: Optional[str] = None
    mode: EvalMode = EvalMode.retrain
    space: Dict[str, Any] = field(default_factory=dict)  # the eval's macro of a module space; empty: nas.search.space
    model_desc: ModelDescConf = field(
        default_factory=lambda: ModelDescConf(
            n_cells=20, aux_weight=0.4, model_stems=ModelStemsConf(init_node_ch=36)
        )
    )
    # val_ratio: the share of the training images held out to choose model_best.pt on (the test
    # set is evaluated once, after training); 0: no selection, the last epoch's model is the result.
    loader: LoaderConf = field(default_factory=lambda: LoaderConf(train_batch=96, cutout=16, val_ratio=0.1))
    trainer: TrainerConf = field(default_factory=lambda: TrainerConf(epochs=600, drop_path_prob=0.2, aux_weight=0.4))
    # the random baseline under the same protocol, a stage after the eval (archnas/nas/random_baseline.py)
    random_baseline: RandomBaselineConf = field(default_factory=RandomBaselineConf)


@dataclass
class NasConf:
    algo: str = "darts"  # a registered algorithm: darts, gdas, pc_darts, enas, proxyless, random, manual, zero_cost, ... or a plugin's
    search: SearchConf = field(default_factory=SearchConf)
    eval: EvalConf = field(default_factory=EvalConf)
    # Registered stages (a plugin's `register_stage`, e.g. an export) run after the algorithm's own,
    # in this order; a stage with a config class reads its own section, nas.<stage>.
    extra_stages: List[str] = field(default_factory=list)
