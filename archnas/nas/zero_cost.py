"""Zero-cost proxies: a score of an untrained network from one or a few batches, which ranks
architectures without training them, and the selection evaluator that scores genomes by one.

    inputs = ProxyInputs(batches, input_shape)               # fixed batches, the same for every network
    score = proxy("synflow")(network, inputs)                 # higher: predicted to train better
    select(sampler, ProxyScores(proxy_name, network_of, inputs, seed), checkpointer, log)

Each proxy runs on a freshly initialized network (`ProxyScores` seeds its initialization from the
run's seed and the genome, so a score depends on nothing but the architecture and the batches)
in training mode (BatchNorm normalizes with the batch's statistics) unless said otherwise; the
loss is the cross-entropy of the logits (an auxiliary head is left out). "Weights" below are the
`weight` tensors of every convolution and linear layer; the score is summed over them. Higher is
better for every proxy (the sign conventions below make it so).

- `params` (a baseline): the network's parameters, from the cost registry (`archnas.latency`).
- `macs` (a baseline): its multiply-adds for one image, from the cost registry.
- `grad_norm`: sum over the weights W of ||dL/dW||_2, the Euclidean norm of the loss's gradient
  (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021).
- `snip`: sum of |W * dL/dW| over every weight element: the connection sensitivity of SNIP
  (Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019)
  summed over the network, as Abdelfattah et al. score a network by it.
- `synflow`: Tanaka et al.'s data-free synaptic flow ("Pruning neural networks without any data
  by iteratively conserving synaptic flow", NeurIPS 2020) summed over the network, as Abdelfattah
  et al. do: every parameter replaced by its absolute value, BatchNorm layers bypassed (identity:
  with absolute weights and no data, batch statistics would only rescale), the network in float64
  (the product of absolute weights over many layers overflows float32), one all-ones input image,
  R = the sum of the outputs, and the score sum of |W * dR/dW| over every weight element.
- `naswot`: Mellor et al.'s "NAS without training" score (ICML 2021): for each image of a batch
  the binary code of which inputs of every `nn.ReLU` module are positive; K_H[i, j] = N_A minus the
  Hamming distance of images i and j's codes (N_A: the code's length); the score is log|det K_H|
  (the mean over the batches; -inf when K_H is singular, e.g. two images with the same code).
- `jacob_cov`: Mellor et al.'s first version (arXiv:2006.04647v1, "Neural Architecture Search
  without Training"), as Abdelfattah et al. implement it: J = the gradient of the sum of the logits
  with respect to each input image (one row per image), C = the correlation matrix of those rows,
  and the score -sum_i [log(l_i + k) + 1 / (l_i + k)] over C's eigenvalues l_i, with k = 1e-5
  (highest when the Jacobians are uncorrelated, C = I; the mean over the batches).

Proxies register by name (`register_proxy`), so a plugin adds one; `nas.search.zero_cost` names
them (archnas/algos/zero_cost.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from archnas.data.loader import Batch
from archnas.errors import ConfigError
from archnas.latency import TimingProtocol, cost_model
from archnas.nas.samplers import Row
from archnas.training.losses import split_outputs
from archnas.utils.seeding import derive_seed

JACOB_COV_K = 1e-5
BASELINES = ("params", "macs")  # what a proxy must beat to be trusted (`zero_cost.fallback: auto`)


@dataclass(frozen=True)
class ProxyInputs:
    """What every network is scored on: fixed batches (images on the scoring device, labels) and
    the shape of one image ([C, H, W]), for the counts and synflow's all-ones input."""

    batches: Sequence[Batch]
    input_shape: Sequence[int]


Proxy = Callable[[nn.Module, ProxyInputs], float]

# name -> proxy; filled at import by `register_proxy` (the built-ins below, a plugin's at its import).
_PROXIES: dict[str, Proxy] = {}


def register_proxy(name: str) -> Callable[[Proxy], Proxy]:
    """Decorator: `proxy(net, inputs) -> float` (higher: better) becomes `nas.search.zero_cost` name `name`."""

    def register(fn: Proxy) -> Proxy:
        if name in _PROXIES:
            raise ValueError(f"zero-cost proxy {name!r} is registered twice")
        _PROXIES[name] = fn
        return fn

    return register


def proxy_names() -> tuple[str, ...]:
    return tuple(_PROXIES)


def proxy(name: str, key: str = "nas.search.zero_cost.proxy") -> Proxy:
    if name not in _PROXIES:
        raise ConfigError(f"{key}: {name!r} is not a zero-cost proxy; expected one of {', '.join(_PROXIES)}")
    return _PROXIES[name]


# -- what the proxies share ----------------------------------------------------------------------

def weighted_layers(net: nn.Module) -> list[nn.Module]:
    """The convolutions and linear layers: whose `weight` the gradient proxies sum over."""
    return [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return split_outputs(net(x))[0]


def loss_gradients(net: nn.Module, inputs: ProxyInputs) -> None:
    """Gradients of the mean cross-entropy over the batches (one backward per batch, accumulated)."""
    net.train()
    net.zero_grad(set_to_none=True)
    for x, y in inputs.batches:
        (F.cross_entropy(logits(net, x), y) / len(inputs.batches)).backward()


def _grads(net: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.weight, m.weight.grad) for m in weighted_layers(net) if m.weight.grad is not None]


