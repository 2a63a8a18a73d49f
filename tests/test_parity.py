"""Exact parity with the DARTS code (quark0/darts: cnn/model.py, model_search.py, operations.py).

The expected integers are derived twice: by `darts_reference` below, a closed-form count written
from the DARTS layer definitions without any archnas code, and as literals in each test. The
archnas model is then built from config and counted (parameters by summing tensors, multiply-adds
with FlopCounterMode in `archnas.stats`), and must give the same integers.

Derivation (C channels of a cell's nodes, h x h the side of its output maps, k kernel; convs have
no bias; a BN has 2C parameters when affine and 0 otherwise; MACs of a conv = params x output
pixels; pools, ReLUs and BNs have no conv MACs):

    sep_conv_k   2 x (ReLU, depthwise k x k [k^2 C], pointwise [C^2], BN)  -> 2(k^2 C + C^2) + 2 BN(C)
                 both stages run at the output size (the first depthwise conv strides)
    dil_conv_k   ReLU, dilated depthwise [k^2 C], pointwise [C^2], BN       -> k^2 C + C^2 + BN(C)
    skip_connect identity at stride 1 (0); at stride 2 FactorizedReduce: two 1x1 stride-2 convs
                 C -> C/2 on x and on x[:, :, 1:, 1:]                          -> C^2 + BN(C)
    max/avg_pool 0 (in the search network followed by BN(C, affine=False): 0)
    none         0
    preprocess   s0: FactorizedReduce(C_pp, C) if the previous cell reduced, else ReLU-conv1x1-BN:
                 C_pp C + BN(C) either way, at the output size of s1; s1: ReLU-conv1x1-BN, C_p C + BN(C)
    cell output  concat of the 4 intermediate nodes: 4C channels
    reductions   at cells L//3 and 2L//3: C doubles, h halves; edges from the cell inputs stride 2

CIFAR: stem conv3x3 3 -> 3C + BN at 32x32, feeding both inputs of cell 0; head global average
pool + linear(4 C_last -> classes, with bias). ImageNet: stem0 = conv3x3/2 (3 -> C/2) + BN + ReLU
+ conv3x3/2 (C/2 -> C) + BN, stem1 = ReLU + conv3x3/2 (C -> C) + BN, chained (224 -> 56 -> 28);
cell 0 sees s0 at 56 and s1 at 28, so its s0 preprocess is a FactorizedReduce (reduction_prev);
head AvgPool2d(7) + linear. Aux heads (not in the counts "excluding aux"): ReLU, AvgPool(5),
conv1x1 -> 128, BN, ReLU, conv2x2 -> 768, [BN: CIFAR only], ReLU, linear(768 -> classes).
"""

from __future__ import annotations

import torch

from archnas.config.schema.model_desc import (
    DARTS_PRIMITIVES,
    ModelDescConf,
    ModelStemsConf,
)
from archnas.descs import DatasetInfo, named_genotype
from archnas.model import Model, ModelDescBuilder, genotype_to_desc
from archnas.stats import model_stats

DARTS_V2_NORMAL = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                   ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)]
DARTS_V2_REDUCE = [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                   ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]

CIFAR = DatasetInfo(n_classes=10, channels=3, image_size=(32, 32))
IMAGENET = DatasetInfo(n_classes=1000, channels=3, image_size=(224, 224))


def _op(name: str, c: int, stride: int, side: int, bn: int) -> tuple[int, int]:
    """(params, MACs) of one DARTS op with c channels whose output maps are side x side."""
    pixels = side * side
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return 2 * (k * k * c + c * c) + 2 * bn, 2 * (k * k * c + c * c) * pixels
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return k * k * c + c * c + bn, (k * k * c + c * c) * pixels
    if name == "skip_connect" and stride == 2:
        return c * c + bn, c * c * pixels
    assert name in ("skip_connect", "max_pool_3x3", "avg_pool_3x3", "none"), name
    return 0, 0


Edges = dict[bool, list[tuple[list[str], int]]]  # reduction? -> per edge: (op names on it, input id)


