"""Configs from careless hands and hostile files: YAML alias bombs end in one message within
seconds and a bounded amount of memory; messages name the phase and the file; what can be judged
without training is judged before the first phase; a new space name does not inherit another
space's parameters.

Every refusal is checked as the `archnas` command gives it: exit code 2, exactly one
`archnas: error:` line saying what was expected, no traceback.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from archnas.cli import main
from archnas.config import load_config
from archnas.config.overrides import parse_override_tokens
from archnas.descs.desc_io import desc_from_yaml
from archnas.descs.genotypes import parse_genotype
from archnas.errors import DescError, SpaceError
from archnas.latency import registry as cost_registry
from archnas.space.arch_io import parse_arch

REPO = Path(__file__).resolve().parents[1]
SPOS = str(REPO / "confs" / "spos_nb201.yaml")
DARTS = str(REPO / "confs" / "darts.yaml")
# A tiny spos run (as tests/test_spos.py runs it): 240 digits, a 4-channel one-cell nb201.
TINY_SPOS = ["common.tensorboard=false", "dataset.limit_train=240", "dataset.limit_test=120",
             "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=40",
             "nas.search.trainer.epochs=1", "nas.search.cost.max_params=null",
             "nas.search.spos.evolution={population: 4, parents: 2, mutations: 2, crossovers: 2, generations: 2}",
             "nas.search.spos.bn_recalibration.batches=1", "nas.eval.loader.train_batch=40",
             "nas.eval.trainer.epochs=1"]


def bomb_lines(levels: int = 9, width: int = 9) -> list[str]:
    """A "billion laughs": each anchor a list of `width` aliases of the one before (width**levels)."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return lines