# -- the proxies --------------------------------------------------------------------------------

@register_proxy("params")
def params_proxy(net: nn.Module, inputs: ProxyInputs) -> float:
    return float(cost_model("params").measure(net, list(inputs.input_shape), TimingProtocol()))


@register_proxy("macs")
def macs_proxy(net: nn.Module, inputs: ProxyInputs) -> float:
    return float(cost_model("macs").measure(net, list(inputs.input_shape), TimingProtocol()))


@register_proxy("grad_norm")
def grad_norm(net: nn.Module, inputs: ProxyInputs) -> float:
    loss_gradients(net, inputs)
    return float(sum(g.double().norm() for _, g in _grads(net)))


@register_proxy("snip")
def snip(net: nn.Module, inputs: ProxyInputs) -> float:
    loss_gradients(net, inputs)
    return float(sum((w.detach().double() * g.double()).abs().sum() for w, g in _grads(net)))


@register_proxy("synflow")
def synflow(net: nn.Module, inputs: ProxyInputs) -> float:
    """Changes `net` (absolute float64 weights, BatchNorm bypassed): score a network built for it."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, name, nn.Identity())
    net.double().train()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    ones = torch.ones(1, *inputs.input_shape, dtype=torch.float64, device=device)
    logits(net, ones).sum().backward()
    return float(sum((w.detach() * g).abs().sum() for w, g in _grads(net)))


@register_proxy("naswot")
def naswot(net: nn.Module, inputs: ProxyInputs) -> float:
    codes: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple) -> None:
        codes.append((args[0].detach().flatten(1) > 0).double())

    handles = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, nn.ReLU)]
    scores = []
    try:
        net.train()
        with torch.no_grad():
            for x, _ in inputs.batches:
                codes.clear()
                logits(net, x)
                if not codes:
                    return -math.inf  # no ReLU: no activation codes, an empty (singular) kernel
                c = torch.cat(codes, dim=1)
                kernel = c @ c.T + (1 - c) @ (1 - c).T  # N_A - Hamming distance
                sign, logdet = torch.linalg.slogdet(kernel.cpu())
                scores.append(float(logdet) if float(sign) != 0 else -math.inf)
    finally:
        for h in handles:
            h.remove()
    return float(np.mean(scores))


@register_proxy("jacob_cov")
def jacob_cov(net: nn.Module, inputs: ProxyInputs) -> float:
    net.train()
    scores = []
    for x, _ in inputs.batches:
        x = x.detach().clone().requires_grad_(True)
        net.zero_grad(set_to_none=True)
        logits(net, x).sum().backward()
        jacobians = x.grad.detach().flatten(1).double().cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant row: NaN, scored below
            corr = np.corrcoef(jacobians)
        if not np.all(np.isfinite(corr)):
            scores.append(-math.inf)  # a constant Jacobian row: no correlation to speak of
            continue
        eig = np.linalg.eigvalsh(corr)
        scores.append(float(-np.sum(np.log(eig + JACOB_COV_K) + 1.0 / (eig + JACOB_COV_K))))
    return float(np.mean(scores))


# -- scoring genomes ----------------------------------------------------------------------------

def score_network(name: str, build: Callable[[], nn.Module], inputs: ProxyInputs, device: torch.device,
                  seed: int) -> float:
    """Proxy `name` of the network `build()` makes, its initialization seeded with `seed`; the
    network is dropped before this returns (nothing of it outlives the score)."""
    torch.manual_seed(seed)
    net = build().to(device)
    try:
        return proxy(name)(net, inputs)
    finally:
        del net


def arch_seed(seed: int, row: Row) -> int:
    """The initialization seed of a genome's network: the same network whichever proxy scores it."""
    return derive_seed(seed, "zero_cost", "init", *row)


class ProxyScores:
    """Evaluator of the selection loop (`archnas.nas.selection`): each genome's network built,
    scored by proxy `name` and dropped, one at a time, so scoring a whole space (NAS-Bench-201's
    15,625) holds one network at most."""

    def __init__(self, name: str, network_of: Callable[[Row], nn.Module], inputs: ProxyInputs,
                 device: torch.device, seed: int):
        proxy(name)
        self.name, self.network_of, self.inputs, self.device, self.seed = name, network_of, inputs, device, seed

    def __call__(self, rows: Sequence[Row], start: int = 0) -> list[float]:
        return [score_network(self.name, lambda: self.network_of(row), self.inputs, self.device,
                              arch_seed(self.seed, row)) for row in rows]


def fixed_batches(loader: Any, n: int) -> list[Batch]:
    """The first `n` batches of a loader (unaugmented, in order): every network sees the same."""
    batches = []
    for batch in loader:
        if len(batches) >= n:
            break
        batches.append(batch)
    return batches


def plain(value: float) -> Any:
    """A score for JSON: None where it is not finite (a singular kernel's log-determinant)."""
    return value if math.isfinite(value) else None
