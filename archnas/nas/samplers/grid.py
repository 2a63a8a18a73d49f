"""Grid: every genome of a small space, in order (the last label varies fastest, as
`itertools.product`), skipping those the limits reject; `per_generation` per checkpoint.

Its state is a cursor (the position in that order after the last closed batch). A space of more
than `max_archs` genomes is refused before anything is trained: enumerating it is not a search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from archnas.errors import ConfigError
from archnas.nas.samplers.base import Genomes, Row, Sampler, register_sampler


@dataclass
class GridSettings:
    """`nas.search.spos.grid`."""

    per_generation: int = 50  # candidates between two checkpoints
    max_archs: int = 10000  # a larger space is refused (every architecture would be scored)


@register_sampler
class Grid(Sampler):
    name = "grid"

    def __init__(self, counts: Sequence[int], per_generation: int, allows: Callable[[Row], bool]):
        super().__init__(counts, 0, allows)
        self.per_generation = per_generation
        self.size = math.prod(self.counts)
        self.cursor = 0  # genomes of the order passed, as of the last closed batch
        self._next = 0

    @classmethod
    def check_settings(cls, settings: GridSettings, key: str) -> None:
        if settings.per_generation < 1 or settings.max_archs < 1:
            raise ConfigError(f"{key}: per_generation ({settings.per_generation}) and max_archs "
                              f"({settings.max_archs}) must be at least 1")

    @classmethod
    def check_space(cls, settings: GridSettings, counts: Sequence[int], key: str) -> None:
        size = math.prod(counts)
        if size > settings.max_archs:
            raise ConfigError(f"{key}.max_archs: the space has {size:,} architectures, more than the {settings.max_archs:,} "
                              "a grid scores; raise max_archs or use a sampler (evolution, random, optuna_tpe, ...)")

    @classmethod
    def build(cls, settings: GridSettings, genomes: Genomes, seed: int) -> "Grid":
        cls.check_space(settings, genomes.counts, "nas.search.spos.grid")
        return cls(genomes.counts, settings.per_generation, genomes.allows)

    @property
    def batches(self) -> int:
        """At most; fewer when the limits reject genomes (the grid ends at its last one)."""
        return -(-self.size // self.per_generation)

    @property
    def done(self) -> bool:
        return self.cursor >= self.size or super().done

    def row_at(self, index: int) -> Row:
        row = []
        for c in reversed(self.counts):
            index, k = divmod(index, c)
            row.append(k)
        return tuple(reversed(row))

    def propose(self, seen: set[Row]) -> list[Row]:
        rows: list[Row] = []
        index = self.cursor
        while index < self.size and len(rows) < self.per_generation:
            row = self.row_at(index)
            index += 1
            if row not in seen and self.allows(row):
                seen.add(row)
                rows.append(row)
        self._next = index
        return rows

    def close_batch(self) -> None:
        self.cursor = self._next

    def extra_state(self) -> dict[str, Any]:
        return {"cursor": self.cursor}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.cursor = int(state["cursor"])
