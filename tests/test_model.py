"""Model, Cell, DagEdge, AuxTower and the architecture parameters, on tiny models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archnas.config.schema.model_desc import ModelDescConf, ModelStemsConf
from archnas.descs import AuxTowerDesc, CellType, DatasetInfo, EdgeDesc, named_genotype
from archnas.errors import DescError
from archnas.model import Cell, Model, ModelDescBuilder, genotype_to_desc
from archnas.model.aux_tower import AuxTower
from archnas.ops.drop_path import DropPath
from archnas.space.store import ArchStore, ArchWeights, Weighting

TINY = DatasetInfo(n_classes=10, channels=3, image_size=(8, 8))


def tiny_conf(**kw) -> ModelDescConf:
    return ModelDescConf(**{"n_cells": 3, "model_stems": ModelStemsConf(init_node_ch=4), **kw})


def tiny_supernet(**kw) -> Model:
    return Model(ModelDescBuilder().build(tiny_conf(**kw), TINY), droppath=False, affine=False)


class OneHotArgmax(Weighting):
    """A weighting as GDAS-like algorithms plug one in: hard one-hot weights from the alphas."""

    def weights(self, store: ArchStore) -> dict[str, ArchWeights]:
        out = {}
        for label in store.specs:
            alphas = store.alpha(label)
            out[label] = ArchWeights(F.one_hot(alphas.argmax(-1), alphas.shape[-1]).to(alphas.dtype))
        return out


def bound(model: Model, weights: dict[str, ArchWeights]):
    """Run cells directly with these weights, as the model's forward binds its own."""
    model.arch.binding.current = weights
    return model


def test_weights_and_arch_params_are_disjoint_and_complete():
    model = tiny_supernet()
    weights = {id(p) for p in model.weights()}
    arch = {id(p) for p in model.arch_params()}
    assert not weights & arch and weights | arch == {id(p) for p in model.parameters()}
    assert [n for n, _ in model.named_arch_params()] == ["arch.alphas.regular", "arch.alphas.reduction"]
    assert not any(n.startswith("arch.") for n, _ in model.named_weights())
    final = Model(genotype_to_desc(named_genotype("DARTS_V2"), tiny_conf(), TINY), droppath=True, affine=True)
    assert final.arch is None and list(final.arch_params()) == []
    with pytest.raises(KeyError, match="no architecture parameters for regular cells"):
        final.alphas(CellType.regular)


def test_cells_of_a_type_share_one_alpha_tensor_in_darts_edge_order():
    model = tiny_supernet(n_cells=5, primitives=["none", "skip_connect", "sep_conv_3x3"])
    assert model.alphas(CellType.regular).shape == (14, 3)
    assert model.alphas("reduction") is model.arch.alphas["reduction"]
    assert model.arch.specs["regular"].groups == (2, 3, 4, 5)
    assert model.arch.specs["regular"].candidates == ("none", "skip_connect", "sep_conv_3x3")
    for cell in model.cells:
        assert [e.index for node in cell.dag for e in node] == list(range(14))
        assert [e.input_ids[0] for node in cell.dag for e in node] == [0, 1, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4]
    # changing one row of the shared alphas changes every cell of that type through that edge only
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    grads = torch.autograd.grad(model(x)[0].sum(), [model.alphas("regular"), model.alphas("reduction")])
    assert all(g.abs().sum(1).gt(0).all() for g in grads)


def test_supernet_forward_equals_the_softmax_weighted_sum():
    model = tiny_supernet().eval()
    with torch.no_grad():
        for a in model.arch_params():
            a.normal_()
    cell = model.cells[0]
    s = torch.randn(2, 12, 8, 8)
    w = F.softmax(model.alphas("regular"), -1)
    states = [cell.stems[0](s), cell.stems[1](s)]
    k = 0
    for node in cell.dag:
        states.append(sum(edge.op.mix(states[edge.input_ids[0]], w[k + i], None) for i, edge in enumerate(node)))
        k += len(node)
    with model.arch.bound():
        out = cell(s, s)
    assert torch.allclose(out, torch.cat(states[2:], 1), atol=1e-6)  # the fused cell runs channels_last: float32 rounding differs


