"""The DARTS architecture step against an exact autograd computation of the unrolled objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from archnas.config.schema import BilevelOrder
from archnas.nas.bilevel import BilevelOptimizer


class ToySupernet(nn.Module):
    """Two mixed edges over three candidate ops each, weighted by softmax(alpha): a smooth
    stand-in for a DARTS cell, small enough for exact second derivatives in float64."""

    def __init__(self):
        super().__init__()
        self.ops1 = nn.ModuleList(nn.Linear(5, 6) for _ in range(3))
        self.ops2 = nn.ModuleList(nn.Linear(6, 6) for _ in range(3))
        self.norm = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 4)
        self.alphas = nn.Parameter(1e-1 * torch.randn(2, 3))

    def weights(self):
        return (p for n, p in self.named_parameters() if n != "alphas")

    def arch_params(self):
        return iter([self.alphas])

    def forward(self, x):
        w = F.softmax(self.alphas, dim=-1)
        h = sum(wi * torch.tanh(op(x)) for wi, op in zip(w[0], self.ops1))
        h = self.norm(sum(wi * torch.tanh(op(h)) for wi, op in zip(w[1], self.ops2)))
        return self.head(h)


def _setup(momentum_steps: int):
    torch.manual_seed(0)
    model = ToySupernet().double()
    wopt = torch.optim.SGD(model.weights(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    aopt = torch.optim.Adam(model.arch_params(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    train = (torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 4, (16,)))
    val = (torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 4, (16,)))
    for _ in range(momentum_steps):  # give the weight optimizer momentum buffers
        wopt.zero_grad()
        F.cross_entropy(model(train[0]), train[1]).backward()
        wopt.step()
    return model, wopt, aopt, train, val


def _exact_unrolled_grad(model, wopt, train, val):
    """d/da L_val(w - lr (mom * buf + dL_train/dw + wd w), a), with autograd through the inner step."""
    names = [n for n, _ in model.named_parameters() if n != "alphas"]
    weights = [p for n, p in model.named_parameters() if n != "alphas"]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    loss = F.cross_entropy(functional_call(model, buffers, (train[0],)), train[1])
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    group = wopt.param_groups[0]
    unrolled = {}
    for n, w, g in zip(names, weights, grads):
        buf = wopt.state[w]["momentum_buffer"]
        unrolled[n] = w - group["lr"] * (g + group["weight_decay"] * w + group["momentum"] * buf)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    val_loss = F.cross_entropy(functional_call(model, {**unrolled, **buffers}, (val[0],)), val[1])
    return torch.autograd.grad(val_loss, [model.alphas])[0]


def test_second_order_matches_exact_unrolled_gradient():
    model, wopt, aopt, train, val = _setup(momentum_steps=3)
    exact = _exact_unrolled_grad(model, wopt, train, val)
    errors = {}
    for scale in (1e-2, 1e-3):
        bilevel = BilevelOptimizer(model, wopt, aopt, lambda out, y: F.cross_entropy(out, y), BilevelOrder.second,
                                   finite_diff_scale=scale)
        bilevel.compute_grads(train, val)
        errors[scale] = ((model.alphas.grad - exact).norm() / exact.norm()).item()
    # Tolerance: at the paper's eps scale (0.01) the central difference is within 1e-3 relative
    # (about 8e-5 here); its error is O(eps^2), so 10x smaller eps gives about 100x less error,
    # which shows the remaining gap is the finite difference and not a wrong term.
    assert errors[1e-2] < 1e-3, errors
    assert errors[1e-3] < errors[1e-2] / 50, errors
    # the implicit (Hessian) term matters: first order is clearly further away
    BilevelOptimizer(model, wopt, aopt, lambda out, y: F.cross_entropy(out, y), BilevelOrder.first).compute_grads(train, val)
    assert (model.alphas.grad - exact).norm() / exact.norm() > 1e-2


def test_second_order_leaves_weights_and_running_stats_untouched():
    model, wopt, aopt, train, val = _setup(momentum_steps=1)
    model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    BilevelOptimizer(model, wopt, aopt, lambda out, y: F.cross_entropy(out, y), BilevelOrder.second).compute_grads(train, val)
    after = model.state_dict()  # weights and BatchNorm running statistics
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.weights())
    assert model.alphas.grad is not None


def test_step_moves_only_alphas():
    model, wopt, aopt, train, val = _setup(momentum_steps=1)
    weights_before = [p.clone() for p in model.weights()]
    alphas_before = model.alphas.detach().clone()
    BilevelOptimizer(model, wopt, aopt, lambda out, y: F.cross_entropy(out, y), BilevelOrder.second).step(train, val)
    assert not torch.equal(model.alphas.detach(), alphas_before)
    assert all(torch.equal(a, b) for a, b in zip(weights_before, model.weights()))


def test_uses_the_optimizer_state_after_a_resume():
    """Optimizer.load_state_dict replaces the param-group dicts; the virtual step must read the new
    ones (their lr), not the ones it saw when it was built."""
    model, wopt, aopt, train, val = _setup(momentum_steps=2)
    loss = lambda out, y: F.cross_entropy(out, y)  # noqa: E731
    bilevel = BilevelOptimizer(model, wopt, aopt, loss, BilevelOrder.second)
    state = wopt.state_dict()
    state["param_groups"][0]["lr"] = 0.5
    wopt.load_state_dict(state)
    bilevel.compute_grads(train, val)
    resumed = model.alphas.grad.clone()
    BilevelOptimizer(model, wopt, aopt, loss, BilevelOrder.second).compute_grads(train, val)
    assert torch.equal(resumed, model.alphas.grad)


def test_second_order_on_a_tiny_darts_supernet():
    """The same check on the real search supernet (3 cells of 4 channels, 2 nodes, all 8 DARTS
    primitives, BatchNorm in training mode), in float64.

    Tolerance: with eps scale 1e-5 the finite difference agrees with autograd to 1e-6 relative
    (about 5e-11 measured). At the paper's scale 0.01 a network this small has ReLU and max-pool
    kinks within eps of its activations, which the central difference straddles, so the paper's
    eps is too coarse to compare against here; the error then comes from the kinks, not from a
    missing term, as its collapse at small eps shows."""
    from archnas.config.schema import LossConf, ModelDescConf, ModelStemsConf
    from archnas.descs.dataset_info import DatasetInfo
    from archnas.model import Model, ModelDescBuilder
    from archnas.training.losses import TrainLoss

    torch.manual_seed(0)
    conf = ModelDescConf(n_cells=3, n_nodes=2, model_stems=ModelStemsConf(init_node_ch=4))
    model = Model(ModelDescBuilder().build(conf, DatasetInfo(10, 1, (8, 8))), droppath=False, affine=False).double()
    with torch.no_grad():
        for p in model.arch_params():
            p.normal_(0, 0.5)  # away from uniform, so the implicit term is not trivially small
    loss_fn = TrainLoss(LossConf())
    wopt = torch.optim.SGD(model.weights(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    aopt = torch.optim.Adam(model.arch_params(), lr=3e-4)
    train = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    val = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    wopt.zero_grad()
    loss_fn(model(train[0]), train[1]).backward()
    wopt.step()  # momentum buffers

    arch = list(model.arch_params())
    names = [n for n, _ in model.named_weights()]
    weights = list(model.weights())
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    grads = torch.autograd.grad(loss_fn(functional_call(model, buffers, (train[0],)), train[1]), weights, create_graph=True)
    group = wopt.param_groups[0]
    unrolled = {n: w - group["lr"] * (g + group["weight_decay"] * w + group["momentum"] * wopt.state[w]["momentum_buffer"])
                for n, w, g in zip(names, weights, grads)}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    exact = torch.autograd.grad(loss_fn(functional_call(model, {**unrolled, **buffers}, (val[0],)), val[1]), arch)

    BilevelOptimizer(model, wopt, aopt, loss_fn, BilevelOrder.second, finite_diff_scale=1e-5).compute_grads(train, val)
    approx = torch.cat([p.grad.flatten() for p in arch])
    exact = torch.cat([g.flatten() for g in exact])
    rel = ((approx - exact).norm() / exact.norm()).item()
    assert rel < 1e-6, f"relative error {rel:.2e}"
    BilevelOptimizer(model, wopt, aopt, loss_fn, BilevelOrder.first).compute_grads(train, val)
    first = torch.cat([p.grad.flatten() for p in arch])
    assert ((first - exact).norm() / exact.norm()).item() > 1e-2  # the implicit term is not negligible
