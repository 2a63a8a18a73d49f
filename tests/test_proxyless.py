"""The `proxyless` algorithm (archnas/algos/proxyless.py, archnas/nas/binary_gates.py): the
binary-gate architecture gradient against finite differences of the expected loss, the rerun of
the candidates not drawn against a forward that runs them all, the latency loss and the hard limit
through the command, and a search killed mid-epoch that reruns bit-identically."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from archnas.cli import main
from archnas.nas.binary_gates import BinaryGates
from archnas.space import LayerChoice, SearchSpaceModel
from archnas.training.checkpoint import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
KILL_SEED = int(os.environ.get("ARCHNAS_KILL_SEED", "0"))  # set and printed by conftest.py
SPACE = ("{name: mobilenet, search_ops: [MIB_k=3_t=3, MIB_k=5_t=6, identity], blocks_out_channels: [4, 8], "
         "blocks_count: [1, 2], blocks_stride: [1, 2], stem_channels: 4, head_channels: 8}")
TINY = ["common.tensorboard=false", "common.log_every_steps=1", "dataset.limit_train=160", "dataset.limit_test=40",
        f"nas.search.space={SPACE}", "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=2",
        "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=1", "common.checkpoint.every_steps=1",
        "common.deterministic=true"]


class TwoChoices(nn.Module):
    """Two LayerChoices of three linear maps each, `between` applied in between."""

    def __init__(self, between: nn.Module):
        super().__init__()
        self.a = LayerChoice([nn.Linear(3, 3) for _ in range(3)], label="a")
        self.between = between
        self.b = LayerChoice([nn.Linear(3, 4) for _ in range(3)], label="b")

    def forward(self, x):
        return self.b(self.between(self.a(x)))


def gated_space(between: nn.Module) -> SearchSpaceModel:
    torch.manual_seed(0)
    space = SearchSpaceModel(TwoChoices(between)).double()
    space.arch.use(BinaryGates())
    with torch.no_grad():
        space.arch.alpha("a").copy_(torch.tensor([0.6, -0.4, 0.1]))
        space.arch.alpha("b").copy_(torch.tensor([-0.3, 0.5, 0.0]))
    return space


def gate_gradient(space: SearchSpaceModel, x: torch.Tensor, loss_of) -> torch.Tensor:
    """The binary-gate estimate of one drawn path: [dL/dalpha_a, dL/dalpha_b], as the
    architecture step computes it (gates with gradient, the other candidates rerun)."""
    space.arch.weighting.gradient = True
    try:
        loss = loss_of(space(x))
    finally:
        space.arch.weighting.gradient = False
    return torch.cat(torch.autograd.grad(loss, [space.arch.alpha("a"), space.arch.alpha("b")]))


def test_the_binary_gate_gradient_is_the_expected_loss_gradient_in_expectation():
    """Averaged over 2,000 drawn paths (seed 0), the estimator equals the central finite difference
    (eps 1e-6, float64) of E[L] = sum_{a,b} p_a p_b L(a, b), enumerated over the 9 paths, within
    4 standard errors of the mean per component (and 0.02 absolute; the gradient's entries are
    ~0.1-1). The loss is linear in each choice's output given the other's (linear candidates, a
    linear readout), where ProxylessNAS's estimator is unbiased: dL/dg_j = <dL/dy, o_j> is then
    exactly L with gate j open, and sum_j L_j p_j (delta_ij - p_i) is dE[L]/dalpha_i."""
    space = gated_space(nn.Identity())
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss_of = lambda out: (out * v).sum()  # noqa: E731
    a, b = space.model.a.candidates, space.model.b.candidates

    def expected_loss(alpha_a: torch.Tensor, alpha_b: torch.Tensor) -> float:
        pa, pb = F.softmax(alpha_a, -1), F.softmax(alpha_b, -1)
        with torch.no_grad():
            return sum(float(pa[i] * pb[j] * loss_of(b[j](a[i](x)))) for i in range(3) for j in range(3))

    alphas = torch.cat([space.arch.alpha("a").detach(), space.arch.alpha("b").detach()])
    eps, fd = 1e-6, torch.zeros(6, dtype=torch.float64)
    for i in range(6):
        up, down = alphas.clone(), alphas.clone()
        up[i] += eps
        down[i] -= eps
        fd[i] = (expected_loss(up[:3], up[3:]) - expected_loss(down[:3], down[3:])) / (2 * eps)

    torch.manual_seed(0)
    samples = torch.stack([gate_gradient(space, x, loss_of) for _ in range(2000)])
    mean, stderr = samples.mean(0), samples.std(0) / len(samples) ** 0.5
    assert (stderr > 0).all()  # the paths differ: the estimate is random, its mean is what is tested
    assert ((mean - fd).abs() <= 4 * stderr).all() and ((mean - fd).abs() < 0.02).all(), (mean, fd, stderr)


def test_the_candidates_rerun_without_autograd_give_every_gate_its_exact_gradient():
    """One drawn path through a nonlinear network and cross-entropy: the estimate equals the
    binary-gate formula computed from a forward that runs every candidate with autograd behind
    one-hot gates (leaves): dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i), to 1e-12."""
    space = gated_space(nn.Tanh())
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 1])
    loss_of = lambda out: F.cross_entropy(out, y)  # noqa: E731
    checked = set()
    for seed in range(12):
        torch.manual_seed(seed)
        estimate = gate_gradient(space, x, loss_of)
        torch.manual_seed(seed)  # the same draw: the forward's first use of the RNG is the weighting's
        drawn = {label: w.chosen[0] for label, w in space.arch.weighting.weights(space.arch).items()}
        checked.add((drawn["a"], drawn["b"]))
        ga, gb = (torch.zeros(3, dtype=torch.float64) for _ in range(2))
        ga[drawn["a"]], gb[drawn["b"]] = 1.0, 1.0
        ga.requires_grad_(True)
        gb.requires_grad_(True)
        model = space.model
        h = model.between(sum(ga[j] * model.a.candidates[j](x) for j in range(3)))
        dga, dgb = torch.autograd.grad(loss_of(sum(gb[j] * model.b.candidates[j](h) for j in range(3))), [ga, gb])
        expected = []
        for label, dg in (("a", dga), ("b", dgb)):
            p = F.softmax(space.arch.alpha(label).detach(), -1)
            expected.append((torch.diag(p) - torch.outer(p, p)) @ dg)  # the softmax Jacobian is symmetric
        assert torch.allclose(estimate, torch.cat(expected), atol=1e-12, rtol=0), (seed, drawn)
    assert len(checked) > 1


def test_the_weight_step_runs_one_path_and_the_arch_step_gates_it():
    """Without `gradient` the gates are constants (one path, nothing reaches the alphas); with it,
    they carry the probabilities' gradient and ask for the rerun."""
    space = gated_space(nn.Identity())
    plain = space.arch.weighting.weights(space.arch)
    assert all(not w.probs.requires_grad and not w.rerun and len(w.chosen) == 1 for w in plain.values())
    space.arch.weighting.gradient = True
    gated = space.arch.weighting.weights(space.arch)
    assert all(w.probs.requires_grad and w.rerun and float(w.probs.detach().sum()) == 1.0 for w in gated.values())


