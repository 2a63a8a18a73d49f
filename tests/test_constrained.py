"""The constrained argmax (archnas/latency/constrained.py) against enumeration: on random small
spaces with random costs, scores and bounds, the dynamic programme's architecture has the best
score of all architectures within the bounds, and it is within them."""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from archnas.latency.constrained import best_row_within, first_row_allowed, rows_by_score
from archnas.latency.table import CostTable


@st.composite
def spaces(draw):
    n_labels = draw(st.integers(1, 4))
    options = [draw(st.integers(1, 4)) for _ in range(n_labels)]
    n_costs = draw(st.integers(1, 2))
    cost = st.integers(0, 20).map(float)
    tables = [CostTable(f"c{m}", [f"l{i}" for i in range(n_labels)], draw(cost),
                        [[0.0] + [draw(cost) - 10 for _ in range(k - 1)] for k in options]) for m in range(n_costs)]
    scores = [[draw(st.floats(-5, 0, allow_nan=False)) for _ in range(k)] for k in options]
    bounds = [draw(st.integers(-10, 60).map(float)) for _ in range(n_costs)]
    return scores, tables, bounds


@settings(max_examples=300, deadline=None, derandomize=True)
@given(spaces())
def test_the_dp_finds_the_best_architecture_within_every_bound(space):
    scores, tables, bounds = space
    every = list(itertools.product(*[range(len(s)) for s in scores]))
    fits = [r for r in every if all(t.predict_row(r) <= b for t, b in zip(tables, bounds))]
    row = best_row_within(scores, tables, bounds)
    if not fits:
        assert row is None
        return
    best = max(sum(s[k] for s, k in zip(scores, r)) for r in fits)
    assert row is not None and all(t.predict_row(row) <= b for t, b in zip(tables, bounds))
    assert np.isclose(sum(s[k] for s, k in zip(scores, row)), best, rtol=0, atol=1e-9)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(spaces())
def test_architectures_come_in_decreasing_score_and_each_once(space):
    scores, tables, bounds = space
    rows = [tuple(r) for r in rows_by_score(scores)]
    values = [sum(s[k] for s, k in zip(scores, r)) for r in rows]
    assert sorted(rows) == sorted(itertools.product(*[range(len(s)) for s in scores]))
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))
    allowed = lambda r: all(t.predict_row(r) <= b for t, b in zip(tables, bounds))  # noqa: E731
    row, tried = first_row_allowed(scores, allowed, max_tries=len(rows))
    first = next((list(r) for r in rows if allowed(list(r))), None)
    assert row == first and tried == (rows.index(tuple(first)) + 1 if first else len(rows))


def test_the_argmax_over_a_limit_gives_way_to_the_best_that_fits():
    # a's most probable option is dear: keeping it and making b as cheap as needed (cost 9, score
    # -3.1) loses to changing a (cost 3, score -1.2)
    table = CostTable("macs", ["a", "b"], 0.0, [[0.0, 9.0], [0.0, 3.0, 2.0]])
    scores = [[-1.0, -0.1], [-3.0, -0.2, -0.5]]
    assert best_row_within(scores, [table], [20.0]) == [1, 1]  # the unconstrained argmax fits
    assert best_row_within(scores, [table], [10.0]) == [0, 1]
    assert best_row_within(scores, [table], [-1.0]) is None
