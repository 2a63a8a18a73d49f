"""Search spaces over any PyTorch model.

NNI's primitives (`LayerChoice`, `InputChoice`, `ValueChoice`, `Repeat`, `Cell`,
`NasBench201Cell`, `NasBench101Cell`, the value-choice layers in `archnas.space.nn`) and ENOT's
(`SearchVariantsContainer`, `SearchSpaceModel`), on one label-keyed architecture store
(`ArchStore`), which every strategy reads and writes, and which the DARTS cell supernet uses too.
`freeze` and `fixed_arch` give plain networks of one architecture; `archnas.space.arch_io` reads
and writes architectures; `create_space` builds a registered space (`archnas.hub`: `nb201`,
`nasbench101`, `proxylessnas`, `shufflenet`, `mobilenet`, `mobilenetv3`, `autogen`); `generate_space` makes a space of a plain
model (`archnas.space.autogen`).
"""

from archnas.space.autogen import generate_space
from archnas.space.cells import Cell, NasBench201Cell
from archnas.space.nasbench101 import NasBench101Cell
from archnas.space.choice import Choice
from archnas.space.choices import (
    InputChoice,
    LayerChoice,
    Repeat,
    SearchVariantsContainer,
)
from archnas.space.fixed import fixed_arch
from archnas.space.model import SearchSpaceModel, build_network, freeze, register_supernet_module
from archnas.space.registry import create_space, register_space, space_names
from archnas.space.store import (
    ArchBinding,
    ArchStore,
    ArchWeights,
    ChoiceSpec,
    FixedWeighting,
    Searchable,
    Weighting,
)
from archnas.space.value import ValueChoice

__all__ = [
    "ArchBinding", "ArchStore", "ArchWeights", "Cell", "Choice", "ChoiceSpec", "FixedWeighting", "InputChoice",
    "LayerChoice", "NasBench101Cell", "NasBench201Cell", "Repeat", "SearchSpaceModel", "SearchVariantsContainer", "Searchable",
    "ValueChoice", "Weighting", "build_network", "create_space", "fixed_arch", "freeze", "generate_space",
    "register_space", "register_supernet_module", "space_names",
]
