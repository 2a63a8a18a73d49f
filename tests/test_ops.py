"""The op registry and the operations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archnas.config.schema.model_desc import ModelDescConf, ModelStemsConf
from archnas.descs import ConvMacroParams, DatasetInfo, OpDesc, parse_genotype
from archnas.errors import DescError
from archnas.model import Model, ModelDescBuilder, genotype_to_desc
from archnas.ops import MixedOp, Op, drop_path, register_op, registered_ops
from archnas.ops.primitives import FactorizedReduce, Identity
from archnas.ops.registry import output_shape
from archnas.space.store import ArchBinding, ArchWeights

EDGE_OPS = ["none", "identity", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
            "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5", "conv_7x1_1x7", "relu_conv_bn", "conv_bn_relu",
            "factorized_reduce"]


def op(name: str, c_in: int = 4, c_out: int = 4, stride: int | None = None, **params) -> OpDesc:
    if stride is not None:
        params["stride"] = stride
    return OpDesc(name, {"conv": ConvMacroParams(c_in, c_out), **params})


class Doubler(Op):
    """A user op: multiplies by a learnable per-channel scale initialized to 2."""

    def __init__(self, desc: OpDesc, affine: bool):
        super().__init__(desc)
        self.scale = nn.Parameter(torch.full((desc.conv.ch_in, 1, 1), 2.0))

    def forward(self, x):
        return x * self.scale


register_op("test_doubler", Doubler)


def test_all_issue_ops_are_registered():
    expected = set(EDGE_OPS) | {"stem_conv3x3", "stem_conv3x3_relu", "stem0_imagenet", "stem1_imagenet",
                                "pool_adaptive_avg2d", "pool_avg2d7x7", "pool_mean_tensor", "linear",
                                "concate_channels", "proj_channels", "mixed_op"}
    assert expected <= set(registered_ops())


@pytest.mark.parametrize("name", [n for n in EDGE_OPS if n not in ("identity", "factorized_reduce")])
@pytest.mark.parametrize("stride", [1, 2])
def test_edge_ops_keep_channels_and_stride_the_map(name, stride):
    out = Op.create(op(name, stride=stride), affine=True)(torch.randn(2, 4, 8, 8))
    assert out.shape == (2, 4, 8 // stride, 8 // stride)


def test_none_is_zero_and_halves_at_stride_2():
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(Op.create(op("none", stride=1), True)(x), torch.zeros_like(x))
    assert torch.equal(Op.create(op("none", stride=2), True)(x), torch.zeros(2, 4, 4, 4))


def test_skip_connect_is_identity_or_factorized_reduce():
    x = torch.randn(2, 4, 8, 8)
    ident = Op.create(op("skip_connect", stride=1), True)
    assert isinstance(ident, Identity) and ident(x) is x and not ident.droppable
    reduce = Op.create(op("skip_connect", stride=2), True).eval()
    assert isinstance(reduce, FactorizedReduce) and reduce.droppable
    relu = x.relu()
    expected = reduce.bn(torch.cat([reduce.conv_1(relu), nn.functional.conv2d(relu[:, :, 1:, 1:], reduce.conv_2.weight, stride=2)], 1))
    assert torch.allclose(reduce(x), expected)
    assert sum(p.numel() for p in reduce.parameters()) == 4 * 4 + 2 * 4  # two 4->2 1x1 convs, BN(4)


def test_sep_conv_is_two_stacked_stages_as_in_darts():
    sep = Op.create(op("sep_conv_5x5", 4, 6, stride=2), affine=False)
    kinds = [type(m).__name__ for m in sep.op]
    assert kinds == ["ReLU", "Conv2d", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "Conv2d", "BatchNorm2d"]
    dw1, pw1, dw2, pw2 = sep.op[1], sep.op[2], sep.op[5], sep.op[6]
    assert (dw1.stride, dw1.groups, dw1.kernel_size, dw1.padding) == ((2, 2), 4, (5, 5), (2, 2))
    assert (dw2.stride, dw2.groups) == ((1, 1), 4) and pw1.out_channels == 4 and pw2.out_channels == 6
    assert sum(p.numel() for p in sep.parameters()) == 2 * 25 * 4 + 16 + 24  # non-affine BN: no params
    dil = Op.create(op("dil_conv_5x5", stride=1), affine=True)
    assert (dil.op[1].dilation, dil.op[1].padding, dil.op[1].groups) == ((2, 2), (4, 4), 4)


def test_channel_preserving_ops_refuse_a_channel_change():
    for name in ("none", "identity", "max_pool_3x3", "avg_pool_3x3"):
        with pytest.raises(DescError, match=f"op '{name}' cannot change channels, got ch_in=4 ch_out=8"):
            Op.create(op(name, 4, 8), True)
    with pytest.raises(DescError, match="op 'identity' needs stride 1"):
        Op.create(op("identity", stride=2), True)


def test_bad_params_name_the_op():
    with pytest.raises(DescError, match="op 'sep_conv_3x3': param 'stride' must be int, got '2'"):
        Op.create(op("sep_conv_3x3", stride="2"), True)
    with pytest.raises(DescError, match="op 'sep_conv_3x3': stride must be 1 or 2, got 3"):
        Op.create(op("sep_conv_3x3", stride=3), True)
    with pytest.raises(DescError, match="op 'linear': missing param 'conv'"):
        Op.create(OpDesc("linear"), True)
    with pytest.raises(DescError, match="op 'factorized_reduce' needs an even ch_out"):
        Op.create(op("factorized_reduce", 4, 5), True)


def test_unknown_op_names_it_and_lists_the_registered_ones():
    with pytest.raises(DescError, match=r"unknown op 'conv_9x9'; registered ops: .*avg_pool_3x3, .*sep_conv_3x3"):
        Op.create(op("conv_9x9"), True)


def test_stems_pools_logits_and_post_ops():
    assert output_shape(op("stem_conv3x3", 3, 48), [[3, 32, 32]]) == [48, 32, 32]
    assert output_shape(op("stem0_imagenet", 3, 48), [[3, 224, 224]]) == [48, 56, 56]
    assert output_shape(op("stem1_imagenet", 48, 48), [[48, 56, 56]]) == [48, 28, 28]
    relu_stem = Op.create(op("stem_conv3x3_relu", 3, 8), True)
    assert (relu_stem(torch.randn(2, 3, 8, 8)) >= 0).all()
    x = torch.randn(2, 8, 7, 7)
    pools = [Op.create(op(n, 8, 8), True)(x) for n in ("pool_adaptive_avg2d", "pool_avg2d7x7", "pool_mean_tensor")]
    assert all(p.shape == (2, 8, 1, 1) and torch.allclose(p, pools[0], atol=1e-6) for p in pools)
    assert Op.create(op("linear", 8, 3), True)(pools[0]).shape == (2, 3)
    states = [torch.randn(2, 4, 8, 8) for _ in range(3)]
    assert torch.equal(Op.create(OpDesc("concate_channels", {"conv": ConvMacroParams(12, 12)}, in_len=3), True)(states),
                       torch.cat(states, 1))
    proj = Op.create(OpDesc("proj_channels", {"conv": ConvMacroParams(12, 4)}, in_len=3), True)
    assert proj(states).shape == (2, 4, 8, 8)
    with pytest.raises(DescError, match="op 'pool_avg2d7x7' cannot take input of shape"):
        output_shape(op("pool_avg2d7x7", 8, 8), [[8, 4, 4]])


def test_finalize_carries_the_weights_into_a_rebuilt_op():
    sep = Op.create(op("sep_conv_3x3", stride=2), affine=True)
    x = torch.randn(4, 4, 8, 8)
    sep.train()(x)  # move the BN running statistics
    with torch.no_grad():
        sep.op[1].weight.mul_(3)
    desc = sep.finalize()
    assert desc.name == "sep_conv_3x3" and set(desc.trainables) == set(sep.state_dict())
    assert sep.desc.trainables is None  # the op's own desc is not changed
    rebuilt = Op.create(desc, affine=True)
    assert torch.equal(rebuilt.eval()(x), sep.eval()(x))
    desc.trainables.pop("op.1.weight")
    with pytest.raises(DescError, match="op 'sep_conv_3x3': its trainables do not fit the op"):
        Op.create(desc, affine=True)


def _mixed(primitives: list[str], stride: int = 1) -> MixedOp:
    desc = ModelDescBuilder().mixed_op(ModelDescConf(primitives=primitives), ConvMacroParams(4, 4), stride)
    return Op.create(desc, affine=False)


def _weighted(mixed: MixedOp, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The op's forward with `w` as its bound row (a model binds it to its architecture store)."""
    binding = ArchBinding()
    mixed.bind_arch(binding, "edges", 1)
    binding.current = {"edges": ArchWeights(torch.stack([torch.zeros_like(w), w]))}
    return mixed(x)


