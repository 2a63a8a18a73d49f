"""Multi-trial search (`multi_trial`): regularized evolution ages its population and resumes from
its state, every strategy runs through the one command with limits filtering candidates before
any training, the budget in trials or minutes stops the search where a resumed one stops too, a
SIGKILLed search reruns none of its finished trials and ends as an uninterrupted one, and 2 Ray
workers give what 1 process gives."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from archnas.cli import main
from archnas.errors import ConfigError
from archnas.nas.samplers import Genomes, RegularizedEvolution, RegularizedEvolutionSettings, build_sampler

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
KILL_SEED = int(os.environ.get("ARCHNAS_KILL_SEED", "0"))  # set and printed by conftest.py
TINY = ["common.device=cpu", "common.tensorboard=false", "common.log_every_steps=0", "common.num_threads=1",
        "dataset.limit_train=160", "dataset.limit_test=40", "nas.search.space={name: nb201, C: 4, N: 1}",
        "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=1", "nas.eval.loader.train_batch=40",
        "nas.eval.trainer.epochs=1", "nas.search.cost.held_out=1", "nas.search.multi_trial.max_trials=4",
        "nas.search.multi_trial.strategy=regularized_evolution",
        "nas.search.multi_trial.regularized_evolution={population_size: 2, sample_size: 2, mutation_prob: 0.5, "
        "cycles: 4, per_generation: 2}"]
TRIAL = re.compile(r"trial (\d+)/\d+: val top-1")

pytestmark = pytest.mark.usefixtures("one_thread")


def args(results: Path, exp: str, *extra: str, stages: str = "--no-eval") -> list[str]:
    return ["--config", str(REPO / "confs" / "multi_trial.yaml"), "--exp-name", exp, f"common.results_dir={results}",
            stages, *TINY, *extra]


def trials(results: Path, exp: str) -> list[dict]:
    return json.loads((results / exp / "search" / "trials.json").read_text())["trials"]


def same(rows: list[dict]) -> list[tuple]:
    """What a trial's result is, less its wall time."""
    return [(t["number"], tuple(t["row"]), t["val_top1"], t["generation"]) for t in rows]


# -- regularized evolution ------------------------------------------------------------------------


def run_sampler(sampler, score, stop_after=None):
    while not sampler.done and (stop_after is None or sampler.generation < stop_after):
        for row in sampler.ask():
            sampler.tell(row, score(row))


def test_regularized_evolution_breeds_from_tournaments_of_the_youngest_members_and_resumes_exactly():
    counts, score = (3, 4, 2, 5), lambda row: float(row[0] * 3 - row[1] + row[2] * row[3])
    settings = RegularizedEvolutionSettings(population_size=5, sample_size=3, mutation_prob=0.3, cycles=9,
                                            per_generation=2)
    genomes = Genomes(counts, lambda row: sum(row) <= 9)
    whole = build_sampler("regularized_evolution", settings, genomes, 11)
    run_sampler(whole, score)
    assert whole.batches == 1 + 5 and len(whole.scored) == 5 + 9
    assert [s.generation for s in whole.scored[:5]] == [0] * 5 and len({s.row for s in whole.scored}) == 14
    assert all(sum(s.row) <= 9 for s in whole.scored), "the limits filter every proposal"
    # aging: the population is the last population_size told, whatever their scores
    assert whole.population() == [(s.row, s.score) for s in whole.scored[-5:]]
    # a tournament's parent is the best of the drawn members
    sampler = RegularizedEvolution(counts, settings, 3, lambda row: True)
    population = [((0, 0, 0, k), float(k)) for k in range(5)]
    state = sampler.rng.getstate()
    drawn = random.Random()
    drawn.setstate(state)
    expected = max(drawn.sample(population, 3), key=lambda m: m[1])[0]
    assert sampler.tournament(population) == expected
    # resumed from a checkpointed state after batch 2 (through torch.save), it ends identical
    part = build_sampler("regularized_evolution", settings, genomes, 11)
    run_sampler(part, score, stop_after=2)
    buffer = io.BytesIO()
    torch.save(part.state_dict(), buffer)
    buffer.seek(0)
    resumed = build_sampler("regularized_evolution", settings, genomes, 11)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    run_sampler(resumed, score)
    assert [(s.row, s.generation) for s in resumed.scored] == [(s.row, s.generation) for s in whole.scored]


def test_regularized_evolution_settings_are_checked():
    with pytest.raises(ConfigError, match=r"k\.sample_size: 6; a tournament draws between 1 and population_size \(5\)"):
        RegularizedEvolution.check_settings(RegularizedEvolutionSettings(population_size=5, sample_size=6), "k")


# -- through the command --------------------------------------------------------------------------


