"""The fused search-cell forward computes what the plain cell computes: outputs, gradients of
weights and alphas, BatchNorm running statistics, in both modes and both memory layouts; and
the supernet equals the straightforward DARTS baseline the benchmark times it against.

Comparisons run in float64 so that a wrong term (a missed candidate, a wrong weight, a BN
updated twice) shows up far above rounding.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archnas.config.schema.model_desc import ModelDescConf, ModelStemsConf
from archnas.descs import CellType, DatasetInfo
from archnas.model import Model, ModelDescBuilder
from archnas.model.fused_cell import FusedCellPlan
from archnas.ops.conv_bn import DepthwiseSpec, conv_bn
from archnas.space.store import ArchWeights

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see conftest.one_thread


def _baseline_module():
    spec = importlib.util.spec_from_file_location("darts_baseline", REPO / "benchmarks" / "darts_baseline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("darts_baseline", module)
    spec.loader.exec_module(module)
    return module


def supernet(size: int = 8, channels: int = 4, affine: bool = False, **kw) -> Model:
    conf = ModelDescConf(n_cells=3, model_stems=ModelStemsConf(init_node_ch=channels), **kw)
    desc = ModelDescBuilder().build(conf, DatasetInfo(n_classes=10, channels=3, image_size=(size, size)))
    torch.manual_seed(0)
    model = Model(desc, droppath=False, affine=affine).double()
    with torch.no_grad():
        for a in model.arch_params():
            a.normal_()  # distinct weights, so a term on the wrong candidate is visible
        for name, p in model.named_weights():
            if "bn" in name or p.dim() == 1:
                p.uniform_(0.5, 1.5)  # affine BNs away from identity
    return model


def plain_twin(model: Model) -> Model:
    twin = copy.deepcopy(model)
    for cell in twin.cells:
        cell.fused = None
    return twin


def layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def grads(model: Model) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a: Model, b: Model) -> None:
    ga, gb = grads(a), grads(b)
    assert ga.keys() == gb.keys() == {n for n, _ in a.named_parameters()}
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-7, atol=1e-9, msg=name)


def assert_same_buffers(a: Model, b: Model) -> None:
    ba, bb = dict(a.named_buffers()), dict(b.named_buffers())
    assert ba.keys() == bb.keys()
    for name in ba:
        torch.testing.assert_close(ba[name], bb[name], rtol=1e-9, atol=1e-12, msg=name)


def test_every_search_cell_of_a_darts_supernet_is_fused():
    model = supernet()
    assert all(isinstance(c.fused, FusedCellPlan) for c in model.cells)
    assert [c.cell_type for c in model.cells] == [CellType.regular, CellType.reduction, CellType.reduction]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("size", [8, 12])  # 12: the last cell's nodes are 3x3, where dil_conv cannot use phases
def test_fused_supernet_equals_the_plain_one(training: bool, channels_last: bool, size: int):
    fused = supernet(size=size).train(training)
    plain = plain_twin(fused).train(training)
    fused.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x = layout(torch.randn(4, 3, size, size, dtype=torch.float64), channels_last)
    for _ in range(2):  # the second step sees running stats the first one updated
        outs = [m(x)[0] for m in (fused, plain)]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-10)
        for m, out in zip((fused, plain), outs):
            F.cross_entropy(out, torch.arange(4)).backward()
        assert_same_grads(fused, plain)
        assert_same_buffers(fused, plain)
    if training:
        assert all(n.item() == 2 for name, n in fused.named_buffers() if name.endswith("num_batches_tracked"))


@pytest.mark.parametrize("weights", ["one_hot", "edge_scales"])
def test_fused_cell_with_other_edge_weights(weights: str):
    """GDAS-like one-hot rows (with zeros on the `none` the fused cell skips) and PC-DARTS-like
    per-edge scales give the plain cell's outputs and gradients."""
    model = supernet(affine=True)
    fused_cell = model.cells[1]  # a reduction cell after a normal one
    plain_cell = copy.deepcopy(fused_cell)
    plain_cell.fused = None
    alphas = model.alphas("reduction")
    s0, s1 = torch.randn(2, 12, 8, 8, dtype=torch.float64), torch.randn(2, 16, 8, 8, dtype=torch.float64)
    outs, alpha_grads = [], []
    for cell in (fused_cell, plain_cell):
        a = alphas.detach().clone().requires_grad_()
        if weights == "one_hot":
            hard = F.one_hot(a.argmax(-1), a.shape[-1]).to(a.dtype)
            cw = ArchWeights(hard - a.softmax(-1).detach() + a.softmax(-1))  # straight-through, as GDAS
        else:
            cw = ArchWeights(a.softmax(-1), edges=torch.linspace(0.2, 1.5, a.shape[0], dtype=a.dtype))
        cell._binding.current = {"reduction": cw}  # what the model's forward binds for its cells
        out = cell(s0, s1)
        out.square().sum().backward()
        outs.append(out)
        alpha_grads.append(a.grad)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(alpha_grads[0], alpha_grads[1], rtol=1e-7, atol=1e-9)
    for (name, p), q in zip(fused_cell.named_parameters(), plain_cell.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("depthwise", [None, DepthwiseSpec(1, 1, 1, 3), DepthwiseSpec(2, 2, 2, 3)])
def test_conv_bn_equals_the_modules_in_sequence(depthwise: DepthwiseSpec | None, channels_last: bool):
    """The recomputing [dw ->] 1x1 -> BN node: numerical first and second derivatives of its
    input and affine weights (gradcheck, gradgradcheck), and outputs, every gradient and the running statistics against the
    modules run one after another."""
    torch.manual_seed(0)
    dw = None if depthwise is None else torch.nn.Conv2d(
        3, 3, 3, depthwise.stride, depthwise.padding, depthwise.dilation, groups=3, bias=False).double()
    pw = torch.nn.Conv2d(3, 5, 1, bias=False).double()
    bn = torch.nn.BatchNorm2d(5, momentum=0.3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = layout(torch.randn(2, 3, 6, 6, dtype=torch.float64), channels_last).requires_grad_()
    affine = [bn.weight.detach().clone().requires_grad_(), bn.bias.detach().clone().requires_grad_()]
    def fn(x, w, b):
        return conv_bn(x, dw, depthwise, pw, bn, w, b, 0.3)

    assert torch.autograd.gradcheck(fn, [x, *affine])
    assert torch.autograd.gradgradcheck(fn, [x, *affine])  # create_graph: an exact second-order reference

    ref_bn = copy.deepcopy(bn)
    modules = [m for m in (dw, pw, bn) if m is not None]
    out = conv_bn(x, dw, depthwise, pw, bn, bn.weight, bn.bias, 0.3)
    ref = ref_bn(pw(x if dw is None else dw(x)))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var, rtol=1e-12, atol=1e-14)
    target = torch.randn_like(ref)
    params = [x] + [p for m in modules for p in m.parameters()]
    got = torch.autograd.grad((out * target).sum(), params)
    params_ref = [x] + [p for m in modules[:-1] for p in m.parameters()] + list(ref_bn.parameters())
    want = torch.autograd.grad((ref * target).sum(), params_ref)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_supernet_equals_the_benchmark_baseline(channels_last: bool):
    """The DARTS-code formulation `scripts/bench_supernet.py` times ours against computes the
    same function from the same weights: logits, loss gradients of alphas, stem and classifier."""
    darts = _baseline_module()
    model = supernet().train()
    baseline = darts.SearchNetwork(c=4, n_classes=10, layers=3).double().train()
    darts.load_archnas_weights(baseline, model)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    ours, theirs = model(layout(x, channels_last))[0], baseline(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)
    F.cross_entropy(ours, torch.arange(4)).backward()
    F.cross_entropy(theirs, torch.arange(4)).backward()
    pairs = [(model.alphas("regular"), baseline.alphas_normal), (model.alphas("reduction"), baseline.alphas_reduce),
             (model.model_stems[0].op[0].weight, baseline.stem[0].weight),
             (model.logits_op.linear.weight, baseline.classifier.weight)]
    for a, b in pairs:
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-9)


