#!/usr/bin/env python
"""The checks of `scripts/gpu_check.sh`, one per call: `python scripts/gpu_check.py CHECK --device D`.

Each prints lines of detail and, last, `PASS <check>: <summary>` or `FAIL <check>: <why>`, and
exits 0 or 1. On `--device cpu` every check runs the same code paths at CPU speed (AMP and
channels_last do not take effect there, nccl is gloo), as a rehearsal of the GPU run.

    eval      the eval phase of DARTS_V2 on the device (`--no-search nas.eval.final_desc=DARTS_V2`)
    amp       short searches under fp16 and bf16 autocast, channels_last, deterministic mode;
              host syncs per training step (CUDA: torch.cuda.set_sync_debug_mode)
    hvp       the finite-difference Hessian-vector product of the second-order step against an
              exact double-backward one in float64, with TF32 allowed (the code turns it off
              around the differences) and, for comparison, with that turned off
    ddp       a 1-process torchrun search with channels_last (nccl on CUDA): no "Grad strides do
              not match bucket view strides" warning, alphas finite
    bench     scripts/bench_supernet.py on the device: supernet step times and ratios
    resume    SIGTERM in the middle of a search, rerun: the same final architecture and eval
              weights as an uninterrupted run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # test_gpu_paths: the TF32 check's small supernet

MAIN = [sys.executable, str(REPO / "scripts" / "main.py")]
# The main job shrunk to seconds: 3 cells of 8 channels, a few hundred digits, one epoch each;
# second order, the step with the most to check on a GPU (the main job searches first order).
TINY = ["--config", str(REPO / "confs" / "darts.yaml"), "nas.search.trainer.bilevel_order=second",
        "common.tensorboard=false", "dataset.limit_train=400",
        "dataset.limit_test=200", "nas.search.model_desc.n_cells=3", "nas.search.model_desc.n_nodes=2",
        "nas.search.trainer.epochs=1", "nas.eval.model_desc.n_cells=3", "nas.eval.trainer.epochs=1"]


def run(command: list[str], timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def finished(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise CheckFailed(f"{what} exited with {result.returncode}:\n{tail}")


class CheckFailed(Exception):
    pass


def check_eval(device: str, tmp: Path) -> str:
    result = run([*MAIN, *TINY, f"common.device={device}", f"common.results_dir={tmp}", "--exp-name", "eval",
                  "--no-search", "nas.eval.final_desc=DARTS_V2", "dataset.limit_train=0", "nas.eval.trainer.epochs=3"])
    finished(result, "the eval phase")
    metrics = json.loads((tmp / "eval" / "eval" / "metrics.json").read_text())
    if not 0.2 < metrics["test_top1"] <= 1:
        raise CheckFailed(f"test accuracy {metrics['test_top1']:.2%} after three epochs of DARTS_V2 on digits")
    return f"DARTS_V2 eval on {device}: test top-1 {metrics['test_top1']:.2%}, {metrics['macs']:,} MACs counted"


def _syncs_per_step(device: str, tmp: Path, dtype: str) -> float:
    """Host syncs per training step of a second-order search, from two runs of 4 and 8 steps
    per epoch (the difference leaves out what runs once per epoch)."""
    from archnas.cli import main as archnas_main

    counts = {}
    for steps in (4, 8):
        overrides = [*TINY, f"common.device={device}", f"common.results_dir={tmp / 'syncs'}", "--exp-name",
                     f"{dtype}_{steps}", "--no-eval", "nas.search.loader.train_batch=20",
                     f"dataset.limit_train={steps * 40}", "common.checkpoint.enabled=false", "common.log_every_steps=0",
                     "nas.search.trainer.validation.freq=100", "nas.search.trainer.amp.enabled=true",
                     f"nas.search.trainer.amp.dtype={dtype}", "nas.search.trainer.channels_last=true"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.startswith("cuda"):
                torch.cuda.set_sync_debug_mode("warn")
            try:
                code = archnas_main(overrides)
            finally:
                if device.startswith("cuda"):
                    torch.cuda.set_sync_debug_mode("default")
        if code:
            raise CheckFailed(f"the {dtype} search for the sync count exited with {code}")
        counts[steps] = sum("synchroniz" in str(w.message) for w in caught)
    return (counts[8] - counts[4]) / 4


def check_amp(device: str, tmp: Path) -> str:
    out = []
    for dtype in ("fp16", "bf16"):
        result = run([*MAIN, *TINY, f"common.device={device}", f"common.results_dir={tmp}", "--exp-name", dtype,
                      "common.deterministic=true", "nas.search.trainer.amp.enabled=true",
                      f"nas.search.trainer.amp.dtype={dtype}", "nas.search.trainer.channels_last=true",
                      "nas.eval.trainer.amp.enabled=true", f"nas.eval.trainer.amp.dtype={dtype}",
                      "nas.eval.trainer.channels_last=true"])
        finished(result, f"the {dtype} search and eval")
        records = [json.loads(line) for line in (tmp / dtype / "search" / "metrics.jsonl").read_text().splitlines()]
        losses = [r["train_loss"] for r in records] + [r["arch_val_loss"] for r in records if "arch_val_loss" in r]
        if not all(map(lambda v: v == v and abs(v) < 1e4, losses)):
            raise CheckFailed(f"{dtype}: non-finite losses {losses}")
        test = json.loads((tmp / dtype / "eval" / "metrics.json").read_text())["test_top1"]
        out.append(f"{dtype} train loss {records[-1]['train_loss']:.3f}, test top-1 {test:.2%}")
        if device.startswith("cuda"):
            syncs = _syncs_per_step(device, tmp, dtype)
            out.append(f"{dtype} {syncs:.1f} host syncs per step")
            if syncs > 2:
                raise CheckFailed(f"{dtype}: {syncs:.1f} host syncs per training step (at most 2 expected)")
    return "; ".join(out)


def check_hvp(device: str, tmp: Path) -> str:
    import contextlib

    import test_gpu_paths as t

    from archnas.nas import bilevel as bilevel_module

    reference = t._reference_hvp()

    def error(full_precision: bool) -> float:
        bilevel, vector, train, buffers = t._hvp(torch.float32, device)
        saved = bilevel_module.ieee_float32
        if not full_precision:
            bilevel_module.ieee_float32 = contextlib.nullcontext
        try:
            with t.tf32_allowed():
                fd = bilevel._hessian_vector_product(vector, train, buffers)
        finally:
            bilevel_module.ieee_float32 = saved
        return t._relative_hvp_error([g.cpu() for g in fd], reference)

    # On CUDA the convolutions are cuDNN's (real TF32); on CPU the test's emulation rounds them.
    fixed, unguarded = error(True), error(False)
    if fixed > 0.02:
        raise CheckFailed(f"finite differences {fixed:.2%} off an exact product with TF32 allowed")
    return f"HVP error with TF32 allowed: {fixed:.2%} (TF32 off around the differences), {unguarded:.2%} without that"


def check_ddp(device: str, tmp: Path) -> str:
    result = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29561",
                  str(REPO / "scripts" / "main.py"), *TINY, f"common.device={device}", f"common.results_dir={tmp}",
                  "--exp-name", "ddp", "--no-eval", "nas.search.trainer.channels_last=true",
                  "nas.search.trainer.bilevel_order=first"], env={"PYTHONWARNINGS": "always"})
    finished(result, "torchrun")
    if "Grad strides do not match" in result.stderr:
        raise CheckFailed("DDP warned that gradient strides do not match its buckets (channels_last after wrapping)")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    return f"torchrun 1 process ({backend}), channels_last: finished, no stride warning"


def check_bench(device: str, tmp: Path) -> str:
    out = tmp / "bench.json"
    if device.startswith("cuda"):
        args = ["--cases", "weight_step,arch_first,arch_second,eval_step", "--rounds", "5", "--warmup", "2",
                "--memory-cases", "weight_step,eval_step"]
    else:  # the rehearsal: the same script, its smallest case
        args = ["--cases", "digits_step", "--rounds", "2", "--memory-steps", "0"]
    result = run([sys.executable, str(REPO / "scripts" / "bench_supernet.py"), "--device", device, *args,
                  "--json", str(out)], timeout=280)
    finished(result, "bench_supernet.py")
    print("\n".join(line for line in result.stdout.splitlines() if re.match(r"^(case|\w+_step|arch_\w+|matmul)", line)))
    cases = json.loads(out.read_text())["cases"]
    return ", ".join(f"{case}/{name} {row['median_s'] * 1e3:.1f} ms ({row['time_ratio']:.2f}x)"
                     for case, rows in cases.items() for name, row in rows.items())


def check_resume(device: str, tmp: Path) -> str:
    common = [*MAIN, *TINY, f"common.device={device}", f"common.results_dir={tmp}", "common.deterministic=true",
              "common.log_every_steps=1", "nas.search.loader.train_batch=20"]
    finished(run([*common, "--exp-name", "straight"]), "the uninterrupted run")
    child = subprocess.Popen([*common, "--exp-name", "killed"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=REPO)
    for line in child.stdout:
        if re.search(r"search epoch 1/1: step 3/\d+", line):
            child.send_signal(signal.SIGTERM)
            break
    child.communicate(timeout=240)
    if child.returncode != 128 + signal.SIGTERM:
        raise CheckFailed(f"SIGTERM mid-search: exit code {child.returncode}, expected 143")
    finished(run([*common, "--exp-name", "killed"]), "the resumed run")
    a, b = (tmp / name for name in ("straight", "killed"))
    if (a / "search" / "final_model_desc.yaml").read_text() != (b / "search" / "final_model_desc.yaml").read_text():
        raise CheckFailed("the resumed search found another architecture")
    wa, wb = (torch.load(p / "eval" / "model_last.pt", map_location="cpu", weights_only=True) for p in (a, b))
    same = all(torch.equal(x, y) for x, y in zip(wa["state_dict"].values(), wb["state_dict"].values()))
    if not same:
        raise CheckFailed("eval weights differ after the resume")
    return "SIGTERM mid-search, rerun: same architecture, bit-identical eval weights"


CHECKS = {"eval": check_eval, "amp": check_amp, "hvp": check_hvp, "ddp": check_ddp, "bench": check_bench,
          "resume": check_resume}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"FAIL {args.check}: --device {args.device} but CUDA is not available")
        return 1
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{args.check}_") as tmp:
        try:
            summary = CHECKS[args.check](args.device, Path(tmp))
        except (CheckFailed, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
            print(f"FAIL {args.check}: {exc}")
            return 1
    print(f"PASS {args.check} ({time.perf_counter() - start:.0f} s): {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
