#!/usr/bin/env python
"""Does scoring many architectures by a zero-cost proxy stream, or does memory grow with their
number? Peak resident memory of scoring `--archs` random NAS-Bench-201 architectures against
scoring one, each in a fresh process, through the code the `zero_cost` search runs (the random
sampler, the selection loop and `ProxyScores`: build, score, drop each network).

    python scripts/bench_zero_cost.py                          # 1,000 archs, snip, a batch of 64
    python scripts/bench_zero_cost.py --proxy naswot --archs 200 --json benchmarks/out/bench_zero_cost.json

The space and images are confs/zero_cost_nb201.yaml's (NB201 C=16, N=1 on 8x8 digits; `--C`,
`--N` change the macro); the batch is `--batch` random images at that shape. Peak memory is the
process's peak resident set (`archnas.utils.memory.process_peak_bytes`), so each count runs in a
process of its own; printed: both peaks, their ratio (the acceptance bound is 2x) and the time
per architecture.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def score(args: argparse.Namespace) -> dict:
    """In the child: score `args.archs` architectures and report the process's peak memory."""
    import torch

    import archnas.algos  # noqa: F401  (registers the algorithms' config sections: nas.search.zero_cost)
    from archnas.config import load_config
    from archnas.nas.samplers import RandomSampling
    from archnas.nas.selection import select
    from archnas.nas.spaces import space_of
    from archnas.nas.zero_cost import ProxyInputs, ProxyScores
    from archnas.stats import dataset_info
    from archnas.utils.memory import process_peak_bytes

    torch.set_num_threads(1)
    conf = load_config([REPO / "confs" / "zero_cost_nb201.yaml"])
    conf.nas.search.space = {"name": "nb201", "C": args.C, "N": args.N}
    info = dataset_info(conf.dataset, conf.common.cache_dir)
    space = space_of(conf.nas.search)
    genome = space.genome(info)
    g = torch.Generator().manual_seed(0)
    shape = [info.channels, *info.image_size]
    batch = (torch.randn(args.batch, *shape, generator=g), torch.randint(info.n_classes, (args.batch,), generator=g))
    scores = ProxyScores(args.proxy, lambda row: space.network(genome.decode(row), info), ProxyInputs([batch], shape),
                         torch.device("cpu"), 0)
    sampler = RandomSampling(list(genome.counts), args.archs, 100, 0, lambda row: True)
    start = time.perf_counter()
    select(sampler, scores, None, None)
    seconds = time.perf_counter() - start
    return {"archs": len(sampler.scored), "peak_bytes": process_peak_bytes(torch.device("cpu")), "seconds": seconds}


def child(args: argparse.Namespace, archs: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--archs", str(archs), "--proxy", args.proxy, "--batch",
           str(args.batch), "--C", str(args.C), "--N", str(args.N)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=int, default=1000)
    parser.add_argument("--proxy", default="snip")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--N", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(score(args)))
        return
    one, many = child(args, 1), child(args, args.archs)
    ratio = many["peak_bytes"] / one["peak_bytes"]
    result = {"proxy": args.proxy, "batch": args.batch, "space": {"name": "nb201", "C": args.C, "N": args.N},
              "one": one, "many": many, "peak_ratio": ratio, "seconds_per_arch": many["seconds"] / many["archs"]}
    print(f"{args.proxy} on a batch of {args.batch}, NB201 C={args.C} N={args.N}: peak RSS scoring 1 architecture "
          f"{one['peak_bytes'] / 2**20:.1f} MiB, {many['archs']} architectures {many['peak_bytes'] / 2**20:.1f} MiB: "
          f"ratio {ratio:.3f} (bound 2); {result['seconds_per_arch'] * 1000:.0f} ms per architecture")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
