"""One writer per experiment (issue 22, Scope 3): `<experiment>/archnas.lock` refuses a second run
naming its owner (pid, host, start time, command), a dead owner's lock is taken over and the log
says so, two runs started together end with one result equal to a lone run's, a killed `--algos`
parent leaves no child running, and nothing in a results folder is written through a symbolic
link planted there.

The lock module is imported inside the tests, so that on a build without it each test fails on
its own (not the whole file at collection).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archnas.cli import main
from archnas.training.metrics import without_timings

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# A process that takes the lock of the folder argv[1], says so and waits to be killed.
HOLDER = """
import sys, time
from archnas.utils.lock import ExperimentLock
ExperimentLock(sys.argv[1], ["archnas", "--exp-name", "held"]).acquire()
print("locked", flush=True)
time.sleep(600)
"""
# `archnas` that imports everything, says "ready", then waits for the file argv[1] to start: two of
# them start their runs within milliseconds of each other, however long each took to import.
TOGETHER = """
import sys, time
from pathlib import Path
from archnas.cli import main
print("ready", flush=True)
while not Path(sys.argv[1]).exists():
    time.sleep(0.005)
sys.exit(main(sys.argv[2:]))
"""
# A search of 2 epochs, 3 steps each, nothing after it: long enough that two runs overlap.
SEARCH = ["--config", TINY, "--exp-name", "tiny", "--no-eval", "common.tensorboard=false", "common.deterministic=true",
          "nas.search.trainer.bilevel_order=first", "dataset.limit_train=240", "dataset.limit_test=60"]


def start_holder(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def alive(pid: int) -> bool:
    """Whether any thread of `pid` runs (from /proc; a zombie, which only waits to be reaped, does
    not). Every thread counts: a killed process's main thread turns zombie while its other threads
    are still exiting, and the process's files (its lock among them) close only after the last."""
    try:
        tasks = list((Path("/proc") / str(pid) / "task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except (OSError, IndexError):
            continue
    return False


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(stat[1]) == pid and alive(int(entry.name)):
                out.append(int(entry.name))
    return out


def test_a_held_lock_refuses_a_run_naming_its_owner_and_a_dead_owners_is_taken_over(tmp_path, capsys):
    from archnas.utils.lock import LOCK_FILE, ExperimentLock, ExperimentLocked

    exp = tmp_path / "results" / "held"
    holder = start_holder(exp)
    try:
        with pytest.raises(ExperimentLocked) as refused:
            ExperimentLock(exp, ["archnas"]).acquire()
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}, started 20" in message, message
        assert "archnas --exp-name held" in message and str(exp / LOCK_FILE) in message, message
        # the command line: one error line, exit 2, nothing changed in the folder
        before = sorted(p.name for p in exp.iterdir())
        record = (exp / LOCK_FILE).read_bytes()
        code = main(["--config", TINY, "--exp-name", "held", f"common.results_dir={tmp_path / 'results'}",
                     "--no-search", "nas.eval.final_desc=DARTS_V2"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("archnas: error:") == 1 and "Traceback" not in err, err
        assert f"is in use by another archnas run (pid {holder.pid} on host" in err, err
        assert sorted(p.name for p in exp.iterdir()) == before and (exp / LOCK_FILE).read_bytes() == record
    finally:
        holder.kill()
        holder.wait()
    # Killed holding it: the system dropped the lock; the next run takes it over and says whose it was.
    code = main(["--config", TINY, "--exp-name", "held", f"common.results_dir={tmp_path / 'results'}",
                 f"common.cache_dir={tmp_path / 'cache'}", "--no-search"])  # refused later: no architecture
    out, err = capsys.readouterr()
    assert code == 2 and "no architecture" in err, err
    assert "took over the lock" in out and f"pid {holder.pid} is no longer running" in out, out
    assert not (exp / LOCK_FILE).exists()  # released: removed
    assert exp.is_dir()  # it existed before this run: kept


@pytest.mark.slow
def test_two_runs_started_together_one_runs_one_exits_2_and_the_result_is_a_lone_runs(tmp_path):
    go = tmp_path / "go"
    runs = {}
    for name, results in (("a", "shared"), ("b", "shared"), ("lone", "lone")):
        argv = [*SEARCH, f"common.results_dir={tmp_path / results}", f"common.cache_dir={tmp_path / 'cache'}"]
        runs[name] = subprocess.Popen([sys.executable, "-c", TOGETHER, str(go), *argv], cwd=REPO, env=ENV,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for proc in runs.values():
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        go.touch()
        done = {name: (proc.wait(timeout=300), proc.stdout.read(), proc.stderr.read()) for name, proc in runs.items()}
    finally:
        for proc in runs.values():
            proc.kill()
    assert done["lone"][0] == 0, done["lone"][2][-2000:]
    codes = sorted((done[n][0], n) for n in ("a", "b"))
    assert [c for c, _ in codes] == [0, 2], {n: (done[n][0], done[n][2][-1500:]) for n in ("a", "b")}
    winner, loser = codes[0][1], codes[1][1]
    err = done[loser][2]
    assert err.count("archnas: error:") == 1 and "Traceback" not in err, err
    assert f"is in use by another archnas run (pid {runs[winner].pid} on host" in err, err
    shared, lone = tmp_path / "shared" / "tiny" / "search", tmp_path / "lone" / "tiny" / "search"
    records = [json.loads(line) for line in (shared / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # one trajectory, not two interleaved
    assert [without_timings(r) for r in records] == \
        [without_timings(json.loads(line)) for line in (lone / "metrics.jsonl").read_text().splitlines()]
    for name in ("genotype.txt", "final_model_desc.yaml"):
        assert (shared / name).read_text() == (lone / name).read_text(), name
    assert not (tmp_path / "shared" / "tiny" / "archnas.lock").exists()


@pytest.mark.slow
def test_kill_9_of_an_algos_parent_leaves_no_child_running(tmp_path):
    command = [sys.executable, "-m", "archnas", "--algos", "manual", "--config", TINY, "--exp-name", "cmp",
               f"common.results_dir={tmp_path}", f"common.cache_dir={tmp_path / 'cache'}", "common.log_every_steps=1",
               "common.tensorboard=false", "dataset.limit_train=120", "dataset.limit_test=60",
               "nas.eval.final_desc=DARTS_V2", "nas.eval.trainer.epochs=200"]
    parent = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children = []
    try:
        for line in parent.stdout:
            if "eval epoch 1/200: step" in line:  # the child trains
                break
        children = children_of(parent.pid)
        assert children, "no child found"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while any(alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c for c in children if alive(c)], "children of the killed --algos parent still run"
    finally:
        parent.kill()
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # The child died holding its lock: a rerun takes it over (no second writer was left to refuse it).
    from archnas.utils.lock import LOCK_FILE, ExperimentLock

    lock = ExperimentLock(tmp_path / "cmp" / "manual", ["archnas"]).acquire()
    try:
        assert any("is no longer running" in line for line in lock.found()), lock.found()
    finally:
        lock.release()
    assert not (tmp_path / "cmp" / "manual" / LOCK_FILE).exists()


# A child that follows its parent without Linux's parent-death signal (the fallback: a thread
# watching the parent pid), and a parent that waits until the child follows it, prints the child's
# pid and exits.
FALLBACK_CHILD = """
import time
import archnas.utils.lock as lock
lock._parent_death_signal = lambda signum: False
lock.follow_parent()
print("following", flush=True)
time.sleep(60)
"""
FALLBACK_PARENT = """
import subprocess, sys
from archnas.utils.lock import child_env
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=child_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)  # holds none of the test's pipes open
assert child.stdout.readline().strip() == "following"
print(child.pid, flush=True)
"""


def test_a_child_follows_its_parent_without_the_parent_death_signal_too():
    parent = subprocess.run([sys.executable, "-c", FALLBACK_PARENT, FALLBACK_CHILD], env=ENV, capture_output=True,
                            text=True, timeout=60)
    child = int(parent.stdout.strip())
    try:
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the child outlived its parent"
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_links_planted_in_a_results_folder_are_replaced_not_written_through(tmp_path, capsys):
    results = tmp_path / "results"
    phase = results / "tiny" / "eval"
    phase.mkdir(parents=True)
    victims = tmp_path / "victims"
    victims.mkdir()
    for name in ("log.txt", "metrics.jsonl", "archnas.lock"):
        (victims / name).write_text("not archnas's\n")
    (victims / "tb").mkdir()
    (phase / "log.txt").symlink_to(victims / "log.txt")
    (phase / "metrics.jsonl").symlink_to(victims / "metrics.jsonl")
    (phase / "tb").symlink_to(victims / "tb", target_is_directory=True)
    (results / "tiny" / "archnas.lock").symlink_to(victims / "archnas.lock")
    code = main(["--config", TINY, "--exp-name", "tiny", f"common.results_dir={results}",
                 f"common.cache_dir={tmp_path / 'cache'}", "--no-search", "nas.eval.final_desc=DARTS_V2",
                 "dataset.limit_train=120", "dataset.limit_test=60", "nas.eval.trainer.epochs=1"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    for name in ("log.txt", "metrics.jsonl", "archnas.lock"):
        assert (victims / name).read_text() == "not archnas's\n", name
    assert not any((victims / "tb").iterdir())
    assert not (phase / "log.txt").is_symlink() and "test accuracy" in (phase / "log.txt").read_text()
    assert not (phase / "tb").is_symlink() and any((phase / "tb").iterdir())
    assert f"{phase / 'log.txt'} was a symbolic link to {victims / 'log.txt'}" in out, out
    assert "archnas.lock was a symbolic link" in out, out
