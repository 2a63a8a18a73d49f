"""The CUDA paths, checked on CPU wherever the defect shows there.

- counting runs its forward where the model is (a CUDA model failed on a CPU input; the meta
  device fails the same way on CPU);
- the finite-difference Hessian-vector product runs at full float32 precision: TF32 (cuDNN's
  default for float32 convolutions on Ampere and newer) is emulated on CPU by a convolution that
  rounds its operands to TF32's 10 mantissa bits whenever torch's flags allow TF32;
- the fused search cell keeps its recomputing conv-BN node under autocast (bf16 on CPU);
- every DDP rank resumes with its own RNG states; saving them never initializes CUDA;
- channels_last is applied before the DDP wrapper is made (no "Grad strides do not match");
- an older torch than the floor in setup.cfg fails at start with one message;
- a DARTS or GDAS training step reads at most 2 values back to the host.
"""

from __future__ import annotations

import configparser
import contextlib
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from gloo_ranks import gloo_group
from test_fused_cell import supernet
from tiny_algos import search_parts
from torch import Tensor, nn

import archnas.cli
from archnas.config.schema import (
    BilevelOrder,
    HessianVectorProduct,
    ModelDescConf,
    ModelStemsConf,
)
from archnas.descs import DatasetInfo, named_genotype
from archnas.model import Model, genotype_to_desc
from archnas.nas.bilevel import BilevelOptimizer
from archnas.stats import model_stats
from archnas.training import checkpoint as checkpoint_module
from archnas.training.precision import conv_tf32_enabled
from archnas.utils.versions import MIN_TORCH, check_torch_version

REPO = Path(__file__).resolve().parents[1]


# -- 1. counting on the model's device ----------------------------------------------------------


def test_stats_count_on_the_models_device():
    """The eval phase counts the model after moving it to the training device: a CPU input for a
    CUDA model failed there, as it does for a model on the meta device here."""
    conf = ModelDescConf(n_cells=20, aux_weight=0.4, model_stems=ModelStemsConf(init_node_ch=36))
    desc = genotype_to_desc(named_genotype("DARTS_V2"), conf, DatasetInfo(10, 3, (32, 32)))
    with torch.device("meta"):
        model = Model(desc, droppath=True, affine=True)
    stats = model_stats(model, [3, 32, 32], detail=True)
    assert stats["macs"] == 528_359_040 and stats["params_without_aux"] == 3_349_342
    assert stats["detail"]["aux_towers"][0]["macs"] > 0


# -- 2. TF32 and the finite differences ----------------------------------------------------------


def tf32_round(t: Tensor) -> Tensor:
    """`t` with float32's 23 mantissa bits cut to TF32's 10 (round to nearest)."""
    bits = t.contiguous().view(torch.int32)
    rounded = (bits + (1 << 12)) & ~((1 << 13) - 1)
    return rounded.view(torch.float32)


class Tf32Conv(nn.Conv2d):
    """A convolution computed as cuDNN computes float32 ones when TF32 is allowed: operands
    rounded to TF32, accumulation in float32."""

    def forward(self, x: Tensor) -> Tensor:
        if conv_tf32_enabled() and x.dtype == torch.float32:
            return F.conv2d(tf32_round(x), tf32_round(self.weight), self.bias, self.stride, self.padding)
        return super().forward(x)


class ConvSupernet(nn.Module):
    """Two mixed edges of three convolution candidates each, weighted by softmax(alpha)."""

    def __init__(self):
        super().__init__()
        self.stem = Tf32Conv(3, 8, 3, padding=1)
        self.ops1 = nn.ModuleList(Tf32Conv(8, 8, 3, padding=1) for _ in range(3))
        self.ops2 = nn.ModuleList(Tf32Conv(8, 8, 3, padding=1) for _ in range(3))
        self.head = nn.Linear(8, 5)
        self.alphas = nn.Parameter(0.5 * torch.randn(2, 3))

    def weights(self):
        return (p for n, p in self.named_parameters() if n != "alphas")

    def arch_params(self):
        return iter([self.alphas])

    def forward(self, x: Tensor) -> Tensor:
        w = F.softmax(self.alphas, dim=-1)
        h = torch.tanh(self.stem(x))
        h = sum(wi * torch.tanh(op(h)) for wi, op in zip(w[0], self.ops1))
        h = sum(wi * torch.tanh(op(h)) for wi, op in zip(w[1], self.ops2))
        return self.head(h.mean((2, 3)))


