"""Hard limits and the soft cost term of gradient searches over a module space, and models of
unlabelled SearchVariantsContainers in every pipeline: darts -> retrain, spos, enot
(tests/fixtures/plugins/containers.py:
three blocks, each a 3x3 conv, a 1x1 conv or nothing; labels blocks.0 .. blocks.2, their paths)."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from archnas import load_model_file
from archnas.errors import SpaceError
from archnas.space import SearchSpaceModel, build_network
from archnas.space.store import Weighting
from archnas.stats import model_stats

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "fixtures" / "plugins"
sys.path.insert(0, str(PLUGINS))
import containers  # noqa: E402

SPACE = "nas.search.space={factory: 'containers:build'}"
TINY = ["common.tensorboard=false", "dataset.limit_train=400", "dataset.limit_test=100", SPACE,
        "nas.search.loader.train_batch=20", "nas.search.trainer.epochs=2", "nas.search.trainer.alpha_optimizer.lr=0.05",
        "nas.search.trainer.alpha_optimizer.betas=[0.5, 0.999]", "nas.search.trainer.alpha_lr_schedule.type=constant",
        "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=1"]  # the alpha settings darts_nb201.yaml had before its tuning
MAX_MACS = 11560  # the stem and head (2,344) plus one 3x3 conv block (9,216): the searched argmax breaks it
SHAPE = [1, 8, 8]  # digits


def run(tmp_path: Path, name: str, config: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "archnas", "--import", "containers", "--config", str(REPO / "confs" / config),
           "--exp-name", name, f"common.results_dir={tmp_path}", *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def macs_of(arch: dict) -> int:
    """Counted on the network itself (not the search's cost table)."""
    return model_stats(build_network(lambda: containers.build(SHAPE, 10), arch), SHAPE)["macs"]


def best_within_by_enumeration(alphas: dict[str, torch.Tensor], bound: float) -> dict:
    """The most probable architecture (independent softmax per label) among all 27 within `bound`."""
    labels = sorted(alphas)
    best, best_score = None, -math.inf
    for row in itertools.product(range(3), repeat=len(labels)):
        arch = dict(zip(labels, row))
        score = sum(float(torch.log_softmax(alphas[label].double(), -1)[k]) for label, k in arch.items())
        if macs_of(arch) <= bound and score > best_score:
            best, best_score = arch, score
    return best


@pytest.mark.slow
def test_darts_ends_within_a_mac_limit_and_a_penalty_lowers_the_expected_macs(tmp_path: Path) -> None:
    # darts -> retrain over the container model, with a MAC limit its argmax breaks
    out = run(tmp_path, "limited", "darts_nb201.yaml", f"nas.search.cost.max_macs={MAX_MACS}")
    assert out.returncode == 0, out.stderr[-3000:]
    search = tmp_path / "limited" / "search"
    done = json.loads((search / "search_result.json").read_text())
    assert done["config"]["nas"]["search"]["cost"]["max_macs"] == MAX_MACS  # the limit is the search's config
    arch = yaml.safe_load((search / "arch.yaml").read_text())["arch"]
    assert set(arch) == {"blocks.0", "blocks.1", "blocks.2"}
    assert macs_of(arch) <= MAX_MACS and done["metrics"]["costs"]["macs"] == macs_of(arch)
    assert done["metrics"]["argmax_costs"]["macs"] > MAX_MACS  # the limit mattered
    state = torch.load(search / "checkpoint_last.pt", weights_only=True)["state"]["arch_params"]
    alphas = {label: state[f"arch.alphas.{label.replace('.', '_')}"] for label in arch}
    assert arch == best_within_by_enumeration(alphas, MAX_MACS)
    assert yaml.safe_load((tmp_path / "limited" / "eval" / "arch.yaml").read_text())["arch"] == arch  # retrained
    trained = load_model_file(tmp_path / "limited" / "eval" / "model_last.pt", plugins=["containers"])  # its network, built again
    assert trained.model(torch.zeros(2, *SHAPE)).shape == (2, 10)
    assert "expected cost under the architecture distribution: macs" in out.stderr + out.stdout

    # the same search with the soft term: the architecture distribution ends cheaper
    out = run(tmp_path, "penalized", "darts_nb201.yaml", f"nas.search.cost.max_macs={MAX_MACS}",
              "nas.search.cost.penalty={model: macs, weight: 1.0}", "--stages", "search")
    assert out.returncode == 0, out.stderr[-3000:]

    def expected(name: str) -> float:
        lines = (tmp_path / name / "search" / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["expected_macs"]

    assert expected("penalized") < expected("limited")


@pytest.mark.slow
def test_spos_searches_and_retrains_a_model_of_unlabelled_containers(tmp_path: Path) -> None:
    out = run(tmp_path, "spos", "spos_nb201.yaml", "nas.search.spos.strategy=random",
              "nas.search.spos.random={n_archs: 4, per_generation: 4}", "nas.search.spos.bn_recalibration.batches=1",
              "nas.search.trainer.epochs=1")
    assert out.returncode == 0, out.stderr[-3000:]
    arch = yaml.safe_load((tmp_path / "spos" / "search" / "arch.yaml").read_text())["arch"]
    assert set(arch) == {"blocks.0", "blocks.1", "blocks.2"}
    assert yaml.safe_load((tmp_path / "spos" / "eval" / "arch.yaml").read_text())["arch"] == arch


def test_enot_pretrains_searches_and_tunes_a_model_of_unlabelled_containers(tmp_path: Path) -> None:
    out = run(tmp_path, "enot", "enot_mobilenet.yaml", "nas.search.trainer.epochs=1", "nas.search.enot.epochs=1",
              "nas.search.enot.bn_tune_batches=1", "nas.search.enot.bn_validation_tune_batches=1",
              f"nas.search.cost.max_macs={MAX_MACS}")
    assert out.returncode == 0, out.stderr[-3000:]
    arch = yaml.safe_load((tmp_path / "enot" / "search" / "arch.yaml").read_text())["arch"]
    assert set(arch) == {"blocks.0", "blocks.1", "blocks.2"} and macs_of(arch) <= MAX_MACS
    assert yaml.safe_load((tmp_path / "enot" / "tune" / "arch.yaml").read_text())["arch"] == arch
    assert (tmp_path / "enot" / "tune" / "model_last.pt").is_file()


def test_a_network_of_unlabelled_containers_is_the_frozen_model_at_its_path_labels() -> None:
    space = SearchSpaceModel(containers.build(SHAPE, 10))
    assert list(space.specs) == ["blocks.0", "blocks.1", "blocks.2"]
    net = build_network(lambda: containers.build(SHAPE, 10), {"blocks.0": 0, "blocks.1": 2, "blocks.2": 1})
    assert isinstance(net.blocks[1], torch.nn.Identity) and net.blocks[2][0].kernel_size == (1, 1)
    assert set(net.state_dict()) == set(space.get_network_by_indexes([0, 2, 1]).state_dict())


def test_get_network_with_best_arch_refuses_untrained_architecture_parameters() -> None:
    space = SearchSpaceModel(containers.build(SHAPE, 10))
    x, y = torch.randn(4, *SHAPE), torch.tensor([0, 1, 2, 3])
    for _ in range(2):  # a single-path pretrain: fixed paths train only the weights
        space.sample_random_arch()
        torch.nn.functional.cross_entropy(space(x), y).backward()
    with pytest.raises(SpaceError, match="no architecture parameter of this space has been trained.*"
                                         "get_network_by_indexes"):
        space.get_network_with_best_arch()
    space.get_network_by_indexes([0, 1, 2])  # what it offers instead
    # once a gradient reaches the architecture parameters (a search), the best architecture is theirs
    space.arch.use(Weighting())  # the softmax of the alphas, as DARTS weighs them
    torch.nn.functional.cross_entropy(space(x), y).backward()
    assert isinstance(space.get_network_with_best_arch(), torch.nn.Module)


def test_limits_on_darts_cells_are_one_clear_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "archnas", "--config", str(REPO / "confs" / "darts.yaml"),
           f"common.results_dir={tmp_path}", "nas.search.cost.max_macs=100000"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                                         os.environ.get("PYTHONPATH")]))})
    errors = [line for line in out.stderr.splitlines() if line.startswith("archnas: error")]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert errors[0].startswith("archnas: error: nas.search.cost.max_macs: darts honours cost limits and the cost "
                                "penalty only over a space over a module (nas.search.space)")
    assert not any(tmp_path.iterdir())  # nothing written
