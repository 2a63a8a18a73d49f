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
    # the second reading the first (DARTS ImageNet: stem0_imagenet then stem1_imagenet).
    ops: List[str] = field(default_factory=lambda: ["stem_conv3x3"])
    init_node_ch: int = 16  # channels of every node in the first cell
    stem_multiplier: int = 3  # stem output channels = stem_multiplier * init_node_ch (single stem)


@dataclass
class ModelDescConf:
    n_cells: int = 8
    n_reductions: int = 2  # reduction cells at the DARTS positions n_cells//3, 2*n_cells//3
    reduction_cells: Optional[List[int]] = None  # explicit reduction positions instead of the default
    n_nodes: int = 4
    max_final_edges: int = 2  # incoming edges each node keeps when the supernet is finalized
    primitives: List[str] = field(default_factory=lambda: list(DARTS_PRIMITIVES))  # ops on every supernet edge
    cell_post_op: str = "concate_channels"
    model_stems: ModelStemsConf = field(default_factory=ModelStemsConf)
    model_post_op: str = "pool_adaptive_avg2d"
    logits_op: str = "linear"
    aux_weight: float = 0.0  # > 0 adds the aux tower (the trainer weighs its loss with trainer.aux_weight)
    aux_tower_stride: int = 3  # 3 for 32x32 inputs, 2 for ImageNet