@contextlib.contextmanager
def tf32_allowed():
    """TF32 on for convolutions, as cuDNN's default is, restored afterwards."""
    obj, name = ((torch.backends.cudnn.conv, "fp32_precision") if hasattr(torch.backends.cudnn, "conv")
                 else (torch.backends.cudnn, "allow_tf32"))
    saved = getattr(obj, name)
    setattr(obj, name, "tf32" if name == "fp32_precision" else True)
    try:
        yield
    finally:
        setattr(obj, name, saved)


SEARCH_SUPERNET_WEIGHTS = 1_930_618  # the DARTS search supernet at the paper's shape


def _hvp(dtype: torch.dtype, device: str = "cpu") -> tuple[BilevelOptimizer, list[Tensor], tuple, dict]:
    """A bilevel step's parts on the conv supernet: the optimizer, a direction v like the step's
    (lr times a gradient-sized vector), the train batch and the buffers.

    eps = scale / ||v|| shifts each weight by about scale / sqrt(n_weights); the scale is set so
    that this toy's weights move as little as the paper-shape supernet's do with DARTS's 0.01
    (about 7e-6 each)."""
    torch.manual_seed(0)
    model = ConvSupernet().to(dtype)
    vector = [0.025 * 1e-2 * torch.randn(p.shape).to(dtype) for n, p in model.named_parameters() if n != "alphas"]
    train = (torch.randn(8, 3, 8, 8).to(dtype), torch.randint(0, 5, (8,)))
    model.to(device)
    n_weights = sum(p.numel() for p in model.weights())
    scale = 0.01 * (n_weights / SEARCH_SUPERNET_WEIGHTS) ** 0.5
    wopt = torch.optim.SGD(model.weights(), lr=0.025, momentum=0.9)
    aopt = torch.optim.Adam(model.arch_params(), lr=3e-4)
    train = (train[0].to(device), train[1].to(device))
    loss = lambda out, y: F.cross_entropy(out, y)  # noqa: E731
    bilevel = BilevelOptimizer(model, wopt, aopt, loss, BilevelOrder.second, finite_diff_scale=scale)
    return bilevel, [v.to(device) for v in vector], train, dict(model.named_buffers())


def _relative_hvp_error(fd: list[Tensor], exact: list[Tensor]) -> float:
    a, b = torch.cat([t.flatten() for t in fd]).double(), torch.cat([t.flatten() for t in exact])
    return ((a - b).norm() / b.norm()).item()


def _reference_hvp() -> list[Tensor]:
    bilevel, vector, train, buffers = _hvp(torch.float64)
    return bilevel._exact_hessian_vector_product(vector, train, buffers)


def test_finite_differences_run_at_full_float32_with_tf32_allowed():
    """With TF32 allowed process-wide, the finite-difference product stays at float32 accuracy
    (against an exact float64 product), and the process's TF32 setting is back afterwards."""
    reference = _reference_hvp()
    bilevel, vector, train, buffers = _hvp(torch.float32)
    with tf32_allowed():
        fd = bilevel._hessian_vector_product(vector, train, buffers)
        assert conv_tf32_enabled()
    assert _relative_hvp_error(fd, reference) < 0.02


def test_tf32_rounding_breaks_the_finite_differences(monkeypatch):
    """The emulation shows the defect: the same product without the full-precision context (as
    before the fix) is far off, since TF32 rounds the shifted weights to the same values."""
    reference = _reference_hvp()
    bilevel, vector, train, buffers = _hvp(torch.float32)
    monkeypatch.setattr("archnas.nas.bilevel.ieee_float32", contextlib.nullcontext)
    with tf32_allowed():
        fd = bilevel._hessian_vector_product(vector, train, buffers)
    assert _relative_hvp_error(fd, reference) > 0.2


