"""Loader and trainer sections, shared by search, eval and post-train phases."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import List, Optional


class OptimizerType(StrEnum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"
    radam = "radam"  # Liu et al. 2020 (ENOT's search optimizer)


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
    """Batches for one phase. Augmentation runs on whole batches on the training device."""

    train_batch: int = 64  # global batch of training loaders: split evenly across ranks under DDP
    test_batch: int = 1024  # global batch of evaluation loaders (validation and test)
    val_ratio: float = 0.0  # fraction of train held out as the validation split (stratified, seeded by common.seed)
    # Random crop after this much zero padding; null: the dataset's default (digits 1, mnist and
    # fashion_mnist 2, cifar 4, imagefolder height // 8, synthetic 0).
    crop_padding: Optional[int] = None
    hflip: Optional[bool] = None  # random horizontal flip; null: the dataset's default (on for fashion_mnist, cifar, imagefolder)
    cutout: int = 0  # side of the square zeroed after normalization, clipped at the borders (0: off)
    workers: int = 0  # DataLoader workers decoding images of a set streamed from disk (dataset.in_memory: false)


@dataclass
class OptimizerConf:
    type: OptimizerType = OptimizerType.sgd
    lr: float = 0.025
    decay: float = 3.0e-4  # weight decay
    decay_bn: Optional[float] = None  # weight decay of 1-d params (norm scales/shifts, biases); null: decay, 0: exempt
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw/radam only


@dataclass
class WarmupConf:
    epochs: int = 0  # linear warmup from start_factor*lr to lr over this many epochs, then the schedule
    start_factor: float = 0.0


@dataclass
class LrScheduleConf:
    """Stepped every optimizer step; at epoch boundaries the values equal the per-epoch schedule."""

    type: LrScheduleType = LrScheduleType.cosine
    min_lr: float = 0.0  # cosine: the lr it decays to
    step_size: int = 30  # step: epochs between decays, counted from the end of the warmup
    milestones: List[int] = field(default_factory=list)  # multistep: epochs (from the start, warmup included) at which lr decays
    gamma: float = 0.1  # step/multistep: decay factor
    max_lr: Optional[float] = None  # one_cycle: peak lr; null: the optimizer lr
    pct_start: float = 0.3  # one_cycle: fraction of training spent increasing lr
    warmup: Optional[WarmupConf] = None  # linear warmup before the schedule, which then runs over the remaining epochs


@dataclass
class LossConf:
    type: str = "cross_entropy"  # the only loss so far
    label_smoothing: float = 0.0  # in [0, 1); validation and test report plain cross-entropy


@dataclass
class ValidationConf:
    freq: int = 1  # evaluate every N epochs (and always after the last)


@dataclass
class AmpConf:
    enabled: bool = False  # autocast + GradScaler; only takes effect on CUDA
    dtype: AmpDtype = AmpDtype.bf16  # bf16 | fp16 (fp16 also scales the loss with a GradScaler)


@dataclass
class TrainerConf:
    epochs: int = 1  # safe to raise when resuming: the lr schedule is recomputed for the new length
    # Gradient accumulation: each batch runs as N chunks whose gradients add up to exactly the
    # whole batch's (BatchNorm still normalizes each chunk with that chunk's statistics).
    batch_chunks: int = 1
    grad_clip: float = 5.0  # clip the total gradient norm of the weights (0: off)
    aux_weight: float = 0.0  # weight of the aux-tower loss
    drop_path_prob: float = 0.0  # epoch e uses drop_path_prob * e / epochs (models with drop_path_prob())
    lossfn: LossConf = field(default_factory=LossConf)
    optimizer: OptimizerConf = field(default_factory=OptimizerConf)
    lr_schedule: LrScheduleConf = field(default_factory=LrScheduleConf)
    validation: ValidationConf = field(default_factory=ValidationConf)
    amp: AmpConf = field(default_factory=AmpConf)
    channels_last: bool = False  # only takes effect on CUDA
