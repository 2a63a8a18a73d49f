#!/usr/bin/env python
"""Time, memory and FLOP/s of the DARTS search supernet and the DARTS_V2 eval network: archnas
against the straightforward DARTS formulation (`benchmarks/darts_baseline.py`), in one run.

Cases, each timed for the baseline and for archnas on the same weights:

    weight_step   supernet (batch 64 of 3x32x32, C=16, 8 cells, 4 nodes, the 8 DARTS primitives):
                  forward, loss, backward, SGD step with momentum and weight decay
    arch_first    first-order architecture step on a val batch (Adam on the alphas)
    arch_second   second-order (unrolled) architecture step: the baseline as DARTS's architect.py
                  (a copy of the network for w', finite-difference Hessian-vector product on the
                  live weights), archnas as `archnas.nas.bilevel` (functional calls, no copy)
    eval_step     DARTS_V2, C=36, 20 cells, aux tower (weight 0.4), drop-path 0.2, batch 32:
                  forward, loss, backward, grad clipping, SGD step
    digits_step   the weight step at the digits config's shape (confs/darts.yaml: 8x8x1, C=8,
                  5 cells, batch 64, one thread): archnas with the fused cells off and on

Timing runs every variant once per round, round after round (`--warmup` rounds not counted),
so drift of a machine shared with other work hits all variants alike; reported are median, min
and max per variant, and ratios of medians to the baseline. This CPU's (or GPU's) float32
matrix-multiply rate is measured in the same rounds, as the reference for achieved GFLOP/s.

Peak memory: on CPU the peak resident set (VmHWM) of a fresh process that builds one variant and runs
`--memory-steps` steps (freed memory stays in a process's resident set, so only a new process
measures one variant); on CUDA max allocated over the same steps. Reported as the peak and as
the increase over the process after building (what the steps need).

FLOPs count convolution and linear multiply-adds as 2 (`torch.utils.flop_counter`) in one
forward; a step with weight gradients is 3 forwards (forward, input and weight gradients), a
pass that only needs the alphas' gradient is 2 (the weight-gradient convolutions are not run);
the counter's own backward count is not used, as it over-counts grouped convolutions.
The baseline's forward at the paper shape is asserted to be DARTS's 38.4 GFLOP at batch 64, and
archnas's forward to have the same count and outputs (same math).

    python scripts/bench_supernet.py                         # about 10 minutes on 2 cores, 1 thread
    python scripts/bench_supernet.py --cases weight_step --rounds 2
    python scripts/bench_supernet.py --device cuda --amp bf16 --channels-last

`--amp` applies to the weight and eval steps, as in a run: architecture steps run in float32
outside autocast (finite differences need float32). `--channels-last` puts both archnas and the
baseline in channels_last.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import archnas.algos  # noqa: E402,F401  (the algorithms, as the archnas command loads them)
from archnas.config import find_config_file, load_config, parse_override_tokens  # noqa: E402
from archnas.config.schema import BilevelOrder  # noqa: E402
from archnas.context import RunContext  # noqa: E402
from archnas.descs import DatasetInfo, named_genotype  # noqa: E402
from archnas.model import Model  # noqa: E402
from archnas.model.model_file import InputSpec  # noqa: E402
from archnas.nas.arch_trainer import ArchTrainer  # noqa: E402
from archnas.nas.evaluater import Evaluater  # noqa: E402
from archnas.nas.phase import Experiment  # noqa: E402
from archnas.nas.registry import algorithm_class  # noqa: E402
from archnas.nas.searcher import Searcher, load_data  # noqa: E402
from archnas.nas.spaces import space_of  # noqa: E402
from archnas.training.trainer import Trainer  # noqa: E402
from archnas.utils import atomic  # noqa: E402
from archnas.utils.memory import current_bytes, process_peak_bytes  # noqa: E402


def _load_baseline():
    spec = importlib.util.spec_from_file_location("darts_baseline", REPO / "benchmarks" / "darts_baseline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["darts_baseline"] = module
    spec.loader.exec_module(module)
    return module


darts = _load_baseline()

CASES = ("weight_step", "arch_first", "arch_second", "eval_step", "digits_step")
SCRATCH = tempfile.mkdtemp(prefix="bench_supernet_")  # the experiments' folders (nothing is checkpointed)
DARTS_SEARCH_GFLOP = 38.4  # one forward of DARTS's search network at batch 64, 32x32 (quark0/darts)
LR, MOMENTUM, WD = 0.025, 0.9, 3e-4  # DARTS's search and eval optimizer
ALPHA_LR, ALPHA_WD, ALPHA_BETAS = 3e-4, 1e-3, (0.5, 0.999)
MB = 2**20


@dataclass
class Settings:
    device: torch.device
    amp: str  # off | bf16 | fp16 (CUDA only)
    channels_last: bool  # archnas's models in channels_last (CUDA; on CPU the fused cells choose it)
    threads: int

    def autocast(self):
        if self.amp == "off":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class Variant:
    """One timed thing: `step()` runs it once; `model(x)` is its forward, whose FLOPs times
    `flop_factor` are the step's."""

    name: str
    step: Callable[[], None]
    model: nn.Module
    x: Tensor
    flop_factor: int
    threads: int
    times: list[float] = field(default_factory=list)