@pytest.mark.parametrize("form", ["multiplicative", "additive"])
def test_the_latency_loss_is_the_documented_formula_of_the_expected_latency(form):
    """`alpha * loss * (E[lat] / T) ** beta` and `loss + weight * E[lat] / T`, with E[lat] the
    cost model's expectation under softmax(alpha) (a stand-in table: constant 1 plus per-option
    ms), differentiable in the architecture parameters."""
    from types import SimpleNamespace

    from archnas.config import find_config_file, load_config, parse_override_tokens
    from archnas.nas.binary_gates import BinaryGateStep

    overrides, _ = parse_override_tokens([f"nas.search.space={SPACE}", f"nas.search.proxyless.form={form}",
                                          "nas.search.proxyless.latency_target=4", "nas.search.proxyless.beta=0.6",
                                          "nas.search.proxyless.alpha=0.2", "nas.search.proxyless.weight=0.1"], set())
    conf = load_config([find_config_file("proxyless")], overrides)
    space = gated_space(nn.Identity())
    rows = {"a": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
            "b": torch.tensor([0.5, 0.0, 4.0], dtype=torch.float64)}
    table = SimpleNamespace(expected=lambda probs: 1.0 + sum(probs[k] @ rows[k] for k in rows))
    step = BinaryGateStep(SimpleNamespace(conf=conf))
    step.cost = SimpleNamespace(store=space.arch, labels=["a", "b"], costs=SimpleNamespace(model=lambda name: table))
    loss = torch.tensor(1.7, dtype=torch.float64)
    total = step.latency_loss(loss)
    pa, pb = (F.softmax(space.arch.alpha(k).detach(), -1) for k in ("a", "b"))
    lat = 1.0 + float(pa @ rows["a"] + pb @ rows["b"])
    hand = 0.2 * 1.7 * (lat / 4) ** 0.6 if form == "multiplicative" else 1.7 + 0.1 * lat / 4
    assert float(total.detach()) == pytest.approx(hand, rel=1e-12)
    assert torch.autograd.grad(total, [space.arch.alpha("b")])[0].abs().sum() > 0


