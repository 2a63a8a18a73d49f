#!/usr/bin/env python
"""Peak memory and step time of the search step of DARTS, PC-DARTS, GDAS and ProxylessNAS at the DARTS search shape.

Each variant builds its supernet and trainer as its search phase does (`space.supernet`,
`Searcher.build_trainer`, with its algorithm's strategy) from confs/<algo>.yaml, at the shape of
the DARTS CIFAR-10 search: batch 64 of 3x32x32 images, 8 cells, 16 initial channels, 4 nodes, the
8 DARTS primitives. It then takes `--steps` full search steps (`ArchTrainer.run_step`: the
architecture step on a val batch from its loader, then the weight step) on synthetic images. PC-DARTS uses batch 256 in its paper; here
every variant uses the same batch so the comparison is of the algorithms, not the batch.

    darts          DARTS with the paper's second-order (unrolled) architecture step
    darts_first    DARTS with a first-order architecture step, the step the other two take
    darts_first_unfused  the same with every candidate computed on its own (no fused cell): the
                   DARTS the PC-DARTS and GDAS papers measured themselves against
    pc_darts       partial channels (k from confs/pc_darts.yaml, 4) and edge normalization
    gdas           one Gumbel-sampled op per edge
    proxyless      ProxylessNAS's binary gates: one drawn path per step, the architecture step's
                   other candidates rerun without autograd in the backward (a space over a
                   module only: `--space`)

`--space` searches a space over a module instead of DARTS cells (`nas.search.space`, e.g.
`{name: proxylessnas}`), every variant on it at the same batch and image size; the cell options
are then unused. ProxylessNAS's claim is the memory of one path against DARTS's of every candidate:

    python scripts/bench_algos.py --variants darts_first,proxyless --space '{name: proxylessnas}'

Every variant runs in a fresh process, because memory a process frees stays in its resident set:
only a new process measures one variant's peak. Reported per variant: the resident set after
building everything (idle), the process's peak resident set (VmHWM, which includes spikes too
short for a sampler; `archnas.utils.memory.process_peak_bytes`, as bench_supernet.py), their difference (what the search steps need), and the median step
time; then ratios against darts, darts_first and darts_first_unfused, all from the same run. Variants run in
interleaved rounds (`--rounds`), so a machine shared with other work slows all of them alike.

    python scripts/bench_algos.py                       # a few minutes on 2 cores
    python scripts/bench_algos.py --rounds 2 --json benchmarks/out/bench_algos.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import archnas.algos  # noqa: E402,F401  (the algorithms, as the archnas command loads them)
from archnas.config import find_config_file, load_config, parse_override_tokens  # noqa: E402
from archnas.context import RunContext  # noqa: E402
from archnas.nas.phase import Experiment  # noqa: E402
from archnas.nas.registry import algorithm_class  # noqa: E402
from archnas.nas.searcher import Searcher, load_data  # noqa: E402
from archnas.nas.spaces import space_of  # noqa: E402
from archnas.utils import atomic  # noqa: E402
from archnas.utils.memory import current_bytes, process_peak_bytes  # noqa: E402

# name: (algorithm, overrides, fused). fused=False runs DARTS cells the straightforward way (every
# candidate on its own, `Cell.fused = None`), which is the DARTS that the PC-DARTS and GDAS papers
# compare against; archnas's default DARTS cell is the fused one (archnas/model/fused_cell.py).
VARIANTS = {
    "darts": ("darts", ["nas.search.trainer.bilevel_order=second"], True),
    "darts_first": ("darts", ["nas.search.trainer.bilevel_order=first"], True),
    "darts_first_unfused": ("darts", ["nas.search.trainer.bilevel_order=first"], False),
    "pc_darts": ("pc_darts", ["nas.search.pc_darts.arch_warmup_epochs=0"], True),
    "gdas": ("gdas", [], True),
    "proxyless": ("proxyless", [], True),
}
MB = 2**20


def worker(variant: str, args: argparse.Namespace) -> dict:
    """One variant in this (fresh) process: the search phase's supernet and trainer, built as a run
    builds them (`space.supernet`, `Searcher.build_trainer`) on synthetic images of the
    DARTS search shape, then `--steps` full training steps on its own loaders."""
    algo, extra, fused = VARIANTS[variant]
    tokens = [
        f"common.num_threads={args.threads}", "common.device=cpu", "common.tensorboard=false", "common.log_level=WARNING",
        "common.checkpoint.enabled=false", f"nas.search.model_desc.n_cells={args.cells}",
        f"nas.search.model_desc.n_nodes={args.nodes}", f"nas.search.model_desc.model_stems.init_node_ch={args.channels}",
        f"nas.search.loader.train_batch={args.batch}", "dataset.name=synthetic",
        f"dataset.params={{n_train: {4 * args.batch}, n_test: 8, channels: 3, size: {args.size}}}", *extra,
        *([f"nas.search.space={args.space}"] if args.space else []),
    ]
    overrides, _ = parse_override_tokens(tokens, set())
    conf = load_config([find_config_file(algo)], overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunContext.create(conf, Path(tmp), [])
        searcher = Searcher(Experiment(run, algorithm_class(algo)(conf)))
        ctx = run.phase("search", conf.nas.search)
        data = load_data(ctx, conf.nas.search.loader)
        space = space_of(conf.nas.search)
        model = space.supernet(data.info, searcher.strategy)
        if not fused:
            for cell in model.cells:
                cell.fused = None
        trainer = searcher.build_trainer(ctx, model, space.supernet_fingerprint(model), data)
        batches = data.loader("train", training=True).epoch(0)
        train = next(batches)
        idle = current_bytes(ctx.device)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            trainer.run_step(train)
            times.append(time.perf_counter() - start)
        ctx.close()
    peak = process_peak_bytes(torch.device("cpu"))
    return {
        "variant": variant, "weights": sum(p.numel() for p in model.weights()),
        "arch_params": sum(p.numel() for p in model.arch_params()),
        "idle_rss": idle, "peak_rss": peak, "step_rss": peak - idle, "step_times": times,
    }


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", variant, "--steps", str(args.steps), "--batch", str(args.batch),
               "--size", str(args.size), "--cells", str(args.cells), "--nodes", str(args.nodes),
               "--channels", str(args.channels), "--threads", str(args.threads), "--space", args.space]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if out.returncode:
        raise SystemExit(f"{variant} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are reported")
    parser.add_argument("--steps", type=int, default=2, help="search steps per variant and round (the first allocates)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--channels", type=int, default=16, help="initial node channels")
    parser.add_argument("--space", default="", help="a space over a module (nas.search.space, YAML), e.g. "
                        "'{name: proxylessnas}'; empty: DARTS cells")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (one: a busy 2-core box measures contention otherwise)")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--worker", metavar="VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.space and "darts_first_unfused" in variants:
        parser.error("darts_first_unfused unfuses DARTS cells; leave it out with --space")
    if not args.space and "proxyless" in variants:
        parser.error("proxyless searches a space over a module: give --space (e.g. '{name: proxylessnas}')")
    shape = f"space {args.space}" if args.space else f"{args.cells} cells, C={args.channels}, {args.nodes} nodes"
    print(f"search step at batch {args.batch}, {args.size}x{args.size}x3, {shape}; {args.steps} steps per variant, "
          f"{args.rounds} round(s), {args.threads} thread(s)")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            res = run_variant(v, args)
            runs[v].append(res)
            print(f"  round {r + 1} {v}: peak {res['peak_rss'] / MB:.0f} MB, steps {[round(t, 2) for t in res['step_times']]} s",
                  flush=True)

    summary = {}
    for v, results in runs.items():
        summary[v] = {
            "weights": results[0]["weights"], "arch_params": results[0]["arch_params"],
            "idle_mb": statistics.median(r["idle_rss"] for r in results) / MB,
            "peak_mb": statistics.median(r["peak_rss"] for r in results) / MB,
            "step_mb": statistics.median(r["step_rss"] for r in results) / MB,
            # the first step allocates; the steady step time is the median of the later ones
            "step_s": statistics.median(t for r in results for t in (r["step_times"][1:] or r["step_times"])),
        }
    print(f"\n{'variant':<20} {'weights':>10} {'idle MB':>8} {'peak MB':>8} {'step MB':>8} {'step s':>8}")
    for v, s in summary.items():
        print(f"{v:<20} {s['weights']:>10,} {s['idle_mb']:>8.0f} {s['peak_mb']:>8.0f} {s['step_mb']:>8.0f} {s['step_s']:>8.2f}")
    for base in ("darts", "darts_first", "darts_first_unfused"):
        if base not in summary:
            continue
        print(f"\nratios to {base} (peak RSS, step memory above idle, step time):")
        for v, s in summary.items():
            if v != base:
                b = summary[base]
                print(f"  {v:<20} peak {s['peak_mb'] / b['peak_mb']:.2f}x, step memory {s['step_mb'] / b['step_mb']:.2f}x, "
                      f"time {s['step_s'] / b['step_s']:.2f}x")
    if args.json:
        atomic.write_json(args.json, {
            "args": {k: v for k, v in vars(args).items() if k not in ("json", "worker")},
            "host": platform.node(), "torch": torch.__version__, "runs": runs, "summary": summary,
        })


if __name__ == "__main__":
    main()