def batch(n: int, shape: tuple[int, int, int], s: Settings, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g).to(s.device), torch.randint(0, 10, (n,), generator=g).to(s.device)


def sgd(params) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)


def adam(params) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=ALPHA_LR, betas=ALPHA_BETAS, weight_decay=ALPHA_WD)


def in_layout(model: nn.Module, x: Tensor, s: Settings) -> tuple[nn.Module, Tensor]:
    """`--channels-last` (CUDA) for both archnas and the baseline, so both run in the layout a run
    with `trainer.channels_last` uses."""
    if s.channels_last and s.device.type == "cuda":
        return model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return model, x


def loss_of(outputs, y: Tensor, aux_weight: float = 0.0) -> Tensor:
    logits, aux = outputs if isinstance(outputs, tuple) else (outputs, None)
    loss = F.cross_entropy(logits.float(), y)
    if aux is not None and aux_weight:
        loss = loss + aux_weight * F.cross_entropy(aux.float(), y)
    return loss


# -- archnas: the trainers a run builds ---------------------------------------------------------

def run_phase(s: Settings, config: str, algo: str, overrides: list[str], phase: str):
    """A run context and the `phase` ("search" | "eval") of a real experiment in a scratch folder,
    with its PhaseContext open: what `archnas --config <config>` builds before training."""
    tokens = [f"common.device={s.device}", "common.tensorboard=false", "common.checkpoint.enabled=false",
              "common.log_every_steps=0", f"common.results_dir={SCRATCH}", f"nas.algo={algo}", *overrides]
    if s.amp != "off":
        tokens += [f"nas.{phase}.trainer.amp.enabled=true", f"nas.{phase}.trainer.amp.dtype={s.amp}"]
    if s.channels_last:
        tokens.append(f"nas.{phase}.trainer.channels_last=true")
    conf = load_config([find_config_file(config)], parse_override_tokens(tokens, set())[0])
    run = RunContext.create(conf, Path(SCRATCH) / "bench", [], device=s.device)
    experiment = Experiment(run, algorithm_class(algo)(conf))
    phase_obj = (Searcher if phase == "search" else Evaluater)(experiment)
    return phase_obj, run.phase(phase, phase_obj.section)


def search_trainer(s: Settings, size: int, channels: int, cells: int, in_ch: int, fused: bool = True,
                   order: str = "second", hvp: str = "finite_difference") -> ArchTrainer:
    """The ArchTrainer a DARTS search builds (confs/darts_cifar10.yaml's optimizers, grad clipping,
    alpha Adam) for a supernet of this shape, through `space.supernet` / `build_trainer`."""
    torch.manual_seed(0)
    searcher, ctx = run_phase(s, "darts_cifar10", "darts", [
        f"nas.search.model_desc.n_cells={cells}", f"nas.search.model_desc.model_stems.init_node_ch={channels}",
        f"nas.search.trainer.bilevel_order={order}", f"nas.search.trainer.hessian_vector_product={hvp}",
        "dataset.name=synthetic", f"dataset.params={{n_train: 64, n_test: 8, channels: {in_ch}, size: {size}}}",
    ], "search")
    space = space_of(ctx.conf)
    model = space.supernet(DatasetInfo(10, in_ch, (size, size)), searcher.strategy)
    if not fused:
        for cell in model.cells:
            cell.fused = None
    data = load_data(ctx, ctx.conf.loader)
    return searcher.build_trainer(ctx, model, space.supernet_fingerprint(model), data)


