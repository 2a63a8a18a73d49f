#!/usr/bin/env python
"""What in-place distillation in the pretrain (nas.search.distill) does to the subnets it trains:
the mean inherited accuracy of random subnets, after BatchNorm recalibration, with and without it.

Two spos runs of confs/spos_mobilenet.yaml (its MobileNet space, digits) through the archnas
command, identical but for `nas.search.distill.enabled`: a short pretrain, then the random
sampler scores `--archs` random architectures of the space on the weights they inherit (each after
BatchNorm recalibration, on the search's val split), which is what spos's search does. The random
sampler draws from the seed alone, so both runs score the same architectures. Printed: both means,
their ratio (distilled / plain), and how many architectures the distilled supernet scores higher.

    python scripts/bench_distill.py                       # about 2 minutes on 2 cores
    python scripts/bench_distill.py --epochs 100 --archs 20 --json benchmarks/out/bench_distill.json

A distilled step runs two forwards and backwards (the largest subnet and the sampled one), so at
equal epochs it costs more; the pretrain times of both runs are printed too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def scores(results: Path, args: argparse.Namespace, distill: bool) -> tuple[dict[str, float], float]:
    """Inherited val top-1 of every scored architecture, by architecture (pareto.csv of the search),
    and the pretrain's time in seconds (its pretrain.json)."""
    cmd = [sys.executable, "-m", "archnas", "--config", str(REPO / "confs" / "spos_mobilenet.yaml"), "--no-eval",
           "--exp-name", "distill" if distill else "plain", f"common.results_dir={results}",
           f"common.seed={args.seed}", "common.tensorboard=false", f"nas.search.trainer.epochs={args.epochs}",
           "nas.search.cost.max_macs=null", "nas.search.spos.strategy=random",
           f"nas.search.spos.random={{n_archs: {args.archs}, per_generation: {args.archs}}}",
           f"nas.search.distill.enabled={str(distill).lower()}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    exp = results / ("distill" if distill else "plain")
    with open(exp / "search" / "pareto.csv", newline="") as f:
        accuracy = {row["arch"]: float(row["accuracy"]) for row in csv.DictReader(f)}
    return accuracy, json.loads((exp / "pretrain" / "pretrain.json").read_text())["metrics"]["pretrain_time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="pretrain epochs of each run")
    parser.add_argument("--archs", type=int, default=20, help="random architectures scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (plain, plain_s), (distilled, distilled_s) = scores(Path(tmp), args, False), scores(Path(tmp), args, True)
    if set(plain) != set(distilled):
        raise SystemExit("the two runs scored different architectures")
    mean_plain, mean_distilled = statistics.mean(plain.values()), statistics.mean(distilled.values())
    wins = sum(distilled[a] > plain[a] for a in plain)
    out = {"epochs": args.epochs, "archs": len(plain), "seed": args.seed, "mean_top1_plain": mean_plain,
           "mean_top1_distilled": mean_distilled, "ratio": mean_distilled / mean_plain, "distilled_higher": wins,
           "pretrain_s_plain": plain_s, "pretrain_s_distilled": distilled_s}
    print(f"mean inherited val top-1 of {len(plain)} random subnets after {args.epochs} pretrain epochs "
          f"(BN recalibrated): plain {mean_plain:.2%}, distilled {mean_distilled:.2%}, ratio "
          f"{mean_distilled / mean_plain:.3f}; the distilled supernet scores higher on {wins} of {len(plain)}; "
          f"pretrain time plain {plain_s:.0f}s, distilled {distilled_s:.0f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
