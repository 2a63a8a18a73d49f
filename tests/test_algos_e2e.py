"""Every algorithm end to end on tiny settings, manual evaluation, and `--algos` with its summary:
one process per phase, peak memory kept across reruns, signals passed on, bad lists refused."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from accuracy import recomputed_test_top1
from tiny_algos import TINY

from archnas.cli import main
from archnas.config import find_config_file
from archnas.descs.desc_io import load_desc
from archnas.descs.genotypes import parse_genotype
from archnas.launch.compare import write_summary
from archnas.nas.phase import PEAK_MEMORY_FILE
from archnas.nas.runner import ExperimentResult

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(tmp: Path, algo: str, exp: str, *extra: str) -> int:
    return main(["--config", str(find_config_file(algo)), "--exp-name", exp, f"common.results_dir={tmp}", *TINY, *extra])


@pytest.mark.parametrize("algo", ["gdas", "pc_darts", "random"])
def test_search_then_eval(tmp_path, algo):
    assert run(tmp_path, algo, algo) == 0
    exp = tmp_path / algo
    result = json.loads((exp / "result.json").read_text())
    assert result["algorithm"] == algo
    assert result["eval"]["test_top1"] == pytest.approx(recomputed_test_top1(exp), abs=1e-9)
    assert result["eval"]["params"] > 0
    assert result["search"]["peak_memory"] > 0 and result["eval"]["peak_memory"] > 0
    # the final desc is an ordinary cell at full channels, whatever the supernet looked like
    final = load_desc(exp / "search" / "final_model_desc.yaml")
    for cell in final.cells:
        ch = cell.nodes[0].conv_params.ch_out
        assert all(not e.op_desc.children and e.op_desc.params["conv"].ch_out == ch for e in cell.edges())
    parse_genotype((exp / "search" / "genotype.txt").read_text())
    if algo != "random":
        supernet = load_desc(exp / "search" / "full_model_desc.yaml")
        mixed_op = {"gdas": "gdas_mixed_op", "pc_darts": "pc_mixed_op"}[algo]
        assert {e.op_desc.name for cell in supernet.cells for e in cell.edges()} == {mixed_op}
        record = json.loads((exp / "search" / "metrics.jsonl").read_text().splitlines()[-1])
        assert "arch_val_loss" in record
        assert ("gdas_tau" if algo == "gdas" else "edge_weights") in record
    else:
        assert len(result["search"]["candidates"]) == 2


def test_manual_evaluates_a_named_genotype_a_genotype_string_or_a_desc_file(tmp_path, capsys):
    assert run(tmp_path, "manual", "named") == 0
    result = json.loads((tmp_path / "named" / "result.json").read_text())
    assert list(result) == ["algorithm", "eval", "plot"]
    assert result["eval"]["test_top1"] == pytest.approx(recomputed_test_top1(tmp_path / "named"), abs=1e-9)
    assert not (tmp_path / "named" / "search").exists()
    cells = load_desc(tmp_path / "named" / "eval" / "full_model_desc.yaml").cells
    assert [(e.op_desc.name, e.input_ids[0]) for e in cells[0].edges()][:2] == [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]

    genotype = "Genotype(normal=[('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0)], " \
               "normal_concat=[2, 3], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), " \
               "('avg_pool_3x3', 0)], reduce_concat=[2, 3])"
    assert run(tmp_path, "manual", "string", f"nas.eval.final_desc={genotype}") == 0
    desc_file = tmp_path / "string" / "eval" / "full_model_desc.yaml"
    assert run(tmp_path, "manual", "file", f"nas.eval.final_desc={desc_file}") == 0
    for exp in ("string", "file"):
        cells = load_desc(tmp_path / exp / "eval" / "full_model_desc.yaml").cells
        assert [(e.op_desc.name, e.input_ids[0]) for e in cells[0].edges()] == list(parse_genotype(genotype).normal)

    assert run(tmp_path, "manual", "none", "nas.eval.final_desc=null") == 2
    assert "nas.eval.final_desc" in capsys.readouterr().err


def test_a_rerun_reports_the_peak_memory_of_the_run_that_did_the_work(tmp_path):
    assert run(tmp_path, "gdas", "g") == 0
    first = json.loads((tmp_path / "g" / "result.json").read_text())
    recorded = json.loads((tmp_path / "g" / "search" / PEAK_MEMORY_FILE).read_text())["peak_memory"]
    assert recorded == first["search"]["peak_memory"]
    # fake a larger recorded peak: a rerun that skips both phases must report it, not measure the skip
    (tmp_path / "g" / "search" / PEAK_MEMORY_FILE).write_text(json.dumps({"peak_memory": 123 << 30}))
    assert run(tmp_path, "gdas", "g") == 0
    second = json.loads((tmp_path / "g" / "result.json").read_text())
    assert second["search"]["peak_memory"] == 123 << 30
    assert second["eval"]["peak_memory"] == first["eval"]["peak_memory"]
    assert second["eval"]["test_top1"] == first["eval"]["test_top1"]


def test_summary_table_and_csv(tmp_path):
    results = [
        ExperimentResult("darts", tmp_path, {"search": {"search_time": 61.4, "peak_memory": 700 << 20, "genotype": "G1"},
                                             "eval": {"test_top1": 0.9512, "params_without_aux": 12345, "macs": 678901,
                                                      "train_time": 30.2, "peak_memory": 300 << 20}}),
        ExperimentResult("manual", tmp_path, {"eval": {"test_top1": 0.5, "params_without_aux": 10, "macs": 20,
                                                       "train_time": 1.0, "peak_memory": None}}),
    ]
    write_summary(tmp_path, results)
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert lines[0] == "| algorithm | test top-1 | params | MACs | search s | eval s | search peak MB | eval peak MB |"
    assert lines[2] == "| darts | 95.12% | 12,345 | 678,901 | 61 | 30 | 700 | 300 |"
    assert lines[3] == "| manual | 50.00% | 10 | 20 | - | 1 | - | - |"
    assert "- darts: `G1`" in lines
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert rows[0]["algorithm"] == "darts" and float(rows[0]["test_top1"]) == 0.9512 and rows[0]["search_peak_mb"] == "700"
    assert rows[1]["search_time"] == "" and rows[1]["genotype"] == ""


def test_algos_refuses_unknown_or_repeated_names_before_running(tmp_path, capsys):
    for algos in ("gdas,nope", "gdas,gdas", ","):
        assert main(["--algos", algos, f"common.results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "unknown algorithm 'nope'" in err and "distinct algorithm names" in err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def algos_command(tmp: Path, algos: str, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "main.py"), "--algos", algos, "--exp-name", "cmp",
            f"common.results_dir={tmp}", *TINY, *extra]


def test_algos_runs_each_phase_in_its_own_process_writes_the_summary_and_a_rerun_skips_it_all(tmp_path):
    out = subprocess.run(algos_command(tmp_path, "pc_darts,manual"), env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "cmp"
    rows = list(csv.DictReader((folder / "summary.csv").open()))
    assert [r["algorithm"] for r in rows] == ["pc_darts", "manual"]
    for row in rows:
        result = json.loads((folder / row["algorithm"] / "result.json").read_text())
        assert float(row["test_top1"]) == result["eval"]["test_top1"]
        assert int(row["params"]) == result["eval"]["params_without_aux"] and int(row["macs"]) == result["eval"]["macs"]
        assert int(row["eval_peak_mb"]) == round(result["eval"]["peak_memory"] / 2**20)
    pc = json.loads((folder / "pc_darts" / "result.json").read_text())
    assert float(rows[0]["search_time"]) == pc["search"]["search_time"] and rows[0]["genotype"] == pc["search"]["genotype"]
    assert rows[1]["search_time"] == "" and not (folder / "manual" / "search").exists()
    # one process per stage (the plot stage in the process of the stage before it): each records its command
    for stage, stages in (("search", "search"), ("eval", "eval,plot"), ("plot", "eval,plot")):
        command = json.loads((folder / "pc_darts" / stage / "run.json").read_text())["command"]
        assert command[command.index("--stages") + 1] == stages and "cmp/pc_darts" in command
    assert (folder / "comparison.png").is_file() and (folder / "manual" / "plot" / "plots.json").is_file()
    assert "| pc_darts |" in out.stdout and "| manual |" in out.stdout
    # each header before its work, each phase's closing line saying which phase finished, the summary's path last
    said = [line for line in out.stdout.splitlines() if line.startswith("--algos") or " finished; results in " in line]
    norm = lambda s: s.split(" -> ")[0].split("; ")[0] if s.startswith("--algos") else s.split("; ")[0].split(" ", 1)[1]  # noqa: E731
    assert [norm(s) for s in said] == [
        "--algos 1/2: pc_darts search", "pc_darts search finished", "--algos 1/2: pc_darts eval,plot",
        "pc_darts eval and plot finished", "--algos 2/2: manual eval,plot", "manual eval and plot finished",
        "--algos: 2 algorithms finished",
    ], said
    assert said[-1].endswith(f"summary in {folder / 'summary.md'} and {folder / 'summary.csv'}")
    # a rerun skips every finished stage and writes the same summary
    summary = (folder / "summary.md").read_text()
    again = subprocess.run(algos_command(tmp_path, "pc_darts,manual"), env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already finished") >= 3, again.stdout  # pc_darts' search and both evals
    assert (folder / "summary.md").read_text() == summary


@pytest.mark.slow
def test_algos_passes_a_signal_to_the_running_phase_which_checkpoints(tmp_path):
    command = algos_command(tmp_path, "gdas", "nas.search.trainer.epochs=40", "common.checkpoint.every_steps=1")
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    search = tmp_path / "cmp" / "gdas" / "search"
    deadline = time.monotonic() + 300
    while not (search / "checkpoint_last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "resume with" in err and "gdas search was stopped" in err
    done = subprocess.run(command[:-2] + ["nas.search.trainer.epochs=2", "common.checkpoint.every_steps=1"], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout and (tmp_path / "cmp" / "summary.md").is_file()
