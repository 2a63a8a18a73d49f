"""Every built-in algorithm on every kind of space: a tiny search, then the eval of its result,
through the `archnas` command, on DARTS cells, `nb201` and `mobilenet`. Each combination either
finishes (search and eval markers written, a test accuracy in result.json) or is refused by its
strategy with one `archnas: error:` line and exit code 2, before anything is written.

What each combination does is the README's table ("Algorithms by search space"), which this test
reads: the table cannot claim a combination runs that does not, or miss one that does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from archnas.cli import main

REPO = Path(__file__).resolve().parents[1]
SPACES = {
    "DARTS cells": "{}",
    "nb201": "{name: nb201, C: 4, N: 1}",
    "mobilenet": "{name: mobilenet, blocks_out_channels: [8, 8], blocks_count: [1, 1], blocks_stride: [1, 2], "
                 "stem_channels: 4, head_channels: 16}",
}
# An architecture of each space for manual (no search).
MANUAL = {
    "DARTS cells": "DARTS_V2",
    "nb201": "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|",
    "mobilenet": "{s1_i0: MIB_k=3_t=6, s2_i0: MIB_k=5_t=3}",
}
TINY = ["common.device=cpu", "common.tensorboard=false", "common.log_every_steps=0", "dataset.limit_train=160",
        "dataset.limit_test=40", "nas.search.model_desc.n_cells=2", "nas.search.model_desc.n_nodes=2",
        "nas.search.model_desc.n_reductions=1", "nas.search.model_desc.model_stems.init_node_ch=4",
        "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=1", "nas.eval.model_desc.n_cells=2",
        "nas.eval.model_desc.n_reductions=1", "nas.eval.model_desc.model_stems.init_node_ch=4",
        "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=1",
        "nas.search.pc_darts.k=2", "nas.search.pc_darts.arch_warmup_epochs=0", "nas.search.random.n_archs=2",
        "nas.search.spos.evolution={population: 2, parents: 1, mutations: 1, crossovers: 0, generations: 1}",
        "nas.search.spos.bn_recalibration.batches=1", "nas.search.spos.score_batches=1",
        "nas.search.cost.max_macs=null", "nas.search.cost.pareto=params",
        "nas.search.enot.bn_tune_batches=1", "nas.search.enot.bn_validation_tune_batches=1",
        "nas.search.zero_cost.trust.epochs=1", "nas.search.zero_cost.batch_size=16",
        "nas.search.zero_cost.random={n_archs: 2, per_generation: 2}", "nas.search.multi_trial.max_trials=1"]


def readme_table() -> dict[tuple[str, str], str]:
    """(algorithm, space) -> "runs" | "refused", from README.md's "Algorithms by search space"."""
    text = (REPO / "README.md").read_text()
    lines = text.split("### Algorithms by search space", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[1:] == list(SPACES), header
    table = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        algo = cells[0].strip("`")
        for space, cell in zip(SPACES, cells[1:]):
            table[algo, space] = "runs" if cell.startswith("yes") else "refused"
    return table


TABLE = readme_table()


def test_the_table_covers_every_built_in_algorithm():
    from archnas.nas.registry import algorithm_names

    assert {a for a, _ in TABLE} == set(algorithm_names())


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("algo,space", sorted(TABLE))
def test_each_algorithm_runs_or_is_refused_with_one_line(tmp_path, capsys, algo, space):
    args = ["--config", str(REPO / "confs" / "darts.yaml"), f"nas.algo={algo}", f"common.results_dir={tmp_path}",
            "--exp-name", "m", *TINY, f"nas.search.space={SPACES[space]}"]
    if algo == "manual":
        args.append(f"nas.eval.final_desc={MANUAL[space]}")
    code = main(args)
    err = capsys.readouterr().err
    exp = tmp_path / "m"
    if TABLE[algo, space] == "refused":
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("archnas: error: "), err[-2000:]
        assert re.search(rf"\b{algo}\b", lines[0]), lines[0]
        assert not exp.exists() or not any(exp.rglob("*.pt")), "a refused run wrote a checkpoint"
        return
    assert code == 0, err[-3000:]
    result = json.loads((exp / "result.json").read_text())
    final = "tune" if algo == "enot" else "eval"  # enot's eval stage is named as ENOT names it
    assert 0.0 <= result[final]["test_top1"] <= 1.0 and (exp / final / "metrics.json").is_file()
    if algo != "manual":
        assert (exp / "search" / "search_result.json").is_file()
        arch_file = "final_model_desc.yaml" if space == "DARTS cells" else "arch.yaml"
        assert result["search"]["final_desc"].endswith(arch_file)
