"""The baseline of `scripts/bench_supernet.py`: DARTS written the straightforward way.

This is the formulation of the public DARTS code (quark0/darts: operations.py, model_search.py,
model.py, architect.py), which Archai 1.0 and NNI 3.0 follow too, rewritten here so the
benchmark has something to beat that is not archnas:

- every edge of the search cell holds its own module for every candidate, and the mixed op is
  `sum(w * op(x))` over all of them, `none` included (its zeros are multiplied and added);
- every conv candidate starts with its own ReLU, even when ten edges read the same state;
- tensors are NCHW;
- the second-order architecture step builds the unrolled network w' as a new copy of the model
  (DARTS's `Architect._compute_unrolled_model` constructs a new Network and loads a state dict
  into it; a deep copy is the same work) and perturbs the live weights in place for the finite
  difference of the Hessian-vector product.

The second-order step computes the same gradient as `archnas.nas.bilevel` (the paper's
eq. 7-8, lr factored as there, momentum and weight decay in the virtual step), so the two are
timed on the same math: eps = 0.01 / ||dL_val/dw'||, implicit = lr * (g+ - g-) / (2 eps).

`load_archnas_weights` copies every weight, BatchNorm buffer and alpha from an archnas `Model`
of the same shape, so both compute the same function and the benchmark can assert it.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5")


# -- operations (DARTS operations.py) ----------------------------------------------------------

class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, 1, padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    def __init__(self, c_in: int, c_out: int, affine: bool):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def make_op(name: str, c: int, stride: int, affine: bool) -> nn.Module:
    if name == "none":
        return Zero(stride)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return SepConv(c, c, k, stride, k // 2, affine)
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return DilConv(c, c, k, stride, k - 1, 2, affine)
    raise ValueError(f"unknown op {name!r}")


# -- the search network (DARTS model_search.py) ------------------------------------------------

class MixedOp(nn.Module):
    def __init__(self, c: int, stride: int, primitives: Sequence[str]):
        super().__init__()
        self.ops = nn.ModuleList()
        for name in primitives:
            op = make_op(name, c, stride, affine=False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
            self.ops.append(op)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class SearchCell(nn.Module):
    def __init__(self, steps: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 primitives: Sequence[str]):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(c_pp, c, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.steps = steps
        self.ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                self.ops.append(MixedOp(c, 2 if reduction and j < 2 else 1, primitives))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            states.append(sum(self.ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states)))
            offset += len(states) - 1
        return torch.cat(states[2:], dim=1)


class SearchNetwork(nn.Module):
    """DARTS's `Network`: stem, cells (reductions at L/3 and 2L/3), global pool, linear."""

    def __init__(self, c: int = 16, n_classes: int = 10, layers: int = 8, steps: int = 4, stem_multiplier: int = 3,
                 primitives: Sequence[str] = PRIMITIVES):
        super().__init__()
        c_cur = stem_multiplier * c
        self.stem = nn.Sequential(nn.Conv2d(3, c_cur, 3, padding=1, bias=False), nn.BatchNorm2d(c_cur))
        c_pp, c_p, c_cur = c_cur, c_cur, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_cur *= 2
            self.cells.append(SearchCell(steps, c_pp, c_p, c_cur, reduction, reduction_prev, primitives))
            reduction_prev = reduction
            c_pp, c_p = c_p, steps * c_cur
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, n_classes)
        k = sum(2 + i for i in range(steps))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(k, len(primitives)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(k, len(primitives)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weights(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            weights = F.softmax(self.alphas_reduce if cell.reduction else self.alphas_normal, dim=-1)
            s0, s1 = s1, cell(s0, s1, weights)
        return self.classifier(self.global_pooling(s1).flatten(1))


# -- the second-order architecture step (DARTS architect.py) -----------------------------------

def second_order_arch_grads(model: SearchNetwork, optimizer: torch.optim.SGD, train: tuple[Tensor, Tensor],
                            val: tuple[Tensor, Tensor], r: float = 1e-2) -> list[Tensor]:
    """Set and return the alphas' gradient of DARTS's unrolled objective, the way architect.py does."""
    group = optimizer.param_groups[0]
    lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
    weights = model.weights()
    loss = F.cross_entropy(model(train[0]), train[1])
    grads = torch.autograd.grad(loss, weights)
    unrolled = copy.deepcopy(model)  # _construct_model_from_theta: a new network holding w'
    with torch.no_grad():
        for w_new, w, g in zip(unrolled.weights(), weights, grads):
            buf = optimizer.state.get(w, {}).get("momentum_buffer")
            step = g + wd * w if buf is None else g + wd * w + momentum * buf
            w_new.copy_(w - lr * step)
    unrolled.zero_grad(set_to_none=True)
    F.cross_entropy(unrolled(val[0]), val[1]).backward()
    d_alpha = [a.grad for a in unrolled.arch_parameters()]
    vector = [w.grad for w in unrolled.weights()]
    # _hessian_vector_product: central differences around w, perturbing the live weights
    eps = r / torch.cat([v.flatten() for v in vector]).norm()
    with torch.no_grad():
        for w, v in zip(weights, vector):
            w.add_(eps * v)
    grads_p = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), model.arch_parameters())
    with torch.no_grad():
        for w, v in zip(weights, vector):
            w.sub_(2 * eps * v)
    grads_n = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), model.arch_parameters())
    with torch.no_grad():
        for w, v in zip(weights, vector):
            w.add_(eps * v)
    out = []
    for a, da, gp, gn in zip(model.arch_parameters(), d_alpha, grads_p, grads_n):
        a.grad = da - lr * (gp - gn) / (2 * eps)
        out.append(a.grad)
    return out


