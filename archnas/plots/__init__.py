"""Pictures of what a search did, drawn with matplotlib alone (its Agg canvas; no pyplot, no
display, no system graphviz): DARTS cells as diagrams laid out here (`cells`), architecture
weights as heatmaps, training curves, Pareto fronts, architecture tables and run comparisons
(`figures`), each a `Picture` that `write_pictures` saves as PNG (atomically) and, given a
TensorBoard writer, as an image (`render`). Everything here draws plain data: the stages and
commands that read a results folder (`archnas.nas.plot_stage`, `archnas plot`) hand it over.
"""

from archnas.plots.cells import CellGraph, cell_diagram, cell_layout
from archnas.plots.figures import (
    AlphaGroup,
    RunGroup,
    alpha_groups,
    alphas_heatmap,
    alphas_over_epochs,
    arch_table,
    comparison,
    curves,
    pareto_figure,
)
from archnas.plots.render import Picture, file_name, write_pictures

__all__ = [
    "AlphaGroup", "CellGraph", "Picture", "RunGroup", "alpha_groups", "alphas_heatmap", "alphas_over_epochs", "arch_table",
    "cell_diagram", "cell_layout", "comparison", "curves", "file_name", "pareto_figure", "write_pictures",
]
