"""Did a finished DARTS run learn something? Its files checked against the bars the main job must pass.

    python scripts/check_search.py results/darts          # one line per bar, exit code 1 if any fails

A search whose alphas stay near uniform prints a genotype that is noise: the argmax of almost
equal numbers. So, from the run's files only (search/metrics.jsonl, search/search_result.json,
eval/metrics.json, the phases' run.json):

- entropy: the final mean edge entropy of the softmaxed alphas, per cell type, at most
  `max_entropy_ratio` (0.9) of the uniform maximum (ln 8 for the 8 DARTS ops);
- no collapse: per cell type, the share of edges whose argmax is `skip_connect` or `none`
  (together) at most `max_parameterless_share` (0.5);
- stable: the DARTS genotype the alphas give (per node the two inputs with the strongest op
  other than `none`, each with that op) the same after the last two epochs;
- accuracy: the eval phase's test top-1 at least `min_test_top1` (0.95);
- time: from the search's start to the eval's end at most `max_seconds` (600), when both ran.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from archnas.errors import UsageError
from archnas.utils import reads

PARAMETERLESS = ("skip_connect", "none")


@dataclass
class Bar:
    name: str
    passed: bool
    detail: str


def darts_genotype(report: dict[str, Any], keep: int = 2) -> list[tuple[int, int, str]]:
    """(node, input, op) of the DARTS parse of one cell type's softmax rows (`n<node>_in<input>`)."""
    ops = report["ops"]
    nodes: dict[int, list[tuple[float, int, str]]] = {}
    for row, probs in report["softmax"].items():
        match = re.fullmatch(r"n(\d+)_in(\d+)", row)
        if match is None:
            raise UsageError(f"alpha row {row!r} is not a DARTS cell edge (n<node>_in<input>): no genotype to compare")
        node, inp = int(match[1]), int(match[2])
        best = max((p, op) for p, op in zip(probs, ops) if op != "none")
        nodes.setdefault(node, []).append((best[0], inp, best[1]))
    out = []
    for node, edges in sorted(nodes.items()):
        for _, inp, op in sorted(edges, key=lambda e: (-e[0], e[1]))[:keep]:
            out.append((node, inp, op))
    return sorted(out)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(reads.read_text(path))
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist: is {path.parent.parent} the folder of a finished run?") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise UsageError(f"{path} is not valid JSON ({e})") from None


def check_run(exp_dir: Path, max_entropy_ratio: float = 0.9, max_parameterless_share: float = 0.5,
              min_test_top1: float = 0.95, max_seconds: float = 600.0) -> list[Bar]:
    """The bars of a finished run in `exp_dir` (`results/<experiment>`)."""
    search = exp_dir / "search"
    records = [json.loads(line) for line in reads.read_text(search / "metrics.jsonl").splitlines() if line.strip()] \
        if (search / "metrics.jsonl").is_file() else []
    if not records or "alphas" not in records[-1]:
        raise UsageError(f"{search / 'metrics.jsonl'} has no epoch records with alphas: not a finished supernet search")
    result = _read_json(search / "search_result.json")
    last = records[-1]["alphas"]
    moved = result.get("metrics", {}).get("alphas", {})
    bars = []
    for label, report in last.items():
        limit = max_entropy_ratio * report["max_entropy"]
        start = moved.get(label, {}).get("entropy_start")
        was = f", {start:.4f} at the start" if start is not None else ""
        bars.append(Bar(f"entropy {label}", report["entropy"] <= limit,
                        f"{report['entropy']:.4f} <= {limit:.4f} ({max_entropy_ratio} x ln {len(report['ops'])}){was}"))
        share = sum(report["argmax_share"].get(op, 0.0) for op in PARAMETERLESS)
        bars.append(Bar(f"no collapse {label}", share <= max_parameterless_share,
                        f"argmax skip_connect + none on {share:.0%} of the edges <= {max_parameterless_share:.0%}"))
    if len(records) < 2:
        bars.append(Bar("stable genotype", False, "one epoch only: nothing to compare"))
    else:
        before, after = ({label: darts_genotype(r) for label, r in rec["alphas"].items()} for rec in records[-2:])
        changed = [label for label in after if before.get(label) != after[label]]
        n = len(records)
        bars.append(Bar("stable genotype", not changed,
                        f"the same after epochs {n - 1} and {n}" if not changed else
                        f"changed between epochs {n - 1} and {n} in {', '.join(changed)}"))
    metrics = exp_dir / "eval" / "metrics.json"
    if metrics.is_file():
        test = _read_json(metrics)["test_top1"]
        bars.append(Bar("test accuracy", test >= min_test_top1, f"{test:.2%} >= {min_test_top1:.0%}"))
        seconds = run_seconds(exp_dir)
        if seconds is not None:
            bars.append(Bar("time", seconds <= max_seconds, f"{seconds:.0f}s from the search's start to the eval's "
                                                             f"end <= {max_seconds:.0f}s"))
    else:
        bars.append(Bar("test accuracy", False, f"{metrics} does not exist: the eval phase has not finished"))
    return bars


def run_seconds(exp_dir: Path) -> Optional[float]:
    """Wall time from the search's start (its run.json) to the eval's marker being written."""
    try:
        start = dt.datetime.fromisoformat(_read_json(exp_dir / "search" / "run.json")["start_time"])
    except (UsageError, KeyError, ValueError):
        return None
    end = (exp_dir / "eval" / "metrics.json").stat().st_mtime
    return end - start.timestamp()

