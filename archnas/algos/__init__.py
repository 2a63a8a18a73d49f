"""Search algorithms, one module each; importing this package registers them all by name, and the
built-in stages `nas.extra_stages` can name (`export`)."""

from archnas.algos import darts, enas, enot, gdas, manual, multi_trial, pc_darts, proxyless, random_search, spos, zero_cost  # noqa: F401,E501  (registration)
from archnas.nas import export_stage, plot_stage  # noqa: F401  (registration)
