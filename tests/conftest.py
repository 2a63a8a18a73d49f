"""The built-in algorithms register their config sections when imported, as the `archnas`
command does at start; tests that load configs in process need them too. Also the one seed of
every kill and signal point, and signal handlers kept from leaking between tests."""

import os
import signal
import time

import pytest
import torch

import archnas.algos  # noqa: F401

# Tests that kill or signal a run at a random step draw it from this seed, printed in the header
# (and in their failure messages): `ARCHNAS_KILL_SEED=<seed> python -m pytest ...` replays a failure.
os.environ.setdefault("ARCHNAS_KILL_SEED", str(time.time_ns() % 100_000))


def pytest_report_header(config):
    return f"ARCHNAS_KILL_SEED={os.environ['ARCHNAS_KILL_SEED']} (kill and signal points; set it to replay a run)"


@pytest.fixture(autouse=True)
def signal_handlers_as_before():
    """SIGINT and SIGTERM as they were before each test: a library a test starts in process (Ray's
    driver leaves SIGINT ignored) must not change what a later test's run receives."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (a module opts in with `pytestmark`): tiny float64 ops gain
    nothing from a second thread, and with other processes on the two cores a spinning OpenMP
    team makes them tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
