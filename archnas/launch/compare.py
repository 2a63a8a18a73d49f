"""`--algos a,b,...`: several algorithms in sequence, one process per stage, and a summary table.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from archnas.config import find_config_file, load_config
from archnas.errors import ConfigError
from archnas.launch.experiment import default_experiment_name, experiment_lock
from archnas.launch.plot import comparison_picture
from archnas.nas.registry import algorithm_class, every_recipe_stages
from archnas.nas.runner import ExperimentResult, StageSelection, recipe
from archnas.plots import write_pictures
from archnas.training.signals import RunInterrupted
from archnas.utils import atomic, reads
from archnas.utils.lock import child_env

SUMMARY_COLUMNS = [
    ("algorithm", "algorithm"), ("test_top1", "test top-1"), ("params", "params"), ("macs", "MACs"),
    ("search_time", "search s"), ("eval_time", "eval s"), ("search_peak_mb", "search peak MB"),
    ("eval_peak_mb", "eval peak MB"), ("random_mean", "random mean"), ("random_std", "random std"),
    ("random_rank", "rank vs random"), ("genotype", "genotype"),
]


def run_algorithms(args: Any, argv: Sequence[str]) -> int:
    """`--algos a,b`: each algorithm with confs/<algo>.yaml under the given configs and overrides,
    into results/<exp>/<algo>/, then results/<exp>/summary.md and summary.csv (and comparison.png
    unless the plot stage is left out).

    Every stage runs in a process of its own (`archnas --config confs/<algo>.yaml ... --exp-name
    <exp>/<algo> --stages search`, then `--stages eval`): memory a process has freed stays in its
    resident set, so only a fresh process measures one stage's peak memory on CPU. `--stages`,
    `--skip`, `--no-search` and `--no-eval` pick each algorithm's stages (a name must be a stage of
    at least one of them). Signals are passed on to the running stage, which checkpoints; the
    sequence stops at the first stage that fails or is interrupted, and rerunning the command skips
    what finished and resumes the rest. The parent holds the lock of results/<exp>/ throughout.
    Returns the exit code.
    """
    names = [a.strip() for a in args.algos.split(",") if a.strip()]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"--algos {args.algos!r}: give distinct algorithm names separated by commas")
    confs, stages = {}, {}
    for name in names:  # refuse a bad name, file, override or stage before anything runs
        algorithm_class(name)
        confs[name] = load_config([find_config_file(name), *args.config], args.overrides)
        stages[name] = recipe(algorithm_class(name)(confs[name]))
    selection: StageSelection = args.selection
    every = list(dict.fromkeys(s.name for name in names for s in stages[name]))
    selection.check(every, ", ".join(names))
    picked = {name: [s.name for s in stages[name] if selection.picks(s)] for name in names}
    if not any(selection.works(s) for name in names for s in stages[name]):
        raise ConfigError(f"--algos with {' '.join(selection.flags())}: that leaves none of the stages "
                          f"({', '.join(every)}) to run, so nothing would run; drop one of them")
    first = confs[names[0]]
    root = args.exp_name or first.common.experiment_name or (default_experiment_name(args.config) if args.config else "compare")
    summary_dir = Path(first.common.results_dir).expanduser() / root
    with experiment_lock(summary_dir, argv) as lock:  # each child locks its own <exp>/<algo>
        for line in lock.found() if lock is not None else ():
            print(f"archnas: {line}", flush=True)
        return _run_algorithms(args, names, confs, picked, root, summary_dir)


def _run_algorithms(args: Any, names: list[str], confs: dict[str, Any], picked: dict[str, list[str]], root: str,
                    summary_dir: Path) -> int:
    results = []
    for number, name in enumerate(names, 1):
        exp_dir = Path(confs[name].common.results_dir).expanduser() / root / name
        result = ExperimentResult(name, exp_dir)
        for group in _process_groups(picked[name]):
            stage = ",".join(group)
            # Said before the child starts (and flushed: the child writes to the same stdout).
            print(f"--algos {number}/{len(names)}: {name} {stage} -> {exp_dir}", flush=True)
            command = [sys.executable, "-m", "archnas", *(t for m in args.imports for t in ("--import", m)),
                       *(t for f in (find_config_file(name), *args.config) for t in ("--config", str(f))),
                       "--exp-name", f"{root}/{name}", "--stages", stage, *(["--force"] if args.force else []),
                       *(["--restart"] if args.restart else []),
                       *(f"{o.key}={o.text}" for o in args.overrides), f"nas.algo={name}"]
            code = _run_child(command)
            if code > 128:
                raise RunInterrupted(code - 128, f"--algos: {name} {stage} was stopped by a signal (what it had saved "
                                                 f"is kept); the algorithms before it are finished")
            if code:
                sys.stderr.write(f"archnas: --algos: {name} {stage} failed (exit code {code}); stopping\n")
                return code
            done = json.loads(reads.read_text(exp_dir / "result.json"))
            result.stages.update((n, done[n]) for n in group)
        atomic.write_json(exp_dir / "result.json", result.to_json(), only_if_changed=True)
        results.append(result)
    write_summary(summary_dir, results)
    if any("plot" in stages for stages in picked.values()):  # --skip plot draws nothing
        write_pictures([comparison_picture(summary_dir)], summary_dir)
    sys.stdout.write((summary_dir / "summary.md").read_text())
    print(f"--algos: {len(names)} algorithms finished; summary in {summary_dir / 'summary.md'} and "
          f"{summary_dir / 'summary.csv'}", flush=True)
    return 0


def _process_groups(stages: Sequence[str]) -> list[list[str]]:
    """The stages each child process runs: one each, except that a stage ending every recipe
    (`plot`, which measures nothing) runs in the process of the stage before it."""
    groups: list[list[str]] = []
    always = {cls.name for cls in every_recipe_stages()}
    for name in stages:
        if groups and name in always:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def _run_child(command: list[str]) -> int:
    """Run `command` in its own process group, passing SIGINT/SIGTERM to it exactly once each
    (a Ctrl-C from the terminal reaches this process only), and return its exit code. The child
    dies with this process (`archnas.utils.lock.follow_parent`, which `python -m archnas` calls
    first), so killing the parent leaves no orphan writing on; and it leaves the resume hint to
    this process, whose command is the one to rerun."""
    child = subprocess.Popen(command, process_group=0, env=child_env())
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda signum, frame: child.send_signal(signum))
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def summary_rows(results: Sequence[ExperimentResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        s, e, b = r.stage("search"), r.final(), r.stage("random_baseline")
        mb = lambda b: None if b is None else round(b / 2**20)  # noqa: E731
        rows.append({
            "algorithm": r.algorithm, "test_top1": e.get("test_top1"), "params": e.get("params_without_aux"),
            "macs": e.get("macs"), "search_time": s.get("search_time"), "eval_time": e.get("train_time"),
            "search_peak_mb": mb(s.get("peak_memory")), "eval_peak_mb": mb(e.get("peak_memory")),
            # nas.eval.random_baseline: the random architectures' mean and std test top-1, the found one's rank
            "random_mean": b.get("random_mean"), "random_std": b.get("random_std"),
            "random_rank": f"{b['rank']}/{b['of']}" if b else None,
            "genotype": s.get("genotype") or "",
        })
    return rows


def write_summary(folder: Path, results: Sequence[ExperimentResult]) -> None:
    rows = summary_rows(results)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[k for k, _ in SUMMARY_COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(folder / "summary.csv", buf.getvalue())

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key in ("test_top1", "random_mean", "random_std"):
            return f"{value:.2%}"
        if key in ("search_time", "eval_time"):
            return f"{value:.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    # the random baseline's columns only when a run has one (nas.eval.random_baseline.n_archs)
    shown = [(k, title) for k, title in SUMMARY_COLUMNS if k != "genotype"
             and (not k.startswith("random_") or any(row[k] is not None for row in rows))]
    header = "| " + " | ".join(title for _, title in shown) + " |"
    rule = "|" + "|".join("---" for _ in shown) + "|"
    body = ["| " + " | ".join(cell(k, row[k]) for k, _ in shown) + " |" for row in rows]
    genotypes = [f"- {row['algorithm']}: `{row['genotype']}`" for row in rows if row["genotype"]]
    text = "\n".join([header, rule, *body]) + "\n"
    if genotypes:
        text += "\nGenotypes:\n" + "\n".join(genotypes) + "\n"
    atomic.write_text(folder / "summary.md", text)