def eval_trainer(s: Settings) -> Trainer:
    """The Trainer of the DARTS_V2 eval phase of confs/darts_cifar10.yaml (20 cells of 36
    channels, aux tower 0.4, drop-path, grad clipping), through `Evaluater.build_trainer`."""
    torch.manual_seed(0)
    evaluater, ctx = run_phase(s, "darts_cifar10", "manual", ["nas.eval.final_desc=DARTS_V2"], "eval")
    network = evaluater.network(DatasetInfo(10, 3, (32, 32)))
    spec = InputSpec((3, 32, 32), (0.5,) * 3, (0.25,) * 3)  # what model_best.pt would record; benches write none
    return evaluater.build_trainer(ctx, network.build(), network, spec, [str(i) for i in range(10)], "cifar10")


def baseline_search(ours: Model, s: Settings, size: int, channels: int, cells: int, in_ch: int) -> nn.Module:
    base = darts.SearchNetwork(c=channels, n_classes=10, layers=cells)
    base.stem[0] = nn.Conv2d(in_ch, base.stem[0].out_channels, 3, padding=1, bias=False)
    darts.load_archnas_weights(base, ours)
    return base.to(s.device)


def baseline_eval(ours: Model, s: Settings) -> nn.Module:
    gene = named_genotype("DARTS_V2")
    base = darts.NetworkCIFAR(36, 10, 20, True, list(gene.normal), list(gene.reduce))
    darts.load_archnas_weights(base, ours)
    return base.to(s.device)


# -- the steps -----------------------------------------------------------------------------------

def baseline_weight_step(model: nn.Module, params, x: Tensor, y: Tensor, s: Settings, aux_weight: float = 0.0,
                         clip: float = 5.0) -> Callable[[], None]:
    """The DARTS code's training step: forward, loss, backward, grad clipping (5, as train_search.py
    and train.py), SGD with momentum and weight decay."""
    opt = sgd(params)
    scaler = torch.amp.GradScaler(s.device.type, enabled=s.amp == "fp16")
    params = list(opt.param_groups[0]["params"])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with s.autocast():
            loss = loss_of(model(x), y, aux_weight)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()

    return step


def _with_momentum(opt: torch.optim.SGD, model_params) -> None:
    """Momentum buffers as after some training, so the virtual step reads them as in a search."""
    for p in model_params:
        opt.state[p]["momentum_buffer"] = torch.randn_like(p) * 1e-3


def baseline_arch_step(model, order: BilevelOrder, train, val) -> Callable[[], None]:
    """architect.py: first order is loss.backward() on the val batch; second order unrolls a copy."""
    wopt = sgd(model.weights())
    _with_momentum(wopt, model.weights())
    aopt = adam(model.arch_parameters())

    def step() -> None:  # float32, outside autocast, as archnas's architecture step
        aopt.zero_grad(set_to_none=True)
        if order is BilevelOrder.first:
            loss_of(model(val[0]), val[1]).backward()
        else:
            darts.second_order_arch_grads(model, wopt, train, val)
        aopt.step()

    return step


def archnas_arch_step(trainer: ArchTrainer, train, val) -> Callable[[], None]:
    _with_momentum(trainer.optimizer, trainer.weights)
    return lambda: trainer.arch_optimizer.arch_step(train, val)


