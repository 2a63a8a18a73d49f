"""The structure the code promises: imports point down the layers DEVELOPING.md lists, an
algorithm is one module that plugs into the `archnas` command, and ops live where they register.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "archnas"
PLUGINS = REPO / "tests" / "fixtures" / "plugins"


def layer_order() -> dict[str, int]:
    """Package -> layer index, from the numbered list under "## Layers" in DEVELOPING.md."""
    text = (REPO / "DEVELOPING.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int] = {}
    for line in section.splitlines():
        match = re.match(r"^(\d+)\. `([^`]+)`", line.strip())
        if match:
            for name in match[2].split(","):
                layers[name.strip()] = int(match[1])
    return layers


def unit_of(module: str) -> str:
    """The layer unit of a dotted module name: archnas.<unit>[...]."""
    return module.split(".")[1] if module.count(".") else "__init__"


def imports(path: Path) -> list[tuple[str, int]]:
    """Every archnas import of a file (module level and inside functions), with its line; imports
    under `if TYPE_CHECKING:` are for annotations only and left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "archnas" else [f"archnas.{a.name}" for a in node.names]
            found += [(n, node.lineno) for n in names if n.startswith("archnas")]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("archnas")]
    return found


def test_every_import_points_down_the_layers():
    layers = layer_order()
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    units -= {"__init__"}
    assert units <= set(layers), f"packages missing from DEVELOPING.md's layers: {sorted(units - set(layers))}"
    wrong = []
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        here = unit_of(".".join(path.relative_to(REPO).with_suffix("").parts))
        for module, line in imports(path):
            there = unit_of(module)
            if there in (here, "__init__"):
                continue
            edges.setdefault(here, set()).add(there)
            if layers[there] > layers[here]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {here} (layer {layers[here]}) imports {module} "
                             f"(layer {layers[there]})")
    assert not wrong, "imports pointing up:\n" + "\n".join(wrong)
    # packages of one layer may use each other, but never both ways round
    both = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets if a in edges.get(b, ())})
    assert not both, f"import cycles within a layer: {both}"


def test_a_new_algorithm_is_one_module_run_by_the_archnas_command(tmp_path):
    """tests/fixtures/plugins/uniform_algo.py: a strategy that picks candidates uniformly, with a
    config section of its own, under 60 lines, and no edit anywhere else; `--import` loads it."""
    source = PLUGINS / "uniform_algo.py"
    assert len(source.read_text().splitlines()) < 60
    env = {**os.environ, "PYTHONPATH": str(PLUGINS), "OMP_NUM_THREADS": "1"}
    tiny = ["common.tensorboard=false", "common.log_every_steps=0", "dataset.limit_train=160", "dataset.limit_test=80",
            "nas.search.model_desc.n_cells=3", "nas.search.model_desc.n_nodes=2",
            "nas.search.model_desc.model_stems.init_node_ch=4", "nas.search.loader.train_batch=40",
            "nas.search.trainer.epochs=1", "nas.eval.model_desc.n_cells=3",
            "nas.eval.model_desc.model_stems.init_node_ch=4", "nas.eval.trainer.epochs=1"]
    command = [sys.executable, "-m", "archnas", "--import", "uniform_algo", "--config", str(REPO / "confs" / "darts.yaml"),
               "nas.algo=uniform_test", "nas.search.uniform_test.skip_none=true", f"common.results_dir={tmp_path}",
               "--exp-name", "uniform", *tiny]
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "uniform" / "result.json").read_text())
    assert result["algorithm"] == "uniform_test" and result["eval"]["params"] > 0 and result["search"]["genotype"]
    supernet = (tmp_path / "uniform" / "search" / "full_model_desc.yaml").read_text()
    assert "gdas_mixed_op" in supernet
    # without the module the name and its section are unknown, and say so
    out = subprocess.run([*command[:3], *command[5:]], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2 and "nas.search.uniform_test" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("algo,mixed_op", [("gdas", "gdas_mixed_op"), ("pc_darts", "pc_mixed_op")])
def test_stats_reads_the_supernet_desc_of_every_algorithm(tmp_path, algo, mixed_op):
    """Their mixed ops register in archnas.ops, so a supernet desc builds without importing the
    algorithms; `archnas stats --desc` counts it."""
    from tiny_algos import TINY

    from archnas.cli import main
    from archnas.config import find_config_file

    extra = ["nas.search.model_desc.model_stems.init_node_ch=8"] if algo == "pc_darts" else []
    args = ["--config", str(find_config_file(algo)), f"common.results_dir={tmp_path}", *TINY, *extra]
    assert main([*args, "--exp-name", algo, "--no-eval"]) == 0
    desc = tmp_path / algo / "search" / "full_model_desc.yaml"
    assert mixed_op in desc.read_text()
    code = (f"import sys, torch; from archnas.model import Model, load_checked_desc; "
            f"m = Model(load_checked_desc({str(desc)!r}), droppath=False, affine=False); m(torch.zeros(2, 1, 8, 8)); "
            f"assert 'archnas.algos' not in sys.modules; print(sum(p.numel() for p in m.weights()))")
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-2000:]
    stats = subprocess.run([sys.executable, "-m", "archnas", "stats", *args, "--desc", str(desc)],
                           capture_output=True, text=True, cwd=REPO)
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert json.loads(stats.stdout)["params"] > 0
