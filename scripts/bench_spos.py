#!/usr/bin/env python
"""What single-path supernet training and cost scoring cost, measured on the code a spos run executes.

1. Step time of the uniform-sampling supernet against the plain network of the same path. The
   supernet and its trainer are built as the pretrain phase builds them (`Pretrain.build_trainer`,
   from confs/spos_nb201.yaml at NAS-Bench-201's reference size C=16, N=5, batch 64 of synthetic
   3x32x32 images); each measured step is its architecture optimizer's `step` (which sets the step's
   architecture) and `Trainer.weight_step`. The baseline is `freeze()` of the supernet at that
   same architecture, trained by a Trainer on the same settings (`weight_step`). The two
   alternate step by step over `--archs` sampled architectures, so load on the machine slows
   both alike; the ratio of their median step times is reported. Target: at most 1.15x.
2. Scoring candidates' multiply-adds from the per-choice table (`SpaceCosts.model("macs").cost`,
   what the search calls per candidate), for 10,000 random architectures. Target: under 1 s.

    python scripts/bench_spos.py                  # about a minute on 2 cores
    python scripts/bench_spos.py --threads 2 --json benchmarks/out/bench_spos.json
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import archnas.algos  # noqa: E402,F401  (the algorithms, as the archnas command loads them)
from archnas.config import load_config, parse_override_tokens  # noqa: E402
from archnas.context import RunContext  # noqa: E402
from archnas.latency import SpaceCosts  # noqa: E402
from archnas.latency.table import random_rows, row_to_arch  # noqa: E402
from archnas.nas.phase import Experiment  # noqa: E402
from archnas.nas.pretrain import Pretrain  # noqa: E402
from archnas.nas.registry import algorithm_class  # noqa: E402
from archnas.nas.searcher import load_data  # noqa: E402
from archnas.nas.spaces import module_space  # noqa: E402
from archnas.space import freeze  # noqa: E402
from archnas.training.trainer import Trainer  # noqa: E402
from archnas.utils import atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def step_times(args: argparse.Namespace) -> dict:
    tokens = [f"common.num_threads={args.threads}", "common.device=cpu", "common.tensorboard=false",
              "common.log_level=WARNING", "common.checkpoint.enabled=false",
              f"nas.search.space={{name: nb201, C: {args.channels}, N: {args.cells_per_stage}}}",
              f"nas.search.loader.train_batch={args.batch}", "dataset.name=synthetic",
              f"dataset.params={{n_train: {4 * args.batch}, n_test: 8, channels: 3, size: {args.size}}}"]
    overrides, _ = parse_override_tokens(tokens, set())
    conf = load_config([str(REPO / "confs" / "spos_nb201.yaml")], overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunContext.create(conf, Path(tmp), [])
        phase = Pretrain(Experiment(run, algorithm_class("spos")(conf)))
        ctx = run.phase("pretrain", conf.nas.search)
        data = load_data(ctx, conf.nas.search.loader)
        space = module_space(conf.nas.search.space)
        supernet = space.supernet(data.info, phase.strategy)
        trainer = phase.build_trainer(ctx, supernet, space.fingerprint(), data)
        batch = next(data.loader("train", training=True).epoch(0))
        rounds = []
        for a in range(args.archs):
            trainer.arch_optimizer.step(batch, trainer.val_stream.next)  # the pretrain's path of this step
            arch = supernet.architecture
            plain = Trainer(conf.nas.search.trainer, freeze(supernet, arch), ctx)
            timed: dict[str, list[float]] = {"supernet": [], "frozen": []}
            for i in range(args.warmup + args.steps):
                for name, t in (("supernet", trainer), ("frozen", plain)):
                    start = time.perf_counter()
                    t.weight_step(batch)
                    if i >= args.warmup:
                        timed[name].append(time.perf_counter() - start)
            trainer.global_step += 1  # the next architecture is the next step's
            rounds.append({"arch": arch, **timed})
            print(f"  arch {a + 1}/{args.archs}: supernet {statistics.median(timed['supernet']):.3f}s, frozen "
                  f"{statistics.median(timed['frozen']):.3f}s per step", flush=True)
        ctx.close()
    supernet_s = statistics.median(t for r in rounds for t in r["supernet"])
    frozen_s = statistics.median(t for r in rounds for t in r["frozen"])
    return {"rounds": rounds, "supernet_step_s": supernet_s, "frozen_step_s": frozen_s, "ratio": supernet_s / frozen_s,
            "specs": supernet.specs}


def scoring_time(specs, args: argparse.Namespace) -> dict:
    space = module_space({"name": "nb201", "C": args.channels, "N": args.cells_per_stage})
    from archnas.descs.dataset_info import DatasetInfo

    info = DatasetInfo(10, 3, (args.size, args.size))
    costs = SpaceCosts(specs, lambda arch: space.network(arch, info), [3, args.size, args.size], held_out=5)
    start = time.perf_counter()
    macs = costs.model("macs")
    build_s = time.perf_counter() - start
    archs = [row_to_arch(specs, row) for row in random_rows(specs, args.candidates, random.Random(0))]
    start = time.perf_counter()
    values = [macs.cost(arch) for arch in archs]
    score_s = time.perf_counter() - start
    return {"table_build_s": build_s, "candidates": len(archs), "score_s": score_s, "exact": macs.exact,
            "mean_macs": statistics.mean(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=int, default=4, help="sampled architectures to compare on")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per architecture and network")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocation)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--channels", type=int, default=16, help="NAS-Bench-201's C")
    parser.add_argument("--cells-per-stage", type=int, default=5, help="NAS-Bench-201's N")
    parser.add_argument("--candidates", type=int, default=10_000, help="architectures whose MACs are scored")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"NAS-Bench-201 C={args.channels} N={args.cells_per_stage}, batch {args.batch} of 3x{args.size}x{args.size}, "
          f"{args.threads} thread(s); {args.archs} architectures x {args.steps} steps (after {args.warmup} warm-up)")
    steps = step_times(args)
    print(f"uniform-sampling supernet step {steps['supernet_step_s']:.3f}s, freeze() of the same path "
          f"{steps['frozen_step_s']:.3f}s: ratio {steps['ratio']:.3f}x (target <= 1.15x)")
    scoring = scoring_time(steps.pop("specs"), args)
    print(f"MACs of {scoring['candidates']:,} candidates from the per-choice table: {scoring['score_s']:.3f}s "
          f"(target < 1 s; the table itself took {scoring['table_build_s']:.1f}s to build, exact: {scoring['exact']})")
    if args.json:
        atomic.write_json(args.json, {"args": vars(args), "host": platform.node(), "torch": torch.__version__,
                                      "steps": steps, "scoring": scoring})


if __name__ == "__main__":
    main()
