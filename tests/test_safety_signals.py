"""SIGTERM and SIGINT from start-up to exit (issue 22, Scope 6): outside `Trainer.fit` too (a
phase's start-up, the spos cost tables and search, the final test) a signal stops the run with
exit 143 / 130 and one "resume with" line, and the rerun goes on; two quick SIGTERMs exit 143,
not 130; under `--algos` only the parent says how to resume; a refused first run leaves no
empty experiment folder behind.

The in-process tests send the signal to this process from inside the run (a patched function at
the point under test). A build without the run-wide handlers would die of it, taking pytest
along, so `no_default_death` installs handlers that raise `Unhandled` instead: such a build fails
the test rather than the whole session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archnas.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
# The eval of DARTS_V2 at the tiny config's 3 cells of 6 channels, on 120 digits: 3 steps an epoch.
EVAL_ONLY = ("--no-search", "nas.eval.final_desc=DARTS_V2", "common.tensorboard=false", "dataset.limit_train=120",
             "dataset.limit_test=60", "nas.eval.trainer.epochs=1")
SPOS = ("--config", str(REPO / "confs" / "spos_nb201.yaml"), "--no-eval", "common.tensorboard=false",
        "common.device=cpu", "dataset.limit_train=120", "dataset.limit_test=60",
        "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=40",
        "nas.search.trainer.epochs=1", "nas.search.cost.max_params=null",
        "nas.search.spos.evolution={population: 4, parents: 2, mutations: 2, crossovers: 2, generations: 3}",
        "nas.search.spos.bn_recalibration.batches=1", "nas.search.spos.score_batches=1")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


class Unhandled(BaseException):
    """A signal that reached the test's own handler: the run had none of its own installed."""


@pytest.fixture(autouse=True)
def no_default_death():
    def handler(signum, frame):
        raise Unhandled(f"{signal.Signals(signum).name} reached no handler of the run (default action: death)")

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)  # conftest.py puts the previous ones back after the test


def signal_self(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)


def darts_eval(root: Path, *extra: str) -> int:
    return main(["--config", TINY, "--exp-name", "tiny", f"common.results_dir={root}",
                 f"common.cache_dir={root.parent / 'cache'}", *EVAL_ONLY, *extra])


def spos(root: Path, *extra: str) -> int:
    return main([*SPOS, "--exp-name", "sp", f"common.results_dir={root}", f"common.cache_dir={root.parent / 'cache'}",
                 *extra])


def assert_stopped(code: int, err: str, signum: int = signal.SIGTERM) -> None:
    name = signal.Signals(signum).name
    assert code == 128 + signum, err[-2000:]
    assert f"stopped by {name}" in err and "Traceback" not in err, err[-2000:]
    assert err.count("resume with: ") == 1, err[-2000:]


def test_sigterm_while_a_phase_starts_up_exits_143_with_the_resume_hint(tmp_path, monkeypatch, capsys):
    from archnas.context import RunContext

    starting = RunContext.phase

    def phase(self, *args, **kwargs):
        signal_self()
        return starting(self, *args, **kwargs)

    monkeypatch.setattr(RunContext, "phase", phase)
    code = darts_eval(tmp_path / "results")
    assert_stopped(code, capsys.readouterr().err)
    assert not (tmp_path / "results" / "tiny" / "eval" / "metrics.json").exists()


def test_sigint_in_the_final_test_exits_130_and_the_rerun_finishes(tmp_path, monkeypatch, capsys):
    import archnas.nas.evaluater as evaluater

    counting = evaluater.with_counts

    def with_counts(*args, **kwargs):  # right after the last epoch's model went through the test set
        signal_self(signal.SIGINT)
        return counting(*args, **kwargs)

    monkeypatch.setattr(evaluater, "with_counts", with_counts)
    root = tmp_path / "results"
    assert_stopped(darts_eval(root), capsys.readouterr().err, signal.SIGINT)
    assert (root / "tiny" / "eval" / "checkpoint_last.pt").is_file()
    assert not (root / "tiny" / "eval" / "metrics.json").exists()
    monkeypatch.setattr(evaluater, "with_counts", counting)
    assert darts_eval(root) == 0
    assert (root / "tiny" / "eval" / "metrics.json").is_file()


