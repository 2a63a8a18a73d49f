"""A results folder written before a config key existed still resumes while the key is at its
default, and is refused, naming the key, once it is not (archnas.config.compat.config_changes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from archnas.config.compat import ABSENT, config_changes, lookup

ROOT = Path(__file__).resolve().parent.parent


def test_a_key_missing_from_the_record_is_unchanged_at_its_default() -> None:
    saved = {"nas": {"search": {"trainer": {"epochs": 1}}}}
    now = {"nas": {"search": {"trainer": {"epochs": 1}, "finalizer": {"type": "default", "rank": "softmax"}}}}
    assert lookup(saved, "nas.search.finalizer.type") == ABSENT
    assert config_changes(saved, now) == []
    now["nas"]["search"]["finalizer"]["type"] = "random"
    assert config_changes(saved, now) == ["nas.search.finalizer.type"]


def test_a_key_the_record_has_and_the_config_lost_is_a_change() -> None:
    saved = {"nas": {"search": {"old_key": 3}}}
    assert config_changes(saved, {"nas": {"search": {}}}) == ["nas.search.old_key"]


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "main.py"), "--config",
           str(ROOT / "tests" / "fixtures" / "confs" / "tiny_darts.yaml"), f"common.results_dir={tmp_path}",
           "--exp-name", "old", "nas.search.trainer.epochs=1", "--no-eval", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_a_finished_search_recorded_without_a_key_is_reused(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    marker = tmp_path / "old" / "search" / "search_result.json"
    done = json.loads(marker.read_text())
    del done["config"]["nas"]["search"]["finalizer"]  # as if written before nas.search.finalizer existed
    marker.write_text(json.dumps(done))
    before = marker.read_bytes()
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already finished" in again.stdout + again.stderr
    changed = _run(tmp_path, "nas.search.finalizer.rank=raw")
    assert changed.returncode == 2 and "nas.search.finalizer.rank" in changed.stderr
    assert marker.read_bytes() == before