def test_exact_hessian_vector_product_matches_the_finite_differences():
    """Double backward against the central differences, in float64 on the toy supernet of
    test_bilevel, where the exact unrolled gradient is known: exact to 1e-9, the finite
    differences to their O(eps^2)."""
    from test_bilevel import _exact_unrolled_grad, _setup

    model, wopt, aopt, train, val = _setup(momentum_steps=3)
    exact = _exact_unrolled_grad(model, wopt, train, val)
    loss = lambda out, y: F.cross_entropy(out, y)  # noqa: E731
    errors = {}
    for hvp in HessianVectorProduct:
        BilevelOptimizer(model, wopt, aopt, loss, BilevelOrder.second, hessian_vector_product=hvp).compute_grads(train, val)
        errors[hvp] = ((model.alphas.grad - exact).norm() / exact.norm()).item()
    assert errors[HessianVectorProduct.exact] < 1e-9 < errors[HessianVectorProduct.finite_difference] < 1e-3, errors


def test_exact_hessian_vector_product_through_the_fused_cell():
    """The fused cell's recompute node is differentiable under create_graph: the exact product on
    a tiny DARTS supernet agrees with the finite differences at a small eps (float64)."""
    from archnas.config.schema import LossConf
    from archnas.training.losses import TrainLoss

    model = supernet()
    loss = TrainLoss(LossConf())
    wopt = torch.optim.SGD(model.weights(), lr=0.05, momentum=0.9)
    aopt = torch.optim.Adam(model.arch_params(), lr=3e-4)
    train = (torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    val = (torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    grads = {}
    for hvp in HessianVectorProduct:
        BilevelOptimizer(model, wopt, aopt, loss, BilevelOrder.second, finite_diff_scale=1e-5,
                         hessian_vector_product=hvp).compute_grads(train, val)
        grads[hvp] = torch.cat([p.grad.flatten() for p in model.arch_params()])
    exact, fd = grads[HessianVectorProduct.exact], grads[HessianVectorProduct.finite_difference]
    assert ((exact - fd).norm() / exact.norm()).item() < 1e-6


# -- 4. the fused cell under autocast -----------------------------------------------------------


def saved_bytes(model: nn.Module, x: Tensor, dtype: torch.dtype | None) -> int:
    """Bytes of the distinct tensors autograd keeps for backward after one training forward."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(x)
    return sum(storages.values())


def test_fused_cell_keeps_its_recompute_node_under_autocast():
    """bf16 halves what the search step keeps for backward (1.34x float32's before: the node was
    skipped under autocast), and the gradients stay those of the plain modules under autocast."""
    model = supernet(size=16, channels=8).float().train()
    x = torch.randn(8, 3, 16, 16)
    ratio = saved_bytes(model, x, torch.bfloat16) / saved_bytes(model, x, None)
    assert ratio < 0.6, f"bf16 keeps {ratio:.2f}x the bytes of float32"


def test_fused_cell_under_autocast_computes_the_gradient_of_the_plain_cell():
    """bf16 rounds at other points in the two forwards, so the gradients agree as closely as
    each agrees with float32's (cosine 0.995-0.997 measured), not bitwise."""
    import copy

    fused = supernet().float().train()
    plain, full = copy.deepcopy(fused), copy.deepcopy(fused)
    for cell in plain.cells:
        cell.fused = None
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    for model, autocast in ((fused, True), (plain, True), (full, False)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x)[0]
        F.cross_entropy(out.float(), y).backward()
    grads = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (fused, plain, full)]
    assert F.cosine_similarity(grads[0], grads[1], 0) > 0.99
    assert F.cosine_similarity(grads[0], grads[2], 0) > 0.99


# -- 5. RNG states per rank ---------------------------------------------------------------------


def _rng_worker(rank: int, root: str) -> None:
    with gloo_group(root, rank):
        import logging

        from archnas.distributed import gather_to_main
        from archnas.training.checkpoint import (
            Checkpointer,
            rank_rng_state,
            read_checkpoint,
            restore_rng,
        )

        torch.manual_seed(1)
        torch.rand(rank + 1)  # the ranks' generators now differ, as after uneven draws
        expected = torch.get_rng_state()
        log = logging.getLogger(f"rng{rank}")
        ckpt = Checkpointer(root, config={}, full_config={}, fingerprint=None, is_main=rank == 0, log=log,
                            gather=gather_to_main)
        ckpt.save(last=True)
        dist.barrier()
        torch.rand(5)  # training goes on, then the run is killed and resumed
        saved = read_checkpoint(Path(root) / "checkpoint_last.pt")["rng"]
        restore_rng(rank_rng_state(saved, rank, 2, log), torch.device("cpu"))
        torch.save({"restored": torch.get_rng_state(), "expected": expected}, f"{root}/rng{rank}.pt")


def test_every_rank_resumes_with_its_own_rng_states(tmp_path):
    """Only rank 0 writes, so each rank's states are gathered to it first; before, every rank
    restored rank 0's (all of rank 0's CUDA generators, on GPUs)."""
    mp.spawn(_rng_worker, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in (0, 1):
        out = torch.load(tmp_path / f"rng{rank}.pt")
        assert torch.equal(out["restored"], out["expected"]), f"rank {rank}"
    r0, r1 = (torch.load(tmp_path / f"rng{r}.pt")["expected"] for r in (0, 1))
    assert not torch.equal(r0, r1)


def test_capturing_rng_states_leaves_cuda_alone(monkeypatch):
    """A CPU run never touches CUDA for its checkpoint (reading all CUDA generators initialized
    CUDA, and restored them onto whatever GPUs the resuming machine had)."""
    def refuse(*args, **kwargs):
        raise AssertionError("CUDA was touched")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse)
    monkeypatch.setattr(torch.cuda, "get_rng_state", refuse)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    monkeypatch.setattr(torch.cuda, "set_rng_state", refuse)
    state = checkpoint_module.capture_rng(torch.device("cpu"))
    assert "cuda" not in state
    checkpoint_module.restore_rng({**state, "cuda": torch.zeros(4, dtype=torch.uint8)}, torch.device("cpu"))


# -- 6. channels_last before DDP ----------------------------------------------------------------


def _channels_last_worker(rank: int, root: str) -> None:
    with gloo_group(root, rank):
        from archnas.config import load_config, parse_override_tokens
        from archnas.context import RunContext
        from archnas.data import build_data
        from archnas.training import precision
        from archnas.training.trainer import Trainer

        original = precision.Precision.__init__

        def channels_last_here(self, amp, channels_last, device):  # CPU stands in for CUDA
            original(self, amp, channels_last, device)
            self.channels_last = channels_last

        precision.Precision.__init__ = channels_last_here
        tokens = ["common.tensorboard=false", "dataset.name=synthetic", "nas.eval.trainer.epochs=1",
                  "nas.eval.trainer.channels_last=true", "nas.eval.loader.train_batch=16", "common.log_every_steps=0",
                  "dataset.params={n_train: 64, n_test: 16}", "nas.eval.loader.cutout=0"]
        conf = load_config([], parse_override_tokens(tokens, set())[0])
        run = RunContext.create(conf, Path(root) / "exp", [], rank=rank, world_size=2)
        ctx = run.phase("eval", conf.nas.eval)
        data = build_data(conf.dataset, conf.nas.eval.loader, seed=0, device=run.device, cache_dir=Path(root) / "cache",
                          rank=rank, world_size=2)
        model = nn.Sequential(nn.Conv2d(data.info.channels, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, data.info.n_classes))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Trainer(conf.nas.eval.trainer, model, ctx).fit(data.loader("train", training=True))
        messages = [str(w.message) for w in caught]
        torch.save({"messages": messages, "channels_last": model[0].weight.is_contiguous(memory_format=torch.channels_last)},
                   f"{root}/cl{rank}.pt")


def test_channels_last_is_applied_before_the_ddp_wrapper(tmp_path):
    mp.spawn(_channels_last_worker, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in (0, 1):
        out = torch.load(tmp_path / f"cl{rank}.pt")
        assert out["channels_last"]
        assert not [m for m in out["messages"] if "Grad strides do not match" in m], out["messages"]


# -- 7. the torch floor -------------------------------------------------------------------------


def test_setup_cfg_states_the_floor_the_code_checks():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    requires = cfg["options"]["install_requires"]
    assert re.search(rf"^torch>={re.escape(MIN_TORCH)}$", requires, re.M), requires
    assert f"torch >= {MIN_TORCH}" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("version", ["2.1.2", "2.3.1+cu121", "1.13.0"])
def test_an_older_torch_fails_at_start_with_one_message(monkeypatch, capsys, version):
    monkeypatch.setattr(torch, "__version__", version)
    assert archnas.cli.main(["--config", "confs/darts.yaml", "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"torch {version}" in err[0] and MIN_TORCH in err[0], err


@pytest.mark.parametrize("version", [MIN_TORCH + ".0", "2.13.0+cpu", "2.14.0.dev20260101", "3.0.0"])
def test_supported_torch_versions_pass(version):
    check_torch_version(version)


# -- 8. host syncs per step ---------------------------------------------------------------------


class SyncCounter:
    """Counts reads of tensor values on the host (each one waits for the device on a GPU):
    `item`, `tolist`, and conversions to bool, int and float. Optimizer step counters are
    excluded: torch keeps them on the host by design, so reading them never waits."""

    METHODS = ("item", "tolist", "__bool__", "__int__", "__float__")

    def __init__(self, optimizers):
        self.optimizers = optimizers
        self.count = 0

    @contextlib.contextmanager
    def counting(self, monkeypatch):
        def host_counters() -> set[int]:
            return {id(s["step"]) for opt in self.optimizers for s in opt.state.values() if "step" in s}

        for name in self.METHODS:
            original = getattr(Tensor, name)

            def counted(t, *args, _original=original, **kwargs):
                if id(t) not in host_counters():
                    self.count += 1
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(Tensor, name, counted)
        yield self
        monkeypatch.undo()


@pytest.mark.parametrize("algo,order,most", [("darts", "second", 0), ("darts", "first", 0), ("gdas", "first", 2)])
def test_a_training_step_reads_at_most_two_values_back(tmp_path, monkeypatch, algo, order, most):
    """Counted over whole epochs of the real loop (loader, arch step, weight step, hooks, stop
    check): the difference between epochs of 8 and of 4 steps, per step. DARTS reads nothing,
    GDAS the sampled candidates once per forward (arch and weight step). Before: GDAS read every
    edge's argmax and retried its Gumbel draw on a host check (about 230 reads per step at the
    search shape, 6 here), second-order DARTS its loss and the norm of v (2)."""
    counts = {}
    for steps in (4, 8):
        parts = search_parts(algo, tmp_path / f"{steps}", f"nas.search.trainer.bilevel_order={order}",
                             f"dataset.limit_train={steps * 20 * 2}", "nas.search.loader.train_batch=20",
                             "common.checkpoint.enabled=false", "nas.search.trainer.validation.freq=100",
                             "nas.search.trainer.epochs=2")
        trainer = parts.trainer
        counter = SyncCounter([trainer.optimizer, trainer.arch_optimizer.alpha_optimizer])
        with counter.counting(monkeypatch):
            trainer.fit(parts.data.loader("train", training=True))
        counts[steps] = counter.count
        parts.ctx.close()
    per_step = (counts[8] - counts[4]) / (2 * 4)
    assert per_step <= most, counts
