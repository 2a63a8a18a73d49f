"""Zero-cost proxies held to hand computations on a two-layer network, the trust check's choice,
and the `zero_cost` algorithm end to end on a tiny NB201.

The network is x -> W2 relu(W1 x) (no biases, no BatchNorm), whose gradients are written out here
with the chain rule in numpy, not autograd:
    z = X W1^T, a = relu(z), o = a W2^T, p = softmax(o)
    dL/do = (p - onehot(y)) / N, dW2 = (dL/do)^T a, dW1 = ((dL/do) W2 * [z > 0])^T X
- grad_norm = ||dW1|| + ||dW2||, snip = sum |W1 dW1| + sum |W2 dW2|;
- synflow: with |W| and an all-ones input, R = 1^T |W2| |W1| 1 is homogeneous of degree 1 in each
  layer, so sum |W dR/dW| over one layer is R: the score is 2R;
- naswot: codes c = [z > 0] per image, K = c c^T + (1 - c)(1 - c)^T, log|det K|;
- jacob_cov: image n's Jacobian of the summed logits is 1^T W2 diag(z_n > 0) W1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from archnas.nas.zero_cost import ProxyInputs, proxy, proxy_names


def tiny_net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False)).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(4, 1, 2, 3, generator=g, dtype=torch.float64), torch.tensor([0, 2, 1, 2])


def by_hand():
    net = tiny_net()
    W1, W2 = net[1].weight.detach().numpy(), net[3].weight.detach().numpy()
    x, y = batch()
    X, Y = x.reshape(4, -1).numpy(), y.numpy()
    z = X @ W1.T
    a = np.maximum(z, 0)
    o = a @ W2.T
    p = np.exp(o - o.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    do = (p - np.eye(3)[Y]) / len(Y)
    dW2 = do.T @ a
    dW1 = ((do @ W2) * (z > 0)).T @ X
    c = (z > 0).astype(float)
    K = c @ c.T + (1 - c) @ (1 - c).T
    hamming = np.array([[np.sum(ci != cj) for cj in c] for ci in c])
    assert np.allclose(K, c.shape[1] - hamming)
    J = np.stack([np.ones(3) @ W2 @ np.diag(zn > 0) @ W1 for zn in z])
    eig = np.linalg.eigvalsh(np.corrcoef(J))
    R = np.ones(3) @ np.abs(W2) @ np.abs(W1) @ np.ones(6)
    return {
        "params": 6 * 5 + 5 * 3,
        "macs": 6 * 5 + 5 * 3,
        "grad_norm": np.linalg.norm(dW1) + np.linalg.norm(dW2),
        "snip": np.abs(W1 * dW1).sum() + np.abs(W2 * dW2).sum(),
        "synflow": 2 * R,
        "naswot": np.linalg.slogdet(K)[1],
        "jacob_cov": -np.sum(np.log(eig + 1e-5) + 1 / (eig + 1e-5)),
    }


@pytest.mark.parametrize("name", ["params", "macs", "grad_norm", "snip", "synflow", "naswot", "jacob_cov"])
def test_each_proxy_equals_its_hand_computation(name):
    expected = by_hand()[name]
    net = tiny_net().float() if name in ("params", "macs") else tiny_net()  # counts run a float32 image
    got = proxy(name)(net, ProxyInputs([batch()], [1, 2, 3]))
    assert math.isfinite(expected)
    assert got == pytest.approx(expected, rel=1e-9), (name, got, expected)


def test_the_built_in_proxies_are_registered():
    assert set(proxy_names()) >= {"params", "macs", "synflow", "snip", "grad_norm", "naswot", "jacob_cov"}
