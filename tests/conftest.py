"""The built-in algorithms register their config sections when imported, as the `archnas`
command does at start; tests that load configs in process need them too. Also the one seed of
every kill and signal point."""

import os
import time

import archnas.algos  # noqa: F401

# Tests that kill or signal a run at a random step draw it from this seed, printed in the header
# (and in their failure messages): `ARCHNAS_KILL_SEED=<seed> python -m pytest ...` replays a failure.
os.environ.setdefault("ARCHNAS_KILL_SEED", str(time.time_ns() % 100_000))


def pytest_report_header(config):
    return f"ARCHNAS_KILL_SEED={os.environ['ARCHNAS_KILL_SEED']} (kill and signal points; set it to replay a run)"
