"""Per-choice cost tables: the cost of an architecture as a constant plus one entry per choice.

    table = CostTable.build("macs", specs, count_macs)        # 1 + sum(options - 1) networks counted
    table.predict(arch)                                        # microseconds: a sum of len(specs) numbers
    table.predict_indices(index_matrix)                        # a whole population at once (numpy)

The constant is the cost of the *base* architecture (every label at its first option); the entry
of option v of label L is what changing L alone from the base to v changes. For a space whose
cost is additive over its choices (each choice changes only its own layers: NAS-Bench-201's
edges, the MobileNet builder's blocks) the table is exact for every architecture; for a space
whose choices are coupled (a width choice changes the next layer's input) it is a first-order
model, and `check` measures how far it is off on held-out architectures.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from archnas.space.choice import choice_index, choice_value, option_indices
from archnas.space.store import ChoiceSpec


def option_count(spec: ChoiceSpec) -> int:
    return len(option_indices(spec))


def arch_to_row(specs: Mapping[str, ChoiceSpec], arch: Mapping[str, Any]) -> list[int]:
    """The option number of every label (its position in `option_indices`)."""
    row = []
    for label, spec in specs.items():
        index = choice_index(spec, arch[label])
        row.append(option_indices(spec).index(index))
    return row


def row_to_arch(specs: Mapping[str, ChoiceSpec], row: Sequence[int]) -> dict[str, Any]:
    return {label: choice_value(spec, option_indices(spec)[int(k)]) for (label, spec), k in zip(specs.items(), row)}


def space_size(specs: Mapping[str, ChoiceSpec]) -> int:
    return math.prod(option_count(s) for s in specs.values())


def random_rows(specs: Mapping[str, ChoiceSpec], n: int, rng: random.Random) -> list[list[int]]:
    counts = [option_count(s) for s in specs.values()]
    return [[rng.randrange(c) for c in counts] for _ in range(n)]


@dataclass
class TableCheck:
    """How the table's predictions compare with measurements of whole networks."""

    archs: int
    mape_percent: float  # mean absolute percentage error
    max_abs_error: float
    exact: bool  # every prediction equal to the measurement (counts), or within float rounding

    def to_dict(self) -> dict[str, Any]:
        return {"held_out_archs": self.archs, "mape_percent": self.mape_percent, "max_abs_error": self.max_abs_error,
                "exact": self.exact}


@dataclass
class CostTable:
    name: str  # the cost model's (archnas.latency.registry)
    labels: list[str]
    base: float  # the cost of the base architecture (every label at its first option)
    deltas: list[list[float]]  # per label, per option: the change from the base
    check_result: TableCheck | None = None
    _matrix: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def build(cls, name: str, specs: Mapping[str, ChoiceSpec], measure: Callable[[dict[str, Any]], float]) -> "CostTable":
        """Measure the base architecture and each label's other options, one label changed at a time."""
        base_row = [0] * len(specs)
        base = float(measure(row_to_arch(specs, base_row)))
        deltas = []
        for i, spec in enumerate(specs.values()):
            row_deltas = [0.0]
            for k in range(1, option_count(spec)):
                row = list(base_row)
                row[i] = k
                row_deltas.append(float(measure(row_to_arch(specs, row))) - base)
            deltas.append(row_deltas)
        return cls(name, list(specs), base, deltas)

    @classmethod
    def fit(cls, name: str, specs: Mapping[str, ChoiceSpec], measure: Callable[[dict[str, Any]], float],
            n: int, seed: int) -> "CostTable":
        """Least squares over `n` random architectures: for measurements with noise (times), where
        the one-at-a-time differences of `build` would each carry the noise of two measurements."""
        counts = [option_count(s) for s in specs.values()]
        rows = random_rows(specs, n, random.Random(seed))
        offsets = np.cumsum([0] + [c - 1 for c in counts])
        features = np.zeros((n, 1 + int(offsets[-1])))
        features[:, 0] = 1.0
        for r, row in enumerate(rows):
            for i, k in enumerate(row):
                if k:
                    features[r, 1 + offsets[i] + k - 1] = 1.0
        targets = np.array([float(measure(row_to_arch(specs, row))) for row in rows])
        solution = np.linalg.lstsq(features, targets, rcond=None)[0]
        deltas = [[0.0] + solution[1 + offsets[i]: 1 + offsets[i + 1]].tolist() for i in range(len(counts))]
        return cls(name, list(specs), float(solution[0]), deltas)

    def free_parameters(self) -> int:
        return 1 + sum(len(d) - 1 for d in self.deltas)

    @property
    def matrix(self) -> np.ndarray:
        """Deltas padded into one [labels, max options] array, for vectorized scoring."""
        if self._matrix is None:
            width = max(len(d) for d in self.deltas)
            self._matrix = np.zeros((len(self.deltas), width), dtype=np.float64)
            for i, d in enumerate(self.deltas):
                self._matrix[i, : len(d)] = d
        return self._matrix

    def predict_row(self, row: Sequence[int]) -> float:
        return self.base + sum(d[k] for d, k in zip(self.deltas, row))

    def predict(self, specs: Mapping[str, ChoiceSpec], arch: Mapping[str, Any]) -> float:
        return self.predict_row(arch_to_row(specs, arch))

    def predict_indices(self, rows: np.ndarray) -> np.ndarray:
        """Costs of many architectures given as an [n, labels] array of option numbers."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.base + self.matrix[np.arange(len(self.deltas))[None, :], rows].sum(axis=1)

    def extreme_rows(self) -> tuple[list[int], list[int]]:
        """The cheapest and the dearest architecture under the table (exact for an additive one)."""
        return [int(np.argmin(d)) for d in self.deltas], [int(np.argmax(d)) for d in self.deltas]

    def check(self, specs: Mapping[str, ChoiceSpec], measure: Callable[[dict[str, Any]], float], n: int,
              seed: int, tolerance: float = 0.0) -> TableCheck:
        """Compare predictions with `measure` on `n` random architectures (held out: drawn
        independently of the ones the table was built from); remembered as `check_result`."""
        rng = random.Random(seed)
        errors, relative = [], []
        for row in random_rows(specs, n, rng):
            measured = float(measure(row_to_arch(specs, row)))
            error = self.predict_row(row) - measured
            errors.append(abs(error))
            relative.append(abs(error) / abs(measured) if measured else (0.0 if error == 0 else math.inf))
        worst = max(errors, default=0.0)
        self.check_result = TableCheck(n, 100.0 * sum(relative) / max(len(relative), 1), worst, worst <= tolerance)
        return self.check_result

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "deltas": dict(zip(self.labels, self.deltas)),
                "check": None if self.check_result is None else self.check_result.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CostTable":
        check = d.get("check")
        return cls(d["name"], list(d["deltas"]), float(d["base"]), [list(map(float, v)) for v in d["deltas"].values()],
                   None if check is None else TableCheck(int(check["held_out_archs"]), float(check["mape_percent"]),
                                                         float(check["max_abs_error"]), bool(check["exact"])))


def enumerate_rows(specs: Mapping[str, ChoiceSpec], limit: int) -> np.ndarray | None:
    """Every architecture as an [n, labels] array of option numbers, or None beyond `limit`."""
    if space_size(specs) > limit:
        return None
    counts = [option_count(s) for s in specs.values()]
    return np.array(list(itertools.product(*[range(c) for c in counts])), dtype=np.int64).reshape(-1, len(counts))
