"""The figures of a results folder, from plain data: architecture-weight heatmaps (the last epoch,
and a grid over epochs), training curves, the Pareto front, the final architecture of a module
space as a table, and a comparison of several runs.

Architecture weights come as metrics.jsonl writes them, one record per epoch: `alphas` maps a
label to `{"ops": [candidate, ...], "softmax": {row: [probability per candidate], ...}}` (DARTS
cells: a label per cell type, a row per edge; a module space: a row per label, named by it). Any
strategy that records its distribution so (softmaxed alphas, a GDAS/ENAS sampling distribution,
ProxylessNAS's path probabilities) gets the same pictures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

HEATMAP_CMAP = "viridis"
ANNOTATE_UP_TO = 200  # cells of a heatmap beyond which the probabilities are not written in


@dataclass
class AlphaGroup:
    """One heatmap's worth of architecture weights: rows (edges, or labels that share their
    candidates) by candidates, at each recorded epoch."""

    name: str  # a file stem: the label (`regular`), or `choices` for labels grouped by candidates
    title: str
    ops: list[str]
    rows: list[str]
    epochs: list[int] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)  # one [rows, ops] per epoch


def _rows_of(entry: Any, n_ops: int) -> Optional[dict[str, list[float]]]:
    """The rows of one label's record when well formed (a mapping of rows to n_ops numbers), else None."""
    rows = entry.get("softmax") if isinstance(entry, dict) else None
    if not isinstance(rows, dict) or not rows:
        return None
    for values in rows.values():
        if not isinstance(values, list) or len(values) != n_ops or not all(isinstance(v, (int, float)) for v in values):
            return None
    return rows


def alpha_groups(records: Sequence[Mapping[str, Any]]) -> list[AlphaGroup]:
    """The heatmap groups of metrics.jsonl records that carry `alphas`: a label with several rows
    (a DARTS cell type) is a group of its own; labels of one row each are grouped by their
    candidate list (NAS-Bench-201's six edges share one heatmap). Ill-formed entries are left out."""
    groups: dict[Any, AlphaGroup] = {}
    for record in records:
        alphas = record.get("alphas")
        epoch = record.get("epoch")
        if not isinstance(alphas, dict) or not isinstance(epoch, int):
            continue
        staged: dict[Any, list[tuple[str, list[float]]]] = {}
        for label, entry in alphas.items():
            ops = entry.get("ops") if isinstance(entry, dict) else None
            if not isinstance(ops, list) or not ops:
                continue
            rows = _rows_of(entry, len(ops))
            if rows is None:
                continue
            if len(rows) > 1:
                key = ("label", label)
                if key not in groups:
                    groups[key] = AlphaGroup(label, f"{label}: edges by candidate", [str(o) for o in ops], list(rows))
                staged.setdefault(key, []).extend(rows.items())
            else:
                key = ("ops", tuple(map(str, ops)))
                staged.setdefault(key, []).append((str(label), next(iter(rows.values()))))
        for key, items in staged.items():
            if key[0] == "ops" and key not in groups:
                n = sum(1 for k in groups if k[0] == "ops")
                groups[key] = AlphaGroup("choices" if n == 0 else f"choices_{n + 1}", "labels by candidate",
                                         list(key[1]), [row for row, _ in items])
            group = groups[key]
            values = dict(items)
            if list(values) != group.rows:  # the labels changed between records: not one matrix
                continue
            group.epochs.append(epoch)
            group.matrices.append(np.array([values[r] for r in group.rows], dtype=float))
    return [g for g in groups.values() if g.matrices]


def _top(group: AlphaGroup) -> float:
    """The colour scale's top: the largest probability of any recorded epoch (a shared scale over
    the epochs; probabilities near uniform would all look alike on a 0..1 scale)."""
    return max(float(max(m.max() for m in group.matrices)), 1e-6)


def _heatmap(ax: Any, matrix: np.ndarray, group: AlphaGroup, annotate: bool, ticks: tuple[bool, bool]) -> Any:
    top = _top(group)
    image = ax.imshow(matrix, vmin=0.0, vmax=top, cmap=HEATMAP_CMAP, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(group.ops)))
    ax.set_yticks(range(len(group.rows)))
    ax.set_xticklabels(group.ops if ticks[0] else [], rotation=40, ha="right", fontsize=7)
    ax.set_yticklabels(group.rows if ticks[1] else [], fontsize=7)
    if annotate:
        best = matrix.argmax(axis=1)
        for r in range(matrix.shape[0]):
            for c in range(matrix.shape[1]):
                v = matrix[r, c]
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v > 0.6 * top else "white", fontweight="bold" if c == best[r] else "normal")
    return image


