"""Independent trials on Ray: the same random search as the sequential path, and clear errors
for settings Ray cannot honour. Skipped when Ray is not installed (`pip install -e ".[ray]"`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_algos import TINY

from archnas.cli import main
from archnas.config import find_config_file
from archnas.config.schema.common import RayConf
from archnas.errors import ConfigError
from archnas.trials import check_ray_conf


def run(tmp: Path, exp: str, *extra: str) -> dict:
    code = main(["--config", str(find_config_file("random")), "--exp-name", exp, "--no-eval",
                 f"common.results_dir={tmp}", "common.num_threads=1", *TINY, "nas.search.random.n_archs=3", *extra])
    assert code == 0
    return json.loads((tmp / exp / "search" / "search_result.json").read_text())


@pytest.mark.slow  # starting a local Ray takes 10-40 s on 2 cores
def test_three_random_search_trials_on_ray_give_what_the_sequential_path_gives(tmp_path, capsys):
    pytest.importorskip("ray")
    sequential = run(tmp_path, "sequential")
    on_ray = run(tmp_path, "ray", "common.ray.enabled=true", "common.ray.cpus_per_trial=1")
    strip = lambda m: [{k: v for k, v in c.items() if k != "train_time"} for c in m["candidates"]]  # noqa: E731
    assert strip(on_ray["metrics"]) == strip(sequential["metrics"])
    assert on_ray["metrics"]["best_candidate"] == sequential["metrics"]["best_candidate"]
    assert on_ray["genotype"] == sequential["genotype"] and on_ray["final_desc_fingerprint"] == sequential["final_desc_fingerprint"]
    for i in range(3):  # each trial in its own folder, marked finished
        assert (tmp_path / "ray" / "search" / f"candidate_00{i + 1}" / "trial.json").is_file()
    # finished trials are not rerun: a rerun of the search does not even start Ray
    (tmp_path / "ray" / "search" / "search_result.json").unlink()
    stamps = [(tmp_path / "ray" / "search" / f"candidate_00{i + 1}" / "trial.json").stat().st_mtime_ns for i in range(3)]
    capsys.readouterr()
    assert run(tmp_path, "ray", "common.ray.enabled=true")["genotype"] == sequential["genotype"]
    assert capsys.readouterr().out.count("already finished") == 3
    assert stamps == [(tmp_path / "ray" / "search" / f"candidate_00{i + 1}" / "trial.json").stat().st_mtime_ns for i in range(3)]


def test_ray_settings_it_cannot_honour_are_refused():
    with pytest.raises(ConfigError, match="common.ray.enabled: true under torchrun"):
        check_ray_conf(RayConf(enabled=True), world_size=2)
    with pytest.raises(ConfigError, match="common.ray.cpus_per_trial"):
        check_ray_conf(RayConf(enabled=True, cpus_per_trial=0), world_size=1)
    with pytest.raises(ConfigError, match="common.ray.gpus_per_trial"):
        check_ray_conf(RayConf(enabled=True, gpus_per_trial=-1), world_size=1)
    check_ray_conf(RayConf(enabled=False, cpus_per_trial=0), world_size=2)  # off: nothing to check
