"""`archnas plan` / `archnas --dry-run`: the dry run of one experiment (`archnas.nas.dry_run`),
printed as lines for a person or, with `--json`, as one JSON object for a script."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional, Sequence

from archnas.config import ExperimentConf
from archnas.errors import ConfigError
from archnas.nas.dry_run import Plan, StagePlan, dry_run
from archnas.nas.runner import StageSelection


def plan_from_cli(conf: ExperimentConf, selection: StageSelection, steps: int, warmup: int, as_json: bool,
                  argv: Sequence[str]) -> int:
    from archnas.distributed import ranks_from_env

    if ranks_from_env(os.environ)[1] > 1:
        raise ConfigError("--dry-run under torchrun: plan with one process (the estimate is per rank's share)")
    plan = dry_run(conf, selection, steps=steps, warmup=warmup, argv=argv)
    if as_json:
        sys.stdout.write(json.dumps(plan.to_dict(), indent=1, default=str) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in plan_lines(plan)))
    return 0


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 48 else f"{hours / 24:.1f} days"


def brief(seconds: float) -> str:
    """A step's or a pass's time: three digits below a minute, then as `duration` (never 1.97e+03s)."""
    return f"{seconds:.3g}s" if seconds < 60 else duration(seconds)


def memory(size: Optional[int]) -> str:
    return "-" if size is None else f"{size / 2**20:,.0f} MiB"


def _stage_lines(stage: StagePlan, device: str) -> list[str]:
    if stage.how == "not run":
        return [f"{stage.name}: not run ({stage.note})"]
    lo, hi = stage.range_s or (None, None)
    where = "GPU max allocated" if device.startswith("cuda") else "host RSS"
    lines = [f"{stage.name}: about {duration(stage.estimate_s)} ({duration(lo)} to {duration(hi)}), peak memory "
             f"{memory(stage.peak_memory)} ({where}); dry run {duration(stage.probe_s)}"]
    t = stage.training
    if t is not None:
        s = t["step_s"]
        per = "per candidate: " if stage.how == "trials" else ""
        lines.append(f"  {per}{t['epochs']} epochs x {t['steps_per_epoch']} steps x {brief(s['median'])} a step "
                     f"(median of {s['measured']}, {brief(s['min'])} to {brief(s['max'])})")
        extras = []
        if t["val_passes"]:
            batches = f"{t['val_batches']} batch" + ("es" if t["val_batches"] != 1 else "")
            extras.append(f"{t['val_passes']} validation passes x {brief(t['val_pass_s'])} ({batches})")
        if t["checkpoints"]:
            extras.append(f"{t['checkpoints']} checkpoints x {brief(t['checkpoint_s'])}")
        if extras:
            lines.append("  + " + ", ".join(extras))
    if stage.candidates is not None:
        c = stage.candidate_s
        each = "" if c is None else (f" x {brief(c['median'])} each (median of {c['measured']}, {brief(c['min'])} to "
                                     f"{brief(c['max'])})")
        lines.append(f"  {stage.candidates} candidates{each}")
    if stage.setup_s is not None:
        lines.append(f"  + setup {duration(stage.setup_s)} (data, model, tables)")
    if stage.note:
        lines.append(f"  {stage.note}")
    return lines


def _space_lines(space: dict[str, Any]) -> list[str]:
    lines = [f"space {space['space']} ({space['archs']:,} architectures):"]
    for name, c in space["costs"].items():
        lines.append(f"  {name}: min {_num(c['min'])}, median {_num(c['median'])}, max {_num(c['max'])}; {c['over']}")
    for end in ("cheapest", "largest"):
        r = space[end]
        onnx = f"ONNX {r['onnx_bytes']:,} bytes" if r["onnx"] else f"no ONNX ({r['onnx_error']})"
        lines.append(f"  {end} ({r['params']:,} params): builds, trains (a step {brief(r['step_s'])}, "
                     f"peak {memory(r['step_peak_memory'])}), {onnx}")
    return lines


def _num(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def plan_lines(plan: Plan) -> list[str]:
    lines = [f"dry run of {plan.algorithm} on {plan.dataset}, device {plan.device}: {plan.warmup} warm-up + "
             f"{plan.steps} timed steps per training; nothing written under results/"]
    for stage in plan.stages:
        lines += _stage_lines(stage, plan.device)
    lines.append(f"total: about {duration(plan.total_s())}")
    if plan.space is not None:
        lines += _space_lines(plan.space)
    return lines
