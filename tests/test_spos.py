"""Single-path one-shot search (spos): uniform paths that are a function of (seed, step) across a
kill and across ranks, BatchNorm recalibration, evolution that resumes exactly, the ranking check,
the Pareto front, and bad input."""

from __future__ import annotations

import csv
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
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import archnas.hub  # noqa: F401
from archnas.nas.samplers import Evolution, EvolutionSettings, RandomSampling
from archnas.nas.pareto import pareto_front
from archnas.nas.pretrain import step_arch
from archnas.nas.spaces import module_space
from archnas.nas.ranking import rank_correlations
from archnas.space import SearchSpaceModel, create_space
from archnas.training.bn_recalibration import recalibrate_bn
from archnas.training.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["common.tensorboard=false", "common.log_every_steps=1", "dataset.limit_train=240", "dataset.limit_test=120",
        "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=2",
        "nas.search.spos.evolution={population: 4, parents: 2, mutations: 2, crossovers: 2, generations: 5}",
        "nas.search.spos.bn_recalibration.batches=2", "nas.search.cost.max_params=null",
        "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=1"]
GENERATION = re.compile(r"generation (\d+)/\d+: ")
STEP = re.compile(r"pretrain epoch (\d+)/\d+: step (\d+)/(\d+)")
KILL_SEED = int(os.environ.get("ARCHNAS_KILL_SEED", "0"))  # set and printed by conftest.py


