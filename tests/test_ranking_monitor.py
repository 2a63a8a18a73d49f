"""The live ranking monitor (`nas.search.ranking_monitor`) on a tiny spos pretrain: it trains its
anchors once, checks the supernet's ranking of them every epoch (records, log, ranking_monitor.json,
a warning when tau stays low), and leaves the training exactly as it is without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archnas.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["common.device=cpu", "common.tensorboard=false", "common.log_every_steps=0", "dataset.limit_train=200",
        "dataset.limit_test=40", "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.trainer.epochs=3",
        "nas.search.loader.train_batch=50", "--stages", "pretrain"]
MONITOR = "nas.search.ranking_monitor={anchors: 5, every: 1, epochs: 1, bn_batches: 1, warn_below: 1.5, patience: 2}"


def records(exp: Path) -> list[dict]:
    return [json.loads(line) for line in (exp / "pretrain" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("one_thread")
def test_the_monitor_checks_every_epoch_and_leaves_the_training_as_it_was(tmp_path, capsys):
    base = ["--config", str(REPO / "confs" / "spos_nb201.yaml"), f"common.results_dir={tmp_path}", *TINY]
    assert main([*base, "--exp-name", "plain"]) == 0, capsys.readouterr().err[-2000:]
    assert main([*base, "--exp-name", "watched", MONITOR]) == 0, capsys.readouterr().err[-2000:]
    plain, watched = records(tmp_path / "plain"), records(tmp_path / "watched")
    for a, b in zip(plain, watched, strict=True):  # same weights trained: the monitor only looks
        assert (a["train_loss"], a["path_digest"]) == (b["train_loss"], b["path_digest"])
    report = json.loads((tmp_path / "watched" / "pretrain" / "ranking_monitor.json").read_text())
    assert [c["epoch"] for c in report["checks"]] == [1, 2, 3]
    assert len(report["anchors"]["archs"]) == 5 and all(len(c["inherited_val_top1"]) == 5 for c in report["checks"])
    assert report["checks"][0]["kendall_tau_previous"] is None
    for check, record in zip(report["checks"], watched):
        assert record.get("ranking_tau") == check["kendall_tau"]
    assert len(list((tmp_path / "watched" / "ranking_monitor").glob("anchor_*/trial.json"))) == 5
    log = (tmp_path / "watched" / "pretrain" / "log.txt").read_text()
    assert log.count("ranking monitor, epoch") == 3
    assert log.count("has stayed below 1.5 for 2 checks") == 2  # checks 2 and 3: two in a row below 1.5


def test_a_monitor_on_an_algorithm_without_a_supernet_is_refused_with_one_line(tmp_path, capsys):
    code = main(["--config", str(REPO / "confs" / "random.yaml"), f"common.results_dir={tmp_path}",
                 "nas.search.ranking_monitor.anchors=5"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1
    assert "nas.search.ranking_monitor.anchors: random trains no weight-sharing supernet" in err[0]
