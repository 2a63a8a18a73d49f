"""ENAS (`nas.algo: enas`, archnas/algos/enas.py and its controller archnas/nas/controller.py):
REINFORCE that learns a rewarded choice with either controller, a search of NB201 (then the
eval) through the command whose final architecture is the checkpointed controller's greedy decode
and whose epochs record the mean reward, and an LSTM search of DARTS cells SIGKILLed at a random
step that reruns bit-identically. Bad input: tests/test_bad_input.py."""

from __future__ import annotations

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

from archnas.cli import main
from archnas.config.schema import DatasetConf
from archnas.nas.controller import EnasConf, Reinforce
from archnas.nas.spaces import module_space
from archnas.stats import dataset_info
from archnas.training.checkpoint import read_checkpoint
from archnas.training.metrics import without_timings

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
KILL_SEED = int(os.environ.get("ARCHNAS_KILL_SEED", "0"))  # set and printed by conftest.py
NB201 = "{name: nb201, C: 4, N: 1}"
TINY = ["common.tensorboard=false", "common.log_every_steps=1", "dataset.limit_train=240", "dataset.limit_test=80",
        f"nas.search.space={NB201}", "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=2",
        f"nas.eval.space={NB201}", "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=1"]
CELLS = ["nas.search.space={}", "nas.search.model_desc.n_cells=2", "nas.search.model_desc.n_nodes=2",
         "nas.search.model_desc.n_reductions=1", "nas.search.model_desc.model_stems.init_node_ch=4",
         "nas.search.enas.controller=lstm", "nas.search.enas.lstm_size=16"]
STEP = re.compile(r"search epoch (\d+)/\d+: step (\d+)/(\d+)")


def args(results: Path, *extra: str, config: str = "enas_nb201.yaml") -> list[str]:
    return ["--config", str(REPO / "confs" / config), "--exp-name", "e", f"common.results_dir={results}", *TINY,
            *extra]


def genome_specs() -> list[str]:
    return list(module_space(yaml.safe_load(NB201)).genome(dataset_info(DatasetConf(name="digits"), ".")).specs)


def greedy_of_checkpoint(exp: Path, conf: EnasConf, counts: tuple[int, ...]) -> list[int]:
    """The greedy decode of the controller the search's last checkpoint holds."""
    state = read_checkpoint(exp / "search" / "checkpoint_last.pt")["state"]
    learner = Reinforce(conf, counts, seed=0)
    learner.policy.load_state_dict(state["controller"])
    return learner.greedy()