def test_eval_cells_run_channels_last_on_cpu_with_the_same_results():
    """Cells of the DARTS primitives (here DARTS_V2 with drop-path off) compute the same outputs
    and gradients channels_last (1x1 convs as matrix products) as NCHW."""
    from archnas.descs import named_genotype
    from archnas.model import genotype_to_desc

    conf = ModelDescConf(n_cells=3, model_stems=ModelStemsConf(init_node_ch=4))
    torch.manual_seed(0)
    fast = Model(genotype_to_desc(named_genotype("DARTS_V2"), conf, DatasetInfo(10, 3, (8, 8))), droppath=True,
                 affine=True).double()
    assert all(c.cpu_channels_last and c.fused is None for c in fast.cells)
    nchw = copy.deepcopy(fast)
    for cell in nchw.cells:
        cell.cpu_channels_last = False
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    s = fast.model_stems[0](x)
    assert fast.cells[0](s, s).is_contiguous(memory_format=torch.channels_last)
    assert nchw.cells[0](s, s).is_contiguous()
    outs = [m(x)[0] for m in (fast, nchw)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-10)
    for out in outs:
        F.cross_entropy(out, torch.arange(4)).backward()
    assert_same_grads(fast, nchw)


def test_fused_supernet_trains_under_autocast():
    """AMP (CUDA in training; CPU autocast here, the same mechanism) casts the inputs of forward
    ops only, so the fused cell must not hand autocast tensors to backward kernels itself."""
    model = supernet().float().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 8, 8))[0]
    F.cross_entropy(out.float(), torch.arange(4)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