def test_two_quick_sigterms_in_training_exit_143_not_130(tmp_path, monkeypatch, capsys):
    from archnas.training.trainer import Trainer

    stepping = Trainer.run_step

    def run_step(self, batch):
        if self.global_step == 0:
            signal_self()
            deadline = time.monotonic() + 10
            while self.stop_signals.requested is None and time.monotonic() < deadline:
                time.sleep(0.001)  # the first is noted (the run means to stop after this step) ...
            signal_self()  # ... and the second one comes before that
        return stepping(self, batch)

    monkeypatch.setattr(Trainer, "run_step", run_step)
    code = darts_eval(tmp_path / "results")
    err = capsys.readouterr().err
    assert code == 143, err[-2000:]
    assert "second signal (SIGTERM)" in err and err.count("resume with: ") == 1 and "Traceback" not in err, err


def test_sigterm_in_the_spos_cost_tables_and_search_stops_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    import archnas.nas.subnet_search as subnet_search
    from archnas.nas.samplers import Evolution

    root = tmp_path / "results"
    tables = subnet_search.SpaceCosts.from_conf

    def from_conf(*args, **kwargs):
        signal_self()
        return tables(*args, **kwargs)

    monkeypatch.setattr(subnet_search.SpaceCosts, "from_conf", from_conf)
    assert_stopped(spos(root), capsys.readouterr().err)
    assert (root / "sp" / "pretrain" / "checkpoint_last.pt").is_file()  # the pretrain before it is kept
    monkeypatch.setattr(subnet_search.SpaceCosts, "from_conf", tables)

    ask = Evolution.ask

    def asking(self, *args, **kwargs):
        if self.generation == 1:  # the second generation, after the first one's checkpoint
            signal_self()
        return ask(self, *args, **kwargs)

    monkeypatch.setattr(Evolution, "ask", asking)
    assert_stopped(spos(root), capsys.readouterr().err)
    monkeypatch.setattr(Evolution, "ask", ask)
    assert spos(root) == 0
    out = capsys.readouterr().out
    assert "resumed the search from" in out and "after generation 1" in out, out[-3000:]
    assert (root / "sp" / "search" / "search_result.json").is_file()


def test_a_refused_first_run_leaves_no_experiment_folder_and_keeps_one_that_existed(tmp_path, capsys):
    root = tmp_path / "results"
    refused = ["--config", TINY, "--exp-name", "tiny", f"common.results_dir={root}",
               f"common.cache_dir={tmp_path / 'cache'}", "--no-search"]  # no architecture to evaluate
    assert main(refused) == 2
    err = capsys.readouterr().err
    assert "no architecture" in err and err.count("archnas: error:") == 1, err
    assert not root.exists(), sorted(str(p) for p in root.rglob("*"))
    (root / "tiny").mkdir(parents=True)  # what was there before a refused run stays
    assert main(refused) == 2
    assert (root / "tiny").is_dir() and not any((root / "tiny").iterdir())


@pytest.mark.slow
def test_sigterm_under_algos_gives_one_resume_line_the_parents(tmp_path):
    command = [sys.executable, "-m", "archnas", "--algos", "manual", "--config", TINY, "--exp-name", "cmp",
               f"common.results_dir={tmp_path}", f"common.cache_dir={tmp_path / 'cache'}", "common.log_every_steps=1",
               *EVAL_ONLY[1:-1], "nas.eval.trainer.epochs=200"]
    proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if "eval epoch 1/200: step" in line:  # the child trains
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert err.count("resume with: ") == 1, err
    resume = next(line for line in err.splitlines() if "resume with: " in line)
    assert "--algos manual" in resume and "cmp/manual" not in resume, resume  # not the child's own command
    assert "stopped by SIGTERM" in err and "manual eval,plot was stopped" in err, err  # plot runs in the eval's process
