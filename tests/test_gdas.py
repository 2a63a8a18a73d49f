"""GDAS: hard Gumbel samples with straight-through gradients, one op per edge, tau annealing,
gradients reaching the alphas through the real trainer, and GDAS's genotype rule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from gloo_ranks import gloo_group
from tiny_algos import search_parts, tiny_conf

from archnas.algos.gdas import (
    Gdas,
    GdasConf,
    GdasFinalizers,
    GumbelWeighting,
    gdas_tau,
    hard_gumbel_softmax,
)
from archnas.config.schema import FinalizerConf, ModelDescConf, ModelStemsConf
from archnas.context import RunContext
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.genotypes import desc_to_genotype
from archnas.descs.model_desc import CellType
from archnas.errors import ConfigError
from archnas.model import Model, ModelDescBuilder
from archnas.nas.phase import Experiment
from archnas.nas.searcher import Searcher
from archnas.ops.mixed_op import GdasMixedOp, MixedOp
from archnas.ops.registry import Op
from archnas.training.checkpoint import read_checkpoint


def test_sample_is_one_hot_and_its_gradient_is_the_tempered_softmax():
    torch.manual_seed(0)
    alphas = torch.randn(14, 8, requires_grad=True)
    coeffs = torch.randn(14, 8)
    tau = 3.0

    torch.manual_seed(1)
    hard = hard_gumbel_softmax(alphas, tau)
    (hard * coeffs).sum().backward()
    straight_through = alphas.grad.clone()

    # the same noise, by hand: the soft sample GDAS differentiates
    alphas.grad = None
    torch.manual_seed(1)
    gumbels = -torch.empty_like(alphas).exponential_().log()
    soft = F.softmax((F.log_softmax(alphas, -1) + gumbels) / tau, dim=-1)
    (soft * coeffs).sum().backward()

    assert torch.equal(hard.detach().argmax(-1), soft.detach().argmax(-1))
    assert torch.allclose(hard.detach(), F.one_hot(soft.argmax(-1), 8).float(), atol=1e-6)
    assert torch.allclose(straight_through, alphas.grad)
    assert straight_through.abs().min() > 0  # every alpha gets a gradient through the softmax


@pytest.mark.parametrize("tau", [10.0, 0.1])
def test_samples_follow_softmax_alpha_at_any_temperature(tau):
    torch.manual_seed(0)
    probs = torch.tensor([0.6, 0.3, 0.1])
    alphas = probs.log().repeat(20000, 1)
    counts = hard_gumbel_softmax(alphas, tau).detach().sum(0) / alphas.shape[0]
    assert torch.allclose(counts, probs, atol=0.015)


def test_tau_anneals_linearly_from_max_to_min():
    conf = GdasConf(tau_max=10.0, tau_min=0.1)
    taus = [gdas_tau(conf, e, 5) for e in range(5)]
    assert taus[0] == 10.0 and math.isclose(taus[-1], 0.1)
    assert all(math.isclose(a - b, 9.9 / 4) for a, b in zip(taus, taus[1:]))
    assert gdas_tau(conf, 0, 1) == 10.0


def _counting(model: Model) -> dict[tuple[int, int], list[int]]:
    """Per (cell, edge): the candidates run in the last forward."""
    calls: dict[tuple[int, int], list[int]] = {}
    for c, cell in enumerate(model.cells):
        for e, edge in enumerate(e for node in cell.dag for e in node):
            calls[(c, e)] = []
            for k, op in enumerate(edge.op.ops):
                op.register_forward_hook(lambda m, args, out, key=(c, e), k=k: calls[key].append(k))
    return calls


def test_only_the_sampled_op_of_each_edge_runs(tmp_path):
    parts = search_parts("gdas", tmp_path)
    model = parts.model
    assert all(isinstance(e.op, GdasMixedOp) for cell in model.cells for node in cell.dag for e in node)
    calls = _counting(model)
    x = torch.randn(4, 1, 8, 8)

    for mode in (True, False):  # eval mode samples too, as the GDAS code does
        for ks in calls.values():
            ks.clear()
        model.train(mode)
        model(x)
        assert all(len(ks) == 1 for ks in calls.values())
        # cells of one type share one sample per forward
        for ctype in CellType:
            cells = [c for c, cell in enumerate(model.cells) if cell.cell_type == ctype]
            assert len({tuple(calls[(c, e)][0] for e in range(5)) for c in cells}) == 1

    # the counting can fail: a DARTS mixed op over the same candidates runs all eight
    edge = model.desc.cells[0].nodes[0].edges[0].op_desc
    darts = Op.create(ModelDescBuilder().mixed_op(parts.conf.nas.search.model_desc, edge.conv, 1), affine=False)
    assert type(darts) is MixedOp
    darts_calls: list[int] = []
    for k, op in enumerate(darts.ops):
        op.register_forward_hook(lambda m, args, out, k=k: darts_calls.append(k))
    darts.mix(torch.randn(4, edge.conv.ch_in, 8, 8), torch.full((8,), 1 / 8), None)
    assert darts_calls == list(range(8))


def test_alphas_get_gradients_and_change_after_one_trainer_step(tmp_path):
    parts = search_parts("gdas", tmp_path)
    model, trainer = parts.model, parts.trainer
    calls = _counting(model)
    first_cell = {ctype: next(c for c, cell in enumerate(model.cells) if cell.cell_type == ctype) for ctype in CellType}
    before = {n: p.detach().clone() for n, p in model.named_arch_params()}
    batch = next(iter(parts.data.loader("train", training=True).epoch(0)))

    # the architecture step alone: its gradient
    trainer.arch_optimizer.bilevel.compute_grads(batch, parts.trainer.val_stream.next())
    sampled = {(ctype, e): calls[(c, e)][0] for ctype, c in first_cell.items() for e in range(5)}
    none = model.desc.cells[0].nodes[0].edges[0].op_desc.children
    none_index = [c.name for c in none].index("none")
    for ctype in CellType:
        grad = model.alphas(ctype).grad
        assert grad is not None and grad.abs().sum() > 0
        for e in range(grad.shape[0]):
            if sampled[(ctype, e)] == none_index:
                assert grad[e].abs().sum() == 0  # a sampled `none` outputs zeros: GDAS's estimator
            else:
                assert grad[e].abs().min() > 0  # every alpha of the edge, through the softmax

    # one full step (alpha step, then weight step) moves every alpha tensor
    trainer.run_step(batch)
    for name, p in model.named_arch_params():
        assert not torch.equal(p.detach(), before[name]), name
    parts.ctx.close()


def test_gdas_refuses_second_order_and_bad_temperatures(tmp_path):
    with pytest.raises(ConfigError, match="bilevel_order"):
        search_parts("gdas", tmp_path / "a", "nas.search.trainer.bilevel_order=second")
    with pytest.raises(ConfigError, match="tau_min"):
        search_parts("gdas", tmp_path / "b", "nas.search.gdas.tau_min=0")


def test_finalizer_ranks_input_op_pairs_as_gdas_does():
    prims = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
    conf = ModelDescConf(n_cells=3, n_nodes=2, primitives=prims, model_stems=ModelStemsConf(init_node_ch=4))
    desc = ModelDescBuilder().build(conf, DatasetInfo(10, 1, (8, 8)))
    # node 0: edges 0, 1 (inputs 0, 1); node 1: edges 2, 3, 4 (inputs 0, 1, 2). Edge 1 holds node
    # 0's two strongest pairs, where the DARTS rule would take one op from each input; `none` (9)
    # never counts, so edge 2's sep (0.002) loses to both ops of node 1 that survive.
    alphas = torch.tensor([
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 2.0, 2.5],
        [9.0, 0.0, 0.0, 3.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 2.0, 0.0],
    ])
    weights = {t: F.softmax(alphas, -1) for t in CellType}
    genotype = desc_to_genotype(GdasFinalizers(FinalizerConf(), 2).finalize_desc(desc, weights))
    assert genotype.normal == (("sep_conv_3x3", 1), ("skip_connect", 1), ("skip_connect", 2), ("max_pool_3x3", 1))
    assert genotype.reduce == genotype.normal


def ddp_worker(rank: int, root: str) -> None:
    with gloo_group(root, rank):
        conf = tiny_conf("gdas", f"common.results_dir={root}", "nas.search.trainer.epochs=2")
        run = RunContext.create(conf, Path(root) / "exp", [], rank=rank, world_size=2)
        found = Searcher(Experiment(run, Gdas(conf))).execute()
        torch.save({"genotype": found.genotype, "epochs": found.metrics["epochs"]}, f"{root}/rank{rank}.pt")


def test_two_ddp_ranks_search_with_unsampled_candidates(tmp_path):
    """Most candidates get no gradient in a GDAS step; DDP must be told, or its next step fails."""
    mp.spawn(ddp_worker, args=(str(tmp_path),), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0 == r1 and r0["epochs"] == 2 and r0["genotype"]
    ckpt = read_checkpoint(tmp_path / "exp" / "search" / "checkpoint_last.pt")
    assert ckpt["state"]["trainer"]["global_step"] == 4  # 2 epochs of 2 steps (80 train images, 20 per rank and step)


def test_a_sampled_layer_choice_passes_gradient_to_every_alpha_and_computes_only_its_candidate():
    """As the GDAS code's NAS-Bench-201 cell: the sampled candidate's output times its weight,
    plus the others' weights (0 in value), so each alpha also gets the gradient of the output's sum
    through the unsampled weights, not only through the sampled one."""
    from torch import nn

    from archnas.space import LayerChoice, SearchSpaceModel

    torch.manual_seed(0)
    candidates = [nn.Conv2d(2, 2, 3, padding=1), nn.Identity(), nn.AvgPool2d(3, 1, 1)]
    model = SearchSpaceModel(nn.Sequential(LayerChoice(candidates, label="op")))
    model.arch.use(GumbelWeighting(1.0))
    alpha = model.arch.alpha("op")
    x = torch.randn(2, 2, 4, 4)
    torch.manual_seed(1)
    y = model(x)
    y.square().sum().backward()
    got = alpha.grad.clone()

    def expected(with_others: bool) -> torch.Tensor:
        torch.manual_seed(1)
        w = hard_gumbel_softmax(alpha, 1.0)
        k = int(w.detach().argmax())
        out = candidates[k](x) * w[k] + (sum(w[j] for j in range(3) if j != k) if with_others else 0)
        assert torch.equal(out.detach(), y.detach()), "the forward value is exactly candidate k's output"
        return torch.autograd.grad(out.square().sum(), alpha)[0]

    assert torch.allclose(got, expected(True), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, expected(False), rtol=1e-3, atol=1e-4)
