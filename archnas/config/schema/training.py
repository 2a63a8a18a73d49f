"""Loader and trainer sections, shared by search, eval and post-train phases."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import List, Optional


class OptimizerType(StrEnum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


class LrScheduleType(StrEnum):
    constant = "constant"
    cosine = "cosine"
    step = "step"
    multistep = "multistep"
    one_cycle = "one_cycle"


class AmpDtype(StrEnum):
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class LoaderConf:
    train_batch: int = 64  # global batch: split across ranks under DDP
    test_batch: int = 1024
    val_ratio: float = 0.0  # fraction of train held out (stratified, seeded) as the validation split
    crop_padding: Optional[int] = None  # random crop after this much zero padding; null: the dataset's default
    hflip: Optional[bool] = None  # random horizontal flip; null: the dataset's default
    cutout: int = 0  # side of the cutout square in pixels (0: off)
    workers: int = 0  # DataLoader workers, only for datasets streamed from disk (in_memory: false)


@dataclass
class OptimizerConf:
    type: OptimizerType = OptimizerType.sgd
    lr: float = 0.025
    decay: float = 3.0e-4  # weight decay
    decay_bn: Optional[float] = None  # weight decay for BN weights and biases; null: same as decay, 0: exempt
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw only


@dataclass
class WarmupConf:
    epochs: int = 0  # linear warmup from start_factor*lr to lr over this many epochs, then the schedule
    start_factor: float = 0.0


@dataclass
class LrScheduleConf:
    type: LrScheduleType = LrScheduleType.cosine
    min_lr: float = 0.0  # cosine: the lr it decays to
    step_size: int = 30  # step: epochs between decays
    milestones: List[int] = field(default_factory=list)  # multistep: epochs at which lr decays
    gamma: float = 0.1  # step/multistep: decay factor
    max_lr: Optional[float] = None  # one_cycle: peak lr; null: the optimizer lr
    pct_start: float = 0.3  # one_cycle: fraction of training spent increasing lr
    warmup: Optional[WarmupConf] = None


@dataclass
class LossConf:
    type: str = "cross_entropy"
    label_smoothing: float = 0.0


@dataclass
class ValidationConf:
    freq: int = 1  # evaluate every N epochs (and always after the last)


@dataclass
class AmpConf:
    enabled: bool = False  # autocast + GradScaler; only takes effect on CUDA
    dtype: AmpDtype = AmpDtype.bf16


@dataclass
class TrainerConf:
    epochs: int = 1
    batch_chunks: int = 1  # gradient accumulation: each batch runs as N chunks, averaged exactly
    grad_clip: float = 5.0  # clip the total gradient norm (0: off)
    aux_weight: float = 0.0  # weight of the aux-tower loss
    drop_path_prob: float = 0.0  # ramped linearly from 0 to this over the epochs
    lossfn: LossConf = field(default_factory=LossConf)
    optimizer: OptimizerConf = field(default_factory=OptimizerConf)
    lr_schedule: LrScheduleConf = field(default_factory=LrScheduleConf)
    validation: ValidationConf = field(default_factory=ValidationConf)
    amp: AmpConf = field(default_factory=AmpConf)
    channels_last: bool = False  # only takes effect on CUDA
