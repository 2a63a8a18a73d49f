"""Search spaces: the label-keyed architecture store that every supernet keeps its architecture
parameters in, and the weighting that turns them into one forward's weights."""

from archnas.space.store import ArchBinding, ArchStore, ArchWeights, ChoiceSpec, Searchable, Weighting

__all__ = ["ArchBinding", "ArchStore", "ArchWeights", "ChoiceSpec", "Searchable", "Weighting"]
