"""Reruns of an existing experiment: refused ones change nothing, --force changes take effect from
the resume step and say so, more epochs train on from the last checkpoint, --restart keeps the
old folder.

One finished tiny run (search and eval, 2 epochs each) is made once; every test works on its own
copy of it, so no test sees another's files.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from archnas.cli import main
from archnas.training.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
# first order: the search step is half the work, and nothing here depends on the order
BASE = ("common.tensorboard=false", "nas.search.trainer.bilevel_order=first")
SEARCH_STEPS = 3  # per epoch: 240 images, half held out for the alphas, batches of 40
EVAL_STEPS = 6  # 240 images in batches of 40


def run(root: Path, *extra: str) -> int:
    return main(["--config", TINY, "--exp-name", "tiny", f"common.results_dir={root}",
                 f"common.cache_dir={root.parent / 'cache'}", *BASE, *extra])


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, and every folder (as "dir"), by relative path."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def steps(folder: Path) -> int:
    return read_checkpoint(folder / "checkpoint_last.pt")["state"]["trainer"]["global_step"]


def epochs_in(folder: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rerun") / "results"
    assert run(root) == 0
    return root


@pytest.fixture
def exp(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run: results/tiny/{search,eval}."""
    root = tmp_path / "results"
    shutil.copytree(finished_run, root)
    return root / "tiny"


def interrupted(exp: Path, phase: str) -> None:
    """Make `phase` look interrupted after its last checkpoint: no completion marker."""
    (exp / phase / {"search": "search_result.json", "eval": "metrics.json"}[phase]).unlink()


PRIMITIVES = "nas.search.model_desc.primitives=[max_pool_3x3,skip_connect,sep_conv_3x3]"

# (name, phase made to look interrupted or None, extra arguments, what the one error line names)
REFUSED = [
    ("search key changed", None, ["nas.search.model_desc.n_nodes=3"], "nas.search.model_desc.n_nodes"),
    ("eval key changed", None, ["nas.eval.trainer.grad_clip=1.0"], "nas.eval.trainer.grad_clip"),
    ("split changed, finished", None, ["nas.search.loader.val_ratio=0.25"], "nas.search.loader.val_ratio"),
    ("split changed, interrupted search", "search", ["nas.search.loader.val_ratio=0.25"], "nas.search.loader.val_ratio"),
    ("eval macro changed, interrupted eval", "eval", ["nas.eval.model_desc.n_cells=2"], "nas.eval.model_desc.n_cells"),
    ("eval macro changed, interrupted eval, --force", "eval", ["nas.eval.model_desc.n_cells=2", "--force"],
     "nas.eval.model_desc.n_cells"),
    ("primitives changed, interrupted search, --force", "search", [PRIMITIVES, "--force"],
     "nas.search.model_desc.primitives"),
    ("primitives changed, finished search, --force", None, [PRIMITIVES, "--force"], "--restart"),
    ("architecture changed, finished eval", None, ["nas.eval.final_desc=DARTS_V2"], "nas.eval.final_desc"),
    ("architecture changed, finished eval, --force", None, ["nas.eval.final_desc=DARTS_V2", "--force"],
     "nas.eval.final_desc"),
    ("forced lr change on a finished eval", None, ["nas.eval.trainer.optimizer.lr=0.05", "--force"], "--restart"),
    ("optimizer type changed, interrupted eval, --force", "eval", ["nas.eval.trainer.optimizer.type=adam", "--force"],
     "nas.eval.trainer.optimizer"),
    ("bad schedule value, interrupted eval, --force", "eval",
     ["nas.eval.trainer.lr_schedule.warmup={epochs: 5}", "--force"], "warmup.epochs"),
    ("fewer epochs, finished", None, ["nas.eval.trainer.epochs=1"], "nas.eval.trainer.epochs: 1 is fewer"),
    ("fewer epochs, interrupted", "eval", ["nas.eval.trainer.epochs=1"], "nas.eval.trainer.epochs: 1 is fewer"),
    ("search epochs 0", None, ["nas.search.trainer.epochs=0"], "nas.search.trainer.epochs"),
]


