"""PC-DARTS: partial-channel bookkeeping and the shuffle, the C/k desc and the full-channel final
desc, edge normalization, gradients of alphas and betas through the trainer, the warm-up."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from tiny_algos import search_parts

from archnas.algos.pc_darts import (
    EdgeNormWeighting,
    PcDartsFinalizers,
    PcDartsRandomFinalizers,
    partial_channel_mixed_op,
)
from archnas.config.schema import (
    FinalizerConf,
    FinalizerRank,
    ModelDescConf,
    ModelStemsConf,
)
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import load_desc, save_desc
from archnas.descs.genotypes import desc_to_genotype
from archnas.descs.model_desc import ConvMacroParams
from archnas.errors import ConfigError, SpaceError
from archnas.model import Model, ModelDescBuilder
from archnas.ops.mixed_op import PartialChannelMixedOp, channel_shuffle
from archnas.ops.registry import Op

PRIMS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
INFO = DatasetInfo(10, 1, (8, 8))


def pc_builder(k: int) -> ModelDescBuilder:
    return ModelDescBuilder(mixed_op=partial(partial_channel_mixed_op, k))


def pc_supernet(desc) -> Model:
    model = Model(desc, droppath=False, affine=False)
    model.arch.use(EdgeNormWeighting())
    return model


def macro(ch: int = 8, **kw) -> ModelDescConf:
    return ModelDescConf(n_cells=3, n_nodes=2, primitives=list(PRIMS), model_stems=ModelStemsConf(init_node_ch=ch), **kw)


def test_shuffle_moves_channels_into_groups_and_round_trips():
    x = torch.arange(12.0).view(1, 12, 1, 1).expand(2, 12, 3, 3).contiguous()
    y = channel_shuffle(x, 4)  # 4 groups of 3: channel g * 3 + i goes to i * 4 + g
    assert y[0, :, 0, 0].tolist() == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    assert torch.equal(channel_shuffle(y, 3), x)
    z = torch.randn(2, 16, 4, 4)
    assert torch.equal(channel_shuffle(channel_shuffle(z, 4), 4), z)  # 16 / 4 = 4: its own inverse


def _op(stride: int, k: int = 4, ch: int = 8) -> PartialChannelMixedOp:
    desc = pc_builder(k).mixed_op(macro(ch), ConvMacroParams(ch, ch), stride)
    op = Op.create(desc, affine=False)
    assert isinstance(op, PartialChannelMixedOp)
    return op


def one_hot(name: str) -> torch.Tensor:
    return F.one_hot(torch.tensor(PRIMS.index(name)), len(PRIMS)).float()


def test_a_quarter_of_the_channels_goes_through_the_candidates():
    op = _op(stride=1)
    assert op.desc.conv == ConvMacroParams(8, 8) and op.desc.params["k"] == 4
    assert all(c.conv == ConvMacroParams(2, 2) for c in op.desc.children)
    assert op.ops[PRIMS.index("sep_conv_3x3")].op[1].in_channels == 2

    x = torch.randn(3, 8, 6, 6)
    # skip_connect on the mixed part: the whole edge is a pure permutation of the channels
    y = op.mix(x, one_hot("skip_connect"), None)
    assert y.shape == x.shape and torch.equal(channel_shuffle(y, 2), x)
    # none on the mixed part: its 2 channels are zeros, the 6 bypassed channels pass unchanged
    back = channel_shuffle(op.mix(x, one_hot("none"), None), 2)
    assert torch.equal(back[:, :2], torch.zeros(3, 2, 6, 6)) and torch.equal(back[:, 2:], x[:, 2:])
    # sep conv sees only the first 2 channels: changing the others changes only bypassed outputs
    x2 = x.clone()
    x2[:, 2:] += 1.0
    a = channel_shuffle(op.mix(x, one_hot("sep_conv_3x3"), None), 2)
    b = channel_shuffle(op.mix(x2, one_hot("sep_conv_3x3"), None), 2)
    assert torch.allclose(a[:, :2], b[:, :2]) and torch.allclose(b[:, 2:] - a[:, 2:], torch.ones(3, 6, 6, 6))


def test_reduction_edges_max_pool_the_bypassed_channels():
    op = _op(stride=2)
    x = torch.randn(3, 8, 6, 6)
    back = channel_shuffle(op.mix(x, one_hot("none"), None), 2)
    assert back.shape == (3, 8, 3, 3)
    assert torch.equal(back[:, :2], torch.zeros(3, 2, 3, 3))
    assert torch.equal(back[:, 2:], F.max_pool2d(x[:, 2:], 2, 2))


def test_candidates_hold_the_parameters_of_a_c_over_k_mixed_op():
    pc = _op(stride=1, k=4, ch=16)
    darts = Op.create(ModelDescBuilder().mixed_op(macro(), ConvMacroParams(4, 4), 1), affine=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(pc) == count(darts) > 0


def test_supernet_desc_and_the_full_channel_final_desc(tmp_path):
    desc = pc_builder(4).build(macro(), INFO)
    for cell in desc.cells:
        ch = cell.nodes[0].conv_params.ch_out
        for edge in cell.edges():
            assert edge.op_desc.name == "pc_mixed_op" and edge.op_desc.conv == ConvMacroParams(ch, ch)
            assert all(c.conv == ConvMacroParams(ch // 4, ch // 4) for c in edge.op_desc.children)
    save_desc(desc, tmp_path / "supernet.yaml")
    assert load_desc(tmp_path / "supernet.yaml") == desc

    torch.manual_seed(0)
    model = pc_supernet(desc)
    assert model(torch.randn(2, 1, 8, 8))[0].shape == (2, 10)
    final = PcDartsFinalizers(FinalizerConf(), 2).finalize_model(model, desc)
    for cell in final.cells:
        ch = cell.nodes[0].conv_params.ch_out
        assert all(e.op_desc.conv == ConvMacroParams(ch, ch) and not e.op_desc.children for e in cell.edges())
    full = Model(final, droppath=True, affine=True)
    assert full.arch is None and full(torch.randn(2, 1, 8, 8))[0].shape == (2, 10)
    # the eval macro copies the cells at its own channels, as for any search
    ev = ModelDescBuilder().build(macro(ch=12, n_reductions=1), INFO, template=final)
    assert desc_to_genotype(ev) == desc_to_genotype(final)


def test_edge_weights_are_a_softmax_over_each_nodes_inputs():
    torch.manual_seed(0)
    model = pc_supernet(pc_builder(4).build(macro(), INFO))
    with torch.no_grad():
        model.arch.betas["regular"].copy_(torch.tensor([1.0, 2.0, 0.0, 3.0, -1.0]))
    w = model.arch.weighting.weights(model.arch)["regular"]
    assert w.edges.shape == (5,)
    assert torch.allclose(w.edges[:2], F.softmax(torch.tensor([1.0, 2.0]), -1))
    assert torch.allclose(w.edges[2:], F.softmax(torch.tensor([0.0, 3.0, -1.0]), -1))
    assert torch.allclose(w.probs, F.softmax(model.alphas("regular"), -1))
    assert [n for n, _ in model.named_arch_params()] == [
        "arch.alphas.regular", "arch.alphas.reduction", "arch.betas.regular", "arch.betas.reduction"]


def test_finalizer_ranks_by_op_weight_times_edge_weight():
    desc = pc_builder(4).build(macro(), INFO)
    torch.manual_seed(0)
    model = pc_supernet(desc)
    with torch.no_grad():
        for t in ("regular", "reduction"):
            # node 1 (edges 2, 3, 4 from inputs 0, 1, 2): sep dominates edge 3 on alphas alone,
            # but the betas nearly switch edge 3 off, so inputs 0 and 2 are kept.
            model.arch.alphas[t].copy_(torch.tensor([
                [0, 0, 0, 2.0], [0, 0, 1.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 4.0], [0, 0, 1.0, 0]]))
            model.arch.betas[t].copy_(torch.tensor([0, 0, 0, -6.0, 0]))
    genotype = desc_to_genotype(PcDartsFinalizers(FinalizerConf(), 2).finalize_model(model, desc))
    assert genotype.normal == (("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 0), ("skip_connect", 2))
    with pytest.raises(ConfigError, match="rank"):
        PcDartsFinalizers(FinalizerConf(rank=FinalizerRank.raw), 2)


def test_the_random_baseline_on_a_pc_darts_supernet_gives_full_channel_cells():
    desc = pc_builder(4).build(macro(), INFO)
    final = PcDartsRandomFinalizers(FinalizerConf(type="random"), 2, seed=3).finalize_desc(desc)
    plain = ModelDescBuilder().build(macro(), INFO)
    assert final == PcDartsRandomFinalizers(FinalizerConf(type="random"), 2, seed=3).finalize_desc(plain)
    for cell in final.cells:
        ch = cell.nodes[0].conv_params.ch_out
        assert all(e.op_desc.conv == ConvMacroParams(ch, ch) and not e.op_desc.children for e in cell.edges())


def test_alphas_and_betas_get_gradients_after_one_trainer_step(tmp_path):
    parts = search_parts("pc_darts", tmp_path, "nas.search.model_desc.model_stems.init_node_ch=8")
    model, trainer = parts.model, parts.trainer
    assert {n for n, _ in model.named_arch_params()} == {
        "arch.alphas.regular", "arch.alphas.reduction", "arch.betas.regular", "arch.betas.reduction"}
    before = {n: p.detach().clone() for n, p in model.named_arch_params()}
    batch = next(iter(parts.data.loader("train", training=True).epoch(0)))
    trainer.arch_optimizer.bilevel.compute_grads(batch, trainer.val_stream.next())
    for name, p in model.named_arch_params():
        assert p.grad is not None and p.grad.abs().min() > 0, name  # every alpha and every beta
    trainer.run_step(batch)
    for name, p in model.named_arch_params():
        assert not torch.equal(p.detach(), before[name]), name
    parts.ctx.close()


def test_no_architecture_steps_during_the_warm_up(tmp_path):
    parts = search_parts("pc_darts", tmp_path, "nas.search.model_desc.model_stems.init_node_ch=8",
                         "nas.search.pc_darts.arch_warmup_epochs=1")
    model, trainer = parts.model, parts.trainer
    batch = next(iter(parts.data.loader("train", training=True).epoch(0)))
    alphas = [p.detach().clone() for p in model.arch_params()]
    weights = [p.detach().clone() for p in model.weights()]
    trainer.epoch = 0
    trainer.run_step(batch)
    assert all(torch.equal(a, p) for a, p in zip(alphas, model.arch_params()))
    assert not all(torch.equal(w, p) for w, p in zip(weights, model.weights()))
    assert trainer.arch_optimizer.arch_loss.pop() is None
    trainer.epoch = 1
    trainer.run_step(batch)
    assert not any(torch.equal(a, p) for a, p in zip(alphas, model.arch_params()))
    assert trainer.arch_optimizer.arch_loss.pop() is not None
    parts.ctx.close()


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="pc_darts.k"):
        search_parts("pc_darts", tmp_path / "k", "nas.search.model_desc.model_stems.init_node_ch=8",
                     "nas.search.pc_darts.k=3")
    with pytest.raises(ConfigError, match="bilevel_order"):
        search_parts("pc_darts", tmp_path / "a", "nas.search.model_desc.model_stems.init_node_ch=8",
                     "nas.search.trainer.bilevel_order=second")
    with pytest.raises(ConfigError, match="arch_warmup_epochs"):
        search_parts("pc_darts", tmp_path / "b", "nas.search.model_desc.model_stems.init_node_ch=8",
                     "nas.search.pc_darts.arch_warmup_epochs=-1")


def test_nb201_edges_run_their_candidates_on_a_kth_of_the_channels_then_shuffle():
    """Partial channels over a module space: every NasBench201Cell edge is built for C/k channels
    and computes what a PC-DARTS edge computes, softmax(alpha)-mixed candidates on the first C/k
    channels, the rest bypassed, shuffled in k groups; the space's labels are the plain space's."""
    from archnas.hub.nb201 import NasBench201
    from archnas.space import SearchSpaceModel
    from archnas.space.partial import PartialChannelLayerChoice, partial_channels

    torch.manual_seed(0)
    with partial_channels(2):
        space = SearchSpaceModel(NasBench201((1, 8, 8), 10, stem_out_channels=4, num_modules_per_stack=1))
    assert space.labels_key() == SearchSpaceModel(NasBench201((1, 8, 8), 10, stem_out_channels=4, num_modules_per_stack=1)).labels_key()
    edges = [m for m in space.modules() if isinstance(m, PartialChannelLayerChoice)]
    assert len(edges) == 3 * 6 and all(m.k == 2 for m in edges)
    edge = edges[0]
    assert edge[edge.names.index("conv_3x3")][1].in_channels == 2  # C/k of the stage's 4 channels
    space.arch.use(EdgeNormWeighting())  # single choices: softmax(alpha), no betas
    assert len(space.arch.betas) == 0
    x = torch.randn(3, 4, 8, 8)
    with space.arch.bound():
        probs = F.softmax(space.arch.alpha(edge.label_key), dim=-1)
        mixed = sum(p * c(x[:, :2]) for p, c in zip(probs, edge.candidates))
        torch.testing.assert_close(edge(x), channel_shuffle(torch.cat([mixed, x[:, 2:]], dim=1), 2))


def test_pc_darts_refuses_a_space_whose_layer_choices_it_cannot_narrow():
    from tiny_algos import tiny_conf

    from archnas.algos.pc_darts import PcDarts
    from archnas.nas.spaces import module_space

    conf = tiny_conf("pc_darts", "nas.search.space={name: mobilenet}", "nas.search.pc_darts.k=2")
    with pytest.raises(SpaceError, match=r"nas.search.space \(mobilenet\): pc_darts cannot search it: .*'s1_i0'"):
        module_space(conf.nas.search.space).supernet(DatasetInfo(10, 1, (8, 8)), PcDarts(conf))
