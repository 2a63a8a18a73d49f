"""`model_desc`: the macro architecture a ModelDescBuilder turns into a ModelDesc."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

DARTS_PRIMITIVES = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]


@dataclass
class ModelStemsConf:
    # One stem feeds both inputs of the first cell (DARTS CIFAR); two stems are chained,
    # the second reading the first (DARTS ImageNet: stem0_imagenet then stem1_imagenet), and the
    # last two stem outputs feed the first cell. Built-in stems: stem_conv3x3, stem_conv3x3_relu,
    # stem0_imagenet (stride 4), stem1_imagenet (stride 2).
    ops: List[str] = field(default_factory=lambda: ["stem_conv3x3"])
    init_node_ch: int = 16  # channels of every node in the first cell
    stem_multiplier: int = 3  # a single stem outputs stem_multiplier * init_node_ch; chained stems init_node_ch each


@dataclass
class ModelDescConf:
    n_cells: int = 8
    n_reductions: int = 2  # reduction cells at k*n_cells//(n_reductions+1), k = 1..n_reductions (DARTS: n//3, 2n//3)
    reduction_cells: Optional[List[int]] = None  # explicit reduction positions instead of the default
    n_nodes: int = 4
    max_final_edges: int = 2  # incoming edges each node keeps when the supernet is finalized
    # With a template (a searched desc or a genotype) the cells' nodes come from the template, so
    # n_nodes and primitives do not apply; n_cells, reductions, channels, stems and heads do.
    primitives: List[str] = field(default_factory=lambda: list(DARTS_PRIMITIVES))  # ops on every supernet edge
    cell_post_op: str = "concate_channels"  # concate_channels (DARTS) | proj_channels (concat, then 1x1 conv to node channels)
    model_stems: ModelStemsConf = field(default_factory=ModelStemsConf)
    model_post_op: str = "pool_adaptive_avg2d"  # pool_adaptive_avg2d | pool_avg2d7x7 (DARTS ImageNet) | pool_mean_tensor
    logits_op: str = "linear"
    aux_weight: float = 0.0  # > 0 adds the aux tower after cell 2*n_cells//3 (the trainer weighs its loss with trainer.aux_weight)
    aux_tower_stride: int = 3  # 3 for 32x32 inputs, 2 for ImageNet
    aux_tower_bn: bool = True  # BN after the aux tower's 768-channel conv; DARTS's ImageNet tower has none (false)