def test_mixed_op_sums_candidates_with_the_edge_weights():
    mixed = _mixed(["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_5x5"]).eval()
    assert sorted(mixed.pool_bns) == ["1", "2"]  # pooling candidates get BN(affine=False), as in DARTS search
    assert all(not bn.affine for bn in mixed.pool_bns.values())
    x, w = torch.randn(2, 4, 8, 8), torch.softmax(torch.randn(6), 0)
    expected = sum(w[i] * mixed.candidate(i, x) for i in range(6))
    assert torch.allclose(_weighted(mixed, x, w), expected)
    assert torch.allclose(mixed.candidate(1, x), mixed.pool_bns["1"](nn.functional.max_pool2d(x, 3, 1, 1)))
    one_hot = torch.zeros(6)
    one_hot[4] = 1
    assert torch.allclose(_weighted(mixed, x, one_hot), mixed.ops[4](x))
    with pytest.raises(RuntimeError, match="outside the forward"):
        mixed.bind_arch(ArchBinding(), "edges", 0) or mixed(x)
    final = mixed.finalize_candidate(4)
    assert final.name == "sep_conv_3x3" and torch.equal(final.trainables["op.1.weight"], mixed.ops[4].op[1].weight)
    assert not mixed.droppable


def test_mixed_op_needs_candidates_and_one_input():
    with pytest.raises(DescError, match="op 'mixed_op' needs candidate ops in children"):
        Op.create(op("mixed_op"), True)
    desc = ModelDescBuilder().mixed_op(ModelDescConf(), ConvMacroParams(4, 4), 1)
    desc.children_ins = [0] * 7 + [1]
    with pytest.raises(DescError, match="reads one input"):
        Op.create(desc, True)