TARGET = 70000  # multiply-adds: the latency target and hard limit of the searches below
LATENCY = ["--config", str(REPO / "confs" / "proxyless.yaml"), "--exp-name", "p", *TINY, "--stages", "search",
           "nas.search.proxyless.latency_model=macs", f"nas.search.proxyless.latency_target={TARGET}",
           "nas.search.proxyless.beta=4", "nas.search.trainer.alpha_optimizer.lr=0.2",
           f"nas.search.cost.max_macs={TARGET}", "nas.search.cost.held_out=2"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A tiny search with a latency target on an exact cost model (macs: deterministic) and the
    same hard limit, a strong beta and a fast alpha lr: results/p/search."""
    root = tmp_path_factory.mktemp("searched")
    assert main([*LATENCY, f"common.results_dir={root}"]) == 0
    return root


def test_a_latency_target_pulls_the_expected_cost_down_and_the_limit_holds(searched):
    """The expected MACs under the gate probabilities fall from epoch to epoch; the hard limit at
    the target makes the final architecture meet it."""
    search = searched / "p" / "search"
    expected = [json.loads(line)["expected_macs"] for line in (search / "metrics.jsonl").read_text().splitlines()]
    assert expected[1] < expected[0] - 1000, expected
    result = json.loads((search / "search_result.json").read_text())["metrics"]
    assert result["limits"] == {"max_macs": TARGET} and result["costs"]["macs"] <= TARGET


@pytest.mark.slow  # a subprocess and an in-process search: 30 s on 2 cores at load 12
def test_a_search_killed_mid_epoch_reruns_bit_identically(searched, tmp_path, capsys):
    """SIGKILL after the first step of an epoch (which one drawn from ARCHNAS_KILL_SEED), rerun: the
    weights, the alphas, both optimizers, the arch-step loss, the cost tables and the architecture
    equal an uninterrupted run's (the drawn paths come from the checkpointed RNG)."""
    killed = [sys.executable, str(REPO / "scripts" / "main.py"), *LATENCY, f"common.results_dir={tmp_path}"]
    epoch = random.Random(f"{KILL_SEED}:proxyless").randint(1, 2)  # killed after the first of its 2 steps
    where = f"ARCHNAS_KILL_SEED={KILL_SEED}, SIGKILL in epoch {epoch} after step 1"
    proc = subprocess.Popen(killed, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pattern = re.compile(rf"search epoch {epoch}/2: step 1/")
    for line in proc.stdout:
        if pattern.search(line):
            proc.kill()
            break
    assert proc.wait(timeout=300) == -signal.SIGKILL, where
    assert not (tmp_path / "p" / "search" / "search_result.json").exists()
    assert main([*LATENCY, f"common.results_dir={tmp_path}"]) == 0
    capsys.readouterr()
    assert "resumed from" in (tmp_path / "p" / "search" / "log.txt").read_text(), where  # not started over
    a, b = (read_checkpoint(root / "p" / "search" / "checkpoint_last.pt") for root in (searched, tmp_path))
    for name in ("model", "arch_params"):
        assert a["state"][name].keys() == b["state"][name].keys()
        assert all(torch.equal(a["state"][name][k], b["state"][name][k]) for k in a["state"][name]), f"{where}: {name}"
    for name in ("alpha_optimizer", "optimizer"):
        sa, sb = a["state"][name]["state"], b["state"][name]["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i]), \
            f"{where}: {name}"
    assert a["state"]["arch_loss"] == b["state"]["arch_loss"], where
    assert a["state"]["cost_tables"] == b["state"]["cost_tables"], where
    arch = [yaml.safe_load((root / "p" / "search" / "arch.yaml").read_text()) for root in (searched, tmp_path)]
    assert arch[0] == arch[1], where