def alphas_heatmap(group: AlphaGroup) -> Figure:
    """The group at its last recorded epoch, every probability written in (the row's argmax in bold)."""
    matrix = group.matrices[-1]
    width, height = 3.0 + 0.62 * len(group.ops), 1.5 + 0.27 * len(group.rows)
    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=1.1 / width, right=1 - 0.4 / width, bottom=0.95 / height, top=1 - 0.35 / height)
    ax = fig.add_subplot()
    image = _heatmap(ax, matrix, group, matrix.size <= ANNOTATE_UP_TO, (True, True))
    ax.set_title(f"{group.title}, probabilities at epoch {group.epochs[-1]}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    return fig


def picked_epochs(n: int, at_most: int) -> list[int]:
    """Indices of at most `at_most` of n epochs, evenly spaced, the first and the last included."""
    if n <= at_most:
        return list(range(n))
    return sorted({round(k * (n - 1) / (at_most - 1)) for k in range(at_most)})


def alphas_over_epochs(group: AlphaGroup, at_most: int = 12) -> Figure:
    """Small heatmaps of the group over the recorded epochs (at most `at_most`, evenly spaced)."""
    picked = picked_epochs(len(group.epochs), at_most)
    cols = min(4, len(picked))
    rows = math.ceil(len(picked) / cols)
    cell_w, cell_h = 0.16 * len(group.ops) + 0.5, 0.09 * len(group.rows) + 0.5
    width, height = 1.1 + cols * cell_w + 1.0, 1.0 + rows * (cell_h + 0.3) + 0.4
    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=1.0 / width, right=1 - 1.0 / width, bottom=0.8 / height, top=1 - 0.5 / height,
                        wspace=0.15, hspace=0.35)
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= len(picked):
            ax.axis("off")
            continue
        i = picked[k]
        image = _heatmap(ax, group.matrices[i], group, False, (k + cols >= len(picked), k % cols == 0))
        ax.set_title(f"epoch {group.epochs[i]}", fontsize=7)
        ax.tick_params(labelsize=5)
    fig.suptitle(f"{group.title} over epochs", fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, shrink=min(1.0, 2.5 / rows))
    return fig


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and isinstance(r.get("epoch"), int):
            xs.append(r["epoch"])
            ys.append(float(value))
    return xs, ys