def test_tpe_and_nsga2_run_through_the_same_command_within_the_limits(tmp_path):
    """TPE with a parameter limit (every trial within it: filtered before training), NSGA-II with
    its Pareto front of val top-1 against parameters, each through `archnas`."""
    limit = 30000
    assert main(args(tmp_path, "tpe", "nas.search.multi_trial.strategy=optuna_tpe", f"nas.search.cost.max_params={limit}",
                     "nas.search.multi_trial.optuna_tpe={n_archs: 3, per_generation: 3, n_startup_trials: 2}")) == 0
    rows = trials(tmp_path, "tpe")
    assert len(rows) == 3 and all(t["params"] <= limit for t in rows)
    assert all((tmp_path / "tpe" / t["folder"] / "trial.json").is_file() for t in rows)
    assert main(args(tmp_path, "nsga", "nas.search.multi_trial.strategy=optuna_nsga2",
                     "nas.search.multi_trial.optuna_nsga2={population: 2, generations: 2}")) == 0
    result = json.loads((tmp_path / "nsga" / "search" / "search_result.json").read_text())["metrics"]
    assert result["strategy"] == "optuna_nsga2" and result["trials"] == 4 and result["pareto_front_size"] >= 1
    pareto = (tmp_path / "nsga" / "search" / "pareto.csv").read_text().splitlines()
    assert pareto[0].startswith("index,generation,accuracy,params,macs,on_front") and len(pareto) == 5
    assert (tmp_path / "nsga" / "search" / "pareto.png").stat().st_size > 1000


def test_a_minutes_budget_is_judged_on_recorded_trial_time_between_batches(tmp_path):
    """A budget spent by the first batch: the search stops after it, and says so."""
    assert main(args(tmp_path, "min", "nas.search.multi_trial.max_trials=null",
                     "nas.search.multi_trial.max_minutes=1e-6")) == 0
    result = json.loads((tmp_path / "min" / "search" / "search_result.json").read_text())["metrics"]
    assert result["trials"] == 2 and "minutes of training recorded by 2 trials" in result["stopped_by"]
    assert result["trial_minutes"] == pytest.approx(sum(t["train_time"] for t in trials(tmp_path, "min")) / 60)


@pytest.mark.slow  # about 15 s: a subprocess killed at a random trial, its rerun, and an uninterrupted run
def test_sigkill_then_rerun_retrains_no_finished_trial_and_ends_as_an_uninterrupted_search(tmp_path, capsys):
    assert main(args(tmp_path, "whole")) == 0
    kill_at = random.Random(KILL_SEED).randint(1, 3)
    where = f"ARCHNAS_KILL_SEED={KILL_SEED}, SIGKILL after trial {kill_at}"
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "main.py"), *args(tmp_path, "killed")], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        m = TRIAL.search(line)
        if m and int(m[1]) == kill_at:
            proc.kill()
            break
    assert proc.wait(timeout=600) == -signal.SIGKILL, f"{where}: the search ended before it was killed"
    search = tmp_path / "killed" / "search"
    done = sorted(p.parent.name for p in search.glob("trial_*/trial.json"))
    assert len(done) >= kill_at, where
    stamps = {name: (search / name / "trial.json").stat().st_mtime_ns for name in done}
    capsys.readouterr()
    assert main(args(tmp_path, "killed")) == 0
    out = capsys.readouterr().out
    # the trials the checkpoint records are not asked again; every other finished one is read back
    resumed = re.search(r"after batch \d+, (\d+) trials finished", out)
    recorded = int(resumed[1]) if resumed else 0
    assert out.count("already finished") == len(done) - recorded, f"{where}: {out[-3000:]}"
    assert stamps == {name: (search / name / "trial.json").stat().st_mtime_ns for name in done}, where
    assert same(trials(tmp_path, "killed")) == same(trials(tmp_path, "whole")), where


@pytest.mark.slow  # starting a local Ray takes 10-40 s on 2 cores
def test_two_ray_workers_give_what_one_process_gives(tmp_path):
    """The search's trials on 2 Ray workers and in 1 process (the random baseline's architectures go
    through the same `archnas.trials.run_trials`)."""
    pytest.importorskip("ray")
    assert main(args(tmp_path, "one")) == 0
    assert main(args(tmp_path, "ray", "common.ray.enabled=true", "common.ray.cpus_per_trial=1")) == 0
    assert same(trials(tmp_path, "ray")) == same(trials(tmp_path, "one"))
    one, ray = (json.loads((tmp_path / e / "search" / "search_result.json").read_text()) for e in ("one", "ray"))
    assert one["arch"] == ray["arch"] and one["metrics"]["best_val_top1"] == ray["metrics"]["best_val_top1"]