@pytest.mark.parametrize("name, phase, extra, names", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_refused_rerun_changes_no_file(exp: Path, capsys, name, phase, extra, names):
    if phase:
        interrupted(exp, phase)
    before = tree_hashes(exp.parent)
    capsys.readouterr()
    assert run(exp.parent, *extra) == 2, name
    err = capsys.readouterr().err
    assert err.count("archnas: error:") == 1 and "Traceback" not in err, err[-3000:]
    assert names in err.splitlines()[0] or names in err, err
    assert len(err) < 3000, f"{len(err)} characters of error"
    assert tree_hashes(exp.parent) == before, name


def test_search_epochs_0_is_refused_before_anything_is_written(tmp_path, capsys):
    assert run(tmp_path / "results", "nas.search.trainer.epochs=0") == 2
    err = capsys.readouterr().err
    assert err.count("archnas: error:") == 1 and "nas.search.trainer.epochs: 0" in err and "Traceback" not in err
    assert not (tmp_path / "results" / "tiny" / "search").exists()


def test_more_eval_epochs_train_exactly_one_more_epoch_from_the_checkpoint(exp: Path, capsys):
    search_before = tree_hashes(exp / "search")
    assert steps(exp / "eval") == 2 * EVAL_STEPS
    capsys.readouterr()
    assert run(exp.parent, "nas.eval.trainer.epochs=3") == 0
    out = capsys.readouterr().out
    assert steps(exp / "eval") == 3 * EVAL_STEPS and epochs_in(exp / "eval") == [1, 2, 3]
    where = f"at global step {2 * EVAL_STEPS} (epoch 3, step 0)"
    assert f"lr schedule recomputed (from 2 to 3 epochs, {EVAL_STEPS} -> {EVAL_STEPS} steps per epoch) {where}" in out
    assert f"resumed from {exp / 'eval' / 'checkpoint_last.pt'} at epoch 3" in out
    metrics = json.loads((exp / "eval" / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["config"]["nas"]["eval"]["trainer"]["epochs"] == 3
    [change] = metrics["config_changes"]
    assert change["global_step"] == 2 * EVAL_STEPS and change["schedule_recomputed"]
    assert change["changed"]["nas.eval.trainer.epochs"] == [2, 3]
    assert json.loads((exp / "eval" / "run.json").read_text())["resumed"]["global_step"] == 2 * EVAL_STEPS
    assert tree_hashes(exp / "search") == search_before  # the search was finished and is not touched


def test_more_search_epochs_train_on_and_the_eval_follows_the_new_architecture(exp: Path, capsys):
    """With a forced change of the alpha optimizer (no schedule: its lr is the config's from here on)."""
    old_marker = json.loads((exp / "search" / "search_result.json").read_text())
    old_eval = tree_hashes(exp / "eval")
    capsys.readouterr()
    assert run(exp.parent, "nas.search.trainer.epochs=3", "nas.search.trainer.alpha_optimizer.lr=0.01", "--force") == 0
    out = capsys.readouterr().out
    assert steps(exp / "search") == 3 * SEARCH_STEPS and epochs_in(exp / "search") == [1, 2, 3]
    state = read_checkpoint(exp / "search" / "checkpoint_last.pt")["state"]
    assert [g["lr"] for g in state["alpha_optimizer"]["param_groups"]] == [0.01]
    assert f"lr schedule recomputed (from 2 to 3 epochs, {SEARCH_STEPS} -> {SEARCH_STEPS} steps per epoch) at " \
           f"global step {2 * SEARCH_STEPS}" in out
    marker = json.loads((exp / "search" / "search_result.json").read_text())
    assert marker["metrics"]["epochs"] == 3 and marker["config_changes"][0]["global_step"] == 2 * SEARCH_STEPS
    if marker["final_desc_fingerprint"] == old_marker["final_desc_fingerprint"]:
        assert "eval already finished" in out and tree_hashes(exp / "eval") == old_eval
    else:  # another architecture: the eval starts over, the old one is kept as it was
        assert tree_hashes(exp / "eval.old-1") == old_eval and steps(exp / "eval") == 2 * EVAL_STEPS
        assert "the old folder is kept as" in out


def test_a_forced_lr_change_takes_effect_from_the_resume_step(exp: Path, capsys):
    capsys.readouterr()
    assert run(exp.parent, "nas.eval.trainer.epochs=3", "nas.eval.trainer.optimizer.lr=0.05", "--force") == 0
    out = capsys.readouterr().out
    at = 2 * EVAL_STEPS
    assert f"from global step {at} (epoch 3, step 0) on:" in out and "nas.eval.trainer.optimizer.lr 0.025 -> 0.05" in out
    records = [json.loads(line) for line in (exp / "eval" / "metrics.jsonl").read_text().splitlines()]
    min_lr = 0.001  # confs/darts.yaml's eval schedule: cosine from lr to 0.001 over the epochs
    new_schedule = min_lr + (0.05 - min_lr) * (1 + math.cos(math.pi * at / (3 * EVAL_STEPS))) / 2
    assert records[2]["lr"] == pytest.approx(new_schedule)  # the new lr's schedule, not the old one's
    assert records[1]["lr"] < 0.025  # the epochs before were trained under the old lr
    metrics = json.loads((exp / "eval" / "metrics.json").read_text())
    assert metrics["config"]["nas"]["eval"]["trainer"]["optimizer"]["lr"] == 0.05
    [change] = metrics["config_changes"]
    assert change["global_step"] == at and change["changed"]["nas.eval.trainer.optimizer.lr"] == [0.025, 0.05]
    assert "lr: 0.05" in (exp / "eval" / "config.yaml").read_text()


def test_restart_keeps_the_old_folder_and_never_overwrites_a_kept_one(exp: Path, capsys):
    old = tree_hashes(exp / "eval")
    assert run(exp.parent, "--restart", "--no-search") == 0
    assert tree_hashes(exp / "eval.old-1") == old
    first = tree_hashes(exp / "eval")
    run_json = json.loads((exp / "eval" / "run.json").read_text())
    assert run_json["restarted"]["kept"].endswith("eval.old-1") and "resumed" not in run_json
    assert steps(exp / "eval") == 2 * EVAL_STEPS and epochs_in(exp / "eval") == [1, 2]
    assert run(exp.parent, "--restart", "--no-search", "nas.eval.trainer.epochs=1") == 0
    assert tree_hashes(exp / "eval.old-1") == old and tree_hashes(exp / "eval.old-2") == first
    assert steps(exp / "eval") == EVAL_STEPS
    assert not (exp / "search.old-1").exists()  # --no-search: the search is not touched