def _entropies(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """Per label, the mean entropy of its rows as a fraction of uniform's, by epoch."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in records:
        alphas = r.get("alphas")
        if not isinstance(alphas, dict) or not isinstance(r.get("epoch"), int):
            continue
        for label, entry in alphas.items():
            if not isinstance(entry, dict):
                continue
            h, top = entry.get("entropy"), entry.get("max_entropy")
            if isinstance(h, (int, float)) and isinstance(top, (int, float)) and top > 0:
                xs, ys = out.setdefault(str(label), ([], []))
                xs.append(r["epoch"])
                ys.append(float(h) / float(top))
    return out


def curves(stage: str, records: Sequence[Mapping[str, Any]]) -> Figure:
    """A stage's metrics.jsonl by epoch: loss, top-1 and learning rates, and for a search the
    architecture weights' mean entropy (a fraction of uniform: 1 is no preference)."""
    entropies = _entropies(records)
    panels = 3 + bool(entropies)
    fig = Figure(figsize=(3.1 * panels, 2.9), dpi=100)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    style = {"marker": "o", "ms": 2.5, "lw": 1.2}
    for ax, (title, keys, scale) in zip(axes, (
            ("loss (nats)", ("train_loss", "val_loss", "arch_val_loss", "distill_kl"), 1.0),
            ("top-1 (%)", ("train_top1", "val_top1"), 100.0),
            ("learning rate", ("lr", "alpha_lr"), 1.0))):
        for key in keys:
            xs, ys = _series(records, key)
            if xs:
                ax.plot(xs, [scale * y for y in ys], label=key, **style)
        ax.set_title(title, fontsize=9)
    if entropies:
        ax = axes[3]
        if len(entropies) <= 8:
            for label, (xs, ys) in entropies.items():
                ax.plot(xs, ys, label=label, **style)
        else:
            by_epoch: dict[int, list[float]] = {}
            for xs, ys in entropies.values():
                for x, y in zip(xs, ys):
                    by_epoch.setdefault(x, []).append(y)
            epochs = sorted(by_epoch)
            ax.plot(epochs, [float(np.mean(by_epoch[e])) for e in epochs], label=f"mean of {len(entropies)} labels",
                    **style)
        ax.axhline(1.0, color="0.6", ls=":", lw=1)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title("alphas' entropy / uniform", fontsize=9)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(f"{stage}: training curves", fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.16, top=0.82, wspace=0.3)
    return fig


def pareto_figure(costs: Sequence[float], accuracies: Sequence[float], front: Sequence[bool], cost_label: str,
                  limit: Optional[float] = None, accuracy_label: str = "inherited val top-1 (%)") -> Figure:
    """Accuracy (fractions, drawn in %) against a cost, every scored candidate and the front."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    ys = [100 * a for a in accuracies]
    ax.scatter(costs, ys, s=10, color="0.6", label="scored candidates")
    points = sorted((x, y) for x, y, on in zip(costs, ys, front) if on)
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="tab:red", ms=4, label="Pareto front")
    if limit is not None:
        ax.axvline(limit, color="tab:blue", ls="--", lw=1, label=f"limit {limit:g}")
    ax.set_xlabel(cost_label)
    ax.set_ylabel(accuracy_label)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.96)
    return fig


def arch_table(title: str, rows: Sequence[Sequence[str]], columns: Sequence[str], note: str = "") -> Figure:
    """A table picture: one row per label (label, choice, its costs), a total row last."""
    fig = Figure(figsize=(max(5.0, 1.5 + 1.45 * len(columns)), 0.5 + 0.19 * (len(rows) + 1) + (0.3 if note else 0)),
                 dpi=100)
    ax = fig.add_subplot()
    ax.axis("off")
    table = ax.table(cellText=[list(r) for r in rows], colLabels=list(columns), loc="upper center", cellLoc="left",
                     colLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(columns))))
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_facecolor("#dde6f0")
            cell.set_text_props(fontweight="bold")
        elif r == len(rows) and rows and rows[-1][0] == "total":
            cell.set_facecolor("#f4f4f4")
    ax.set_title(title, fontsize=10)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35", va="bottom")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02 + (0.3 / fig.get_figheight() if note else 0),
                        top=1 - 0.35 / fig.get_figheight())
    return fig


@dataclass
class RunGroup:
    """The runs compared under one name (an algorithm; every seed of an experiment)."""

    name: str
    test_top1: list[float] = field(default_factory=list)  # one per run, fractions
    curves: list[tuple[list[int], list[float]]] = field(default_factory=list)  # one (epochs, val top-1) per run


def comparison(title: str, groups: Sequence[RunGroup], curve_label: str = "eval val top-1 (%)") -> Figure:
    """Test top-1 per group (every run a dot, the mean a bar, the sample standard deviation a
    whisker) and each group's val top-1 by epoch (the mean over runs, the band their min..max)."""
    fig = Figure(figsize=(10, 3.6), dpi=100)
    left, right = fig.subplots(1, 2)
    colors = [f"C{k % 10}" for k in range(len(groups))]
    for k, (g, color) in enumerate(zip(groups, colors)):
        values = [100 * v for v in g.test_top1]
        if values:
            mean = float(np.mean(values))
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            left.bar(k, mean, width=0.5, color=color, alpha=0.35, yerr=std if len(values) > 1 else None, capsize=4)
            left.scatter([k] * len(values), values, color=color, s=14, zorder=3)
            left.text(k + 0.28, mean, f"{mean:.1f}" + (f" ± {std:.1f}" if len(values) > 1 else ""), ha="left",
                      va="center", fontsize=7)
        runs = [c for c in g.curves if c[0]]
        if runs:
            epochs = sorted(set.intersection(*(set(c[0]) for c in runs)))
            table = np.array([[dict(zip(*c))[e] for e in epochs] for c in runs]) * 100
            right.xaxis.set_major_locator(MaxNLocator(integer=True))
            right.plot(epochs, table.mean(axis=0), color=color, marker="o", ms=2.5, lw=1.2,
                       label=g.name + (f" (mean of {len(runs)})" if len(runs) > 1 else ""))
            if len(runs) > 1:
                right.fill_between(epochs, table.min(axis=0), table.max(axis=0), color=color, alpha=0.2)
    left.set_xlim(-0.6, len(groups) - 0.4 + 0.5)
    left.set_xticks(range(len(groups)))
    left.set_xticklabels([g.name for g in groups], rotation=20, ha="right", fontsize=8)
    left.set_ylabel("test top-1 (%)")
    left.set_title("test top-1 of the final network", fontsize=9)
    right.set_xlabel("epoch")
    right.set_ylabel(curve_label)
    right.set_title("training", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.2, top=0.85, wspace=0.22)
    return fig
