"""Search algorithms, one module each; importing this package registers them all by name, and the
built-in stages `nas.extra_stages` can name (`export`)."""

from archnas.algos import darts, enot, gdas, manual, pc_darts, random_search, spos  # noqa: F401  (registration)
from archnas.algos import multi_trial  # noqa: F401  (registration)
from archnas.nas import export_stage  # noqa: F401  (registration)
