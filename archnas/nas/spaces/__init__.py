"""Search spaces as the phases use them: one protocol (`Space`, `archnas.nas.spaces.base`), two
implementations: DARTS cells (`cells`) and spaces over a module (`modules`).

    space = space_of(conf.nas.search)              # nas.search.space, else the cells of model_desc
    supernet = space.supernet(info, strategy)      # the strategy's edges and weighting
    arch = space.export(supernet, strategy)        # a final desc / {label: choice}
    net = space.network(arch, info)                # from scratch (retrain)
    genome = space.genome(info)                    # counts, encode, decode: what samplers draw
"""

from __future__ import annotations

from typing import Any

from archnas.nas.spaces.base import Genome, Space
from archnas.nas.spaces.cells import CellSpace
from archnas.nas.spaces.modules import ModuleSpace, module_space


def space_of(search: Any) -> Space:
    """The space a search section searches: `space` when set, else the DARTS cells of `model_desc`."""
    if search.space:
        return module_space(search.space)
    return CellSpace(search.model_desc, "nas.search.model_desc")


def eval_space(conf: Any) -> Space:
    """The space of the eval phase: `nas.eval.space`, else the search's module space, else the
    DARTS cells at the eval macro (`nas.eval.model_desc`)."""
    if conf.nas.eval.space:
        return module_space(conf.nas.eval.space, "nas.eval.space")
    if conf.nas.search.space:
        return module_space(conf.nas.search.space)
    return CellSpace(conf.nas.eval.model_desc, "nas.eval.model_desc")


__all__ = ["CellSpace", "Genome", "ModuleSpace", "Space", "eval_space", "module_space", "space_of"]