def command(results: Path, *extra: str, ranks: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--standalone"] \
        if ranks > 1 else [sys.executable]
    return [*launcher, str(REPO / "scripts" / "main.py"), "--config", str(REPO / "confs" / "spos_nb201.yaml"),
            "--exp-name", "sp", f"common.results_dir={results}", *TINY, *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)


def kill_when(cmd: list[str], pattern: re.Pattern, reached) -> int:
    """Run `cmd` and SIGKILL it at the first output line where `reached(match)` holds."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        m = pattern.search(line)
        if m and reached(m):
            proc.kill()
            break
    proc.wait(timeout=600)
    return proc.returncode


NB201 = module_space({"name": "nb201", "C": 4, "N": 1})  # what draws the paths of tiny_space's supernet


def tiny_space() -> SearchSpaceModel:
    return SearchSpaceModel(create_space("nb201", input_shape=(1, 8, 8), n_classes=10, C=4, N=1))


# -- sampled paths ------------------------------------------------------------------------------


def test_a_step_path_is_a_function_of_seed_and_step():
    space = tiny_space()
    assert step_arch(NB201, space, 2, 7) == step_arch(NB201, tiny_space(), 2, 7)
    paths = [step_arch(NB201, space, 2, s) for s in range(40)]
    assert len({json.dumps(p, sort_keys=True) for p in paths}) > 30, "the steps draw different paths"
    assert (step_arch(NB201, space, 3, 7) != step_arch(NB201, space, 2, 7)
            or step_arch(NB201, space, 3, 8) != step_arch(NB201, space, 2, 8))
    counts = {c: 0 for c in space.specs["cell__0_1"].choices}
    for s in range(500):
        counts[step_arch(NB201, space, 0, s)["cell__0_1"]] += 1
    assert min(counts.values()) > 60, f"uniform over the 5 candidates: {counts}"


@pytest.mark.slow  # about 25 s: three spos runs, two of them killed
def test_a_run_killed_in_pretrain_and_after_generation_3_ends_bit_identical(tmp_path):
    """SIGKILL in the second pretrain epoch, rerun, SIGKILL after the third generation, rerun: the
    same sampled paths (their digests per epoch), the same supernet weights and the same search
    (arch.yaml, every scored candidate, the cost statistics) as one uninterrupted run."""
    settings = ("--no-eval", "common.checkpoint.every_steps=1", "common.deterministic=true")
    assert run(command(tmp_path / "a", *settings)).returncode == 0
    killed = command(tmp_path / "b", *settings)
    step = random.Random(f"{KILL_SEED}:spos").randint(1, 2)  # in the second epoch, of 3 steps
    where = f"ARCHNAS_KILL_SEED={KILL_SEED}, SIGKILL at pretrain epoch 2 step {step}, then after generation 3"
    code = kill_when(killed, STEP, lambda m: int(m[1]) == 2 and int(m[2]) >= step)
    assert code == -signal.SIGKILL, f"{where}: the pretrain ended before it was killed"
    assert kill_when(killed, GENERATION, lambda m: int(m[1]) == 3) == -signal.SIGKILL, where
    assert "search_result.json" not in os.listdir(tmp_path / "b" / "sp" / "search")
    out = run(killed)
    assert out.returncode == 0 and "resumed the search" in out.stdout + out.stderr, where
    a, b = (tmp_path / x / "sp" for x in ("a", "b"))
    digests = [[json.loads(line)["path_digest"] for line in (d / "pretrain" / "metrics.jsonl").read_text().splitlines()]
               for d in (a, b)]
    assert digests[0] == digests[1] and len(digests[0]) == 2, where
    weights = [read_checkpoint(d / "pretrain" / "checkpoint_last.pt")["state"]["model"] for d in (a, b)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    for name in ("arch.yaml", "pareto.csv", "latency_stats.json"):
        assert (a / "search" / name).read_text() == (b / "search" / name).read_text(), name
    result = json.loads((a / "search" / "search_result.json").read_text())
    assert result["metrics"]["generations"] == 5 and result["metrics"]["candidates_scored"] >= 4 + 4 * 2


def test_two_ranks_draw_the_paths_one_process_draws(tmp_path):
    """Every rank draws its step's path from (seed, step): two ranks agree with each other (the run
    checks it every epoch) and with one process over the same global batches."""
    assert run(command(tmp_path / "one", "--no-eval", "nas.search.spos.evolution.generations=1")).returncode == 0
    out = run(command(tmp_path / "two", "--no-eval", "nas.search.spos.evolution.generations=1", ranks=2))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    digests = [[json.loads(line)["path_digest"] for line in (tmp_path / x / "sp" / "pretrain" / "metrics.jsonl")
                .read_text().splitlines()] for x in ("one", "two")]
    assert digests[0] == digests[1]


# -- BatchNorm recalibration ----------------------------------------------------------------------


def test_bn_recalibration_raises_the_inherited_accuracy_of_random_subnets():
    """A supernet pretrained briefly with uniform paths: its running statistics average over all
    paths, so subnets scored with them do worse than after re-estimating them for each subnet."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    space = SearchSpaceModel(create_space("nb201", input_shape=(1, 8, 8), n_classes=10, C=8, N=1))
    opt = torch.optim.SGD(space.model_parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for step in range(150):
        idx = torch.randint(0, 1200, (64,), generator=g)
        space.set_architecture(step_arch(NB201, space, 0, step))
        loss = torch.nn.functional.cross_entropy(space(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 320, 64)]
    held_out = (x[1200:], y[1200:])
    state = {k: v.clone() for k, v in space.state_dict().items()}

    def accuracy(arch, recalibrate: bool) -> float:
        space.load_state_dict(state)
        space.set_architecture(arch)
        if recalibrate:
            assert recalibrate_bn(space, train_batches) == len(train_batches)
        space.eval()
        with torch.no_grad():
            return float((space(held_out[0]).argmax(1) == held_out[1]).float().mean())

    archs = [step_arch(NB201, space, 99, i) for i in range(10)]
    plain = sum(accuracy(a, False) for a in archs) / 10
    recalibrated = sum(accuracy(a, True) for a in archs) / 10
    assert recalibrated > plain + 0.05, (plain, recalibrated)
    momenta = {m.momentum for m in space.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}, "recalibration leaves the momentum as it was"


# -- evolution ------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, derandomize=True)
@given(counts=st.lists(st.integers(1, 5), min_size=1, max_size=6), seed=st.integers(0, 10_000),
       bound=st.integers(0, 12))
def test_evolution_proposes_only_new_allowed_candidates(counts, seed, bound):
    allows = lambda row: sum(row) <= bound  # noqa: E731  (a limit on a toy cost)
    search = Evolution(counts, EvolutionSettings(6, 3, 3, 3, 0.3, 4), seed, allows, max_tries=20)
    run_to_end(search, lambda row: float(-sum((k - 1) ** 2 for k in row)))
    rows = [s.row for s in search.scored]
    assert len(rows) == len(set(rows)), "no candidate is scored twice"
    assert all(allows(r) and all(0 <= k < c for k, c in zip(r, counts)) for r in rows)


def test_evolution_improves_on_random_search_for_the_same_budget():
    counts = [5] * 10
    target = (3, 1, 4, 1, 0, 2, 3, 4, 0, 1)
    score = lambda row: -sum(a != b for a, b in zip(row, target))  # noqa: E731
    evo_best, rnd_best = [], []
    for seed in range(5):
        evo = Evolution(counts, EvolutionSettings(20, 5, 10, 10, 0.1, 10), seed, lambda r: True)
        rnd = RandomSampling(counts, 200, 20, seed, lambda r: True)
        for search, best in ((evo, evo_best), (rnd, rnd_best)):
            run_to_end(search, score)
            best.append(search.best(1)[0].score)
    assert sum(evo_best) > sum(rnd_best), (evo_best, rnd_best)


def test_an_evolution_state_saved_after_any_generation_resumes_to_the_same_end():
    counts = [3, 4, 2, 5]
    score = lambda row: float(row[0] * 3 - row[1] + row[2] * row[3])  # noqa: E731
    straight = Evolution(counts, EvolutionSettings(5, 2, 3, 3, 0.2, 6), 1, lambda r: True)
    run_to_end(straight, score)
    for stop in range(1, 6):
        first = Evolution(counts, EvolutionSettings(5, 2, 3, 3, 0.2, 6), 1, lambda r: True)
        run_to_end(first, score, batches=stop)
        saved = torch.load(_roundtrip(first.state_dict()), weights_only=True)
        second = Evolution(counts, EvolutionSettings(5, 2, 3, 3, 0.2, 6), 1, lambda r: True)
        second.load_state_dict(saved)
        run_to_end(second, score)
        assert [s.to_dict() for s in second.scored] == [s.to_dict() for s in straight.scored], stop


def run_to_end(sampler, score, batches=None):
    """Ask, score and tell batch after batch (`batches` of them, or to the sampler's end)."""
    while not sampler.done and (batches is None or sampler.generation < batches):
        for row in sampler.ask():
            sampler.tell(row, score(row))


def _roundtrip(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


# -- Pareto front and limits ----------------------------------------------------------------------


def test_pareto_front_keeps_the_candidates_no_other_beats():
    points = [(1, 0.5), (2, 0.6), (2, 0.55), (3, 0.6), (0.5, 0.2), (4, 0.9), (1, 0.5)]
    assert pareto_front(points) == [True, True, False, False, True, True, False]


def test_a_limited_run_picks_within_the_limit_records_the_front_and_checks_the_ranking(tmp_path):
    """One whole run (pretrain, search under a limit, ranking check, eval); the ranking check's
    tau and rho are scipy's on the accuracies it records."""
    out = run(command(tmp_path, "nas.search.cost.max_params=9000", "nas.search.cost.pareto=params",
                      "nas.search.ranking_check={n_archs: 5, epochs: 1}"))
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "sp"
    stats_file = json.loads((exp / "search" / "latency_stats.json").read_text())
    assert stats_file["params"]["min"] <= 9000 < stats_file["params"]["max"]
    assert stats_file["params"]["exact"] and stats_file["archs"] == 5 ** 6
    rows = list(csv.DictReader((exp / "search" / "pareto.csv").open()))
    assert rows and all(float(r["params"]) <= 9000 for r in rows)
    front = [r for r in rows if r["on_front"] == "1"]
    assert front and max(float(r["accuracy"]) for r in front) == max(float(r["accuracy"]) for r in rows)
    assert (exp / "search" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((exp / "result.json").read_text())
    assert result["eval"]["params"] <= 9000
    assert result["search"]["best_costs"]["params"] == result["eval"]["params"]
    arch = yaml.safe_load((exp / "search" / "arch.yaml").read_text())["arch"]
    assert arch == result["search"]["arch"]
    ranking = json.loads((exp / "ranking" / "ranking.json").read_text())
    standalone = [a["standalone_val_top1"] for a in ranking["archs"]]
    inherited = [a["inherited_val_top1"] for a in ranking["archs"]]
    assert len(standalone) == 5 and len({json.dumps(a["arch"], sort_keys=True) for a in ranking["archs"]}) == 5
    tau, rho = stats.kendalltau(standalone, inherited).statistic, stats.spearmanr(standalone, inherited).statistic
    assert ranking["kendall_tau"] == pytest.approx(tau, nan_ok=True) or (ranking["kendall_tau"] is None and tau != tau)
    assert ranking["spearman_rho"] == pytest.approx(rho, nan_ok=True) or (ranking["spearman_rho"] is None and rho != rho)
    assert "Kendall's tau" in out.stdout + out.stderr
    assert list(result) == ["algorithm", "pretrain", "search", "ranking", "eval", "plot"] and result["ranking"]["n_archs"] == 5
    assert result["pretrain"]["epochs"] == 2 and result["pretrain"]["peak_memory"] > 0
    assert f"best within max_params 9,000: {arch}" in out.stdout + out.stderr, "the summary names it"


# -- the ranking check ----------------------------------------------------------------------------


def test_rank_correlations_are_scipys_on_a_constructed_ranking():
    standalone = [0.91, 0.85, 0.88, 0.70, 0.95, 0.80]
    inherited = [0.40, 0.35, 0.45, 0.20, 0.50, 0.30]
    out = rank_correlations(standalone, inherited)
    assert out["kendall_tau"] == pytest.approx(stats.kendalltau(standalone, inherited).statistic)
    assert out["spearman_rho"] == pytest.approx(stats.spearmanr(standalone, inherited).statistic)
    assert out["kendall_tau"] == pytest.approx(13 / 15)  # one discordant pair (0.85/0.88 vs 0.35/0.45) of 15
    assert rank_correlations([1, 2, 3], [3, 2, 1])["spearman_rho"] == pytest.approx(-1)
    assert rank_correlations([1, 1, 1], [3, 2, 1])["kendall_tau"] is None


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("override,message", [
    ("nas.search.cost.max_params=100", "nas.search.cost.max_params: 100 is below the cheapest architecture of the "
                                       "space, "),
    ("nas.search.cost.pareto=flops", "nas.search.cost.pareto: unknown cost model 'flops'"),
    ("nas.search.ranking_check.n_archs=3", "nas.search.ranking_check: n_archs 3 must be at least 5"),
    ("nas.search.spos.strategy=gird", "nas.search.spos.strategy: 'gird' is not one of evolution, random, grid, "
                                      "optuna_tpe, optuna_nsga2"),
])
def test_bad_spos_settings_exit_2_with_one_message(tmp_path, override, message):
    out = run(command(tmp_path, override))
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert message in out.stderr and "Traceback" not in out.stderr + out.stdout
    assert len([line for line in out.stderr.splitlines() if line.startswith("archnas: error")]) == 1


def test_cost_limits_are_refused_by_algorithms_that_do_not_pick_subnets(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "main.py"), "--config", str(REPO / "confs" / "darts_nb201.yaml"),
           f"common.results_dir={tmp_path}", "nas.algo=pc_darts", "nas.search.cost.max_macs=1000000"]
    out = run(cmd)
    assert out.returncode == 2 and "pc_darts does not pick subnets under limits" in out.stderr

