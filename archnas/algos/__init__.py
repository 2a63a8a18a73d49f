"""Search algorithms, one module each; importing this package registers them all by name."""

from archnas.algos import darts, gdas, manual, pc_darts, random_search, spos  # noqa: F401  (registration)
