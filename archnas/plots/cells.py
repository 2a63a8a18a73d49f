"""A DARTS cell as a diagram: the two inputs (c_{k-2}, c_{k-1}), the intermediate nodes, one arrow
per kept edge labelled with its op, and the concatenation that makes the cell's output c_{k}.

The layout is computed here (no graphviz): a node's column is one past the deepest input it
reads, so data flows left to right; within a column nodes are ordered by the mean height of
their inputs (fewer crossings) and centred. Arrows that skip columns are bent, alternately up
and down, so they pass beside the nodes in between rather than through them; labels sit on the
arrow's midpoint in the op's colour.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Union

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from archnas.descs.model_desc import CellDesc

Node = Union[int, str]  # an input or intermediate node id, or "out"
OUT = "out"
LABEL_AT = 0.62  # where along its arrow an op's label sits (0: the input, 1: the node)
INCH = 0.85  # inches per layout unit


@dataclass(frozen=True)
class CellGraph:
    """What a diagram shows: per intermediate node its `(op, input id)` edges (ids as in a genotype:
    0 and 1 the inputs, 2.. the intermediate nodes), and the ids the output concatenates."""

    title: str
    nodes: tuple[tuple[tuple[str, int], ...], ...]
    concat: tuple[int, ...]
    n_inputs: int = 2

    @classmethod
    def from_cell(cls, cell: CellDesc, title: str) -> "CellGraph":
        """A final cell of a desc (one op per edge); the cell concatenates every node, as archnas's
        cells do."""
        nodes = tuple(tuple((e.op_desc.name, i) for e in node.edges for i in e.input_ids) for node in cell.nodes)
        return cls(title, nodes, tuple(range(2, 2 + len(nodes))))

    def label(self, node: Node) -> str:
        if node == OUT:
            return "$c_{k}$"
        if node < self.n_inputs:  # type: ignore[operator]
            return f"$c_{{k-{self.n_inputs - node}}}$"  # type: ignore[operator]
        return str(int(node) - self.n_inputs)  # type: ignore[arg-type]


def op_color(op: str) -> tuple[float, float, float, float]:
    """One colour per op name, the same in every picture (a stable hash into tab20)."""
    return colormaps["tab20"](zlib.crc32(op.encode()) % 20)


def cell_layout(graph: CellGraph) -> dict[Node, tuple[float, float]]:
    """(x, y) of every node: inputs in column 0, each intermediate node one column right of its
    deepest input, the output in the last column."""
    column: dict[Node, int] = {i: 0 for i in range(graph.n_inputs)}
    for j, edges in enumerate(graph.nodes):
        column[graph.n_inputs + j] = 1 + max((column.get(i, 0) for _, i in edges), default=0)
    column[OUT] = 1 + max(column.values())
    pos: dict[Node, tuple[float, float]] = {}
    for c in range(column[OUT] + 1):
        members = [n for n in column if column[n] == c]

        def mean_height(n: Node) -> float:
            if isinstance(n, str) or n < graph.n_inputs:
                return 0.0
            ys = [pos[i][1] for _, i in graph.nodes[n - graph.n_inputs] if i in pos]
            return sum(ys) / len(ys) if ys else 0.0

        if c > 0:
            members.sort(key=lambda n: (-mean_height(n), str(n)))
        for k, n in enumerate(members):
            pos[n] = (2.2 * c, 1.3 * ((len(members) - 1) / 2 - k))
    return pos


def cell_diagram(graph: CellGraph) -> Figure:
    pos = cell_layout(graph)
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    width, height = max(xs) - min(xs) + 1.4, max(ys) - min(ys) + 2.0
    fig = Figure(figsize=(INCH * width, INCH * height + 0.3), dpi=100)
    ax = fig.add_subplot()
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(graph.title, fontsize=10)
    bend = 1
    for j, edges in enumerate(graph.nodes):
        target = graph.n_inputs + j
        for op, source in edges:
            (x0, y0), (x1, y1) = pos[source], pos[target]
            rad = 0.0
            if x1 - x0 > 2.3 or (x0 == x1):  # skips a column, or two nodes of one column: bend around
                rad, bend = 0.3 * bend, -bend
            color = op_color(op)
            ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), connectionstyle=f"arc3,rad={rad}",
                                         arrowstyle="-|>", mutation_scale=11, color=color, lw=1.4,
                                         shrinkA=17, shrinkB=17, zorder=1))
            # a point of matplotlib's arc3 curve (a quadratic Bezier whose control point is the
            # chord's middle moved rad times its length across it), past the middle: two arrows
            # that cross there, from the two inputs to a pair of nodes, keep their labels apart
            cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
            t = LABEL_AT
            mx = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t ** 2 * x1
            my = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1
            ax.text(mx, my, op, ha="center", va="center", fontsize=7, color="black", zorder=3,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": color, "lw": 0.8})
    for source in graph.concat:
        (x0, y0), (x1, y1) = pos[source], pos[OUT]
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=9, color="0.55",
                                     lw=0.9, ls="--", shrinkA=17, shrinkB=17, zorder=1))
    for node, (x, y) in pos.items():
        inputs = not isinstance(node, str) and node < graph.n_inputs
        face = "#c9e8c0" if inputs else ("#f6e3a1" if node == OUT else "#cfe0f5")
        ax.text(x, y, graph.label(node), ha="center", va="center", fontsize=10, zorder=4,
                bbox={"boxstyle": "round,pad=0.45", "fc": face, "ec": "0.3", "lw": 1.0})
    ax.text(pos[OUT][0], pos[OUT][1] - 0.55, "concat", ha="center", va="top", fontsize=7, color="0.35")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93)
    return fig