def build_case(case: str, s: Settings, check: bool = True, shared: dict | None = None) -> list[Variant]:
    """The baseline first, then archnas's variants, each stepping the code a run executes;
    `check` asserts equal outputs. The search cases share one supernet's weights (from `shared`)."""
    if case == "digits_step":
        x, y = batch(64, (1, 8, 8), s, 1)
        out = []
        for name, fused in (("plain", False), ("fused", True)):
            trainer = search_trainer(s, 8, 8, 5, 1, fused=fused)
            out.append(Variant(name, lambda t=trainer: t.weight_step((x, y)), trainer.model, x, 3, 1))
        return out
    if case == "eval_step":
        trainer = eval_trainer(s)
        ours = trainer.base_model
        base = baseline_eval(ours, s)
        x, y = batch(32, (3, 32, 32), s, 2)
        if check:
            check_equal(ours, base, x, "eval network")
        drop_path = trainer.conf.drop_path_prob  # its value in the last epochs of a run
        ours.drop_path_prob(drop_path)
        base.drop_path_prob = drop_path
        base, xb = in_layout(base, x, s)
        return [Variant("baseline", baseline_weight_step(base, base.parameters(), xb, y, s, trainer.conf.aux_weight), base, xb, 3,
                        s.threads),
                Variant("archnas", lambda: trainer.weight_step((x, y)), trainer.model, trainer.precision.prepare_input(x),
                        3, s.threads)]
    shared = {} if shared is None else shared
    if "search" not in shared:
        trainer = search_trainer(s, 32, 16, 8, 3)
        base = baseline_search(trainer.base_model, s, 32, 16, 8, 3)
        train, val = batch(64, (3, 32, 32), s, 3), batch(64, (3, 32, 32), s, 4)
        if check:
            check_equal(trainer.base_model, base, train[0], "search supernet")
        base, _ = in_layout(base, train[0], s)
        base_train = (in_layout(base, train[0], s)[1], train[1])
        base_val = (in_layout(base, val[0], s)[1], val[1])
        shared["search"] = trainer, base, train, val, base_train, base_val
    trainer, base, train, val, base_train, base_val = shared["search"]
    ours_x = trainer.precision.prepare_input(train[0])
    if case == "weight_step":
        return [Variant("baseline", baseline_weight_step(base, base.weights(), *base_train, s), base, base_train[0], 3,
                        s.threads),
                Variant("archnas", lambda: trainer.weight_step(train), trainer.model, ours_x, 3, s.threads)]
    order = BilevelOrder.first if case == "arch_first" else BilevelOrder.second
    # first order: forward + full backward (as DARTS); second: 2 passes with weight gradients,
    # 2 to the alphas only
    factor = 3 if order is BilevelOrder.first else 10
    ours = search_trainer(s, 32, 16, 8, 3, order=order.value)
    ours.base_model.load_state_dict(trainer.base_model.state_dict())
    variants = [Variant("baseline", baseline_arch_step(base, order, base_train, base_val), base, base_train[0], factor,
                        s.threads),
                Variant("archnas", archnas_arch_step(ours, train, val), ours.model, ours_x, factor, s.threads)]
    if order is BilevelOrder.second:
        exact = search_trainer(s, 32, 16, 8, 3, order="second", hvp="exact")
        exact.base_model.load_state_dict(trainer.base_model.state_dict())
        variants.append(Variant("exact_hvp", archnas_arch_step(exact, train, val), exact.model, ours_x, factor, s.threads))
    return variants


@torch.no_grad()
def check_equal(ours: nn.Module, base: nn.Module, x: Tensor, what: str) -> None:
    """Same outputs from the same weights, in training mode (batch statistics), in float64 on
    copies: float32 rounding differs between layouts (20 cells of BatchNorm amplify it to ~1e-3
    in the logits), float64 shows any difference of math."""
    a, b = copy.deepcopy(ours).double().train(), copy.deepcopy(base).double().train()
    x = x[:8].double()
    out_a, out_b = a(x)[0], b(x)
    out_b = out_b[0] if isinstance(out_b, tuple) else out_b
    err = (out_a - out_b).abs().max().item()
    assert torch.allclose(out_a, out_b, rtol=1e-9, atol=1e-10), f"{what}: archnas and baseline differ by {err}"


def forward_flops(v: Variant, s: Settings) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad(), s.autocast():
        v.model(v.x)
    return counter.get_total_flops()


def matmul_gflops(s: Settings, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=s.device), torch.randn(n, n, device=s.device)
    torch.mm(a, b)
    s.sync()
    start = time.perf_counter()
    for _ in range(3):
        torch.mm(a, b)
    s.sync()
    return 3 * 2 * n**3 / (time.perf_counter() - start) / 1e9


# -- memory in a fresh process -------------------------------------------------------------------

