"""spos on DARTS cells: a path is a final cell genome, the supernet runs only its ops (the edges a
node drops run `none`), the search ends with final cells and the eval retrains them."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from tiny_algos import TINY, tiny_conf

from archnas.cli import main
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import load_desc
from archnas.descs.model_desc import CellType
from archnas.model import Model
from archnas.nas.registry import algorithm_class
from archnas.nas.spaces import space_of

REPO = Path(__file__).resolve().parents[1]
INFO = DatasetInfo(10, 1, (8, 8))
SPOS = ["nas.algo=spos", "nas.search.spos.bn_recalibration.batches=1", "nas.search.spos.score_batches=1",
        "nas.search.spos.evolution={population: 2, parents: 1, mutations: 1, crossovers: 1, generations: 2}",
        "nas.search.cost.max_macs=null", "nas.search.cost.pareto=params"]


def _path_network_state(supernet: Model, arch) -> dict[str, torch.Tensor]:
    """The supernet's weights of the ops `arch` keeps, under the names the network of `arch` gives them."""
    state = {}
    for name, value in supernet.state_dict().items():
        m = re.fullmatch(r"cells\.(\d+)\.dag\.(\d+)\.(\d+)\.op\.ops\.(\d+)\.(.*)", name)
        if m is None:
            if ".dag." not in name and not name.startswith("arch."):
                state[name] = value
            continue
        c, j, k, rest = int(m[1]), int(m[2]), int(m[3]), m[5]
        if _on_path(name, supernet, arch):
            ctype = supernet.desc.cells[c].cell_type
            source = supernet.desc.first_cell(ctype).nodes[j].edges[k].input_ids[0]
            kept = [e.input_ids[0] for e in arch.first_cell(ctype).nodes[j].edges]
            state[f"cells.{c}.dag.{j}.{kept.index(source)}.op.{rest}"] = value
    return state


def test_a_path_set_on_the_cell_supernet_computes_the_network_of_its_cells():
    # no pooling candidate: the supernet follows a pooling op with a BatchNorm the final cell has not
    conf = tiny_conf("darts", "nas.algo=spos",
                     "nas.search.model_desc.primitives=[none, skip_connect, sep_conv_3x3, dil_conv_3x3]")
    space = space_of(conf.nas.search)
    supernet = space.supernet(INFO, algorithm_class("spos")(conf)).eval()
    x = torch.randn(4, 1, 8, 8)
    generator = torch.Generator().manual_seed(3)
    for _ in range(4):
        arch = space.draw(supernet, generator)
        for ctype in CellType:  # a path is a final cell: 2 inputs per node, none of them `none`
            assert all(len({e.input_ids[0] for e in n.edges}) == 2 and all(e.op_desc.name != "none" for e in n.edges)
                       for n in arch.first_cell(ctype).nodes)
        space.use(supernet, arch)
        network = Model(arch, droppath=False, affine=False).eval()
        missing, unexpected = network.load_state_dict(_path_network_state(supernet, arch), strict=False)
        assert not unexpected and not missing, (missing, unexpected)
        with torch.no_grad():
            assert torch.equal(supernet(x)[0], network(x)[0])


def test_the_weights_of_dropped_edges_and_other_candidates_change_nothing():
    conf = tiny_conf("darts", "nas.algo=spos")
    space = space_of(conf.nas.search)
    supernet = space.supernet(INFO, algorithm_class("spos")(conf)).eval()
    arch = space.genome(INFO).decode([random.Random(5).randrange(c) for c in space.genome(INFO).counts])
    space.use(supernet, arch)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        before = supernet(x)[0]
        touched = 0
        for name, p in supernet.named_weights():
            if ".dag." in name and not _on_path(name, supernet, arch):
                p.add_(1.0)
                touched += 1
        assert touched
        assert torch.equal(supernet(x)[0], before)
        next(p for n, p in supernet.named_weights() if ".dag." in n and _on_path(n, supernet, arch)).add_(1.0)
        assert not torch.equal(supernet(x)[0], before)


def _on_path(name: str, supernet: Model, arch) -> bool:
    c, j, k, cand = (int(v) for v in re.match(r"cells\.(\d+)\.dag\.(\d+)\.(\d+)\.op\.ops\.(\d+)\.", name).groups())
    ctype = supernet.desc.cells[c].cell_type
    edge = supernet.desc.first_cell(ctype).nodes[j].edges[k]
    kept = {e.input_ids[0]: e.op_desc.name for e in arch.first_cell(ctype).nodes[j].edges}
    return kept.get(edge.input_ids[0]) == supernet.arch.specs[str(ctype)].candidates[cand]


@pytest.mark.slow  # a pretrain, cost tables counted on a few hundred networks, a search and an eval
@pytest.mark.usefixtures("one_thread")
def test_spos_searches_darts_cells_and_the_eval_retrains_them(tmp_path, capsys):
    args = ["--config", str(REPO / "confs" / "darts.yaml"), f"common.results_dir={tmp_path}", "--exp-name", "c",
            *TINY, *SPOS]
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    exp = tmp_path / "c"
    result = json.loads((exp / "result.json").read_text())
    search = result["search"]
    assert search["final_desc"].endswith("final_model_desc.yaml") and search["genotype"].startswith("Genotype(")
    assert search["generations"] == 2 and search["candidates_scored"] >= 2
    final = load_desc(exp / "search" / "final_model_desc.yaml")
    for ctype in CellType:
        for node in final.first_cell(ctype).nodes:
            assert len({e.input_ids[0] for e in node.edges}) == 2 == len(node.edges)
    assert (exp / "search" / "genotype.txt").read_text().strip() == search["genotype"]
    assert result["pretrain"]["path_digest"] and 0.0 <= result["eval"]["test_top1"] <= 1.0
    # the eval trained the searched cells at nas.eval's macro
    evaluated = load_desc(exp / "eval" / "full_model_desc.yaml")
    for ctype in CellType:
        assert [[(e.input_ids, e.op_desc.name) for e in n.edges] for n in evaluated.first_cell(ctype).nodes] == \
            [[(e.input_ids, e.op_desc.name) for e in n.edges] for n in final.first_cell(ctype).nodes]
    # a rerun reads every stage back
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "search already finished" in captured.out + captured.err


@pytest.mark.parametrize("override,message", [
    ("nas.search.model_desc.primitives=[skip_connect, sep_conv_3x3]", r"spos .*has no 'none'"),
    ("nas.eval.mode=tune", r"tune"),
    ("nas.search.ranking_check.n_archs=2", r"spos .*ranking check"),
])
def test_spos_on_cells_refuses_what_it_cannot_do_with_one_line(tmp_path, capsys, override, message):
    code = main(["--config", str(REPO / "confs" / "darts.yaml"), f"common.results_dir={tmp_path}", "--exp-name", "c",
                 *TINY, *SPOS, override])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("archnas: error: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not any((tmp_path / "c").rglob("*.pt"))