def test_a_one_hot_strategy_turns_the_supernet_into_its_finalized_network():
    """Plugging a strategy changes only how weights are computed; with one-hot weights on the
    strongest candidate the supernet computes exactly the network whose edges are those
    candidates, built from the finalized descs with their inherited weights."""
    torch.manual_seed(1)
    conf = tiny_conf(primitives=["none", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"])
    desc = ModelDescBuilder().build(conf, TINY)
    supernet = Model(desc, droppath=False, affine=True).eval()
    supernet.arch.use(OneHotArgmax())
    with torch.no_grad():
        for a in supernet.arch_params():
            a.normal_()
            a[:, 0] = -10  # never `none`
    final = desc.clone()
    for cell_desc, cell in zip(final.cells, supernet.cells):
        best = supernet.alphas(cell_desc.cell_type).argmax(-1)
        for node, node_desc in zip(cell.dag, cell_desc.nodes):
            node_desc.edges = [EdgeDesc(e.op.finalize_candidate(int(best[e.index])), list(e.input_ids)) for e in node]
    network = Model(final, droppath=False, affine=True).eval()
    assert network.arch is None
    network.model_stems.load_state_dict(supernet.model_stems.state_dict())
    network.logits_op.load_state_dict(supernet.logits_op.state_dict())
    for a, b in zip(network.cells, supernet.cells):
        a.stems.load_state_dict(b.stems.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(network(x)[0], supernet(x)[0], atol=1e-5)


def test_edge_scales_from_a_strategy_reach_every_edge():
    model = tiny_supernet().eval()
    s = torch.randn(2, 12, 8, 8)
    ops = F.softmax(model.alphas("regular"), -1)
    plain = bound(model, {"regular": ArchWeights(ops)}).cells[0](s, s)
    assert torch.equal(bound(model, {"regular": ArchWeights(ops, edges=torch.ones(14))}).cells[0](s, s), plain)
    assert torch.equal(bound(model, {"regular": ArchWeights(ops, edges=torch.zeros(14))}).cells[0](s, s),
                       torch.zeros_like(plain))


def test_drop_path_only_on_droppable_eval_edges():
    model = Model(genotype_to_desc(named_genotype("DARTS_V2"), tiny_conf(), TINY), droppath=True, affine=True)
    normal = model.cells[0]
    has_drop = [[e.drop_path is not None for e in node] for node in normal.dag]
    # DARTS_V2 normal: sep sep | sep sep | sep skip | skip dil -- identities are never dropped
    assert has_drop == [[True, True], [True, True], [True, False], [False, True]]
    reduction = model.cells[1]  # max max | skip(2) max | max skip(2) | skip(2) max: 5 pools droppable
    assert [[e.drop_path is not None for e in node] for node in reduction.dag] == \
           [[True, True], [False, True], [True, False], [False, True]]
    model.drop_path_prob(0.3)
    probs = [m.prob for m in model.modules() if isinstance(m, DropPath)]
    assert len(probs) == 6 + 5 + 5 and set(probs) == {0.3}  # one normal and two reduction cells
    assert not any(isinstance(m, DropPath) for m in tiny_supernet().modules())
    x = torch.randn(64, 3, 8, 8)
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])  # no drop-path in eval mode
    model.train()
    torch.manual_seed(0)
    a = model(x)[0]
    torch.manual_seed(1)
    assert not torch.equal(a, model(x)[0])


def test_aux_logits_only_in_training():
    model = Model(genotype_to_desc(named_genotype("DARTS_V2"), tiny_conf(aux_weight=0.4), TINY), droppath=False, affine=True)
    assert list(model.aux_towers) == ["2"]
    assert model.train()(torch.randn(2, 3, 8, 8))[1].shape == (2, 10)
    assert model.eval()(torch.randn(2, 3, 8, 8))[1] is None


def test_aux_tower_on_small_maps_and_at_darts_sizes():
    """8x8 digits with 5 cells reach the tower (after cell 3) at 2x2: pool kernel 2, conv kernel 1."""
    conf = ModelDescConf(n_cells=5, aux_weight=0.4, model_stems=ModelStemsConf(init_node_ch=4))
    desc = genotype_to_desc(named_genotype("DARTS_V2"), conf, DatasetInfo(10, 1, (8, 8)))
    tower = Model(desc, droppath=True, affine=True).aux_towers["3"]
    assert desc.aux_towers[3].in_size == [2, 2]
    assert tower.features[1].kernel_size == (2, 2) and tower.features[5].kernel_size == (1, 1)
    model = Model(desc, droppath=True, affine=True)
    logits, aux = model(torch.randn(2, 1, 8, 8))
    (logits.sum() + aux.sum()).backward()
    assert model.aux_towers["3"].classifier.weight.grad.abs().sum() > 0
    cifar = AuxTower(AuxTowerDesc(576, 10, 3, [8, 8]))
    assert cifar.features[1].kernel_size == (5, 5) and cifar.features[1].stride == 3
    assert cifar.features[5].kernel_size == (2, 2) and cifar(torch.randn(2, 576, 8, 8)).shape == (2, 10)
    imagenet = AuxTower(AuxTowerDesc(768, 1000, 2, [7, 7], bn_last=False))
    assert [type(m).__name__ for m in imagenet.features][5:] == ["Conv2d", "ReLU", "AdaptiveAvgPool2d"]
    big = AuxTower(AuxTowerDesc(8, 10, 3, [16, 16]))  # 64x64 inputs: 4x4 pooled, 3x3 after the conv
    assert big(torch.randn(2, 8, 16, 16)).shape == (2, 10)


def test_make_cell_is_the_hook_for_another_cell_forward():
    class TracingCell(Cell):
        def forward(self, s0, s1):
            self.calls = getattr(self, "calls", 0) + 1
            return super().forward(s0, s1)

    class TracingModel(Model):
        def make_cell(self, desc, affine, droppath):
            return TracingCell(desc, affine, droppath)

    model = TracingModel(ModelDescBuilder().build(tiny_conf(), TINY), droppath=False, affine=False)
    model(torch.randn(2, 3, 8, 8))
    assert [c.calls for c in model.cells] == [1, 1, 1]


def test_inconsistent_descs_are_desc_errors():
    desc = ModelDescBuilder().build(tiny_conf(n_cells=4), TINY)
    desc.cells[3].trainables_from = 1  # a reduction cell's alphas for a regular cell
    with pytest.raises(DescError, match="cell 3: trainables_from=1 must name a cell of the same type"):
        Model(desc, droppath=False, affine=False)
    desc = ModelDescBuilder().build(tiny_conf(n_cells=4), TINY)
    desc.cells[3].trainables_from = 3
    with pytest.raises(DescError, match="all regular cells must share one set of architecture parameters"):
        Model(desc, droppath=False, affine=False)
    desc = ModelDescBuilder().build(tiny_conf(), TINY)
    desc.cells[0].nodes[0].edges[0] = desc.cells[0].nodes[0].edges[0].finalized("sep_conv_3x3")
    with pytest.raises(DescError, match="cell 0: mixes mixed-op and fixed edges"):
        Model(desc, droppath=False, affine=False)
    desc = ModelDescBuilder().build(tiny_conf(), TINY)
    desc.cells[0].nodes[0].edges[0].input_ids = [2]
    with pytest.raises(DescError, match=r"cell 0 node 0: input ids \[2\] must be in \[0, 2\)"):
        Model(desc, droppath=False, affine=False)
    desc = ModelDescBuilder().build(tiny_conf(primitives=["skip_connect", "sep_conv_3x3"]), TINY)
    desc.cells[0].nodes[1].edges[0].op_desc.children.reverse()
    with pytest.raises(DescError, match="cell 0: edges have different candidates"):
        Model(desc, droppath=False, affine=False)