def memory_worker(case: str, variant: str, s: Settings, steps: int) -> dict:
    variants = build_case(case, s, check=False)  # the equality check's forward would set the peak
    v = next(v for v in variants if v.name == variant)
    del variants  # the other variants' models (their weights only: nothing has run)
    torch.set_num_threads(v.threads)
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
    idle = current_bytes(s.device)
    for _ in range(steps):
        v.step()
    s.sync()
    return {"idle": idle, "peak": process_peak_bytes(s.device)}


def measure_memory(case: str, variant: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--memory-worker", f"{case}:{variant}", "--device", args.device,
               "--amp", args.amp, "--threads", str(args.threads), "--memory-steps", str(args.memory_steps)]
    if args.channels_last:
        command.append("--channels-last")
    threads = 1 if case == "digits_step" else args.threads
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if out.returncode:
        raise SystemExit(f"memory of {case}/{variant} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the run -------------------------------------------------------------------------------------

def summarize(variants: dict[str, list[Variant]], flops: dict, memory: dict, matmul: list[float]) -> dict:
    summary = {}
    for case, vs in variants.items():
        rows = {}
        base = statistics.median(vs[0].times)
        for v in vs:
            med = statistics.median(v.times)
            step_flops = v.flop_factor * flops[case][v.name]
            mem = memory.get(case, {}).get(v.name)
            rows[v.name] = {
                "median_s": med, "min_s": min(v.times), "max_s": max(v.times), "times_s": v.times,
                "time_ratio": med / base, "threads": v.threads,
                "forward_gflop": flops[case][v.name] / 1e9, "step_gflop": step_flops / 1e9,
                "gflops_per_s": step_flops / med / 1e9,
            }
            if mem is not None:
                rows[v.name].update({"peak_mb": mem["peak"] / MB, "step_mb": (mem["peak"] - mem["idle"]) / MB})
        for v in vs:
            if "peak_mb" in rows[v.name] and "peak_mb" in rows[vs[0].name]:
                b = rows[vs[0].name]
                rows[v.name]["peak_ratio"] = rows[v.name]["peak_mb"] / b["peak_mb"]
                rows[v.name]["step_mem_ratio"] = rows[v.name]["step_mb"] / b["step_mb"]
        summary[case] = rows
    return {"cases": summary, "matmul_gflops": {"median": statistics.median(matmul), "max": max(matmul),
                                                "all": matmul}}


def print_table(summary: dict) -> None:
    mm = summary["matmul_gflops"]["median"]
    print(f"\n{'case':<12} {'variant':<9} {'median s':>9} {'min':>7} {'max':>7} {'x base':>7} {'GFLOP':>7} "
          f"{'GFLOP/s':>8} {'% mm':>5} {'peak MB':>8} {'x base':>7} {'step MB':>8} {'x base':>7}")
    for case, rows in summary["cases"].items():
        for name, r in rows.items():
            mem = (f"{r['peak_mb']:>8.0f} {r['peak_ratio']:>7.2f} {r['step_mb']:>8.0f} {r['step_mem_ratio']:>7.2f}"
                   if "peak_ratio" in r else "")
            print(f"{case:<12} {name:<9} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['max_s']:>7.3f} "
                  f"{r['time_ratio']:>7.2f} {r['step_gflop']:>7.1f} {r['gflops_per_s']:>8.1f} "
                  f"{100 * r['gflops_per_s'] / mm:>5.1f} {mem}")
    print(f"matmul (2048x2048 float32): {mm:.1f} GFLOP/s median, {summary['matmul_gflops']['max']:.1f} max")
    targets = {("weight_step", "time_ratio"): 0.5, ("arch_second", "time_ratio"): 0.5,
               ("weight_step", "peak_ratio"): 0.6, ("eval_step", "time_ratio"): 0.8}
    print("\ntargets (archnas / baseline):")
    for (case, key), target in targets.items():
        r = summary["cases"].get(case, {}).get("archnas", {})
        if key in r:
            print(f"  {case} {key.replace('_ratio', '')}: {r[key]:.2f}x (target <= {target}x) "
                  f"{'met' if r[key] <= target else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="autocast, CUDA only")
    parser.add_argument("--channels-last", action="store_true",
                        help="archnas's models and inputs in channels_last (CUDA; on CPU the fused cells use it anyway)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (digits_step uses 1, as its config); 1 by default because two "
                             "threads on a 2-core machine that also runs other work wait on each other, "
                             "several times slower than one")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (2 keep the default run near 10 minutes)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (each model once)")
    parser.add_argument("--memory-cases", default="weight_step,eval_step,digits_step",
                        help="cases whose peak memory is measured, or 'all' (the architecture steps add about "
                             "three minutes, most of it the baseline's second-order step)")
    parser.add_argument("--memory-jobs", type=int, default=2,
                        help="memory processes at once (one thread each with --threads 1)")
    parser.add_argument("--memory-steps", type=int, default=1,
                        help="steps per fresh memory process (the first one allocates everything later ones do); "
                             "0: no memory")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "out" / "bench_supernet.json"), metavar="FILE")
    parser.add_argument("--memory-worker", metavar="CASE:VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.amp != "off" and not args.device.startswith("cuda"):
        parser.error("--amp applies on CUDA only (CPU autocast is slower than float32 for these models)")
    s = Settings(torch.device(args.device), args.amp, args.channels_last, args.threads)
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        case, variant = args.memory_worker.split(":")
        print(json.dumps(memory_worker(case, variant, s, args.memory_steps)))
        return
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")

    start = time.perf_counter()
    shared: dict = {}
    variants = {case: build_case(case, s, shared=shared) for case in cases}
    counted: dict[tuple[int, int], int] = {}  # the search cases share models and batches: count once
    for vs in variants.values():
        for v in vs:
            key = (id(v.model), id(v.x))
            if key not in counted:
                counted[key] = forward_flops(v, s)
    flops = {case: {v.name: counted[(id(v.model), id(v.x))] for v in vs} for case, vs in variants.items()}
    if "weight_step" in flops:
        gflop = flops["weight_step"]["baseline"] / 1e9
        assert round(gflop, 1) == DARTS_SEARCH_GFLOP, f"baseline forward is {gflop:.2f} GFLOP, DARTS's is 38.4"
    for case, counts in flops.items():
        assert len(set(counts.values())) == 1, f"{case}: forward FLOPs differ between variants: {counts}"
    print(f"device {s.device}, {args.threads} thread(s), amp {args.amp}; {args.warmup} warm-up + {args.rounds} rounds; "
          f"outputs and FLOPs checked equal", flush=True)
    matmul = []
    for r in range(args.warmup + args.rounds):
        timed = r >= args.warmup
        torch.set_num_threads(args.threads)
        if timed:
            matmul.append(matmul_gflops(s))
        warmed: set[int] = set()
        for case, vs in variants.items():
            for v in vs:
                if not timed and id(v.model) in warmed:
                    continue  # the architecture steps run the weight step's models, warm already
                warmed.add(id(v.model))
                torch.set_num_threads(v.threads)
                s.sync()
                t = time.perf_counter()
                v.step()
                s.sync()
                if timed:
                    v.times.append(time.perf_counter() - t)
        print(f"  round {r + 1}: " + (", ".join(f"{c}/{v.name} {v.times[-1]:.2f}s" for c, vs in variants.items()
                                                 for v in vs) if timed else "warm-up"), flush=True)
    memory: dict[str, dict[str, dict]] = {}
    memory_cases = CASES if args.memory_cases == "all" else [c.strip() for c in args.memory_cases.split(",")]
    if args.memory_steps > 0:
        # after the timing, so no timed step shares the cores; a peak is per process, so several
        # one-thread processes at once measure the same peaks sooner
        jobs = [(case, v.name) for case, vs in variants.items() if case in memory_cases for v in vs]
        with ThreadPoolExecutor(max(1, args.memory_jobs)) as pool:
            for (case, name), mem in zip(jobs, pool.map(lambda job: measure_memory(*job, args), jobs)):
                memory.setdefault(case, {})[name] = mem
                print(f"  memory {case}/{name}: peak {mem['peak'] / MB:.0f} MB", flush=True)
    summary = summarize(variants, flops, memory, matmul)
    print_table(summary)
    elapsed = time.perf_counter() - start
    print(f"\n{elapsed:.0f} s; JSON: {args.json}")
    atomic.write_json(args.json, {
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "memory_worker")},
        "host": platform.node(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "elapsed_s": elapsed, **summary,
    })


if __name__ == "__main__":
    main()
