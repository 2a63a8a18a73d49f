"""Search algorithms, one module each; importing this package registers them all by name."""

from archnas.algos import darts, manual  # noqa: F401  (registration)
