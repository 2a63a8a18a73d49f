"""Random search: deterministic under a seed, candidate 1 is the random-finalizer baseline,
finished candidates are not retrained, and each candidate is an independent trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_algos import TINY, tiny_conf

import archnas.algos.random_search as random_search
from archnas.cli import main
from archnas.config import find_config_file
from archnas.context import RunContext
from archnas.training.trainer import Trainer


def run(tmp: Path, exp: str, *extra: str, algo: str = "random") -> dict:
    code = main(["--config", str(find_config_file(algo)), "--exp-name", exp, "--no-eval", f"common.results_dir={tmp}",
                 *TINY, *extra])
    assert code == 0
    return json.loads((tmp / exp / "search" / "search_result.json").read_text())


def test_random_search_is_deterministic_under_a_seed(tmp_path):
    a = run(tmp_path, "a", "nas.search.random.n_archs=3")
    b = run(tmp_path, "b", "nas.search.random.n_archs=3")
    strip = lambda m: [{k: v for k, v in c.items() if k != "train_time"} for c in m["candidates"]]  # noqa: E731
    assert strip(a["metrics"]) == strip(b["metrics"])
    assert a["metrics"]["best_candidate"] == b["metrics"]["best_candidate"]
    assert a["final_desc_fingerprint"] == b["final_desc_fingerprint"] and a["genotype"] == b["genotype"]
    candidates = a["metrics"]["candidates"]
    assert len({c["genotype"] for c in candidates}) == 3  # three different cells ...
    assert all(c["val_top1"] is not None and c["train_time"] > 0 for c in candidates)  # ... each trained
    best = max(candidates, key=lambda c: (c["val_top1"], -c["number"]))
    assert a["metrics"]["best_candidate"] == best["number"] and a["genotype"] == best["genotype"]
    # another seed samples other cells
    c = run(tmp_path, "c", "nas.search.random.n_archs=1", "common.seed=5")
    assert c["genotype"] != candidates[0]["genotype"]


def test_one_candidate_is_the_random_finalizer_baseline_without_training(tmp_path):
    baseline = run(tmp_path, "baseline", "nas.search.finalizer.type=random", "nas.search.trainer.epochs=0", algo="darts")
    one = run(tmp_path, "one", "nas.search.random.n_archs=1")
    assert one["genotype"] == baseline["genotype"]
    assert one["metrics"]["candidates"][0]["val_top1"] is None
    assert not list((tmp_path / "one" / "search" / "candidate_001").glob("checkpoint_*.pt"))


def test_finished_candidates_are_not_retrained(tmp_path, monkeypatch):
    trained: list[str] = []
    fail_at = ["search/candidate_003"]

    class Recording(Trainer):
        def fit(self, *args, **kwargs):
            trained.append(self.env.name)
            if self.env.name in fail_at:
                raise RuntimeError("killed")
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(random_search, "Trainer", Recording)
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path, "r", "nas.search.random.n_archs=3")
    assert trained == ["search/candidate_001", "search/candidate_002", "search/candidate_003"]
    folder = tmp_path / "r" / "search"
    finished = {i: (folder / f"candidate_00{i}" / "trial.json").read_bytes() for i in (1, 2)}
    assert not (folder / "candidate_003" / "trial.json").exists() and not (folder / "search_result.json").exists()

    trained.clear()
    fail_at.clear()
    result = run(tmp_path, "r", "nas.search.random.n_archs=3")
    assert trained == ["search/candidate_003"]
    assert {i: (folder / f"candidate_00{i}" / "trial.json").read_bytes() for i in (1, 2)} == finished
    assert [c["number"] for c in result["metrics"]["candidates"]] == [1, 2, 3]
    trained.clear()
    run(tmp_path, "r", "nas.search.random.n_archs=3")  # all finished: nothing trains
    assert trained == []


def test_a_candidate_alone_gives_what_it_gave_in_the_search(tmp_path):
    """Trials depend on the config and their number only, so they can run anywhere in any order."""
    full = run(tmp_path, "full", "nas.search.random.n_archs=2")["metrics"]["candidates"][1]
    conf = tiny_conf("random", f"common.results_dir={tmp_path}", "nas.search.random.n_archs=2")
    run_context = RunContext.create(conf, tmp_path / "alone", [])
    alone = random_search.run_candidate(run_context, 2, True, False).to_dict()
    assert (tmp_path / "alone" / "search" / "candidate_002" / "trial.json").is_file()
    assert {k: v for k, v in alone.items() if k != "train_time"} == {k: v for k, v in full.items() if k != "train_time"}


def test_no_candidates_is_a_config_error(tmp_path, capsys):
    code = main(["--config", str(find_config_file("random")), "--exp-name", "z", f"common.results_dir={tmp_path}", *TINY,
                 "nas.search.random.n_archs=0"])
    assert code == 2 and "nas.search.random.n_archs" in capsys.readouterr().err
