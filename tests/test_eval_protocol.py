"""The eval phase selects on a validation split held out of the training images, never on the test
set: a test set built to disagree with validation does not move the chosen epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archnas.cli import main
from archnas.data import register_provider
from archnas.data.digits import load_digits
from archnas.data.info import LoadedDataset, TensorImages
from archnas.model.model_file import load_model_file, read_model_file
from archnas.nas.evaluater import Evaluater
from archnas.training.hooks import HookBase
from archnas.training.metrics import MetricsHistory

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")


@register_provider("digits_wrong_test")
def digits_wrong_test(conf, cache_dir) -> LoadedDataset:
    """Digits whose test labels are all shifted by one: the better a model learns, the worse its
    test accuracy, so selecting on this test set would pick the least trained epoch."""
    data = load_digits(conf, cache_dir)
    test = data.test
    return LoadedDataset(data.info, data.train, TensorImages(test.images, (test.labels + 1) % 10))


class EveryEpochTest(HookBase):
    """Test-only probe: the test accuracy of every epoch's model, to show what the test set would pick."""

    def __init__(self, loader, seen: list[float]):
        self.loader, self.seen = loader, seen

    def after_epoch(self) -> None:
        self.seen.append(self.trainer.evaluate(self.loader, "test")["test_top1"])


def run_eval(tmp: Path, name: str, *extra: str) -> int:
    return main(["--config", TINY, "--no-search", "--exp-name", name, f"common.results_dir={tmp}",
                 "nas.eval.final_desc=DARTS_V2", "dataset.limit_train=600", *extra])


def test_chosen_epoch_follows_validation_not_test(tmp_path, monkeypatch):
    per_epoch_test: list[float] = []
    build = Evaluater.build_trainer

    def probed(self, ctx, model, network, *what_it_trains_on):
        trainer = build(self, ctx, model, network, *what_it_trains_on)
        from archnas.nas.searcher import load_data

        trainer.register_hooks([EveryEpochTest(load_data(ctx, ctx.conf.loader).loader("test", training=False),
                                               per_epoch_test)])
        return trainer

    monkeypatch.setattr(Evaluater, "build_trainer", probed)
    assert run_eval(tmp_path, "wrong", "dataset.name=digits_wrong_test", "nas.eval.trainer.epochs=4",
                    # a last epoch at 40x the lr ruins the model: the best epoch is not the last
                    "nas.eval.trainer.lr_schedule={type: multistep, milestones: [3], gamma: 40.0}") == 0
    ev = tmp_path / "wrong" / "eval"
    records = [json.loads(line) for line in (ev / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_top1"] for r in records]
    metrics = json.loads((ev / "metrics.json").read_text())
    # validation and test disagree about the best epoch; the choice is validation's
    assert max(val) > 0.3 and val.index(max(val)) != per_epoch_test.index(max(per_epoch_test))  # chance: 0.1
    chosen = val.index(max(val))  # position in the records, whatever the epoch numbering
    assert metrics["best_epoch"] == records[chosen]["epoch"] and metrics["best_val_top1"] == max(val)
    assert chosen < len(records) - 1  # model_best.pt is not model_last.pt: it was read back
    assert not any(k.startswith("test") for r in records for k in r)  # training never looked at the test set
    best = load_model_file(ev / "model_best.pt")
    assert best.info["chosen_by"] == "val_top1" and best.info["epoch"] == metrics["best_epoch"]
    # the test set was used once per handed-out model, afterwards: last epoch and best-on-val
    assert metrics["test_top1"] == pytest.approx(per_epoch_test[-1])
    assert metrics["test_top1_best_val"] == pytest.approx(per_epoch_test[chosen])
    assert best.info["test_top1"] == metrics["test_top1_best_val"]
    assert best.info["test_correct"] == metrics["test_correct_best_val"] == round(
        metrics["test_top1_best_val"] * metrics["test_images"])
    assert load_model_file(ev / "model_last.pt").info["chosen_by"] == "last_epoch"
    split = json.loads((ev / "split.json").read_text())
    assert split["val_ratio"] == 0.1 and split["n_val"] == 60 and split["n_train"] == 540
    assert not set(split["val_idx"]) & set(split["train_idx"])


def test_no_val_split_means_no_selection(tmp_path):
    assert run_eval(tmp_path, "noval", "nas.eval.loader.val_ratio=0", "nas.eval.trainer.epochs=1") == 0
    ev = tmp_path / "noval" / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["best_epoch"] is None and metrics["best_val_top1"] is None and metrics["test_top1_best_val"] is None
    assert not (ev / "model_best.pt").exists()
    last = read_model_file(ev / "model_last.pt")["info"]
    assert last["chosen_by"] == "last_epoch" and last["test_top1"] == metrics["test_top1"]
    assert json.loads((ev / "split.json").read_text())["n_val"] == 0
    assert "val_top1" not in json.loads((ev / "metrics.jsonl").read_text().splitlines()[0])
    assert torch.load(ev / "model_last.pt", weights_only=True)["input"]["shape"] == [1, 8, 8]


def test_equal_val_accuracies_go_to_the_lower_val_loss():
    """A 144-image val split has 0.7% steps: equal top-1 at several epochs is common."""
    h = MetricsHistory()
    assert h.add({"epoch": 0, "val_top1": 0.9, "val_loss": 0.3})
    assert h.add({"epoch": 1, "val_top1": 0.9, "val_loss": 0.2})
    assert not h.add({"epoch": 2, "val_top1": 0.9, "val_loss": 0.25})
    assert not h.add({"epoch": 3, "val_top1": 0.8, "val_loss": 0.1})
    assert h.best_epoch == 1
    resumed = MetricsHistory()
    resumed.load_state_dict(h.state_dict())
    assert not resumed.add({"epoch": 4, "val_top1": 0.9, "val_loss": 0.21}) and resumed.add(
        {"epoch": 5, "val_top1": 0.9, "val_loss": 0.19})
