"""Stress driver for the fused search cell and the custom autograd functions of `archnas.ops`,
run by `tests/test_kernel_stress.py` in fresh processes with glibc's heap checks on.

    python tests/kernel_stress.py cells SEED     1- and 2-node supernets, first and second order,
                                                  fused and plain, trained a few steps
    python tests/kernel_stress.py kernels SEED   conv_bn, pixel phases, dense_grad and pointwise
                                                  on edge shapes (1x1 maps, 1-5 channels, batch 1)

A heap overflow in a backward kernel rarely fails where it happens: glibc notices the damaged
chunk at a later free (or never, if nothing is freed nearby). Each case therefore allocates and
frees many tensors, and every result is also compared with the plain modules' computation, so a
kernel that reads or writes the wrong memory fails as a wrong number even when the heap survives.
Prints `ok` last; any other ending (an abort, a signal, an exception) is a failure.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's archnas

from archnas.config.schema import BilevelOrder  # noqa: E402
from archnas.config.schema.model_desc import ModelDescConf, ModelStemsConf  # noqa: E402
from archnas.descs import DatasetInfo  # noqa: E402
from archnas.model import Model, ModelDescBuilder  # noqa: E402
from archnas.nas.bilevel import BilevelOptimizer  # noqa: E402
from archnas.ops.batchnorm_fns import scaled_batch_norm  # noqa: E402
from archnas.ops.conv_bn import DepthwiseSpec, conv_bn  # noqa: E402
from archnas.ops.layout import dense_grad  # noqa: E402
from archnas.ops.phases import add_from_phases, to_phases  # noqa: E402
from archnas.ops.pointwise import pointwise  # noqa: E402


def supernet(n_nodes: int, fused: bool, dtype: torch.dtype) -> Model:
    conf = ModelDescConf(n_cells=3, n_nodes=n_nodes, model_stems=ModelStemsConf(init_node_ch=4))
    desc = ModelDescBuilder().build(conf, DatasetInfo(n_classes=10, channels=1, image_size=(8, 8)))
    torch.manual_seed(0)
    model = Model(desc, droppath=False, affine=False).to(dtype)
    with torch.no_grad():
        for a in model.arch_params():
            a.normal_()
    if not fused:
        for cell in model.cells:
            cell.fused = None
    return model


def train_a_few_steps(n_nodes: int, order: str, fused: bool, seed: int) -> None:
    """What a search step does: the architecture step (first or second order, the second with
    its virtual step and finite differences through `functional_call`), then a weight step."""
    model = supernet(n_nodes, fused, torch.float32)
    arch = {id(p) for p in model.arch_params()}
    weights = torch.optim.SGD([p for p in model.parameters() if id(p) not in arch], lr=0.025, momentum=0.9,
                              weight_decay=3e-4)
    alphas = torch.optim.Adam(list(model.arch_params()), lr=3e-4)
    loss = lambda out, y: F.cross_entropy(out[0], y)  # noqa: E731
    bilevel = BilevelOptimizer(model, weights, alphas, loss, BilevelOrder(order))
    gen = torch.Generator().manual_seed(seed)
    for batch in (1, 3, 8):
        def data() -> tuple[torch.Tensor, torch.Tensor]:
            return torch.randn(batch, 1, 8, 8, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
        bilevel.step(data(), data())
        weights.zero_grad(set_to_none=True)
        loss(model(data()[0]), data()[1]).backward()
        weights.step()
        assert all(torch.isfinite(p).all() for p in model.parameters()), (n_nodes, order, fused)


def fused_equals_plain(n_nodes: int, seed: int) -> None:
    fused = supernet(n_nodes, True, torch.float64)
    plain = copy.deepcopy(fused)
    for cell in plain.cells:
        cell.fused = None
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    outs = [m(x)[0] for m in (fused, plain)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-10)
    for out in outs:
        F.cross_entropy(out, torch.arange(3)).backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=name)


def cells(seed: int) -> None:
    for n_nodes in (1, 2):
        fused_equals_plain(n_nodes, seed)
        for order in ("first", "second"):
            for fused in (True, False):
                train_a_few_steps(n_nodes, order, fused, seed)


def check_conv_bn(n: int, c: int, size: int, spec: DepthwiseSpec | None, channels_last: bool, gen) -> None:
    dw = None if spec is None else torch.nn.Conv2d(c, c, 3, spec.stride, spec.padding, spec.dilation, groups=c,
                                                     bias=False).double()
    pw = torch.nn.Conv2d(c, c + 1, 1, bias=False).double()
    bn = torch.nn.BatchNorm2d(c + 1, momentum=0.3).double()
    x = torch.randn(n, c, size, size, dtype=torch.float64, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    ref_bn = copy.deepcopy(bn)
    try:
        ref = ref_bn(pw(x if dw is None else dw(x))) * scale
    except ValueError:  # one value per channel: batch statistics do not exist, and conv_bn says so too
        try:
            conv_bn(x, dw, spec, pw, bn, bn.weight * scale, bn.bias * scale, 0.3)
        except ValueError:
            return
        raise AssertionError(f"conv_bn accepted one value per channel: {tuple(x.shape)} {spec}")
    out = conv_bn(x, dw, spec, pw, bn, bn.weight * scale, bn.bias * scale, 0.3)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    target = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    got = torch.autograd.grad((out * target).sum(), [x, scale, pw.weight])
    want = torch.autograd.grad((ref * target).sum(), [x, scale, pw.weight])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def check_phases(n: int, c: int, size: int, channels_last: bool, with_acc: bool, gen) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c, size, size, dtype=torch.float64, generator=gen).contiguous(memory_format=fmt)
    x.requires_grad_()
    acc = torch.randn(n, c, size, size, dtype=torch.float64, generator=gen).contiguous(memory_format=fmt)
    acc.requires_grad_()
    y = to_phases(x) * 2.0
    out = add_from_phases(acc if with_acc else None, y)
    want = 2.0 * x + (acc if with_acc else 0.0)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    # an expanded (stride-0) gradient, as a global pool's backward sends
    grad = torch.ones(n, c, 1, 1, dtype=torch.float64).expand(out.shape)
    gx, = torch.autograd.grad(out, [x], grad, retain_graph=True)
    torch.testing.assert_close(gx, torch.full_like(x, 2.0), rtol=0, atol=0)
    if with_acc:
        ga, = torch.autograd.grad(out, [acc], grad)
        torch.testing.assert_close(ga, torch.ones_like(acc), rtol=0, atol=0)


def check_dense_grad_and_pointwise(n: int, c: int, size: int, gen) -> None:
    conv = torch.nn.Conv2d(c, 3, 1, bias=False).double()
    x = torch.randn(n, c, size, size, dtype=torch.float64, generator=gen).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = pointwise(dense_grad(x), conv)
    torch.testing.assert_close(out, conv(x), rtol=1e-10, atol=1e-12)
    grad = torch.randn(n, 3, 1, 1, dtype=torch.float64, generator=gen).expand(out.shape)
    gx, gw = torch.autograd.grad(out, [x, conv.weight], grad)
    rx, rw = torch.autograd.grad(conv(x), [x, conv.weight], grad)
    torch.testing.assert_close(gx, rx, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(gw, rw, rtol=1e-9, atol=1e-11)


def refused(call, what: str) -> None:
    try:
        call()
    except ValueError:
        return
    raise AssertionError(f"accepted: {what}")


def check_refusals() -> None:
    """Per-channel tensors of the wrong length are refused before an ATen kernel sees them (a
    short running mean was written past its end: a segfault, or a silently corrupted heap)."""
    pw, x = torch.nn.Conv2d(4, 8, 1, bias=False), torch.randn(2, 4, 3, 3)
    for what, mean, weight in (("a short running mean", torch.zeros(2), None), ("a short weight", None, torch.ones(2)),
                               ("a long weight", None, torch.ones(9))):
        bn = torch.nn.BatchNorm2d(8)
        if mean is not None:
            bn.running_mean = mean
        refused(lambda: conv_bn(x, None, None, pw, bn, bn.weight if weight is None else weight, bn.bias, 0.1),
                f"conv_bn with {what}")
        if weight is None:
            refused(lambda: scaled_batch_norm(pw(x), bn), f"scaled_batch_norm with {what}")


def kernels(seed: int) -> None:
    check_refusals()
    gen = torch.Generator().manual_seed(seed)
    specs = [None, DepthwiseSpec(1, 1, 1, 0), DepthwiseSpec(2, 1, 1, 0), DepthwiseSpec(1, 2, 2, 0)]
    for n in (1, 2):
        for c in (1, 2, 4, 5):
            for size in (1, 2, 3, 4):
                for channels_last in (False, True):
                    for spec in specs:
                        spec = None if spec is None else DepthwiseSpec(spec.stride, spec.padding, spec.dilation, c)
                        check_conv_bn(n, c, size, spec, channels_last, gen)
                    check_dense_grad_and_pointwise(n, c, size, gen)
                    if size % 2 == 0:
                        for with_acc in (False, True):
                            check_phases(n, c, size, channels_last, with_acc, gen)


if __name__ == "__main__":
    torch.set_num_threads(2)  # the parallel kernels' paths, as a run on two cores takes them
    {"cells": cells, "kernels": kernels}[sys.argv[1]](int(sys.argv[2]))
    print("ok")