@pytest.mark.parametrize("controller", ["independent", "lstm"])
def test_reinforce_learns_the_rewarded_choices(controller):
    """Reward 1 when gene 0 takes option 3 and gene 2 option 1, else 0: the greedy decode ends on
    both (a sign error in the update, or a baseline used wrongly, would drive it away)."""
    conf = EnasConf(controller=controller, lr=0.1, baseline_decay=0.9, lstm_size=8)
    learner = Reinforce(conf, (5, 4, 3), seed=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        row, log_p, entropy = learner.sample(g)
        learner.update(log_p, entropy, float(row[0] == 3 and row[2] == 1))
    greedy = learner.greedy()
    assert greedy[0] == 3 and greedy[2] == 1, greedy
    assert learner.baseline is not None and 0.3 < learner.baseline <= 1.0 + 1e-3


def test_enas_searches_nb201_records_its_rewards_and_retrains_the_greedy_architecture(tmp_path, capsys):
    # independent logits here (the config's LSTM is the cells test's)
    assert main(args(tmp_path, "nas.search.enas.controller=independent")) == 0, capsys.readouterr().err[-3000:]
    exp = tmp_path / "e"
    records = [json.loads(line) for line in (exp / "search" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert 0.0 <= r["enas_val_top1"] <= 1.0 and r["enas_reward"] > r["enas_val_top1"]  # + the entropy bonus
        assert 0.0 < r["enas_entropy"] <= 6 * torch.log(torch.tensor(5.0)).item() + 1e-6
        assert r["enas_baseline"] is not None
        # the controller's distribution along its greedy path, in the alphas' format (the heatmaps')
        assert sorted(r["alphas"]) == sorted(genome_specs())
        assert all(sum(e["softmax"][label]) == pytest.approx(1, abs=1e-5) and len(e["ops"]) == 5
                   for label, e in r["alphas"].items())
    arch = yaml.safe_load((exp / "search" / "arch.yaml").read_text())["arch"]
    assert arch == records[-1]["enas_arch"]
    space = module_space(yaml.safe_load(NB201))
    genome = space.genome(dataset_info(DatasetConf(name="digits"), str(tmp_path)))
    assert genome.decode(greedy_of_checkpoint(exp, EnasConf(lr=5e-3), genome.counts)) == arch
    state = read_checkpoint(exp / "search" / "checkpoint_last.pt")["state"]
    assert {"controller", "controller_optimizer", "enas", "val_stream"} <= set(state)
    assert "arch_params" not in state  # the store's alphas are not what it trains
    assert state["enas"]["baseline"] == records[-1]["enas_baseline"]
    result = json.loads((exp / "result.json").read_text())
    assert result["algorithm"] == "enas" and 0.0 <= result["eval"]["test_top1"] <= 1.0
    assert yaml.safe_load((exp / "eval" / "arch.yaml").read_text())["arch"] == arch


@pytest.mark.slow  # 2 searches in process and 1 killed in a subprocess: about 10 s idle, 30 s at load 10
def test_an_lstm_search_of_darts_cells_killed_at_a_random_step_reruns_bit_identical(tmp_path, capsys):
    """The LSTM controller over DARTS cells (a path: per node two kept inputs, one op each),
    SIGKILLed at a step drawn from ARCHNAS_KILL_SEED (in the message) and rerun in this process:
    the controller, its Adam, the baseline and reward sums, the supernet and every record equal
    those of a run that was never interrupted."""
    settings = ("--no-eval", "common.deterministic=true", "common.checkpoint.every_steps=1", *CELLS)
    assert main(args(tmp_path / "a", *settings)) == 0, capsys.readouterr().err[-3000:]
    straight = tmp_path / "a" / "e" / "search"
    assert "Genotype(normal=" in (straight / "genotype.txt").read_text()
    last = json.loads((straight / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(last["enas_arch"]) == {"regular", "reduction"} and "enas_reward" in last
    assert any(k.startswith("lstm.") for k in read_checkpoint(straight / "checkpoint_last.pt")["state"]["controller"])
    step = random.Random(f"{KILL_SEED}:enas").randint(1, 5)  # 3 steps per epoch, 2 epochs
    where = f"ARCHNAS_KILL_SEED={KILL_SEED}, SIGKILL at step {step}"
    cmd = [sys.executable, str(REPO / "scripts" / "main.py"), *args(tmp_path / "b", *settings)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        m = STEP.search(line)
        if m and (int(m[1]) - 1) * int(m[3]) + int(m[2]) >= step:
            proc.kill()
            break
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"{where}: the search ended first"
    assert main(args(tmp_path / "b", *settings)) == 0, f"{where}: {capsys.readouterr().err[-3000:]}"
    a, b = (read_checkpoint(p / "e" / "search" / "checkpoint_last.pt")["state"] for p in (tmp_path / "a", tmp_path / "b"))
    for name in ("controller", "controller_optimizer", "model", "optimizer", "val_stream"):
        assert json.dumps(without_tensors(a[name])) == json.dumps(without_tensors(b[name])), f"{where}: {name}"
        assert tensors_equal(a[name], b[name]), f"{where}: {name}"
    assert a["enas"] == b["enas"], where
    runs = [[without_timings(json.loads(x)) for x in (p / "e" / "search" / "metrics.jsonl").read_text().splitlines()]
            for p in (tmp_path / "a", tmp_path / "b")]
    assert runs[0] == runs[1], where
    assert (tmp_path / "a" / "e" / "search" / "arch.yaml").read_text() == \
        (tmp_path / "b" / "e" / "search" / "arch.yaml").read_text(), where


def without_tensors(tree):
    if isinstance(tree, torch.Tensor):
        return list(tree.shape)
    if isinstance(tree, dict):
        return {str(k): without_tensors(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [without_tensors(v) for v in tree]
    return tree


def tensors_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    return True
