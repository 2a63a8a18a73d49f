"""`--seeds`: the whole experiment once per seed, each in its own subfolder, finished seeds skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from accuracy import recomputed_test_top1

from archnas.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
FAST = ["common.num_threads=1", "common.tensorboard=false", "nas.search.trainer.epochs=0",
        "nas.search.finalizer.type=random", "nas.eval.trainer.epochs=1"]  # no search training: a seeded random cell


def run(tmp: Path, *extra: str) -> int:
    return main(["--config", TINY, "--exp-name", "rep", f"common.results_dir={tmp}", *FAST, *extra])


@pytest.mark.slow  # 5 tiny experiments
def test_seeds_run_one_experiment_per_seed_and_skip_finished_ones(tmp_path, capsys):
    assert run(tmp_path, "--seeds", "0,1") == 0
    root = tmp_path / "rep"
    genotypes = []
    for seed in (0, 1):
        folder = root / f"seed_{seed}"
        assert (folder / "search" / "search_result.json").is_file() and (folder / "eval" / "metrics.json").is_file()
        top1 = json.loads((folder / "result.json").read_text())["eval"]["test_top1"]
        assert top1 == pytest.approx(recomputed_test_top1(folder), abs=1e-9)
        assert "seed: %d" % seed in (folder / "search" / "config.yaml").read_text()
        genotypes.append((folder / "search" / "genotype.txt").read_text())
    assert genotypes[0] != genotypes[1]  # each seed searched on its own
    summary = json.loads((root / "seeds.json").read_text())
    assert set(summary["seeds"]) == {"0", "1"} and len(summary["test_top1"]) == 2
    assert "test_top1_mean" in summary and "test_top1_std" in summary
    assert not (root / "search").exists()  # nothing outside the seed folders but the summary
    out = capsys.readouterr().out
    order = [out.index(s) for s in ("seed 0 (1/2): starting", "seed 0 (1/2) done", "seed 1 (2/2): starting",
                                    "seed 1 (2/2) done", f"summary in {root / 'seeds.json'}")]
    assert order == sorted(order)  # each seed's header before its work, the summary's path at the end

    # a rerun with one more seed: 0 and 1 are finished and skipped, 2 runs
    stamps = {s: (root / f"seed_{s}" / "eval" / "model_last.pt").stat().st_mtime_ns for s in (0, 1)}
    capsys.readouterr()
    assert run(tmp_path, "--seeds", "0,1,2") == 0
    out = capsys.readouterr().out
    assert out.count("search already finished") == 2 and out.count("eval already finished") == 2
    assert stamps == {s: (root / f"seed_{s}" / "eval" / "model_last.pt").stat().st_mtime_ns for s in (0, 1)}
    assert (root / "seed_2" / "eval" / "metrics.json").is_file()
    assert set(json.loads((root / "seeds.json").read_text())["seeds"]) == {"0", "1", "2"}


def test_bad_seeds_are_a_usage_error(tmp_path, capsys):
    for bad in ("0,x", "1,1", ","):
        assert run(tmp_path, "--seeds", bad) == 2
        assert "--seeds" in capsys.readouterr().err
    assert main(["--algos", "darts", "--seeds", "0", f"common.results_dir={tmp_path}"]) == 2
    assert "--seeds with --algos" in capsys.readouterr().err
