"""The dry run (`--dry-run`, `--dry-run --json`, `archnas plan`): every stage built by its own code
and probed for a few steps, estimates that add up as documented, the space's costs and its
cheapest and largest architectures checked, and nothing created or changed under the results
folder (every file hashed before and after) nor left in the temporary folder."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from archnas.cli import main
from archnas.training.probe import TrainerMeasure, validation_passes

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
QUICK = ["common.tensorboard=false", "common.log_every_steps=0", "nas.search.trainer.bilevel_order=first",
         "--dry-run-steps", "2", "--dry-run-warmup", "1"]
NB201 = ["--config", str(REPO / "confs" / "spos_nb201.yaml"), "common.device=cpu", "common.tensorboard=false",
         "common.log_every_steps=0", "dataset.limit_train=160", "dataset.limit_test=40",
         "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=40",
         "nas.search.spos.evolution={population: 3, parents: 1, mutations: 2, crossovers: 0, generations: 2}",
         "nas.search.spos.bn_recalibration.batches=1", "nas.search.spos.score_batches=1",
         "nas.search.cost.max_params=null", "nas.search.cost.max_macs=null", "nas.search.cost.pareto=params"]


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("archnas-dry-run-*")}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder that already holds an experiment's files (which must stay byte-identical)."""
    root = tmp_path / "results"
    (root / "tiny_darts" / "search").mkdir(parents=True)
    (root / "tiny_darts" / "search" / "log.txt").write_text("an earlier run\n")
    (root / "README.md").write_text("results\n")
    return root


def plan_json(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)


@pytest.mark.slow  # about 20 s on 2 cores: a search and an eval probed, 8 networks counted, 2 ONNX exports
def test_plan_of_darts_estimates_each_stage_and_writes_nothing(results, capsys):
    before, temps = digests(results), leftovers()
    plan = plan_json(["plan", "--config", TINY, "--json", f"common.results_dir={results}", *QUICK], capsys)
    assert digests(results) == before and sorted(p.name for p in results.iterdir()) == ["README.md", "tiny_darts"]
    assert leftovers() == temps
    assert [s["name"] for s in plan["stages"]] == ["search", "eval", "plot"]
    search, eval_, plot = plan["stages"]
    assert plot["how"] == "not run"  # it draws the network eval trains, which a dry run does not train
    # tiny_darts: 240 train images, half of them the val split, batch 40 -> 3 steps; 2 epochs
    t = search["training"]
    assert (t["epochs"], t["steps_per_epoch"], t["val_passes"], t["checkpoints"]) == (2, 3, 2, 2)
    assert t["step_s"]["measured"] == 2 and t["step_s"]["warmup"] == 1
    assert t["step_s"]["min"] <= t["step_s"]["median"] <= t["step_s"]["max"]
    steps = t["epochs"] * t["steps_per_epoch"]
    extras = t["val_passes"] * t["val_pass_s"] + t["checkpoints"] * t["checkpoint_s"]
    assert search["estimate_s"] == pytest.approx(search["setup_s"] + steps * t["step_s"]["median"] + extras)
    assert search["range_s"][0] <= search["estimate_s"] <= search["range_s"][1]
    assert search["peak_memory"] > 50 * 2**20
    assert eval_["how"] == "training" and "largest architecture" in eval_["note"]
    assert eval_["training"]["steps_per_epoch"] == 6  # 240 train images less 10% held out for selection, batch 40
    assert plan["estimate_s"] == pytest.approx(search["estimate_s"] + eval_["estimate_s"])
    space = plan["space"]
    assert space["costs"]["params"]["min"] <= space["costs"]["params"]["median"] <= space["costs"]["params"]["max"]
    for end in ("cheapest", "largest"):
        assert space[end]["build"] and space[end]["fit"] and space[end]["onnx"], space[end]
    assert space["cheapest"]["params"] <= space["largest"]["params"]


def test_the_text_plan_says_the_same_numbers(results, capsys):
    """`--dry-run` without --json: the lines a person reads, of the stages --skip leaves."""
    from archnas.launch.plan import brief, duration

    before = digests(results)
    capsys.readouterr()
    assert main(["--config", TINY, "--dry-run", f"common.results_dir={results}", "--skip", "search", *QUICK,
                 "nas.eval.final_desc=DARTS_V2"]) == 0
    out = capsys.readouterr().out
    assert digests(results) == before
    assert out.startswith("dry run of darts on digits, device cpu: 1 warm-up + 2 timed steps")
    assert "search:" not in out and "\neval: about " in out and "2 epochs x 6 steps x " in out
    assert "largest architecture" not in out  # nas.eval.final_desc names the architecture the eval trains
    assert "space darts_cells" in out and "  largest (" in out
    assert (duration(42.0), duration(125), duration(7300)) == ("42.0s", "2m05s", "2h01m")
    assert (brief(0.409), brief(224.0), brief(1970.0)) == ("0.409s", "3m44s", "32m50s")  # a pass at paper shape


def test_plan_of_spos_probes_the_pretrain_and_the_subnet_selection(results, capsys):
    before = digests(results)
    plan = plan_json(["plan", *NB201, "--json", "--stages", "pretrain,search", f"common.results_dir={results}",
                      "--dry-run-steps", "2", "--dry-run-warmup", "0"], capsys)
    assert digests(results) == before
    pretrain, search = plan["stages"]
    assert pretrain["how"] == "training" and pretrain["training"]["steps_per_epoch"] == 2
    # the search scores subnets of the probed pretrain's checkpoint: 3 candidates a generation, 2 generations
    assert search["how"] == "selection" and search["candidates"] == 6 and search["candidate_s"]["measured"] == 2
    assert search["estimate_s"] == pytest.approx(search["setup_s"] + 6 * search["candidate_s"]["median"])
    assert plan["space"]["costs"]["params"]["over"].startswith("enumerated (all 15,625")


def test_estimate_arithmetic():
    measure = TrainerMeasure(epochs=10, steps_per_epoch=4, step_seconds=[1.0, 3.0, 2.0], warmup_seconds=[9.0],
                             val_batches=5, val_passes=validation_passes(10, 3), val_batch_seconds=0.5,
                             checkpoint_seconds=0.25, checkpoints=10)
    assert measure.val_passes == 4  # after epochs 3, 6, 9 and the last
    assert measure.estimate() == pytest.approx(10 * 4 * 2.0 + 4 * 5 * 0.5 + 10 * 0.25)
    assert measure.estimate(1.0) == pytest.approx(10 * 4 * 1.0 + 4 * 5 * 0.5 + 10 * 0.25)
    short = TrainerMeasure(epochs=1, steps_per_epoch=1, step_seconds=[], warmup_seconds=[2.0])
    assert short.estimate() == 2.0  # a training no longer than the warm-up: its steps are the measure
