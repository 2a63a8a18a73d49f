"""The most probable architecture within cost limits, found exactly.

A search that learns a distribution over architectures (one categorical per label) and must
end within a hard limit cannot take the argmax and hope it fits: the argmax may break the limit,
and the fitting architecture closest to it is not found by changing one label at a time. The
problem is a multiple-choice knapsack: pick one option per label maximizing the summed score
(log-probabilities: the most probable architecture under independent labels) with every summed
cost within its bound.

- Additive costs (a cost table that is the model's cost): dynamic programming over the labels
  that keeps only non-dominated partial architectures (no other is cheaper in every cost and at
  least as probable). Exact, and fast for real spaces: the front stays at most thousands.
- Costs counted on each network (coupled choices): architectures in decreasing score, each
  checked against the counts, until one fits; exact too, bounded by `max_tries`.

    rows = best_row_within(scores, [table], [bound])       # option numbers, or None: nothing fits
    arch = limits.best_within(costs, scores)               # archnas.latency.limits: a {label: choice}
"""

from __future__ import annotations

import heapq
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from archnas.latency.table import CostTable

# Float sums of the same costs in another order differ in the last bits; a bound is met within this.
RELATIVE_TOLERANCE = 1e-9
# The DP's front never grows past this many partial architectures on real spaces; beyond it the
# costs are too fine-grained for an exact answer in bounded memory.
MAX_FRONT = 2_000_000


def within(value: float, bound: float) -> bool:
    return value <= bound + RELATIVE_TOLERANCE * max(1.0, abs(bound))


def best_row_within(scores: Sequence[Sequence[float]], tables: Sequence[CostTable],
                    bounds: Sequence[float]) -> Optional[list[int]]:
    """The option number per label maximizing the summed `scores` with every table's predicted
    cost within its bound; None when even the cheapest architecture breaks a bound. Ties go to
    the cheaper architecture (by the first table), then to the lower option numbers."""
    n_labels = len(scores)
    if any(len(t.deltas) != n_labels for t in tables):
        raise ValueError("best_row_within: every table needs one row of options per label of the scores")
    bounds_arr = np.asarray(bounds, dtype=np.float64)
    slack = RELATIVE_TOLERANCE * np.maximum(1.0, np.abs(bounds_arr))
    deltas = [np.array([t.deltas[i] for t in tables], dtype=np.float64).T for i in range(n_labels)]  # [options, m]
    # the cheapest completion of labels i.. per table: prunes partial architectures that cannot fit
    rest = np.zeros((n_labels + 1, len(tables)))
    for i in range(n_labels - 1, -1, -1):
        rest[i] = rest[i + 1] + deltas[i].min(axis=0)
    cost = np.array([[t.base for t in tables]], dtype=np.float64)
    score = np.zeros(1)
    parents: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(n_labels):
        options = np.asarray(scores[i], dtype=np.float64)
        if len(options) != len(deltas[i]):
            raise ValueError(f"best_row_within: label {i} has {len(options)} scores and {len(deltas[i])} options")
        new_cost = (cost[:, None, :] + deltas[i][None, :, :]).reshape(-1, len(tables))
        new_score = (score[:, None] + options[None, :]).reshape(-1)
        parent = np.repeat(np.arange(len(score)), len(options))
        option = np.tile(np.arange(len(options)), len(score))
        keep = np.all(new_cost + rest[i + 1] <= bounds_arr + slack, axis=1)
        keep &= np.isfinite(new_score)
        keep = _front(new_cost, new_score, np.flatnonzero(keep))
        if len(keep) == 0:
            return None
        if len(keep) > MAX_FRONT:
            raise ValueError(f"best_row_within: {len(keep):,} non-dominated partial architectures after {i + 1} labels; "
                             "the costs are too fine-grained for an exact search")
        cost, score = new_cost[keep], new_score[keep]
        parents.append((parent[keep], option[keep]))
    if not tables:  # no bound: each label's best option
        return [int(np.argmax(np.asarray(s, dtype=np.float64))) for s in scores]
    order = np.lexsort((cost[:, 0], -score))  # best score first, then the cheaper
    node = int(order[0])
    row = [0] * n_labels
    for i in range(n_labels - 1, -1, -1):
        parent, option = parents[i]
        row[i] = int(option[node])
        node = int(parent[node])
    return row


def _front(cost: np.ndarray, score: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The candidates that no other candidate dominates (cheaper or equal in every cost and at
    least as probable); of equal ones the first is kept, so the result is deterministic."""
    if len(candidates) == 0:
        return candidates
    if cost.shape[1] == 1:
        c = cost[candidates, 0]
        order = candidates[np.lexsort((-score[candidates], c))]  # cheapest first, the better score first
        best = np.maximum.accumulate(score[order])
        improves = np.empty(len(order), dtype=bool)
        improves[0] = True
        improves[1:] = score[order][1:] > best[:-1]
        return np.sort(order[improves])
    order = candidates[np.lexsort((*cost[candidates].T[::-1], -score[candidates]))]
    kept: list[int] = []
    for k in order:
        if kept and np.any(np.all(cost[kept] <= cost[k], axis=1)):
            continue  # an earlier kept one scores at least as well and costs no more
        kept.append(int(k))
    return np.sort(np.array(kept, dtype=np.int64))


def rows_by_score(scores: Sequence[Sequence[float]]) -> Iterator[list[int]]:
    """Every architecture (option numbers), in decreasing summed score (ties: lower options first):
    a best-first walk over each label's options sorted by score."""
    ranked = [sorted(range(len(s)), key=lambda k, s=s: (-float(s[k]), k)) for s in scores]
    values = [[float(s[k]) for k in r] for s, r in zip(scores, ranked)]
    start = (0,) * len(scores)
    heap = [(-sum(v[0] for v in values), start)]
    seen = {start}
    while heap:
        negative, ranks = heapq.heappop(heap)
        yield [r[k] for r, k in zip(ranked, ranks)]
        for i, k in enumerate(ranks):
            if k + 1 < len(ranked[i]):
                nxt = ranks[:i] + (k + 1,) + ranks[i + 1:]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (negative + values[i][k] - values[i][k + 1], nxt))


def first_row_allowed(scores: Sequence[Sequence[float]], allowed: Callable[[list[int]], bool],
                      max_tries: int) -> tuple[Optional[list[int]], int]:
    """The highest-scoring architecture `allowed` accepts among the `max_tries` best, and how many
    were tried (None when none of them was allowed)."""
    tried = 0
    for row in rows_by_score(scores):
        tried += 1
        if allowed(row):
            return row, tried
        if tried >= max_tries:
            break
    return None, tried