# -- the eval network (DARTS model.py) ---------------------------------------------------------

def drop_path(x: Tensor, prob: float) -> Tensor:
    keep = 1.0 - prob
    mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep)
    return x.div(keep).mul(mask)


class EvalCell(nn.Module):
    def __init__(self, gene: Sequence[tuple[str, int]], c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(c_pp, c, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=True)
        self.indices = [i for _, i in gene]
        self.ops = nn.ModuleList(make_op(name, c, 2 if reduction and i < 2 else 1, affine=True) for name, i in gene)
        self.steps = len(gene) // 2

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            hs = []
            for k in (2 * i, 2 * i + 1):
                h = self.ops[k](states[self.indices[k]])
                if self.training and drop_prob > 0.0 and not isinstance(self.ops[k], Identity):
                    h = drop_path(h, drop_prob)
                hs.append(h)
            states.append(hs[0] + hs[1])
        return torch.cat(states[2:], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    def __init__(self, c: int, n_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class NetworkCIFAR(nn.Module):
    def __init__(self, c: int, n_classes: int, layers: int, auxiliary: bool, normal: Sequence[tuple[str, int]],
                 reduce: Sequence[tuple[str, int]]):
        super().__init__()
        self.layers = layers
        self.drop_path_prob = 0.0
        c_cur = 3 * c
        self.stem = nn.Sequential(nn.Conv2d(3, c_cur, 3, padding=1, bias=False), nn.BatchNorm2d(c_cur))
        c_pp, c_p, c_cur = c_cur, c_cur, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        c_aux = 0
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_cur *= 2
            gene = reduce if reduction else normal
            self.cells.append(EvalCell(gene, c_pp, c_p, c_cur, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, (len(gene) // 2) * c_cur
            if i == 2 * layers // 3:
                c_aux = c_p
        self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, n_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, n_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == 2 * self.layers // 3 and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1)), aux


# -- weights from an archnas Model ---------------------------------------------------------------

def _copy(dst: nn.Module, src: nn.Module) -> None:
    """State (parameters and buffers) of `src` into `dst`, matched by position: both follow the
    DARTS layer order, so positions agree while names differ."""
    dst_state, src_state = dst.state_dict(), list(src.state_dict().values())
    if len(dst_state) != len(src_state):
        raise ValueError(f"{type(dst).__name__} has {len(dst_state)} tensors, {type(src).__name__} {len(src_state)}")
    for (name, d), s in zip(dst_state.items(), src_state):
        if d.shape != s.shape:
            raise ValueError(f"{type(dst).__name__}.{name}: shape {tuple(d.shape)} vs {tuple(s.shape)}")
        d.copy_(s)


def _copy_candidate(dst: nn.Module, mixed, index: int) -> None:
    """Candidate `index` of an archnas MixedOp (with the BatchNorm a pool gets) into `dst`."""
    op = mixed.ops[index]
    key = str(index)
    if key in mixed.pool_bns:
        _copy(dst[1], mixed.pool_bns[key])  # dst is Sequential(pool, BatchNorm)
    else:
        _copy(dst, op)


@torch.no_grad()
def load_archnas_weights(baseline: nn.Module, model: nn.Module) -> None:
    """Copy an archnas `Model` (the search supernet or an eval network of the same macro) into
    `baseline` (a SearchNetwork or NetworkCIFAR)."""
    _copy(baseline.stem, model.model_stems[0])
    for cell, ours in zip(baseline.cells, model.cells):
        _copy(cell.preprocess0, ours.stems[0])
        _copy(cell.preprocess1, ours.stems[1])
        edges = [e for node in ours.dag for e in node]
        if len(edges) != len(cell.ops):
            raise ValueError(f"cell with {len(cell.ops)} edges vs {len(edges)}")
        for dst, edge in zip(cell.ops, edges):
            if isinstance(dst, MixedOp):
                for k, cand in enumerate(dst.ops):
                    _copy_candidate(cand, edge.op, k)
            else:
                _copy(dst, edge.op)
    _copy(baseline.classifier, model.logits_op.linear)
    if isinstance(baseline, SearchNetwork):
        baseline.alphas_normal.copy_(model.alphas("regular"))
        baseline.alphas_reduce.copy_(model.alphas("reduction"))
    elif baseline.auxiliary_head is not None:
        (tower,) = model.aux_towers.values()
        baseline.auxiliary_head.features.load_state_dict(tower.features.state_dict())
        _copy(baseline.auxiliary_head.classifier, tower.classifier)