def darts_reference(c: int, layers: int, n_classes: int, imagenet: bool, edges: Edges, affine: bool) -> dict[str, int]:
    """Closed-form parameters and MACs of a DARTS network.

    `edges[reduction]` lists each edge of the cell with the ops on it (one op in an eval cell,
    every primitive in the search supernet) and its input id (inputs 0 and 1 stride in reduction
    cells).
    """
    params = macs = 0
    if imagenet:
        side = 28
        params += 27 * (c // 2) + 2 * (c // 2) + 9 * (c // 2) * c + 2 * c + 9 * c * c + 2 * c
        macs += 27 * (c // 2) * 112 * 112 + 9 * (c // 2) * c * 56 * 56 + 9 * c * c * 28 * 28
        c_pp, c_p, c_cur = c, c, c
    else:
        side = 32
        params += 27 * 3 * c + 2 * 3 * c
        macs += 27 * 3 * c * side * side
        c_pp, c_p, c_cur = 3 * c, 3 * c, c
    bn = 2 if affine else 0  # for the cells; stem BNs are affine in every DARTS network
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            c_cur *= 2
        in_side = side
        side = side // 2 if reduction else side
        # preprocessing at the size of s1; s0 costs C_pp C whether it is a FactorizedReduce
        # (after a reduction, or behind the ImageNet stems) or a 1x1 ReLU-conv-BN
        params += c_pp * c_cur + bn * c_cur + c_p * c_cur + bn * c_cur
        macs += (c_pp + c_p) * c_cur * in_side * in_side
        for ops, j in edges[reduction]:
            stride = 2 if reduction and j < 2 else 1
            for name in ops:
                p, m = _op(name, c_cur, stride, side, bn * c_cur)
                params, macs = params + p, macs + m
        c_pp, c_p = c_p, 4 * c_cur
    params += c_p * n_classes + n_classes
    macs += c_p * n_classes
    return {"params": params, "macs": macs}


def _eval_edges(normal: list[tuple[str, int]], reduce: list[tuple[str, int]]) -> Edges:
    return {False: [([op], j) for op, j in normal], True: [([op], j) for op, j in reduce]}


def _aux_params(ch_in: int, n_classes: int, bn_last: bool) -> int:
    return ch_in * 128 + 2 * 128 + 128 * 768 * 4 + (2 * 768 if bn_last else 0) + 768 * n_classes + n_classes


def _count(desc, info: DatasetInfo, affine: bool) -> dict:
    return model_stats(Model(desc, droppath=False, affine=affine), [info.channels, *info.image_size])


def test_darts_v2_cifar10_matches_the_darts_code():
    """DARTS_V2, C=36, 20 cells, aux tower, CIFAR-10.

    Cells: 6 normal at C=36 (32x32), reduction at 6 (C=72), 6 normal at 16x16, reduction at 13
    (C=144), 6 normal at 8x8; head linear(576 -> 10). The stem has 27*108 + 216 = 3,132 params,
    the head 5,770, the cells 3,340,440: 3,349,342, the "param size = 3.349342MB" of DARTS's
    train.py log (which also excludes the aux head). The aux head after cell 13 (576 channels at
    8x8) adds 576*128 + 256 + 393,216 + 1,536 + 7,690 = 476,426.
    """
    ref = darts_reference(36, 20, 10, False, _eval_edges(DARTS_V2_NORMAL, DARTS_V2_REDUCE), affine=True)
    assert ref == {"params": 3_349_342, "macs": 528_359_040}
    conf = ModelDescConf(n_cells=20, aux_weight=0.4, model_stems=ModelStemsConf(init_node_ch=36))
    stats = _count(genotype_to_desc(named_genotype("DARTS_V2"), conf, CIFAR), CIFAR, affine=True)
    assert stats["params_without_aux"] == 3_349_342
    assert stats["macs"] == 528_359_040
    assert stats["params"] - stats["params_without_aux"] == _aux_params(576, 10, bn_last=True) == 476_426


def test_darts_v2_imagenet_matches_the_darts_code():
    """DARTS_V2, C=48, 14 cells, 224x224, 1000 classes (NetworkImageNet).

    Stems: 27*24 + 48 + 9*24*48 + 96 + 9*48*48 + 96 = 31,992 params. Cells at 28x28 (C=48) x4,
    reduction at 4 (C=96), 14x14 x4, reduction at 9 (C=192), 7x7 x4; head AvgPool2d(7) +
    linear(768 -> 1000) = 769,000. Total 4,718,752 (the paper's 4.7M). Multiply-adds of conv and
    linear layers: 529,911,552 (the paper says 574M; quark0/darts#46 reports that conv+fc counts
    give ~523-545M depending on the tool, so their figure counted more than conv and linear).
    The aux head (no BN after its 768-channel conv, as in DARTS) has 768*128 + 256 + 393,216 +
    769,000 = 1,260,776, so the total is exactly DARTS's too.
    """
    ref = darts_reference(48, 14, 1000, True, _eval_edges(DARTS_V2_NORMAL, DARTS_V2_REDUCE), affine=True)
    assert ref == {"params": 4_718_752, "macs": 529_911_552}
    conf = ModelDescConf(
        n_cells=14, aux_weight=0.4, aux_tower_stride=2, aux_tower_bn=False, model_post_op="pool_avg2d7x7",
        model_stems=ModelStemsConf(ops=["stem0_imagenet", "stem1_imagenet"], init_node_ch=48),
    )
    stats = _count(genotype_to_desc(named_genotype("DARTS_V2"), conf, IMAGENET), IMAGENET, affine=True)
    assert stats["params_without_aux"] == 4_718_752
    assert stats["macs"] == 529_911_552
    assert stats["params"] - stats["params_without_aux"] == _aux_params(768, 1000, bn_last=False) == 1_260_776


def test_darts_search_supernet_matches_the_darts_code():
    """The search network of model_search.py: C=16, 8 cells, 4 nodes, the 8 primitives.

    Cells are non-affine, the stem BN is affine: stem 27*48 + 96 = 1,392. A stride-1 mixed op at C
    channels holds sep3 2(9C + C^2) + sep5 2(25C + C^2) + dil3 (9C + C^2) + dil5 (25C + C^2) =
    104C + 6C^2 = 3,200 at C=16 (convs only; no BN params), plus C^2 = 256 more for the
    factorized-reduce skip_connect at stride 2. 14 edges per cell, 8 of them strided in reduction
    cells. Head linear(256 -> 10) = 2,570. Total 1,930,618, the "param size = 1.930618MB" of
    DARTS's train_search.py log; architecture parameters: [14, 8] per cell type, 224 in all.
    Multiply-adds at 32x32: 300,255,744 per image (38.4 GFLOP for a batch of 64).
    """
    supernet_edges = {r: [(list(DARTS_PRIMITIVES), j) for n in range(4) for j in range(n + 2)] for r in (False, True)}
    ref = darts_reference(16, 8, 10, False, supernet_edges, affine=False)  # the stem BN stays affine
    assert ref == {"params": 1_930_618, "macs": 300_255_744}
    desc = ModelDescBuilder().build(ModelDescConf(), CIFAR)
    model = Model(desc, droppath=False, affine=False)
    stats = model_stats(model, [3, 32, 32])
    assert stats["params"] == stats["params_without_aux"] == 1_930_618
    assert stats["macs"] == 300_255_744
    assert {n: tuple(p.shape) for n, p in model.named_arch_params()} == {
        "arch.alphas.regular": (14, 8), "arch.alphas.reduction": (14, 8)
    }
    assert stats["arch_params"] == 224


def test_supernet_forward_backward_on_cpu():
    """The full-size supernet trains on CPU: gradients reach weights and both alpha tensors."""
    model = Model(ModelDescBuilder().build(ModelDescConf(), CIFAR), droppath=False, affine=False)
    logits, aux = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is None
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.arch_params())
    assert model.model_stems[0].op[0].weight.grad.abs().sum() > 0


def test_darts_v2_cifar_eval_model_with_aux_forward_backward():
    conf = ModelDescConf(n_cells=20, aux_weight=0.4, model_stems=ModelStemsConf(init_node_ch=36))
    model = Model(genotype_to_desc(named_genotype("DARTS_V2"), conf, CIFAR), droppath=True, affine=True)
    model.drop_path_prob(0.2)
    logits, aux = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    (logits.logsumexp(1).mean() + 0.4 * aux.logsumexp(1).mean()).backward()
    assert model.aux_towers["13"].classifier.weight.grad.abs().sum() > 0
    assert model.cells[0].stems[0].op[1].weight.grad.abs().sum() > 0


def test_darts_v2_imagenet_forward_backward_batch_1():
    conf = ModelDescConf(
        n_cells=14, aux_weight=0.4, aux_tower_stride=2, aux_tower_bn=False, model_post_op="pool_avg2d7x7",
        model_stems=ModelStemsConf(ops=["stem0_imagenet", "stem1_imagenet"], init_node_ch=48),
    )
    model = Model(genotype_to_desc(named_genotype("DARTS_V2"), conf, IMAGENET), droppath=True, affine=True)
    logits, aux = model(torch.randn(1, 3, 224, 224))
    assert logits.shape == aux.shape == (1, 1000)
    (logits.logsumexp(1).sum() + aux.logsumexp(1).sum()).backward()
    assert model.model_stems[0].op[0].weight.grad.abs().sum() > 0