def test_drop_path_drops_whole_samples_and_keeps_the_expectation():
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.25) < 0.03
    assert abs(y.mean().item() - 1.0) < 0.05


def test_user_ops_register_and_work_everywhere():
    with pytest.raises(ValueError, match="registered twice"):
        register_op("test_doubler", Doubler)
    conf = ModelDescConf(n_cells=2, n_reductions=0, n_nodes=2, primitives=["none", "test_doubler"],
                         model_stems=ModelStemsConf(init_node_ch=4))
    info = DatasetInfo(3, 1, (8, 8))
    supernet = Model(ModelDescBuilder().build(conf, info), droppath=False, affine=False)
    assert supernet(torch.randn(2, 1, 8, 8))[0].shape == (2, 3)
    genotype = parse_genotype("normal: [[test_doubler, 0], [test_doubler, 1], [test_doubler, 2], [identity, 1]]\n"
                              "normal_concat: [2, 3]\nreduce: [[test_doubler, 0], [test_doubler, 1]]\nreduce_concat: [2]")
    final = Model(genotype_to_desc(genotype, conf, info), droppath=True, affine=True)
    assert final.cells[0].dag[0][0].drop_path is not None and final.cells[0].dag[1][1].drop_path is None
    assert sum(isinstance(m, Doubler) for m in final.modules()) == 6
