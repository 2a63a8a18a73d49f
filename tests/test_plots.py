"""The pictures of a search: the `plot` stage ends a tiny darts run with its cell diagrams, alpha
heatmaps and curves, as PNG files and TensorBoard images; a gdas run over NAS-Bench-201 and a
spos run over the MobileNet space get their architecture table, heatmaps and Pareto front;
`archnas plot` draws each again, and an --algos folder's comparison; every PNG opens, has a
picture's size and is not blank. (`archnas plot` of a missing, foreign or unfinished folder: rows
of tests/test_bad_input.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from archnas.cli import main
from archnas.descs.genotypes import named_genotype
from archnas.launch.compare import write_summary
from archnas.nas.plot_stage import cost_text
from archnas.nas.runner import ExperimentResult
from archnas.plots import CellGraph, cell_layout

REPO = Path(__file__).resolve().parents[1]
QUICK = ["common.log_every_steps=0", "dataset.limit_train=120", "dataset.limit_test=40",
         "nas.search.loader.train_batch=40", "nas.eval.loader.train_batch=40", "nas.search.trainer.epochs=2",
         "nas.eval.trainer.epochs=2"]
RUNS = {
    "darts": [str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml"), "nas.search.trainer.bilevel_order=first"],
    "gdas_nb201": [str(REPO / "confs" / "gdas_nb201.yaml"), "common.tensorboard=false",
                   "nas.search.space={name: nb201, C: 4, N: 1, affine: false, track_running_stats: false}",
                   "nas.eval.space={name: nb201, C: 4, N: 1}"],
    "spos_mobilenet": [str(REPO / "confs" / "spos_mobilenet.yaml"), "common.tensorboard=false",
                       "nas.search.space={name: mobilenet, search_ops: [MIB_k=3_t=3, identity], "
                       "blocks_out_channels: [8, 8], blocks_count: [1, 1], blocks_stride: [1, 2], stem_channels: 8, "
                       "head_channels: 16}", "nas.search.trainer.epochs=1", "nas.search.cost.max_macs=null",
                       "nas.search.spos.evolution={population: 3, parents: 1, mutations: 2, crossovers: 0, "
                       "generations: 1}", "nas.search.spos.bn_recalibration.batches=1"],
}
PICTURES = {
    "darts": {"cell_normal", "cell_reduce", "alphas_regular", "alphas_regular_epochs", "alphas_reduction",
              "alphas_reduction_epochs", "curves_search", "curves_eval"},
    "gdas_nb201": {"architecture", "alphas_choices", "alphas_choices_epochs", "curves_search", "curves_eval"},
    "spos_mobilenet": {"architecture", "curves_eval", "pareto"},  # a one-epoch pretrain has no curve
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny finished run of each kind (darts with TensorBoard on)."""
    results = tmp_path_factory.mktemp("plots")
    for name, config in RUNS.items():
        assert main(["--config", config[0], f"common.results_dir={results}", "--exp-name", name, *QUICK,
                     *config[1:]]) == 0
    return {name: results / name for name in RUNS}


def pngs(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.png")}


def check_picture(path: Path) -> None:
    """Opens, is a picture's size, and is not blank: many colours, not one flat field."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 300 and image.height >= 150, (path, image.size)
        pixels = np.asarray(image.convert("RGB"))
    assert path.stat().st_size < 200_000, path
    colours = np.unique((pixels[..., 0].astype(np.uint32) << 16) | (pixels[..., 1].astype(np.uint32) << 8) | pixels[..., 2])
    assert pixels.std() > 10 and len(colours) > 30, path
    assert (pixels < 128).any(axis=2).mean() > 0.005, f"{path}: hardly anything drawn"


def test_every_search_ends_with_its_pictures_and_tensorboard_images(runs):
    for name, exp in runs.items():
        result = json.loads((exp / "result.json").read_text())
        assert list(result)[-1] == "plot" and sorted(result["plot"]["files"]) == sorted(f"{p}.png" for p in PICTURES[name])
        assert pngs(exp / "plot") == PICTURES[name], name
        for path in (exp / "plot").glob("*.png"):
            check_picture(path)
    assert pngs(runs["spos_mobilenet"] / "search") == {"pareto"}  # the search's own front, drawn by the same code
    events = EventAccumulator(str(runs["darts"] / "plot" / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {f"plots/{p}" for p in PICTURES["darts"]}
    image = events.Images("plots/cell_normal")[-1]
    assert (image.width, image.height) == Image.open(runs["darts"] / "plot" / "cell_normal.png").size


def test_archnas_plot_draws_each_kind_again_and_an_algos_folder(runs, tmp_path, capsys):
    """spos_mobilenet on its own; darts and gdas_nb201 as the runs of an --algos folder (the runs
    under it and the summary --algos writes), drawn with the comparison of the two."""
    assert main(["plot", str(runs["spos_mobilenet"]), "--out", str(tmp_path / "spos")]) == 0
    assert pngs(tmp_path / "spos") == PICTURES["spos_mobilenet"]
    folder, out = tmp_path / "cmp", tmp_path / "cmp_out"
    results = []
    for name in ("darts", "gdas_nb201"):
        shutil.copytree(runs[name], folder / name)
        stages = json.loads((folder / name / "result.json").read_text())
        results.append(ExperimentResult(name, folder / name, {k: v for k, v in stages.items() if k != "algorithm"}))
    write_summary(folder, results)
    assert main(["plot", str(folder), "--out", str(out)]) == 0
    check_picture(out / "comparison.png")
    for name in ("darts", "gdas_nb201"):
        assert pngs(out / name) == PICTURES[name]
    assert (out / "darts" / "tb").is_dir() and not (out / "gdas_nb201" / "tb").exists()  # gdas ran without TensorBoard
    assert f"archnas plot: {out / 'comparison.png'}" in capsys.readouterr().out


def test_skip_plot_leaves_the_stage_out_and_stages_plot_draws_a_finished_run(runs, tmp_path):
    exp = tmp_path / "darts"
    shutil.copytree(runs["darts"], exp)
    shutil.rmtree(exp / "plot")
    base = ["--config", RUNS["darts"][0], f"common.results_dir={tmp_path}", "--exp-name", "darts", *QUICK,
            *RUNS["darts"][1:], "common.tensorboard=false"]
    assert main([*base, "--skip", "plot"]) == 0
    assert list(json.loads((exp / "result.json").read_text())) == ["algorithm", "search", "eval"]
    assert not (exp / "plot").exists()
    assert main([*base, "--stages", "plot"]) == 0
    assert pngs(exp / "plot") == PICTURES["darts"] and (exp / "plot" / "plots.json").is_file()


def test_a_cell_s_layout_puts_every_node_right_of_its_inputs():
    genotype = named_genotype("DARTS_V2")
    graph = CellGraph("normal", tuple(tuple(genotype.normal[j:j + 2]) for j in range(0, 8, 2)),
                      tuple(genotype.normal_concat))
    pos = cell_layout(graph)
    assert pos[0][0] == pos[1][0] == 0 and pos[0][1] != pos[1][1]
    for j, edges in enumerate(graph.nodes):
        assert all(pos[2 + j][0] > pos[i][0] for _, i in edges)
    assert pos["out"][0] > max(x for n, (x, _) in pos.items() if n != "out")
    assert len(set(pos.values())) == len(pos)  # no two nodes on one spot


def test_the_architecture_table_writes_counts_whole_and_timings_to_three_digits():
    assert [cost_text(v) for v in (175104.0, 0.0, 0.01234, 2.5)] == ["+175,104", "+0", "+0.0123", "+2.5"]