def one_error(code: int, err: str, pattern: str) -> str:
    """The single error line, after checking the exit code, the count and that there is no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("archnas: error:")]
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


# -- YAML alias bombs -------------------------------------------------------------------------------

# Runs `archnas` once per argument list in one fresh process (torch's import is paid once) and
# reports, for each, the exit code, the error lines and how long main() took, and the process's
# peak resident memory (VmHWM, which starts anew at exec; ru_maxrss would carry over the pytest
# process's own peak): a bound for each run. The time is taken after the
# imports (torch alone takes seconds to import on a loaded machine; the bound is on what reading
# the config does).
_MEASURE = """
import contextlib, io, json, sys, time
import archnas.algos  # noqa: F401  (what main() would import first: the algorithms and their sections)
from archnas.cli import main
runs = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    runs.append({"code": code, "err": err.getvalue(), "seconds": time.perf_counter() - start})
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"runs": runs, "peak_mib": peak_kib / 1024}))
"""


def test_billion_laughs_in_a_config_file_or_an_override_end_within_seconds_and_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(bomb_lines()) + "\n")
    assert len(bomb.read_bytes()) < 500  # 9**9 nodes once expanded
    override = "nas.search.space.x={" + ", ".join(bomb_lines()) + "}"
    assert len(override) < 600
    argvs = [["--config", str(bomb), f"common.results_dir={tmp_path}", "--print-config"],
             ["--config", SPOS, f"common.results_dir={tmp_path}", override, "--print-config"]]
    out = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(argvs)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0 and out.stdout.strip(), out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    file_run, override_run = result["runs"]
    one_error(file_run["code"], file_run["err"], r"bomb\.yaml: invalid YAML: line \d+, column \d+: its aliases "
                                                 r"expand to more than 100,000 nodes")
    one_error(override_run["code"], override_run["err"], r"nas\.search\.space\.x=.*not valid YAML \(its aliases "
                                                         r"expand to more than")
    assert file_run["seconds"] < 5 and override_run["seconds"] < 5, result
    assert result["peak_mib"] < 500, result


def test_every_yaml_read_refuses_an_alias_bomb():
    """Desc files, genotypes and architecture files read through the same bounded loader."""
    from archnas.config.yaml_files import safe_load_bounded  # new: imported here so the other tests run on f38ffbe

    text = "\n".join(bomb_lines()) + "\n"
    with pytest.raises(yaml.YAMLError, match="aliases expand to more than 1,000,000 nodes"):
        safe_load_bounded(text)
    with pytest.raises(DescError, match=r"^bomb: invalid YAML: line \d+.*aliases expand"):
        desc_from_yaml(text, "bomb")
    with pytest.raises(DescError, match="aliases expand"):
        parse_genotype(text, "bomb")
    with pytest.raises(SpaceError, match="aliases expand"):
        parse_arch(text)
    small = "\n".join(bomb_lines(levels=3, width=3))  # 27 leaves: aliases a config may well use
    assert safe_load_bounded(small)["a2"] == [[["lol"] * 3] * 3] * 3


def test_an_anchor_inside_its_own_value_is_refused(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text(f"__include__: {DARTS}\nnas: &x\n  search: {{more: *x}}\n")
    code, err = run_cli(["--config", str(tmp_path / "c.yaml"), "--print-config"], capsys)
    one_error(code, err, r"c\.yaml: invalid YAML: .*anchor is used inside its own value")


# -- messages that named the wrong thing ------------------------------------------------------------


@pytest.mark.parametrize("section", ["", " 3"])
def test_an_emptied_trainer_section_is_named_even_with_an_override(section, capsys, tmp_path):
    (tmp_path / "c.yaml").write_text(f"__include__: {DARTS}\nnas:\n  search:\n    trainer:{section}\n")
    code, err = run_cli(["--config", str(tmp_path / "c.yaml"), "common.seed=3", "--print-config"], capsys)
    line = one_error(code, err, r"c\.yaml: nas\.search\.trainer is (empty \(null\)|3), but it is the search "
                                r"phase's section")
    assert "_copy" not in line


def test_an_exponent_without_a_dot_is_a_number_on_the_command_line_as_in_a_file(tmp_path):
    overrides, _ = parse_override_tokens(["nas.search.trainer.optimizer.lr=1e-4", "--nas.eval.trainer.optimizer.lr",
                                          "2E-3"], set())
    conf = load_config([DARTS], overrides)
    assert conf.nas.search.trainer.optimizer.lr == pytest.approx(1e-4)
    assert conf.nas.eval.trainer.optimizer.lr == pytest.approx(2e-3)
    (tmp_path / "c.yaml").write_text(f"__include__: {DARTS}\n"
                                     "nas: {search: {trainer: {optimizer: {lr: 1e-4}}}}\n")
    from_file = load_config([str(tmp_path / "c.yaml")])
    assert from_file.nas.search.trainer.optimizer.lr == conf.nas.search.trainer.optimizer.lr


@pytest.mark.parametrize("override,pattern", [
    ("nas.search.trainer.optimizer.lr=-1", r"nas\.search\.trainer\.optimizer\.lr=-1: nas\.search\.trainer\.optimizer"
                                           r"\.lr: -1\.0 is not positive"),
    ("nas.eval.trainer.optimizer.lr=-2e-3", r"nas\.eval\.trainer\.optimizer\.lr: -0\.002 is not positive"),
    ("nas.eval.trainer.drop_path_prob=1.5", r"nas\.eval\.trainer\.drop_path_prob: 1\.5 is not a probability"),
    ("nas.search.trainer.alpha_optimizer.betas=[0.5,1.5]", r"nas\.search\.trainer\.alpha_optimizer\.betas: "),
    ("nas.search.trainer.batch_chunks=0", r"nas\.search\.trainer\.batch_chunks: 0 is below 1"),
])
def test_a_range_error_names_the_phase(override, pattern, capsys):
    code, err = run_cli(["--config", DARTS, override, "--print-config"], capsys)
    one_error(code, err, pattern)


def test_a_range_error_in_a_file_names_the_file_and_the_phase(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text(f"__include__: {DARTS}\nnas: {{eval: {{trainer: {{optimizer: {{lr: 0}}}}}}}}\n")
    code, err = run_cli(["--config", str(tmp_path / "c.yaml"), "--print-config"], capsys)
    one_error(code, err, r"c\.yaml: nas\.eval\.trainer\.optimizer\.lr: 0\.0 is not positive")


# -- silently accepted before -----------------------------------------------------------------------


@pytest.mark.parametrize("argv,pattern", [
    (["--algos", ""], r"--algos '': no algorithm named"),
    (["--algos", " , "], r"--algos ' , ': no algorithm named"),
    (["--exp-name", ""], r"--exp-name '': the name is empty; a name inside common\.results_dir is expected"),
    (["--exp-name", "."], r"--exp-name '\.': a name inside common\.results_dir is expected"),
    (["--exp-name", "a\nb"], r"--exp-name 'a\\nb': the name has a control character"),
    (["--exp-name", "/tmp/elsewhere"], r"--exp-name '/tmp/elsewhere': a name inside common\.results_dir"),
    (["--exp-name", "a//b"], r"--exp-name 'a//b': a name inside common\.results_dir"),
    (["common.experiment_name=."], r"common\.experiment_name '\.': a name inside common\.results_dir"),
    (["nas.search.trainer.optimizer.momentum=2.0"], r"nas\.search\.trainer\.optimizer\.momentum: 2\.0 is not in "
                                                     r"\[0, 1\)"),
    (["nas.eval.trainer.optimizer.momentum=1"], r"nas\.eval\.trainer\.optimizer\.momentum: 1\.0 is not in \[0, 1\)"),
])
def test_careless_names_and_values_are_refused_at_load(argv, pattern, capsys, tmp_path):
    code, err = run_cli(["--config", DARTS, f"common.results_dir={tmp_path}", *argv, "--print-config"], capsys)
    one_error(code, err, pattern)
    assert not any(tmp_path.iterdir()), "nothing is written"


def test_evolution_parents_above_the_population_are_refused_at_load(capsys, tmp_path):
    code, err = run_cli(["--config", SPOS, f"common.results_dir={tmp_path}",
                         "nas.search.spos.evolution.parents=30", "--print-config"], capsys)
    one_error(code, err, r"nas\.search\.spos\.evolution\.parents: 30 is more than the population \(20\)")


# -- judged before the first phase ------------------------------------------------------------------


@pytest.mark.parametrize("override,pattern", [
    ("nas.search.cost.held_out=0", r"nas\.search\.cost\.held_out: 0 is below 1"),
    ("nas.search.cost.timing.threads=0", r"nas\.search\.cost\.timing\.threads: 0 is below 1"),
    ("nas.search.cost.timing.repeats=0", r"nas\.search\.cost\.timing\.repeats: 0 is below 1"),
    ("nas.search.cost.timing.warmup=-1", r"nas\.search\.cost\.timing\.warmup: -1 is below 0"),
    ("nas.eval.mode=tune", r"nas\.eval\.mode: tune fine-tunes the searched supernet itself; leave nas\.eval\.space"),
])
def test_cost_counts_and_eval_tune_are_judged_at_load(override, pattern, capsys, tmp_path):
    code, err = run_cli(["--config", SPOS, f"common.results_dir={tmp_path}", "nas.eval.space={name: nb201, C: 8}",
                         override, "--print-config"], capsys)
    one_error(code, err, pattern)


@pytest.mark.parametrize("override,pattern", [
    ("nas.search.cost.max_macs=1000", r"nas\.search\.cost\.max_macs: 1000 is below the cheapest architecture of the "
                                      r"space, [\d,]+ multiply-adds"),
    ("nas.search.cost.max_latency_ms=0.5", r"nas\.search\.cost\.max_latency_ms: 0\.5 is below the cheapest "
                                           r"architecture of the space, 1\.[\d]+ ms"),
    ("nas.search.ranking_check.n_archs=20000", r"nas\.search\.ranking_check\.n_archs: 20000 is more than the 15625 "
                                               r"architectures of the space"),
    ("nas.eval.loader.val_ratio=0.01", r"nas\.eval\.loader\.val_ratio: cannot take 0\.01 of 240 images stratified "
                                       r"over 10 classes"),
])
def test_what_needs_the_space_or_the_data_is_judged_before_pretraining(override, pattern, capsys, tmp_path,
                                                                       monkeypatch):
    # Latency as a deterministic function of the network (1 ms plus 1 ms per 10,000 weights), so the
    # table and its cheapest architecture do not depend on how loaded this machine is.
    fake = dataclasses.replace(cost_registry.cost_model("cpu_ms"), measure=lambda net, shape, protocol:
                               1.0 + sum(p.numel() for p in net.parameters()) / 1e4)
    monkeypatch.setitem(cost_registry._COST_MODELS, "cpu_ms", fake)
    timing = "nas.search.cost.timing={warmup: 1, repeats: 3}"
    code, err = run_cli(["--config", SPOS, f"common.results_dir={tmp_path}", "--exp-name", "e", *TINY_SPOS,
                         timing, "nas.search.cost.held_out=3", override], capsys)
    one_error(code, err, pattern)
    exp = tmp_path / "e"
    assert not (exp / "pretrain").exists(), "refused before the supernet was pretrained"


# -- a new space name starts from its own parameters ------------------------------------------------


def test_a_config_that_names_another_space_does_not_inherit_its_parameters(tmp_path):
    (tmp_path / "p.yaml").write_text(f"__include__: {SPOS}\nnas:\n  search:\n    space: {{name: proxylessnas}}\n")
    assert load_config([str(tmp_path / "p.yaml")]).nas.search.space == {"name": "proxylessnas"}
    (tmp_path / "n.yaml").write_text(f"__include__: {SPOS}\nnas:\n  search:\n    space: {{N: 2}}\n")
    assert load_config([str(tmp_path / "n.yaml")]).nas.search.space == {"name": "nb201", "C": 16, "N": 2}, \
        "the same space keeps its parameters and takes new ones"
    assert load_config([SPOS, str(tmp_path / "p.yaml")]).nas.search.space == {"name": "proxylessnas"}


def test_an_override_that_names_another_space_keeps_only_the_overridden_parameters():
    overrides, _ = parse_override_tokens(["nas.search.space.name=proxylessnas"], set())
    assert load_config([SPOS], overrides).nas.search.space == {"name": "proxylessnas"}
    overrides, _ = parse_override_tokens(["nas.search.space.width_mult=0.5", "nas.search.space.name=proxylessnas"],
                                         set())
    assert load_config([SPOS], overrides).nas.search.space == {"name": "proxylessnas", "width_mult": 0.5}
    overrides, _ = parse_override_tokens(["nas.search.space.name=nb201"], set())
    assert load_config([SPOS], overrides).nas.search.space == {"name": "nb201", "C": 16, "N": 1}

