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
import resource
import statistics
import subprocess
import sys
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

from archnas.config.schema import BilevelOrder  # noqa: E402
from archnas.config.schema.model_desc import ModelDescConf, ModelStemsConf  # noqa: E402
from archnas.descs import DatasetInfo, named_genotype  # noqa: E402
from archnas.model import ModelDescBuilder, genotype_to_desc  # noqa: E402
from archnas.model import Model  # noqa: E402
from archnas.nas.bilevel import BilevelOptimizer  # noqa: E402
from archnas.utils import atomic  # noqa: E402
from archnas.utils.memory import current_rss  # noqa: E402


def _load_baseline():
    spec = importlib.util.spec_from_file_location("darts_baseline", REPO / "benchmarks" / "darts_baseline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["darts_baseline"] = module
    spec.loader.exec_module(module)
    return module


darts = _load_baseline()

CASES = ("weight_step", "arch_first", "arch_second", "eval_step", "digits_step")
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


# -- the models ----------------------------------------------------------------------------------

def search_models(s: Settings, size: int, channels: int, cells: int, in_ch: int, fused: bool = True):
    """The archnas supernet and the baseline with the same weights."""
    torch.manual_seed(0)
    conf = ModelDescConf(n_cells=cells, model_stems=ModelStemsConf(init_node_ch=channels))
    ours = Model(ModelDescBuilder().build(conf, DatasetInfo(10, in_ch, (size, size))), droppath=False, affine=False)
    if not fused:
        for cell in ours.cells:
            cell.fused = None
    base = darts.SearchNetwork(c=channels, n_classes=10, layers=cells)
    base.stem[0] = nn.Conv2d(in_ch, base.stem[0].out_channels, 3, padding=1, bias=False)
    darts.load_archnas_weights(base, ours)
    return ours.to(s.device), base.to(s.device)


def eval_models(s: Settings):
    torch.manual_seed(0)
    conf = ModelDescConf(n_cells=20, aux_weight=0.4, model_stems=ModelStemsConf(init_node_ch=36))
    ours = Model(genotype_to_desc(named_genotype("DARTS_V2"), conf, DatasetInfo(10, 3, (32, 32))), droppath=True,
                 affine=True)
    gene = named_genotype("DARTS_V2")
    base = darts.NetworkCIFAR(36, 10, 20, True, _genes(gene.normal), _genes(gene.reduce))
    darts.load_archnas_weights(base, ours)
    return ours.to(s.device), base.to(s.device)


def _genes(cells) -> list[tuple[str, int]]:
    return [(op, i) for op, i in cells]


# -- the steps -----------------------------------------------------------------------------------

def weight_step(model: nn.Module, params, x: Tensor, y: Tensor, s: Settings, aux_weight: float = 0.0,
                clip: float | None = None) -> Callable[[], None]:
    opt = sgd(params)
    scaler = torch.amp.GradScaler(s.device.type, enabled=s.amp == "fp16")
    params = list(opt.param_groups[0]["params"])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with s.autocast():
            loss = loss_of(model(x), y, aux_weight)
        scaler.scale(loss).backward()
        if clip is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()

    return step


def _with_momentum(opt: torch.optim.SGD, model_params) -> None:
    """Momentum buffers as after some training, so the virtual step reads them as in a search."""
    for p in model_params:
        opt.state[p]["momentum_buffer"] = torch.randn_like(p) * 1e-3


def ours_arch_step(model: Model, order: BilevelOrder, train, val, s: Settings) -> Callable[[], None]:
    wopt = sgd(model.weights())
    _with_momentum(wopt, model.weights())
    bilevel = BilevelOptimizer(model, wopt, adam(model.arch_params()), lambda out, y: loss_of(out, y), order)

    def step() -> None:  # float32, outside autocast, as a run's architecture step
        bilevel.step(train, val)

    return step


def base_arch_step(model, order: BilevelOrder, train, val, s: Settings) -> Callable[[], None]:
    wopt = sgd(model.weights())
    _with_momentum(wopt, model.weights())
    aopt = adam(model.arch_parameters())

    def step() -> None:
        aopt.zero_grad(set_to_none=True)
        if order is BilevelOrder.first:  # architect.py _backward_step: loss.backward()
            loss_of(model(val[0]), val[1]).backward()
        else:
            darts.second_order_arch_grads(model, wopt, train, val)
        aopt.step()

    return step


def build_case(case: str, s: Settings, check: bool = True, shared: dict | None = None) -> list[Variant]:
    """The baseline first, then archnas's variants; `check` asserts equal outputs. The search
    cases use one pair of supernets, built and checked once, from `shared` when given."""
    if case == "digits_step":
        x, y = batch(64, (1, 8, 8), s, 1)
        out = []
        for name, fused in (("plain", False), ("fused", True)):
            ours, _ = search_models(s, 8, 8, 5, 1, fused=fused)
            ours, xo = in_layout(ours, x, s)
            out.append(Variant(name, weight_step(ours, ours.weights(), xo, y, s), ours, xo, 3, 1))
        return out
    if case == "eval_step":
        ours, base = eval_models(s)
        x, y = batch(32, (3, 32, 32), s, 2)
        if check:
            check_equal(ours, base, x, "eval network")
        ours.drop_path_prob(0.2)
        base.drop_path_prob = 0.2
        ours, xo = in_layout(ours, x, s)
        base, x = in_layout(base, x, s)
        return [Variant("baseline", weight_step(base, base.parameters(), x, y, s, 0.4, 5.0), base, x, 3,
                        s.threads),
                Variant("archnas", weight_step(ours, ours.parameters(), xo, y, s, 0.4, 5.0), ours, xo, 3,
                        s.threads)]
    shared = {} if shared is None else shared
    if "search" not in shared:
        ours, base = search_models(s, 32, 16, 8, 3)
        train, val = batch(64, (3, 32, 32), s, 3), batch(64, (3, 32, 32), s, 4)
        if check:
            check_equal(ours, base, train[0], "search supernet")
        ours, xo = in_layout(ours, train[0], s)
        base, _ = in_layout(base, train[0], s)
        train, val = (xo, train[1]), (in_layout(ours, val[0], s)[1], val[1])
        shared["search"] = ours, base, train, val, train, val
    ours, base, train, val, train_o, val_o = shared["search"]
    xo = train_o[0]
    if case == "weight_step":
        steps = (weight_step(base, base.weights(), *train, s), weight_step(ours, ours.weights(), *train_o, s))
        factor = 3
    else:
        order = BilevelOrder.first if case == "arch_first" else BilevelOrder.second
        steps = (base_arch_step(base, order, train, val, s), ours_arch_step(ours, order, train_o, val_o, s))
        # first order: forward + full backward (as DARTS); second: 2 passes with weight gradients,
        # 2 to the alphas only
        factor = 3 if order is BilevelOrder.first else 10
    return [Variant("baseline", steps[0], base, train[0], factor, s.threads),
            Variant("archnas", steps[1], ours, xo, factor, s.threads)]


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
    del variants  # the other variant's model (its weights only: nothing has run)
    torch.set_num_threads(v.threads)
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
        idle = torch.cuda.memory_allocated(s.device)
    else:
        idle = current_rss()
    for _ in range(steps):
        v.step()
    s.sync()
    if s.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(s.device)
    else:
        peak = peak_rss()
    return {"idle": idle, "peak": peak}


def peak_rss() -> int:
    """This process's peak resident set since its exec (VmHWM). Not `ru_maxrss`: Linux carries
    the parent's peak over fork and exec into it, and the parent holds every model."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: an upper bound


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
