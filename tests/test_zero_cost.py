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


def test_scoring_streams_each_network_is_dropped_before_the_next_is_built():
    import gc
    import weakref

    from archnas.nas.zero_cost import ProxyScores

    alive = []

    def network_of(row):
        assert not any(ref() is not None for ref in alive), "an earlier network is still held"
        net = nn.Sequential(nn.Flatten(), nn.Linear(6, 3 + row[0]), nn.ReLU(), nn.Linear(3 + row[0], 3))
        alive.append(weakref.ref(net))
        return net

    x, y = batch()
    scores = ProxyScores("snip", network_of, ProxyInputs([(x.float(), y)], [1, 2, 3]), torch.device("cpu"), 0)
    gc.collect()
    values = scores([(0,), (1,), (2,)])
    assert len(values) == 3 and all(math.isfinite(v) for v in values)
    assert values == scores([(0,), (1,), (2,)])  # a genome's network is seeded by the genome: the same score


def anchors(accuracies):
    from archnas.nas.anchors import Anchors

    rows = [(i,) for i in range(len(accuracies))]
    return Anchors(rows, [{"x": i} for i in range(len(rows))], list(accuracies), 1)


@pytest.mark.parametrize("fallback,good,chosen", [("auto", "snip", "snip"), ("auto", None, "params"),
                                                  ("none", None, "naswot")])
def test_the_trust_check_picks_the_best_proxy_or_falls_back_to_a_baseline(fallback, good, chosen):
    from archnas.nas.trust_check import trust_check

    accuracy = [0.5, 0.9, 0.7, 0.6, 0.8, 0.4]
    params = [3, 5, 2, 4, 6, 1]  # the baseline ranks fairly: 12 of 15 pairs agree, tau (12 - 3) / 15
    order = {"params": params, "macs": [1, 1, 1, 1, 1, 2],
             "snip": accuracy if good == "snip" else [-p for p in params], "naswot": [6, 5, 4, 3, 2, 1]}
    report = trust_check(anchors(accuracy), list(order), lambda name, row: float(order[name][row[0]]), fallback,
                         "naswot")
    assert report["chosen"] == chosen, report["reason"]
    assert report["proxies"]["params"]["kendall_tau"] == pytest.approx(0.6)
    assert report["proxy_beats_baselines"] is (good is not None)
    assert [a["standalone_val_top1"] for a in report["anchors"]] == accuracy


TINY = ["common.device=cpu", "common.tensorboard=false", "common.log_every_steps=0", "dataset.limit_train=120",
        "dataset.limit_test=40", "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=30",
        "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=1", "nas.search.zero_cost.trust.anchors=5",
        "nas.search.zero_cost.trust.epochs=1", "nas.search.zero_cost.batch_size=16",
        "nas.search.zero_cost.random={n_archs: 6, per_generation: 3}"]


@pytest.mark.usefixtures("one_thread")
def test_a_zero_cost_run_reports_its_trust_check_and_a_rerun_trains_no_anchor_twice(tmp_path, capsys):
    import json
    from pathlib import Path

    from archnas.cli import main

    conf = str(Path(__file__).resolve().parents[1] / "confs" / "zero_cost_nb201.yaml")
    args = ["--config", conf, f"common.results_dir={tmp_path}", "--exp-name", "z", *TINY]
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    search = tmp_path / "z" / "search"
    report = json.loads((search / "zero_cost.json").read_text())
    assert report["n_anchors"] == 5 and len(report["anchors"]) == 5
    assert set(report["proxies"]) == {"params", "macs", "grad_norm", "snip", "synflow", "naswot", "jacob_cov"}
    assert report["chosen"] in report["proxies"]
    summary = json.loads((tmp_path / "z" / "result.json").read_text())["search"]
    assert summary["proxy"] == report["chosen"] and summary["candidates_scored"] == 6
    assert summary["trust"]["kendall_tau"] == {n: c["kendall_tau"] for n, c in report["proxies"].items()}
    markers = {p: p.stat().st_mtime_ns for p in search.glob("anchor_*/trial.json")}
    assert len(markers) == 5
    out = capsys.readouterr().out + (tmp_path / "z" / "search" / "log.txt").read_text()
    assert "trust check over 5 anchors" in out and "zero-cost proxy:" in out
    (search / "search_result.json").unlink()  # as if killed after its anchors: the rerun trains none again
    assert main([*args, "--stages", "search"]) == 0, capsys.readouterr().err[-2000:]
    assert {p: p.stat().st_mtime_ns for p in search.glob("anchor_*/trial.json")} == markers
    assert json.loads((search / "zero_cost.json").read_text())["chosen"] == report["chosen"]
