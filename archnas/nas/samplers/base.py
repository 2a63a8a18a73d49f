"""The ask/tell protocol every sampler follows, and the registry of samplers by name.

    sampler = build_sampler("evolution", settings, Genomes(counts, allows, cost), seed)
    while not sampler.done:
        rows = sampler.ask()                 # the next batch: new, allowed, distinct genomes
        for row in rows:
            sampler.tell(row, score(row))    # in the order asked
        checkpoint(sampler.state_dict())

A genome is a row of option numbers, one per label (`archnas.latency.table`: `row_to_arch`,
`arch_to_row`). A sampler proposes batches; a batch closes when every genome of it is told, and
the state after a closed batch (its number, every told genome in order, whatever the sampler
carries, e.g. an RNG state) is all a resumed search needs: a search checkpointed after each
batch and killed anywhere asks the same batch again and ends where an uninterrupted one does.
A sampler never proposes a genome the limits reject (`allows`) nor one it proposed before.

Samplers register by name at import (`register_sampler`); `nas.search.spos.strategy` names one
and `nas.search.spos.<name>` holds its settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Sequence

from archnas.errors import ConfigError

Row = tuple[int, ...]


@dataclass(frozen=True)
class Genomes:
    """What a sampler searches over: the option count of every label, the limits' verdict on a
    genome, and the cost a multi-objective sampler trades accuracy against (None: none)."""

    counts: tuple[int, ...]
    allows: Callable[[Row], bool]
    cost: Optional[Callable[[Row], float]] = None


@dataclass
class Scored:
    row: Row
    score: float
    generation: int  # the batch it was asked in

    def to_dict(self) -> dict[str, Any]:
        return {"row": list(self.row), "score": self.score, "generation": self.generation}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scored":
        return cls(tuple(int(k) for k in d["row"]), float(d["score"]), int(d["generation"]))


class Sampler:
    """Proposes batches of genomes and is told their scores (higher is better); subclasses say how
    (`propose`, `batches`) and what else they carry across batches (`extra_state`)."""

    name: ClassVar[str] = ""
    multi_objective: ClassVar[bool] = False  # needs `Genomes.cost`

    def __init__(self, counts: Sequence[int], seed: int, allows: Callable[[Row], bool], max_tries: int = 100):
        """`allows(row)`: whether the limits let a genome be proposed; `max_tries` bounds the
        draws spent per wanted genome before a batch settles for fewer."""
        self.counts = tuple(counts)
        self.seed = seed
        self.allows = allows
        self.max_tries = max_tries
        self.generation = 0  # batches closed
        self.scored: list[Scored] = []  # every told genome, in the order told
        self.seconds = 0.0  # spent scoring, over all runs of the search (the selection loop adds to it)
        self._pending: list[Row] = []

    # -- what a sampler says -------------------------------------------------------------------

    @property
    def batches(self) -> int:
        """How many batches the search asks at most."""
        raise NotImplementedError

    def propose(self, seen: set[Row]) -> list[Row]:
        """The genomes of the current batch (new, allowed, distinct); `seen` holds every genome told
        so far, and `propose` adds what it picks."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """What the sampler carries from one batch to the next besides the told genomes."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` saved (from the whole state dict)."""

    def close_batch(self) -> None:
        """Called when the last genome of a batch is told (e.g. to keep the RNG state after it)."""

    # -- built by name --------------------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Any, key: str) -> None:
        """ConfigError naming `key` (the settings' config key) when they cannot work."""

    @classmethod
    def check_space(cls, settings: Any, counts: Sequence[int], key: str) -> None:
        """ConfigError when the sampler cannot search a space of these option counts."""

    @classmethod
    def build(cls, settings: Any, genomes: Genomes, seed: int) -> "Sampler":
        """The sampler of `nas.search.spos.<name>` settings over `genomes`."""
        raise NotImplementedError

    # -- ask / tell ------------------------------------------------------------------------------

    def ask(self) -> list[Row]:
        """The next batch. Asked again before any of it is told (a search resumed from the state of
        the batch before), it is the same batch."""
        if self.done:
            return []
        self._pending = self.propose({s.row for s in self.scored})
        if not self._pending:
            self._close()
        return list(self._pending)

    def cut(self, n: int) -> list[Row]:
        """Keep only the first `n` genomes of the open batch (a budget that ends the search within
        it); the batch then closes when those are told. Returns the batch as it now stands."""
        if n < 1:
            raise ValueError(f"a batch cut to {n} genomes would never close")
        del self._pending[n:]
        return list(self._pending)

    def tell(self, row: Sequence[int], score: float) -> None:
        row = tuple(int(k) for k in row)
        if row not in self._pending:
            raise ValueError(f"{row} was not asked in the open batch (or was told already)")
        self._pending.remove(row)
        self.scored.append(Scored(row, float(score), self.generation))
        if not self._pending:
            self._close()

    def _close(self) -> None:
        self.close_batch()
        self.generation += 1

    @property
    def done(self) -> bool:
        return self.generation >= self.batches

    def best(self, n: int = 1) -> list[Scored]:
        """The `n` best told so far; ties go to the one told first."""
        order = sorted(range(len(self.scored)), key=lambda i: (-self.scored[i].score, i))
        return [self.scored[i] for i in order[:n]]

    # -- checkpoint state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain data, as of the last closed batch (the selection loop saves only then)."""
        return {"generation": self.generation, "scored": [s.to_dict() for s in self.scored], "seconds": self.seconds,
                **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generation = int(state["generation"])
        self.scored = [Scored.from_dict(d) for d in state["scored"]]
        self.seconds = float(state["seconds"])
        self._pending = []
        self.load_extra_state(state)

    # -- shared by the samplers that draw genomes themselves ------------------------------------

    def fill(self, rows: list[Row], seen: set[Row], want: int, make: Callable[[], Optional[Row]]) -> None:
        """Append up to `want` new allowed rows made by `make`, within `max_tries * want` draws."""
        target = len(rows) + want
        for _ in range(self.max_tries * max(want, 1)):
            if len(rows) >= target:
                return
            row = make()
            if row is not None and row not in seen and self.allows(row):
                seen.add(row)
                rows.append(row)


# -- the registry ------------------------------------------------------------------------------

# name -> sampler class; filled at import by `register_sampler` (the built-ins in this package).
_SAMPLERS: dict[str, type["Sampler"]] = {}


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make the sampler available as `nas.search.spos.strategy: <cls.name>`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if _SAMPLERS.get(cls.name, cls) is not cls:
        raise ValueError(f"sampler {cls.name!r} is registered twice")
    _SAMPLERS[cls.name] = cls
    return cls


def sampler_names() -> list[str]:
    return list(_SAMPLERS)


def sampler_class(name: str, key: str = "nas.search.spos.strategy") -> type[Sampler]:
    if name not in _SAMPLERS:
        raise ConfigError(f"{key}: {name!r} is not one of {', '.join(_SAMPLERS)}")
    return _SAMPLERS[name]


def build_sampler(name: str, settings: Any, genomes: Genomes, seed: int) -> Sampler:
    cls = sampler_class(name)
    if cls.multi_objective and genomes.cost is None:
        raise ValueError(f"the {name} sampler trades accuracy against a cost; none was given")
    return cls.build(settings, genomes, seed)
